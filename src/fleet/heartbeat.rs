//! The background task that keeps this instance's registry rows fresh.
//!
//! It never touches serving: it reads the rules and settings in force, writes
//! through its own connections (one per registry database, pgshim's
//! `[upstream]` login), and when Postgres is unreachable it logs each distinct
//! failure once and tries again at the next beat. On a clean shutdown the
//! server stops it after the sessions have finished, and it deletes its rows.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::registry::{self, Beat, Phases};
use super::{next_phases, registry_databases, retire, unix_ms, Identity, Shared};
use crate::rewrite::Phase;
use crate::runtime::Context;
use crate::settings::Settings;

/// How long deregistering may hold up shutdown.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to `connect_timeout_ms` for one database's beat.
const BEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running heartbeat.
/// Dropping it without [`Heartbeat::stop`] (the server's future dropped) still
/// stops the beat and deregisters in the background.
pub struct Heartbeat {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

struct Beater {
    ctx: Arc<Context>,
    identity: Identity,
    shared: Arc<Shared>,
    clients: BTreeMap<String, Registered>,
    phases: Phases,
    /// The last failure logged per database, so each is logged once.
    failures: BTreeMap<String, String>,
    no_login_logged: bool,
    /// Rule and database pairs reported written only for sessions on older
    /// rules, as last logged (logged when they start being so).
    lagging_logged: BTreeSet<(String, String)>,
}

/// An open registry connection.
struct Registered {
    client: Client,
    /// The table has the `usage` column, so beats carry the usage report.
    usage_column: bool,
}

// === impl Heartbeat ===

impl Heartbeat {
    /// Starts beating for the server of `ctx`.
    pub fn start(ctx: Arc<Context>, identity: Identity, shared: Arc<Shared>) -> Heartbeat {
        // Usage is counted from the server's start.
        let _ = crate::usage::board();
        let stop = CancellationToken::new();
        let beater = Beater {
            ctx,
            identity,
            shared,
            clients: BTreeMap::new(),
            phases: Phases::new(),
            failures: BTreeMap::new(),
            no_login_logged: false,
            lagging_logged: BTreeSet::new(),
        };
        let task = tokio::spawn(beater.run(stop.clone()));
        Heartbeat {
            stop,
            task: Some(task),
        }
    }

