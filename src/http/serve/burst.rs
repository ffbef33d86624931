//! The bytes of a direct response queued for one `writev`: the head, data
//! frames and their chunk framing, without copying or allocating per frame
//! (the chunk-size lines are formatted on the stack at each write), with
//! partial writes resumed where they stopped.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use tokio::io::AsyncWrite;

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

/// Bytes queued for one `writev`, and how many of them are written.
pub struct Burst {
    /// Raw bytes before the frames: the response head, then empty.
    head: Bytes,
    frames: Vec<Bytes>,
    /// The body has ended: the last chunk follows the frames (if chunked).
    pub end: bool,
    chunked: bool,
    /// Bytes of the burst on the wire (framing included), and written.
    len: usize,
    written: usize,
}

impl Burst {
    pub fn new(head: Bytes, chunked: bool) -> Self {
        Self {
            len: head.len(),
            head,
            frames: Vec::new(),
            end: false,
            chunked,
            written: 0,
        }
    }

    /// Queues a (non-empty) data frame.
    pub fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if self.chunked {
            self.len += chunk_line(data.len(), &mut [0; LINE]).len() + CRLF.len();
        }
        self.frames.push(data);
    }

    /// Queues the end of the body: the last chunk, if chunked.
    pub fn finish(&mut self) {
        self.end = true;
        if self.chunked {
            self.len += LAST_CHUNK.len();
        }
    }

    /// Whether no more frames should be taken from the body until some of
    /// these are written.
    pub fn is_full(&self) -> bool {
        self.frames.len() >= MAX_BURST || self.len - self.written >= MAX_QUEUED
    }

    /// Writes until all of the burst is written (then empties it) or the
    /// socket is full.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut lines = [[0u8; LINE]; MAX_BURST];
            let mut slices = [IoSlice::new(&[]); 2 + 3 * MAX_BURST];
            let n = self.slices(&mut lines, &mut slices);
            debug_assert_eq!(self.len, slices[..n].iter().map(|s| s.len()).sum::<usize>());
            if self.written == self.len {
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
    use super::*;

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
        let mut io = Vec::new();
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
