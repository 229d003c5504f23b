//! A checkpointed walk over a table in key-range batches: what `backfill` and
//! `verify --repair` share (throttling, retries, pause, replica lag, progress).
//!
//! Each batch is one short transaction under `SET LOCAL lock_timeout`: it locks the
//! checkpoint row (`FOR UPDATE`, which is how `--pause` reaches a running walk and why
//! two walks of one rule take turns), finds the key `batch_size` rows past the
//! checkpoint with an index-only read (`OFFSET`, which projects one row), rewrites the rows of that key range that need
//! it with one `UPDATE ... WHERE key > lo AND key <= hi AND <condition>`, and moves the
//! checkpoint. A range predicate lets Postgres read the rows in index order in one
//! pass, which costs about what one `UPDATE` of the whole table costs per row, where
//! joining against a list of keys costs half again as much. The condition is re-checked
//! on the newest row version, so a row a client rewrote meanwhile is left alone when it
//! no longer needs the change. Every statement is prepared once per run.
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Checkpoint, Journal, State};
use super::error::OpsError;
use super::key::Key;
use super::retry::{sleep_unless_stopped, with_retry, Retried};
use super::sql::setting;
use super::target::Target;
use super::throttle::{BatchSample, Governor, Throttle};
use super::walk_sql::Prepared;
pub(super) use super::walk_sql::Sql;
use crate::rewrite::TableInfo;

/// How to run a walk.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keys visited per batch.
    pub batch_size: i64,
    /// Pause policy between batches.
    pub throttle: Throttle,
    /// `lock_timeout` of each batch.
    pub lock_timeout: Duration,
    /// Attempts per batch before giving up on lock conflicts.
    pub max_attempts: u32,
    /// Wait while a replica in `pg_stat_replication` lags more than this.
    pub max_replica_lag: Option<Duration>,
    /// Forget the checkpoint and start from the first key.
    pub restart: bool,
}

/// Where a walk stands, after each batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    /// The rule.
    pub rule: String,
    /// Rows rewritten since the checkpoint was (re)started, earlier runs included.
    pub rows_done: i64,
    /// Rows visited since the checkpoint was (re)started.
    pub rows_scanned: i64,
    /// Rows rewritten by this run.
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
    /// Share of the time spent in batches that `--throttle auto` allows now (1 when
    /// not throttled).
    pub duty: f64,
    /// Keys the next batch visits (`--throttle auto` shrinks batches while other
    /// sessions wait for their locks).
    pub batch_size: i64,
    /// Rows a rerun found left behind by a finished walk (written around pgshim), which
    /// made it walk the table again.
    pub left_behind: Option<i64>,
}

/// What a running walk reports, for a progress bar or log lines.
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

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkOutcome {
    /// Every row has been visited.
    Done,
    /// It was already done before this run and nothing was left to do.
    AlreadyDone,
    /// Ctrl-C/SIGTERM: the current batch finished, a rerun continues.
    Stopped,
}

/// What a walk of `target` starts from: the table's columns (both shapes
/// checked present), the key it is walked by, and the journal's checkpoint.
pub struct Start {
    /// The table's columns.
    pub info: TableInfo,
    /// The key the table is walked by.
    pub key: Key,
    /// The checkpoint, created or resumed.
    pub checkpoint: Checkpoint,
}

/// Checks the options and the table, finds the key, and starts or resumes
/// the checkpoint of `journal`: what backfill and repair do before walking.
///
/// # Errors
/// [`OpsError`] for a bad batch size, a missing column or key, or a failed statement.
pub async fn start(
    client: &Client,
    target: &Target,
    opts: &Options,
    journal: Journal,
) -> Result<Start, OpsError> {
    if opts.batch_size < 1 {
        return Err(OpsError::Usage("--batch-size must be at least 1".into()));
    }
    let info = target.table_info(client).await?;
    target.require_both_shapes(&info)?;
    let key = Key::find(client, &target.rule).await?;
    checkpoint::ensure_schema(client).await?;
    let table = target.rule.qualified_table();
    let checkpoint =
        checkpoint::start(client, journal, &target.rule.id, &table, &key, opts.restart).await?;
    Ok(Start {
        info,
        key,
        checkpoint,
    })
}

