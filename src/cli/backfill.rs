//! `pgshim backfill RULE`: run, pause or resume the backfill of a rule's new columns,
//! with a progress bar on a terminal and plain progress lines otherwise.
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::common::{self, OpsArgs};
use crate::ops::backfill::{self, Event, Options, Progress, WalkOutcome, DEFAULT_BATCH_SIZE};
use crate::ops::checkpoint::{self, State};
use crate::ops::sql::{human, parse_duration};
use crate::ops::throttle::Throttle;

/// `pgshim backfill` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The rule's id.
    pub rule: String,
    #[command(flatten)]
    pub common: OpsArgs,
    /// Keys visited per batch (one short transaction each).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: i64,
    #[command(flatten)]
    pub walk: WalkArgs,
    /// Forget the checkpoint and start again from the first key.
    #[arg(long)]
    pub restart: bool,
    /// Pause a running backfill (from another shell) and exit.
    #[arg(long, conflicts_with_all = ["resume", "restart"])]
    pub pause: bool,
    /// Resume a paused backfill and exit.
    #[arg(long, conflicts_with = "restart")]
    pub resume: bool,
}

/// How batches that rewrite rows are paced and retried; shared by `backfill` and
/// `verify --repair`.
#[derive(Debug, Clone, clap::Args)]
pub struct WalkArgs {
    /// Milliseconds to sleep between batches.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub sleep: u64,
    /// `auto`: adapt the pause between batches to batch latency and to sessions
    /// waiting for the batch's locks, so live traffic keeps its speed; `off`: no
    /// pause beyond --sleep.
    #[arg(long, value_name = "MODE", value_parser = parse_throttle, conflicts_with = "sleep")]
    pub throttle: Option<Throttle>,
    /// Wait while any replica in pg_stat_replication lags more than this (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_replica_lag: Option<Duration>,
    /// lock_timeout of each batch, in milliseconds; a batch that times out is retried.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub lock_timeout: u64,
    /// Attempts per batch before giving up on lock conflicts.
    #[arg(long, default_value_t = 100)]
    pub max_retries: u32,
}

impl WalkArgs {
    /// The walk options for `batch_size` keys per batch.
    pub fn options(&self, batch_size: i64, restart: bool) -> Options {
        let throttle = match self.throttle {
            Some(Throttle::Auto) => Throttle::Auto,
            _ => Throttle::Sleep(Duration::from_millis(self.sleep)),
        };
        Options {
            batch_size,
            throttle,
            lock_timeout: Duration::from_millis(self.lock_timeout),
            max_attempts: self.max_retries,
            max_replica_lag: self.max_replica_lag,
            restart,
        }
    }
}

fn parse_throttle(text: &str) -> Result<Throttle, String> {
    text.parse()
}

/// Runs the subcommand.
///
/// # Errors
/// Config, connection or database errors, worded for the operator.
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let (config, target) = common::target(config_path, &args.rule, &args.common)?;
    common::runtime()?.block_on(async {
        let client = target.connect(&config).await?;
        if args.pause || args.resume {
            checkpoint::ensure_schema(&client).await?;
            let state = if args.pause {
                State::Paused
            } else {
                State::Running
            };
            let cp = checkpoint::set_state(&client, &target.rule.id, state).await?;
            if args.common.json {
                return common::print_json(&serde_json::json!({
                    "rule": target.rule.id, "state": cp.state,
                    "rows_done": cp.rows_done, "rows_scanned": cp.rows_scanned,
                }));
            }
            println!(
                "backfill of rule {} is now {} ({} rows filled so far)",
                target.rule.id,
                cp.state.as_str(),
                cp.rows_done
            );
            return Ok(());
        }
        let opts = args.walk.options(args.batch_size, args.restart);
        let stop = common::stop_on_signal();
        let mut view = View::new("backfill");
        let (outcome, progress) =
            backfill::run(&client, &target, &opts, &stop, &mut |e| view.event(e)).await?;
        view.finish();
        report(&target.rule.id, outcome, &progress, args.common.json)
    })
}

