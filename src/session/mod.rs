//! One task per client: startup negotiation, connecting upstream, the
//! forwarding loop, and the one log line per connection.
pub mod cancel;
pub mod reject;
pub mod relay;
pub mod rewrite;
pub mod startup;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::active::LiveRules;
use crate::config::Config;
use crate::error::Error;
use crate::net::upstream::Upstream;
use crate::net::{Stream, Writer};
use crate::protocol::startup::StartupParams;
use crate::protocol::{Framer, TERMINATE_TAG};
use reject::Rejections;
use relay::{End, Pump, ToClient, ToServer};
use rewrite::Rewriter;
use startup::{Failed, Negotiated};
use state::State;

/// How long pgshim waits for a client to accept a final error message.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// What every session shares: configuration, TLS, upstream, shutdown signal.
pub struct Context {
    /// The configuration the proxy started with.
    pub config: Arc<Config>,
    /// Client-facing TLS, when `[tls]` is set.
    pub acceptor: Option<TlsAcceptor>,
    /// How to reach the server.
    pub upstream: Upstream,
    /// Cancelled when pgshim starts shutting down.
    pub shutdown: CancellationToken,
    /// The rewrite rules in force.
    pub rules: LiveRules,
}

// === impl Context ===

impl Context {
    /// Builds the shared context: loads certificates, validates the rules and
    /// checks them against the catalog.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when a certificate, key or CA file cannot be used,
    /// [`Error::Rules`] when a rule cannot be activated.
    pub async fn new(config: Arc<Config>, shutdown: CancellationToken) -> Result<Context, Error> {
        let acceptor = config
            .tls
            .as_ref()
            .map(crate::net::tls::acceptor)
            .transpose()?;
        let upstream = Upstream::from_config(&config.upstream)?;
        let rules = LiveRules::load(&config, &upstream).await?;
        Ok(Context {
            config,
            acceptor,
            upstream,
            shutdown,
            rules,
        })
    }
}

/// Serves one client connection to the end. Never panics on client input;
/// every outcome is logged.
pub async fn run(tcp: TcpStream, peer: SocketAddr, ctx: Arc<Context>) {
    let started = Instant::now();
    let deadline = started + ctx.config.limits.startup_timeout();
    let negotiated = tokio::select! {
        n = tokio::time::timeout_at(deadline, startup::negotiate(tcp, &ctx)) => n,
        _ = ctx.shutdown.cancelled() => return,
    };
    match negotiated {
        Err(_) => {
            tracing::info!(client = %peer, "connection closed: startup packet not received within startup_timeout_ms")
        }
        Ok(Err(Failed { client, error })) => {
            tracing::info!(client = %peer, error = %error, "connection refused");
            if let Some(mut client) = client {
                farewell(&mut client, &error).await;
            }
        }
        Ok(Ok(Negotiated::Cancel(packet))) => cancel::forward(&ctx.upstream, packet).await,
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
}

// === impl Session ===

impl Session<'_> {
    async fn proxy(self, mut client: Stream, packet: &[u8], leftover: BytesMut) {
        let (peer, user, database) = (self.peer, &self.params.user, &self.params.database);
        tracing::info!(client = %peer, user = %user, database = %database, tls = client.is_tls(), "connection opened");
        let state = State::new();
        let rewriter = self.rewriter().await;
        let outcome = match self.ctx.upstream.connect().await {
            Ok(server) => {
                self.relay(client, server, packet, leftover, &state, rewriter.as_ref())
                    .await
            }
            Err(error) => {
                farewell(&mut client, &error).await;
                Err(error)
            }
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let (bytes_in, bytes_out) = (
            state.from_client.load(Relaxed),
            state.from_server.load(Relaxed),
        );
        match outcome {
            Ok(end) => {
                tracing::info!(client = %peer, user = %user, database = %database, duration_ms, bytes_in, bytes_out, reason = ?end, "connection closed")
            }
            Err(error) => {
                tracing::info!(client = %peer, user = %user, database = %database, duration_ms, bytes_in, bytes_out, error = %error, side = ?error.side(), "connection closed")
            }
        }
    }

    /// The session's view of the rules, when any apply to its database.
    async fn rewriter(&self) -> Option<Rewriter> {
        let version = self.ctx.rules.current();
        if version.rules.is_empty() {
            return None;
        }
        let db = version
            .for_database(
                &self.params.database,
                &self.ctx.config.upstream,
                &self.ctx.upstream,
            )
            .await;
        Some(Rewriter { version, db })
    }

    async fn relay(
        &self,
        client: Stream,
        mut server: Stream,
        packet: &[u8],
        mut client_buf: BytesMut,
        state: &State,
        rewriter: Option<&Rewriter>,
    ) -> Result<End, Error> {
        let upstream = self.ctx.upstream.addr();
        let sent = async {
            server.write_all(packet).await?;
            server.flush().await
        };
        if let Err(e) = sent.await {
            let error = self.ctx.upstream.connect_error(e.to_string());
            let mut client = client;
            farewell(&mut client, &error).await;
            return Err(error);
        }
        let (mut client_r, mut client_w) = client.split();
        let (mut server_r, mut server_w) = server.split();
        let limits = &self.ctx.config.limits;
        let (mut client_framer, mut server_framer) = (
            Framer::new(limits.max_message_bytes),
            Framer::new(usize::MAX),
        );
        let mut server_buf = BytesMut::new();
        let client_at_boundary = AtomicBool::new(true);
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
        let rejections = Rejections::default();
        let down = ToClient {
            shutdown: &self.ctx.shutdown,
            drain_timeout: limits.shutdown_timeout(),
            client_at_boundary: &client_at_boundary,
            upstream,
            rejections: &rejections,
        };
        let up = ToServer {
            addr: upstream,
            rewriter,
            rejections: &rejections,
        };
        let outcome = tokio::select! {
            r = upward.client_to_server(state, up) => r,
            r = downward.server_to_client(state, down) => r,
            _ = startup_expired(self.deadline, state) => {
                Err(Error::StartupTimeout(limits.startup_timeout_ms))
            }
        };
        self.finish(
            &outcome,
            client_at_boundary.load(Relaxed),
            &mut client_w,
            &mut server_w,
        )
        .await;
        outcome
    }

    /// Tells the client why the session ends (when it can still hear it) and
    /// lets the server end its backend cleanly.
    async fn finish(
        &self,
        outcome: &Result<End, Error>,
        at_boundary: bool,
        client_w: &mut Writer,
        server_w: &mut Writer,
    ) {
        let shutting_down = Error::ShuttingDown;
        let error = match outcome {
            Ok(End::Shutdown) => Some(&shutting_down),
            Ok(_) => None,
            Err(e) if e.client_unreachable() => None,
            Err(e) => Some(e),
        };
        if let (Some(error), true) = (error, at_boundary) {
            farewell(client_w, error).await;
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
}

/// Completes at `deadline` if the session has not authenticated by then.
async fn startup_expired(deadline: Instant, state: &State) {
    tokio::time::sleep_until(deadline).await;
    if state.authenticated() {
        std::future::pending::<()>().await;
    }
}

/// Writes the FATAL ErrorResponse for `error` and closes the write side.
async fn farewell<W: tokio::io::AsyncWrite + Unpin>(client: &mut W, error: &Error) {
    let mut out = BytesMut::new();
    error.to_error_response(&mut out);
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, async {
        client.write_all(&out).await?;
        client.flush().await?;
        client.shutdown().await
    })
    .await;
}
