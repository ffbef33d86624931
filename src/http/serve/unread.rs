//! Request bodies a response left unread: drained if small, else the
//! response says `connection: close` and the rest is read after it.
//!
//! An edge rejection (413 for a body over the limit, 401, 403, 429) answers
//! without reading the body. Left alone, hyper reads only what is already
//! buffered and, if the body is not over, closes the connection after the
//! response without saying so: the client finishes sending, puts the
//! connection back in its pool as keep-alive, and its next request on it
//! races the close and fails (`IncompleteMessage` in reqwest, seen in CI
//! right after a 413); and a close with the upload still arriving resets
//! the connection, which can cost a client the response it had not read
//! yet (RFC 9112 §9.6).
//!
//! So, as Go's net/http does, a leftover body of up to [`DRAIN_MAX`] is
//! read and discarded before the response goes out (within [`DRAIN_TIME`]),
//! and a rate-limited client keeps its connection instead of reconnecting
//! for every 429. Any other (larger, slow, or unfinished in time) gets
//! `connection: close`, as nginx's 413 does, and then lingers as in nginx:
//! a task goes on reading and discarding it after the response (hyper
//! closes the connection once the body is over or dropped), for at most
//! [`LINGER_TIME`], [`LINGER_IDLE`] of silence and [`LINGER_MAX`] bytes.
//! A client waiting for `100 Continue` has sent no body: it only gets
//! `connection: close`.
//!
//! Only a request that has a body is tracked (one `Arc` each): a GET, a
//! WebSocket upgrade and a bodiless POST cost nothing.

use std::{
    future::poll_fn,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::{Buf, Bytes};
use http::{header, HeaderValue};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use parking_lot::Mutex;
use tokio::time::timeout;

/// The most of a leftover body that is read to keep the connection.
pub const DRAIN_MAX: u64 = 64 * 1024;
/// How long a leftover body has to arrive before the response.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);
/// The longest a body is read after its `connection: close` response.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Silence that ends lingering sooner.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// The most that is read after the response.
pub const LINGER_MAX: u64 = 16 * 1024 * 1024;

/// Where a tracked body is once the router has answered.
enum Slot {
    /// Still held by the router (read later, or not at all).
    Held,
    /// Read to its end.
    Ended,
    /// Dropped unread: back here to be drained.
    Left(Incoming),
}

/// A request's body, as the router left it.
#[derive(Default)]
pub struct Leftover(Option<(Arc<Mutex<Slot>>, bool)>);

impl Leftover {
    /// Turns hyper's request into the router's, tracking its body if any.
    pub fn track(req: Request<Incoming>) -> (Request, Self) {
        if req.body().is_end_stream() {
            return (req.map(Body::new), Self(None));
        }
        let waits = req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let slot = Arc::new(Mutex::new(Slot::Held));
        let shared = slot.clone();
        let req = req.map(|inner| {
            Body::new(Tracked {
                inner: Some(inner),
                slot: shared,
            })
        });
        (req, Self(Some((slot, waits))))
    }

    /// Drains a small leftover body; any other marks `res` `connection:
    /// close` and lingers (module doc).
    pub async fn settle(self, res: &mut Response) {
        let Some((slot, waits)) = self.0 else { return };
        let left = mem::replace(&mut *slot.lock(), Slot::Ended);
        let Slot::Left(mut body) = left else { return };
        if !waits && body.size_hint().lower() <= DRAIN_MAX {
            let drained = timeout(DRAIN_TIME, discard(&mut body, DRAIN_MAX, DRAIN_TIME)).await;
            if drained == Ok(true) {
                return;
            }
        }
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        if !waits {
            tokio::spawn(async move {
                let _ = timeout(LINGER_TIME, discard(&mut body, LINGER_MAX, LINGER_IDLE)).await;
            });
        }
    }
}

/// Reads `body` to its end; false past `max` bytes, after `idle` without a
/// frame, or on an error.
async fn discard(body: &mut Incoming, max: u64, idle: Duration) -> bool {
    let mut read = 0u64;
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
        let frame = match timeout(idle, frame).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(_))) | Err(_) => return false,
        };
        read += frame.data_ref().map_or(0, |d| d.remaining() as u64);
        if read > max {
            return false;
        }
    }
}

/// A request body that reports its end, or comes back if dropped unread.
struct Tracked {
    inner: Option<Incoming>,
    slot: Arc<Mutex<Slot>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        // The end is either `None` or the last frame of a sized body (a
        // reader that stops at `is_end_stream` never polls for `None`).
        if matches!(polled, Poll::Ready(None)) || inner.is_end_stream() {
            self.inner = None;
            *self.slot.lock() = Slot::Ended;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *self.slot.lock() = Slot::Left(inner);
        }
    }
}
