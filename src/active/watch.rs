//! Keeping each database's catalog current, so no statement is rewritten
//! against columns that are gone (a positional INSERT would put values in the
//! wrong columns) or without columns that were added (`*` would miss them).
//!
//! DDL that passes through pgshim and names a mapped table makes its session
//! call [`LiveRules::catalog_changed`] once the statement has run; DDL run
//! elsewhere is found by [`watch_catalogs`], which compares every held catalog
//! with Postgres's every [`CHECK_INTERVAL`]. Either way the same rules are put
//! in force as a new version that reads that database's catalog afresh, and
//! sessions take it at their next idle point, re-preparing their statements
//! as after any rules change.
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{read_and_check, LiveRules};

/// How often held catalogs are compared with Postgres's.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

// === impl LiveRules ===

impl LiveRules {
    /// Puts in force a new version of the same rules that reads `database`'s
    /// catalog afresh when a session next needs it.
    pub fn catalog_changed(&self, database: &str) {
        loop {
            let current = self.current();
            let next = current.successor_without(Some(database));
            let number = next.number;
            if self.replace(&current, next) {
                self.current().publish_metrics();
                tracing::info!(
                    database,
                    version = number,
                    "catalog changed: rules re-read for this database"
                );
                return;
            }
        }
    }
}

/// Compares every catalog the rules in force hold with Postgres's, every
/// [`CHECK_INTERVAL`], until `shutdown`; a difference makes the database's
/// catalog be read afresh. A failed read changes nothing: sessions keep what
/// they have until Postgres answers again.
pub async fn watch_catalogs(live: Arc<LiveRules>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let version = live.current();
        let settings = &version.settings;
        for (database, held) in version.catalogs() {
            let Ok(held_catalog) = &held.state else {
                continue;
            };
            let fresh = read_and_check(
                &version.rules.for_database(&database),
                &database,
                &settings.config.upstream,
                &settings.upstream,
            )
            .await;
            let changed = match &fresh {
                Ok((_, catalog)) => catalog != held_catalog,
                // The schema no longer serves the rules: read it afresh, so
                // statements are refused with the reason.
                Err((super::databases::FailureKind::Invalid, _)) => true,
                Err(_) => false,
            };
            if changed && live.current_number() == version.number {
                live.catalog_changed(&database);
            }
        }
    }
}
