//! Several pgshim instances in front of one database: each reports what it
//! runs, so operators and the migration commands decide from what is in force
//! rather than from one host's config file.
//!
//! The coordination goes through Postgres itself, the one service every
//! instance already reaches: every `pgshim serve` writes a row to
//! `pgshim.instance` ([`registry`]) every `[fleet] heartbeat_ms` (2 s) from a
//! background task ([`heartbeat`]) and deletes it on a clean shutdown. The row
//! carries the phases in force and which shapes of each rule clients used
//! (`crate::usage`). A row
//! older than `stale_after_ms` (10 s) is shown as stale, one older than
//! `forget_after_ms` (60 s) is ignored. The registry lives in every database
//! a rule names with `database`, and in the control database (`[fleet]
//! database`, default `postgres`) when some rule names none, which is where the
//! migration commands look for a rule ([`registry_database`]).
//!
//! `crate::ops::guard` is what `plan --phase contract --apply` checks before it drops
//! columns; [`spread`] is what a reload checks before it changes a phase.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::Notify;

use crate::rewrite::{Phase, Rule, RuleSet};

pub mod ack;
pub mod heartbeat;
pub mod registry;
pub mod retire;
pub mod rules;
pub mod spread;

pub use heartbeat::Heartbeat;
use registry::{Phases, RulePhase};

/// Who this instance is, fixed at start.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `instance_id`, or host name and listen address.
    pub instance_id: String,
    /// When `pgshim serve` started.
    pub started_at: SystemTime,
}

/// What a running server shares with its heartbeat and its reloader.
#[derive(Debug)]
pub struct Shared {
    /// This instance's id in the registry.
    pub instance_id: String,
    /// Client sessions open (admitted by the connection cap).
    pub sessions: AtomicUsize,
    /// Checksum of the config file in force; empty when there is no file.
    pub checksum: ArcSwap<String>,
    /// Why the last reload changed nothing, unless a later one succeeded.
    pub reload_error: ArcSwapOption<String>,
    /// Wakes the heartbeat early, so a reload shows in the registry at once.
    pub beat_now: Notify,
    /// With `[rules] source = "database"`, the `pgshim.rules` version in
    /// force; 0 otherwise. The registry reports it as `rules_version`, which
    /// is how `pgshim flip` sees the write acknowledged.
    pub db_rules_version: AtomicU64,
}

// === impl Identity ===

impl Identity {
    /// The identity of an instance configured with `instance_id` and serving on `listen`.
    pub fn new(instance_id: Option<&str>, listen: &str) -> Identity {
        let instance_id = match instance_id {
            Some(id) => id.to_owned(),
            None => format!("{}/{listen}", host_name()),
        };
        Identity {
            instance_id,
            started_at: SystemTime::now(),
        }
    }
}

// === impl Shared ===

impl Shared {
    /// State for the instance named `instance_id`.
    pub fn new(instance_id: &str) -> Shared {
        Shared {
            instance_id: instance_id.to_owned(),
            sessions: AtomicUsize::new(0),
            checksum: ArcSwap::from_pointee(String::new()),
            reload_error: ArcSwapOption::empty(),
            beat_now: Notify::new(),
            db_rules_version: AtomicU64::new(0),
        }
    }

