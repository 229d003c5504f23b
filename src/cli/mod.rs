//! The `pgshim` command line.
mod backfill;
mod common;
mod demo;
mod plan;
mod reload;
mod serve;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

/// pgshim: a Postgres proxy that rewrites SQL for expand/contract column migrations.
#[derive(Debug, Parser)]
#[command(name = "pgshim", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "proxy.toml",
        env = "PGSHIM_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format.
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
    Serve,
    /// Ask a running pgshim to reload its config file (POST /reload on [admin] listen).
    Reload,
    /// Fill the new columns of rows that have not migrated, in resumable batches.
    Backfill(backfill::Args),
    /// Check that both shapes agree on every row; exit 0 only when they do.
    Verify(verify::Args),
    /// Print (or --apply) the DDL of a rule's expand or contract step, the safe way.
    Plan(plan::Args),
    /// Show every rule's phase, shapes, backfill progress, last verify and next step.
    Status(status::Args),
    /// Start a throwaway Postgres with a table mid-migration and pgshim in front of it.
    Demo(demo::Args),
}

/// Runs the command line.
///
/// # Returns
/// The process exit code: 0 on success (including a graceful shutdown).
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run(&cli.config),
        Command::Reload => reload::run(&cli.config),
        Command::Backfill(args) => backfill::run(&cli.config, &args),
        Command::Verify(args) => verify::run(&cli.config, &args),
        Command::Plan(args) => plan::run(&cli.config, &args),
        Command::Status(args) => status::run(&cli.config, &args),
        Command::Demo(args) => demo::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pgshim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
