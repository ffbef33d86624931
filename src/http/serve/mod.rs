//! The accept loop: weir's own instead of `axum::serve`, so that the
//! per-connection settings of hyper can be chosen, and so that long-lived
//! SSE streams can be served without hyper at all. Most of weir's open
//! connections are idle streams (SSE bodies, WebSockets) that hold whatever
//! was allocated for them for hours, so what one connection costs is what
//! 100k connections cost (BENCHMARKS.md, connections).
//!
//! # Protocols
//!
//! | listener | client says | served by |
//! |---|---|---|
//! | plain | an HTTP/1 head | the two paths below |
//! | plain | the HTTP/2 preface (h2c, prior knowledge) | hyper's HTTP/2 ([`h2`]) |
//! | TLS (`--tls-cert`) | ALPN `h2` | hyper's HTTP/2 ([`h2`]) |
//! | TLS | ALPN `http/1.1`, or none | the two paths below, over the TLS stream |
//!
//! The preface is told apart in weir's own first read (`head.rs`), so an
//! HTTP/1 connection never pays for hyper-util's `auto` detection (below).
//! A TLS connection is handshaken in its own task ([`HANDSHAKE_TIMEOUT`],
//! the handshake state boxed and freed after) and its stream is boxed, so
//! the tasks that hold it are no larger than a plain socket's. Upgrading
//! HTTP/1.1 to h2c (`Upgrade: h2c`) is not offered: no browser uses it and
//! proxies speak prior knowledge.
//!
//! # Two paths for HTTP/1
//!
//! Each accepted connection's task reads its request heads itself
//! (`head.rs`, into a 4 KiB buffer freed before anything long-lived starts).
//! Two kinds of request take the **direct path** (`direct.rs`):
//!
//! - a complete HTTP/1.1 GET without a body or upgrade on one of the SSE
//!   stream routes (the `GET` routes of transport `Sse` in the route table,
//!   [`crate::http::route::is_direct_sse`]);
//! - an HTTP/1.1 POST on a route that may stream its answer
//!   (`/v1/chat/completions`, an agent's messages: transport `JsonOrSse`,
//!   [`crate::http::route::is_direct_post`]) with a `content-length` body
//!   of at most 1 MiB (`head::BODY_MAX`, or the configured body limit if
//!   lower), read whole before routing. While the router works on it, the
//!   socket is read for the client leaving (as hyper does), which drops
//!   the handler.
//!
//! The router is called as hyper would call it and weir writes the
//! response to the socket itself (`body.rs`, `burst.rs`: head, then chunked
//! frames, a ready burst in one `writev`). An idle SSE stream then holds no
//! hyper connection: not its 8 KiB header write buffer, 8 KiB read buffer
//! and cached header map (hyper sizes none of them), ~16 KiB of heap in
//! all. A relayed completion skips hyper's per-request machinery (its
//! parse into a fresh header map, the dispatcher's state machine, the
//! boxed service future, its chunked encoder and write queue). After a
//! response (a streamed one once its body ends, an error envelope at once)
//! the connection reads its next head the same way, unless either side
//! said `connection: close`; a client that goes away mid-stream ends it.
//! A client gone halfway through a direct POST's body sent no request:
//! the connection closes without an answer, as it does when the head takes
//! longer than [`HEADER_READ_TIMEOUT`] or the body as long again after it.
//!
//! Everything else (REST, WebSocket upgrades, HEAD, HTTP/1.0, chunked or
//! larger uploads, `expect: 100-continue`, pipelined requests, incomplete
//! or oversized heads) goes to hyper with the bytes already read handed
//! back (`prefixed.rs`), and the connection stays with hyper from then
//! on: all of the bytes in hyper's first read, so hyper parses a complete
//! head as if it had read the socket itself. A head over 4 KiB reaches
//! hyper incomplete, which may grow its read buffer to 16 KiB (below):
//! rare, and only for that connection. A request body the router left
//! unread (an edge rejection) is drained if small, else the response says
//! `connection: close` (`unread.rs`): hyper would close silently and race
//! the client's next request on the pooled connection.
//!
//! # What each hyper setting saves (heaptrack, per idle connection)
//!
//! - hyper's HTTP/1 builder itself, not hyper-util's `auto` one that
//!   `axum::serve` uses: `auto` reads the first 24 bytes to tell HTTP/2 from
//!   HTTP/1 and hands them back through a rewind buffer, so hyper's first
//!   parse sees a partial head and grows its read buffer from 8 to 16 KiB,
//!   which the connection then keeps: 8 KiB.
//! - the service future is boxed (`BoxedRouter`): hyper keeps a box sized
//!   for the service's future for the whole life of a connection (its
//!   "in flight" slot); with the router's own future that box is ~0.3 KiB,
//!   with a boxed one 16 bytes, and the future itself is freed as soon as
//!   the handler has returned the response head.
//! - the connection task holds the connection once (`drive`): ~0.65 KiB.
//! - `max_buf_size` is left at hyper's ~400 KiB: it only bounds how far one
//!   request head may grow the read buffer (idle connections never reach
//!   it), and protocol/limits.md documents hyper's bound; a head over the
//!   configured `max_header_bytes` still reaches
//!   [`crate::http::layers::front`] and gets the 431 envelope.
//! - `header_read_timeout` (30 s, hyper's default, which needs a timer to
//!   take effect and `axum::serve` sets none): a connection that never
//!   completes a request head, or stays idle between keep-alive requests,
//!   is closed instead of holding its buffers forever. The heads weir reads
//!   itself have the same limit.
//! - `TCP_NODELAY`: stream frames are small and must not wait for Nagle.
//!
//! # Drain
//!
//! The same as `axum::serve(..).with_graceful_shutdown(..)`: once `signal`
//! resolves no connection is accepted (the listener is dropped), every
//! connection is told to shut down gracefully (an idle keep-alive one, or
//! one still waiting for its first head, closes; one with a response in
//! flight finishes it first, and on the direct path a request whose first
//! bytes have arrived is read and answered) and the returned future
//! resolves when all of them are closed. Direct-path streams are counted
//! alike; their SSE bodies
//! end by themselves (an idle tail in its turn of the spread drain,
//! `stream::drain`; a run's stream at its `done`), and the connection then
//! closes. Upgraded WebSockets leave hyper at the upgrade and are closed by
//! their own turn in the drain. `signal` resolves after the drain delay
//! (`/readyz` is 503 already): until then connections are still accepted. An HTTP/2 connection sends
//! GOAWAY and finishes the streams in flight ([`h2`]); a TLS handshake in
//! progress is abandoned.

