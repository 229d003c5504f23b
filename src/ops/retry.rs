//! Retrying work that lost a lock race: lock timeout, deadlock, serialization failure.
//!
//! The work is a whole short transaction (or one DDL statement), so running it again is
//! safe; the wait doubles from 100 ms up to 5 s between attempts.
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::OpsError;

/// First wait after a lock timeout.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// How a retried step ended.
#[derive(Debug)]
pub enum Retried<T> {
    /// It succeeded.
    Done(T),
    /// `stop` fired while waiting to retry.
    Stopped,
}

/// Runs `step` until it succeeds, fails for a reason other than a lock conflict, or has
/// failed `max_attempts` times; `on_retry(attempt, wait, error)` is told about each retry.
///
/// # Errors
/// The step's own error, or [`OpsError::LockRetriesExhausted`].
pub async fn with_retry<T, F, Fut>(
    what: &str,
    max_attempts: u32,
    stop: &CancellationToken,
    on_retry: &mut dyn FnMut(u32, Duration, &OpsError),
    mut step: F,
) -> Result<Retried<T>, OpsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OpsError>>,
{
    let mut wait = FIRST_WAIT;
    let mut attempt = 1;
    loop {
        match step().await {
            Ok(v) => return Ok(Retried::Done(v)),
            Err(e) if e.is_retryable() && attempt < max_attempts.max(1) => {
                on_retry(attempt, wait, &e);
                if !sleep_unless_stopped(wait, stop).await {
                    return Ok(Retried::Stopped);
                }
                wait = (wait * 2).min(MAX_WAIT);
                attempt += 1;
            }
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "last lock conflict");
                return Err(OpsError::LockRetriesExhausted {
                    what: what.to_owned(),
                    attempts: attempt,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps for `d`.
///
/// # Returns
/// `false` when `stop` fired first.
pub async fn sleep_unless_stopped(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}
