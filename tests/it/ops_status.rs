//! `pgshim status`: each rule's shapes, backfill, verify and next safe step, following a
//! migration from a missing new column to a verified backfill.
use serde_json::Value;

use crate::support::ops::{ops_config, rename_rule, run};
use crate::support::pg::cluster;
use crate::support::unique_name;

async fn status(config: &std::path::PathBuf) -> Value {
    let out = run(config, &["status", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    all[0].clone()
}

#[tokio::test]
async fn status_follows_a_migration_step_by_step() {
    let table = unique_name("st_users");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text);
             INSERT INTO {table} SELECT g, 'n' || g FROM generate_series(1, 50) g;"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let s = status(&config).await;
    assert_eq!(s["new_missing"], serde_json::json!(["full_name"]));
    assert_eq!(s["both_shapes"], false);
    assert!(
        s["next"]
            .as_str()
            .unwrap()
            .contains("--phase expand --apply"),
        "{s}"
    );

    admin
        .batch_execute(&format!("ALTER TABLE {table} ADD COLUMN full_name text"))
        .await
        .unwrap();
    let s = status(&config).await;
    assert_eq!(s["both_shapes"], true);
    assert!(s["backfill"].is_null());
    assert!(
        s["next"].as_str().unwrap().contains("pgshim backfill"),
        "{s}"
    );

    assert!(run(&config, &["backfill", &table]).await.status.success());
    let s = status(&config).await;
    assert_eq!(s["backfill"]["state"], "done");
    assert_eq!(s["backfill"]["rows_done"], 50);
    assert!(s["next"].as_str().unwrap().contains("pgshim verify"), "{s}");

    assert!(run(&config, &["verify", &table]).await.status.success());
    let s = status(&config).await;
    assert_eq!(s["verify"]["ok"], true);
    assert_eq!(s["verify"]["stale"], false);
    assert!(
        s["next"].as_str().unwrap().contains("phase = \"migrate\""),
        "{s}"
    );

    let text = run(&config, &["status"]).await;
    assert!(
        text.stdout.contains("shapes:   both present"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("backfill: done (50 rows filled"),
        "{}",
        text.stdout
    );
}