/// Runs the walk from checkpoint `cp` until the end of the table or `stop`.
///
/// # Errors
/// [`OpsError`] for a failed statement, or lock conflicts that outlast the retries.
pub(super) async fn run(
    client: &Client,
    target: &Target,
    sql: &Sql,
    opts: &Options,
    mut progress: Progress,
    stop: &CancellationToken,
    observe: &mut dyn FnMut(Event<'_>),
) -> Result<(WalkOutcome, Progress), OpsError> {
    let what = format!("{} batch of rule {}", sql.journal.command(), target.rule.id);
    let mut on_retry = |attempt, wait, error: &OpsError| {
        observe(Event::Retry {
            attempt,
            wait,
            error,
        })
    };
    let prepare = || sql.prepare(client, opts.lock_timeout);
    let prepared = match with_retry(&what, opts.max_attempts, stop, &mut on_retry, prepare).await? {
        Retried::Done(p) => p,
        Retried::Stopped => return Ok((WalkOutcome::Stopped, progress)),
    };
    let mut governor = Governor::new(opts.throttle, opts.batch_size);
    let started = Instant::now();
    let mut paused = false;
    loop {
        if stop.is_cancelled() {
            return Ok((WalkOutcome::Stopped, progress));
        }
        if !wait_for_replicas(client, opts, stop, observe).await? {
            return Ok((WalkOutcome::Stopped, progress));
        }
        let wants_samples = governor.wants_samples();
        let size = governor.batch_size();
        let step = || {
            batch(
                client,
                target,
                &prepared,
                opts.lock_timeout,
                size,
                wants_samples,
            )
        };
        let mut on_retry = |attempt, wait, error: &OpsError| {
            observe(Event::Retry {
                attempt,
                wait,
                error,
            })
        };
        let batch_started = Instant::now();
        let result = match with_retry(&what, opts.max_attempts, stop, &mut on_retry, step).await? {
            Retried::Done(r) => r,
            Retried::Stopped => return Ok((WalkOutcome::Stopped, progress)),
        };
        let pause = match result {
            BatchResult::Paused => {
                if !paused {
                    observe(Event::Paused);
                    paused = true;
                }
                Duration::from_millis(500)
            }
            BatchResult::Committed {
                after,
                done,
                scanned,
                others,
            } => {
                if paused {
                    observe(Event::Resumed);
                    paused = false;
                }
                let pause = governor.after_batch(BatchSample {
                    elapsed: batch_started.elapsed(),
                    rows: scanned,
                    ..others
                });
                progress.update(&after, done, scanned, started.elapsed(), &governor);
                observe(Event::Batch(&progress));
                if after.state == State::Done {
                    return Ok((WalkOutcome::Done, progress));
                }
                pause
            }
        };
        if !pause.is_zero() && !sleep_unless_stopped(pause, stop).await {
            return Ok((WalkOutcome::Stopped, progress));
        }
    }
}

/// What one batch transaction did.
enum BatchResult {
    /// Paused from another shell; nothing done.
    Paused,
    /// The checkpoint after the batch, rows rewritten, rows visited, and what other
    /// sessions did while it held its locks (with `--throttle auto`).
    Committed {
        after: Checkpoint,
        done: i64,
        scanned: i64,
        others: BatchSample,
    },
}

async fn batch(
    client: &Client,
    target: &Target,
    sql: &Prepared,
    lock_timeout: Duration,
    size: i64,
    wants_samples: bool,
) -> Result<BatchResult, OpsError> {
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            setting(lock_timeout)
        ))
        .await
        .map_err(OpsError::db("starting a batch"))?;
    let result = batch_in_tx(client, target, sql, size, wants_samples).await;
    let end = match &result {
        Ok(BatchResult::Committed { .. }) => "COMMIT",
        _ => "ROLLBACK",
    };
    let ended = client
        .batch_execute(end)
        .await
        .map_err(OpsError::db("committing a batch"));
    match (result, ended) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(r), Ok(())) => Ok(r),
    }
}

