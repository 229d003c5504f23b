//! The rules in force: validated, versioned, and swapped atomically, with the
//! catalog of each database read once per version, when the first session to
//! that database needs it (state per database is bounded, see [`databases`]).
//!
//! pgshim starts while Postgres is down: rules whose catalog check could not
//! reach Postgres stay pending, statements on their tables are refused, and
//! [`activate_pending`] retries in the background until they pass.
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{OnUnrewritable, UpstreamConfig};
use crate::introspect::{self, CatalogError};
use crate::net::upstream::Upstream;
use crate::rewrite::{Catalog, RewriteCache, RuleError, RuleSet};
use crate::settings::Settings;

pub mod databases;
mod pending;
mod watch;

pub use pending::activate_pending;
pub use watch::{watch_catalogs, CHECK_INTERVAL};

use databases::{Databases, Failure, FailureKind, Loaded, Slot};

/// Rewrites cached per database and rules version.
const CACHE_CAPACITY: usize = 4096;

/// Rules that cannot be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A rule is invalid, or the physical schema cannot serve its phase.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The catalog could not be read.
    #[error("cannot activate rules in database {database:?}: {reason}")]
    Catalog {
        /// The database.
        database: String,
        /// Why.
        reason: String,
    },
}

/// One version of the rules.
pub struct RulesVersion {
    /// Bumped by every successful load.
    pub number: u64,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// All rules, validated.
    pub rules: RuleSet,
    /// What to do with statements that cannot be rewritten.
    pub on_unrewritable: OnUnrewritable,
    /// The settings these rules were checked with; catalogs are read with
    /// their login.
    pub settings: Arc<Settings>,
    databases: Databases,
}

/// The rules that apply in one database, with what the rewriter needs.
pub struct DbRules {
    /// The rules for this database.
    pub rules: RuleSet,
    /// Rules for every database left out here because their table is not
    /// here (see [`RuleSet::present_in`]): DDL naming it is watched for.
    pub left_out: RuleSet,
    /// Catalog of their tables, or why the rules cannot be used here.
    pub state: Result<Catalog, String>,
    /// Rewrites of this database's statements under this version.
    pub cache: RewriteCache,
}

/// The current rules, swapped whole on reload.
pub struct LiveRules {
    current: ArcSwap<RulesVersion>,
}

// === impl LiveRules ===

impl LiveRules {
    /// Validates `config`'s rules and checks each against the catalog of the
    /// databases rules name explicitly. A database whose check cannot reach
    /// Postgres is left pending (see [`RulesVersion::pending`]) rather than
    /// failing, so pgshim can start before Postgres.
    ///
    /// # Errors
    /// [`ActivateError`] naming the rule and the problem.
    pub async fn load(settings: Arc<Settings>) -> Result<LiveRules, ActivateError> {
        let version = RulesVersion::new(settings, 1)?;
        for database in version.named() {
            let loaded = version.check(&database).await;
            match (&loaded.failure, &loaded.db.state) {
                (Some(f), Err(reason)) if f.kind == FailureKind::Unreachable => {
                    tracing::warn!(database, reason = %reason, "Postgres unreachable: rules for this database wait for their catalog check, retried in the background");
                }
                (_, Err(reason)) => {
                    return Err(ActivateError::Catalog {
                        database,
                        reason: reason.clone(),
                    })
                }
                (_, Ok(_)) => {}
            }
        }
        Ok(LiveRules {
            current: ArcSwap::from_pointee(version),
        })
    }

    /// The version in force; a session holds it until the end of its transaction.
    pub fn current(&self) -> Arc<RulesVersion> {
        self.current.load_full()
    }

    /// The number of the version in force, without taking a reference to it.
    pub fn current_number(&self) -> u64 {
        self.current.load().number
    }

    /// Puts `version` in force.
    pub fn store(&self, version: RulesVersion) {
        self.current.store(Arc::new(version));
    }

    /// Puts `version` in force if `old` still is.
    ///
    /// # Returns
    /// Whether it was put in force.
    pub fn replace(&self, old: &Arc<RulesVersion>, version: RulesVersion) -> bool {
        let previous = self.current.compare_and_swap(old, Arc::new(version));
        Arc::ptr_eq(&previous, old)
    }
}

// === impl RulesVersion ===

impl RulesVersion {
    /// Validates and checks rules; see [`LiveRules::load`]. Here a database
    /// whose check cannot reach Postgres is an error too.
    ///
    /// # Errors
    /// [`ActivateError`] naming the rule and the problem.
    pub async fn load(settings: Arc<Settings>, number: u64) -> Result<RulesVersion, ActivateError> {
        let version = RulesVersion::new(settings, number)?;
        for database in version.named() {
            let loaded = version.check(&database).await;
            if let Err(reason) = &loaded.db.state {
                return Err(ActivateError::Catalog {
                    database,
                    reason: reason.clone(),
                });
            }
        }
        Ok(version)
    }

