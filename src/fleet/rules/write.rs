//! The writes, `push` and `flip`: each is one transaction that locks the
//! version counter (writers go one at a time), bumps it, and ends in `NOTIFY`,
//! which Postgres delivers at commit, so a listener never reads a
//! half-written table.
use tokio_postgres::Client;

use super::{table, StoredRule, CHANNEL};

/// Replaces every rule with `rules` in one transaction that notifies.
///
/// # Returns
/// The new version.
///
/// # Errors
/// What Postgres said; nothing is changed then.
pub async fn push(client: &mut Client, rules: &[StoredRule]) -> Result<u64, tokio_postgres::Error> {
    table::ensure(client).await?;
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
