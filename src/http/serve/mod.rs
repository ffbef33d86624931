//! The HTTP/1 accept loop: weir's own instead of `axum::serve`, so that the
//! per-connection settings of hyper can be chosen. Most of weir's open
//! connections are idle streams (SSE bodies, WebSockets) that hold whatever
//! hyper allocated for them for hours, so what one connection costs is what
//! 100k connections cost (BENCHMARKS.md, connections).
//!
//! What each choice saves (heaptrack, per idle SSE connection):
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
//!   [`crate::edge::limits::limit_headers`] and gets the 431 envelope.
//! - `header_read_timeout` (30 s, hyper's default, which needs a timer to
//!   take effect and `axum::serve` sets none): a connection that never
//!   completes a request head, or stays idle between keep-alive requests,
//!   is closed instead of holding its buffers forever.
//! - `TCP_NODELAY`: stream frames are small and must not wait for Nagle.
//!
//! What cannot be sized: hyper's read buffer starts at 8 KiB and its header
//! write buffer is 8 KiB (both fixed in hyper); see BENCHMARKS.md.
//!
//! Drain: the same as `axum::serve(..).with_graceful_shutdown(..)`: once
//! `signal` resolves no connection is accepted (the listener is dropped),
//! every connection is told to shut down gracefully (an idle keep-alive one
//! closes, one with a response in flight finishes it first) and the returned
//! future resolves when all of them are closed. Upgraded WebSockets leave
//! hyper at the upgrade and are ended by the gateway's own shutdown token.
//! HTTP/1 only: `axum::serve` did not offer HTTP/2 either (axum's `http2`
//! feature is off).

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::{pin, Pin},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use futures::future::BoxFuture;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// Time a client has to send a complete request head (also the idle limit
/// between keep-alive requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

type Connection = http1::UpgradeableConnection<TokioIo<TcpStream>, BoxedRouter>;

/// Serves `router` on `listener` until `signal` resolves, then drains as the
/// module doc says.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let builder = http1_builder();
    let service = BoxedRouter(router);
    let stop = CancellationToken::new();
    let conns = TaskTracker::new();
    let mut signal = pin!(signal);
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
        // Best effort: a socket that refuses it still works, only slower.
        let _ = tcp.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(tcp), service.clone())
            .with_upgrades();
        conns.spawn(drive(conn, stop.clone()));
    }
    drop(listener);
    stop.cancel();
    conns.close();
    conns.wait().await;
    Ok(())
}

/// The HTTP/1 settings every connection gets (module doc).
fn http1_builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    b
}

/// One connection, until it closes or (after `stop`) has drained.
///
/// Not an `async fn`: one would move `conn` from its argument slot into a
/// local, and the task would hold both copies (1,424 bytes instead of 768;
/// `conn` is `Unpin`, so the block polls it where it was captured).
#[allow(clippy::manual_async_fn)] // on purpose: see above, and the test below
fn drive(mut conn: Connection, stop: CancellationToken) -> impl Future<Output = ()> {
    async move {
        tokio::select! {
            r = &mut conn => return log_end(r),
            _ = stop.cancelled() => {}
        }
        Pin::new(&mut conn).graceful_shutdown();
        log_end((&mut conn).await);
    }
}

fn log_end(r: hyper::Result<()>) {
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
/// hyper's per-connection in-flight slot at 16 bytes).
#[derive(Clone)]
struct BoxedRouter(Router);

impl hyper::service::Service<Request<Incoming>> for BoxedRouter {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.0.clone().oneshot(req.map(Body::new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: Future>(_: fn(Connection, CancellationToken) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open connection's task is this future: it must hold the
    /// connection once (the `async fn` form held it twice).
    #[test]
    fn a_connection_task_holds_one_copy_of_the_connection() {
        let conn = std::mem::size_of::<Connection>();
        let task = future_size(drive);
        assert!(
            task < conn + 256,
            "drive is {task} bytes, the connection {conn}"
        );
    }
}