fn report(rule: &str, outcome: WalkOutcome, p: &Progress, json: bool) -> anyhow::Result<()> {
    if json {
        return common::print_json(&serde_json::json!({ "outcome": outcome, "progress": p }));
    }
    let run = format!(
        "{} rows filled, {} visited in {}",
        p.run_rows_done,
        p.run_rows_scanned,
        human(Duration::from_secs_f64(p.elapsed_secs))
    );
    if let Some(left) = p.left_behind {
        println!(
            "backfill of rule {rule} had finished, but {left} rows were not migrated (written by clients that bypass pgshim): walking the table again"
        );
    }
    match outcome {
        WalkOutcome::Done => println!(
            "backfill of rule {rule} done: {run} ({} filled in total); next: pgshim verify {rule}",
            p.rows_done
        ),
        WalkOutcome::AlreadyDone => println!(
            "backfill of rule {rule} was already done ({} rows filled) and no row is left unmigrated; `--restart` walks the table again",
            p.rows_done
        ),
        WalkOutcome::Stopped => println!(
            "backfill of rule {rule} stopped: {run}; rerun the same command to continue from the checkpoint"
        ),
    }
    Ok(())
}

/// Renders events: an `indicatif` bar on a terminal (fits the width, redrawn in
/// place, messages printed above it), a line every few seconds otherwise.
pub(super) struct View {
    /// What runs: `backfill` or `repair`.
    label: &'static str,
    bar: Option<ProgressBar>,
    /// Whether the bar has seen a batch (and been moved to the checkpoint).
    started: bool,
    last_line: Option<Instant>,
}

/// The bar's layout; `{wide_bar}` takes what the text leaves of the terminal
/// width, so the line never wraps.
const BAR_TEMPLATE: &str =
    "{wide_bar} {percent:>3}% {human_pos}/{human_len} rows  {per_sec}  ETA {eta}";

impl View {
    pub(super) fn new(label: &'static str) -> View {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(BAR_TEMPLATE)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            ProgressBar::new(0).with_style(style)
        });
        View {
            label,
            bar,
            started: false,
            last_line: None,
        }
    }

    pub(super) fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Batch(p) => self.progress(p),
            Event::Paused => self.line("paused (run `pgshim backfill RULE --resume` to continue)"),
            Event::Resumed => self.line("resumed"),
            Event::Retry {
                attempt,
                wait,
                error,
            } => self.line(&format!(
                "lock conflict (attempt {attempt}), retrying in {} ms: {error}",
                wait.as_millis()
            )),
            Event::ReplicaLag { lag } => self.line(&format!(
                "waiting: a replica lags {:.1} s (over --max-replica-lag)",
                lag.as_secs_f64()
            )),
        }
    }

    fn progress(&mut self, p: &Progress) {
        let scanned = u64::try_from(p.rows_scanned).unwrap_or(0);
        if let Some(bar) = &self.bar {
            // The estimate comes from planner statistics and can be low.
            let total = u64::try_from(p.total_estimate).unwrap_or(0).max(scanned);
            bar.set_length(total);
            if !self.started {
                // Rows a previous run scanned must not count towards this run's
                // rate and ETA.
                let before = u64::try_from(p.rows_scanned - p.run_rows_scanned).unwrap_or(0);
                bar.set_position(before);
                bar.reset_eta();
                self.started = true;
            }
            bar.set_position(scanned);
            return;
        }
        if self
            .last_line
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        let pct = if p.total_estimate > 0 {
            (p.rows_scanned as f64 * 100.0 / p.total_estimate as f64).min(100.0)
        } else {
            100.0
        };
        let eta = p.eta().map_or_else(|| "?".into(), human);
        let duty = if p.duty < 1.0 {
            format!(
                "  throttled to {:.0}% of the time, batches of {}",
                p.duty * 100.0,
                p.batch_size
            )
        } else {
            String::new()
        };
        eprintln!(
            "{} {}: {pct:5.1}%  {} rewritten  {} visited  {:.0} rows/s  ETA {eta}{duty}",
            self.label,
            p.rule,
            p.rows_done,
            p.rows_scanned,
            p.rate()
        );
        self.last_line = Some(Instant::now());
    }

    fn line(&mut self, text: &str) {
        let label = self.label;
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{label}: {text}")),
            None => eprintln!("{label}: {text}"),
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
