//! A lean SSE subscriber over a raw socket (or TLS over one): one small
//! buffer per connection, HTTP/1.1 chunked decoding by hand, frames scanned
//! for `date` and `seq` rather than parsed, so 100k of them fit in the load
//! generator.

use std::{net::SocketAddr, sync::Arc};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::event::{find, Mark, Stats};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// What a subscriber reads from: a socket, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open SSE response, positioned at the start of its body.
pub struct SseConn {
    stream: Box<dyn Io>,
    raw: BytesMut,
    body: BytesMut,
    chunk_left: usize,
    /// Chunked (weir), or the body as it comes until the socket closes
    /// (nchan's event source).
    chunked: bool,
}

/// Why a subscriber stopped.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    Protocol(String),
    #[error("the stream ended")]
    Ended,
}

/// Opens `GET path` with the key from source address number `i`.
pub async fn open(i: usize, to: SocketAddr, path: &str, key: &str) -> Result<SseConn, SseError> {
    open_over(i, to, None, path, key).await
}

/// [`open`], over TLS (ALPN `http/1.1`) when `tls` is given.
pub async fn open_over(
    i: usize,
    to: SocketAddr,
    tls: Option<&TlsConnector>,
    path: &str,
    key: &str,
) -> Result<SseConn, SseError> {
    let tcp = super::connect_from(i, to).await?;
    let mut stream: Box<dyn Io> = match tls {
        Some(c) => Box::new(c.connect(crate::tls::server_name(), tcp).await?),
        None => Box::new(tcp),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = find(&raw, b"\r\n\r\n") {
            break at + 4;
        }
        if raw.len() > MAX_HEAD {
            return Err(SseError::Protocol("response head too large".into()));
        }
        if stream.read_buf(&mut raw).await? == 0 {
            return Err(SseError::Ended);
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let status = head.lines().next().unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&raw[head_end..])
            .chars()
            .take(200)
            .collect::<String>();
        return Err(SseError::Protocol(format!("{status}: {body}")));
    }
    let chunked = head.contains("transfer-encoding: chunked");
    if !chunked && head.contains("content-length:") {
        return Err(SseError::Protocol("expected an unbounded SSE body".into()));
    }
    raw.advance(head_end);
    Ok(SseConn {
        stream,
        raw,
        body: BytesMut::new(),
        chunk_left: 0,
        chunked,
    })
}

impl SseConn {
    /// Reads frames until the stream ends or `stop` fires, recording pings
    /// and events into `stats`. `mark` is this connection's ping-check state.
    pub async fn run(
        mut self,
        stats: &Stats,
        stop: &CancellationToken,
        mark: &mut Mark,
    ) -> Result<(), SseError> {
        loop {
            self.dechunk()?;
            while let Some(at) = find(&self.body, b"\n\n") {
                let frame = self.body.split_to(at + 2);
                handle_frame(&frame, stats, mark);
            }
            // Give memory back once a burst has been handled.
            if self.raw.is_empty() && self.raw.capacity() > 64 * 1024 {
                self.raw = BytesMut::new();
            }
            self.raw.reserve(2048);
            let n = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                n = self.stream.read_buf(&mut self.raw) => n?,
            };
            if n == 0 {
                return Err(SseError::Ended);
            }
        }
    }

    /// The next complete frame (ping comments included), or why the
    /// stream ended ([`SseError::Ended`] when the server ended it).
    pub async fn next_frame(&mut self) -> Result<BytesMut, SseError> {
        loop {
            self.dechunk()?;
            if let Some(at) = find(&self.body, b"\n\n") {
                return Ok(self.body.split_to(at + 2));
            }
            self.raw.reserve(2048);
            if self.stream.read_buf(&mut self.raw).await? == 0 {
                return Err(SseError::Ended);
            }
        }
    }

    /// Moves complete chunk data from `raw` into `body`.
    fn dechunk(&mut self) -> Result<(), SseError> {
        if !self.chunked {
            self.body.extend_from_slice(&self.raw);
            self.raw.clear();
            return Ok(());
        }
        loop {
            if self.chunk_left > 0 {
                let take = self.chunk_left.min(self.raw.len());
                if take == 0 {
                    return Ok(());
                }
                self.body.extend_from_slice(&self.raw[..take]);
                self.raw.advance(take);
                self.chunk_left -= take;
                continue;
            }
            // Between chunks: optional CRLF after data, then `<hex>\r\n`.
            if self.raw.starts_with(b"\r\n") {
                self.raw.advance(2);
            }
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return Ok(());
            };
            let line = std::str::from_utf8(&self.raw[..eol])
                .map_err(|_| SseError::Protocol("chunk size".into()))?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| SseError::Protocol(format!("chunk size `{line}`")))?;
            self.raw.advance(eol + 2);
            if size == 0 {
                return Err(SseError::Ended);
            }
            self.chunk_left = size;
        }
    }
}

/// Records one SSE frame: a ping comment or an event.
pub fn handle_frame(frame: &[u8], stats: &Stats, mark: &mut Mark) {
    if frame.starts_with(b":") {
        stats.ping(&mut mark.ping);
    } else if let Some(at) = find(frame, b"data: ") {
        stats.event_on(&frame[at + 6..], mark);
    }
}

/// Opens and runs one SSE subscriber, counting it in `stats.open` while it
/// runs. `ready` is called once the response head has arrived.
pub async fn subscribe(
    i: usize,
    to: SocketAddr,
    path: Arc<str>,
    key: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    ready: impl FnOnce(bool),
) {
    subscribe_over(i, to, None, path, key, stats, stop, ready).await
}

/// [`subscribe`], over TLS when `tls` is given.
#[allow(clippy::too_many_arguments)] // subscribe's, plus the connector
pub async fn subscribe_over(
    i: usize,
    to: SocketAddr,
    tls: Option<TlsConnector>,
    path: Arc<str>,
    key: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    ready: impl FnOnce(bool),
) {
    let open = open_over(i, to, tls.as_ref(), &path, &key);
    let opened = tokio::time::timeout(super::OPEN_TIMEOUT, open).await;
    let conn = match opened.unwrap_or_else(|_| Err(SseError::Protocol("open timed out".into()))) {
        Ok(c) => c,
        Err(e) => {
            stats.error(format!("sse open: {e}"));
            return ready(false);
        }
    };
    ready(true);
    stats
        .open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut mark = Mark::default();
    let res = conn.run(&stats, &stop, &mut mark).await;
    stats
        .open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = res {
        if !stop.is_cancelled() {
            stats.error(format!("sse stream: {e}"));
        }
    }
}
