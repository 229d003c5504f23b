//! Why a connection to Postgres could not be made, or broke, and why TLS
//! material could not be used: the causes sessions, catalog reads and the
//! ops commands report, typed so that callers can tell them apart.
use std::io;

use crate::protocol::FrameError;

/// Why pgshim's connection to Postgres failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamCause {
    /// The socket failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// No answer to the SSLRequest.
    #[error("reading the answer to SSLRequest: {0}")]
    SslAnswer(#[source] io::Error),
    /// The server answered the SSLRequest with something else than `S` or `N`.
    #[error("unexpected answer 0x{0:02x} to SSLRequest")]
    UnexpectedSslAnswer(u8),
    /// `[upstream] tls` requires TLS and the server has none.
    #[error("the server does not support TLS, which [upstream] tls requires")]
    TlsUnsupported,
    /// The TLS handshake failed (certificate, host name, protocol).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    /// No connection within `[upstream] connect_timeout_ms`.
    #[error("timed out after {0} ms ([upstream] connect_timeout_ms)")]
    Timeout(u128),
    /// The server closed the connection.
    #[error("server closed the connection unexpectedly")]
    Closed,
    /// The server sent bytes that cannot be framed.
    #[error("invalid message from server: {0}")]
    Frame(#[source] FrameError),
}

/// The server could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to upstream {addr}: {cause}")]
pub struct ConnectError {
    /// `host:port`.
    pub addr: String,
    /// Why.
    pub cause: UpstreamCause,
}

/// Certificates, keys or TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub String);
