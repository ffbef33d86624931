//! HTTP/2 connections: over TLS when ALPN picked `h2`, and h2c with prior
//! knowledge on a plain listener (the connection preface seen by weir's own
//! first read, [`super::head`]). Every route is served the same way as on
//! HTTP/1.1, through the router; an SSE stream is an HTTP/2 stream, and a
//! WebSocket opens with extended CONNECT (RFC 8441, `:protocol websocket`),
//! which the settings below announce.
//!
//! # Settings, and why
//!
//! - `max_concurrent_streams` (`--http2-max-streams`, default 100, the
//!   figure browsers expect): each stream is an SSE tail or a request, and
//!   the per-key caps of [`crate::edge::conns`] count streams whatever
//!   connection they share, so this bounds what one connection can hold,
//!   not what a key may.
//! - Receive windows: 1 MiB per stream, the default request body limit, so
//!   a full upload never waits for a WINDOW_UPDATE round trip; 16 MiB for
//!   the connection, so that 16 streams whose handler has not read its body
//!   yet still leave the others room to send. A body a handler rejects
//!   unread is dropped, which gives its window back at once. BDP-adaptive
//!   windows stay off: they grow windows (and what a client may make weir
//!   buffer) to whatever the link allows.
//! - A stream's body is polled only while the stream has send capacity:
//!   window from the client and room in its send buffer. A client that
//!   stops reading one stream (its window shut) thus stalls that stream
//!   only: its events wait in its own subscription, which lags and ends it
//!   with `lagged` as on HTTP/1.1, and the other streams' frames go on as
//!   long as the client's connection window is open (tested).
//! - `max_send_buf_size` 64 KiB per stream (hyper: 400 KiB): browsers open
//!   stream windows of several MiB, so on a slow socket it is this buffer
//!   that bounds what one stream queues in weir.
//! - Header list size: twice `--max-header-bytes` (at least hyper's 16 KiB),
//!   so a head between the two still reaches the edge middleware and gets
//!   the 431 envelope, as on HTTP/1.1.
//! - hyper's guards against reset floods (CVE-2023-44487: 20 pending
//!   accept resets, 1,024 local error resets) are kept.
//! - A PING every [`KEEP_ALIVE`] with [`KEEP_ALIVE_TIMEOUT`] for its answer:
//!   SSE streams ping on their own (`: ping`), but a connection with no
//!   stream open (a browser tab between requests) would otherwise outlive
//!   a peer that vanished (a laptop closed, a NAT entry dropped) for good.
//!
//! # Drain
//!
//! `graceful_shutdown` sends GOAWAY (then a second one with the last stream
//! id after a PING round trip), refuses new streams and lets the open ones
//! finish: the same contract as an HTTP/1.1 connection with a response in
//! flight (see the parent module).

use std::{convert::Infallible, pin::Pin, time::Duration};

use axum::{body::Body, extract::Request, response::Response, Router};
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{log_end, prefixed::Prefixed, Io};

/// Per-stream receive window (bytes).
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// Connection receive window (bytes).
pub const CONN_WINDOW: u32 = 16 * STREAM_WINDOW;
/// What one stream may queue for sending.
pub const SEND_BUF: usize = 64 * 1024;

/// Interval of the connection-level PING.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Time a PING has to be answered before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP/2 settings (module doc).
pub fn builder(max_streams: u32, max_header_bytes: usize) -> http2::Builder<TokioExecutor> {
    let list = u32::try_from(max_header_bytes.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(16 * 1024);
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(max_streams)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .adaptive_window(false)
        .max_send_buf_size(SEND_BUF)
        .max_header_list_size(list)
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .enable_connect_protocol();
    b
}

/// Serves one HTTP/2 connection, `prefix` (the preface weir already read,
/// or nothing after ALPN) first, until it closes or has drained after
/// `stop`. Boxed: it is the whole connection's state, kept off the task.
pub fn connection<IO: Io>(
    io: IO,
    prefix: Bytes,
    builder: &http2::Builder<TokioExecutor>,
    router: &Router,
    stop: CancellationToken,
) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let service = H2Router {
        router: router.clone(),
        peer: io.peer(),
    };
    let mut conn = builder.serve_connection(TokioIo::new(Prefixed::new(io, prefix)), service);
    Box::pin(async move {
        tokio::select! {
            r = &mut conn => return log_end(r),
            _ = stop.cancelled() => {}
        }
        Pin::new(&mut conn).graceful_shutdown();
        log_end(conn.await);
    })
}

/// The router as an HTTP/2 service. Unlike HTTP/1.1 ([`super::BoxedRouter`])
/// a body left unread needs no care: hyper resets that stream alone
/// (`RST_STREAM NO_ERROR`) and the connection goes on.
#[derive(Clone)]
struct H2Router {
    router: Router,
    peer: Option<crate::audit::Peer>,
}

impl hyper::service::Service<Request<Incoming>> for H2Router {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        Box::pin(self.router.clone().oneshot(req.map(Body::new)))
    }
}
