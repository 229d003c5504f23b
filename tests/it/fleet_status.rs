//! `pgshim status` reads the phase in force from every registered instance,
//! not just the config file: it names instances that disagree and stale ones,
//! in text and `--json`, and fails when it cannot reach Postgres.
use serde_json::Value;

use crate::support::fleet::{converged, flip, named, ops_file, registry, row};
use crate::support::ops::run;
use crate::support::pg::{free_port, run_dir};
use crate::support::proxy::proxy;
use crate::support::reloadable::{ab_rule, AdminBinary, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name};

/// Stale after 3 s, but remembered long enough to be seen stale.
const FLEET: &str = "[fleet]\nheartbeat_ms = 200\nstale_after_ms = 3000\nforget_after_ms = 60000\n";

async fn status_json(config: &std::path::PathBuf) -> Value {
    let out = run(config, &["status", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    all[0].clone()
}

fn instance<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {s}"))
}

#[tokio::test]
async fn status_shows_each_instance_a_disagreement_and_a_stale_one() {
    let db = Db::create(
        "fleet_status",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let rule = unique_name("fs");
    let rules = |phase: &str| db.scope(&ab_rule(&rule, phase));
    let fleet_rules = |phase: &str| format!("{FLEET}{}", rules(phase));
    let ids = [unique_name("a"), unique_name("b"), unique_name("c")];
    let a = Reloadable::start(named(&ids[0]), &fleet_rules("expand")).await;
    let b = Reloadable::start(named(&ids[1]), &fleet_rules("expand")).await;
    let mut c = AdminBinary::start(named(&ids[2]), &fleet_rules("expand"), None).await;
    // Registered in the same database for another rule only.
    let other_rule = db.scope(&ab_rule(&unique_name("other"), "expand"));
    let bystander_id = unique_name("d");
    let bystander = Reloadable::start(named(&bystander_id), &format!("{FLEET}{other_rule}")).await;
    let reg = registry(&db.name).await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    converged(&reg, &all, &rule, "expand").await;
    eventually(20, "the bystander registered", || async {
        row(&reg, &bystander_id).await.is_some()
    })
    .await;
    flip(&a, &fleet_rules("migrate")).await;
    flip(&b, &fleet_rules("migrate")).await;
    converged(&reg, &all[..2], &rule, "migrate").await;

    let config = ops_file(FLEET, &rules("migrate"));
    let s = status_json(&config).await;
    assert_eq!(s["phase"], "migrate");
    assert_eq!(s["instances"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(s["without_rule"], serde_json::json!([bystander_id]), "{s}");
    assert_eq!(instance(&s, &ids[0])["phase"], "migrate");
    assert_eq!(instance(&s, &ids[0])["liveness"], "live");
    // The reload is triggered twice (file watcher, POST /reload): version 2 or 3.
    assert!(
        instance(&s, &ids[0])["rules_version"].as_i64().unwrap() >= 2,
        "{s}"
    );
    assert_eq!(instance(&s, &ids[2])["phase"], "expand");
    let disagreement = s["disagreement"].as_str().unwrap();
    assert!(
        disagreement.contains(&format!("{} (expand)", ids[2])) && !disagreement.contains(&ids[0]),
        "{disagreement}"
    );
    assert!(
        s["next"]
            .as_str()
            .unwrap()
            .contains("bring every instance to phase migrate"),
        "{s}"
    );
    let text = run(&config, &["status"]).await;
    assert!(text.status.success(), "{text:?}");
    assert!(
        text.stdout.contains("3 instances (3 live, 0 stale")
            && text
                .stdout
                .contains(&format!("{}: expand (rules v1", ids[2]))
            && text.stdout.contains("disagree: the config says migrate"),
        "{}",
        text.stdout
    );

    c.signal("KILL");
    c.child.wait().await.unwrap();
    eventually(20, "status shows the killed instance stale", || async {
        instance(&status_json(&config).await, &ids[2])["liveness"] == "stale"
    })
    .await;
    let text = run(&config, &["status"]).await;
    assert!(
        text.stdout.contains(&format!("{}: expand, STALE", ids[2]))
            && text.stdout.contains("(2 live, 1 stale"),
        "{}",
        text.stdout
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    bystander.stop().await.unwrap();
}

#[tokio::test]
async fn status_fails_when_postgres_is_unreachable() {
    let path = run_dir().join(format!("{}.toml", unique_name("fleet_down")));
    let rule = "[[rule]]\nid = \"r\"\ndatabase = \"x\"\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"migrate\"\n";
    let text = proxy()
        .upstream("127.0.0.1", free_port())
        .rules(rule)
        .toml("127.0.0.1:0");
    std::fs::write(&path, text).unwrap();
    let out = run(&path, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(s[0]["error"].is_string(), "{s}");
}
