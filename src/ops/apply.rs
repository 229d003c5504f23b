//! `pgshim plan --apply`: run a plan one statement at a time, each in its own implicit
//! transaction (CONCURRENTLY cannot run in a transaction block), under the plan's
//! timeouts, retrying lock timeouts with backoff, and stopping at the first error.
use std::cell::Cell;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::error::OpsError;
use super::plan::{Plan, Statement, Timeouts};
use super::retire::Handshake;
use super::retry::{with_retry, Retried};
use crate::rewrite::Phase;

/// What `--apply` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    /// Statements that ran, in order.
    pub ran: Vec<String>,
    /// Statements not run because the rule is not yet in phase contract.
    pub held_back: Vec<String>,
}

/// `--apply` stopped at a failing statement.
#[derive(Debug, thiserror::Error)]
#[error("statement `{failed}` failed: {cause}\nran before it ({}): {}\nnot run ({}): {}\nfix the cause and rerun `pgshim plan ... --apply`: the plan is read again from the catalog, so it continues where it stopped", ran.len(), list(ran), not_run.len(), list(not_run))]
pub struct ApplyError {
    /// Statements that ran.
    pub ran: Vec<String>,
    /// The statement that failed.
    pub failed: String,
    /// Why.
    pub cause: OpsError,
    /// Statements after it.
    pub not_run: Vec<String>,
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.join("; ")
}

/// Runs `plan`'s statements in order; with `phase` not contract, stops before the first
/// statement that needs it and reports the rest as held back. A statement that drops old
/// columns waits for `handshake` first.
///
/// # Errors
/// [`ApplyError`] naming what ran, what failed and what did not run.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    client: &Client,
    plan: &Plan,
    phase: Phase,
    timeouts: Timeouts,
    max_attempts: u32,
    stop: &CancellationToken,
    handshake: &Handshake<'_>,
    observe: &mut dyn FnMut(&Statement, Option<&OpsError>),
) -> Result<Applied, Box<ApplyError>> {
    let mut applied = Applied::default();
    for (i, s) in plan.statements.iter().enumerate() {
        let rest = || {
            plan.statements[i..]
                .iter()
                .map(|s| s.sql.clone())
                .collect::<Vec<_>>()
        };
        if s.needs_contract_phase && phase != Phase::Contract {
            applied.held_back = rest();
            break;
        }
        let fail = |cause: OpsError, applied: &Applied| {
            Box::new(ApplyError {
                ran: applied.ran.clone(),
                failed: s.sql.clone(),
                cause,
                not_run: rest().into_iter().skip(1).collect(),
            })
        };
        if !s.drops_old.is_empty() {
            if let Err(cause) = handshake.retire(client, &s.drops_old, stop).await {
                return Err(fail(cause, &applied));
            }
        }
        let attempt = Cell::new(0u32);
        let step = || async {
            attempt.set(attempt.get() + 1);
            if attempt.get() > 1 {
                if let Some(cleanup) = &s.cleanup {
                    run_one(client, cleanup, s, timeouts).await?;
                }
            }
            run_one(client, &s.sql, s, timeouts).await
        };
        let mut on_retry = |_: u32, _: Duration, e: &OpsError| observe(s, Some(e));
        let outcome = with_retry(&s.sql, max_attempts, stop, &mut on_retry, step).await;
        if !s.drops_old.is_empty() {
            handshake.release(client).await;
        }
        match outcome {
            Ok(Retried::Done(())) => {
                observe(s, None);
                applied.ran.push(s.sql.clone());
            }
            Ok(Retried::Stopped) => {
                let cause =
                    OpsError::Usage("interrupted by a signal while waiting to retry".into());
                return Err(fail(cause, &applied));
            }
            Err(cause) if !s.drops_old.is_empty() => {
                let cause = OpsError::Usage(format!("{cause}; the old columns were retired while it was tried, so writes in that time set the new columns only: before stepping back to migrate or expand, run `pgshim verify {} --repair`", plan.rule));
                return Err(fail(cause, &applied));
            }
            Err(cause) => return Err(fail(cause, &applied)),
        }
    }
    Ok(applied)
}

async fn run_one(client: &Client, sql: &str, s: &Statement, t: Timeouts) -> Result<(), OpsError> {
    for set in s.settings(t) {
        client
            .batch_execute(&set)
            .await
            .map_err(OpsError::db(set.clone()))?;
    }
    client
        .batch_execute(sql)
        .await
        .map_err(OpsError::db("running the statement"))
}
