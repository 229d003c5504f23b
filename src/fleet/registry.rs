//! The registry table, `pgshim.instance`: one row per running `pgshim serve`,
//! written by its heartbeat and read by `status` and `plan --apply`.
//!
//! Ages are measured with the database's clock on both sides (a row's
//! `last_beat` is the server's `now()` when written and is compared with the
//! server's `now()` when read), so hosts with skewed clocks still agree on who
//! is stale.
use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio_postgres::Client;

use crate::config::FleetConfig;

/// Creates the schema and the table; safe to run concurrently and repeatedly.
const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS pgshim;
CREATE TABLE IF NOT EXISTS pgshim.instance (
    instance_id     text PRIMARY KEY,
    version         text NOT NULL,
    started_at      timestamptz NOT NULL,
    rules_version   bigint NOT NULL,
    config_checksum text NOT NULL,
    phases          jsonb NOT NULL,
    sessions        bigint NOT NULL,
    last_reload_error text,
    last_beat       timestamptz NOT NULL DEFAULT now(),
    usage           jsonb
);";

/// Whether the registry table has the `usage` column (tables made by older pgshim
/// versions lack it).
const HAS_USAGE_SQL: &str = "\
SELECT EXISTS (SELECT 1 FROM pg_attribute \
               WHERE attrelid = 'pgshim.instance'::regclass AND attname = 'usage' \
                 AND NOT attisdropped)";

/// Adds the `usage` column to a table made by an older pgshim version.
const ADD_USAGE_SQL: &str = "ALTER TABLE pgshim.instance ADD COLUMN IF NOT EXISTS usage jsonb";

const BEAT_SQL: &str = "\
INSERT INTO pgshim.instance (instance_id, version, started_at, rules_version, config_checksum, \
                             phases, sessions, last_reload_error, last_beat) \
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, now()) \
ON CONFLICT (instance_id) DO UPDATE SET version = EXCLUDED.version, \
    started_at = EXCLUDED.started_at, rules_version = EXCLUDED.rules_version, \
    config_checksum = EXCLUDED.config_checksum, phases = EXCLUDED.phases, \
    sessions = EXCLUDED.sessions, last_reload_error = EXCLUDED.last_reload_error, \
    last_beat = now()";

/// [`BEAT_SQL`] that also writes the usage report.
const BEAT_USAGE_SQL: &str = "\
INSERT INTO pgshim.instance (instance_id, version, started_at, rules_version, config_checksum, \
                             phases, sessions, last_reload_error, usage, last_beat) \
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9::text::jsonb, now()) \
ON CONFLICT (instance_id) DO UPDATE SET version = EXCLUDED.version, \
    started_at = EXCLUDED.started_at, rules_version = EXCLUDED.rules_version, \
    config_checksum = EXCLUDED.config_checksum, phases = EXCLUDED.phases, \
    sessions = EXCLUDED.sessions, last_reload_error = EXCLUDED.last_reload_error, \
    usage = EXCLUDED.usage, last_beat = now()";

const READ_SQL: &str = "\
SELECT instance_id, version, started_at::text, rules_version, config_checksum, phases::text, \
       sessions, last_beat::text, \
       (extract(epoch FROM now() - last_beat) * 1000)::bigint, last_reload_error, \
       (to_jsonb(i) -> 'usage')::text \
FROM pgshim.instance i ORDER BY instance_id";

/// The phase one instance has in force for one rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RulePhase {
    /// expand, migrate or contract.
    pub phase: String,
    /// Since when (Unix ms, this instance's clock) the rule has been in migrate
    /// or contract without stepping back to expand; absent in expand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_since_ms: Option<u64>,
    /// Databases where the instance, with the rule in contract, still writes
    /// the old columns (their catalog is held, the columns are there and not
    /// retiring: `super::retire`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes_old_in: Vec<String>,
}

/// Rule id -> phase in force.
pub type Phases = BTreeMap<String, RulePhase>;

