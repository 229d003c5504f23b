//! One type for a connection to either peer, plain or TLS, so the forwarding
//! loop is written (and compiled) once.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;
type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A connection to a client or to the server.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// A client that negotiated TLS with pgshim.
    FromClientTls(Box<ServerTls>),
    /// pgshim's TLS connection to the server.
    ToServerTls(Box<ClientTls>),
}

/// The read half of a [`Stream`].
pub enum Reader {
    /// Plain TCP: an owned half, no lock.
    Tcp(OwnedReadHalf),
    /// TLS from a client.
    FromClientTls(ReadHalf<ServerTls>),
    /// TLS to the server.
    ToServerTls(ReadHalf<ClientTls>),
}

/// The write half of a [`Stream`].
pub enum Writer {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// TLS from a client.
    FromClientTls(WriteHalf<ServerTls>),
    /// TLS to the server.
    ToServerTls(WriteHalf<ClientTls>),
}

// === impl Stream ===

impl Stream {
    /// Splits into halves that can be driven concurrently. Plain TCP splits
    /// without a lock; TLS shares one session between the halves.
    pub fn split(self) -> (Reader, Writer) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Reader::Tcp(r), Writer::Tcp(w))
            }
            Stream::FromClientTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Reader::FromClientTls(r), Writer::FromClientTls(w))
            }
            Stream::ToServerTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Reader::ToServerTls(r), Writer::ToServerTls(w))
            }
        }
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Tcp(_))
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Self::Tcp($s) => $e,
            Self::FromClientTls($s) => $e,
            Self::ToServerTls($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
