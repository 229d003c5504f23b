//! `pgshim backfill`: keyset batches that fill the new columns, checkpointed in the
//! `pgshim` schema. Concurrent writes through pgshim, kill -9 and resume, pause/resume
//! from another shell, a lock held by another session, composite keys, no key at all.
use std::time::Duration;

use crate::support::ops::{checkpoint, finish, ops_config, rename_rule, run, spawn};
use crate::support::pg::{cluster, SUPERUSER};
use crate::support::proxy::proxy;
use crate::support::{eventually, unique_name, within};

/// Creates `table (id serial PRIMARY KEY, name text, full_name text)` with `rows` rows
/// written before any rule existed (old shape only); returns the table name.
async fn users_table(rows: i32) -> String {
    let table = unique_name("bf_users");
    cluster()
        .admin()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id serial PRIMARY KEY, name text, full_name text);
             INSERT INTO {table} (name) SELECT 'user ' || g FROM generate_series(1, {rows}) g;
             INSERT INTO {table} (name) VALUES (NULL);"
        ))
        .await
        .unwrap();
    table
}

/// `(rows with full_name NULL but name set, rows where the shapes differ)`.
async fn unmigrated_and_wrong(table: &str) -> (i64, i64) {
    let row = cluster()
        .admin()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE full_name IS NULL AND name IS NOT NULL), \
                        count(*) FILTER (WHERE full_name IS DISTINCT FROM name) FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn backfill_under_concurrent_writes_through_pgshim_ends_with_verify_passing() {
    let table = users_table(4_000).await;
    let rule = rename_rule(&table, &table, "name", "full_name", "expand");
    let pgshim = proxy().rules(&rule).start().await;
    let app = pgshim.connect(SUPERUSER, None).await.unwrap();
    let config = ops_config(&rule);
    let backfill = spawn(
        &config,
        &["backfill", &table, "--batch-size", "150", "--sleep", "20"],
    );
    // An old-shape app keeps inserting and renaming users while the backfill runs.
    let writes = async {
        let mut n = 0;
        for i in 0..200 {
            let id = 1 + (i * 37) % 4_000;
            app.execute(
                &format!("UPDATE {table} SET name = name || '!' WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap();
            app.execute(
                &format!("INSERT INTO {table} (name) VALUES ($1)"),
                &[&format!("new {i}")],
            )
            .await
            .unwrap();
            n += 1;
        }
        n
    };
    let (writes, done) = tokio::join!(writes, finish(backfill));
    assert_eq!(writes, 200);
    assert!(done.status.success(), "backfill failed: {done:?}");
    assert!(done.stdout.contains("done"), "{}", done.stdout);
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
    let verify = run(&config, &["verify", &table]).await;
    assert!(verify.status.success(), "verify failed: {verify:?}");
    assert!(verify.stdout.contains("OK"), "{}", verify.stdout);
}

#[tokio::test]
async fn killed_backfill_resumes_without_redoing_or_missing_rows() {
    let table = users_table(3_000).await;
    let rule = rename_rule(&table, &table, "name", "full_name", "expand");
    let config = ops_config(&rule);
    let admin = cluster().admin().await;
    let mut first = spawn(
        &config,
        &["backfill", &table, "--batch-size", "100", "--sleep", "40"],
    );
    eventually(30, "the first run checkpoints 500 rows", || async {
        checkpoint(&admin, &table).await.is_some_and(|c| c.0 >= 500)
    })
    .await;
    first.start_kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().await.unwrap();
    let (done, scanned, state) = checkpoint(&admin, &table).await.unwrap();
    assert_eq!(state, "running");
    assert!(done < 3_000, "killed too late to test a resume: {done}");
    // The checkpoint commits with its batch: it counts exactly the rows filled.
    let filled: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE full_name IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(filled, done);
    assert_eq!(scanned, done, "every row visited so far had a name to copy");
    let second = run(
        &config,
        &["backfill", &table, "--batch-size", "100", "--json"],
    )
    .await;
    assert!(second.status.success(), "{second:?}");
    let json: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(json["outcome"], "done");
    // The rerun visited only the rows after the checkpoint, each once.
    assert_eq!(json["progress"]["run_rows_scanned"], 3_001 - scanned);
    assert_eq!(json["progress"]["rows_done"], 3_000);
    assert_eq!(json["progress"]["rows_scanned"], 3_001);
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
    let again = run(&config, &["backfill", &table]).await;
    assert!(
        again.status.success() && again.stdout.contains("already done"),
        "{again:?}"
    );
}

#[tokio::test]
async fn pause_and_resume_from_another_shell() {
    let table = users_table(2_000).await;
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "migrate"));
    let admin = cluster().admin().await;
    let mut running = spawn(
        &config,
        &["backfill", &table, "--batch-size", "100", "--sleep", "30"],
    );
    eventually(30, "the backfill has started", || async {
        checkpoint(&admin, &table).await.is_some_and(|c| c.0 > 0)
    })
    .await;
    let paused = run(&config, &["backfill", &table, "--pause"]).await;
    assert!(paused.status.success(), "{paused:?}");
    let at_pause = checkpoint(&admin, &table).await.unwrap();
    assert_eq!(at_pause.2, "paused");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        checkpoint(&admin, &table).await.unwrap(),
        at_pause,
        "no batch while paused"
    );
    assert!(
        running.try_wait().unwrap().is_none(),
        "a paused backfill waits, it does not exit"
    );
    let resumed = run(&config, &["backfill", &table, "--resume"]).await;
    assert!(resumed.status.success(), "{resumed:?}");
    let done = finish(running).await;
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stderr.contains("paused") && done.stderr.contains("resumed"),
        "{}",
        done.stderr
    );
    assert_eq!(checkpoint(&admin, &table).await.unwrap().2, "done");
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
}