async fn batch_in_tx(
    client: &Client,
    target: &Target,
    sql: &Prepared,
    size: i64,
    wants_samples: bool,
) -> Result<BatchResult, OpsError> {
    let rule_id = &target.rule.id;
    let command = sql.journal.command();
    let deleted = || {
        OpsError::Usage(format!(
            "the {command} checkpoint of rule {rule_id} was deleted while it ran; rerun to start over"
        ))
    };
    let cp = client
        .query_opt(&sql.load, &[rule_id])
        .await
        .map_err(OpsError::db("reading the checkpoint"))?
        .map(|r| Checkpoint::from_row(&r))
        .ok_or_else(deleted)?;
    match cp.state {
        State::Paused => return Ok(BatchResult::Paused),
        State::Done => {
            return Ok(BatchResult::Committed {
                after: cp,
                done: 0,
                scanned: 0,
                others: BatchSample::default(),
            })
        }
        State::Running => {}
    }
    let what = format!("{command} batch of {}", target.rule.qualified_table());
    let lo: Vec<&(dyn ToSql + Sync)> = match &cp.last_key {
        Some(last) => last.iter().map(|v| v as &(dyn ToSql + Sync)).collect(),
        None => Vec::new(),
    };
    let mut bound_params = lo.clone();
    bound_params.push(&size);
    // Most batches end at the key `size` rows on; only the last one, with fewer rows
    // left, needs to count them and find the largest key.
    let nth = if lo.is_empty() {
        &sql.nth_first
    } else {
        &sql.nth_next
    };
    let found = client
        .query_opt(nth, &bound_params)
        .await
        .map_err(OpsError::db(what.as_str()))?;
    let (scanned, hi): (i64, Option<Vec<String>>) = match found {
        Some(row) => (size, row.get(0)),
        None => {
            let bound = if lo.is_empty() {
                &sql.bound_first
            } else {
                &sql.bound_next
            };
            let row = client
                .query_one(bound, &bound_params)
                .await
                .map_err(OpsError::db(what.as_str()))?;
            (row.get(0), row.get(1))
        }
    };
    let mut done = 0;
    let mut others = BatchSample::default();
    if let Some(hi) = &hi {
        if hi.len() != sql.key_len {
            return Err(OpsError::Usage(format!(
                "the key of {} changed while the {command} ran; rerun with --restart",
                target.rule.qualified_table()
            )));
        }
        let mut params = lo.clone();
        params.extend(hi.iter().map(|v| v as &(dyn ToSql + Sync)));
        let apply = if lo.is_empty() {
            &sql.apply_first
        } else {
            &sql.apply_next
        };
        let rows = client
            .execute(apply, &params)
            .await
            .map_err(OpsError::db(what.as_str()))?;
        done = i64::try_from(rows).unwrap_or(i64::MAX);
        if wants_samples {
            let row = client
                .query_one(&sql.sample, &[])
                .await
                .map_err(OpsError::db("sampling other sessions in pg_stat_activity"))?;
            others.waiters = row.get(0);
            others.active = row.get(1);
        }
    }
    let after = checkpoint::advance(
        client,
        &sql.advance,
        rule_id,
        hi.as_ref(),
        done,
        scanned,
        scanned == 0,
    )
    .await?
    .ok_or_else(deleted)?;
    Ok(BatchResult::Committed {
        after,
        done,
        scanned,
        others,
    })
}

/// Rows in the table: the planner's estimate, or a count when the table was never
/// analysed. Only for the ETA: when another session's lock keeps the count waiting past
/// `lock_timeout`, the size is reported as unknown (0) instead of blocking the walk.
pub(super) async fn estimate(
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
    /// Progress at checkpoint `cp`, before this run's first batch.
    pub(super) fn new(rule: &str, cp: &Checkpoint, total_estimate: i64) -> Progress {
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
            duty: 1.0,
            batch_size: 0,
            left_behind: None,
        }
    }

    fn update(
        &mut self,
        cp: &Checkpoint,
        done: i64,
        scanned: i64,
        elapsed: Duration,
        governor: &Governor,
    ) {
        self.rows_done = cp.rows_done;
        self.rows_scanned = cp.rows_scanned;
        self.run_rows_done += done;
        self.run_rows_scanned += scanned;
        self.elapsed_secs = elapsed.as_secs_f64();
        self.last_key = cp.last_key.clone();
        self.state = cp.state;
        self.total_estimate = self.total_estimate.max(self.rows_scanned);
        self.duty = governor.duty();
        self.batch_size = governor.batch_size();
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
