//! The accept loop: connection cap, one task per client, reload triggers, the
//! admin listener, graceful shutdown.
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::http::{self, Admin};
use crate::config::Config;
use crate::error::Error;
use crate::fleet;
use crate::metrics::metrics;
use crate::reload::Reloader;
use crate::runtime::Context;
use crate::session;
use crate::session::SessionError;

mod threads;

use threads::SessionThreads;

/// Extra time, past `shutdown_timeout_ms`, for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// A proxy to run: configuration plus optional reload and admin wiring.
pub struct Server {
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    hangup: Option<Hangup>,
    admin: Option<TcpListener>,
    session_threads: Option<usize>,
}

/// Serves clients on `listener` until `shutdown` completes (no reload, no
/// admin listener); see [`Server::run`].
///
/// # Errors
/// As [`Server::run`].
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Server::new(config).run(listener, shutdown).await
}

// === impl Server ===

impl Server {
    /// A server for `config`.
    pub fn new(config: Arc<Config>) -> Server {
        Server {
            config,
            config_path: None,
            hangup: None,
            admin: None,
            session_threads: None,
        }
    }

    /// Reloads rules and settings from `path` when it changes or on SIGHUP.
    ///
    /// SIGHUP is listened for from this call on (inside a runtime): one that
    /// arrives while the server starts reloads once it runs, where the
    /// signal's default action would have killed the process.
    pub fn config_file(mut self, path: PathBuf) -> Server {
        self.config_path = Some(path);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.hangup = Some(Hangup::listen());
        }
        self
    }

    /// Serves the admin API on `listener`.
    pub fn admin(mut self, listener: TcpListener) -> Server {
        self.admin = Some(listener);
        self
    }

    /// Serves sessions on `count` threads of their own, one single-threaded
    /// runtime each, instead of on the runtime that calls [`Server::run`].
    pub fn session_threads(mut self, count: usize) -> Server {
        self.session_threads = Some(count);
        self
    }

    /// Serves clients on `listener` until `shutdown` completes, then stops
    /// accepting, lets sessions finish their transaction (up to
    /// `[limits] shutdown_timeout_ms`) and returns.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when certificates cannot be loaded, [`Error::Rules`]
    /// when a rule cannot be activated; nothing is served then. Postgres being
    /// down is not an error: rules whose catalog check could not reach it are
    /// activated in the background once it can.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let token = CancellationToken::new();
        let (config, db_version) = fleet::rules::at_start(self.config.clone()).await;
        let ctx = Arc::new(Context::new(config.clone(), token.clone()).await?);
        let listen = listener
            .local_addr()
            .map_or_else(|_| config.listen.clone(), |a| a.to_string());
        let identity = fleet::Identity::new(config.instance_id.as_deref(), &listen);
        let shared = Arc::new(fleet::Shared::new(&identity.instance_id));
        shared.db_rules_version.store(
            db_version.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(path) = &self.config_path {
            // The file as it was read at start; a reload records its own text.
            if let Ok(text) = std::fs::read_to_string(path) {
                shared.set_config_text(&text);
            }
        }
        let current = ctx.rules.current();
        current.publish_metrics();
        // Background tasks (file watcher, SIGHUP, admin) apart from sessions,
        // so shutdown reports and waits for sessions only where it should.
        let background = TaskTracker::new();
        let tracker = TaskTracker::new();
        background.spawn(crate::active::activate_pending(
            Arc::clone(&ctx.rules),
            token.clone(),
        ));
        background.spawn(crate::active::watch_catalogs(
            Arc::clone(&ctx.rules),
            token.clone(),
        ));
        let reloader = self
            .config_path
            .map(|path| Arc::new(Reloader::new(path, ctx.clone()).fleet(shared.clone())));
        if let Some(reloader) = &reloader {
            background.spawn(watch_file(reloader.clone(), token.clone()));
            let hangup = self.hangup.unwrap_or_else(Hangup::listen);
            background.spawn(reload_on_sighup(reloader.clone(), hangup, token.clone()));
            background.spawn(crate::reload::listen::run(
                reloader.clone(),
                ctx.clone(),
                shared.clone(),
                token.clone(),
            ));
        }
        if let Some(listener) = self.admin {
            let admin_token = config.admin_token()?;
            let admin = Arc::new(Admin {
                ctx: ctx.clone(),
                reloader: reloader.clone(),
                token: admin_token,
            });
            background.spawn(http::serve(listener, admin, token.clone()));
        }
        let threads = self
            .session_threads
            .map(SessionThreads::start)
            .transpose()?;
        // Started last, so no early return leaves it beating.
        let heartbeat = fleet::Heartbeat::start(ctx.clone(), identity, shared.clone());
        accept_loop(
            &listener,
            &ctx,
            &shared,
            &tracker,
            threads.as_ref(),
            shutdown,
        )
        .await;
        drop(listener);
        let limits = ctx.settings().config.limits.clone();
        tracing::info!(
            sessions = tracker.len(),
            timeout_ms = limits.shutdown_timeout_ms,
            "shutting down: no longer accepting, waiting for sessions to finish their transactions"
        );
        token.cancel();
        tracker.close();
        background.close();
        if tokio::time::timeout(limits.shutdown_timeout() + SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = tracker.len(),
                "sessions still open after shutdown_timeout_ms; closing them"
            );
        }
        if let Some(threads) = threads {
            // The sessions are gone, or were given up on: their threads end
            // (a session still open is dropped with its runtime).
            let _ = tokio::task::spawn_blocking(move || threads.join()).await;
        }
        // Leave the registry only once no session serves the rules any more.
        heartbeat.stop().await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, background.wait()).await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn accept_loop(
    listener: &TcpListener,
    ctx: &Arc<Context>,
    shared: &Arc<fleet::Shared>,
    tracker: &TaskTracker,
    threads: Option<&SessionThreads>,
    shutdown: impl Future<Output = ()>,
) {
    let mut cap = Cap::new(ctx.settings().config.limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        cap.set(ctx.settings().config.limits.max_connections);
        let max = cap.max;
        match cap.try_acquire() {
            Some(permit) => {
                let ctx = ctx.clone();
                let counted = shared.session();
                let m = metrics();
                m.connections_total.increment(1);
                m.connections.increment(1.0);
                let tracked = tracker.token();
                let serve = move |tcp| async move {
                    session::run(tcp, peer, ctx).await;
                    metrics().connections.decrement(1.0);
                    drop(counted);
                    drop(permit);
                    drop(tracked);
                };
                match threads {
                    Some(threads) => threads.spawn(tcp, serve),
                    None => {
                        tokio::spawn(serve(tcp));
                    }
                }
            }
            None => {
                metrics().rejected_max_connections.increment(1);
                tracing::warn!(client = %peer, max_connections = max, "connection rejected: too many connections");
                tracker.spawn(reject(tcp, SessionError::TooManyConnections(max)));
            }
        }
    }
}