/// What a heartbeat writes.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    /// The instance's id.
    pub instance_id: &'a str,
    /// pgshim's version.
    pub version: &'a str,
    /// When the instance started.
    pub started_at: SystemTime,
    /// The rules version in force.
    pub rules_version: u64,
    /// Checksum of the config file in force.
    pub config_checksum: &'a str,
    /// Every rule's phase in force.
    pub phases: &'a Phases,
    /// Client sessions open.
    pub sessions: usize,
    /// Why the last reload changed nothing, unless a later one succeeded.
    pub last_reload_error: Option<&'a str>,
    /// Per rule, which shapes clients used (`crate::usage::Report` as JSON); written
    /// only where the table has the column.
    pub usage: Option<&'a str>,
}

/// Whether a row can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Beat within `stale_after_ms`.
    Live,
    /// Missed beats, but not yet forgotten: it may still be serving.
    Stale,
}

/// One registry row, as read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Instance {
    /// The instance's id.
    pub instance_id: String,
    /// pgshim's version.
    pub version: String,
    /// When it started.
    pub started_at: String,
    /// Its rules version.
    pub rules_version: i64,
    /// Checksum of its config file.
    pub config_checksum: String,
    /// Its phase per rule.
    pub phases: Phases,
    /// Client sessions it had open at the last beat.
    pub sessions: i64,
    /// Why its last reload changed nothing, unless a later one succeeded.
    pub last_reload_error: Option<String>,
    /// Which shapes of each rule its clients used, when it reports them.
    pub usage: Option<crate::usage::Report>,
    /// When it last beat.
    pub last_beat: String,
    /// Milliseconds since its last beat (database clock).
    pub age_ms: i64,
    /// Live or stale.
    pub liveness: Liveness,
}

// === impl Instance ===

#[cfg(test)]
impl Instance {
    /// A registry row for unit tests: `id` reporting `phases` (rule, phase,
    /// migrate since) at `rules_version`, everything else empty.
    pub(crate) fn for_test(
        id: &str,
        rules_version: i64,
        phases: &[(&str, &str, Option<u64>)],
        liveness: Liveness,
    ) -> Instance {
        let phases = phases
            .iter()
            .map(|(rule, phase, since)| {
                let entry = RulePhase {
                    phase: (*phase).into(),
                    migrate_since_ms: *since,
                    writes_old_in: Vec::new(),
                };
                ((*rule).to_owned(), entry)
            })
            .collect();
        Instance {
            instance_id: id.into(),
            version: String::new(),
            started_at: String::new(),
            rules_version,
            config_checksum: String::new(),
            phases,
            sessions: 0,
            last_reload_error: None,
            usage: None,
            last_beat: String::new(),
            age_ms: 0,
            liveness,
        }
    }
}

/// How a row of age `age_ms` counts; `None` once it is to be ignored.
pub fn liveness(age_ms: i64, cfg: &FleetConfig) -> Option<Liveness> {
    let age = u64::try_from(age_ms).unwrap_or(0);
    if age > cfg.forget_after_ms {
        None
    } else if age > cfg.stale_after_ms {
        Some(Liveness::Stale)
    } else {
        Some(Liveness::Live)
    }
}

/// Creates the `pgshim` schema and the registry table if needed.
///
/// # Errors
/// What Postgres said, e.g. when the login may not create a schema.
pub async fn ensure(client: &Client) -> Result<(), tokio_postgres::Error> {
    super::create_if_missing(client, EXISTS_SQL, SCHEMA_SQL).await
}

/// Adds the `usage` column when the table lacks it (made by an older pgshim).
///
/// # Returns
/// Whether the table has the column now: `false` when it could not be added (the login
/// does not own the table), and heartbeats then leave usage out.
///
/// # Errors
/// What Postgres said when the table cannot be read.
pub async fn ensure_usage_column(client: &Client) -> Result<bool, tokio_postgres::Error> {
    if has_usage_column(client).await? {
        return Ok(true);
    }
    if let Err(e) = client.batch_execute(ADD_USAGE_SQL).await {
        tracing::warn!(error = %e, "cannot add column usage to pgshim.instance (its owner can: {ADD_USAGE_SQL}); this instance's usage of old and new column names is left out of the registry");
        return Ok(false);
    }
    has_usage_column(client).await
}

