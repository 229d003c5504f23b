//! The tables themselves: created on first use, and read whole in one
//! statement, so the version and the rows come from one snapshot.
use tokio_postgres::Client;

use super::{Stored, StoredRule};

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

/// Creates the schema and tables if needed.
///
/// # Errors
/// What Postgres said, e.g. when the login may not create a schema.
pub async fn ensure(client: &Client) -> Result<(), tokio_postgres::Error> {
    crate::fleet::create_if_missing(client, EXISTS_SQL, SCHEMA_SQL).await
}

/// The table's content; `None` when nothing was ever pushed.
///
/// # Errors
/// What Postgres said.
pub async fn read(client: &Client) -> Result<Option<Stored>, tokio_postgres::Error> {
    if !crate::fleet::tables_exist(client, EXISTS_SQL).await? {
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
    if !crate::fleet::tables_exist(client, EXISTS_SQL).await? {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM pgshim.rules_version", &[])
        .await?;
    Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

const EXISTS_SQL: &str = "SELECT to_regclass('pgshim.rules') IS NOT NULL \
    AND to_regclass('pgshim.rules_version') IS NOT NULL";
