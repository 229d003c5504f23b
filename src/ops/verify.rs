//! `pgshim verify`: prove both shapes agree before the old one is dropped.
//!
//! Walks the table in keyset batches, one autocommit statement each (no long transaction,
//! no locks beyond a plain read), counting rows that have not migrated (new columns all
//! NULL, old ones not) and migrated rows whose shapes disagree under the transforms, both
//! ways: some `n IS DISTINCT FROM to_new_n(O)` or some `o IS DISTINCT FROM to_old_o(N)`.
//! The last complete result is saved in `pgshim.verify_result` for `pgshim status`.
use std::time::Instant;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::checkpoint;
use super::error::OpsError;
use super::key::Key;
use super::sql::ident;
use super::target::Target;
use crate::rewrite::TableInfo;

/// Keys of each kind of problem kept for the report.
pub const SAMPLE_SIZE: usize = 10;

/// What a verify run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The rule.
    pub rule: String,
    /// `schema.table`.
    pub table: String,
    /// Rows visited.
    pub rows_scanned: i64,
    /// Rows whose new columns are all NULL while some old column is not.
    pub not_migrated: i64,
    /// Migrated rows whose two shapes disagree.
    pub mismatched: i64,
    /// Keys of some rows that have not migrated.
    pub sample_not_migrated: Vec<String>,
    /// Keys of some rows that disagree.
    pub sample_mismatched: Vec<String>,
    /// False when Ctrl-C stopped the scan early.
    pub complete: bool,
    /// Seconds the scan took.
    pub elapsed_secs: f64,
}

// === impl Report ===

impl Report {
    /// Nothing left to migrate, nothing disagrees, and the whole table was read: the
    /// signal that contracting is safe.
    pub fn ok(&self) -> bool {
        self.complete && self.not_migrated == 0 && self.mismatched == 0
    }
}

