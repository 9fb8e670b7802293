//! The socket a feed connection talks over once the WebSocket handshake is done.
//!
//! hyper hands the connection back as `Upgraded`: the TCP stream in a box, behind a trait object and a check
//! for bytes read ahead. Every wake of a session reads its socket, and with thousands of sessions that box is
//! one more cold cache line per delivery (measured: see BENCHMARKS.md's fan-out ceiling notes). So the session
//! takes the TCP stream itself back out of it, with the bytes the client sent ahead of the handshake's end, if
//! any (hyper read them with the request); a connection that is not a plain TCP stream keeps `Upgraded`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) enum Socket {
    Tcp(TcpStream),
    /// The stream, and what the client sent ahead of the handshake's end, read first.
    TcpAhead(Bytes, TcpStream),
    Upgraded(TokioIo<Upgraded>),
}

impl Socket {
    pub fn new(upgraded: Upgraded) -> Socket {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) if parts.read_buf.is_empty() => Socket::Tcp(parts.io.into_inner()),
            Ok(parts) => Socket::TcpAhead(parts.read_buf, parts.io.into_inner()),
            Err(upgraded) => Socket::Upgraded(TokioIo::new(upgraded)),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::TcpAhead(ahead, _) if !ahead.is_empty() => {
                let n = ahead.len().min(buf.remaining());
                buf.put_slice(&ahead.split_to(n));
                Poll::Ready(Ok(()))
            }
            Socket::TcpAhead(_, s) => Pin::new(s).poll_read(cx, buf),
            Socket::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) | Socket::TcpAhead(_, s) => Pin::new(s).poll_write(cx, data),
            Socket::Upgraded(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) | Socket::TcpAhead(_, s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Upgraded(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) | Socket::TcpAhead(_, s) => s.is_write_vectored(),
            Socket::Upgraded(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) | Socket::TcpAhead(_, s) => Pin::new(s).poll_flush(cx),
            Socket::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) | Socket::TcpAhead(_, s) => Pin::new(s).poll_shutdown(cx),
            Socket::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
