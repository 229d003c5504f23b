//! `pgshim backfill`: fill the new columns of rows that have not migrated, in keyset
//! batches, each its own short transaction.
//!
//! A batch picks the next `batch_size` keys after the checkpoint, updates the rows among
//! them whose new columns are all NULL (and whose old columns are not), and moves the
//! checkpoint, all in one transaction under `SET LOCAL lock_timeout`. Row locks are held
//! for one batch only, a lock conflict rolls the batch back and retries it with backoff,
//! and a concurrent write through pgshim that migrates a row first simply makes the
//! batch skip it (the UPDATE's WHERE is re-checked on the newest row version).
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Checkpoint, State};
use super::error::OpsError;
use super::key::Key;
use super::retry::{sleep_unless_stopped, with_retry, Retried};
use super::sql::{ident, setting};
use super::target::Target;

/// Default rows per batch.
pub const DEFAULT_BATCH_SIZE: i64 = 1_000;

/// How to run a backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keys visited per batch.
    pub batch_size: i64,
    /// Pause between batches.
    pub sleep: Duration,
    /// `lock_timeout` of each batch.
    pub lock_timeout: Duration,
    /// Attempts per batch before giving up on lock conflicts.
    pub max_attempts: u32,
    /// Wait while a replica in `pg_stat_replication` lags more than this.
    pub max_replica_lag: Option<Duration>,
    /// Forget the checkpoint and start from the first key.
    pub restart: bool,
}

/// Where a backfill stands, after each batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    /// The rule.
    pub rule: String,
    /// Rows filled since the checkpoint was (re)started, earlier runs included.
    pub rows_done: i64,
    /// Rows visited since the checkpoint was (re)started.
    pub rows_scanned: i64,
    /// Rows filled by this run.
    pub run_rows_done: i64,
    /// Rows visited by this run.
    pub run_rows_scanned: i64,
    /// Estimated rows in the table (from `pg_class.reltuples`, or a count).
    pub total_estimate: i64,
    /// Seconds this run has taken.
    pub elapsed_secs: f64,
    /// The last key visited, as text.
    pub last_key: Option<Vec<String>>,
    /// State after the batch.
    pub state: State,
}

/// What the running backfill reports, for a progress bar or log lines.
#[derive(Debug)]
pub enum Event<'a> {
    /// A batch committed.
    Batch(&'a Progress),
    /// The checkpoint says paused; waiting for `--resume`.
    Paused,
    /// Resumed after a pause.
    Resumed,
    /// A batch hit a lock conflict and will be retried.
    Retry {
        /// Attempt that failed.
        attempt: u32,
        /// Wait before the next.
        wait: Duration,
        /// The conflict.
        error: &'a OpsError,
    },
    /// Waiting for replicas to catch up.
    ReplicaLag {
        /// The largest lag seen.
        lag: Duration,
    },
}

/// How a backfill run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every row has been visited.
    Done,
    /// It was already done before this run (`--restart` scans again).
    AlreadyDone,
    /// Ctrl-C/SIGTERM: the current batch finished, a rerun continues.
    Stopped,
}

