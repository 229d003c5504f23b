//! What the migration subcommands share: `--database`/`--json`, the runtime, and
//! Ctrl-C/SIGTERM (and SIGHUP for the demo) as a cancellation token (finish the
//! current step, then stop).
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ops::Target;

/// Options every migration subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Database to work in, for rules without a `database` key.
    #[arg(long, env = "PGSHIM_DATABASE")]
    pub database: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Loads the config and resolves `rule_id` in it.
pub fn target(
    config_path: &Path,
    rule_id: &str,
    args: &OpsArgs,
) -> anyhow::Result<(Config, Target)> {
    let config = load(config_path)?;
    let target = Target::resolve(&config, rule_id, args.database.as_deref())?;
    Ok((config, target))
}

/// Loads the config; with `[rules] source = "database"`, its rules are the
/// `pgshim.rules` table's, as the running instances have them.
pub fn load(config_path: &Path) -> anyhow::Result<Config> {
    let mut config = Config::load(config_path)?;
    if config.rules.source == crate::config::RulesSource::Database {
        runtime()?.block_on(crate::fleet::rules::overlay(&mut config))?;
    }
    Ok(config)
}

/// A single-threaded runtime: operations run one statement at a time.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A token cancelled on the first SIGINT or SIGTERM. Call inside the runtime.
pub fn stop_on_signal() -> CancellationToken {
    stop_on(&[SignalKind::terminate(), SignalKind::interrupt()])
}

/// As [`stop_on_signal`], and also on SIGHUP: a terminal closing must not leave
/// what the command started behind.
pub fn stop_on_signal_or_hangup() -> CancellationToken {
    stop_on(&[
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ])
}

fn stop_on(kinds: &[SignalKind]) -> CancellationToken {
    let token = CancellationToken::new();
    let mut listening = false;
    for kind in kinds {
        match signal(*kind) {
            Ok(mut stream) => {
                listening = true;
                let token = token.clone();
                tokio::spawn(async move {
                    if stream.recv().await.is_some() {
                        stopping(&token);
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for a stop signal"),
        }
    }
    if !listening {
        let token = token.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stopping(&token);
            }
        });
    }
    token
}

fn stopping(token: &CancellationToken) {
    if !token.is_cancelled() {
        // The terminal may be gone (SIGHUP): a failed write must not skip the cancel.
        let _ = writeln!(
            std::io::stderr(),
            "\npgshim: stopping after the current step (signal received)"
        );
    }
    token.cancel();
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot encode JSON output")?
    );
    Ok(())
}
