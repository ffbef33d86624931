//! A connection's requests on the direct path: the long-lived SSE GETs
//! and the streaming POSTs (`/v1/chat/completions`, an agent's messages)
//! answered by the router and written to the socket by weir
//! ([`super::body`]), so that no hyper connection (and none of its
//! buffers or its per-request machinery) exists while they are served.
//! A connection stays on the direct path from request to request for as
//! long as its requests are of these kinds; the first that is not goes to
//! hyper with the connection, for good.
//!
//! The router is called as hyper would call it (`oneshot` of a clone), so
//! every layer (request id, access log, metrics, CORS, auth, scopes, rate
//! limits, the error envelope) runs unchanged. The response head is what
//! hyper writes: status line, the response's headers, `date`, and
//! `content-length` when the body's length is known (an error envelope)
//! or `transfer-encoding: chunked` (a stream).

use std::time::SystemTime;

use axum::{
    body::{Body, HttpBody},
    response::Response,
};
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{
    head::{read_request, First},
    Shared,
};
use crate::audit::Peer;

/// What a connection does after a request head.
pub enum Next {
    /// Hyper serves it; these bytes were already read from the socket.
    Hyper(Bytes),
    /// Hyper serves it as HTTP/2 (prior knowledge); these bytes (the
    /// preface and maybe more) were already read.
    H2(Bytes),
    /// Write this response, then go on as [`Respond::keep_alive`] says.
    Respond(Respond),
    /// Nothing more to do: the client left, was too slow, or the gateway
    /// is stopping.
    Close,
}

/// A response ready to be written on the direct path.
pub struct Respond {
    pub head: Bytes,
    pub body: Body,
    /// The body's exact length (it has a `content-length`), or `None`
    /// (chunked).
    pub length: Option<u64>,
    /// Whether further requests may be served on the connection
    /// afterwards (neither side said `connection: close`).
    pub keep_alive: bool,
    /// What the client sent while the handler ran (the start of its next
    /// request): the socket is no longer watched once it has sent this.
    pub early: Bytes,
}

/// Reads the next request (within the limits of [`read_request`]) and, on
/// the direct path, gets its response. `carry`: bytes the client sent
/// during the previous response; `first`: whether this is the
/// connection's first request; `peer`: the connection's client.
pub async fn next_request<IO: AsyncRead + Unpin>(
    io: &mut IO,
    shared: &Shared,
    stop: &CancellationToken,
    carry: Bytes,
    first: bool,
    peer: Option<Peer>,
) -> Next {
    let mut req = match read_request(io, carry, first, shared.body_max, stop).await {
        Ok(First::Direct(req)) => req,
        Ok(First::Hyper(prefix)) => return Next::Hyper(prefix),
        Ok(First::H2(prefix)) => return Next::H2(prefix),
        Ok(First::Closed) => return Next::Close,
        // Slow (`TimedOut`) or gone: routine, not an error.
        Err(e) => {
            tracing::debug!(error = %e, "reading a request failed");
            return Next::Close;
        }
    };
    if let Some(peer) = peer {
        req.extensions_mut().insert(peer);
    }
    let wants_close = connection_close(req.headers());
    // While the handler runs the socket is watched, as hyper watches it: a
    // client that goes away drops the handler (a run it started is
    // cancelled, `CancelOnDrop`), not only a stream it was sent.
    let mut early = Bytes::new();
    let resp = tokio::select! {
        r = shared.router.clone().oneshot(req) => match r {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        () = gone(io, &mut early) => {
            tracing::debug!("the client left before its answer");
            return Next::Close;
        }
    };
    respond(resp, wants_close, early)
}

/// Resolves when the client goes away (EOF or a failed read). Bytes it
/// sends instead (a pipelined request) are kept in `early` and end the
/// watch without resolving: hyper stops reading then too.
async fn gone<IO: AsyncRead + Unpin>(io: &mut IO, early: &mut Bytes) {
    let mut buf = [0u8; 64];
    match io.read(&mut buf).await {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            *early = Bytes::copy_from_slice(&buf[..n]);
            std::future::pending::<()>().await;
        }
    }
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// No body at all (204, 304).
    Empty,
    Length(u64),
    Chunked,
}

fn respond(resp: Response, wants_close: bool, early: Bytes) -> Next {
    let (parts, body) = resp.into_parts();
    if parts.status.is_informational() {
        // Not a final response; hyper would have sent a 500. No route does it.
        tracing::error!(status = %parts.status, "1xx response on the direct path");
        return Next::Close;
    }
    let framing = if matches!(
        parts.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        Framing::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(Framing::Chunked, Framing::Length)
    };
    let close = wants_close || connection_close(&parts.headers);
    let head = encode_head(parts.status, &parts.headers, framing, close);
    let (body, length) = match framing {
        Framing::Empty => (Body::empty(), Some(0)),
        Framing::Length(n) => (body, Some(n)),
        Framing::Chunked => (body, None),
    };
    Next::Respond(Respond {
        head: head.into(),
        body,
        length,
        keep_alive: !close,
        early,
    })
}

/// The response head as hyper writes it: lower-case names in the response's
/// order, its own framing headers replaced by ours, `connection: close`
/// when the connection ends after this response, `date` last.
fn encode_head(status: StatusCode, headers: &HeaderMap, framing: Framing, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + headers.len() * 48);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close && !connection_close(headers) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether a `connection` header asks to close.
fn connection_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn text(head: Vec<u8>) -> String {
        String::from_utf8(head).unwrap()
    }

    #[test]
    fn a_stream_head_is_chunked_and_dated() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.append("vary", HeaderValue::from_static("origin"));
        h.append("vary", HeaderValue::from_static("accept"));
        let head = text(encode_head(StatusCode::OK, &h, Framing::Chunked, false));
        let (before, date) = head.split_once("date: ").unwrap();
        assert_eq!(
            before,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
             vary: origin\r\nvary: accept\r\ntransfer-encoding: chunked\r\n"
        );
        assert!(date.ends_with(" GMT\r\n\r\n"), "{date}");
    }

    #[test]
    fn a_known_length_replaces_the_response_framing() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("999"));
        h.insert("date", HeaderValue::from_static("then"));
        let head = text(encode_head(
            StatusCode::UNAUTHORIZED,
            &h,
            Framing::Length(12),
            true,
        ));
        assert_eq!(
            head,
            "HTTP/1.1 401 Unauthorized\r\ndate: then\r\nconnection: close\r\n\
             content-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn connection_close_is_a_token_of_any_connection_header() {
        let mut h = HeaderMap::new();
        assert!(!connection_close(&h));
        h.append("connection", HeaderValue::from_static("keep-alive"));
        assert!(!connection_close(&h));
        h.append("connection", HeaderValue::from_static("foo, Close"));
        assert!(connection_close(&h));
    }

    #[test]
    fn an_error_envelope_keeps_the_connection_and_a_stream_is_chunked() {
        let Next::Respond(r) = respond(Response::new(Body::from("{}")), false, Bytes::new()) else {
            panic!("respond");
        };
        assert_eq!((r.length, r.keep_alive), (Some(2), true));
        let stream = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let Next::Respond(r) = respond(Response::new(stream), true, Bytes::new()) else {
            panic!("respond");
        };
        assert_eq!((r.length, r.keep_alive), (None, false));
    }
}
