//! The first request head of a connection, read by weir before hyper sees
//! the connection, to pick the path it takes (see the parent module): a
//! long-lived SSE GET is served directly, anything else goes to hyper with
//! the bytes read so far handed back ([`super::prefixed`]).
//!
//! The HTTP/2 connection preface (`PRI * HTTP/2.0`, a client speaking h2c
//! with prior knowledge) is recognised here too and goes to hyper's HTTP/2
//! side ([`super::h2`]); an HTTP/1 connection is thus still served by
//! hyper's HTTP/1 builder, not by hyper-util's `auto` one and its 24-byte
//! rewind (the parent module says what that would cost).
//!
//! Only what is certainly such a GET takes the direct path; every doubt
//! (incomplete or oversized head, a parse error, a request body, an
//! upgrade, HTTP/1.0, bytes after the head) goes to hyper, which answers
//! it exactly as before.

use std::io;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::http::route::is_direct_sse;

/// The most bytes read before deciding. Every head seen in practice fits
/// (an SSE GET with a key is ~300 bytes); a larger one goes to hyper, whose
/// 8 KiB read buffer takes this whole prefix in its first read.
pub const HEAD_BUF: usize = 4096;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Headers parsed at most; a request with more goes to hyper (limit 100).
const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection turned out to be.
#[allow(clippy::large_enum_variant)] // lives only until the request is routed
pub enum First {
    /// A long-lived SSE GET, complete, with nothing after its head.
    Direct(Request<Body>),
    /// Anything else: these bytes (maybe an incomplete head) go to hyper.
    Hyper(Bytes),
    /// The HTTP/2 preface (and whatever followed it in the same reads).
    H2(Bytes),
    /// The client closed before sending a byte.
    Closed,
}

/// Reads until a complete head, [`HEAD_BUF`] bytes, or EOF. The buffer is
/// a temporary: it is gone (or handed to hyper, which frees it after one
/// read) before the connection settles into a stream.
pub async fn read_first<IO: AsyncRead + Unpin>(io: &mut IO) -> io::Result<First> {
    let mut buf = vec![0u8; HEAD_BUF];
    let mut len = 0;
    loop {
        match io.read(&mut buf[len..]).await? {
            0 if len == 0 => return Ok(First::Closed),
            0 => return Ok(First::Hyper(prefix(buf, len))),
            n => len += n,
        }
        match classify(&buf[..len]) {
            Parsed::Partial if len < HEAD_BUF => {}
            Parsed::Direct(req) => return Ok(First::Direct(req)),
            Parsed::H2 => return Ok(First::H2(prefix(buf, len))),
            Parsed::Partial | Parsed::Hyper => return Ok(First::Hyper(prefix(buf, len))),
        }
    }
}

fn prefix(mut buf: Vec<u8>, len: usize) -> Bytes {
    buf.truncate(len);
    Bytes::from(buf)
}

/// The decision on the bytes read so far.
#[allow(clippy::large_enum_variant)] // as `First`
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Direct(Request<Body>),
    Hyper,
    /// The HTTP/2 connection preface.
    H2,
}