/// The statements of one batch, built once per run.
struct BatchSql {
    first: String,
    next: String,
}

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
) -> Result<(Outcome, Progress), OpsError> {
    if opts.batch_size < 1 {
        return Err(OpsError::Usage("--batch-size must be at least 1".into()));
    }
    let info = target.table_info(client).await?;
    target.require_both_shapes(&info)?;
    let key = Key::find(client, &target.rule).await?;
    checkpoint::ensure_schema(client).await?;
    let table = target.rule.qualified_table();
    let cp = checkpoint::start(client, &target.rule.id, &table, &key, opts.restart).await?;
    let mut progress = Progress::new(
        &target.rule.id,
        &cp,
        estimate(client, target, opts.lock_timeout).await?,
    );
    if cp.state == State::Done {
        return Ok((Outcome::AlreadyDone, progress));
    }
    let sql = batch_sql(target, &key, opts.batch_size);
    let started = Instant::now();
    let mut paused = false;
    loop {
        if stop.is_cancelled() {
            return Ok((Outcome::Stopped, progress));
        }
        if !wait_for_replicas(client, opts, stop, observe).await? {
            return Ok((Outcome::Stopped, progress));
        }
        let step = || batch(client, target, &sql, opts.lock_timeout);
        let mut on_retry = |attempt, wait, error: &OpsError| {
            observe(Event::Retry {
                attempt,
                wait,
                error,
            })
        };
        let what = format!("backfill batch of rule {}", target.rule.id);
        let result = match with_retry(&what, opts.max_attempts, stop, &mut on_retry, step).await? {
            Retried::Done(r) => r,
            Retried::Stopped => return Ok((Outcome::Stopped, progress)),
        };
        match result {
            BatchResult::Paused => {
                if !paused {
                    observe(Event::Paused);
                    paused = true;
                }
                if !sleep_unless_stopped(Duration::from_millis(500), stop).await {
                    return Ok((Outcome::Stopped, progress));
                }
                continue;
            }
            BatchResult::Committed(cp, filled, scanned) => {
                if paused {
                    observe(Event::Resumed);
                    paused = false;
                }
                progress.update(&cp, filled, scanned, started.elapsed());
                observe(Event::Batch(&progress));
                if cp.state == State::Done {
                    return Ok((Outcome::Done, progress));
                }
            }
        }
        if !opts.sleep.is_zero() && !sleep_unless_stopped(opts.sleep, stop).await {
            return Ok((Outcome::Stopped, progress));
        }
    }
}

/// What one batch transaction did.
enum BatchResult {
    /// Paused from another shell; nothing done.
    Paused,
    /// The checkpoint after the batch, rows filled, rows visited.
    Committed(Checkpoint, i64, i64),
}

async fn batch(
    client: &Client,
    target: &Target,
    sql: &BatchSql,
    lock_timeout: Duration,
) -> Result<BatchResult, OpsError> {
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            setting(lock_timeout)
        ))
        .await
        .map_err(OpsError::db("starting a backfill batch"))?;
    let result = batch_in_tx(client, target, sql).await;
    let end = match &result {
        Ok(BatchResult::Committed(..)) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = client
        .batch_execute(end)
        .await
        .map_err(OpsError::db("committing a backfill batch"));
    match (result, ended) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(r), Ok(())) => Ok(r),
    }
}

async fn batch_in_tx(
    client: &Client,
    target: &Target,
    sql: &BatchSql,
) -> Result<BatchResult, OpsError> {
    let rule_id = &target.rule.id;
    let Some(cp) = checkpoint::load(client, rule_id, true).await? else {
        return Err(OpsError::Usage(format!(
            "the checkpoint of rule {rule_id} was deleted while the backfill ran; rerun to start over"
        )));
    };
    match cp.state {
        State::Paused => return Ok(BatchResult::Paused),
        State::Done => return Ok(BatchResult::Committed(cp, 0, 0)),
        State::Running => {}
    }
    let what = format!("backfill batch of {}", target.rule.qualified_table());
    let row = match &cp.last_key {
        None => client.query_one(&sql.first, &[]).await,
        Some(last) => {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = last
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            client.query_one(&sql.next, &params).await
        }
    }
    .map_err(OpsError::db(what))?;
    let (filled, scanned): (i64, i64) = (row.get(0), row.get(1));
    let last: Option<Vec<String>> = row.get(2);
    checkpoint::advance(
        client,
        rule_id,
        last.as_ref(),
        filled,
        scanned,
        scanned == 0,
    )
    .await?;
    let after = checkpoint::load(client, rule_id, false)
        .await?
        .unwrap_or(cp);
    Ok(BatchResult::Committed(after, filled, scanned))
}

