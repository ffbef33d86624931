//! A WebSocket client for the golden scenarios: what it sends and receives
//! goes into the [`Transcript`] as `ws> …` / `ws< …` lines, close frames as
//! `ws< close <code> <reason>`, and a refused handshake as the HTTP answer
//! the gateway gave.

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::transcript::{Key, Transcript, WAIT};
use crate::common::{Api, TestGateway};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client whose frames go into the transcript.
pub struct Socket {
    ws: Ws,
}

impl Socket {
    /// Connects with `?api_key=` (as browsers must).
    pub async fn connect(gw: &TestGateway, key: &Key) -> Self {
        let url = gw.ws_url(&key.secret);
        let ws = tokio::time::timeout(WAIT, connect_async(url))
            .await
            .expect("handshake in time")
            .expect("websocket handshake")
            .0;
        Self { ws }
    }

    /// Sends a text frame and writes it (`ws> …`).
    pub async fn send(&mut self, t: &mut Transcript, text: &str) {
        t.line(&format!("ws> {text}"));
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends a raw frame without writing it (the caller says what it was).
    pub async fn send_message(&mut self, msg: Message) {
        let _ = self.ws.send(msg).await;
    }

    /// The next frame of any kind, unwritten.
    pub async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("readable frame")
    }

    /// The next text frame (server pings skipped), unwritten.
    pub async fn text(&mut self) -> String {
        loop {
            match self.next().await {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame, written (`ws< …`).
    pub async fn recv(&mut self, t: &mut Transcript) -> String {
        let text = self.text().await;
        t.line(&format!("ws< {text}"));
        text
    }

    /// Reads to the close frame and writes its code and reason.
    pub async fn closed(&mut self, t: &mut Transcript) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(Some(f)))) => {
                    return t.line(&format!("ws< close {} {}", u16::from(f.code), f.reason));
                }
                Some(Ok(Message::Close(None))) | None => return t.line("ws< close (no code)"),
                Some(Ok(Message::Text(x))) => t.line(&format!("ws< {x}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before its close frame: {e}"),
            }
        }
    }
}

/// A handshake the gateway refuses: writes the HTTP answer it gave.
pub async fn ws_refused(t: &mut Transcript, gw: &TestGateway, key: Option<&Key>) -> u16 {
    let (url, who) = match key {
        Some(k) => (
            gw.ws_url(&k.secret),
            format!("key {} as ?api_key=", k.label),
        ),
        None => (format!("ws://{}/v1/ws", gw.addr), "no key".to_owned()),
    };
    t.line(&format!("> GET /v1/ws [{who}] (WebSocket handshake)"));
    let resp = match tokio::time::timeout(WAIT, connect_async(url)).await {
        Ok(Err(tungstenite::Error::Http(resp))) => resp,
        Ok(Err(e)) => panic!("handshake failed otherwise: {e}"),
        Ok(Ok(_)) => panic!("the handshake should be refused"),
        Err(_) => panic!("no answer to the handshake"),
    };
    t.head(resp.status(), resp.headers());
    t.body(resp.body().as_deref().unwrap_or_default());
    resp.status().as_u16()
}
