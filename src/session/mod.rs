//! One task per client: startup negotiation, connecting upstream, the
//! forwarding loop, and the one log line per connection.
mod board;
pub mod cancel;
mod core;
pub mod error;
mod relay;
pub mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::metrics;
use crate::net::error::UpstreamCause;
use crate::net::{Reader, Stream, Writer};
use crate::protocol::startup::StartupParams;
use crate::protocol::{Framer, TERMINATE_TAG};
use crate::runtime::Context;
use crate::settings::Settings;
pub use board::SessionBoard;
pub use error::SessionError;
use relay::{End, Link, Pump, ToClientSide, ToServerSide};
use startup::Negotiated;

/// How long pgshim waits for a client to accept a final error message.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one client connection to the end. Never panics on client input;
/// every outcome is logged.
pub async fn run(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Context>) {
    let started = Instant::now();
    let settings = ctx.settings();
    let deadline = started + settings.config.limits.startup_timeout();
    let negotiated = tokio::select! {
        n = tokio::time::timeout_at(deadline, startup::negotiate(tcp, &ctx, &settings)) => n,
        _ = ctx.shutdown.cancelled() => {
            // Still negotiating when shutdown began: the client is turned away.
            metrics().rejected_shutdown.increment(1);
            return;
        }
    };
    match negotiated {
        Err(_) => {
            tracing::info!(client = %peer, "connection closed: startup packet not received within startup_timeout_ms")
        }
        Ok(Err(failed)) => {
            let error = &failed.error;
            if error.is_client_protocol_error() {
                metrics().protocol_errors_client.increment(1);
            }
            tracing::info!(client = %peer, error = %error, answered = failed.answered(), "connection refused");
            failed.close().await;
        }
        Ok(Ok(Negotiated::Cancel { client, packet })) => {
            cancel::forward(&settings.upstream, client, packet).await
        }
        Ok(Ok(Negotiated::Session {
            client,
            packet,
            params,
            leftover,
        })) => {
            let session = Session {
                peer,
                params,
                started,
                deadline,
                ctx: &ctx,
                settings: &settings,
            };
            session.proxy(client, &packet, leftover).await;
        }
    }
}

/// A negotiated client session.
struct Session<'a> {
    peer: SocketAddr,
    params: StartupParams,
    started: Instant,
    /// When startup (including authentication) must be complete.
    deadline: Instant,
    ctx: &'a Context,
    /// The settings in force when the session started, kept to its end.
    settings: &'a Settings,
}

// === impl Session ===

impl Session<'_> {
    async fn proxy(self, mut client: Stream, packet: &[u8], leftover: BytesMut) {
        let (peer, user, database) = (self.peer, &self.params.user, &self.params.database);
        tracing::info!(client = %peer, user = %user, database = %database, tls = client.is_tls(), "connection opened");
        let link = Arc::new(Link::new(packet.len()));
        let _on_board = self.ctx.sessions.register(database, &link);
        let outcome = match self.settings.upstream.connect().await {
            Ok(server) => self.relay(client, server, packet, leftover, &link).await,
            Err(error) => {
                let error = SessionError::from(error);
                metrics().upstream_connect_failures.increment(1);
                farewell(&mut client, &error).await;
                Err(error)
            }
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (bytes_in, bytes_out) = link.traffic();
        match outcome {
            Ok(end) => {
                tracing::info!(client = %peer, user = %user, database = %database, duration_ms, bytes_in, bytes_out, reason = ?end, "connection closed")
            }
            Err(error) => {
                if let SessionError::ClientFrame(_) = error {
                    metrics().protocol_errors_client.increment(1);
                }
                tracing::info!(client = %peer, user = %user, database = %database, duration_ms, bytes_in, bytes_out, error = %error, side = ?error.side(), "connection closed")
            }
        }
    }

    async fn relay(
        &self,
        client: Stream,
        mut server: Stream,
        packet: &[u8],
        mut client_buf: BytesMut,
        link: &Link,
    ) -> Result<End, SessionError> {
        let upstream = self.settings.upstream.addr();
        let sent = async {
            server.write_all(packet).await?;
            server.flush().await
        };
        if let Err(e) = sent.await {
            let error =
                SessionError::from(self.settings.upstream.connect_error(UpstreamCause::Io(e)));
            let mut client = client;
            farewell(&mut client, &error).await;
            return Err(error);
        }
        let (mut client_r, mut client_w) = client.split();
        let (mut server_r, mut server_w) = server.split();
        let limits = &self.settings.config.limits;
        let (mut client_framer, mut server_framer) = (
            Framer::new(limits.max_message_bytes),
            Framer::new(usize::MAX),
        );
        let mut server_buf = BytesMut::new();
        let upward = Pump {
            from: &mut client_r,
            to: &mut server_w,
            buf: &mut client_buf,
            framer: &mut client_framer,
        };
        let downward = Pump {
            from: &mut server_r,
            to: &mut client_w,
            buf: &mut server_buf,
            framer: &mut server_framer,
        };
        let usage_client =
            crate::usage::Client::new(self.params.application_name.as_deref(), self.peer);
        let down = ToClientSide {
            shutdown: &self.ctx.shutdown,
            rules: &self.ctx.rules,
            database: &self.params.database,
            drain_timeout: limits.shutdown_timeout(),
            upstream,
        };
        let up = ToServerSide {
            addr: upstream,
            ctx: self.ctx,
            database: &self.params.database,
            client: &usage_client,
        };
        let outcome = tokio::select! {
            r = upward.client_to_server(link, up) => r,
            r = downward.server_to_client(link, down) => r,
            _ = startup_expired(self.deadline, link) => Err(SessionError::StartupTimeout(limits.startup_timeout_ms)),
        };
        finish(
            &outcome,
            link.client_at_boundary(),
            &mut client_w,
            (&mut server_r, &mut server_w),
        )
        .await;
        outcome
    }
}

