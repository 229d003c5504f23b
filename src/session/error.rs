//! Why a session ended, who caused it, and how the client is told.
//!
//! Every error that ends a session goes through
//! [`SessionError::to_error_response`], so SQLSTATEs and the `pgshim:`
//! message prefix are decided in one place. Errors of single statements
//! (refusals) are answered by the session core (`session/core/`).
use std::io;

use bytes::BytesMut;

use crate::net::error::{ConnectError, UpstreamCause};
use crate::protocol::backend::{write_error, Severity};
use crate::protocol::startup::StartupError;
use crate::protocol::FrameError;

/// Which side of the proxy a failure came from: the `side` label of logs
/// and of `pgshim_protocol_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client (downstream) misbehaved or went away.
    Client,
    /// The Postgres server (upstream) misbehaved, went away or was unreachable.
    Server,
    /// pgshim itself: limits, shutdown.
    Proxy,
}

/// Everything that ends a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client sent bytes that cannot be framed.
    #[error("invalid message from client: {0}")]
    ClientFrame(#[source] FrameError),
    /// The client's startup packet is invalid.
    #[error("invalid startup packet: {0}")]
    Startup(#[source] StartupError),
    /// Plaintext bytes followed an SSLRequest before the TLS handshake.
    #[error("received unencrypted data after SSL request")]
    UnencryptedAfterSslRequest,
    /// `[tls] required = true` and the client did not negotiate TLS.
    #[error("TLS is required: connect with sslmode=require or stronger")]
    TlsRequired,
    /// Direct TLS (PostgreSQL 17) without the `postgresql` ALPN protocol.
    #[error("direct TLS connection did not negotiate ALPN protocol \"postgresql\"")]
    DirectTlsWithoutAlpn,
    /// The client asked for TLS twice, or GSS encryption twice.
    #[error("duplicate {0} in startup")]
    DuplicateRequest(&'static str),
    /// The TLS handshake with the client failed.
    #[error("TLS handshake with client failed: {0}")]
    ClientTls(#[source] io::Error),
    /// Reading from or writing to the client failed.
    #[error("client connection error: {0}")]
    ClientIo(#[source] io::Error),
    /// The client did not finish startup and authentication in time.
    #[error("startup did not complete within {0} ms")]
    StartupTimeout(u64),
    /// `[limits] max_connections` clients are already connected.
    #[error("too many connections (limits.max_connections = {0})")]
    TooManyConnections(usize),
    /// The upstream server could not be reached.
    #[error(transparent)]
    UpstreamConnect(#[from] ConnectError),
    /// The upstream connection broke mid-session.
    #[error("lost connection to upstream {addr}: {cause}")]
    UpstreamLost {
        /// `host:port`.
        addr: String,
        /// Why.
        cause: UpstreamCause,
    },
    /// pgshim is shutting down.
    #[error("terminating connection because pgshim is shutting down")]
    ShuttingDown,
}

// === impl SessionError ===

impl SessionError {
    /// Who caused the failure.
    pub fn side(&self) -> Blame {
        match self {
            SessionError::ClientFrame(_)
            | SessionError::Startup(_)
            | SessionError::UnencryptedAfterSslRequest
            | SessionError::TlsRequired
            | SessionError::DirectTlsWithoutAlpn
            | SessionError::DuplicateRequest(_)
            | SessionError::ClientTls(_)
            | SessionError::ClientIo(_)
            | SessionError::StartupTimeout(_) => Blame::Client,
            SessionError::UpstreamConnect(_) | SessionError::UpstreamLost { .. } => Blame::Server,
            SessionError::TooManyConnections(_) | SessionError::ShuttingDown => Blame::Proxy,
        }
    }

    /// The SQLSTATE a client is shown for this failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::ClientFrame(_)
            | SessionError::Startup(_)
            | SessionError::UnencryptedAfterSslRequest
            | SessionError::DirectTlsWithoutAlpn
            | SessionError::DuplicateRequest(_) => "08P01",
            SessionError::TlsRequired => "28000",
            SessionError::StartupTimeout(_) => "57014",
            SessionError::TooManyConnections(_) => "53300",
            SessionError::UpstreamConnect(_) => "08001",
            SessionError::UpstreamLost { .. }
            | SessionError::ClientTls(_)
            | SessionError::ClientIo(_) => "08006",
            SessionError::ShuttingDown => "57P01",
        }
    }

    /// True when the client's socket is unusable, so no message can reach it.
    pub fn client_unreachable(&self) -> bool {
        matches!(self, SessionError::ClientIo(_) | SessionError::ClientTls(_))
    }

    /// True when the client broke the protocol (counted in metrics).
    pub fn is_client_protocol_error(&self) -> bool {
        matches!(
            self,
            SessionError::ClientFrame(_)
                | SessionError::Startup(_)
                | SessionError::UnencryptedAfterSslRequest
        )
    }

    /// Appends the FATAL `ErrorResponse` that tells the client about this failure.
    pub fn to_error_response(&self, out: &mut BytesMut) {
        let hint = match self {
            SessionError::UpstreamConnect(_) => Some("check that Postgres is running and that [upstream] in pgshim's config points at it"),
            SessionError::TooManyConnections(_) => Some("raise [limits] max_connections or use fewer connections"),
            _ => None,
        };
        write_error(
            out,
            Severity::Fatal,
            self.sqlstate(),
            &format!("pgshim: {self}"),
            hint,
        );
    }
}
