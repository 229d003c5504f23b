//! The accept loop: connection cap, one task per client, graceful shutdown.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::session::{self, Context};

/// Extra time, past `shutdown_timeout_ms`, for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves clients on `listener` until `shutdown` completes, then stops
/// accepting, lets sessions finish their transaction (up to
/// `[limits] shutdown_timeout_ms`) and returns.
///
/// # Errors
/// [`Error::TlsSetup`] when certificates cannot be loaded; nothing is served then.
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let token = CancellationToken::new();
    let ctx = Arc::new(Context::new(config.clone(), token.clone()).await?);
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
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
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    session::run(tcp, peer, ctx).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(client = %peer, max_connections = config.limits.max_connections, "connection rejected: too many connections");
                tracker.spawn(reject(
                    tcp,
                    Error::TooManyConnections(config.limits.max_connections),
                ));
            }
        }
    }
    drop(listener);
    let open = tracker.len();
    tracing::info!(
        sessions = open,
        timeout_ms = config.limits.shutdown_timeout_ms,
        "shutting down: no longer accepting, waiting for sessions to finish their transactions"
    );
    token.cancel();
    tracker.close();
    if tokio::time::timeout(
        config.limits.shutdown_timeout() + SHUTDOWN_GRACE,
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            sessions = tracker.len(),
            "sessions still open after shutdown_timeout_ms; closing them"
        );
    }
    tracing::info!("shutdown complete");
    Ok(())
}

async fn reject(mut tcp: TcpStream, error: Error) {
    let mut out = BytesMut::new();
    error.to_error_response(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(&out).await?;
        tcp.shutdown().await
    })
    .await;
}