mod body;
mod burst;
mod direct;
pub mod h2;
mod head;
mod prefixed;
mod unread;

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::{pin, Pin},
    sync::Arc,
    time::Duration,
};

use axum::{extract::Request, response::Response, Router};
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::audit::Peer;

use self::{
    body::{Ended, WriteBody},
    direct::{Next, Respond},
    prefixed::Prefixed,
};

/// Time a client has to send a complete request head (also the idle limit
/// between keep-alive requests, and the time a body the direct path reads
/// has after its head).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection is served over: a plain socket, or a (boxed, so the
/// tasks that hold it stay small) TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + PeerOf + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + PeerOf + 'static> Io for T {}

/// The address a connection came from, asked of the socket once per
/// connection (one `getpeername`) rather than kept from `accept`. Every
/// request gets it as a [`Peer`] extension (the audit log's client
/// address, `crate::audit::client`).
pub trait PeerOf {
    fn peer(&self) -> Option<Peer>;
}

impl PeerOf for TcpStream {
    fn peer(&self) -> Option<Peer> {
        self.peer_addr().ok().map(|a| Peer::new(a.ip()))
    }
}

impl PeerOf for Box<TlsStream<TcpStream>> {
    fn peer(&self) -> Option<Peer> {
        self.get_ref().0.peer()
    }
}

type Connection<IO> = http1::UpgradeableConnection<TokioIo<Prefixed<IO>>, BoxedRouter>;

/// How the listener speaks: TLS or not, HTTP/2 or not.
#[derive(Clone)]
pub struct Transport {
    /// TLS on every connection (`None`: plain).
    pub tls: Option<TlsAcceptor>,
    /// Serve HTTP/2 (ALPN `h2`, or h2c with prior knowledge).
    pub http2: bool,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// The edge's head limit, from which the HTTP/2 header list size follows.
    pub max_header_bytes: usize,
    /// The request body limit: a longer body never takes the direct path.
    pub max_body_bytes: usize,
}

