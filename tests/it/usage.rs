//! Is anyone still on the old shape? An app on the old column names and one on the
//! new names, seen per rule in `/rules`, the metrics, the fleet registry and
//! `pgshim status`; once the old app stops, its counts stop moving.
use serde_json::Value;
use tokio_postgres::Client;

use crate::support::fleet::{named, ops_file, registry, FAST};
use crate::support::ops::run;
use crate::support::reloadable::{ab_rule, Reloadable};
use crate::support::rules::Db;
use crate::support::{connect, eventually, unique_name, within};

/// The `/rules` entry of `rule`.
async fn rule_json(proxy: &Reloadable, rule: &str) -> Value {
    let rules = proxy.admin.rules().await;
    rules["rules"]
        .as_array()
        .expect("/rules has a rules array")
        .iter()
        .find(|r| r["id"] == rule)
        .unwrap_or_else(|| panic!("{rule} not in {rules}"))
        .clone()
}

/// A session through `proxy` that says it is `app`.
async fn app(proxy: &Reloadable, database: &str, app: &str) -> Client {
    let mut cfg = proxy.config(database);
    cfg.application_name(app);
    within(20, "connect through pgshim", connect(&cfg))
        .await
        .expect("connection through pgshim")
}

/// The usage report `instance` wrote for `rule` to the registry, if any.
async fn registry_usage(reg: &Client, instance: &str, rule: &str) -> Option<Value> {
    let row = reg
        .query_opt(
            "SELECT usage::text FROM pgshim.instance WHERE instance_id = $1",
            &[&instance],
        )
        .await
        .ok()??;
    let text: Option<String> = row.get(0);
    let all: Value = serde_json::from_str(&text?).ok()?;
    Some(all["rules"][rule].clone()).filter(|v| !v.is_null())
}