    /// Counts a session until the returned guard is dropped.
    pub fn session(self: &Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    /// The `pgshim.rules` version in force; 0 in file mode.
    pub fn db_rules_version(&self) -> u64 {
        self.db_rules_version.load(Ordering::Relaxed)
    }

    /// The rules version for the registry: the `pgshim.rules` version in
    /// database mode, else `local` (this instance's own reload counter).
    pub fn reported_rules_version(&self, local: u64) -> u64 {
        match self.db_rules_version() {
            0 => local,
            db => db,
        }
    }

    /// Records the text of the config file now in force.
    pub fn set_config_text(&self, text: &str) {
        self.checksum.store(Arc::new(checksum(text)));
    }
}

/// One open session, counted in [`Shared::sessions`].
#[derive(Debug)]
pub struct SessionGuard(Arc<Shared>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// FNV-1a (64 bits) of the config text, in hex: enough to tell instances
/// running different files apart, not a security measure.
pub fn checksum(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The database whose registry speaks for `rule`: its own, else the control database.
pub fn registry_database<'a>(rule: &'a Rule, control: &'a str) -> &'a str {
    rule.database.as_deref().unwrap_or(control)
}

/// Every database an instance with `rules` registers in.
pub fn registry_databases(rules: &RuleSet, control: &str) -> BTreeSet<String> {
    let mut dbs: BTreeSet<String> = rules
        .rules()
        .iter()
        .map(|r| registry_database(r, control).to_owned())
        .collect();
    if dbs.is_empty() {
        // An instance without rules still shows up in the fleet.
        dbs.insert(control.to_owned());
    }
    dbs
}

/// The phases to report for `rules`, carrying each rule's `migrate_since_ms`
/// over from `previous` while it stays in migrate or contract.
pub fn next_phases(previous: &Phases, rules: &[(String, Phase)], now_ms: u64) -> Phases {
    rules
        .iter()
        .map(|(id, phase)| {
            let since = match phase {
                Phase::Expand => None,
                Phase::Migrate | Phase::Contract => Some(
                    previous
                        .get(id)
                        .and_then(|p| p.migrate_since_ms)
                        .unwrap_or(now_ms),
                ),
            };
            let entry = RulePhase {
                phase: phase.to_string(),
                migrate_since_ms: since,
                writes_old_in: Vec::new(),
            };
            (id.clone(), entry)
        })
        .collect()
}

/// What Postgres said, for a log line: tokio-postgres shows a server error
/// as just "db error", which hides causes such as a missing privilege.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub use crate::clock::unix_ms;

/// The answer of `exists_sql`, one boolean built from `to_regclass`.
///
/// # Errors
/// What Postgres said.
pub(crate) async fn tables_exist(
    client: &tokio_postgres::Client,
    exists_sql: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(exists_sql, &[]).await?.get(0))
}

/// Runs `schema_sql` (`CREATE … IF NOT EXISTS` statements) unless `exists_sql`
/// (one boolean) says the tables are already there: `IF NOT EXISTS` still
/// needs CREATE on the database, which a login that only writes tables an
/// administrator made for it lacks. Writers creating them at once: the loser
/// sees a unique violation and tries again.
///
/// # Errors
/// What Postgres said, e.g. when the login may not create a schema.
pub(crate) async fn create_if_missing(
    client: &tokio_postgres::Client,
    exists_sql: &str,
    schema_sql: &str,
) -> Result<(), tokio_postgres::Error> {
    if tables_exist(client, exists_sql).await? {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        match client.batch_execute(schema_sql).await {
            Err(e) if attempt < 2 && e.code().is_some_and(|c| c.code() == "23505") => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn host_name() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::RuleConfig;

    fn rules(text: &str) -> RuleSet {
        #[derive(serde::Deserialize)]
        struct File {
            rule: Vec<RuleConfig>,
        }
        let file: File = toml::from_str(text).unwrap();
        RuleSet::from_configs(&file.rule).unwrap()
    }

    #[test]
    fn registry_in_named_databases_and_control_for_the_rest() {
        let named = "[[rule]]\ndatabase = \"app\"\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"expand\"\n";
        let unnamed = "[[rule]]\ntable = \"u\"\nold = \"a\"\nnew = \"b\"\nphase = \"expand\"\n";
        let dbs = |text: &str| -> Vec<String> {
            registry_databases(&rules(text), "ctl")
                .into_iter()
                .collect()
        };
        assert_eq!(dbs(named), ["app"]);
        assert_eq!(dbs(&format!("{named}{unnamed}")), ["app", "ctl"]);
        let none = RuleSet::from_configs(&[]).unwrap();
        assert_eq!(
            registry_databases(&none, "ctl")
                .into_iter()
                .collect::<Vec<_>>(),
            ["ctl"]
        );
    }

    #[test]
    fn migrate_since_survives_contract_and_resets_in_expand() {
        let at = |prev: &Phases, phase, now| next_phases(prev, &[("r".into(), phase)], now);
        let p = at(&Phases::new(), Phase::Expand, 1);
        assert_eq!(p["r"].migrate_since_ms, None);
        let p = at(&p, Phase::Migrate, 5);
        assert_eq!(p["r"].migrate_since_ms, Some(5));
        let p = at(&p, Phase::Contract, 9);
        assert_eq!(
            (p["r"].phase.as_str(), p["r"].migrate_since_ms),
            ("contract", Some(5))
        );
        let p = at(&p, Phase::Migrate, 12);
        assert_eq!(p["r"].migrate_since_ms, Some(5));
        let p = at(&p, Phase::Expand, 14);
        let p = at(&p, Phase::Migrate, 20);
        assert_eq!(p["r"].migrate_since_ms, Some(20));
    }

    #[test]
    fn checksum_is_stable_and_tells_texts_apart() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), checksum("a"));
        assert_ne!(
            checksum("phase = \"migrate\""),
            checksum("phase = \"contract\"")
        );
    }

    #[test]
    fn configured_instance_id_wins() {
        assert_eq!(
            Identity::new(Some("web-1"), "0.0.0.0:6432").instance_id,
            "web-1"
        );
        let default = Identity::new(None, "10.0.0.1:6432").instance_id;
        assert!(default.ends_with("/10.0.0.1:6432"), "{default}");
    }
}
