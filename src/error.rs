//! The crate error type, who caused each failure, and how a client sees it.
//!
//! Every error a client can see goes through [`Error::to_error_response`], so
//! SQLSTATEs and the `pgshim:` message prefix are decided in one place.
use std::io;

use bytes::BytesMut;

use crate::config::ConfigError;
use crate::protocol::backend::{write_error, Severity};
use crate::protocol::startup::StartupError;
use crate::protocol::FrameError;

/// Which side of the proxy a failure came from; used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (downstream) misbehaved or went away.
    Client,
    /// The Postgres server (upstream) misbehaved, went away or was unreachable.
    Server,
    /// pgshim itself: configuration, limits, shutdown.
    Proxy,
}

/// Everything that can end a session or stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("could not connect to upstream {addr}: {cause}")]
    UpstreamConnect {
        /// `host:port`.
        addr: String,
        /// Why, e.g. `connection refused` or a TLS verification failure.
        cause: String,
    },
    /// The upstream connection broke mid-session.
    #[error("lost connection to upstream {addr}: {cause}")]
    UpstreamLost {
        /// `host:port`.
        addr: String,
        /// Why.
        cause: String,
    },
    /// pgshim is shutting down.
    #[error("terminating connection because pgshim is shutting down")]
    ShuttingDown,
    /// The configuration could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A rewrite rule cannot be activated.
    #[error(transparent)]
    Rules(#[from] crate::active::ActivateError),
    /// The admin listener cannot be set up.
    #[error("{0}")]
    AdminSetup(String),
    /// Certificates or keys could not be loaded.
    #[error("{0}")]
    TlsSetup(String),
}

// === impl Error ===

impl Error {
    /// Who caused the failure.
    pub fn side(&self) -> Side {
        match self {
            Error::ClientFrame(_)
            | Error::Startup(_)
            | Error::UnencryptedAfterSslRequest
            | Error::TlsRequired
            | Error::DirectTlsWithoutAlpn
            | Error::DuplicateRequest(_)
            | Error::ClientTls(_)
            | Error::ClientIo(_)
            | Error::StartupTimeout(_) => Side::Client,
            Error::UpstreamConnect { .. } | Error::UpstreamLost { .. } => Side::Server,
            Error::TooManyConnections(_)
            | Error::ShuttingDown
            | Error::Config(_)
            | Error::Rules(_)
            | Error::AdminSetup(_)
            | Error::TlsSetup(_) => Side::Proxy,
        }
    }

    /// The SQLSTATE a client is shown for this failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::ClientFrame(_)
            | Error::Startup(_)
            | Error::UnencryptedAfterSslRequest
            | Error::DirectTlsWithoutAlpn
            | Error::DuplicateRequest(_) => "08P01",
            Error::TlsRequired => "28000",
            Error::StartupTimeout(_) => "57014",
            Error::TooManyConnections(_) => "53300",
            Error::UpstreamConnect { .. } => "08001",
            Error::UpstreamLost { .. } | Error::ClientTls(_) | Error::ClientIo(_) => "08006",
            Error::ShuttingDown => "57P01",
            Error::Config(_) | Error::Rules(_) | Error::AdminSetup(_) | Error::TlsSetup(_) => {
                "XX000"
            }
        }
    }

    /// True when the client's socket is unusable, so no message can reach it.
    pub fn client_unreachable(&self) -> bool {
        matches!(self, Error::ClientIo(_) | Error::ClientTls(_))
    }

    /// Appends the FATAL `ErrorResponse` that tells the client about this failure.
    pub fn to_error_response(&self, out: &mut BytesMut) {
        let hint = match self {
            Error::UpstreamConnect { .. } => Some("check that Postgres is running and that [upstream] in pgshim's config points at it"),
            Error::TooManyConnections(_) => Some("raise [limits] max_connections or use fewer connections"),
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
