//! The wait before the contract step's `DROP COLUMN`: the old columns are
//! marked as retiring (`crate::fleet::retire`), and the drop runs once every
//! live instance serving the rule reports that it stopped writing them, and
//! every transaction that began before then has ended, so no write of any
//! instance fails when they go.
//!
//! A session takes new rules only between transactions, so one that was
//! inside a transaction block when its instance confirmed still writes the
//! old columns until it ends. pgshim cannot tell which backends serve its
//! sessions, so it waits for every older transaction in the database, as
//! `CREATE INDEX CONCURRENTLY` does.
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::error::OpsError;
use super::guard::registry_client;
use super::target::Target;
use crate::config::Config;
use crate::fleet::registry;
use crate::fleet::registry_database;
use crate::fleet::retire::{self, Retiring};

/// How often the registry is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Longest wait beyond one comparison of catalogs and two heartbeats, which is
/// what an instance takes to notice the mark and report it.
const MARGIN: Duration = Duration::from_secs(10);

/// Longest wait for the transactions open when the fleet confirmed to end.
const OLD_TRANSACTIONS: Duration = Duration::from_secs(30);

/// How long pgshim waits for them before saying so.
const TELL_AFTER: Duration = Duration::from_secs(2);

/// Client backends of this database (other than this one) whose transaction
/// began before `$1`.
const OLDER_TRANSACTIONS_SQL: &str = "SELECT pid, coalesce(application_name, ''), \
    coalesce(state, ''), extract(epoch FROM clock_timestamp() - xact_start)::bigint \
    FROM pg_stat_activity \
    WHERE datname = current_database() AND pid <> pg_backend_pid() \
      AND backend_type = 'client backend' AND xact_start < $1::text::timestamptz \
    ORDER BY xact_start";

/// What the drop of one rule's old columns waits on.
pub struct Handshake<'a> {
    /// The config, for the fleet's timings and the registry's login.
    pub config: &'a Config,
    /// The rule and its database.
    pub target: &'a Target,
    /// Drop anyway when instances do not confirm in time, with a warning.
    pub force: bool,
    /// Shows a warning to the operator.
    pub warn: &'a dyn Fn(String),
}

// === impl Handshake ===

impl Handshake<'_> {
    /// Marks `columns` as retiring and waits until the fleet stopped writing
    /// them. On failure the mark is removed again.
    ///
    /// # Errors
    /// [`OpsError::NotRetired`] naming the instances that did not confirm in
    /// time (not with `force`), or a database error.
    pub async fn retire(
        &self,
        client: &Client,
        columns: &[String],
        stop: &CancellationToken,
    ) -> Result<(), OpsError> {
        let rule = &self.target.rule;
        let retiring = Retiring {
            rule: rule.id.clone(),
            schema: rule.schema.clone(),
            table: rule.table.clone(),
            columns: columns.to_vec(),
        };
        let waited = match retire::mark(client, &retiring).await {
            Ok(since) => match self.wait(client, &since, stop).await {
                Ok(()) => self.wait_for_older_transactions(client, stop).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(OpsError::db(
                "marking the old columns as retiring (pgshim.retiring)",
            )(e)),
        };
        match waited {
            Err(e) if self.force && !stop.is_cancelled() => {
                let why = match e {
                    OpsError::NotRetired { waiting, .. } => {
                        format!("these instances do not confirm it: {waiting}")
                    }
                    OpsError::OldTransactions { open, .. } => {
                        format!("these transactions older than that are still open and fail at their next write of the table: {open}")
                    }
                    other => other.to_string(),
                };
                (self.warn)(format!("--force: dropping the old columns of rule {} without knowing that every pgshim stopped writing them; {why}", rule.id));
                Ok(())
            }
            Err(e) => {
                self.release(client).await;
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Removes the mark (once the columns are gone, or when they stay).
    pub async fn release(&self, client: &Client) {
        if let Err(e) = retire::unmark(client, &self.target.rule.id).await {
            (self.warn)(format!(
                "could not remove rule {}'s row from pgshim.retiring: {e}; remove it by hand",
                self.target.rule.id
            ));
        }
    }

    /// Waits until no transaction that began before now (every instance has
    /// confirmed) is open in the database.
    ///
    /// # Errors
    /// [`OpsError::OldTransactions`] naming those still open after
    /// [`OLD_TRANSACTIONS`], or a database error.
    async fn wait_for_older_transactions(
        &self,
        client: &Client,
        stop: &CancellationToken,
    ) -> Result<(), OpsError> {
        let what = "listing older transactions (pg_stat_activity)";
        let now: String = client
            .query_one("SELECT clock_timestamp()::text", &[])
            .await
            .map_err(OpsError::db(what))?
            .get(0);
        let started = Instant::now();
        let mut told = false;
        loop {
            let rows = client
                .query(OLDER_TRANSACTIONS_SQL, &[&now])
                .await
                .map_err(OpsError::db(what))?;
            if rows.is_empty() {
                return Ok(());
            }
            let open = || {
                rows.iter()
                    .map(|r| {
                        let (pid, app, state, age): (i32, String, String, i64) =
                            (r.get(0), r.get(1), r.get(2), r.get(3));
                        format!("pid {pid} (application '{app}', {state}, open {age} s)")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !told && started.elapsed() >= TELL_AFTER {
                told = true;
                (self.warn)(format!(
                    "waiting up to {} s for transactions open since before every pgshim stopped writing the old columns of rule {}: {}",
                    OLD_TRANSACTIONS.as_secs(),
                    self.target.rule.id,
                    open()
                ));
            }
            if started.elapsed() >= OLD_TRANSACTIONS || stop.is_cancelled() {
                let open = open();
                return Err(OpsError::OldTransactions {
                    rule: self.target.rule.id.clone(),
                    database: self.target.database.clone(),
                    open,
                    secs: started.elapsed().as_secs(),
                });
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn wait(
        &self,
        client: &Client,
        since: &str,
        stop: &CancellationToken,
    ) -> Result<(), OpsError> {
        let fleet = &self.config.fleet;
        let limit = crate::active::CHECK_INTERVAL + 2 * fleet.heartbeat() + MARGIN;
        let registry_db = registry_database(&self.target.rule, &fleet.database);
        let other = registry_client(self.config, self.target, registry_db).await?;
        let registry = other.as_ref().unwrap_or(client);
        let what = "reading the fleet registry (pgshim.instance)";
        let started = Instant::now();
        loop {
            let instances = registry::read(registry, fleet)
                .await
                .map_err(OpsError::db(what))?;
            if !instances
                .iter()
                .any(|i| i.phases.contains_key(&self.target.rule.id))
            {
                return Ok(());
            }
            let fresh = retire::fresh(registry, since)
                .await
                .map_err(OpsError::db(what))?;
            let waiting = retire::waiting_for(
                &self.target.rule.id,
                &self.target.database,
                &instances,
                &fresh,
            );
            if waiting.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= limit || stop.is_cancelled() {
                let waiting = waiting
                    .iter()
                    .map(|(id, why)| format!("{id} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(OpsError::NotRetired {
                    rule: self.target.rule.id.clone(),
                    database: self.target.database.clone(),
                    waiting,
                    secs: started.elapsed().as_secs(),
                });
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
