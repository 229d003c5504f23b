//! pgbench through pgshim for a few seconds in each query mode (simple,
//! extended, prepared), with `pgbench -i` (COPY) first: no transaction may fail.
use crate::support::pg::{cluster, SCRAM_PASSWORD, SCRAM_USER};
use crate::support::proxy::proxy;
use crate::support::tools::run;

/// The value after `label` on its line of pgbench's report.
fn number_after(report: &str, label: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with(label))?;
    line[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

async fn bench(mode: &str) {
    let db = cluster().create_database("bench", SCRAM_USER).await;
    let proxy = proxy().start().await;
    let port = proxy.port().to_string();
    let common = ["-h", "127.0.0.1", "-p", &port, "-U", SCRAM_USER];

    let mut init = common.to_vec();
    init.extend(["-i", "-s", "1", "-q", &db]);
    let out = run("pgbench", &init, Some(SCRAM_PASSWORD), 120).await;
    assert!(
        out.status.success(),
        "pgbench -i through pgshim failed: {out:?}"
    );

    let mut args = common.to_vec();
    args.extend(["-T", "3", "-c", "4", "-j", "2", "-M", mode, "-n", &db]);
    let out = run("pgbench", &args, Some(SCRAM_PASSWORD), 120).await;
    assert!(out.status.success(), "pgbench -M {mode} failed: {out:?}");
    let report = &out.stdout;
    assert!(report.contains(&format!("query mode: {mode}")), "{report}");
    let processed = number_after(report, "number of transactions actually processed:")
        .unwrap_or_else(|| panic!("no transaction count in: {out:?}"));
    assert!(processed > 0, "{report}");
    // pgbench 15+ reports failures; older versions abort the client instead,
    // which the exit status above catches.
    if let Some(failed) = number_after(report, "number of failed transactions:") {
        assert_eq!(failed, 0, "{report}");
    }
    assert!(!out.stderr.contains("aborted"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_mode() {
    bench("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_mode() {
    bench("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode() {
    bench("prepared").await;
}
