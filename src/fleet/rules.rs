//! The rules table, `pgshim.rules`: with `[rules] source = "database"` every
//! instance takes its `[[rule]]`s from here instead of from its own file, so
//! one write (`pgshim rules push`, `pgshim flip`) changes the whole fleet.
//!
//! A row is one rule's TOML table as pushed, with the phase in a column of its
//! own so `flip` changes it without rewriting the text (the column wins over a
//! `phase` key in the text). `pgshim.rules_version` holds one counter that
//! every write bumps; instances acknowledge a write by reporting that counter
//! as their registry `rules_version` once its rules are in force. Every write
//! is one transaction ending in `NOTIFY pgshim_rules`, which Postgres delivers
//! at commit, so a listener never reads a half-written table.
//!
//! The tables live in the control database (`[fleet] database`).
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{Config, RulesSource};
use crate::net::upstream::Upstream;
use crate::rewrite::{RuleConfig, RuleSet};

/// Added to `connect_timeout_ms` for reading the table at start.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel every write notifies.
pub const CHANNEL: &str = "pgshim_rules";

const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS pgshim;
CREATE TABLE IF NOT EXISTS pgshim.rules (
    id         text PRIMARY KEY,
    position   integer NOT NULL,
    rule       text NOT NULL,
    phase      text NOT NULL CHECK (phase IN ('expand', 'migrate', 'contract')),
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgshim.rules_version (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pgshim.rules_version (one, version) VALUES (true, 0) ON CONFLICT DO NOTHING;";

/// One statement, so the version and the rows come from one snapshot.
const READ_SQL: &str = "\
SELECT v.version, r.id, r.rule, r.phase \
FROM pgshim.rules_version v LEFT JOIN pgshim.rules r ON true \
ORDER BY r.position";

/// Rules that could not be read from or written to the table.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The control database cannot be reached with pgshim's login.
    #[error("cannot connect to the control database {database} ([fleet] database) to read pgshim.rules: {reason}")]
    Connect {
        /// The control database.
        database: String,
        /// Why.
        reason: String,
    },
    /// A statement on the table failed.
    #[error("{what} pgshim.rules in database {database}: {}", super::pg_error(.source))]
    Query {
        /// Reading or writing.
        what: &'static str,
        /// The control database.
        database: String,
        /// What Postgres said.
        source: tokio_postgres::Error,
    },
    /// `[rules] source = "database"` but nothing was pushed yet.
    #[error("[rules] source = \"database\" but pgshim.rules in database {database} holds no rules yet: run `pgshim rules push --config proxy.toml`")]
    Empty {
        /// The control database.
        database: String,
    },
    /// A row (or the file being pushed) is not a valid rule.
    #[error("{0}")]
    Invalid(String),
}

/// One rule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// The rule's id.
    pub id: String,
    /// Its `[[rule]]` table as TOML.
    pub toml: String,
    /// Its phase (wins over a `phase` key in `toml`).
    pub phase: String,
}

/// The table's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The counter every write bumps.
    pub version: u64,
    /// The rules, in the order pushed.
    pub rules: Vec<StoredRule>,
}

// === impl StoredRule ===

impl StoredRule {
    /// The rule's config, with the phase column in force.
    ///
    /// # Errors
    /// Why the stored text is not a `[[rule]]` table.
    pub fn config(&self) -> Result<RuleConfig, String> {
        let mut table: toml::Table = toml::from_str(&self.toml)
            .map_err(|e| format!("rule {} in pgshim.rules is not TOML: {e}", self.id))?;
        table.insert("phase".into(), toml::Value::String(self.phase.clone()));
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| format!("rule {} in pgshim.rules is not a valid rule: {e}", self.id))
    }
}

// === impl Stored ===

impl Stored {
    /// Every rule's config, phases from the phase column.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the rule whose text cannot be read.
    pub fn configs(&self) -> Result<Vec<RuleConfig>, RulesError> {
        self.rules
            .iter()
            .map(|r| r.config().map_err(RulesError::Invalid))
            .collect()
    }

    /// The rules, validated as a file reload validates them.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the rule and the problem.
    pub fn rule_set(&self) -> Result<RuleSet, RulesError> {
        RuleSet::from_configs(&self.configs()?)
            .map_err(|e| RulesError::Invalid(format!("the rules in pgshim.rules are invalid: {e}")))
    }
}

