//! `plan --phase contract --apply` drops the old columns only when every
//! registered instance has the rule in contract and a clean verify finished
//! after the last of them reached migrate; `--force` overrides with a warning.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::support::fleet::{converged, flip, named, ops_file, registry, FAST};
use crate::support::ops::run;
use crate::support::reloadable::{ab_rule, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name};

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, a text, b text);
                     INSERT INTO t (id, a) SELECT g, 'v' || g FROM generate_series(1, 20) g;";

async fn has_old_column(db: &Db) -> bool {
    db.direct()
        .await
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'a' AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn contract_waits_for_every_instance_and_a_verify_after_migrate() {
    let db = Db::create("fleet_contract", TABLE).await;
    let rule = unique_name("fc");
    let rules = |phase: &str| db.scope(&ab_rule(&rule, phase));
    let fleet_rules = |phase: &str| format!("{FAST}{}", rules(phase));
    let ids = [unique_name("a"), unique_name("b"), unique_name("c")];
    let mut fleet = Vec::new();
    for id in &ids {
        fleet.push(Reloadable::start(named(id), &fleet_rules("expand")).await);
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reg = registry(&db.name).await;
    converged(&reg, &all, &rule, "expand").await;

    let expand = ops_file(FAST, &rules("expand"));
    assert!(run(&expand, &["backfill", &rule]).await.status.success());
    let early = run(&expand, &["verify", &rule]).await;
    assert!(early.status.success(), "{early:?}");

    for proxy in &fleet {
        flip(proxy, &fleet_rules("migrate")).await;
    }
    converged(&reg, &all, &rule, "migrate").await;
    for proxy in &fleet[..2] {
        flip(proxy, &fleet_rules("contract")).await;
    }
    converged(&reg, &all[..2], &rule, "contract").await;

    let contract = ops_file(FAST, &rules("contract"));
    let dry = run(&contract, &["plan", &rule, "--phase", "contract"]).await;
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        dry.stdout.contains("--apply would refuse") && dry.stdout.contains(&ids[2]),
        "the printed plan warns: {}",
        dry.stdout
    );
    let apply = ["plan", rule.as_str(), "--phase", "contract", "--apply"];
    let refused = run(&contract, &apply).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("{} (migrate)", ids[2]))
            && refused.stderr.contains("reload"),
        "names the laggard and what to do: {}",
        refused.stderr
    );
    assert!(has_old_column(&db).await, "nothing dropped");

    flip(&fleet[2], &fleet_rules("contract")).await;
    converged(&reg, &all, &rule, "contract").await;
    let stale_verify = run(&contract, &apply).await;
    assert_eq!(stale_verify.status.code(), Some(1), "{stale_verify:?}");
    assert!(
        stale_verify
            .stderr
            .contains("before the last instance reached migrate")
            && stale_verify
                .stderr
                .contains(&format!("pgshim verify {rule}")),
        "{}",
        stale_verify.stderr
    );
    assert!(has_old_column(&db).await, "nothing dropped");

    let verified = run(&contract, &["verify", &rule]).await;
    assert!(verified.status.success(), "{verified:?}");
    // Writes through every instance, in both shapes, go on across the drop:
    // none fails, though each instance mirrored into the old column up to it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (n, proxy) in fleet.iter().enumerate() {
        let client = proxy.connect(&db.name).await;
        client
            .batch_execute(&format!("UPDATE t SET a = 'first' WHERE id = {}", n + 1))
            .await
            .unwrap();
        writers.push(tokio::spawn(write_until(client, n, Arc::clone(&stop))));
    }
    eventually(
        10,
        "every instance reports that it writes the old column",
        || async {
            let rows = reg
                .query(
                    "SELECT phases -> $1 -> 'writes_old_in' ? $2 FROM pgshim.instance",
                    &[&rule, &db.name],
                )
                .await
                .unwrap();
            rows.len() == 3
                && rows
                    .iter()
                    .all(|r| r.get::<_, Option<bool>>(0) == Some(true))
        },
    )
    .await;
    // A session inside a transaction keeps the rules it began with until the
    // transaction ends, so it may still write the old column: its instance
    // does not confirm, and the drop waits, until it is over.
    let open_tx = fleet[0].connect(&db.name).await;
    open_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let apply_run = {
        let (contract, apply) = (contract.clone(), apply.map(str::to_owned));
        tokio::spawn(async move {
            let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
            run(&contract, &apply).await
        })
    };
    let writes_old = |id: &str| {
        let (reg, rule, db, id) = (&reg, &rule, &db.name, id.to_owned());
        async move {
            reg.query_one(
                "SELECT coalesce(phases -> $1 -> 'writes_old_in' ? $2, false) \
                 FROM pgshim.instance WHERE instance_id = $3",
                &[rule, db, &id],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    eventually(
        20,
        "the other instances stopped writing the old column",
        || async { !writes_old(&ids[1]).await && !writes_old(&ids[2]).await },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        writes_old(&ids[0]).await,
        "the instance with the open transaction still reports the old column written"
    );
    assert!(
        has_old_column(&db).await,
        "the drop waits for the open transaction"
    );
    open_tx
        .batch_execute("INSERT INTO t (id, a) VALUES (999, 'in tx'); COMMIT")
        .await
        .expect("a transaction open across the retirement writes as it began");
    let done = apply_run.await.unwrap();
    assert!(done.status.success(), "{done:?}");
    assert!(!has_old_column(&db).await, "the old column is dropped");
    assert_eq!(
        db.physical("SELECT b FROM t WHERE id = 999").await,
        ["in tx"]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let (written, failed) = writer.await.unwrap();
        assert!(written > 0);
        assert_eq!(failed, Vec::<String>::new(), "no write fails at the drop");
    }
    let unwritten = db
        .physical("SELECT count(*) FROM t WHERE id > 1000 AND b IS NULL")
        .await;
    assert_eq!(unwritten, ["0"]);
    let retiring = db.physical("SELECT count(*) FROM pgshim.retiring").await;
    assert_eq!(retiring, ["0"], "the mark is removed after the drop");
    for proxy in fleet {
        proxy.stop().await.unwrap();
    }
}

/// Inserts and updates through `client` in the old and the new shape until
/// `stop`; returns how many statements ran and the errors.
async fn write_until(client: Client, n: usize, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut failed = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = 1000 + n * 100_000 + i;
        let statements = [
            format!("INSERT INTO t (id, a) VALUES ({id}, 'old {id}')"),
            format!("UPDATE t SET a = 'upd {id}' WHERE id = {}", 1 + i % 20),
            format!("INSERT INTO t (id, b) VALUES ({}, 'new {id}')", id + 50_000),
        ];
        for sql in &statements {
            if let Err(e) = client.batch_execute(sql).await {
                failed.push(format!("{sql}: {e:?}"));
            }
        }
        i += 1;
    }
    (i * 3, failed)
}

#[tokio::test]
async fn force_drops_without_a_fleet_and_warns() {
    let db = Db::create("fleet_force", TABLE).await;
    let rule = unique_name("ff");
    let contract = ops_file(FAST, &db.scope(&ab_rule(&rule, "contract")));
    let refused = run(
        &contract,
        &["plan", &rule, "--phase", "contract", "--apply"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("no running pgshim reports the rule")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert!(has_old_column(&db).await);
    // A transaction of a client that does not go through pgshim is not
    // waited for: it does not write through pgshim's rules.
    let open_tx = db.direct().await;
    open_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let forced = run(
        &contract,
        &["plan", &rule, "--phase", "contract", "--apply", "--force"],
    )
    .await;
    assert!(forced.status.success(), "{forced:?}");
    assert!(
        forced.stderr.contains("warning: --force"),
        "{}",
        forced.stderr
    );
    assert!(!has_old_column(&db).await);
    open_tx.batch_execute("COMMIT").await.unwrap();
}
