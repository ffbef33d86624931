//! The relay's own HTTP/1 client for plain-`http://` providers (a sidecar,
//! a local inference server, an egress proxy in the same network).
//!
//! reqwest hands every request to a pooled connection driven by a task of
//! its own, so each answer crosses tasks: the request goes to the
//! connection's task, the head and every body chunk come back through
//! channels that wake the caller. Here a connection is owned by whoever
//! uses it: its `hyper` connection future is polled by the request that
//! sends on it, and then by the answer's body, which the gateway's own
//! connection task polls as it writes to the client. One task moves bytes
//! from the provider's socket to the client's, as an event-loop proxy does.
//!
//! Idle connections wait in a pool per serving loop ([`crate::cores`]), at
//! most [`MAX_IDLE`], each for at most [`IDLE_FOR`], shorter than common
//! servers' keep-alive (uvicorn's and Node's are 5 s), so a provider rarely
//! closes one as a request goes out on it. An idle connection is not
//! polled: a provider's close is noticed when it is taken (one poll, and
//! `is_ready`). A request that was never written (the connection ended
//! first) is sent once more on a new connection; one that was written is
//! never sent again, since the provider may have acted on it. An answer
//! whose body was not read to its end closes its connection.
//!
//! TLS providers, URLs with credentials, and any process with an HTTP
//! proxy in its environment keep reqwest (which has all three); reqwest
//! would also follow a redirect, which an API endpoint does not send.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::Stream;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::{
    body::{Body, Incoming},
    client::conn::http1::{self, Connection, SendRequest},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cores::PerCore;

/// Idle connections kept per serving loop.
pub const MAX_IDLE: usize = 256;

/// How long an idle connection is kept (module doc).
pub const IDLE_FOR: Duration = Duration::from_secs(4);

/// How long a connect may take (reqwest's provider client: 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Conn = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One connection: its sender and the future that drives it.
struct Idle {
    send: SendRequest<Full<Bytes>>,
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Whether a request may be sent on it now: one poll lets hyper see a
    /// close by the provider or finish the last answer.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.conn.as_mut().poll(&mut cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.send.is_ready(),
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    fn take(&self) -> Option<Idle> {
        loop {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if idle.since.elapsed() < IDLE_FOR && idle.reusable() {
                return Some(idle);
            }
        }
    }

    /// Keeps `idle` and lets go of the connections idle too long: the
    /// pool is in the order they were put back, oldest first, and the
    /// bottom ones may never be taken again after a burst.
    fn put(&self, mut idle: Idle) {
        let now = Instant::now();
        idle.since = now;
        let expired: Vec<Idle> = {
            let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let old = pool.partition_point(|i| now.duration_since(i.since) >= IDLE_FOR);
            let expired = pool.drain(..old).collect();
            if pool.len() < MAX_IDLE {
                pool.push(idle);
            }
            expired
        };
        // Closed outside the lock.
        drop(expired);
    }
}

/// A provider's endpoint on the lean client.
pub struct Lean {
    /// `host:port`, resolved at each connect.
    addr: String,
    host: HeaderValue,
    /// The request target (path and query).
    path: Uri,
    pools: PerCore<Arc<Pool>>,
}

impl std::fmt::Debug for Lean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lean").field("addr", &self.addr).finish()
    }
}

/// Whether the environment names a proxy that reqwest would use for
/// `http://` URLs.
fn proxy_in_env() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

