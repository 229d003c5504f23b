//! The PostgreSQL command-line clients, `psql` and `pgbench`, run as child
//! processes (asynchronously, so the in-process pgshim keeps serving) with an
//! environment that cannot leak the developer's own settings into the test.
use std::process::{ExitStatus, Stdio};

use tokio::process::Command;

use super::pg::cluster;

/// What a client program did.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Libpq variables cleared so a developer's environment cannot change a test.
const LIBPQ_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLNEGOTIATION",
    "PGCHANNELBINDING",
    "PGOPTIONS",
    "PGAPPNAME",
];

/// Runs `program` (`psql`, `pgbench`) with `args`; `password` goes in
/// `PGPASSWORD`. Fails the test if it runs longer than `timeout_secs`.
pub async fn run(
    program: &str,
    args: &[&str],
    password: Option<&str>,
    timeout_secs: u64,
) -> Output {
    let mut cmd = command(program, args, password);
    let what = format!("{program} {args:?}");
    let out = super::within(timeout_secs, &what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command for `program` with `args`, output piped, killed when
/// dropped, in a clean libpq environment; for tests that must signal it.
pub fn command(program: &str, args: &[&str], password: Option<&str>) -> Command {
    let mut cmd = Command::new(cluster().tool(program));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .current_dir(super::pg::run_dir());
    for var in LIBPQ_VARS {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PSQLRC", "/dev/null");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    cmd
}

/// Runs `psql -X -A -t -v ON_ERROR_STOP=1 <conninfo> <args>`.
pub async fn psql(conninfo: &str, password: Option<&str>, args: &[&str]) -> Output {
    let mut all = vec!["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo];
    all.extend_from_slice(args);
    run("psql", &all, password, 60).await
}
