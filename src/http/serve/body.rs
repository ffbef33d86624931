//! Writing a response to the socket on the direct path: the head, then the
//! body's frames, chunk-framed unless the length is known.
//!
//! The cost per frame is what hyper's was: no copy and no allocation (the
//! chunk-size line is formatted on the stack at each write; the data is
//! the frame's own `Bytes`), and frames that are ready together (a burst)
//! go out in one `writev`, at most [`MAX_BURST`] of them, like hyper's
//! write queue. While nothing is to be written the socket is read, so a
//! client that goes away ends the body (and its subscription) at once; a
//! slow client just makes the write wait, as with hyper.

use std::{
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll},
};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Frames written in one `writev` at most (hyper queues 16 too).
pub const MAX_BURST: usize = 16;
/// No frame is taken from the body while this many bytes wait to be
/// written: hyper's own bound (its default `max_buf_size`). A client that
/// does not read thus leaves the rest in its subscription, which lags and
/// ends it (`lagged`), instead of weir queueing megabytes for it.
pub const MAX_QUEUED: usize = 8192 + 4096 * 100;
/// Frame slots kept between bursts; a larger burst's growth is freed.
const KEEP_SLOTS: usize = 4;
/// A chunk-size line: up to 16 hex digits and CRLF.
const LINE: usize = 18;
const CRLF: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the body went.
#[derive(Debug)]
pub enum Ended {
    /// Completely written; `rest` is what the client sent meanwhile (it
    /// goes to hyper with the connection).
    Written { rest: Bytes },
    /// The client went away, a write failed, or the body failed or did not
    /// match its length: the connection is done.
    Cut,
}

/// The future that writes `head` and then `body` to `io` (a `&mut
/// TcpStream`: the connection goes on after the response).
pub struct WriteBody<IO> {
    io: IO,
    body: Body,
    burst: Burst,
    /// Bytes the body still owes its `content-length`; `None` when chunked.
    remaining: Option<u64>,
    /// Whether the socket is read to notice the client going away. Like
    /// hyper, weir stops once the client sends something (a pipelined
    /// request), which is kept in `rest`.
    watch: bool,
    rest: Bytes,
}

impl<IO> WriteBody<IO> {
    /// `length`: the body's exact length (framed by `content-length`, which
    /// `head` carries), or `None` to chunk it.
    pub fn new(io: IO, head: Bytes, body: Body, length: Option<u64>) -> Self {
        Self {
            io,
            body,
            burst: Burst::new(head, length.is_none()),
            remaining: length,
            watch: true,
            rest: Bytes::new(),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Future for WriteBody<IO> {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        loop {
            let Ok(pulled) = this.fill(cx) else {
                return Poll::Ready(Ended::Cut);
            };
            match this.burst.poll_write(&mut this.io, cx) {
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "direct response: write failed");
                    return Poll::Ready(Ended::Cut);
                }
                Poll::Ready(Ok(())) if this.burst.end => {
                    let rest = std::mem::take(&mut this.rest);
                    return Poll::Ready(Ended::Written { rest });
                }
                // More frames may be ready behind the ones just written.
                Poll::Ready(Ok(())) if pulled => continue,
                Poll::Ready(Ok(())) | Poll::Pending => break,
            }
        }
        match this.poll_peer(cx) {
            Poll::Ready(()) => Poll::Ready(Ended::Cut),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WriteBody<IO> {
    /// Moves the frames that are ready into the burst; `Ok(true)` if it took
    /// any (or the end), `Err` if the body failed or broke its length.
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        let mut pulled = false;
        while !self.burst.end
            && self.burst.frames.len() < MAX_BURST
            && self.burst.unwritten() < MAX_QUEUED
        {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not sent: hyper sends them only to a
                    // client that asked (`te: trailers`), and no stream has any.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    // An empty chunk would be read as the body's end.
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut self.remaining {
                        *left = left.checked_sub(data.len() as u64).ok_or(())?;
                    }
                    self.burst.push(data);
                    pulled = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "direct response: body failed");
                    return Err(());
                }
                Poll::Ready(None) => {
                    if self.remaining.is_some_and(|left| left > 0) {
                        return Err(());
                    }
                    self.burst.end = true;
                    pulled = true;
                }
                Poll::Pending => break,
            }
        }
        Ok(pulled)
    }

    /// `Ready` when the client has gone away (EOF or an error).
    fn poll_peer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.watch {
            return Poll::Pending;
        }
        let mut buf = [0u8; 64];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut self.io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(()),
            Poll::Ready(Ok(())) => {
                self.rest = Bytes::copy_from_slice(read.filled());
                self.watch = false;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "direct response: read failed");
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Bytes queued for one `writev`, and how many of them are written.
struct Burst {
    /// Raw bytes before the frames: the response head, then empty.
    head: Bytes,
    frames: Vec<Bytes>,
    /// The body has ended: the last chunk follows the frames (if chunked).
    end: bool,
    chunked: bool,
    /// Bytes of the burst on the wire (framing included), and written.
    len: usize,
    written: usize,
}

