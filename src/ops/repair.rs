//! `pgshim verify --repair`: rewrite the rows whose two shapes disagree from the
//! phase's source of truth, as a checkpointed walk with the backfill's batching,
//! throttling and retries (see `walk`).
//!
//! The source of truth is what pgshim reads in the phase (the semantics table in the
//! README): in expand the old shape, so the new columns are recomputed from it; in
//! migrate and contract the new shape, so the old columns are recomputed from it,
//! except for rows that have not migrated (new columns all NULL), which are read from
//! the old shape in every phase and so get their new columns filled instead. A row is
//! rewritten only when verify would count it (not migrated, or disagreeing), and that
//! condition is re-checked on the newest row version, so rows that agree are never
//! touched and a concurrent write through pgshim wins. A finished repair is a finished
//! pass: the next `--repair` walks the table again from the first key.
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Journal, State};
use super::error::OpsError;
use super::sql::ident;
use super::target::Target;
use super::verify;
use super::walk::{self, Event, Options, Progress, Sql, WalkOutcome};
use crate::rewrite::{Phase, TableInfo};

/// Runs the repair of `target` until the end of the table or `stop`.
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
        info,
        key,
        checkpoint: mut cp,
    } = walk::start(client, target, opts, Journal::Repair).await?;
    let table = target.rule.qualified_table();
    let id = &target.rule.id;
    if cp.state == State::Done {
        cp = checkpoint::start(client, Journal::Repair, id, &table, &key, true).await?;
    }
    let progress = Progress::new(
        id,
        &cp,
        walk::estimate(client, target, opts.lock_timeout).await?,
    );
    let (pending, mismatch) = verify::predicates(target, &info);
    let condition = format!("({pending}) OR ({mismatch})");
    let sets = sets_sql(target, &info);
    let sql = Sql::new(Journal::Repair, target, &key, &sets, &condition);
    walk::run(client, target, &sql, opts, progress, stop, observe).await
}

/// Whether a repair of `target` was stopped before the end of the table.
///
/// # Errors
/// [`OpsError::Db`] when the `pgshim` schema cannot be read.
pub async fn interrupted(client: &Client, target: &Target) -> Result<bool, OpsError> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgshim.repair_progress') IS NOT NULL",
            &[],
        )
        .await
        .map_err(OpsError::db("looking for the repair checkpoint"))?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let cp = checkpoint::load(client, Journal::Repair, &target.rule.id, false).await?;
    Ok(cp.is_some_and(|cp| cp.state == State::Running))
}

/// The `SET` list taking each row to the phase's source of truth.
fn sets_sql(target: &Target, info: &TableInfo) -> String {
    let rule = &target.rule;
    let cast = |column: &str, value: String| match info.column(column) {
        Some(c) => format!("CAST({value} AS {})", c.type_sql),
        None => value,
    };
    let to_new = rule
        .new
        .iter()
        .enumerate()
        .filter_map(|(i, n)| rule.to_new_sql(i, "t").map(|v| (n, cast(n, v))));
    if rule.phase == Phase::Expand {
        let sets: Vec<String> = to_new.map(|(n, v)| format!("{} = {v}", ident(n))).collect();
        return sets.join(", ");
    }
    let not_migrated = rule.not_migrated_sql("t");
    let mut sets: Vec<String> = to_new
        .map(|(n, v)| {
            format!(
                "{col} = CASE WHEN {not_migrated} THEN {v} ELSE t.{col} END",
                col = ident(n)
            )
        })
        .collect();
    sets.extend(rule.old.iter().enumerate().filter_map(|(i, o)| {
        rule.to_old_sql(i, "t").map(|v| {
            format!(
                "{col} = CASE WHEN {not_migrated} THEN t.{col} ELSE {v} END",
                col = ident(o),
                v = cast(o, v)
            )
        })
    }));
    sets.join(", ")
}
