//! A WebSocket subscriber: connects from its own source address, subscribes
//! to one channel, and records events and server pings (tungstenite answers
//! the pings with pongs by itself, which keeps the socket alive).

use std::{net::SocketAddr, sync::Arc};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};
use tokio_util::sync::CancellationToken;

use super::event::Stats;

/// Small buffers: the load generator holds tens of thousands of sockets.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens `/v1/ws`, subscribes to `channel` and reads until `stop`.
/// `ready` is called once `subscribed` arrived (true) or opening failed.
pub async fn subscribe(
    i: usize,
    to: SocketAddr,
    channel: Arc<str>,
    key: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    ready: impl FnOnce(bool),
) {
    let opened = async {
        let tcp = super::connect_from(i, to).await?;
        let url = format!("ws://{to}/v1/ws?api_key={key}");
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, tcp, Some(config())).await?;
        let sub = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
        ws.send(Message::text(sub)).await?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(t) = msg? {
                if t.contains(r#""type":"subscribed""#) {
                    return Ok(ws);
                }
                anyhow::bail!("subscribe answered {t}");
            }
        }
        anyhow::bail!("closed before subscribed")
    };
    let opened = tokio::time::timeout(super::OPEN_TIMEOUT, opened).await;
    let mut ws = match opened.unwrap_or_else(|_| Err(anyhow::anyhow!("open timed out"))) {
        Ok(ws) => ws,
        Err(e) => {
            stats.error(format!("ws open: {e}"));
            return ready(false);
        }
    };
    ready(true);
    stats
        .open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut mark = super::event::Mark::default();
    let ended = loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break None,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Text(t))) => stats.event_on(t.as_bytes(), &mut mark),
            Some(Ok(Message::Ping(_))) => stats.ping(&mut mark.ping),
            Some(Ok(Message::Close(c))) => break Some(format!("closed by the server: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => break Some(e.to_string()),
            None => break Some("ended".into()),
        }
    };
    stats
        .open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match ended {
        Some(e) if !stop.is_cancelled() => stats.error(format!("ws stream: {e}")),
        _ => {
            let _ = ws.close(None).await;
        }
    }
}
