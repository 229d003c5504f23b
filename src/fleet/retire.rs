//! Retiring the old columns before the contract step drops them: every pgshim
//! stops writing them first, so no statement fails when they go.
//!
//! In contract pgshim still mirrors writes into the old columns, so that
//! stepping back to migrate is exact. Postgres resolves a statement's columns
//! when it runs it, so a write rewritten before the drop and run after it fails
//! with `42703` (one per busy session on every instance), and so does the
//! first write after the drop on an instance that has not noticed it yet. So
//! `plan --phase contract --apply` first writes a row to `pgshim.retiring` in
//! the table's database ([`mark`]). Every instance reads that table with the
//! catalog (compared every 5 s, `crate::active::watch`) and, for a rule it has
//! in contract, treats the listed old columns as gone, exactly as after the
//! drop: writes set the new columns only, and old names still map to them. Its
//! registry row then no longer lists the database among those where it writes
//! the old columns ([`super::registry::RulePhase::writes_old_in`]). The drop
//! runs once every live instance that reports the rule has beaten since the
//! row was written without listing the database ([`waiting_for`]). The row is
//! removed once the drop has run, or at once when it does not run.
use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::registry::{Instance, Liveness};
use crate::active::RulesVersion;
use crate::rewrite::Phase;

/// Creates the table; readable by every login, since each pgshim reads it
/// with its own.
const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS pgshim;
CREATE TABLE IF NOT EXISTS pgshim.retiring (
    rule        text PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    columns     text[] NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA pgshim TO PUBLIC;
GRANT SELECT ON pgshim.retiring TO PUBLIC;";

const EXISTS_SQL: &str = "SELECT to_regclass('pgshim.retiring') IS NOT NULL";

/// Whether this login can read the table: asked through the catalog, so a
/// missing table or privilege is an answer rather than an ERROR in
/// Postgres's log at every comparison of catalogs.
pub const READABLE_SQL: &str = "\
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = 'pgshim' AND c.relname = 'retiring' AND c.relkind = 'r' \
                 AND pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
                 AND pg_catalog.has_table_privilege(c.oid, 'SELECT'))";

/// Every retiring rule: id, schema, table, columns.
pub const READ_SQL: &str =
    "SELECT rule, schema_name, table_name, columns FROM pgshim.retiring ORDER BY rule";

/// One row of `pgshim.retiring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retiring {
    /// The rule's id.
    pub rule: String,
    /// Its table's schema.
    pub schema: String,
    /// Its table.
    pub table: String,
    /// The old columns about to be dropped.
    pub columns: Vec<String>,
}

