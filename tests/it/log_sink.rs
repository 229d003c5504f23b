//! A broken log sink is survived: with stderr a pipe whose reader has gone
//! (as with `pgshim serve 2>&1 | head`), sessions continue and SIGTERM
//! drains with exit 0.
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::binary::signal;
use crate::support::pg::{client_config, free_port, run_dir, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::{connect, unique_name, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stderr_neither_stops_sessions_nor_shutdown() {
    let port = free_port();
    let config = run_dir().join(format!("{}.toml", unique_name("log_sink")));
    std::fs::write(&config, proxy().toml(&format!("127.0.0.1:{port}"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshim"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("PGSHIM_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the pgshim binary");
    within(30, "pgshim listening", async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "pgshim exited at startup"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The reader goes away: every later log write fails with EPIPE.
    drop(child.stderr.take());

    let cfg = client_config("127.0.0.1", port, TRUST_USER, None);
    for _ in 0..3 {
        let client = within(20, "connect", connect(&cfg))
            .await
            .expect("a session after stderr broke");
        let row = client.query_one("SELECT 41 + 1", &[]).await.expect("query");
        assert_eq!(row.get::<_, i32>(0), 42);
    }
    let held = within(20, "connect", connect(&cfg)).await.expect("connect");
    held.batch_execute("SELECT 1").await.expect("query");

    signal(&child, "TERM");
    let status = within(30, "pgshim exits on SIGTERM", child.wait())
        .await
        .expect("wait for pgshim");
    assert_eq!(status.code(), Some(0), "{status}");
}