impl Burst {
    fn new(head: Bytes, chunked: bool) -> Self {
        Self {
            len: head.len(),
            head,
            frames: Vec::new(),
            end: false,
            chunked,
            written: 0,
        }
    }

    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if self.chunked {
            self.len += chunk_line(data.len(), &mut [0; LINE]).len() + CRLF.len();
        }
        self.frames.push(data);
    }

    fn unwritten(&self) -> usize {
        self.len - self.written
    }

    /// Writes until all of the burst is written (then empties it) or the
    /// socket is full.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut lines = [[0u8; LINE]; MAX_BURST];
            let mut slices = [IoSlice::new(&[]); 2 + 3 * MAX_BURST];
            let n = self.slices(&mut lines, &mut slices);
            let total: usize = slices[..n].iter().map(|s| s.len()).sum();
            if self.written == total {
                self.clear();
                return Poll::Ready(Ok(()));
            }
            let mut todo = &mut slices[..n];
            IoSlice::advance_slices(&mut todo, self.written);
            match ready!(Pin::new(&mut *io).poll_write_vectored(cx, todo)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(k) => self.written += k,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The burst as slices: head, then per frame its size line, data and
    /// CRLF (or the data alone when not chunked), then the last chunk.
    fn slices<'a>(
        &'a self,
        lines: &'a mut [[u8; LINE]; MAX_BURST],
        out: &mut [IoSlice<'a>; 2 + 3 * MAX_BURST],
    ) -> usize {
        let mut n = 0;
        let mut push = |s: &'a [u8]| {
            if !s.is_empty() {
                out[n] = IoSlice::new(s);
                n += 1;
            }
        };
        push(&self.head);
        for (frame, line) in self.frames.iter().zip(lines.iter_mut()) {
            if self.chunked {
                push(chunk_line(frame.len(), line));
                push(frame);
                push(CRLF);
            } else {
                push(frame);
            }
        }
        if self.end && self.chunked {
            push(LAST_CHUNK);
        }
        n
    }

    fn clear(&mut self) {
        self.head = Bytes::new();
        self.len = 0;
        if self.frames.capacity() > KEEP_SLOTS {
            self.frames = Vec::new();
        } else {
            self.frames.clear();
        }
        self.written = 0;
    }
}

