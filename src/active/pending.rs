//! Rules left pending at startup because Postgres could not be reached are
//! activated in the background, with backoff, as soon as their catalog
//! checks pass.
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::LiveRules;

/// First wait before a pending catalog check is retried; doubled each time.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between retries of a pending catalog check.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Retries the catalog checks [`super::LiveRules::load`] left pending, with
/// backoff, until they pass, a reload replaces the version, or `shutdown`.
/// Once they pass the same rules are put in force as a new version, so that
/// sessions which started meanwhile take them at their next idle point.
pub async fn activate_pending(live: Arc<LiveRules>, shutdown: CancellationToken) {
    let mut wait = RETRY_FIRST;
    loop {
        let version = live.current();
        let pending: Vec<String> = version.pending().into_iter().map(|(db, _)| db).collect();
        if pending.is_empty() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
        let mut passed = true;
        for database in &pending {
            let loaded = version.check(database).await;
            passed &= loaded.failure.is_none();
        }
        if passed {
            let next = version.successor();
            let number = next.number;
            if live.replace(&version, next) {
                live.current().publish_metrics();
                tracing::info!(databases = ?pending, version = number, "catalog checks passed: rules active");
            }
        }
    }
}
