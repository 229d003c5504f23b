//! The migration subcommands (`backfill`, `verify`, `plan`, `status`) run as the real
//! `pgshim` binary against the test cluster, with a `proxy.toml` holding one rule.
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

use super::pg::{run_dir, DB};
use super::proxy::proxy;
use super::unique_name;

/// A config file for the test cluster with `rules` (`[[rule]]` tables) appended.
pub fn ops_config(rules: &str) -> PathBuf {
    let path = run_dir().join(format!("{}.toml", unique_name("ops")));
    std::fs::write(&path, proxy().rules(rules).toml("127.0.0.1:0")).expect("write ops config");
    path
}

/// A rename rule `old` -> `new` on `table` in the test database.
pub fn rename_rule(id: &str, table: &str, old: &str, new: &str, phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ndatabase = \"{DB}\"\ntable = \"{table}\"\n\
         old = \"{old}\"\nnew = \"{new}\"\nphase = \"{phase}\"\n"
    )
}

/// What a finished subcommand printed.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// `pgshim <args> --config <config>` as a child process, output piped.
pub fn command(config: &PathBuf, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshim"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env_remove("PGSHIM_DATABASE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `pgshim <args>` to completion (at most 60 s).
pub async fn run(config: &PathBuf, args: &[&str]) -> Run {
    let out = super::within(
        60,
        &format!("pgshim {args:?}"),
        command(config, args).output(),
    )
    .await
    .expect("run the pgshim binary");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts `pgshim <args>` in the background.
pub fn spawn(config: &PathBuf, args: &[&str]) -> Child {
    command(config, args)
        .spawn()
        .expect("start the pgshim binary")
}

/// Waits (at most 60 s) for a background run to exit and collects its output.
pub async fn finish(child: Child) -> Run {
    let out = super::within(60, "pgshim subcommand exits", child.wait_with_output())
        .await
        .expect("wait for pgshim");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(rows_done, rows_scanned, state)` of a rule's backfill checkpoint, if any.
pub async fn checkpoint(client: &tokio_postgres::Client, rule: &str) -> Option<(i64, i64, String)> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgshim.backfill_progress') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    client
        .query_opt(
            "SELECT rows_done, rows_scanned, state FROM pgshim.backfill_progress WHERE rule_id = $1",
            &[&rule],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}
