//! Load shedding on the relay: a bounded number of relays in flight per
//! process (`--max-relays-in-flight`, protocol/limits.md).
//!
//! Past what the process can serve, every request admitted makes every
//! other one slower: an unbounded relay queues in the runtime, the
//! provider's connection pool and the sockets until callers time out, so
//! goodput falls to nothing while the work still gets done. A relay past
//! the bound is refused at once with 503 `unavailable` and `Retry-After`,
//! before it costs a provider request, so the ones admitted keep their
//! latency. The count is one atomic per process (no lock, no await); a
//! [`RelayPermit`] is held until the relayed body ends or is dropped.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, response::Response};
use futures::StreamExt;

/// What a refused caller is told to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The relays in flight on this process and their bound.
#[derive(Debug)]
pub struct Shed {
    /// 0: unlimited.
    max: usize,
    in_flight: Arc<AtomicUsize>,
}

/// The process holds its limit of relays in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway holds its limit of {0} relays in flight; try again shortly")]
pub struct Overloaded(pub usize);

/// One relay in flight; gives its place back when dropped.
#[derive(Debug)]
pub struct RelayPermit {
    in_flight: Option<Arc<AtomicUsize>>,
}

impl Drop for RelayPermit {
    fn drop(&mut self) {
        if let Some(n) = &self.in_flight {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Shed {
    /// A bound of `max` relays in flight (0: unlimited).
    pub fn new(max: u32) -> Self {
        Self {
            max: max as usize,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place for one more relay, or [`Overloaded`] when all are taken.
    pub fn admit(&self) -> Result<RelayPermit, Overloaded> {
        if self.max == 0 {
            return Ok(RelayPermit { in_flight: None });
        }
        // Counting up first and undoing on refusal keeps it one atomic op
        // on the path taken under load; the refused ones never held a place.
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded(self.max));
        }
        Ok(RelayPermit {
            in_flight: Some(self.in_flight.clone()),
        })
    }

    /// Relays in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// `resp` with `permit` held until its body has been sent or dropped (the
/// client hung up), whatever the body is: a stream, a JSON answer or an
/// error.
pub fn hold(resp: Response, permit: Option<RelayPermit>) -> Response {
    let Some(permit) = permit.filter(|p| p.in_flight.is_some()) else {
        return resp;
    };
    // A body already whole (an error, a refusal) owes the provider nothing
    // more: the place is given back now and the answer keeps its length.
    if axum::body::HttpBody::size_hint(resp.body())
        .exact()
        .is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        // Moved in so that the permit lives exactly as long as the body.
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_refuses_past_max_and_frees_on_drop() {
        let shed = Shed::new(2);
        let a = shed.admit().unwrap();
        let b = shed.admit().unwrap();
        assert_eq!(shed.admit().unwrap_err(), Overloaded(2));
        assert_eq!(shed.in_flight(), 2);
        drop(a);
        let c = shed.admit().unwrap();
        drop((b, c));
        assert_eq!(shed.in_flight(), 0);
    }

    #[test]
    fn zero_is_unlimited() {
        let shed = Shed::new(0);
        let held: Vec<_> = (0..10_000).map(|_| shed.admit().unwrap()).collect();
        assert_eq!(held.len(), 10_000);
    }

    #[tokio::test]
    async fn a_held_response_frees_its_place_when_the_body_ends() {
        let shed = Shed::new(1);
        let whole = hold(Response::new(Body::from("x")), Some(shed.admit().unwrap()));
        assert_eq!(shed.in_flight(), 0, "a whole body holds no place");
        drop(whole);
        let streamed = Body::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"done"),
        )]));
        let resp = hold(Response::new(streamed), Some(shed.admit().unwrap()));
        assert!(shed.admit().is_err());
        let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"done");
        assert!(shed.admit().is_ok());
    }
}
