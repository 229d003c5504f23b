//! `pgshim serve`: load the config, bind, serve until SIGTERM or SIGINT.
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::Server;

/// Runs the proxy until a signal asks it to stop.
///
/// # Errors
/// An invalid config, a listen address that cannot be bound, or TLS files that
/// cannot be loaded.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(config_path)?);
    let session_threads = match worker_threads()? {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    // Accepting, reloads, the admin API and the heartbeat; sessions run on
    // threads of their own (`Server::session_threads`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Signals first: once clients can connect, SIGTERM is a graceful stop
        // and SIGHUP a reload, never the default action's sudden exit.
        let shutdown = shutdown_signal();
        let mut server = Server::new(config.clone())
            .config_file(config_path.to_owned())
            .session_threads(session_threads);
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (the `listen` key in {})", config.listen, config_path.display()))?;
        tracing::info!(listen = %config.listen, upstream = %config.upstream_addr(), config = %config_path.display(), "pgshim listening");
        if let Some(admin) = &config.admin {
            let admin_listener = TcpListener::bind(&admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} ([admin] listen in {})", admin.listen, config_path.display()))?;
            tracing::info!(listen = %admin.listen, "admin listener (/metrics, /rules, /healthz, POST /reload)");
            server = server.admin(admin_listener);
        }
        server.run(listener, shutdown).await?;
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT, listened for from this call on.
/// Call inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        if let Ok((mut term, mut int)) = signals {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `PGSHIM_WORKER_THREADS`: async worker threads (default: one per core).
fn worker_threads() -> anyhow::Result<Option<usize>> {
    match std::env::var("PGSHIM_WORKER_THREADS") {
        Err(_) => Ok(None),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => anyhow::bail!("PGSHIM_WORKER_THREADS must be a positive whole number, got {v:?}"),
        },
    }
}
