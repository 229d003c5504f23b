//! The `pgshim` command line.
mod backfill;
mod common;
mod demo;
mod exit;
mod flip;
mod plan;
mod reload;
mod rules;
mod serve;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

pub use exit::{EXIT_FAILED, EXIT_NOT_CLEAN, EXIT_USAGE};

/// pgshim: a Postgres proxy that rewrites SQL for expand/contract column migrations.
#[derive(Debug, Parser)]
#[command(
    name = "pgshim",
    version,
    about,
    after_help = "Example:\n  pgshim --config /etc/pgshim/proxy.toml serve\n\nExit codes: 0 done, 1 failed, 2 usage error, 3 verify found rows not clean."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "proxy.toml",
        env = "PGSHIM_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format; `json` also makes errors one JSON object on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    #[command(after_help = "Example:\n  pgshim serve --config proxy.toml --log-format json")]
    Serve,
    /// Ask a running pgshim to reload its config file (POST /reload on `[admin] listen`).
    #[command(after_help = "Example:\n  pgshim reload --config proxy.toml")]
    Reload(reload::Args),
    /// Fill the new columns of rows that have not migrated, in resumable batches.
    #[command(
        after_help = "Example:\n  pgshim backfill users-full-name --batch-size 5000 --max-replica-lag 10s"
    )]
    Backfill(backfill::Args),
    /// Check that both shapes agree on every row; exit 0 only when they do.
    #[command(
        after_help = "Example:\n  pgshim verify users-full-name && echo \"safe to contract\"\n\nExit codes: 0 clean, 1 failed, 2 usage error, 3 rows not migrated or disagreeing."
    )]
    Verify(verify::Args),
    /// Print (or --apply) the DDL of a rule's expand or contract step, the safe way.
    #[command(after_help = "Example:\n  pgshim plan users-full-name --phase expand --apply")]
    Plan(plan::Args),
    /// Show every rule's phase, shapes, backfill progress, last verify and next step.
    #[command(after_help = "Example:\n  pgshim status --json")]
    Status(status::Args),
    /// Manage the rules table (pgshim.rules) that instances with `[rules] source = "database"` follow.
    #[command(after_help = "Example:\n  pgshim rules push --config proxy.toml")]
    Rules(rules::Args),
    /// Change one rule's phase in pgshim.rules and wait until every live instance applied it.
    #[command(
        after_help = "Example:\n  pgshim flip users-full-name --to migrate --timeout 10s\n\nExit codes: 0 every live instance applied it, 1 refused or instances lagging (named), 2 usage error."
    )]
    Flip(flip::Args),
    /// Start a throwaway Postgres with a table mid-migration and pgshim in front of it.
    #[command(after_help = "Example:\n  pgshim demo --port 0")]
    Demo(demo::Args),
}

// === impl Command ===

impl Command {
    /// Whether the subcommand was asked for JSON output (`--json`).
    fn json(&self) -> bool {
        match self {
            Command::Serve | Command::Demo(_) | Command::Rules(_) | Command::Flip(_) => false,
            Command::Reload(a) => a.json,
            Command::Backfill(a) => a.common.json,
            Command::Verify(a) => a.common.json,
            Command::Plan(a) => a.common.json,
            Command::Status(a) => a.common.json,
        }
    }
}

/// Runs the command line.
///
/// # Returns
/// The process exit code: 0 on success (including a graceful shutdown), else
/// [`EXIT_FAILED`], [`EXIT_USAGE`] or [`EXIT_NOT_CLEAN`]. The error is printed
/// once on stderr: `pgshim: …`, or one JSON object with `--log-format json`
/// or `--json`.
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let command = cli.command.unwrap_or(Command::Serve);
    let json = cli.log_format == LogFormat::Json || command.json();
    let result = match &command {
        Command::Serve => serve::run(&cli.config),
        Command::Reload(args) => reload::run(&cli.config, args),
        Command::Backfill(args) => backfill::run(&cli.config, args),
        Command::Verify(args) => verify::run(&cli.config, args),
        Command::Plan(args) => plan::run(&cli.config, args),
        Command::Status(args) => status::run(&cli.config, args),
        Command::Rules(args) => rules::run(&cli.config, args),
        Command::Flip(args) => flip::run(&cli.config, args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn every_subcommand_help_has_an_example() {
        let mut cli = Cli::command();
        cli.build();
        assert!(cli.render_long_help().to_string().contains("Example:"));
        let mut names = Vec::new();
        for sub in cli.get_subcommands_mut() {
            if sub.get_name() == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Example:\n  pgshim "),
                "{}:\n{help}",
                sub.get_name()
            );
            names.push(sub.get_name().to_owned());
        }
        assert!(names.len() >= 7, "{names:?}");
    }
}
