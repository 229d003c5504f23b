//! The `pgshim` command line.
mod serve;

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
}

/// Runs the command line.
///
/// # Returns
/// The process exit code: 0 on success (including a graceful shutdown).
pub fn run(cli: Cli) -> ExitCode {
    logging::init(cli.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve::run(&cli.config),
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