/// What every connection task shares: one `Arc` per connection.
struct Shared {
    builder: http1::Builder,
    /// `None`: HTTP/2 is off, a preface goes to HTTP/1 (which refuses it).
    h2: Option<http2::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    router: Router,
    /// The longest body the direct path reads (`head::BODY_MAX`, or the
    /// configured limit if lower).
    body_max: usize,
}

/// Serves `router` on `listener` until `signal` resolves, then drains as the
/// module doc says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        builder: http1_builder(),
        h2: transport
            .http2
            .then(|| h2::builder(transport.max_streams, transport.max_header_bytes)),
        tls: transport.tls,
        router,
        body_max: transport.max_body_bytes.min(head::BODY_MAX),
    });
    let stop = CancellationToken::new();
    let conns = TaskTracker::new();
    let mut signal = pin!(signal);
    // Per serving loop, so `--runtime per-core` shows how the kernel
    // spread connections over the cores' listeners.
    let accepted = ::metrics::counter!(
        "weir_connections_accepted_total",
        "loop" => crate::cores::current().to_string()
    );
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        accepted.increment(1);
        // Best effort: a socket that refuses it still works, only slower.
        let _ = tcp.set_nodelay(true);
        if shared.tls.is_some() {
            conns.spawn(secure(tcp, shared.clone(), stop.clone()));
        } else {
            conns.spawn(connection(tcp, shared.clone(), stop.clone()));
        }
    }
    drop(listener);
    stop.cancel();
    conns.close();
    conns.wait().await;
    Ok(())
}

/// The HTTP/1 settings every hyper connection gets (module doc).
fn http1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    b
}

/// A TLS connection's task: the handshake, then HTTP/2 if ALPN chose it,
/// else the same HTTP/1 paths as a plain connection (direct SSE included).
async fn secure(tcp: TcpStream, shared: Arc<Shared>, stop: CancellationToken) {
    let Some(tls) = shared.tls.as_ref() else {
        return;
    };
    let Some(stream) = handshake(tls, tcp, &stop).await else {
        return;
    };
    let is_h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
    match (&shared.h2, is_h2) {
        (Some(b), true) => h2::connection(stream, Bytes::new(), b, &shared.router, stop).await,
        _ => connection(stream, shared.clone(), stop).await,
    }
}

/// The handshake, boxed (its state, the largest part of a TLS session's,
/// is freed before the connection settles), within [`HANDSHAKE_TIMEOUT`]
/// and abandoned when the gateway stops.
async fn handshake(
    tls: &TlsAcceptor,
    tcp: TcpStream,
    stop: &CancellationToken,
) -> Option<Box<TlsStream<TcpStream>>> {
    let accept = Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)));
    let done = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        r = accept => r,
    };
    match done {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("no TLS handshake within the timeout");
            None
        }
    }
}

/// One connection's task: its requests stay on the direct path until one
/// is hyper's (module doc).
///
/// What this future holds for as long as a direct stream is open is all an
/// idle SSE connection costs besides the body, so the steps before and
/// after the stream are boxed futures, freed or not yet allocated while
/// it runs (the test below keeps it small).
#[allow(clippy::manual_async_fn)] // on purpose: see `drive`
fn connection<IO: Io>(
    mut io: IO,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        // Asked of the socket once (`getpeername`) for all its requests: the
        // task holds it (~20 bytes) rather than asking per request.
        let peer = io.peer();
        let mut carry = Bytes::new();
        let mut first = true;
        let prefix = loop {
            let next = Box::pin(direct::next_request(
                &mut io, &shared, &stop, carry, first, peer,
            ));
            let r = match next.await {
                Next::Close => return,
                Next::H2(prefix) => match &shared.h2 {
                    Some(b) => return h2::connection(io, prefix, b, &shared.router, stop).await,
                    None => break prefix,
                },
                Next::Hyper(prefix) => break prefix,
                Next::Respond(r) => r,
            };
            first = false;
            // Taken apart, so that nothing of it but `keep_alive` is held
            // while the body is written (a partly moved struct would be).
            let Respond {
                head,
                body,
                length,
                keep_alive,
                early,
            } = r;
            match WriteBody::new(&mut io, head, body, length)
                .after(early)
                .await
            {
                // A stopping gateway closes idle connections anyway.
                Ended::Written { rest } if keep_alive && !stop.is_cancelled() => carry = rest,
                _ => return,
            }
        };
        hyper_connection(io, prefix, &shared, peer, stop).await;
    }
}

