//! The admin listener: `/metrics` counters move with traffic,
//! rewrites, reloads and re-prepares; `/rules` describes the rules in force;
//! `/healthz` tells whether the upstream is reachable; `POST /reload` wants
//! the bearer token when `[admin] token_env` is set, and so does `pgshim reload`.
//!
//! The metrics test runs the real binary, so its counters are its own; the
//! in-process proxies of this test binary share one recorder.
use std::time::{SystemTime, UNIX_EPOCH};

use crate::reload_triggers::{fixture, rule, view, EXPAND_VIEW, MIGRATE_VIEW};
use crate::support::eventually;
use crate::support::pg::free_port;
use crate::support::proxy::proxy;
use crate::support::reloadable::{http, json, AdminBinary, Metrics, Reloadable};

/// The counters the metrics test follows, as `(name, labels)`.
fn moved(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_counters_moving() {
    let db = fixture("admin_metrics").await;
    let id = format!("{}-ab", db.name);
    let pgshim = AdminBinary::start(proxy(), &rule(&db, &id, "expand"), None).await;
    let m0 = pgshim.admin.metrics().await;
    for family in [
        "# TYPE pgshim_client_connections gauge",
        "# TYPE pgshim_rules_version gauge",
        "# TYPE pgshim_reloads_total counter",
    ] {
        assert!(m0.text.contains(family), "{family} missing:\n{}", m0.text);
    }
    assert_eq!(m0.get("pgshim_rule_phase", &[("rule", &id)]), 0.0);

    let client = pgshim.connect(&db.name).await;
    let read = client
        .prepare("SELECT a, b FROM t WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(view(&client).await, EXPAND_VIEW);
    assert_eq!(view(&client).await, EXPAND_VIEW);
    client.simple_query("SELECT 1").await.expect("pass-through");
    let m1 = pgshim.admin.metrics().await;
    assert!(
        m1.get("pgshim_client_connections", &[]) >= 1.0,
        "{}",
        m1.text
    );
    assert!(moved(&m0, &m1, "pgshim_client_connections_total", &[]) >= 1.0);
    assert!(
        moved(
            &m0,
            &m1,
            "pgshim_statements_total",
            &[("outcome", "rewritten")]
        ) >= 2.0
    );
    assert!(
        moved(
            &m0,
            &m1,
            "pgshim_statements_total",
            &[("outcome", "passed_through")]
        ) >= 1.0
    );
    assert!(
        moved(
            &m0,
            &m1,
            "pgshim_rewrites_total",
            &[("rule", &id), ("phase", "expand")]
        ) >= 2.0,
        "{}",
        m1.text
    );
    assert!(moved(&m0, &m1, "pgshim_rewrite_cache_misses_total", &[]) >= 1.0);
    assert!(
        moved(&m0, &m1, "pgshim_rewrite_cache_hits_total", &[]) >= 1.0,
        "the same text twice"
    );
    assert!(m1.get("pgshim_rewrite_cache_size", &[]) >= 1.0);
    assert!(
        moved(&m0, &m1, "pgshim_rewrite_duration_seconds_count", &[]) >= 1.0,
        "{}",
        m1.text
    );
    assert!(
        moved(
            &m0,
            &m1,
            "pgshim_bytes_forwarded_total",
            &[("direction", "client_to_server")]
        ) > 0.0
    );
    assert!(
        moved(
            &m0,
            &m1,
            "pgshim_bytes_forwarded_total",
            &[("direction", "server_to_client")]
        ) > 0.0
    );

    pgshim.replace_rules(&rule(&db, &id, "migrate"));
    let (status, body) = pgshim.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    let version = body["version"].as_f64().expect("version");
    let rows = client
        .query(&read, &[&1i32])
        .await
        .expect("re-prepared read");
    assert_eq!(crate::support::rules::row_text(&rows[0]), MIGRATE_VIEW);
    pgshim.replace_rules(&rule(&db, &id, "migrate").replace("new = \"b\"", "new = \"zz\""));
    let (status, body) = pgshim.admin.post_reload().await;
    assert_eq!(status, 422, "{body}");
    let m2 = pgshim.admin.metrics().await;
    assert!(
        moved(&m1, &m2, "pgshim_reloads_total", &[("result", "ok")]) >= 1.0,
        "{}",
        m2.text
    );
    assert!(
        moved(&m1, &m2, "pgshim_reloads_total", &[("result", "failed")]) >= 1.0,
        "{}",
        m2.text
    );
    // The gauge is process-wide and other tests reload their own proxies
    // meanwhile: this proxy's version is what /rules reports, and the gauge
    // has been set.
    assert_eq!(pgshim.admin.version().await as f64, version);
    assert!(m2.get("pgshim_rules_version", &[]) >= 1.0);
    assert_eq!(m2.get("pgshim_rule_phase", &[("rule", &id)]), 1.0);
    assert!(
        moved(&m1, &m2, "pgshim_statements_reprepared_total", &[]) >= 1.0,
        "{}",
        m2.text
    );
    assert!(
        m2.get(
            "pgshim_rewrites_total",
            &[("rule", &id), ("phase", "migrate")]
        ) >= 1.0,
        "{}",
        m2.text
    );

    // The connection gauge comes back down when the client leaves.
    let open = m2.get("pgshim_client_connections", &[]);
    drop(read);
    drop(client);
    let admin = pgshim.admin;
    eventually(10, "pgshim_client_connections goes down", || async move {
        admin.metrics().await.get("pgshim_client_connections", &[]) < open
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_endpoint_describes_the_rules_in_force() {
    let db = fixture("admin_rules").await;
    let id = format!("{}-ab", db.name);
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let rules = proxy.admin.rules().await;
    let version = rules["version"].as_u64().expect("version");
    let loaded_at = rules["loaded_at"].as_f64().expect("loaded_at");
    assert!(loaded_at >= start - 1.0, "{rules}");
    let list = rules["rules"].as_array().expect("rules");
    assert_eq!(list.len(), 1, "{rules}");
    let r = &list[0];
    assert_eq!(r["id"], id.as_str(), "{rules}");
    assert_eq!(r["table"], "public.t", "{rules}");
    assert_eq!(r["phase"], "expand", "{rules}");
    assert_eq!(r["database"], db.name.as_str(), "{rules}");
    assert!(r["old"].to_string().contains("\"a\""), "{rules}");
    assert!(r["new"].to_string().contains("\"b\""), "{rules}");

    proxy.replace_rules(&(rule(&db, &id, "contract") + "force = true\n"));
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    let rules = proxy.admin.rules().await;
    assert_eq!(
        rules["version"].as_u64(),
        body["version"].as_u64(),
        "{rules}"
    );
    assert!(rules["version"].as_u64().unwrap() > version, "{rules}");
    assert!(rules["loaded_at"].as_f64().unwrap() >= loaded_at, "{rules}");
    assert_eq!(rules["rules"][0]["phase"], "contract", "{rules}");
    assert_eq!(rules["rules"][0]["force"], true, "{rules}");

    let (status, _) = http(proxy.admin.addr, "GET", "/nowhere", None).await;
    assert_eq!(status, 404);
    let (status, _) = http(proxy.admin.addr, "GET", "/reload", None).await;
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200_with_the_upstream_up_and_503_without() {
    let up = Reloadable::start(proxy(), "").await;
    let (status, body) = http(up.admin.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 200, "{body}");

    let closed = free_port();
    let down = Reloadable::start(proxy().upstream("127.0.0.1", closed), "").await;
    let (status, body) = http(down.admin.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&closed.to_string()), "{body}");
    // The admin API itself keeps working.
    assert_eq!(down.admin.rules().await["rules"], serde_json::json!([]));
    down.stop().await.expect("stops cleanly");
    up.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_requires_the_bearer_token_when_configured() {
    let db = fixture("admin_token").await;
    let id = format!("{}-ab", db.name);
    let pgshim = AdminBinary::start(proxy(), &rule(&db, &id, "expand"), Some("s3cret-token")).await;
    let client = pgshim.connect(&db.name).await;
    let version = pgshim.admin.version().await;
    pgshim.replace_rules(&rule(&db, &id, "migrate"));
    // Give the file watcher no say: it reloads without a token.
    let addr = pgshim.admin.addr;

    for token in [None, Some("wrong"), Some("s3cret-tok")] {
        let (status, body) = http(addr, "POST", "/reload", token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert_eq!(json(&body)["ok"], false, "{body}");
    }
    // Reads need no token.
    let (status, _) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);

    let (status, body) = http(addr, "POST", "/reload", Some("s3cret-token")).await;
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["version"].as_u64().unwrap() > version, "{body}");
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    let (ok, stdout, stderr) = pgshim.cli_reload(false).await;
    assert!(
        !ok,
        "pgshim reload without the token variable succeeded: {stdout}"
    );
    let var = &pgshim.token.as_ref().unwrap().0;
    assert!(stderr.contains(var.as_str()), "{stderr}");
    let (ok, stdout, stderr) = pgshim.cli_reload(true).await;
    assert!(ok, "pgshim reload with the token: {stdout}\n{stderr}");
    assert_eq!(json(stdout.trim())["ok"], true, "{stdout}");
}
