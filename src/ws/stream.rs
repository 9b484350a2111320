//! The byte stream a WebSocket runs on once hyper hands the upgraded
//! connection back: for plain TCP the socket itself, split so the hub can
//! share its write half ([`crate::hub::OutQueue::allow_direct`]); for TLS
//! whatever hyper gives (its encryption state belongs to one writer).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use crate::hub::SharedSocket;

/// An upgraded connection.
pub enum Stream {
    Tcp {
        read: OwnedReadHalf,
        write: SharedSocket,
        /// What the client sent after its handshake and hyper already read.
        early: Bytes,
    },
    Other(TokioIo<Upgraded>),
}

impl Stream {
    /// The socket under hyper's upgrade when it is plain TCP (the accept
    /// loop hands hyper a `TcpStream` for ws://), else the upgrade as is.
    pub fn new(upgraded: Upgraded) -> Stream {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let (read, write) = parts.io.into_inner().into_split();
                // A copy: hyper's slice would keep its whole read buffer
                // (kilobytes) alive for the life of the connection.
                let early = Bytes::copy_from_slice(&parts.read_buf);
                Stream::Tcp { read, write: Arc::new(write), early }
            }
            Err(upgraded) => Stream::Other(TokioIo::new(upgraded)),
        }
    }

    /// The write half the hub may share, for plain TCP.
    pub fn shared_socket(&self) -> Option<SharedSocket> {
        match self {
            Stream::Tcp { write, .. } => Some(write.clone()),
            Stream::Other(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp { read, early, .. } => {
                if early.has_remaining() {
                    let n = early.len().min(buf.remaining());
                    buf.put_slice(&early[..n]);
                    early.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(read).poll_read(cx, buf)
            }
            Stream::Other(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            // Through `&TcpStream`, as tokio's own `poll_write` does: the
            // write half is shared, so there is no `&mut` to it.
            Stream::Tcp { write, .. } => {
                let tcp: &TcpStream = write.as_ref().as_ref();
                loop {
                    ready!(tcp.poll_write_ready(cx))?;
                    match tcp.try_write(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        done => return Poll::Ready(done),
                    }
                }
            }
            Stream::Other(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp { .. } => Poll::Ready(Ok(())),
            Stream::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // The write half shuts the socket down when the last holder
            // drops it.
            Stream::Tcp { .. } => Poll::Ready(Ok(())),
            Stream::Other(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}