/// The `[[rule]]` tables of a config file's text, validated, as rows to push.
///
/// # Errors
/// Why the text or one of its rules is invalid.
pub fn from_file_text(text: &str) -> Result<Vec<StoredRule>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let tables: Vec<toml::Table> = match doc.get("rule") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::Table(t) => Ok(t.clone()),
                _ => Err("`rule` must be an array of tables ([[rule]])".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`rule` must be an array of tables ([[rule]])".into()),
    };
    let configs: Vec<RuleConfig> = tables
        .iter()
        .map(|t| toml::Value::Table(t.clone()).try_into())
        .collect::<Result<_, toml::de::Error>>()
        .map_err(|e| e.to_string())?;
    let set = RuleSet::from_configs(&configs).map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(tables.len());
    for ((table, config), rule) in tables.iter().zip(&configs).zip(set.rules()) {
        let mut table = table.clone();
        table.remove("phase");
        rows.push(StoredRule {
            id: rule.id.clone(),
            toml: toml::to_string(&table).map_err(|e| e.to_string())?,
            phase: config.phase.clone(),
        });
    }
    Ok(rows)
}

/// Connects to the control database of `config` with pgshim's `[upstream]` login.
///
/// # Errors
/// [`RulesError::Connect`].
pub async fn connect(config: &Config) -> Result<Client, RulesError> {
    let database = &config.fleet.database;
    let failed = |reason: String| RulesError::Connect {
        database: database.clone(),
        reason,
    };
    let upstream = Upstream::from_config(&config.upstream).map_err(|e| failed(e.to_string()))?;
    crate::introspect::connect(&config.upstream, &upstream, database)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Creates the schema and tables if needed.
///
/// # Errors
/// What Postgres said, e.g. when the login may not create a schema.
pub async fn ensure(client: &Client) -> Result<(), tokio_postgres::Error> {
    // CREATE ... IF NOT EXISTS still needs CREATE on the database, which a
    // login that writes the tables an administrator made for it lacks.
    if exists(client).await? {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        match client.batch_execute(SCHEMA_SQL).await {
            // Two writers creating the tables at once: the loser sees a unique violation.
            Err(e) if attempt < 2 && e.code().is_some_and(|c| c.code() == "23505") => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The table's content; `None` when nothing was ever pushed.
///
/// # Errors
/// What Postgres said.
pub async fn read(client: &Client) -> Result<Option<Stored>, tokio_postgres::Error> {
    if !exists(client).await? {
        return Ok(None);
    }
    let rows = client.query(READ_SQL, &[]).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let version = u64::try_from(first.get::<_, i64>(0)).unwrap_or(0);
    if version == 0 {
        return Ok(None);
    }
    let rules = rows
        .iter()
        .filter_map(|r| {
            Some(StoredRule {
                id: r.get::<_, Option<String>>(1)?,
                toml: r.get(2),
                phase: r.get(3),
            })
        })
        .collect();
    Ok(Some(Stored { version, rules }))
}

/// The counter alone (0 when nothing was pushed): the periodic check.
///
/// # Errors
/// What Postgres said.
pub async fn version(client: &Client) -> Result<u64, tokio_postgres::Error> {
    if !exists(client).await? {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM pgshim.rules_version", &[])
        .await?;
    Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

async fn exists(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgshim.rules') IS NOT NULL \
                AND to_regclass('pgshim.rules_version') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Replaces every rule with `rules` in one transaction that notifies.
///
/// # Returns
/// The new version.
///
/// # Errors
/// What Postgres said; nothing is changed then.
pub async fn push(client: &mut Client, rules: &[StoredRule]) -> Result<u64, tokio_postgres::Error> {
    ensure(client).await?;
    let tx = client.transaction().await?;
    let version = next_version(&tx).await?;
    tx.execute("DELETE FROM pgshim.rules", &[]).await?;
    for (position, rule) in rules.iter().enumerate() {
        let position = i32::try_from(position).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO pgshim.rules (id, position, rule, phase, version) VALUES ($1, $2, $3, $4, $5)",
            &[&rule.id, &position, &rule.toml, &rule.phase, &version],
        )
        .await?;
    }
    finish(tx, version).await
}

/// Sets the phase of rule `id` in one transaction that notifies.
///
/// # Returns
/// The new version, or `None` when the table has no rule `id` (nothing changed).
///
/// # Errors
/// What Postgres said; nothing is changed then.
pub async fn flip(
    client: &mut Client,
    id: &str,
    phase: &str,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let version = next_version(&tx).await?;
    let changed = tx
        .execute(
            "UPDATE pgshim.rules SET phase = $2, version = $3, updated_at = now() WHERE id = $1",
            &[&id, &phase, &version],
        )
        .await?;
    if changed == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    finish(tx, version).await.map(Some)
}

/// Locks the counter (writers go one at a time) and returns its next value.
async fn next_version(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT version FROM pgshim.rules_version WHERE one FOR UPDATE",
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>(0) + 1)
}

async fn finish(
    tx: tokio_postgres::Transaction<'_>,
    version: i64,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "UPDATE pgshim.rules_version SET version = $1, updated_at = now() WHERE one",
        &[&version],
    )
    .await?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &version.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(u64::try_from(version).unwrap_or(0))
}

/// Replaces `config`'s `[[rule]]`s with the table's when `[rules] source =
/// "database"`; every other setting stays the file's.
///
/// # Returns
/// The table's version then, `None` in file mode.
///
/// # Errors
/// [`RulesError`]: the table cannot be read, holds nothing, or holds an invalid rule.
pub async fn overlay(config: &mut Config) -> Result<Option<u64>, RulesError> {
    if config.rules.source != RulesSource::Database {
        return Ok(None);
    }
    let database = config.fleet.database.clone();
    let client = connect(config).await?;
    let stored = read(&client)
        .await
        .map_err(|source| RulesError::Query {
            what: "reading",
            database: database.clone(),
            source,
        })?
        .ok_or(RulesError::Empty { database })?;
    config.rule = stored.configs()?;
    Ok(Some(stored.version))
}

/// The config to start serving with: in database mode, the table's rules
/// in place of the file's. When the table cannot be read the file's rules are
/// served (logged) until the listener (`crate::reload::listen`) can apply the table's.
///
/// # Returns
/// The config, and the table's version when its rules are in it.
pub async fn at_start(config: Arc<Config>) -> (Arc<Config>, Option<u64>) {
    if config.rules.source != RulesSource::Database {
        return (config, None);
    }
    let mut with_table = (*config).clone();
    let limit = config.upstream.connect_timeout() + START_TIMEOUT;
    match tokio::time::timeout(limit, overlay(&mut with_table)).await {
        Ok(Ok(version)) => {
            tracing::info!(
                version,
                rules = with_table.rule.len(),
                "rules loaded from pgshim.rules"
            );
            (Arc::new(with_table), version)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "serving the config file's [[rule]]s until pgshim.rules can be read");
            (config, None)
        }
        Err(_) => {
            tracing::warn!("reading pgshim.rules timed out; serving the config file's [[rule]]s until it can be read");
            (config, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "listen = \"127.0.0.1:6432\"\n\
        [[rule]]\nid = \"r1\"\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"expand\"\n\
        [[rule]]\ntable = \"u\"\nold = [\"x\", \"y\"]\nnew = \"z\"\nphase = \"migrate\"\n\
        to_new = { z = \"x || y\" }\nto_old = { x = \"z\", y = \"z\" }\n";

    #[test]
    fn file_rules_round_trip_with_the_phase_column_in_force() {
        let rows = from_file_text(FILE).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "u.x"]);
        assert_eq!(rows[1].phase, "migrate");
        assert!(!rows[0].toml.contains("phase"), "{}", rows[0].toml);
        let mut stored = Stored {
            version: 3,
            rules: rows,
        };
        stored.rules[0].phase = "migrate".into();
        let set = stored.rule_set().unwrap();
        assert_eq!(set.rules()[0].phase.name(), "migrate");
        assert_eq!(set.rules()[1].new, ["z"]);
    }

    #[test]
    fn invalid_rules_are_refused_naming_them() {
        let err = from_file_text(
            "[[rule]]\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"sideways\"\n",
        )
        .unwrap_err();
        assert!(err.contains("sideways"), "{err}");
        let stored = Stored {
            version: 1,
            rules: vec![StoredRule {
                id: "bad".into(),
                toml: "table = 3".into(),
                phase: "expand".into(),
            }],
        };
        let err = stored.rule_set().unwrap_err().to_string();
        assert!(err.contains("rule bad"), "{err}");
        assert!(from_file_text("").unwrap().is_empty());
    }
}
