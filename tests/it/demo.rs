//! `pgshim demo`: its config is a real file with `[admin]` (so the migration can
//! be carried on with the other subcommands), and closing its terminal (SIGHUP)
//! stops Postgres and deletes the temporary directory as Ctrl-C does.
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::binary::signal;
use crate::support::within;

/// The text between `start` and the next `end` in `line`.
fn between<'a>(line: &'a str, start: &str, end: char) -> &'a str {
    let from = line
        .find(start)
        .map(|i| i + start.len())
        .unwrap_or_else(|| panic!("no {start:?} in {line}"));
    let rest = &line[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Whether process `pid` runs: a zombie (exited, not yet reaped by whichever
/// process adopted it) does not.
fn runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[tokio::test]
async fn demo_writes_its_config_and_cleans_up_on_sighup() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pgshim"))
        .args(["demo", "--port", "0"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pgshim demo");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut first, mut config) = (String::new(), String::new());
    within(120, "the demo prints its config path", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("pgshim demo:") {
                first = line;
            } else if line.starts_with("config: ") {
                config = line;
                return;
            }
        }
        panic!("the demo exited before printing its config");
    })
    .await;
    let dir = PathBuf::from(between(&first, "(data in ", ')'));
    let path = PathBuf::from(between(&config, "config: ", ' '));
    assert!(path.starts_with(&dir), "{config} not in {}", dir.display());
    let loaded = pgshim::Config::load(&path).unwrap();
    let admin = loaded.admin.expect("the demo config has [admin]");
    TcpStream::connect(&admin.listen)
        .await
        .expect("admin API up");
    // The postmaster's pid, not its port: once it is free, a cluster or proxy
    // of a test running alongside may listen on the same port.
    let postmaster = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap();
    let postmaster = postmaster.lines().next().unwrap().to_owned();
    // Keep reading so a full pipe never blocks the demo.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    signal(&demo, "HUP");
    let status = within(90, "the demo exits on SIGHUP", demo.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    within(10, "the demo's Postgres exits", async {
        while runs(&postmaster) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}