    /// Stops beating and deletes this instance's rows.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(DEREGISTER_TIMEOUT * 2, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// === impl Beater ===

impl Beater {
    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(
            instance_id = %self.identity.instance_id,
            "registering in the fleet registry (pgshim.instance)"
        );
        loop {
            let settings = self.ctx.settings();
            // A beat stuck on an unreachable Postgres must not hold up shutdown.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.beat_all(&settings) => {}
            }
            let interval = settings.config.fleet.heartbeat();
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                _ = self.shared.beat_now.notified() => {}
            }
        }
        self.deregister_all().await;
    }

    async fn beat_all(&mut self, settings: &Settings) {
        if settings.config.upstream.user.is_none() {
            if !self.no_login_logged {
                tracing::info!("[upstream] user is not set: this instance does not register in the fleet registry, so `pgshim status` cannot see it and `plan --phase contract --apply` will not count it");
                self.no_login_logged = true;
            }
            return;
        }
        let rules = self.ctx.rules.current();
        let in_force: Vec<_> = rules
            .rules
            .rules()
            .iter()
            .map(|r| (r.id.clone(), r.phase))
            .collect();
        self.phases = next_phases(&self.phases, &in_force, unix_ms(SystemTime::now()));
        // Only the contract step asks; the scan visits every session.
        let in_contract = in_force.iter().any(|(_, phase)| *phase == Phase::Contract);
        let lagging = if in_contract {
            self.ctx.sessions.lagging(rules.number)
        } else {
            Default::default()
        };
        let by_catalog = retire::writes_old_in(&rules, &Default::default());
        let mut lagging_now = BTreeSet::new();
        for (rule, databases) in retire::writes_old_in(&rules, &lagging) {
            for database in &databases {
                if !by_catalog.get(&rule).is_some_and(|d| d.contains(database)) {
                    let pair = (rule.clone(), database.clone());
                    if !self.lagging_logged.contains(&pair) {
                        tracing::info!(rule = %rule, database = %database, "sessions inside a transaction or pipeline begun under older rules may still write the old columns: reporting them as written until those sessions are idle");
                    }
                    lagging_now.insert(pair);
                }
            }
            if let Some(phase) = self.phases.get_mut(&rule) {
                phase.writes_old_in = databases;
            }
        }
        self.lagging_logged = lagging_now;
        let fleet = &settings.config.fleet;
        let wanted = registry_databases(&rules.rules, &fleet.database);
        let left: Vec<String> = self
            .clients
            .keys()
            .filter(|db| !wanted.contains(*db))
            .cloned()
            .collect();
        for db in left {
            if let Some(open) = self.clients.remove(&db) {
                let _ = registry::deregister(&open.client, &self.identity.instance_id).await;
            }
        }
        let checksum = self.shared.checksum.load_full();
        let reload_error = self.shared.reload_error.load_full();
        let usage = usage_json(&rules.rules);
        let beat = Beat {
            instance_id: &self.identity.instance_id,
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.identity.started_at,
            rules_version: self.shared.reported_rules_version(rules.number),
            config_checksum: &checksum,
            phases: &self.phases,
            sessions: self.shared.sessions.load(Ordering::Relaxed),
            last_reload_error: reload_error.as_deref().map(String::as_str),
            usage: Some(&usage),
        };
        let limit = settings.config.upstream.connect_timeout() + BEAT_TIMEOUT;
        let mut outcomes = Vec::new();
        for db in &wanted {
            let client = self.clients.remove(db);
            let done = tokio::time::timeout(
                limit,
                beat_one(settings, db, client, &beat, fleet.forget_after_ms),
            )
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
            outcomes.push((db.clone(), done));
        }
        for (db, done) in outcomes {
            match done {
                Ok(client) => {
                    self.clients.insert(db.clone(), client);
                    if self.failures.remove(&db).is_some() {
                        tracing::info!(database = %db, "fleet registry reachable again");
                    }
                }
                Err(reason) => self.failed(&db, reason),
            }
        }
    }

    fn failed(&mut self, db: &str, reason: String) {
        if self.failures.get(db) != Some(&reason) {
            tracing::warn!(database = %db, reason = %reason, "cannot write to the fleet registry; serving goes on, retrying at every beat");
            self.failures.insert(db.to_owned(), reason);
        }
    }

    async fn deregister_all(&mut self) {
        for (db, open) in std::mem::take(&mut self.clients) {
            let gone = tokio::time::timeout(
                DEREGISTER_TIMEOUT,
                registry::deregister(&open.client, &self.identity.instance_id),
            )
            .await;
            match gone {
                Ok(Ok(())) => tracing::info!(database = %db, "left the fleet registry"),
                _ => {
                    tracing::warn!(database = %db, "could not leave the fleet registry; the row turns stale and is then ignored")
                }
            }
        }
    }
}

/// Writes `beat` to `db`, over `client` when it is still open.
async fn beat_one(
    settings: &Settings,
    db: &str,
    open: Option<Registered>,
    beat: &Beat<'_>,
    forget_after_ms: u64,
) -> Result<Registered, String> {
    let open = match open.filter(|o| !o.client.is_closed()) {
        Some(open) => open,
        None => self::open(settings, db).await?,
    };
    let beat = Beat {
        usage: beat.usage.filter(|_| open.usage_column),
        ..beat.clone()
    };
    registry::beat(&open.client, &beat, forget_after_ms)
        .await
        .map_err(|e| format!("writing this instance's row: {}", super::pg_error(&e)))?;
    Ok(open)
}

/// This instance's usage report for `rules`, as JSON.
fn usage_json(rules: &crate::rewrite::RuleSet) -> String {
    let report = crate::usage::board().report(rules.rules().iter().map(|r| r.id.as_str()));
    serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
}

async fn open(settings: &Settings, db: &str) -> Result<Registered, String> {
    let client = crate::introspect::connect(&settings.config.upstream, &settings.upstream, db)
        .await
        .map_err(|e| e.to_string())?;
    client
        .batch_execute(
            "SET application_name = 'pgshim registry'; SET client_min_messages = warning; \
             SET statement_timeout = '5s'",
        )
        .await
        .map_err(|e| {
            format!(
                "configuring the registry connection: {}",
                super::pg_error(&e)
            )
        })?;
    registry::ensure(&client).await.map_err(|e| {
        format!(
            "creating pgshim.instance (pgshim's [upstream] user needs CREATE on the database): {}",
            super::pg_error(&e)
        )
    })?;
    let usage_column = registry::ensure_usage_column(&client).await.map_err(|e| {
        format!(
            "reading the columns of pgshim.instance: {}",
            super::pg_error(&e)
        )
    })?;
    Ok(Registered {
        client,
        usage_column,
    })
}
