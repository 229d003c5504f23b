//! `pgshim backfill`: fill the new columns of rows that have not migrated, in key-range
//! batches, each its own short transaction (see `walk` for how a batch runs).
//!
//! A batch fills the rows of its key range whose new columns are all NULL (and whose
//! old columns are not); a concurrent write through pgshim that migrates a row first
//! simply makes the batch skip it. A finished backfill is not the end of the story:
//! clients that bypass pgshim (a cron job, psql, another service) keep writing rows in
//! the old shape only, anywhere in the key space. A rerun therefore counts the rows
//! still unmigrated and, when there are some, walks the table again.
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Journal, State};
use super::error::OpsError;
use super::sql::{ident, setting};
use super::target::Target;
use super::walk::{self, Sql};
pub use super::walk::{Event, Options, Progress, WalkOutcome};

/// Default rows per batch: large enough that the per-batch round trips and the commit
/// cost little next to the rows rewritten, small enough that a batch holds its row
/// locks for a few milliseconds only.
pub const DEFAULT_BATCH_SIZE: i64 = 5_000;

/// Runs the backfill of `target` until it is done or `stop` fires.
///
/// # Errors
/// [`OpsError`] for a missing column or key, a failed statement, or lock conflicts that
/// outlast the retries.
pub async fn run(
    client: &Client,
    target: &Target,
    opts: &Options,
    stop: &CancellationToken,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<(WalkOutcome, Progress), OpsError> {
    let walk::Start {
        key,
        checkpoint: mut cp,
        ..
    } = walk::start(client, target, opts, Journal::Backfill).await?;
    let id = &target.rule.id;
    let mut left_behind = None;
    if cp.state == State::Done {
        let left = count_pending(client, target, opts.lock_timeout).await?;
        if left == 0 {
            let progress = Progress::new(id, &cp, cp.rows_scanned);
            return Ok((WalkOutcome::AlreadyDone, progress));
        }
        cp = checkpoint::reopen(client, Journal::Backfill, id)
            .await?
            .unwrap_or(cp);
        left_behind = Some(left);
    }
    let mut progress = Progress::new(
        id,
        &cp,
        walk::estimate(client, target, opts.lock_timeout).await?,
    );
    progress.left_behind = left_behind;
    let (sets, pending) = fill_sql(target);
    let sql = Sql::new(Journal::Backfill, target, &key, &sets, &pending);
    walk::run(client, target, &sql, opts, progress, stop, observe).await
}

/// `SET` list filling every new column from the old ones, and the condition of a row
/// that needs it: new columns all NULL, some old column not.
fn fill_sql(target: &Target) -> (String, String) {
    let rule = &target.rule;
    let sets: Vec<String> = rule
        .new
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let value = rule.to_new_sql(i, "t").unwrap_or_else(|| "NULL".into());
            format!("{} = {value}", ident(n))
        })
        .collect();
    (sets.join(", "), pending_sql(target))
}

/// True for a row of `t` that has not migrated and has something to migrate.
pub(super) fn pending_sql(target: &Target) -> String {
    let rule = &target.rule;
    let old_all_null: Vec<String> = rule
        .old
        .iter()
        .map(|o| format!("t.{} IS NULL", ident(o)))
        .collect();
    format!(
        "({}) AND NOT ({})",
        rule.not_migrated_sql("t"),
        old_all_null.join(" AND ")
    )
}

/// Rows that have not migrated, counted in one read of the table.
async fn count_pending(
    client: &Client,
    target: &Target,
    lock_timeout: Duration,
) -> Result<i64, OpsError> {
    let what = "counting rows not migrated";
    client
        .batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL lock_timeout = {}",
            setting(lock_timeout)
        ))
        .await
        .map_err(OpsError::db(what))?;
    let counted = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} AS t WHERE {}",
                target.table_sql(),
                pending_sql(target)
            ),
            &[],
        )
        .await
        .map_err(OpsError::db(what));
    client
        .batch_execute("COMMIT")
        .await
        .map_err(OpsError::db(what))?;
    Ok(counted?.get(0))
}
