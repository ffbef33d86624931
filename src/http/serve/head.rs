//! A connection's request heads, read by weir before hyper sees the
//! connection, to pick the path each takes (see the parent module): a
//! long-lived SSE GET, or a streaming POST with its (small, whole) body,
//! is served directly; anything else goes to hyper with the bytes read so
//! far handed back ([`super::prefixed`]).
//!
//! The HTTP/2 connection preface (`PRI * HTTP/2.0`, a client speaking h2c
//! with prior knowledge) is recognised here too and goes to hyper's HTTP/2
//! side ([`super::h2`]); an HTTP/1 connection is thus still served by
//! hyper's HTTP/1 builder, not by hyper-util's `auto` one and its 24-byte
//! rewind (the parent module says what that would cost).
//!
//! Only what is certainly such a request takes the direct path; every
//! doubt (incomplete or oversized head, a parse error, a GET with a body, a
//! chunked, announced-twice or larger body, an upgrade, `expect`, HTTP/1.0,
//! bytes after the request) goes to hyper, which answers it exactly as
//! before.

use std::{io, ops::Range};

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

use tokio_util::sync::CancellationToken;

use super::HEADER_READ_TIMEOUT;
use crate::http::route::{is_direct_post, is_direct_sse};

/// The most bytes read before deciding. Every head seen in practice fits
/// (an SSE GET with a key is ~300 bytes); a larger one goes to hyper, whose
/// 8 KiB read buffer takes this whole prefix in its first read.
pub const HEAD_BUF: usize = 4096;

/// The largest request body the direct path reads itself (a chat request
/// with a long conversation), or the configured body limit if lower; a
/// larger one goes to hyper, which streams it to the handler (and answers
/// 413 past the configured limit).
pub const BODY_MAX: usize = 1 << 20;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Headers parsed at most; a request with more goes to hyper (limit 100).
const MAX_HEADERS: usize = 64;

/// What the next bytes of a connection turned out to be.
#[allow(clippy::large_enum_variant)] // lives only until the request is routed
pub enum First {
    /// A request for the direct path, complete (its body read), with
    /// nothing after it.
    Direct(Request<Body>),
    /// Anything else: these bytes (maybe an incomplete head) go to hyper.
    Hyper(Bytes),
    /// The HTTP/2 preface (and whatever followed it in the same reads).
    H2(Bytes),
    /// The client closed before sending a byte, or halfway through a
    /// direct request's body.
    Closed,
}

/// How much more of a body the buffer grows by at a time: a body's
/// buffer grows as its bytes arrive, not to its announced length at once.
const BODY_STEP: usize = 64 * 1024;