/// Decides from `bytes` (the start of a connection).
pub fn classify(bytes: &[u8]) -> Parsed {
    // `P` may still become `POST`: only the whole preface decides.
    if bytes.starts_with(PREFACE) {
        return Parsed::H2;
    }
    if PREFACE.starts_with(bytes) {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    // Bytes after the head are a body or a pipelined request: hyper's.
    if head_len != bytes.len() || req.method != Some("GET") || req.version != Some(1) {
        return Parsed::Hyper;
    }
    let Some(path) = req.path.filter(|p| is_direct_sse(p)) else {
        return Parsed::Hyper;
    };
    match build(path, req.headers) {
        Some(r) => Parsed::Direct(r),
        None => Parsed::Hyper,
    }
}

/// The request as hyper would have built it, or `None` for anything the
/// direct path leaves to hyper (a body, an upgrade, a value hyper rejects).
fn build(path: &str, raw: &[httparse::Header<'_>]) -> Option<Request<Body>> {
    let mut headers = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::UPGRADE
        {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let uri: Uri = path.parse().ok()?;
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sse_routes_are_recognised_and_nothing_else() {
        for yes in [
            "/v1/agents/ag_1/events",
            "/v1/agents/ag_1/events?after=3",
            "/v1/agents/ag_1/logs/stream",
            "/v1/runs/run_1/stream?api_key=k",
        ] {
            assert!(is_direct_sse(yes), "{yes}");
        }
        for no in [
            "/v1/agents//events",
            "/v1/agents/ag_1",
            "/v1/agents/ag_1/events/",
            "/v1/agents/ag_1/logs",
            "/v1/runs/run_1",
            "/v1/ws",
            "/v1/chat/completions",
            "/healthz",
            "http://h/v1/agents/ag_1/events",
            "/v2/agents/ag_1/events",
        ] {
            assert!(!is_direct_sse(no), "{no}");
        }
    }

    fn direct(bytes: &[u8]) -> Request<Body> {
        match classify(bytes) {
            Parsed::Direct(r) => r,
            Parsed::Partial => panic!("partial"),
            Parsed::Hyper => panic!("hyper"),
            Parsed::H2 => panic!("h2"),
        }
    }

    fn to_hyper(bytes: &[u8]) -> bool {
        matches!(classify(bytes), Parsed::Hyper)
    }

    #[test]
    fn a_complete_sse_get_is_built_as_hyper_would() {
        let r = direct(
            b"GET /v1/agents/a/events?after=2 HTTP/1.1\r\nHost: x\r\n\
              Authorization: Bearer k\r\nLast-Event-ID: 7\r\n\r\n",
        );
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.uri().path(), "/v1/agents/a/events");
        assert_eq!(r.uri().query(), Some("after=2"));
        assert_eq!(r.headers()["authorization"], "Bearer k");
        assert_eq!(r.headers()["last-event-id"], "7");
        assert_eq!(r.headers().len(), 3);
    }

    #[test]
    fn anything_in_doubt_goes_to_hyper() {
        let sse = "/v1/runs/r/stream";
        for head in [
            format!("HEAD {sse} HTTP/1.1\r\n\r\n"),
            format!("GET {sse} HTTP/1.0\r\n\r\n"),
            format!("POST {sse} HTTP/1.1\r\n\r\n"),
            format!("GET {sse} HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
            format!("GET {sse} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"),
            format!("GET {sse} HTTP/1.1\r\nupgrade: websocket\r\n\r\n"),
            format!("GET {sse} HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"),
            "GET /v1/ws HTTP/1.1\r\n\r\n".to_owned(),
            "GET /healthz HTTP/1.1\r\n\r\n".to_owned(),
            "GET /v1/runs/r/stream HTTP/1.1\r\nbad header\r\n\r\n".to_owned(),
        ] {
            assert!(to_hyper(head.as_bytes()), "{head:?}");
        }
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert!(matches!(
            classify(b"GET /v1/runs/r/stream HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(classify(b"GE"), Parsed::Partial));
    }

    #[test]
    fn the_http2_preface_is_told_from_http1_methods() {
        assert!(matches!(classify(PREFACE), Parsed::H2));
        let mut with_settings = PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(matches!(classify(&with_settings), Parsed::H2));
        for partial in [&b"P"[..], b"PRI", b"PRI * HTTP/2.0\r\n\r\nSM"] {
            assert!(matches!(classify(partial), Parsed::Partial), "{partial:?}");
        }
        // Diverging from the preface is an HTTP/1 matter again.
        assert!(matches!(classify(b"PO"), Parsed::Partial));
        assert!(to_hyper(b"POST /v1/runs/r/stream HTTP/1.1\r\n\r\n"));
        assert!(to_hyper(b"PRI * HTTP/1.1\r\n\r\n"));
    }
}