async fn has_usage_column(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(HAS_USAGE_SQL, &[]).await?.get(0))
}

const EXISTS_SQL: &str = "SELECT to_regclass('pgshim.instance') IS NOT NULL";

/// Writes this instance's row and removes rows older than `forget_after_ms`.
///
/// # Errors
/// What Postgres said.
pub async fn beat(
    client: &Client,
    beat: &Beat<'_>,
    forget_after_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let phases = serde_json::to_string(beat.phases).unwrap_or_else(|_| "{}".into());
    let rules_version = i64::try_from(beat.rules_version).unwrap_or(i64::MAX);
    let sessions = i64::try_from(beat.sessions).unwrap_or(i64::MAX);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &beat.instance_id,
        &beat.version,
        &beat.started_at,
        &rules_version,
        &beat.config_checksum,
        &phases,
        &sessions,
        &beat.last_reload_error,
        &beat.usage,
    ];
    match beat.usage {
        Some(_) => client.execute(BEAT_USAGE_SQL, &params).await?,
        None => client.execute(BEAT_SQL, &params[..8]).await?,
    };
    let forget = i64::try_from(forget_after_ms).unwrap_or(i64::MAX);
    client
        .execute(
            "DELETE FROM pgshim.instance WHERE last_beat < now() - $1::bigint * interval '1 millisecond'",
            &[&forget],
        )
        .await?;
    Ok(())
}

/// Removes this instance's row (clean shutdown).
///
/// # Errors
/// What Postgres said.
pub async fn deregister(client: &Client, instance_id: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM pgshim.instance WHERE instance_id = $1",
            &[&instance_id],
        )
        .await
        .map(|_| ())
}

/// The rows not yet forgotten, by instance id; none when the table does not exist.
///
/// # Errors
/// What Postgres said.
pub async fn read(
    client: &Client,
    cfg: &FleetConfig,
) -> Result<Vec<Instance>, tokio_postgres::Error> {
    if !super::tables_exist(client, EXISTS_SQL).await? {
        return Ok(Vec::new());
    }
    let rows = client.query(READ_SQL, &[]).await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let age_ms: i64 = r.get(8);
            let liveness = liveness(age_ms, cfg)?;
            let phases: String = r.get(5);
            let usage: Option<String> = r.get(10);
            Some(Instance {
                instance_id: r.get(0),
                version: r.get(1),
                started_at: r.get(2),
                rules_version: r.get(3),
                config_checksum: r.get(4),
                // A row this version cannot read reports no rules rather than failing.
                phases: serde_json::from_str(&phases).unwrap_or_default(),
                sessions: r.get(6),
                last_reload_error: r.get(9),
                // A report this version cannot read counts as none.
                usage: usage.and_then(|u| serde_json::from_str(&u).ok()),
                last_beat: r.get(7),
                age_ms,
                liveness,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_turn_stale_then_are_forgotten() {
        let cfg = FleetConfig::default();
        assert_eq!(liveness(1_500, &cfg), Some(Liveness::Live));
        assert_eq!(liveness(-20, &cfg), Some(Liveness::Live));
        assert_eq!(liveness(10_001, &cfg), Some(Liveness::Stale));
        assert_eq!(liveness(60_001, &cfg), None);
    }

    #[test]
    fn phases_round_trip_without_since_in_expand() {
        let mut phases = Phases::new();
        phases.insert(
            "r".into(),
            RulePhase {
                phase: "expand".into(),
                migrate_since_ms: None,
                writes_old_in: Vec::new(),
            },
        );
        let text = serde_json::to_string(&phases).unwrap();
        assert_eq!(text, r#"{"r":{"phase":"expand"}}"#);
        assert_eq!(serde_json::from_str::<Phases>(&text).unwrap(), phases);
    }
}
