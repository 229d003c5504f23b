//! The statements of a `walk`, built once per run from the rule and the key, and
//! prepared on the walk's connection.
//!
//! A batch needs: the checkpoint row (locked), the key `size` rows past the last one
//! (an `OFFSET` over an index-only scan that projects a single row), for the last
//! batch the count and largest key of what is left, the `UPDATE` of a key range, the
//! checkpoint's advance, and, with `--throttle auto`, a look at the other sessions.
use std::time::Duration;

use tokio_postgres::{Client, Statement};

use super::checkpoint::{self, Journal};
use super::error::OpsError;
use super::key::Key;
use super::sql::{ident, setting};
use super::target::Target;

/// The text of a walk's batch statements; see [`Sql::new`].
pub(super) struct Sql {
    pub(super) journal: Journal,
    key_len: usize,
    nth_first: String,
    nth_next: String,
    bound_first: String,
    bound_next: String,
    apply_first: String,
    apply_next: String,
}

/// The statements of a walk, prepared on its connection.
pub(super) struct Prepared {
    pub(super) journal: Journal,
    pub(super) key_len: usize,
    pub(super) load: Statement,
    pub(super) advance: Statement,
    pub(super) nth_first: Statement,
    pub(super) nth_next: Statement,
    pub(super) bound_first: Statement,
    pub(super) bound_next: Statement,
    pub(super) apply_first: Statement,
    pub(super) apply_next: Statement,
    pub(super) sample: Statement,
}

/// Other sessions waiting for a lock this session holds, and other client sessions
/// running a statement.
const SAMPLE_SQL: &str = "\
SELECT count(*) FILTER (WHERE wait_event_type = 'Lock' \
           AND pg_catalog.pg_backend_pid() = ANY (pg_catalog.pg_blocking_pids(pid))), \
       count(*) FILTER (WHERE state = 'active') \
FROM pg_catalog.pg_stat_activity \
WHERE pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'";

// === impl Sql ===

impl Sql {
    /// The statements that walk `target`'s table by `key` (keys per batch are a
    /// parameter), running `UPDATE table AS t SET <sets> WHERE <range> AND (<condition>)` on each
    /// range; `sets` and `condition` name the row `t`.
    pub(super) fn new(
        journal: Journal,
        target: &Target,
        key: &Key,
        sets: &str,
        condition: &str,
    ) -> Sql {
        let table = target.table_sql();
        let cols: Vec<String> = key
            .columns
            .iter()
            .map(|c| format!("t.{}", ident(c)))
            .collect();
        let desc: Vec<String> = key
            .columns
            .iter()
            .map(|c| format!("b.{} DESC", ident(c)))
            .collect();
        let bound = |after: &str, limit: usize| {
            format!(
                "WITH b AS MATERIALIZED (\
                   SELECT {cols} FROM {table} AS t {after}ORDER BY {order} LIMIT ${limit}::int8) \
                 SELECT count(*), (SELECT {last} FROM b ORDER BY {desc} LIMIT 1) FROM b",
                cols = cols.join(", "),
                order = key.order("t"),
                last = key.text_array("b"),
                desc = desc.join(", "),
            )
        };
        // The key `size` rows on: an index-only scan that projects one row.
        let nth = |after: &str, size: usize| {
            format!(
                "SELECT {last} FROM (SELECT {cols} FROM {table} AS t {after}\
                 ORDER BY {order} OFFSET ${size}::int8 - 1 LIMIT 1) AS b",
                cols = cols.join(", "),
                order = key.order("t"),
                last = key.text_array("b"),
            )
        };
        let row = key.row("t");
        let n = key.columns.len();
        let apply = |range: String| {
            format!("UPDATE {table} AS t SET {sets} WHERE {range} AND ({condition})")
        };
        Sql {
            journal,
            key_len: n,
            nth_first: nth("", 1),
            nth_next: nth(&format!("WHERE {row} > {} ", key.params(1)), 1 + n),
            bound_first: bound("", 1),
            bound_next: bound(&format!("WHERE {row} > {} ", key.params(1)), 1 + n),
            apply_first: apply(format!("{row} <= {}", key.params(1))),
            apply_next: apply(format!(
                "{row} > {} AND {row} <= {}",
                key.params(1),
                key.params(1 + n)
            )),
        }
    }

    /// Prepares the statements inside a transaction under `lock_timeout`: parsing
    /// them takes a lock on the table, which must not wait behind another session's
    /// lock for longer than a batch would.
    pub(super) async fn prepare(
        &self,
        client: &Client,
        lock_timeout: Duration,
    ) -> Result<Prepared, OpsError> {
        let what = "preparing the batch statements";
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = {}",
                setting(lock_timeout)
            ))
            .await
            .map_err(OpsError::db(what))?;
        let prepared = self.prepare_in_tx(client).await;
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(OpsError::db(what))?;
        prepared
    }

    async fn prepare_in_tx(&self, client: &Client) -> Result<Prepared, OpsError> {
        let what = "preparing the batch statements";
        let prep =
            |sql: String| async move { client.prepare(&sql).await.map_err(OpsError::db(what)) };
        Ok(Prepared {
            journal: self.journal,
            key_len: self.key_len,
            load: prep(checkpoint::load_sql(self.journal, true)).await?,
            advance: prep(checkpoint::advance_sql(self.journal)).await?,
            nth_first: prep(self.nth_first.clone()).await?,
            nth_next: prep(self.nth_next.clone()).await?,
            bound_first: prep(self.bound_first.clone()).await?,
            bound_next: prep(self.bound_next.clone()).await?,
            apply_first: prep(self.apply_first.clone()).await?,
            apply_next: prep(self.apply_next.clone()).await?,
            sample: prep(SAMPLE_SQL.to_owned()).await?,
        })
    }
}