/// `len` in hex and CRLF, as the chunk's size line.
fn chunk_line(len: usize, line: &mut [u8; LINE]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        line[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xF];
    }
    line[digits..digits + 2].copy_from_slice(CRLF);
    &line[..digits + 2]
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;

    /// A socket that takes at most `max` bytes per write and whose client
    /// is quiet, gone, or sends `bytes` once.
    struct Mock {
        out: Vec<u8>,
        max: usize,
        writes: usize,
        peer: Peer,
    }

    enum Peer {
        Quiet,
        Gone,
        Sends(&'static [u8]),
    }

    impl Mock {
        fn new(max: usize, peer: Peer) -> Self {
            Self {
                out: Vec::new(),
                max,
                writes: 0,
                peer,
            }
        }
    }

    impl AsyncRead for Mock {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match std::mem::replace(&mut self.peer, Peer::Quiet) {
                Peer::Quiet => Poll::Pending,
                Peer::Gone => {
                    self.peer = Peer::Gone;
                    Poll::Ready(Ok(()))
                }
                Peer::Sends(b) => {
                    buf.put_slice(b);
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frames(parts: &[&'static str]) -> Body {
        let items: Vec<Result<Bytes, io::Error>> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(stream::iter(items))
    }

    fn head() -> Bytes {
        Bytes::from_static(b"HEAD|")
    }

    #[tokio::test]
    async fn frames_are_chunk_framed_and_a_partial_write_resumes() {
        for max in [1, 3, 7, 10_000] {
            let mut io = Mock::new(max, Peer::Quiet);
            let body = frames(&["data: a\n\n", "", "x"]);
            let ended = WriteBody::new(&mut io, head(), body, None).await;
            assert!(matches!(ended, Ended::Written { .. }), "{max}");
            assert_eq!(
                String::from_utf8(io.out).unwrap(),
                "HEAD|9\r\ndata: a\n\n\r\n1\r\nx\r\n0\r\n\r\n",
                "max {max}"
            );
        }
    }

    #[tokio::test]
    async fn frames_ready_together_go_out_in_one_write() {
        let parts = ["e\n\n"; 20];
        let mut io = Mock::new(usize::MAX, Peer::Quiet);
        let ended = WriteBody::new(&mut io, head(), frames(&parts), None).await;
        assert!(matches!(ended, Ended::Written { .. }));
        // The head and 16 frames, then the other 4 and the last chunk.
        assert_eq!(io.writes, 2);
        assert!(io.out.ends_with(b"3\r\ne\n\n\r\n0\r\n\r\n"));
    }

    /// Large frames stop the taking at hyper's byte bound, not at 16 frames.
    #[tokio::test]
    async fn large_frames_are_taken_up_to_the_byte_bound() {
        let big: &'static str = "x".repeat(200 * 1024).leak();
        let mut io = Mock::new(usize::MAX, Peer::Quiet);
        let ended = WriteBody::new(&mut io, head(), frames(&[big; 5]), None).await;
        assert!(matches!(ended, Ended::Written { .. }));
        // 200, 400 KiB are under the bound, 600 is over: 3 frames, then 2.
        assert_eq!(io.writes, 2);
        // Head, 5 x (size line "32000" CRLF, data, CRLF), the last chunk.
        assert_eq!(io.out.len(), 5 + 5 * (7 + 200 * 1024 + 2) + 5);
    }

    #[tokio::test]
    async fn a_known_length_is_written_as_is_and_must_match() {
        let mut io = Mock::new(2, Peer::Quiet);
        let ended = WriteBody::new(&mut io, head(), Body::from("hello"), Some(5)).await;
        assert!(matches!(ended, Ended::Written { .. }));
        assert_eq!(io.out, b"HEAD|hello");
        for wrong in [4, 6] {
            let mut io = Mock::new(100, Peer::Quiet);
            let ended = WriteBody::new(&mut io, head(), Body::from("hello"), Some(wrong)).await;
            assert!(matches!(ended, Ended::Cut), "{wrong}");
        }
    }

    #[tokio::test]
    async fn a_client_that_goes_away_ends_an_idle_stream() {
        let mut io = Mock::new(100, Peer::Gone);
        let body = Body::from_stream(stream::pending::<Result<Bytes, io::Error>>());
        let ended = WriteBody::new(&mut io, head(), body, None).await;
        assert!(matches!(ended, Ended::Cut));
        assert_eq!(io.out, b"HEAD|", "the head went out first");
    }

    #[tokio::test]
    async fn bytes_the_client_sends_meanwhile_are_kept_for_hyper() {
        let mut io = Mock::new(100, Peer::Sends(b"GET /"));
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, io::Error>>();
        let mut write = WriteBody::new(&mut io, head(), Body::from_stream(rx), None);
        assert!(futures::poll!(&mut write).is_pending());
        tx.unbounded_send(Ok(Bytes::from_static(b"a"))).unwrap();
        drop(tx);
        match write.await {
            Ended::Written { rest } => assert_eq!(&rest[..], b"GET /"),
            Ended::Cut => panic!("cut"),
        }
        assert_eq!(io.out, b"HEAD|1\r\na\r\n0\r\n\r\n");
    }

    #[test]
    fn chunk_lines_are_hex() {
        let mut line = [0u8; LINE];
        for (len, want) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (10, "A\r\n"),
            (255, "FF\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "FFFFFFFFFFFFFFFF\r\n"),
        ] {
            assert_eq!(chunk_line(len, &mut line), want.as_bytes());
        }
    }

    /// An idle stream keeps a few frame slots (no allocation per burst), not
    /// whatever a large burst grew them to.
    #[test]
    fn a_burst_keeps_a_few_slots_and_frees_a_large_one() {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut io = Mock::new(usize::MAX, Peer::Quiet);
        for (n, kept) in [(2, KEEP_SLOTS), (MAX_BURST, 0)] {
            let mut burst = Burst::new(Bytes::new(), true);
            for _ in 0..n {
                burst.push(Bytes::from_static(b"x"));
            }
            assert!(burst.poll_write(&mut io, &mut cx).is_ready());
            assert!(burst.frames.is_empty());
            assert_eq!(burst.frames.capacity(), kept, "{n} frames");
        }
    }
}