impl Lean {
    /// The lean client for `url`, one pool per serving loop; `None` unless
    /// `url` is plain `http://` and no proxy is configured.
    pub fn for_url(url: &reqwest::Url, loops: usize) -> Option<Self> {
        let credentials = !url.username().is_empty() || url.password().is_some();
        if url.scheme() != "http" || credentials || proxy_in_env() {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        Some(Self {
            addr: format!("{host}:{port}"),
            host: HeaderValue::try_from(authority).ok()?,
            path: Uri::try_from(path).ok()?,
            pools: PerCore::new(loops, |_| Arc::default()),
        })
    }

    /// `POST`s `body` (JSON) with `headers`; the answer's head, and its body
    /// to read. `Err` says why no answer came (the connection failed).
    pub async fn post(
        &self,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<LeanBody>, String> {
        let pool = self.pools.get().clone();
        let mut idle = match pool.take() {
            Some(idle) => idle,
            None => self.connect().await?,
        };
        let mut resent = false;
        loop {
            let sent = idle.send.send_request(self.request(headers, body.clone()));
            let (answer, closed) = drive(&mut idle.conn, sent).await;
            match answer {
                Some(Ok(resp)) => {
                    let (parts, incoming) = resp.into_parts();
                    let body = LeanBody {
                        incoming: Some(incoming),
                        idle: Some(idle),
                        closed,
                        ended: false,
                        pool,
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                // Never written: the connection ended (the provider closed
                // it) before hyper took the request, or hyper says so.
                None if !resent => {}
                Some(Err(e)) if !resent && e.is_canceled() => {}
                None => return Err("the provider closed the connection".to_owned()),
                Some(Err(e)) => return Err(describe(&e)),
            }
            tracing::debug!(
                "a provider connection closed before the request went out; sending on a new one"
            );
            resent = true;
            idle = self.connect().await?;
        }
    }

    fn request(&self, headers: &HeaderMap, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.reserve(headers.len() + 3);
        h.insert(header::HOST, self.host.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // As reqwest sends by default.
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in headers {
            h.append(name.clone(), value.clone());
        }
        req
    }

    async fn connect(&self) -> Result<Idle, String> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*self.addr)).await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(format!("cannot connect to {}: {e}", self.addr)),
            Err(_) => return Err(format!("connecting to {} timed out", self.addr)),
        };
        let _ = tcp.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| describe(&e))?;
        Ok(Idle {
            send,
            conn: Box::pin(conn),
            since: Instant::now(),
        })
    }
}

/// hyper's error with its causes (`connection closed before message
/// completed`, the I/O error under it).
pub(super) fn describe(e: &hyper::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Polls `fut` and, until it ends, the connection it needs; also says
/// whether the connection ended (it cannot be used again). `None`: the
/// connection ended with `fut` still waiting. hyper answers a request it
/// had taken when its connection fails, but one still queued when the
/// connection ends cleanly (the provider closed it while it was idle) only
/// when the connection is dropped, which the caller does.
async fn drive<F: Future>(conn: &mut Conn, fut: F) -> (Option<F::Output>, bool) {
    let mut fut = std::pin::pin!(fut);
    let mut closed = false;
    let out = poll_fn(|cx| {
        if !closed && conn.as_mut().poll(cx).is_ready() {
            closed = true;
        }
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if closed => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    (out, closed)
}

/// An answer's body; reading it drives its connection, which goes back to
/// the pool once the body is read to its end.
pub struct LeanBody {
    incoming: Option<Incoming>,
    idle: Option<Idle>,
    /// The connection's future ended: it is not polled again nor reused.
    closed: bool,
    ended: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for LeanBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanBody")
            .field("ended", &self.ended)
            .finish()
    }
}

impl Stream for LeanBody {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let (Some(idle), false) = (&mut this.idle, this.closed) {
            if idle.conn.as_mut().poll(cx).is_ready() {
                this.closed = true;
            }
        }
        let Some(incoming) = &mut this.incoming else {
            return Poll::Ready(None);
        };
        loop {
            match std::task::ready!(Pin::new(&mut *incoming).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers, if any, are not relayed.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                }
                Some(Err(e)) => {
                    this.closed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl LeanBody {
    /// Reads what of the body has already arrived, without waiting: a
    /// reader that stops at `data: [DONE]` leaves the chunked body's last
    /// chunk unread, and the connection can be reused once it is read.
    fn finish(&mut self, idle: &mut Idle) {
        let Some(incoming) = &mut self.incoming else {
            return;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..8 {
            if idle.conn.as_mut().poll(&mut cx).is_ready() {
                self.closed = true;
                return;
            }
            match Pin::new(&mut *incoming).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) => {
                    self.ended = true;
                    return;
                }
                Poll::Ready(Some(Err(_))) | Poll::Pending => return,
            }
        }
    }
}

impl Drop for LeanBody {
    fn drop(&mut self) {
        let Some(mut idle) = self.idle.take() else {
            return;
        };
        if !self.ended && !self.closed {
            self.finish(&mut idle);
        }
        // The body first: hyper then knows the answer was read.
        self.incoming = None;
        if self.ended && !self.closed && idle.reusable() {
            self.pool.put(idle);
        }
    }
}

#[cfg(test)]
#[path = "lean_tests.rs"]
mod tests;
