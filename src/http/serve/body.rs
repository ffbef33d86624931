//! Writing a response to the socket on the direct path: the head, then the
//! body's frames, chunk-framed unless the length is known.
//!
//! The cost per frame is what hyper's was: no copy and no allocation
//! ([`super::burst`]), and frames that are ready together (a burst) go out
//! in one `writev`, at most [`super::burst::MAX_BURST`] of them or
//! [`super::burst::MAX_QUEUED`] bytes, like hyper's write queue. While nothing is to be written the socket is read, so a
//! client that goes away ends the body (and its subscription) at once; a
//! slow client just makes the write wait, as with hyper.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::burst::Burst;

/// How the body went.
#[derive(Debug)]
pub enum Ended {
    /// Completely written; `rest` is what the client sent meanwhile (the
    /// start of its next request, read next).
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

    /// `early`: what the client sent before the response (the start of its
    /// next request). If any, the socket is not read (a read would take
    /// more of its bytes) and `early` is the `rest` the body ends with.
    pub fn after(mut self, early: Bytes) -> Self {
        if !early.is_empty() {
            self.watch = false;
            self.rest = early;
        }
        self
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
        while !self.burst.end && !self.burst.is_full() {
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
                    self.burst.finish();
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

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};

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
}
