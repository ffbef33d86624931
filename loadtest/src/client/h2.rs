//! SSE subscribers over HTTP/2: many streams on one connection (hyper's
//! HTTP/2 client), by ALPN over TLS or as h2c with prior knowledge. Each
//! stream's frames are recorded as the HTTP/1.1 subscriber records them
//! ([`super::sse::handle_frame`]).

use std::{net::SocketAddr, sync::Arc};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{
    event::{find, Stats},
    sse::{handle_frame, Io},
};

/// One HTTP/2 connection's request handle.
pub type H2 = SendRequest<Empty<Bytes>>;

/// Opens an HTTP/2 connection from source address number `i` (over TLS
/// when `tls` is given); its driver runs until the last handle is dropped.
pub async fn connect(i: usize, to: SocketAddr, tls: Option<&TlsConnector>) -> anyhow::Result<H2> {
    let tcp = super::connect_from(i, to).await?;
    let io: Box<dyn Io> = match tls {
        Some(c) => {
            let s = c.connect(crate::tls::server_name(), tcp).await?;
            anyhow::ensure!(
                s.get_ref().1.alpn_protocol() == Some(b"h2"),
                "the server did not pick h2"
            );
            Box::new(s)
        }
        None => Box::new(tcp),
    };
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        // Room for a burst on every stream; the gateway's memory is measured.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One SSE stream on `h2`, counted in `stats.open` while it runs; `ready`
/// is called once the response head has arrived.
pub async fn subscribe(
    mut h2: H2,
    authority: Arc<str>,
    path: Arc<str>,
    key: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    ready: impl FnOnce(bool),
) {
    let req = http::Request::get(format!("http://{authority}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .expect("a valid request");
    let opened = tokio::time::timeout(super::OPEN_TIMEOUT, async {
        h2.ready().await?;
        h2.send_request(req).await
    })
    .await;
    let resp = match opened {
        Ok(Ok(r)) if r.status() == 200 => r,
        Ok(Ok(r)) => return fail(&stats, format!("h2 open: {}", r.status()), ready),
        Ok(Err(e)) => return fail(&stats, format!("h2 open: {e}"), ready),
        Err(_) => return fail(&stats, "h2 open timed out".into(), ready),
    };
    drop(h2);
    ready(true);
    stats
        .open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let mut mark = super::event::Mark::default();
    let ended = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break None,
            f = body.frame() => f,
        };
        match frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                    while let Some(at) = find(&buf, b"\n\n") {
                        let frame = buf.split_to(at + 2);
                        handle_frame(&frame, &stats, &mut mark);
                    }
                }
            }
            Some(Err(e)) => break Some(format!("h2 stream: {e}")),
            None => break Some("h2 stream: ended".into()),
        }
    };
    stats
        .open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(e) = ended {
        stats.error(e);
    }
}

fn fail(stats: &Stats, e: String, ready: impl FnOnce(bool)) {
    stats.error(e);
    ready(false);
}