/// The connection cap: a semaphore whose size follows `[limits]
/// max_connections` across reloads.
///
/// Lowering the cap while more sessions are open cannot take their permits
/// away, so the difference is owed and paid as those permits come back: the
/// accept loop is the only place permits are taken, and it settles the debt
/// before each one, so what it admits never exceeds the configured cap.
struct Cap {
    permits: Arc<Semaphore>,
    /// The cap in force.
    max: usize,
    /// Permits still to remove from the semaphore once sessions return them.
    owed: usize,
}

// === impl Cap ===

impl Cap {
    fn new(max: usize) -> Cap {
        Cap {
            permits: Arc::new(Semaphore::new(max)),
            max,
            owed: 0,
        }
    }

    /// Moves the cap to `configured`.
    fn set(&mut self, configured: usize) {
        if configured > self.max {
            let more = configured - self.max;
            let repaid = more.min(self.owed);
            self.owed -= repaid;
            self.permits.add_permits(more - repaid);
        } else {
            self.owed += self.max - configured;
        }
        self.max = configured;
    }

    /// A permit for one session, when the cap allows one more.
    fn try_acquire(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.owed > 0 {
            self.owed -= self.permits.forget_permits(self.owed);
        }
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// Reloads when the config file changes. The file's path is polled (not an
/// inotify watch on the inode), so editors that write a temporary file and
/// rename it over the original are caught too.
async fn watch_file(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    let stamp = |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| file_stamp(&m));
    let mut last = stamp(reloader.path());
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = stamp(reloader.path());
        if now.is_none() || now == last {
            continue;
        }
        // Let a writer finish: reload once the file has stopped changing.
        tokio::time::sleep(WATCH_INTERVAL / 2).await;
        let settled = stamp(reloader.path());
        if settled != now {
            continue;
        }
        last = settled;
        let _ = reloader.reload("file change").await;
    }
}

fn file_stamp(m: &std::fs::Metadata) -> (Option<std::time::SystemTime>, u64, u64) {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let ino = 0;
    (m.modified().ok(), m.len(), ino)
}

async fn reload_on_sighup(
    reloader: Arc<Reloader>,
    mut hangup: Hangup,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangup.recv() => if !received { return },
        }
        let _ = reloader.reload("SIGHUP").await;
    }
}

/// SIGHUP, registered when this is made: from then on the signal no longer
/// stops the process, and one received before [`Hangup::recv`] is polled is
/// kept for it.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

// === impl Hangup ===

impl Hangup {
    /// Starts listening. Call inside a runtime.
    fn listen() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with the admin API or by editing the file");
                })
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// Completes on the next SIGHUP.
    ///
    /// # Returns
    /// False when no more can come (never listening, or the runtime is going).
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            return signal.recv().await.is_some();
        }
        false
    }
}

async fn reject(mut tcp: TcpStream, error: SessionError) {
    let mut out = BytesMut::new();
    error.to_error_response(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(&out).await?;
        tcp.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_lowered_below_open_sessions_holds_once_they_close() {
        let mut cap = Cap::new(50);
        let open: Vec<_> = (0..40).map(|_| cap.try_acquire().unwrap()).collect();
        cap.set(10);
        assert!(cap.try_acquire().is_none(), "40 open, cap 10");
        drop(open);
        let admitted: Vec<_> = std::iter::from_fn(|| cap.try_acquire()).take(50).collect();
        assert_eq!(admitted.len(), 10);
    }

    #[test]
    fn cap_raised_again_repays_the_debt_first() {
        let mut cap = Cap::new(50);
        let open: Vec<_> = (0..40).map(|_| cap.try_acquire().unwrap()).collect();
        cap.set(10);
        cap.set(30);
        drop(open);
        let admitted: Vec<_> = std::iter::from_fn(|| cap.try_acquire()).take(60).collect();
        assert_eq!(admitted.len(), 30);
        drop(admitted);
        cap.set(60);
        let admitted: Vec<_> = std::iter::from_fn(|| cap.try_acquire()).take(90).collect();
        assert_eq!(admitted.len(), 60);
    }
}