/// Hands the connection to hyper, `prefix` first; boxed (see `connection`).
/// A connection on hyper thus costs the small outer task and this box (the
/// hyper connection, ~0.7 KiB) instead of one task holding both: a few
/// hundred bytes more per idle keep-alive connection, none once a WebSocket
/// has left hyper at its upgrade (both are freed then).
fn hyper_connection<IO: Io>(
    io: IO,
    prefix: Bytes,
    shared: &Shared,
    peer: Option<Peer>,
    stop: CancellationToken,
) -> Pin<Box<impl Future<Output = ()> + Send>> {
    let service = BoxedRouter {
        router: shared.router.clone(),
        peer,
    };
    let conn = shared
        .builder
        .serve_connection(TokioIo::new(Prefixed::new(io, prefix)), service)
        .with_upgrades();
    Box::pin(drive(conn, stop))
}

/// One hyper connection, until it closes or (after `stop`) has drained.
///
/// Not an `async fn`: one would move `conn` from its argument slot into a
/// local, and the task would hold both copies (1,424 bytes instead of 768;
/// `conn` is `Unpin`, so the block polls it where it was captured).
#[allow(clippy::manual_async_fn)] // on purpose: see above, and the test below
fn drive<IO: Io>(mut conn: Connection<IO>, stop: CancellationToken) -> impl Future<Output = ()> {
    async move {
        tokio::select! {
            r = &mut conn => return log_end(r),
            _ = stop.cancelled() => {}
        }
        Pin::new(&mut conn).graceful_shutdown();
        log_end((&mut conn).await);
    }
}

fn log_end<T>(r: hyper::Result<T>) {
    if let Err(e) = r {
        // A client that goes away mid-request is routine, not an error.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Errors of `accept` that concern one connection only; anything else (out
/// of file descriptors, most often) is waited out for a second, as hyper
/// and axum do, rather than spinning.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The router as a hyper service whose future is boxed (module doc: it keeps
/// hyper's per-connection in-flight slot at 16 bytes), with the
/// connection's peer for each request's extensions.
#[derive(Clone)]
struct BoxedRouter {
    router: Router,
    peer: Option<Peer>,
}

impl hyper::service::Service<Request<Incoming>> for BoxedRouter {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        let (req, leftover) = unread::Leftover::track(req);
        let res = self.router.clone().oneshot(req);
        Box::pin(async move {
            let mut res = res.await?;
            leftover.settle(&mut res).await;
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Tls = Box<TlsStream<TcpStream>>;

    fn future_size<IO, F: Future>(_: fn(Connection<IO>, CancellationToken) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn task_size<IO, F: Future>(_: fn(IO, Arc<Shared>, CancellationToken) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A direct SSE stream's task is this future for as long as the stream
    /// is open: the socket, the body and its write state, and what the
    /// loop keeps between requests (the peer's address, bytes carried to
    /// the next head), no more (reading a request and hyper's connection
    /// are boxed). Over TLS the stream is boxed, so the task is no larger.
    /// 304 bytes when only a connection's first request could be direct;
    /// 352 with the loop.
    #[test]
    fn a_direct_stream_task_is_small() {
        let task = task_size(connection::<TcpStream>);
        assert!(task <= 352, "connection is {task} bytes");
        let task = task_size(connection::<Tls>);
        assert!(task <= 352, "connection over TLS is {task} bytes");
    }

    /// Every open connection's task is this future: it must hold the
    /// connection once (the `async fn` form held it twice).
    #[test]
    fn a_connection_task_holds_one_copy_of_the_connection() {
        let conn = std::mem::size_of::<Connection<TcpStream>>();
        let task = future_size(drive::<TcpStream>);
        assert!(
            task < conn + 256,
            "drive is {task} bytes, the connection {conn}"
        );
    }

    /// A TLS connection's task holds the boxed stream and the connection's
    /// own (small) future, not the handshake's state.
    #[test]
    fn a_tls_connection_task_is_small() {
        let task = task_size(secure);
        assert!(task <= 512, "secure is {task} bytes");
    }
}