#[tokio::test]
async fn lock_timeout_is_retried_until_the_other_session_lets_go() {
    let table = users_table(500).await;
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let mut holder = cluster().admin().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let backfill = spawn(&config, &["backfill", &table, "--lock-timeout", "100"]);
    let watcher = cluster().admin().await;
    // The backfill's batch waits on the lock, times out, and tries again.
    eventually(30, "the backfill retried a lock timeout", || async {
        let waits: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshim' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waits > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    tx.commit().await.unwrap();
    let done = within(60, "backfill completes", finish(backfill)).await;
    assert!(done.status.success(), "{done:?}");
    assert!(done.stderr.contains("lock conflict"), "{}", done.stderr);
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
}

#[tokio::test]
async fn composite_primary_key_is_walked_as_a_row_value() {
    let table = unique_name("bf_composite");
    cluster()
        .admin()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (tenant int, id int, name text, full_name text, PRIMARY KEY (tenant, id));
             INSERT INTO {table} (tenant, id, name)
               SELECT t, i, t || '-' || i FROM generate_series(1, 7) t, generate_series(1, 90) i;"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let done = run(
        &config,
        &["backfill", &table, "--batch-size", "41", "--json"],
    )
    .await;
    assert!(done.status.success(), "{done:?}");
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(json["progress"]["rows_done"], 630);
    assert_eq!(json["progress"]["rows_scanned"], 630);
    assert_eq!(json["progress"]["last_key"], serde_json::json!(["7", "90"]));
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
}

#[tokio::test]
async fn table_without_a_key_is_refused_with_what_to_do() {
    let table = unique_name("bf_nokey");
    cluster()
        .admin()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int, name text, full_name text);
             CREATE UNIQUE INDEX ON {table} (id);"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let out = run(&config, &["backfill", &table]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no primary key") && out.stderr.contains("add a primary key"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn sigint_finishes_the_batch_and_exits_zero() {
    let table = users_table(2_000).await;
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let admin = cluster().admin().await;
    let running = spawn(
        &config,
        &["backfill", &table, "--batch-size", "100", "--sleep", "50"],
    );
    eventually(30, "the backfill has started", || async {
        checkpoint(&admin, &table).await.is_some_and(|c| c.0 > 0)
    })
    .await;
    let pid = running.id().expect("backfill is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = finish(running).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("stopped"), "{}", out.stdout);
    let (done, _, state) = checkpoint(&admin, &table).await.unwrap();
    assert_eq!(state, "running", "a rerun continues");
    assert!(done < 2_000, "interrupted before the end: {done}");
    let filled: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE full_name IS NOT NULL"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        filled, done,
        "the batch in flight was committed with its checkpoint"
    );
}

#[tokio::test]
async fn rerun_after_done_fills_rows_written_around_pgshim_below_the_checkpoint() {
    let table = users_table(2_000).await;
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let first = run(&config, &["backfill", &table, "--batch-size", "300"]).await;
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        checkpoint(&cluster().admin().await, &table)
            .await
            .unwrap()
            .2,
        "done"
    );
    // A client that bypasses pgshim writes old-shape rows in the key range already
    // walked: below the first key, and in a hole in the middle.
    cluster()
        .admin()
        .await
        .batch_execute(&format!(
            "INSERT INTO {table} (id, name) VALUES (-5, 'ghost');
             DELETE FROM {table} WHERE id = 777;
             INSERT INTO {table} (id, name) VALUES (777, 'back again');"
        ))
        .await
        .unwrap();
    assert_eq!(unmigrated_and_wrong(&table).await, (2, 2));
    let rerun = run(
        &config,
        &["backfill", &table, "--batch-size", "300", "--json"],
    )
    .await;
    assert!(rerun.status.success(), "{rerun:?}");
    let json: serde_json::Value = serde_json::from_str(&rerun.stdout).unwrap();
    assert_eq!(json["outcome"], "done", "{json}");
    assert_eq!(json["progress"]["left_behind"], 2, "{json}");
    assert_eq!(json["progress"]["run_rows_done"], 2, "{json}");
    assert_eq!(json["progress"]["rows_done"], 2_002, "{json}");
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
    let again = run(&config, &["backfill", &table]).await;
    assert!(
        again.status.success() && again.stdout.contains("already done"),
        "{again:?}"
    );
}

