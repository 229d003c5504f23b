//! `pgshim plan RULE --phase expand|contract [--apply]`: print the step's DDL, or run it.
use std::path::Path;
use std::time::Duration;

use super::common::{self, OpsArgs};
use crate::config::Config;
use crate::ops::apply;
use crate::ops::guard::{self, GuardError};
use crate::ops::plan::{self, Step, Timeouts};
use crate::ops::retire::Handshake;
use crate::ops::Target;
use crate::rewrite::Phase;

/// `pgshim plan` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The rule's id.
    pub rule: String,
    #[command(flatten)]
    pub common: OpsArgs,
    /// Which step's DDL.
    #[arg(long, value_enum)]
    pub phase: Step,
    /// Run the statements (one at a time, retrying lock timeouts) instead of printing them.
    #[arg(long)]
    pub apply: bool,
    /// lock_timeout of every statement, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    pub lock_timeout: u64,
    /// statement_timeout of statements that take a strong lock, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub statement_timeout: u64,
    /// Attempts per statement before giving up on lock timeouts (with --apply).
    #[arg(long, default_value_t = 30)]
    pub max_retries: u32,
    /// Drop the old columns even when the fleet registry and the last verify do not
    /// show it is safe (with --phase contract --apply).
    #[arg(long)]
    pub force: bool,
}

/// Runs the subcommand.
///
/// # Errors
/// Config, connection or catalog errors; with `--apply`, the first failing statement
/// with what ran and what did not.
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let (config, target) = common::target(config_path, &args.rule, &args.common)?;
    let timeouts = Timeouts {
        lock: Duration::from_millis(args.lock_timeout),
        statement: Duration::from_millis(args.statement_timeout),
    };
    common::runtime()?.block_on(async {
        let client = target.connect(&config).await?;
        let mut plan = plan::plan(&client, &target, args.phase).await?;
        let drops = target.rule.phase == Phase::Contract
            && plan.statements.iter().any(|s| s.needs_contract_phase);
        if !args.apply {
            if drops {
                if let Err(GuardError::Refused(refused)) =
                    guard::check_contract(&config, &target, &client).await
                {
                    plan.notes.push(format!(
                        "--apply would refuse to drop the old columns now: {}",
                        refused.reason
                    ));
                }
            }
            if args.common.json {
                return common::print_json(&plan);
            }
            print!("{}", plan.script(timeouts));
            return Ok(());
        }
        if !args.common.json {
            eprint!("{}", plan.bypass_warning(""));
        }
        if drops {
            guard(&config, &target, &client, args.force).await?;
        }
        let stop = common::stop_on_signal();
        let json = args.common.json;
        let mut observe = |s: &plan::Statement, retry: Option<&crate::ops::OpsError>| match retry {
            Some(e) => eprintln!("lock conflict, retrying: {}: {e}", s.sql),
            None if !json => println!("ok: {}", s.sql),
            None => {}
        };
        let warn = |message: String| eprintln!("warning: {message}");
        let handshake = Handshake {
            config: &config,
            target: &target,
            force: args.force,
            warn: &warn,
        };
        let applied = apply::apply(
            &client,
            &plan,
            target.rule.phase,
            timeouts,
            args.max_retries,
            &stop,
            &handshake,
            &mut observe,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if json {
            return common::print_json(&applied);
        }
        if applied.ran.is_empty() && applied.held_back.is_empty() {
            println!("nothing to do: the catalog already has this step's shape");
        }
        if !applied.held_back.is_empty() {
            println!(
                "held back ({}): rule {} is in phase {}; set phase = \"contract\", reload every pgshim, then rerun:",
                applied.held_back.len(),
                target.rule.id,
                target.rule.phase
            );
            for s in &applied.held_back {
                println!("  {s}");
            }
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        Ok(())
    })
}

/// Refuses to drop old columns the fleet may still need; `force` turns the
/// refusal into a warning.
async fn guard(
    config: &Config,
    target: &Target,
    client: &tokio_postgres::Client,
    force: bool,
) -> anyhow::Result<()> {
    match guard::check_contract(config, target, client).await {
        Ok(()) => Ok(()),
        Err(GuardError::Refused(refused)) if force => {
            eprintln!(
                "warning: --force: dropping the old columns of rule {} although {}",
                refused.rule, refused.reason
            );
            Ok(())
        }
        Err(GuardError::Refused(refused)) => Err(refused.into()),
        Err(GuardError::Ops(e)) if force => {
            eprintln!("warning: --force: dropping the old columns of rule {} without checking the fleet: {e}", target.rule.id);
            Ok(())
        }
        Err(GuardError::Ops(e)) => Err(anyhow::Error::new(e)
            .context("checking that every pgshim is in contract before dropping columns (--force skips the check)")),
    }
}
