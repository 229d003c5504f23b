//! The rules in force: validated, versioned, and swapped atomically, with the
//! catalog of each database read once per version, when the first session to
//! that database needs it.
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::catalog;
use crate::config::{Config, OnUnrewritable, UpstreamConfig};
use crate::net::upstream::Upstream;
use crate::rewrite::{Catalog, RewriteCache, RuleError, RuleSet};

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
    databases: DashMap<String, Arc<OnceCell<Arc<DbRules>>>>,
}

/// The rules that apply in one database, with what the rewriter needs.
pub struct DbRules {
    /// The rules for this database.
    pub rules: RuleSet,
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
    /// databases rules name explicitly.
    ///
    /// # Errors
    /// [`ActivateError`] naming the rule and the problem.
    pub async fn load(config: &Config, upstream: &Upstream) -> Result<LiveRules, ActivateError> {
        let version = RulesVersion::load(config, upstream, 1).await?;
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
}

// === impl RulesVersion ===

impl RulesVersion {
    /// Validates and checks rules; see [`LiveRules::load`].
    ///
    /// # Errors
    /// [`ActivateError`] naming the rule and the problem.
    pub async fn load(
        config: &Config,
        upstream: &Upstream,
        number: u64,
    ) -> Result<RulesVersion, ActivateError> {
        let rules = RuleSet::from_configs(&config.rule)?;
        let version = RulesVersion {
            number,
            loaded_at: SystemTime::now(),
            rules,
            on_unrewritable: config.on_unrewritable,
            databases: DashMap::new(),
        };
        let mut named: Vec<&str> = version
            .rules
            .rules()
            .iter()
            .filter_map(|r| r.database.as_deref())
            .collect();
        named.sort_unstable();
        named.dedup();
        for database in named {
            let db = version
                .for_database(database, &config.upstream, upstream)
                .await;
            if let Err(reason) = &db.state {
                return Err(ActivateError::Catalog {
                    database: database.to_owned(),
                    reason: reason.clone(),
                });
            }
        }
        Ok(version)
    }

    /// The rules for `database`, reading its catalog on first use. A catalog
    /// that could not be read or checked is not remembered, so the next
    /// session tries again; until then statements that touch the rules'
    /// tables are refused with the reason.
    pub async fn for_database(
        &self,
        database: &str,
        cfg: &UpstreamConfig,
        upstream: &Upstream,
    ) -> Arc<DbRules> {
        let cell = self
            .databases
            .entry(database.to_owned())
            .or_default()
            .clone();
        let rules = || self.rules.for_database(database);
        let loaded = cell
            .get_or_try_init(|| async {
                let rules = rules();
                let catalog = if rules.is_empty() {
                    Catalog::new(Vec::new())
                } else {
                    read_and_check(&rules, database, cfg, upstream).await?
                };
                Ok::<_, String>(Arc::new(DbRules {
                    rules,
                    state: Ok(catalog),
                    cache: RewriteCache::new(CACHE_CAPACITY),
                }))
            })
            .await;
        match loaded {
            Ok(db) => db.clone(),
            Err(reason) => {
                tracing::error!(database, reason = %reason, "rules cannot be used in this database: statements that touch their tables are refused");
                Arc::new(DbRules {
                    rules: rules(),
                    state: Err(reason),
                    cache: RewriteCache::new(1),
                })
            }
        }
    }
}

async fn read_and_check(
    rules: &RuleSet,
    database: &str,
    cfg: &UpstreamConfig,
    upstream: &Upstream,
) -> Result<Catalog, String> {
    let catalog = catalog::read(cfg, upstream, database, &rules.tables())
        .await
        .map_err(|e| e.to_string())?;
    rules
        .check_catalog(&catalog)
        .map_err(|e| format!("{e} (in database {database:?})"))?;
    Ok(catalog)
}
