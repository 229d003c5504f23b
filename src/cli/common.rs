//! What the migration subcommands share: `--database`/`--json`, the runtime, and
//! Ctrl-C/SIGTERM as a cancellation token (finish the current step, then stop).
use std::path::Path;

use anyhow::Context as _;
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
    let config = Config::load(config_path)?;
    let target = Target::resolve(&config, rule_id, args.database.as_deref())?;
    Ok((config, target))
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
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("\npgshim: stopping after the current step (signal received)");
        child.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot encode JSON output")?
    );
    Ok(())
}