/// Reads the next request of a connection: until a complete head (and the
/// body it announces, for a direct `POST`), [`HEAD_BUF`] bytes of head, or
/// EOF. A head has [`HEADER_READ_TIMEOUT`] (also the idle limit between
/// keep-alive requests), and a body as long again from the end of its
/// head; past either, a `TimedOut` error. `carry` is what the client
/// already sent (during the previous response); only a connection's
/// `first` bytes may be the HTTP/2 preface; a body longer than `body_max`
/// is hyper's. `stop` ends the wait for a request not yet begun (a
/// stopping gateway closes idle connections); one begun is read to its end.
/// The buffer is a temporary: it is gone (or handed to hyper, which frees
/// it after one read, or held by the request's body) before the
/// connection settles into a stream.
pub async fn read_request<IO: AsyncRead + Unpin>(
    io: &mut IO,
    carry: Bytes,
    first: bool,
    body_max: usize,
    stop: &CancellationToken,
) -> io::Result<First> {
    let mut buf = BytesMut::with_capacity(HEAD_BUF.max(carry.len()));
    buf.extend_from_slice(&carry);
    drop(carry);
    let mut by = Instant::now() + HEADER_READ_TIMEOUT;
    // The whole request's length, once a direct POST's head is complete.
    let mut total: Option<usize> = None;
    loop {
        let complete = total.map_or(!buf.is_empty(), |t| buf.len() >= t);
        if complete {
            match classify(&buf, first, body_max) {
                Parsed::Partial if buf.len() < HEAD_BUF => {}
                Parsed::Body(t) => {
                    by = Instant::now() + HEADER_READ_TIMEOUT;
                    total = Some(t);
                }
                Parsed::Direct(mut req, body) => {
                    if !body.is_empty() {
                        *req.body_mut() = Body::from(buf.freeze().slice(body));
                    }
                    return Ok(First::Direct(req));
                }
                Parsed::H2 => return Ok(First::H2(buf.freeze())),
                Parsed::Partial | Parsed::Hyper => return Ok(First::Hyper(buf.freeze())),
            }
        }
        // A head is read into `HEAD_BUF` at most (a longer one is hyper's);
        // a body into room made as it arrives (bytes past its end are a
        // pipelined request: hyper's, with the rest).
        if let Some(t) = total {
            buf.reserve((t - buf.len()).min(BODY_STEP));
        }
        let idle = buf.is_empty();
        let room = buf.capacity() - buf.len();
        let mut into = (&mut buf).limit(room);
        let read = tokio::time::timeout_at(by, io.read_buf(&mut into));
        let n = match idle {
            true => tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(First::Closed),
                n = read => n,
            },
            false => read.await,
        };
        let n = n.map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if n == 0 {
            // A client gone halfway through a body sent no request.
            return Ok(match buf.is_empty() || total.is_some() {
                true => First::Closed,
                false => First::Hyper(buf.freeze()),
            });
        }
    }
}

/// The decision on the bytes read so far.
#[allow(clippy::large_enum_variant)] // as `First`
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A direct `POST`'s head is complete but its body is not: the request
    /// is this many bytes in all.
    Body(usize),
    /// A direct request (no body yet) and where its body is in the bytes.
    Direct(Request<Body>, Range<usize>),
    Hyper,
    /// The HTTP/2 connection preface.
    H2,
}

