//! The reload acceptance test: pgbench writes through pgshim with scripts in
//! both shapes of a mapped table (`pgbench_accounts.abalance` renamed to
//! `balance`), in simple and prepared mode at once (16 clients in all), while
//! the rule flips between expand and migrate more than 100 times with
//! `POST /reload` (pgbench runs in rounds of a few seconds until then). No transaction may fail, and afterwards every row's old
//! and new columns agree and equal the sum of the deltas written to it (each
//! transaction also logs its delta in `pgbench_history`, which is unmapped).
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::support::pg::{cluster, run_dir, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;
use crate::support::tools::{run, Output};
use crate::support::unique_name;

/// Accounts the scripts touch: few, so rows are written in both phases.
const ACCOUNTS: u32 = 2000;
/// pgbench's run time per round, in seconds.
const SECONDS: &str = "5";
/// Rounds of pgbench at least and at most: rounds go on until the rule has
/// flipped [`FLIPS`] times, so a slow machine gets its flips too.
const ROUNDS: (u32, u32) = (2, 10);
/// Flips required during the run.
const FLIPS: u32 = 100;
/// Pause between two flips.
const FLIP_PAUSE: Duration = Duration::from_millis(20);

/// A write transaction in one shape (`column` is `abalance` or `balance`).
fn script(column: &str) -> String {
    format!(
        "\\set aid random(1, {ACCOUNTS})\n\
         \\set delta random(-5000, 5000)\n\
         BEGIN;\n\
         UPDATE pgbench_accounts SET {column} = {column} + :delta WHERE aid = :aid;\n\
         SELECT {column} FROM pgbench_accounts WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\n\
         END;\n"
    )
}

fn rule(database: &str, id: &str, phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ndatabase = \"{database}\"\ntable = \"pgbench_accounts\"\n\
         old = \"abalance\"\nnew = \"balance\"\nphase = \"{phase}\"\n"
    )
}

/// The value after `label` on its line of pgbench's report.
fn number_after(report: &str, label: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with(label))?;
    line[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Checks a pgbench run: success, transactions done, none failed; returns
/// the transactions done.
fn processed(mode: &str, out: &Output) -> u64 {
    assert!(out.status.success(), "pgbench -M {mode} failed: {out:?}");
    let report = &out.stdout;
    let done = number_after(report, "number of transactions actually processed:")
        .unwrap_or_else(|| panic!("no transaction count in: {out:?}"));
    assert!(done > 0, "{report}");
    if let Some(failed) = number_after(report, "number of failed transactions:") {
        assert_eq!(failed, 0, "pgbench -M {mode}: {report}");
    }
    assert!(
        !out.stderr.contains("aborted"),
        "pgbench -M {mode}: {out:?}"
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_both_shapes_while_flipping_expand_and_migrate() {
    let db = cluster().create_database("flipbench", TRUST_USER).await;
    let direct_port = cluster().port.to_string();
    let init = [
        "-h",
        "127.0.0.1",
        "-p",
        &direct_port,
        "-U",
        TRUST_USER,
        "-i",
        "-s",
        "1",
        "-q",
        &db,
    ];
    let out = run("pgbench", &init, None, 120).await;
    assert!(out.status.success(), "pgbench -i: {out:?}");
    let mut cfg = cluster().direct(TRUST_USER, None);
    cfg.dbname(&db);
    let direct = crate::support::connect(&cfg).await.expect("direct");
    direct
        .batch_execute(
            "ALTER TABLE pgbench_accounts ADD COLUMN balance int; TRUNCATE pgbench_history;",
        )
        .await
        .expect("add the new column");

    let id = format!("{db}-balance");
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let old_script = run_dir().join(format!("{}.sql", unique_name("old_shape")));
    let new_script = run_dir().join(format!("{}.sql", unique_name("new_shape")));
    std::fs::write(&old_script, script("abalance")).unwrap();
    std::fs::write(&new_script, script("balance")).unwrap();
    let reprepared_before = proxy
        .admin
        .metrics()
        .await
        .get("pgshim_statements_reprepared_total", &[]);

    let port = proxy.addr.port().to_string();
    let bench = |mode: &'static str| {
        let (port, db) = (port.clone(), db.clone());
        let (old, new) = (old_script.clone(), new_script.clone());
        async move {
            let old = format!("{}", old.display());
            let new = format!("{}", new.display());
            let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-U", TRUST_USER, "-n"];
            args.extend(["-c", "8", "-j", "2", "-T", SECONDS, "-M", mode]);
            args.extend(["-f", &old, "-f", &new, &db]);
            run("pgbench", &args, None, 90).await
        }
    };
    let done = AtomicBool::new(false);
    let flipped = AtomicU32::new(0);
    let benches = async {
        let mut transactions = 0;
        for round in 1..=ROUNDS.1 {
            let (simple, prepared) = tokio::join!(bench("simple"), bench("prepared"));
            transactions += processed("simple", &simple) + processed("prepared", &prepared);
            if round >= ROUNDS.0 && flipped.load(Ordering::SeqCst) >= FLIPS {
                break;
            }
        }
        done.store(true, Ordering::SeqCst);
        transactions
    };
    let flips = async {
        let mut refused = Vec::new();
        let mut phase = "expand";
        while !done.load(Ordering::SeqCst) {
            phase = if phase == "expand" {
                "migrate"
            } else {
                "expand"
            };
            proxy.replace_rules(&rule(&db, &id, phase));
            let (status, body) = proxy.admin.post_reload().await;
            if status == 200 {
                flipped.fetch_add(1, Ordering::SeqCst);
            } else {
                refused.push(body);
            }
            tokio::time::sleep(FLIP_PAUSE).await;
        }
        refused
    };
    let (transactions, refused) = tokio::join!(benches, flips);
    let flips = flipped.load(Ordering::SeqCst);
    eprintln!("{flips} flips during the run");
    assert!(refused.is_empty(), "refused flips: {refused:?}");
    assert!(flips >= FLIPS, "only {flips} flips during the run");
    let reprepared = proxy
        .admin
        .metrics()
        .await
        .get("pgshim_statements_reprepared_total", &[]);
    assert!(
        reprepared > reprepared_before,
        "prepared mode across {flips} flips re-prepared nothing"
    );

    let count = |sql: &'static str| {
        let direct = &direct;
        async move {
            direct
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM pgbench_history").await as u64,
        transactions,
        "every committed transaction logged its delta once"
    );
    let disagree = count(
        "SELECT count(*) FROM pgbench_accounts a
           LEFT JOIN (SELECT aid, sum(delta) AS s FROM pgbench_history GROUP BY aid) h USING (aid)
          WHERE a.abalance <> coalesce(h.s, 0)
             OR (h.s IS NOT NULL AND a.balance IS DISTINCT FROM a.abalance)
             OR (h.s IS NULL AND a.balance IS NOT NULL AND a.balance <> a.abalance)",
    )
    .await;
    assert_eq!(
        disagree, 0,
        "rows whose abalance and balance disagree or lost a write ({transactions} transactions, {flips} flips)"
    );
    let touched = count("SELECT count(DISTINCT aid) FROM pgbench_history").await;
    eprintln!(
        "{transactions} transactions on {touched} accounts, {} re-prepares",
        reprepared - reprepared_before
    );
    assert!(touched > 0);
}
