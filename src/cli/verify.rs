//! `pgshim verify RULE`: scan both shapes and exit 0 only when nothing is left to migrate
//! and nothing disagrees, the signal that moving on to contract is safe. With
//! `--repair`, a scan that finds rows not migrated or disagreeing is followed by a
//! repair that rewrites them from the phase's source of truth (paced like a backfill)
//! and a second scan; an interrupted repair is resumed before any scan.
use std::io::IsTerminal as _;
use std::path::Path;

use super::backfill::{View, WalkArgs};
use super::common::{self, OpsArgs};
use super::exit::NotClean;
use crate::ops::repair;
use crate::ops::verify::{self, Report};
use crate::ops::walk::{Progress, WalkOutcome};

/// `pgshim verify` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The rule's id.
    pub rule: String,
    #[command(flatten)]
    pub common: OpsArgs,
    /// Rows read per statement (and keys per repair batch).
    #[arg(long, default_value_t = 5_000)]
    pub batch_size: i64,
    /// Rewrite the rows that are not migrated or disagree from the phase's source of
    /// truth (expand: the old shape; migrate, contract: the new one, or the old one
    /// for rows not migrated), in checkpointed batches, before scanning.
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub walk: WalkArgs,
}

/// Runs the subcommand.
///
/// # Errors
/// Config, connection or database errors; an interrupted scan; and, after printing the
/// report, [`NotClean`] when rows are left or disagree (its own exit code).
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let (config, target) = common::target(config_path, &args.rule, &args.common)?;
    let (repaired, report) = common::runtime()?.block_on(async {
        let client = target.connect(&config).await?;
        let stop = common::stop_on_signal();
        let mut repaired = None;
        if args.repair {
            // A clean table needs one scan; an interrupted repair goes on first.
            if !repair::interrupted(&client, &target).await? {
                let report = scan(&client, &target, args.batch_size, &stop).await?;
                if report.ok() || !report.complete {
                    return anyhow::Ok((Some(None), report));
                }
                print_found(&report, args.common.json);
            }
            let opts = args.walk.options(args.batch_size, false);
            let mut view = View::new("repair");
            let done = repair::run(&client, &target, &opts, &stop, &mut |e| view.event(e)).await;
            view.finish();
            let (outcome, progress) = done?;
            if outcome == WalkOutcome::Stopped {
                anyhow::bail!(
                    "repair of rule {} stopped after rewriting {} rows; rerun the same command to continue from the checkpoint",
                    target.rule.id,
                    progress.run_rows_done
                );
            }
            repaired = Some(Some(progress));
        }
        let report = scan(&client, &target, args.batch_size, &stop).await?;
        anyhow::Ok((repaired, report))
    })?;
    if args.common.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = report.ok().into();
        if let Some(p) = &repaired {
            value["repaired"] = p.as_ref().map_or(0, |p| p.run_rows_done).into();
        }
        common::print_json(&value)?;
    } else {
        if let Some(Some(p)) = &repaired {
            print_repair(&target.rule.id, p);
        }
        print_text(&report);
    }
    if report.ok() {
        return Ok(());
    }
    if !report.complete {
        anyhow::bail!(
            "verify of rule {} was interrupted before the end of the table; nothing was recorded",
            report.rule
        );
    }
    Err(NotClean {
        rule: report.rule.clone(),
        not_migrated: report.not_migrated,
        mismatched: report.mismatched,
    }
    .into())
}

/// The scan, with a counter on a terminal.
async fn scan(
    client: &tokio_postgres::Client,
    target: &crate::ops::Target,
    batch_size: i64,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Report> {
    let tty = std::io::stderr().is_terminal();
    let mut observe = |r: &Report| {
        if tty {
            eprint!(
                "\r\x1b[2Kverify {}: {} rows scanned",
                r.rule, r.rows_scanned
            );
        }
    };
    let report = verify::run(client, target, batch_size, stop, &mut observe).await;
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(report?)
}

/// What the scan before a repair found, on stderr (stdout carries the final report).
fn print_found(r: &Report, json: bool) {
    if !json {
        eprintln!(
            "verify {}: {} rows not migrated and {} disagreeing; repairing",
            r.rule, r.not_migrated, r.mismatched
        );
    }
}

fn print_repair(rule: &str, p: &Progress) {
    println!(
        "repair of rule {rule}: {} rows rewritten from the source of truth, {} visited",
        p.run_rows_done, p.run_rows_scanned
    );
}

fn print_text(r: &Report) {
    println!(
        "rule {} on {}: {} rows scanned",
        r.rule, r.table, r.rows_scanned
    );
    println!("  not migrated: {}", r.not_migrated);
    if !r.sample_not_migrated.is_empty() {
        println!("    e.g. keys {}", r.sample_not_migrated.join(", "));
    }
    println!("  disagreeing:  {}", r.mismatched);
    if !r.sample_mismatched.is_empty() {
        println!("    e.g. keys {}", r.sample_mismatched.join(", "));
    }
    if r.ok() {
        println!("OK: both shapes agree on every row; contracting is safe");
    } else if r.not_migrated > 0 && r.mismatched == 0 {
        println!("NOT OK: run `pgshim backfill {}` first", r.rule);
    } else if r.mismatched > 0 {
        println!(
            "NOT OK: rows disagree; inspect them (and writes that bypass pgshim), then `pgshim verify {} --repair` rewrites them from the phase's source of truth",
            r.rule
        );
    }
}
