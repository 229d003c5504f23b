//! The `pgshim` schema: backfill and repair checkpoints, and the last verify result per rule.
//!
//! A backfill batch updates its checkpoint row in the same transaction as the rows it
//! fills, so a crash loses at most the uncommitted batch and a rerun neither redoes nor
//! skips rows. Each batch also re-reads the row `FOR UPDATE`, which is how `--pause` from
//! another shell reaches a running backfill, and why two backfills of one rule take
//! turns instead of doing the same work twice.

use tokio_postgres::{Client, GenericClient};

use super::error::OpsError;
use super::key::Key;

/// Creates the schema and tables; safe to run concurrently and repeatedly.
const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS pgshim;
CREATE TABLE IF NOT EXISTS pgshim.backfill_progress (
    rule_id      text PRIMARY KEY,
    table_name   text NOT NULL,
    key_columns  text[] NOT NULL,
    last_key     text[],
    rows_done    bigint NOT NULL DEFAULT 0,
    rows_scanned bigint NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'paused', 'done')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE TABLE IF NOT EXISTS pgshim.verify_result (
    rule_id             text PRIMARY KEY,
    table_name          text NOT NULL,
    ok                  boolean NOT NULL,
    rows_scanned        bigint NOT NULL,
    not_migrated        bigint NOT NULL,
    mismatched          bigint NOT NULL,
    sample_not_migrated text[] NOT NULL,
    sample_mismatched   text[] NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgshim.repair_progress (LIKE pgshim.backfill_progress INCLUDING ALL);";

const COLUMNS: &str = "rule_id, key_columns, last_key, rows_done, rows_scanned, state, \
                       started_at, updated_at, finished_at";

/// Which walk a checkpoint belongs to: each rule has one of each, in its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// `pgshim backfill`.
    Backfill,
    /// `pgshim verify --repair`.
    Repair,
}

/// Whether a backfill should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In progress (or stopped by Ctrl-C / a crash, to be resumed).
    Running,
    /// Held by `--pause` until `--resume`.
    Paused,
    /// Every row has been visited.
    Done,
}

/// One rule's backfill checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The key the table is walked by; a resume must use the same one.
    pub key_columns: Vec<String>,
    /// The last key visited (as text), `None` before the first batch.
    pub last_key: Option<Vec<String>>,
    /// Rows the backfill filled.
    pub rows_done: i64,
    /// Rows visited, filled or not.
    pub rows_scanned: i64,
    /// Running, paused or done.
    pub state: State,
}

// === impl Journal ===

impl Journal {
    /// The table holding this journal's checkpoints.
    pub fn table(self) -> &'static str {
        match self {
            Journal::Backfill => "pgshim.backfill_progress",
            Journal::Repair => "pgshim.repair_progress",
        }
    }

    /// The command, for messages.
    pub fn command(self) -> &'static str {
        match self {
            Journal::Backfill => "backfill",
            Journal::Repair => "repair",
        }
    }
}

// === impl State ===

impl State {
    fn parse(s: &str) -> State {
        match s {
            "paused" => State::Paused,
            "done" => State::Done,
            _ => State::Running,
        }
    }

    /// The word stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Done => "done",
        }
    }
}

// === impl Checkpoint ===

impl Checkpoint {
    /// A checkpoint from a row of [`load_sql`] (or any `RETURNING` of the same columns).
    pub fn from_row(row: &tokio_postgres::Row) -> Checkpoint {
        Checkpoint {
            key_columns: row.get(1),
            last_key: row.get(2),
            rows_done: row.get(3),
            rows_scanned: row.get(4),
            state: State::parse(row.get(5)),
        }
    }
}

/// Creates the `pgshim` schema and its tables if needed.
///
/// # Errors
/// [`OpsError::Db`], e.g. when pgshim's login may not create a schema.
pub async fn ensure_schema(client: &Client) -> Result<(), OpsError> {
    let what = "creating the pgshim schema and its tables (pgshim's [upstream] user needs CREATE on the database)";
    for attempt in 0..3 {
        match client.batch_execute(SCHEMA_SQL).await {
            Ok(()) => return Ok(()),
            // Two runs creating the schema at once: the loser sees a unique violation.
            Err(e) if attempt < 2 && e.code().is_some_and(|c| c.code() == "23505") => {}
            Err(e) => return Err(OpsError::db(what)(e)),
        }
    }
    Ok(())
}

/// Whether the `pgshim` tables exist (without creating them).
///
/// # Errors
/// [`OpsError::Db`] when the catalog cannot be read.
pub async fn schema_exists(client: &Client) -> Result<bool, OpsError> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgshim.backfill_progress') IS NOT NULL \
                AND to_regclass('pgshim.verify_result') IS NOT NULL",
            &[],
        )
        .await
        .map_err(OpsError::db("looking for the pgshim schema"))?;
    Ok(row.get(0))
}

/// The statement reading one rule's checkpoint (`$1`), `FOR UPDATE` with `lock`.
pub fn load_sql(journal: Journal, lock: bool) -> String {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    format!(
        "SELECT {COLUMNS} FROM {} WHERE rule_id = $1{suffix}",
        journal.table()
    )
}

/// The checkpoint of `rule_id`, if a walk ever started; `lock` takes `FOR UPDATE`.
///
/// # Errors
/// [`OpsError::Db`].
pub async fn load(
    client: &impl GenericClient,
    journal: Journal,
    rule_id: &str,
    lock: bool,
) -> Result<Option<Checkpoint>, OpsError> {
    let row = client
        .query_opt(&load_sql(journal, lock), &[&rule_id])
        .await
        .map_err(OpsError::db("reading the backfill checkpoint"))?;
    Ok(row.as_ref().map(Checkpoint::from_row))
}