/// The batch statement: pick keys, fill the unmigrated rows among them, report.
fn batch_sql(target: &Target, key: &Key, batch_size: i64) -> BatchSql {
    let rule = &target.rule;
    let table = target.table_sql();
    let sets: Vec<String> = rule
        .new
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let value = rule.to_new_sql(i, "t").unwrap_or_else(|| "NULL".into());
            format!("{} = {value}", ident(n))
        })
        .collect();
    let old_all_null: Vec<String> = rule
        .old
        .iter()
        .map(|o| format!("t.{} IS NULL", ident(o)))
        .collect();
    let desc: Vec<String> = key
        .columns
        .iter()
        .map(|c| format!("b.{} DESC", ident(c)))
        .collect();
    let cols: Vec<String> = key
        .columns
        .iter()
        .map(|c| format!("t.{}", ident(c)))
        .collect();
    let build = |after: &str| {
        format!(
            "WITH batch AS MATERIALIZED (\
               SELECT {cols} FROM {table} AS t {after}ORDER BY {order} LIMIT {batch_size}), \
             filled AS (\
               UPDATE {table} AS t SET {sets} FROM batch AS b \
               WHERE {trow} = {brow} AND {not_migrated} AND NOT ({old_all_null}) \
               RETURNING 1) \
             SELECT (SELECT count(*) FROM filled), (SELECT count(*) FROM batch), \
                    (SELECT {last} FROM batch AS b ORDER BY {desc} LIMIT 1)",
            cols = cols.join(", "),
            order = key.order("t"),
            sets = sets.join(", "),
            trow = key.row("t"),
            brow = key.row("b"),
            not_migrated = rule.not_migrated_sql("t"),
            old_all_null = old_all_null.join(" AND "),
            last = key.text_array("b"),
            desc = desc.join(", "),
        )
    };
    BatchSql {
        first: build(""),
        next: build(&format!("WHERE {} > {} ", key.row("t"), key.params(1))),
    }
}

/// Rows in the table: the planner's estimate, or a count when the table was never
/// analysed. Only for the ETA: when another session's lock keeps the count waiting past
/// `lock_timeout`, the size is reported as unknown (0) instead of blocking the backfill.
async fn estimate(
    client: &Client,
    target: &Target,
    lock_timeout: Duration,
) -> Result<i64, OpsError> {
    let what = "estimating the table's size";
    let table = target.table_sql();
    let row = client
        .query_one(
            "SELECT reltuples::int8 FROM pg_catalog.pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await
        .map_err(OpsError::db(what))?;
    let estimate: i64 = row.get(0);
    if estimate > 0 {
        return Ok(estimate);
    }
    let count = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = '10s'; \
         SELECT count(*) FROM {table}",
        setting(lock_timeout)
    );
    let counted = client.simple_query(&count).await;
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(OpsError::db(what))?;
    let counted = counted.ok().and_then(|msgs| {
        msgs.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
    });
    Ok(counted.unwrap_or(0))
}

/// Waits while a replica lags more than `--max-replica-lag`.
///
/// # Returns
/// `false` when `stop` fired while waiting.
async fn wait_for_replicas(
    client: &Client,
    opts: &Options,
    stop: &CancellationToken,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<bool, OpsError> {
    let Some(max) = opts.max_replica_lag else {
        return Ok(true);
    };
    loop {
        let row = client
            .query_one(
                "SELECT COALESCE(EXTRACT(epoch FROM max(GREATEST(write_lag, flush_lag, replay_lag))), 0)::float8 \
                 FROM pg_catalog.pg_stat_replication",
                &[],
            )
            .await
            .map_err(OpsError::db("reading replica lag from pg_stat_replication"))?;
        let lag = Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0));
        if lag <= max {
            return Ok(true);
        }
        observe(Event::ReplicaLag { lag });
        if !sleep_unless_stopped(Duration::from_secs(1), stop).await {
            return Ok(false);
        }
    }
}

// === impl Progress ===

impl Progress {
    fn new(rule: &str, cp: &Checkpoint, total_estimate: i64) -> Progress {
        Progress {
            rule: rule.to_owned(),
            rows_done: cp.rows_done,
            rows_scanned: cp.rows_scanned,
            run_rows_done: 0,
            run_rows_scanned: 0,
            total_estimate,
            elapsed_secs: 0.0,
            last_key: cp.last_key.clone(),
            state: cp.state,
        }
    }

    fn update(&mut self, cp: &Checkpoint, filled: i64, scanned: i64, elapsed: Duration) {
        self.rows_done = cp.rows_done;
        self.rows_scanned = cp.rows_scanned;
        self.run_rows_done += filled;
        self.run_rows_scanned += scanned;
        self.elapsed_secs = elapsed.as_secs_f64();
        self.last_key = cp.last_key.clone();
        self.state = cp.state;
        self.total_estimate = self.total_estimate.max(self.rows_scanned);
    }

    /// Rows visited per second by this run.
    pub fn rate(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.run_rows_scanned as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// Time left at the current rate, when it can be told.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        let left = (self.total_estimate - self.rows_scanned).max(0) as f64;
        (rate > 0.0).then(|| Duration::from_secs_f64(left / rate))
    }
}
