//! The socket hyper serves: a `TcpStream` (or a TLS stream over one) that
//! first returns the bytes weir already read from it (a request head, and
//! maybe a body and more after it; see [`super::head`]).
//!
//! As many of them as hyper's read buffer takes are returned by the first
//! read (all of a head), so hyper's first parse sees the whole head, as it
//! would have reading the socket itself (a partial first parse is what made
//! hyper-util's 24-byte rewind grow hyper's read buffer to 16 KiB). The
//! prefix is freed as soon as it has been read.
//! Every hyper connection has this one IO type, direct path or not.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Prefixed<IO> {
    /// Bytes to return before reading the socket; empty (no allocation)
    /// once read.
    prefix: Bytes,
    tcp: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(tcp: IO, prefix: Bytes) -> Self {
        Self { prefix, tcp }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.tcp).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // An advanced-to-empty `Bytes` still holds its buffer.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    /// Passed on: hyper writes a burst of body frames in one `writev` only
    /// when its IO says it can.
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    #[tokio::test]
    async fn the_prefix_comes_first_then_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut io = Prefixed::new(server, Bytes::from_static(b"GET / HTTP/1.1\r\n"));
        client.write_all(b"\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(
            &buf[..n],
            b"GET / HTTP/1.1\r\n",
            "the whole prefix in one read"
        );
        assert!(io.prefix.is_empty());
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\r\n");
        io.write_all(b"ok").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ok");
    }
}