#[tokio::test]
async fn old_name_usage_is_reported_with_the_app_and_falls_silent_when_it_stops() {
    let db = Db::create(
        "usage",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text); \
         INSERT INTO t VALUES (1, 'x', 'x')",
    )
    .await;
    let rule = unique_name("usage");
    let rules = format!("{FAST}{}", db.scope(&ab_rule(&rule, "migrate")));
    let instance = unique_name("usage_i");
    let proxy = Reloadable::start(named(&instance), &rules).await;

    let billing = app(&proxy, &db.name, "billing-v1").await;
    let web = app(&proxy, &db.name, "web-v2").await;
    // Old names: a read (both protocols), a write, and RETURNING.
    billing.simple_query("SELECT a FROM t").await.unwrap();
    billing
        .query("SELECT id FROM t WHERE a = $1", &[&"x"])
        .await
        .unwrap();
    billing
        .execute("UPDATE t SET a = 'y' WHERE id = 1", &[])
        .await
        .unwrap();
    billing
        .query("INSERT INTO t (id, a) VALUES (2, 'z') RETURNING a", &[])
        .await
        .unwrap();
    // New names, and `*`.
    web.simple_query("SELECT b FROM t").await.unwrap();
    web.simple_query("SELECT b FROM t WHERE id = 2")
        .await
        .unwrap();
    web.simple_query("SELECT * FROM t").await.unwrap();

    let usage = &rule_json(&proxy, &rule).await["usage"];
    assert_eq!(usage["old"]["statements"], 4, "{usage}");
    assert_eq!(usage["new"]["statements"], 2, "{usage}");
    assert_eq!(usage["star"]["statements"], 1, "{usage}");
    let clients = usage["old_clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{usage}");
    assert_eq!(clients[0]["application_name"], "billing-v1");
    assert_eq!(clients[0]["client_addr"], "127.0.0.1");
    assert!(usage["old"]["last_seen_secs_ago"].as_u64().unwrap() < 60);

    let metrics = proxy.admin.metrics().await;
    let count = |shape: &str| {
        metrics.get(
            "pgshim_column_usage_total",
            &[("rule", &rule), ("shape", shape)],
        )
    };
    assert_eq!((count("old"), count("new"), count("star")), (4.0, 2.0, 1.0));
    assert!(
        metrics.get(
            "pgshim_column_usage_last_seen_seconds",
            &[("rule", &rule), ("shape", "old")]
        ) > 1.7e9,
        "{}",
        metrics.text
    );

    let reg = registry(&db.name).await;
    eventually(20, "the registry row carries the usage", || async {
        registry_usage(&reg, &instance, &rule)
            .await
            .is_some_and(|u| u["old"]["statements"] == 4 && u["star"]["statements"] == 1)
    })
    .await;
    let config = ops_file(FAST, &db.scope(&ab_rule(&rule, "migrate")));
    let out = run(&config, &["status"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("usage:    old names last used ")
            && out.stdout.contains(" ago by billing-v1 (127.0.0.1);"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("4 with old names, 2 with new names, 1 with *"),
        "{}",
        out.stdout
    );
    let out = run(&config, &["status", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let summary = &json[0]["usage"];
    assert_eq!(summary["instances"], 1, "{summary}");
    assert_eq!(summary["old"]["statements"], 4, "{summary}");
    assert_eq!(
        summary["old_clients"][0]["application_name"], "billing-v1",
        "{summary}"
    );

    // The old app stops; the new one goes on. Old-name counts and times stay put.
    drop(billing);
    let before = rule_json(&proxy, &rule).await["usage"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for _ in 0..3 {
        web.simple_query("SELECT b FROM t").await.unwrap();
    }
    let after = rule_json(&proxy, &rule).await["usage"].clone();
    assert_eq!(after["old"]["statements"], before["old"]["statements"]);
    assert_eq!(after["old"]["last_seen_ms"], before["old"]["last_seen_ms"]);
    assert!(after["old"]["last_seen_secs_ago"].as_u64().unwrap() >= 1);
    assert_eq!(after["new"]["statements"], 5, "{after}");
    assert_eq!(
        after["old_clients"][0]["last_seen_ms"],
        before["old_clients"][0]["last_seen_ms"]
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn status_says_when_nobody_used_the_old_names() {
    let db = Db::create(
        "usage_none",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let rule = unique_name("usage_none");
    let rules = db.scope(&ab_rule(&rule, "migrate"));
    let instance = unique_name("usage_n");
    let proxy = Reloadable::start(named(&instance), &format!("{FAST}{rules}")).await;
    let web = proxy.connect(&db.name).await;
    web.simple_query("SELECT b FROM t").await.unwrap();
    let reg = registry(&db.name).await;
    eventually(20, "the registry row carries the usage", || async {
        registry_usage(&reg, &instance, &rule)
            .await
            .is_some_and(|u| u["new"]["statements"] == 1)
    })
    .await;
    let out = run(&ops_file(FAST, &rules), &["status"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("usage:    old names not used since 20"),
        "{}",
        out.stdout
    );
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn usage_column_is_added_to_a_registry_made_by_an_older_version() {
    let db = Db::create(
        "usage_mig",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let reg = registry(&db.name).await;
    // The table as earlier versions made it, with another instance's row in it.
    reg.batch_execute(
        "CREATE SCHEMA pgshim; \
         CREATE TABLE pgshim.instance (instance_id text PRIMARY KEY, version text NOT NULL, \
            started_at timestamptz NOT NULL, rules_version bigint NOT NULL, \
            config_checksum text NOT NULL, phases jsonb NOT NULL, sessions bigint NOT NULL, \
            last_reload_error text, last_beat timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO pgshim.instance \
         VALUES ('older', '0.0.1', now(), 1, '', '{}', 0, NULL, now() + interval '1 hour')",
    )
    .await
    .unwrap();
    let rule = unique_name("usage_mig");
    let rules = db.scope(&ab_rule(&rule, "migrate"));
    let instance = unique_name("usage_m");
    let proxy = Reloadable::start(named(&instance), &format!("{FAST}{rules}")).await;
    let client = app(&proxy, &db.name, "billing-v1").await;
    client.simple_query("SELECT a FROM t").await.unwrap();
    eventually(20, "the usage column is added and written", || async {
        registry_usage(&reg, &instance, &rule)
            .await
            .is_some_and(|u| u["old"]["statements"] == 1)
    })
    .await;
    let older: Option<String> = reg
        .query_one(
            "SELECT usage::text FROM pgshim.instance WHERE instance_id = 'older'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(older, None, "the older row is kept as it was");
    proxy.stop().await.unwrap();
}

#[tokio::test]
async fn a_statement_prepared_once_counts_at_every_run() {
    let db = Db::create(
        "usage_bind",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text); \
         INSERT INTO t VALUES (1, 'x', 'x')",
    )
    .await;
    let rule = unique_name("usage_bind");
    let proxy = Reloadable::start(
        named(&unique_name("usage_b")),
        &db.scope(&ab_rule(&rule, "migrate")),
    )
    .await;
    let worker = app(&proxy, &db.name, "worker-v1").await;
    let by_old = worker
        .prepare("SELECT a FROM t WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        worker.query(&by_old, &[&1]).await.unwrap();
    }
    let usage = &rule_json(&proxy, &rule).await["usage"];
    assert_eq!(usage["old"]["statements"], 3, "{usage}");
}