/// Creates the checkpoint (or resets it with `restart`) and returns it.
///
/// # Errors
/// [`OpsError::Usage`] when the saved checkpoint walked a different key; [`OpsError::Db`].
pub async fn start(
    client: &Client,
    journal: Journal,
    rule_id: &str,
    table: &str,
    key: &Key,
    restart: bool,
) -> Result<Checkpoint, OpsError> {
    let what = "saving the backfill checkpoint";
    let jt = journal.table();
    client
        .execute(
            &format!(
                "INSERT INTO {jt} (rule_id, table_name, key_columns) \
                 VALUES ($1, $2, $3) ON CONFLICT (rule_id) DO NOTHING"
            ),
            &[&rule_id, &table, &key.columns],
        )
        .await
        .map_err(OpsError::db(what))?;
    if restart {
        client
            .execute(
                &format!(
                    "UPDATE {jt} SET table_name = $2, key_columns = $3, \
                     last_key = NULL, rows_done = 0, rows_scanned = 0, state = 'running', \
                     started_at = now(), updated_at = now(), finished_at = NULL WHERE rule_id = $1"
                ),
                &[&rule_id, &table, &key.columns],
            )
            .await
            .map_err(OpsError::db(what))?;
    }
    let saved = load(client, journal, rule_id, false)
        .await?
        .ok_or_else(|| OpsError::Usage(format!("the checkpoint of rule {rule_id} vanished while starting: is another backfill running with --restart?")))?;
    if saved.key_columns != key.columns {
        return Err(OpsError::Usage(format!(
            "the saved checkpoint of rule {rule_id} walked key ({}) but the table's key is now ({}): rerun with --restart",
            saved.key_columns.join(", "),
            key.columns.join(", ")
        )));
    }
    Ok(saved)
}

/// Walks the table again from its first key after a finished walk, keeping the count
/// of rows filled: rows written around pgshim since may lie below the old checkpoint.
///
/// # Returns
/// The checkpoint after the change.
///
/// # Errors
/// [`OpsError::Db`].
pub async fn reopen(
    client: &Client,
    journal: Journal,
    rule_id: &str,
) -> Result<Option<Checkpoint>, OpsError> {
    let sql = format!(
        "UPDATE {} SET last_key = NULL, rows_scanned = 0, state = 'running', \
         started_at = now(), updated_at = now(), finished_at = NULL \
         WHERE rule_id = $1 RETURNING {COLUMNS}",
        journal.table()
    );
    let row = client
        .query_opt(&sql, &[&rule_id])
        .await
        .map_err(OpsError::db("reopening the checkpoint"))?;
    Ok(row.as_ref().map(Checkpoint::from_row))
}

/// The statement recording a committed batch, for [`advance`]; prepared once per run.
pub fn advance_sql(journal: Journal) -> String {
    format!(
        "UPDATE {} SET last_key = COALESCE($2, last_key), \
         rows_done = rows_done + $3, rows_scanned = rows_scanned + $4, updated_at = now(), \
         state = CASE WHEN $5 THEN 'done' ELSE state END, \
         finished_at = CASE WHEN $5 THEN now() END \
         WHERE rule_id = $1 RETURNING {COLUMNS}",
        journal.table()
    )
}

/// Records a committed batch with the statement of [`advance_sql`]; `done` marks the
/// end of the table.
///
/// # Returns
/// The checkpoint after the batch, `None` when it was deleted meanwhile.
///
/// # Errors
/// [`OpsError::Db`].
pub async fn advance(
    tx: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    rule_id: &str,
    last_key: Option<&Vec<String>>,
    filled: i64,
    scanned: i64,
    done: bool,
) -> Result<Option<Checkpoint>, OpsError> {
    let row = tx
        .query_opt(statement, &[&rule_id, &last_key, &filled, &scanned, &done])
        .await
        .map_err(OpsError::db("saving the checkpoint"))?;
    Ok(row.as_ref().map(Checkpoint::from_row))
}

/// Flips a backfill between running and paused (`--pause`, `--resume`).
///
/// # Returns
/// The checkpoint after the change.
///
/// # Errors
/// [`OpsError::Usage`] when no backfill of the rule ever started or it is done.
pub async fn set_state(
    client: &Client,
    rule_id: &str,
    state: State,
) -> Result<Checkpoint, OpsError> {
    let sql = format!(
        "UPDATE {} SET state = $2 \
         WHERE rule_id = $1 AND state <> 'done' RETURNING {COLUMNS}",
        Journal::Backfill.table()
    );
    let row = client
        .query_opt(&sql, &[&rule_id, &state.as_str()])
        .await
        .map_err(OpsError::db("changing the backfill state"))?;
    if let Some(row) = row {
        return Ok(Checkpoint::from_row(&row));
    }
    match load(client, Journal::Backfill, rule_id, false).await? {
        Some(_) => Err(OpsError::Usage(format!(
            "the backfill of rule {rule_id} is already done; nothing to {}",
            if state == State::Paused { "pause" } else { "resume" }
        ))),
        None => Err(OpsError::Usage(format!(
            "no backfill of rule {rule_id} has started in this database: start one with `pgshim backfill {rule_id}`"
        ))),
    }
}