#[tokio::test]
async fn throttle_auto_completes_under_concurrent_writes_and_rejects_a_fixed_sleep() {
    let table = users_table(3_000).await;
    let rule = rename_rule(&table, &table, "name", "full_name", "expand");
    let pgshim = proxy().rules(&rule).start().await;
    let app = pgshim.connect(SUPERUSER, None).await.unwrap();
    let config = ops_config(&rule);
    let both = run(
        &config,
        &["backfill", &table, "--throttle", "auto", "--sleep", "10"],
    )
    .await;
    assert!(!both.status.success());
    assert!(both.stderr.contains("--sleep"), "{}", both.stderr);
    let bad = run(&config, &["backfill", &table, "--throttle", "fast"]).await;
    assert!(
        !bad.status.success() && bad.stderr.contains("use `auto`"),
        "{}",
        bad.stderr
    );

    let backfill = spawn(
        &config,
        &[
            "backfill",
            &table,
            "--throttle",
            "auto",
            "--batch-size",
            "400",
            "--json",
        ],
    );
    let writes = async {
        for i in 0..300 {
            let id = 1 + (i * 53) % 3_000;
            app.execute(
                &format!("UPDATE {table} SET name = name || '+' WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap();
        }
    };
    let ((), done) = tokio::join!(writes, finish(backfill));
    assert!(done.status.success(), "{done:?}");
    let json: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(json["outcome"], "done", "{json}");
    let duty = json["progress"]["duty"].as_f64().unwrap();
    assert!(duty > 0.0 && duty <= 1.0, "{json}");
    assert_eq!(unmigrated_and_wrong(&table).await, (0, 0));
}
