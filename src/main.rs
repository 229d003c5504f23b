//! The `pgshim` binary: parse the command line and hand over to [`pgshim::cli`].
use clap::Parser;

fn main() -> std::process::ExitCode {
    pgshim::cli::run(pgshim::cli::Cli::parse())
}
