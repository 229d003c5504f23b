//! Startup negotiation with a client: direct TLS, SSLRequest, GSSENCRequest,
//! then either a StartupMessage (a session) or a CancelRequest.
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::SessionError;
use crate::net::tls::ALPN_POSTGRESQL;
use crate::net::Stream;
use crate::protocol::startup::{self, Packet, StartupParams};

use crate::runtime::Context;
use crate::settings::Settings;

/// First byte of a TLS handshake record: a direct-TLS client (PostgreSQL 17).
const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// What the client asked for.
pub enum Negotiated {
    /// A session: the raw StartupMessage to forward and what was read past it.
    Session {
        /// The client connection, TLS if negotiated.
        client: Stream,
        /// The StartupMessage as received.
        packet: Bytes,
        /// Its decoded parameters, for logs.
        params: StartupParams,
        /// Bytes the client sent after the StartupMessage.
        leftover: BytesMut,
    },
    /// A CancelRequest, possibly inside TLS (as libpq 17 sends it).
    Cancel {
        /// The client connection, kept open until the request is delivered:
        /// a client may take the close as the sign that its cancel is done.
        client: Stream,
        /// The CancelRequest as received.
        packet: Bytes,
    },
}

/// Negotiation failed; `client` is set when the connection is still usable.
pub struct Failed {
    /// The connection, when it is still usable.
    pub client: Option<Stream>,
    /// Why.
    pub error: SessionError,
}

// === impl Failed ===

impl Failed {
    /// True when Postgres would answer this failure with an ErrorResponse.
    /// Before a valid startup packet it answers only what it understood (an
    /// unsupported protocol, a bad parameter list, TLS refusals); a length
    /// that cannot be right or a connection that ends early is logged and
    /// closed without a word.
    pub fn answered(&self) -> bool {
        match &self.error {
            SessionError::Startup(e) => e.answered(),
            SessionError::ClientIo(_) | SessionError::ClientTls(_) => false,
            _ => true,
        }
    }

    /// Ends the connection: with pgshim's error when [`Failed::answered`],
    /// else silently (still closing TLS cleanly).
    pub async fn close(self) {
        let answered = self.answered();
        let Some(mut client) = self.client else {
            return;
        };
        if answered {
            super::farewell(&mut client, &self.error).await;
        } else {
            super::close_quietly(&mut client).await;
        }
    }
}

/// Runs startup negotiation on a fresh connection.
///
/// # Errors
/// [`Failed`] for anything Postgres would refuse, plus `[tls] required`.
pub async fn negotiate(
    tcp: TcpStream,
    ctx: &Context,
    settings: &Settings,
) -> Result<Negotiated, Failed> {
    let mut client = Stream::Tcp(tcp);
    if let (Some(acceptor), Stream::Tcp(tcp)) = (&ctx.acceptor, &client) {
        let mut first = [0u8; 1];
        let n = tcp
            .peek(&mut first)
            .await
            .map_err(|e| fail(None, SessionError::ClientIo(e)))?;
        if n == 1 && first[0] == TLS_HANDSHAKE_BYTE {
            client = accept_tls(acceptor, client, true).await?;
        }
    }
    let mut buf = BytesMut::with_capacity(512);
    let mut gss_answered = false;
    loop {
        let (packet, len) = match read_packet(&mut client, &mut buf).await {
            Ok(p) => p,
            Err(error) => return Err(fail(Some(client), error)),
        };
        let raw = buf.split_to(len).freeze();
        match packet {
            Packet::Startup(params) => {
                let required = settings.config.tls.as_ref().is_some_and(|t| t.required);
                if required && !client.is_tls() {
                    return Err(fail(Some(client), SessionError::TlsRequired));
                }
                return Ok(Negotiated::Session {
                    client,
                    packet: raw,
                    params,
                    leftover: buf,
                });
            }
            Packet::Cancel => {
                return Ok(Negotiated::Cancel {
                    client,
                    packet: raw,
                })
            }
            Packet::GssEncRequest if gss_answered => {
                return Err(fail(
                    Some(client),
                    SessionError::DuplicateRequest("GSSENCRequest"),
                ))
            }
            Packet::GssEncRequest => {
                gss_answered = true;
                answer(&mut client, b'N').await?;
            }
            Packet::SslRequest if client.is_tls() => {
                return Err(fail(
                    Some(client),
                    SessionError::DuplicateRequest("SSLRequest"),
                ))
            }
            Packet::SslRequest => match &ctx.acceptor {
                None => answer(&mut client, b'N').await?,
                Some(_) if !buf.is_empty() => {
                    return Err(fail(Some(client), SessionError::UnencryptedAfterSslRequest))
                }
                Some(acceptor) => {
                    answer(&mut client, b'S').await?;
                    client = accept_tls(acceptor, client, false).await?;
                }
            },
        }
    }
}

async fn read_packet(
    client: &mut Stream,
    buf: &mut BytesMut,
) -> Result<(Packet, usize), SessionError> {
    loop {
        if let Some(found) = startup::parse(buf).map_err(SessionError::Startup)? {
            return Ok(found);
        }
        buf.reserve(512);
        if client.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Err(SessionError::ClientIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
}

async fn answer(client: &mut Stream, byte: u8) -> Result<(), Failed> {
    client
        .write_all(&[byte])
        .await
        .map_err(|e| fail(None, SessionError::ClientIo(e)))
}

async fn accept_tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    client: Stream,
    direct: bool,
) -> Result<Stream, Failed> {
    let Stream::Tcp(tcp) = client else {
        return Err(fail(
            Some(client),
            SessionError::DuplicateRequest("TLS handshake"),
        ));
    };
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| fail(None, SessionError::ClientTls(e)))?;
    let alpn_ok = tls.get_ref().1.alpn_protocol() == Some(ALPN_POSTGRESQL);
    let stream = Stream::FromClientTls(Box::new(tls));
    if direct && !alpn_ok {
        return Err(fail(Some(stream), SessionError::DirectTlsWithoutAlpn));
    }
    Ok(stream)
}

fn fail(client: Option<Stream>, error: SessionError) -> Failed {
    Failed { client, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::startup::StartupError;

    fn failed(error: SessionError) -> Failed {
        Failed {
            client: None,
            error,
        }
    }

    #[test]
    fn impossible_lengths_and_early_ends_go_unanswered() {
        let terminate_first = StartupError::BadLength(0x5800_0000);
        assert!(!failed(SessionError::Startup(terminate_first)).answered());
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(!failed(SessionError::ClientIo(eof)).answered());
    }

    #[test]
    fn what_postgres_answers_is_answered() {
        let old_protocol = StartupError::UnsupportedProtocol(0x0002_0000);
        assert!(failed(SessionError::Startup(old_protocol)).answered());
        assert!(failed(SessionError::Startup(StartupError::BadParameters)).answered());
        assert!(failed(SessionError::TlsRequired).answered());
        assert!(failed(SessionError::UnencryptedAfterSslRequest).answered());
    }
}