    /// Checks these rules in every database `old` serves (has state for)
    /// where some of them apply, keeping the results for sessions.
    ///
    /// # Errors
    /// [`ActivateError::Catalog`] for the first database where the check
    /// fails, unless `old`'s rules had already failed there or the database
    /// no longer exists.
    pub async fn check_served(&self, old: &RulesVersion) -> Result<(), ActivateError> {
        let mut served = old.databases.names();
        served.sort_unstable();
        for database in served {
            if self.rules.for_database(&database).is_empty()
                || self.databases.get(&database).is_some()
            {
                continue;
            }
            let loaded = self.check(&database).await;
            let (Some(failure), Err(reason)) = (loaded.failure, &loaded.db.state) else {
                continue;
            };
            if failure.kind == FailureKind::NoDatabase {
                tracing::warn!(
                    database,
                    "database no longer exists; not checking the new rules there"
                );
                continue;
            }
            // Old rules that could not be used there either do not make the
            // new ones worse; Postgres being out of reach proves nothing.
            let failed_before = old
                .databases
                .get(&database)
                .and_then(|slot| slot.current())
                .and_then(|before| before.failure)
                .is_some_and(|before| before.kind == FailureKind::Invalid);
            if failed_before && failure.kind == FailureKind::Invalid {
                tracing::warn!(database, reason = %reason, "rules still cannot be used in this database (nor could the previous ones)");
                continue;
            }
            return Err(ActivateError::Catalog {
                database,
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// Databases named by rules whose catalog check has not passed, with why.
    pub fn pending(&self) -> Vec<(String, String)> {
        self.named()
            .into_iter()
            .filter_map(|database| {
                let why = match self.databases.get(&database).and_then(|s| s.current()) {
                    None => "catalog not checked yet".to_owned(),
                    Some(loaded) => loaded.db.state.as_ref().err()?.clone(),
                };
                Some((database, why))
            })
            .collect()
    }

    /// The databases whose catalog this version has read successfully, with it.
    pub fn catalogs(&self) -> Vec<(String, Arc<DbRules>)> {
        self.databases
            .names()
            .into_iter()
            .filter_map(|name| {
                let loaded = self.databases.get(&name)?.current()?;
                // Rules left out for a missing table count: its creation is news.
                (loaded.failure.is_none() && !self.rules.for_database(&name).is_empty())
                    .then_some((name, loaded.db))
            })
            .collect()
    }

    /// Sets the rules gauges: the version, and each rule's phase.
    pub fn publish_metrics(&self) {
        let m = crate::metrics::metrics();
        m.rules_version.set(self.number as f64);
        // A new version starts with empty rewrite caches.
        m.cache_size.set(0.0);
        for rule in self.rules.rules() {
            crate::metrics::rule_phase(&rule.id, f64::from(rule.phase.rank()));
        }
    }

    /// How many databases this version holds state for.
    pub fn databases_held(&self) -> usize {
        self.databases.count()
    }

    /// The rules for `database`, reading its catalog on first use. A read
    /// that failed is remembered for [`databases::FAILURE_TTL`] and then
    /// retried by the next session; until then statements that touch the
    /// rules' tables are refused with the reason.
    pub async fn for_database(&self, database: &str) -> Arc<DbRules> {
        let slot = self.databases.slot(database);
        if let Some(db) = slot.fresh() {
            return db;
        }
        let _loading = slot.loading.lock().await;
        if let Some(db) = slot.fresh() {
            return db;
        }
        self.load_into(&slot, database).await.db
    }

    fn new(settings: Arc<Settings>, number: u64) -> Result<RulesVersion, ActivateError> {
        let config = &settings.config;
        Ok(RulesVersion {
            number,
            loaded_at: SystemTime::now(),
            rules: RuleSet::from_configs(&config.rule)?,
            on_unrewritable: config.on_unrewritable,
            settings: Arc::clone(&settings),
            databases: Databases::default(),
        })
    }

    /// The same rules as a new version, keeping what was read.
    pub(crate) fn successor(&self) -> RulesVersion {
        self.successor_without(None)
    }

    /// The same rules as a new version, keeping what was read except the
    /// state of database `stale`, which is read afresh when next used.
    pub(crate) fn successor_without(&self, stale: Option<&str>) -> RulesVersion {
        let next = RulesVersion {
            number: self.number + 1,
            loaded_at: SystemTime::now(),
            rules: self.rules.clone(),
            on_unrewritable: self.on_unrewritable,
            settings: Arc::clone(&self.settings),
            databases: Databases::default(),
        };
        for database in self.databases.names() {
            if Some(database.as_str()) == stale {
                continue;
            }
            if let Some(loaded) = self.databases.get(&database).and_then(|s| s.current()) {
                if loaded.failure.is_none() {
                    next.databases.slot(&database).store(loaded);
                }
            }
        }
        next
    }

    /// Databases that rules name explicitly, sorted.
    fn named(&self) -> Vec<String> {
        let mut named: Vec<String> = self
            .rules
            .rules()
            .iter()
            .filter_map(|r| r.database.clone())
            .collect();
        named.sort_unstable();
        named.dedup();
        named
    }

    /// Reads and checks `database`'s catalog now, whatever was remembered.
    pub(crate) async fn check(&self, database: &str) -> Loaded {
        let slot = self.databases.slot(database);
        let _loading = slot.loading.lock().await;
        self.load_into(&slot, database).await
    }

    async fn load_into(&self, slot: &Slot, database: &str) -> Loaded {
        let rules = self.rules.for_database(database);
        let settings = &self.settings;
        let checked = if rules.is_empty() {
            Ok((RuleSet::default(), Catalog::new(Vec::new())))
        } else {
            read_and_check(
                &rules,
                database,
                &settings.config.upstream,
                &settings.upstream,
            )
            .await
        };
        // A failure is logged when it is new, not at every retry of it.
        let previous = slot.current().and_then(|l| l.db.state.clone().err());
        let loaded = match checked {
            Ok((in_force, catalog)) => {
                if previous.is_some() {
                    tracing::info!(
                        database,
                        "catalog check passed: rules usable in this database"
                    );
                }
                let left_out = rules.without(&in_force);
                if !left_out.is_empty() {
                    tracing::debug!(
                        database,
                        "rules for every database whose table is not in this one are left out here"
                    );
                }
                Loaded {
                    db: Arc::new(DbRules {
                        rules: in_force,
                        left_out,
                        state: Ok(catalog),
                        cache: RewriteCache::new(CACHE_CAPACITY),
                    }),
                    failure: None,
                }
            }
            Err((kind, reason)) => {
                if previous.as_ref() != Some(&reason) {
                    tracing::error!(database, reason = %reason, retry_after_s = databases::FAILURE_TTL.as_secs(), "rules cannot be used in this database: statements that touch their tables are refused");
                }
                Loaded {
                    db: Arc::new(DbRules {
                        rules,
                        left_out: RuleSet::default(),
                        state: Err(reason),
                        cache: RewriteCache::new(1),
                    }),
                    failure: Some(Failure {
                        at: Instant::now(),
                        kind,
                    }),
                }
            }
        };
        slot.store(loaded.clone());
        loaded
    }
}

/// Reads `database`'s catalog for `rules` and checks them against it.
///
/// # Returns
/// The rules in force there (see [`RuleSet::present_in`]) and the catalog.
pub(crate) async fn read_and_check(
    rules: &RuleSet,
    database: &str,
    cfg: &UpstreamConfig,
    upstream: &Upstream,
) -> Result<(RuleSet, Catalog), (FailureKind, String)> {
    let catalog = introspect::read(cfg, upstream, database, rules)
        .await
        .map_err(|e| (failure_kind(&e), e.to_string()))?;
    let in_force = rules.present_in(&catalog);
    in_force.check_catalog(&catalog).map_err(|e| {
        (
            FailureKind::Invalid,
            format!("{e} (in database {database:?})"),
        )
    })?;
    Ok((in_force, catalog))
}

/// Whether `e` says Postgres is down, starting or shutting down, that the
/// database is gone, or that Postgres refuses pgshim's login or query.
fn failure_kind(e: &CatalogError) -> FailureKind {
    use tokio_postgres::error::SqlState;
    match e {
        CatalogError::Connect(_) => FailureKind::Unreachable,
        CatalogError::Query { source, .. } => match source.code() {
            None => FailureKind::Unreachable,
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => FailureKind::NoDatabase,
            Some(code)
                if [
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    // A client's transaction holds a lock on a mapped table.
                    SqlState::LOCK_NOT_AVAILABLE,
                ]
                .contains(code) =>
            {
                FailureKind::Unreachable
            }
            Some(_) => FailureKind::Invalid,
        },
        _ => FailureKind::Invalid,
    }
}

#[cfg(test)]
mod tests;