/// Tells the client why the session ends (when it can still hear it) and
/// lets the server end its backend cleanly.
async fn finish(
    outcome: &Result<End, SessionError>,
    at_boundary: bool,
    client_w: &mut Writer,
    (server_r, server_w): (&mut Reader, &mut Writer),
) {
    if matches!(outcome, Ok(End::ClientTerminated)) {
        // As with Postgres, the client sees its connection close once the
        // backend has gone, not sooner: a client that closes from one thread
        // while another waits on the socket (psycopg's test_waiting) tells
        // the two apart.
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, until_closed(server_r)).await;
    }
    let shutting_down = SessionError::ShuttingDown;
    let error = match outcome {
        Ok(End::Shutdown) => Some(&shutting_down),
        Ok(_) => None,
        Err(e) if e.client_unreachable() => None,
        Err(e) => Some(e),
    };
    match (error, at_boundary) {
        (Some(error), true) => farewell(client_w, error).await,
        // A TLS client reads a close without close_notify as a truncation attack.
        _ if !matches!(outcome, Err(e) if e.client_unreachable()) => close_quietly(client_w).await,
        _ => {}
    }
    if !matches!(outcome, Ok(End::ClientTerminated)) {
        let _ = tokio::time::timeout(
            FAREWELL_TIMEOUT,
            server_w.write_all(&[TERMINATE_TAG, 0, 0, 0, 4]),
        )
        .await;
    }
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, server_w.shutdown()).await;
}

/// Reads and drops what `server` still sends until it closes.
async fn until_closed(server: &mut Reader) {
    use tokio::io::AsyncReadExt;
    let mut scratch = [0u8; 512];
    while matches!(server.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// Completes at `deadline` if the session has not authenticated by then.
async fn startup_expired(deadline: Instant, link: &Link) {
    tokio::time::sleep_until(deadline).await;
    if link.core().authenticated() {
        std::future::pending::<()>().await;
    }
}

/// Closes the write side (sending TLS close_notify) without a message.
async fn close_quietly<W: tokio::io::AsyncWrite + Unpin>(client: &mut W) {
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, client.shutdown()).await;
}

/// Writes the FATAL ErrorResponse for `error` and closes the write side.
async fn farewell<W: tokio::io::AsyncWrite + Unpin>(client: &mut W, error: &SessionError) {
    let mut out = BytesMut::new();
    error.to_error_response(&mut out);
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, async {
        client.write_all(&out).await?;
        client.flush().await?;
        client.shutdown().await
    })
    .await;
}
