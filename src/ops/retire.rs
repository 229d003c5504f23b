//! The wait before the contract step's `DROP COLUMN`: the old columns are
//! marked as retiring (`crate::fleet::retire`), and the drop runs once every
//! live instance serving the rule reports that it stopped writing them, so no
//! write of any instance fails when they go. An instance reports it once its
//! rules in force retire them and none of its sessions is still busy (inside
//! a transaction block or a pipeline) with older rules, which it takes only
//! when idle (`crate::session::SessionBoard`).
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
            Ok(since) => self.wait(client, &since, stop).await,
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