/// Decides from `bytes` (the start of a request; `first`: of a connection;
/// a longer body than `body_max` is hyper's).
pub fn classify(bytes: &[u8], first: bool, body_max: usize) -> Parsed {
    if first {
        // `P` may still become `POST`: only the whole preface decides.
        if bytes.starts_with(PREFACE) {
            return Parsed::H2;
        }
        if PREFACE.starts_with(bytes) {
            return Parsed::Partial;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    let Some(framing) = Framing::of(req.headers, body_max) else {
        return Parsed::Hyper;
    };
    let (method, body_len) = match (method, framing) {
        ("GET", Framing::None) if is_direct_sse(path) => (Method::GET, 0),
        ("POST", Framing::Length(n)) if is_direct_post(path) => (Method::POST, n),
        _ => return Parsed::Hyper,
    };
    let total = head_len + body_len;
    // Bytes after the request are a pipelined request: hyper's.
    if bytes.len() > total {
        return Parsed::Hyper;
    }
    if bytes.len() < total {
        return Parsed::Body(total);
    }
    match build(method, path, req.headers) {
        Some(r) => Parsed::Direct(r, head_len..total),
        None => Parsed::Hyper,
    }
}

/// How a request head says its body is delimited, as far as the direct
/// path takes it; `None` for anything it leaves to hyper.
#[derive(Debug, PartialEq)]
enum Framing {
    /// No body.
    None,
    /// One `content-length` of at most the direct path's limit.
    Length(usize),
}

impl Framing {
    fn of(raw: &[httparse::Header<'_>], body_max: usize) -> Option<Self> {
        let mut framing = Framing::None;
        for h in raw {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                if framing != Framing::None {
                    return None;
                }
                framing = Framing::Length(length(h.value, body_max)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"upgrade")
                // `100-continue`: hyper answers it when the body is read.
                || name.eq_ignore_ascii_case(b"expect")
            {
                return None;
            }
        }
        Some(framing)
    }
}

/// A `content-length` value of plain digits, at most `max`.
fn length(value: &[u8], max: usize) -> Option<usize> {
    if value.is_empty() || value.len() > 8 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    (n <= max).then_some(n)
}

/// The request as hyper would have built it (the body is added by the
/// caller), or `None` for a value hyper rejects.
fn build(method: Method, path: &str, raw: &[httparse::Header<'_>]) -> Option<Request<Body>> {
    let mut headers = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let uri: Uri = path.parse().ok()?;
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
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
        match classify(bytes, true, BODY_MAX) {
            Parsed::Direct(r, _) => r,
            Parsed::Body(n) => panic!("body of {n}"),
            Parsed::Partial => panic!("partial"),
            Parsed::Hyper => panic!("hyper"),
            Parsed::H2 => panic!("h2"),
        }
    }

    fn to_hyper(bytes: &[u8]) -> bool {
        matches!(classify(bytes, true, BODY_MAX), Parsed::Hyper)
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
            classify(
                b"GET /v1/runs/r/stream HTTP/1.1\r\nHost: x\r\n",
                true,
                BODY_MAX
            ),
            Parsed::Partial
        ));
        assert!(matches!(classify(b"GE", true, BODY_MAX), Parsed::Partial));
    }

    #[test]
    fn the_http2_preface_is_told_from_http1_methods() {
        assert!(matches!(classify(PREFACE, true, BODY_MAX), Parsed::H2));
        let mut with_settings = PREFACE.to_vec();
        with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert!(matches!(
            classify(&with_settings, true, BODY_MAX),
            Parsed::H2
        ));
        for partial in [&b"P"[..], b"PRI", b"PRI * HTTP/2.0\r\n\r\nSM"] {
            assert!(
                matches!(classify(partial, true, BODY_MAX), Parsed::Partial),
                "{partial:?}"
            );
        }
        // Diverging from the preface is an HTTP/1 matter again.
        assert!(matches!(classify(b"PO", true, BODY_MAX), Parsed::Partial));
        assert!(to_hyper(b"POST /v1/runs/r/stream HTTP/1.1\r\n\r\n"));
        assert!(to_hyper(b"PRI * HTTP/1.1\r\n\r\n"));
    }

    fn post(path: &str, extra: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\ncontent-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_streaming_post_with_its_whole_body_is_direct() {
        for path in ["/v1/chat/completions", "/v1/agents/ag_1/messages"] {
            let bytes = post(path, "Authorization: Bearer k\r\n", "{\"a\":1}");
            let Parsed::Direct(r, body) = classify(&bytes, true, BODY_MAX) else {
                panic!("{path} is not direct");
            };
            assert_eq!(r.method(), Method::POST);
            assert_eq!(r.uri().path(), path);
            assert_eq!(r.headers()["content-length"], "7");
            assert_eq!(&bytes[body], b"{\"a\":1}");
            // Not the first request of its connection: the same.
            assert!(matches!(
                classify(&bytes, false, BODY_MAX),
                Parsed::Direct(..)
            ));
        }
    }

    #[test]
    fn a_post_waits_for_its_body_and_its_head_for_its_end() {
        let bytes = post("/v1/chat/completions", "", "{\"a\":1}");
        let head = bytes.len() - 7;
        for cut in [head, head + 1, bytes.len() - 1] {
            assert!(
                matches!(classify(&bytes[..cut], true, BODY_MAX), Parsed::Body(n) if n == bytes.len()),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            classify(&bytes[..head - 1], true, BODY_MAX),
            Parsed::Partial
        ));
    }

    #[test]
    fn posts_in_doubt_go_to_hyper() {
        let chat = "/v1/chat/completions";
        let big = format!("content-length: {}\r\n", BODY_MAX + 1);
        for bytes in [
            // Not a streaming route, or no length, or framing hyper's to read.
            post("/v1/agents", "", "{}"),
            format!("POST {chat} HTTP/1.1\r\n\r\n").into_bytes(),
            format!("POST {chat} HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes(),
            format!("POST {chat} HTTP/1.1\r\n{big}\r\n").into_bytes(),
            format!("POST {chat} HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx")
                .into_bytes(),
            format!("POST {chat} HTTP/1.1\r\ncontent-length: +1\r\n\r\nx").into_bytes(),
            format!("POST {chat} HTTP/1.0\r\ncontent-length: 1\r\n\r\nx").into_bytes(),
            post(chat, "expect: 100-continue\r\n", "{}"),
            post(chat, "upgrade: h2c\r\n", "{}"),
            // A pipelined request after the body.
            [
                post(chat, "", "{}"),
                b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            ]
            .concat(),
        ] {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(to_hyper(&bytes), "{text:?}");
        }
    }

    #[test]
    fn only_a_first_request_may_be_the_preface() {
        assert!(matches!(classify(PREFACE, false, BODY_MAX), Parsed::Hyper));
        assert!(matches!(classify(b"PRI", false, BODY_MAX), Parsed::Partial));
    }

    /// The reader over a socket that hands out a few bytes per read: the
    /// body is read to its announced end, a client gone halfway through
    /// it sent nothing, and bytes carried from the previous response come
    /// first.
    #[tokio::test]
    async fn the_reader_reads_a_body_to_its_end() {
        let bytes = post("/v1/chat/completions", "", &"x".repeat(9000));
        let (mut client, mut server) = tokio::io::duplex(64);
        let send = bytes.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&send[7..]).await.unwrap();
            client
        });
        let carry = Bytes::copy_from_slice(&bytes[..7]);
        let First::Direct(r) = read_request(
            &mut server,
            carry,
            false,
            BODY_MAX,
            &CancellationToken::new(),
        )
        .await
        .unwrap() else {
            panic!("not direct");
        };
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(body.len(), 9000);
        let mut client = writer.await.unwrap();
        let cut = bytes[..bytes.len() - 10].to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&cut).await.unwrap();
        });
        assert!(matches!(
            read_request(
                &mut server,
                Bytes::new(),
                false,
                BODY_MAX,
                &CancellationToken::new()
            )
            .await
            .unwrap(),
            First::Closed
        ));
    }

    /// A body that pauses for the timeout ends the read (`TimedOut`), as
    /// a head that takes that long does (time is paused: no real wait).
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_or_head_times_out() {
        use tokio::io::AsyncWriteExt;
        let bytes = post("/v1/chat/completions", "", "{\"a\":1}");
        for cut in [bytes.len() - 3, 10] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            client.write_all(&bytes[..cut]).await.unwrap();
            let err = match read_request(
                &mut server,
                Bytes::new(),
                true,
                BODY_MAX,
                &CancellationToken::new(),
            )
            .await
            {
                Err(e) => e,
                Ok(_) => panic!("read a request cut at {cut}"),
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "cut at {cut}");
            drop(client);
        }
    }

    #[test]
    fn a_body_over_the_configured_limit_is_hyper() {
        let bytes = post("/v1/chat/completions", "", "{\"a\":1}");
        assert!(matches!(classify(&bytes, true, 6), Parsed::Hyper));
        assert!(matches!(classify(&bytes, true, 7), Parsed::Direct(..)));
    }

    /// A stopping gateway closes a connection waiting for its next request,
    /// but reads one that has begun (here: part of its head carried over)
    /// to its end.
    #[tokio::test]
    async fn stop_ends_only_a_wait_for_a_request_not_begun() {
        use tokio::io::AsyncWriteExt;
        let stop = CancellationToken::new();
        stop.cancel();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let idle = read_request(&mut server, Bytes::new(), false, BODY_MAX, &stop).await;
        assert!(matches!(idle.unwrap(), First::Closed));
        let bytes = post("/v1/chat/completions", "", "{\"a\":1}");
        client.write_all(&bytes[10..]).await.unwrap();
        let carry = Bytes::copy_from_slice(&bytes[..10]);
        let begun = read_request(&mut server, carry, false, BODY_MAX, &stop).await;
        assert!(matches!(begun.unwrap(), First::Direct(_)));
    }
}
