//! Connecting to the Postgres server: TCP, then TLS per `[upstream] tls`.
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::{ConnectError, TlsSetupError, UpstreamCause};
use super::stream::Stream;
use super::tls;
use crate::config::{UpstreamConfig, UpstreamTls};
use crate::protocol::startup::encode_ssl_request;

/// How to reach the server; built once from the config and shared by sessions.
pub struct Upstream {
    host: String,
    port: u16,
    /// `host:port`, for messages.
    addr: String,
    policy: UpstreamTls,
    connector: Option<TlsConnector>,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
}

// === impl Upstream ===

impl Upstream {
    /// Prepares connections per `[upstream]`.
    ///
    /// # Errors
    /// [`TlsSetupError`] when the CA file or host name cannot be used.
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Upstream, TlsSetupError> {
        Ok(Upstream {
            host: cfg.host.clone(),
            port: cfg.port,
            addr: format!("{}:{}", cfg.host, cfg.port),
            policy: cfg.tls,
            connector: tls::connector(cfg)?,
            server_name: tls::server_name(&cfg.host)?,
            connect_timeout: cfg.connect_timeout(),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Opens a connection, negotiating TLS per the policy, within the connect timeout.
    ///
    /// # Errors
    /// [`ConnectError`] naming `host:port` and the cause.
    pub async fn connect(&self) -> Result<Stream, ConnectError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner()).await {
            Ok(result) => result.map_err(|cause| self.connect_error(cause)),
            Err(_) => {
                Err(self.connect_error(UpstreamCause::Timeout(self.connect_timeout.as_millis())))
            }
        }
    }

    /// The error for a connection that failed with `cause`.
    pub fn connect_error(&self, cause: UpstreamCause) -> ConnectError {
        ConnectError {
            addr: self.addr.clone(),
            cause,
        }
    }

    async fn connect_inner(&self) -> Result<Stream, UpstreamCause> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(UpstreamCause::Io)?;
        tcp.set_nodelay(true).map_err(UpstreamCause::Io)?;
        let Some(connector) = &self.connector else {
            return Ok(Stream::Tcp(tcp));
        };
        tcp.write_all(&encode_ssl_request())
            .await
            .map_err(UpstreamCause::Io)?;
        let answer = tcp.read_u8().await.map_err(UpstreamCause::SslAnswer)?;
        match (answer, self.policy) {
            (b'S', _) => {
                let tls = connector
                    .connect(self.server_name.clone(), tcp)
                    .await
                    .map_err(UpstreamCause::Handshake)?;
                Ok(Stream::ToServerTls(Box::new(tls)))
            }
            (b'N', UpstreamTls::Prefer) => Ok(Stream::Tcp(tcp)),
            (b'N', _) => Err(UpstreamCause::TlsUnsupported),
            (other, _) => Err(UpstreamCause::UnexpectedSslAnswer(other)),
        }
    }
}