/// Scans `target`'s table and saves the result unless `stop` cut it short.
///
/// # Errors
/// [`OpsError`] for missing columns, no usable key, or a failed statement.
pub async fn run(
    client: &Client,
    target: &Target,
    batch_size: i64,
    stop: &CancellationToken,
    observe: &mut dyn FnMut(&Report),
) -> Result<Report, OpsError> {
    if batch_size < 1 {
        return Err(OpsError::Usage("--batch-size must be at least 1".into()));
    }
    let info = target.table_info(client).await?;
    target.require_both_shapes(&info)?;
    let key = Key::find(client, &target.rule).await?;
    let (first, next) = scan_sql(target, &info, &key, batch_size);
    let started = Instant::now();
    let mut report = Report {
        rule: target.rule.id.clone(),
        table: target.rule.qualified_table(),
        ..Report::default()
    };
    let mut last: Option<Vec<String>> = None;
    let what = format!("verify scan of {}", report.table);
    loop {
        if stop.is_cancelled() {
            report.elapsed_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        let row = match &last {
            None => client.query_one(&first, &[]).await,
            Some(k) => {
                let params: Vec<&(dyn ToSql + Sync)> =
                    k.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                client.query_one(&next, &params).await
            }
        }
        .map_err(OpsError::db(what.as_str()))?;
        let scanned: i64 = row.get(0);
        report.rows_scanned += scanned;
        report.not_migrated += row.get::<_, i64>(1);
        report.mismatched += row.get::<_, i64>(2);
        extend_sample(&mut report.sample_not_migrated, row.get(3));
        extend_sample(&mut report.sample_mismatched, row.get(4));
        report.elapsed_secs = started.elapsed().as_secs_f64();
        last = row.get(5);
        if scanned < batch_size || last.is_none() {
            break;
        }
        observe(&report);
    }
    report.complete = true;
    checkpoint::ensure_schema(client).await?;
    save(client, &report).await?;
    Ok(report)
}

fn extend_sample(sample: &mut Vec<String>, more: Vec<String>) {
    let room = SAMPLE_SIZE.saturating_sub(sample.len());
    sample.extend(more.into_iter().take(room));
}

/// The last complete verify result of `rule_id`, with when it finished.
///
/// # Errors
/// [`OpsError::Db`].
pub async fn last(
    client: &Client,
    rule_id: &str,
) -> Result<Option<(Report, std::time::SystemTime)>, OpsError> {
    let row = client
        .query_opt(
            "SELECT table_name, rows_scanned, not_migrated, mismatched, sample_not_migrated, \
                    sample_mismatched, finished_at FROM pgshim.verify_result WHERE rule_id = $1",
            &[&rule_id],
        )
        .await
        .map_err(OpsError::db("reading the last verify result"))?;
    Ok(row.map(|r| {
        let report = Report {
            rule: rule_id.to_owned(),
            table: r.get(0),
            rows_scanned: r.get(1),
            not_migrated: r.get(2),
            mismatched: r.get(3),
            sample_not_migrated: r.get(4),
            sample_mismatched: r.get(5),
            complete: true,
            elapsed_secs: 0.0,
        };
        (report, r.get(6))
    }))
}

async fn save(client: &Client, r: &Report) -> Result<(), OpsError> {
    client
        .execute(
            "INSERT INTO pgshim.verify_result (rule_id, table_name, ok, rows_scanned, not_migrated, \
                 mismatched, sample_not_migrated, sample_mismatched, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
             ON CONFLICT (rule_id) DO UPDATE SET table_name = EXCLUDED.table_name, ok = EXCLUDED.ok, \
                 rows_scanned = EXCLUDED.rows_scanned, not_migrated = EXCLUDED.not_migrated, \
                 mismatched = EXCLUDED.mismatched, sample_not_migrated = EXCLUDED.sample_not_migrated, \
                 sample_mismatched = EXCLUDED.sample_mismatched, finished_at = now()",
            &[
                &r.rule,
                &r.table,
                &r.ok(),
                &r.rows_scanned,
                &r.not_migrated,
                &r.mismatched,
                &r.sample_not_migrated,
                &r.sample_mismatched,
            ],
        )
        .await
        .map_err(OpsError::db("saving the verify result in pgshim.verify_result"))?;
    Ok(())
}

/// The per-row predicates on the row `t`: not migrated, and shapes that disagree.
pub(super) fn predicates(target: &Target, info: &TableInfo) -> (String, String) {
    let rule = &target.rule;
    let not_migrated = rule.not_migrated_sql("t");
    let old_all_null: Vec<String> = rule
        .old
        .iter()
        .map(|o| format!("t.{} IS NULL", ident(o)))
        .collect();
    let pending = format!("({not_migrated}) AND NOT ({})", old_all_null.join(" AND "));
    let cast = |column: &str, value: String| match info.column(column) {
        Some(c) => format!("CAST({value} AS {})", c.type_sql),
        None => value,
    };
    let mut differs: Vec<String> = Vec::new();
    for (i, n) in rule.new.iter().enumerate() {
        if let Some(v) = rule.to_new_sql(i, "t") {
            differs.push(format!("t.{} IS DISTINCT FROM {}", ident(n), cast(n, v)));
        }
    }
    for (i, o) in rule.old.iter().enumerate() {
        if let Some(v) = rule.to_old_sql(i, "t") {
            differs.push(format!("t.{} IS DISTINCT FROM {}", ident(o), cast(o, v)));
        }
    }
    let mismatch = format!("NOT ({not_migrated}) AND ({})", differs.join(" OR "));
    (pending, mismatch)
}

/// The batch statements: first batch, and the next after a key (`$1..`).
fn scan_sql(target: &Target, info: &TableInfo, key: &Key, batch_size: i64) -> (String, String) {
    let (pending, mismatch) = predicates(target, info);
    let table = target.table_sql();
    let cols: Vec<String> = key
        .columns
        .iter()
        .map(|c| format!("t.{}", ident(c)))
        .collect();
    let label = match key.columns.as_slice() {
        [one] => format!("b.{}::text", ident(one)),
        _ => format!("ROW({})::text", key.order("b")),
    };
    let desc: Vec<String> = key
        .columns
        .iter()
        .map(|c| format!("b.{} DESC", ident(c)))
        .collect();
    let build = |after: &str| {
        format!(
            "WITH batch AS MATERIALIZED (\
               SELECT {cols}, ({pending}) AS pgshim_pending, ({mismatch}) AS pgshim_mismatch \
               FROM {table} AS t {after}ORDER BY {order} LIMIT {batch_size}) \
             SELECT count(*), count(*) FILTER (WHERE b.pgshim_pending), \
                    count(*) FILTER (WHERE b.pgshim_mismatch), \
                    COALESCE((array_agg({label}) FILTER (WHERE b.pgshim_pending))[1:{SAMPLE_SIZE}], '{{}}'), \
                    COALESCE((array_agg({label}) FILTER (WHERE b.pgshim_mismatch))[1:{SAMPLE_SIZE}], '{{}}'), \
                    (SELECT {last} FROM batch AS b ORDER BY {desc} LIMIT 1) \
             FROM batch AS b",
            cols = cols.join(", "),
            order = key.order("t"),
            last = key.text_array("b"),
            desc = desc.join(", "),
        )
    };
    (
        build(""),
        build(&format!("WHERE {} > {} ", key.row("t"), key.params(1))),
    )
}