/// Writes the row for `retiring` (replacing an earlier one) in the database
/// `client` is connected to.
///
/// # Returns
/// When it was written, as the database's clock prints it, for [`fresh`].
///
/// # Errors
/// What Postgres said, e.g. when the login may not create the table.
pub async fn mark(client: &Client, retiring: &Retiring) -> Result<String, tokio_postgres::Error> {
    super::create_if_missing(client, EXISTS_SQL, SCHEMA_SQL).await?;
    let row = client
        .query_one(
            "INSERT INTO pgshim.retiring (rule, schema_name, table_name, columns) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rule) DO UPDATE SET schema_name = EXCLUDED.schema_name, \
                 table_name = EXCLUDED.table_name, columns = EXCLUDED.columns, since = now() \
             RETURNING since::text",
            &[
                &retiring.rule,
                &retiring.schema,
                &retiring.table,
                &retiring.columns,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Removes the row of `rule`, if any.
///
/// # Errors
/// What Postgres said.
pub async fn unmark(client: &Client, rule: &str) -> Result<(), tokio_postgres::Error> {
    if !super::tables_exist(client, EXISTS_SQL).await? {
        return Ok(());
    }
    client
        .execute("DELETE FROM pgshim.retiring WHERE rule = $1", &[&rule])
        .await
        .map(|_| ())
}

/// When the row of `rule` was written, if there is one this login can read.
///
/// # Errors
/// What Postgres said.
pub async fn since(client: &Client, rule: &str) -> Result<Option<String>, tokio_postgres::Error> {
    if !client.query_one(READABLE_SQL, &[]).await?.get::<_, bool>(0) {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT since::text FROM pgshim.retiring WHERE rule = $1",
            &[&rule],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Ids of the instances in the registry `client` reads that have beaten since
/// `since` (a timestamp as [`mark`] returned it; the registry and the table
/// are in one cluster, so one clock).
///
/// # Errors
/// What Postgres said.
pub async fn fresh(
    client: &Client,
    since: &str,
) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT instance_id FROM pgshim.instance WHERE last_beat > $1::text::timestamptz",
            &[&since],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The instances that may still write the old columns of `rule` in
/// `database`, each with why: it reports the rule and either has not beaten
/// since the row was written (`fresh` lacks it), is stale, or still lists the
/// database. Empty once the drop can run.
pub fn waiting_for(
    rule: &str,
    database: &str,
    instances: &[Instance],
    fresh: &BTreeSet<String>,
) -> BTreeMap<String, &'static str> {
    instances
        .iter()
        .filter_map(|i| {
            let phase = i.phases.get(rule)?;
            let why = if i.liveness == Liveness::Stale {
                "missed its heartbeats"
            } else if !fresh.contains(&i.instance_id) {
                "has not reported since"
            } else if phase.writes_old_in.iter().any(|d| d == database) {
                "still writes the old columns"
            } else {
                return None;
            };
            Some((i.instance_id.clone(), why))
        })
        .collect()
}

/// Per rule in contract, the databases where `version` writes its old
/// columns: those whose catalog it holds with the columns there and not
/// retiring, and those in `lagging`, where a session busy with older rules
/// may still write them (see `crate::session::SessionBoard`). A database whose
/// catalog is not held has no session to write there; a session that comes
/// reads the catalog, and the retiring row, afresh.
pub fn writes_old_in(
    version: &RulesVersion,
    lagging: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (database, held) in version.catalogs() {
        let Ok(catalog) = &held.state else {
            continue;
        };
        for rule in held.rules.rules() {
            let Some(table) = catalog.table(&rule.schema, &rule.table) else {
                continue;
            };
            let writes_old =
                lagging.contains(&database) || rule.old.iter().any(|o| table.column(o).is_some());
            if rule.phase == Phase::Contract && writes_old {
                found
                    .entry(rule.id.clone())
                    .or_default()
                    .push(database.clone());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, writes_old_in: &[&str], liveness: Liveness) -> Instance {
        let mut i = Instance::for_test(id, 1, &[("r", "contract", Some(1))], liveness);
        if let Some(p) = i.phases.get_mut("r") {
            p.writes_old_in = writes_old_in.iter().map(|d| (*d).to_owned()).collect();
        }
        i
    }

    #[test]
    fn waits_for_instances_that_report_the_rule_until_they_stop_writing_old_columns() {
        let fresh: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let instances = [
            instance("a", &[], Liveness::Live),
            instance("b", &["app"], Liveness::Live),
            instance("c", &["other"], Liveness::Live),
            instance("d", &[], Liveness::Live),
            instance("e", &[], Liveness::Stale),
            Instance::for_test("f", 1, &[("q", "contract", None)], Liveness::Live),
        ];
        let waiting = waiting_for("r", "app", &instances, &fresh);
        assert_eq!(
            waiting.into_iter().collect::<Vec<_>>(),
            [
                ("b".to_owned(), "still writes the old columns"),
                ("d".to_owned(), "has not reported since"),
                ("e".to_owned(), "missed its heartbeats"),
            ]
        );
        assert!(waiting_for("r", "app", &instances[..1], &fresh).is_empty());
    }
}
