//! The fleet registry: three instances on one database each keep a row in
//! `pgshim.instance` with what they run; a clean shutdown removes the row, a
//! killed instance's row turns stale and is then forgotten.
use crate::support::fleet::{converged, flip, named, ops_file, registry, row, FAST};
use crate::support::ops::run;
use crate::support::reloadable::{ab_rule, AdminBinary, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name};

#[tokio::test]
async fn three_instances_register_beat_and_leave() {
    let db = Db::create(
        "fleet_reg",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let rule = unique_name("fr");
    let rules = |phase: &str| format!("{FAST}{}", db.scope(&ab_rule(&rule, phase)));
    let ids = [unique_name("a"), unique_name("b"), unique_name("c")];
    let a = Reloadable::start(named(&ids[0]), &rules("expand")).await;
    let b = Reloadable::start(named(&ids[1]), &rules("expand")).await;
    let mut c = AdminBinary::start(named(&ids[2]), &rules("expand"), None).await;
    let reg = registry(&db.name).await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    converged(&reg, &all, &rule, "expand").await;

    let first = row(&reg, &ids[0]).await.unwrap();
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.rules_version, 1);
    let text = std::fs::read_to_string(&a.path).unwrap();
    assert_eq!(first.checksum, pgshim::fleet::checksum(&text));
    assert!(
        first.phases[&rule]["migrate_since_ms"].is_null(),
        "{first:?}"
    );

    let session = a.connect(&db.name).await;
    eventually(20, "one session counted", || async {
        row(&reg, &ids[0]).await.unwrap().sessions == 1
    })
    .await;
    drop(session);
    eventually(20, "the session is gone from the count", || async {
        row(&reg, &ids[0]).await.unwrap().sessions == 0
    })
    .await;

    flip(&a, &rules("migrate")).await;
    converged(&reg, &all[..1], &rule, "migrate").await;
    let moved = row(&reg, &ids[0]).await.unwrap();
    // Reloaded by the file watcher and by POST /reload: version 2 or 3.
    assert!(moved.rules_version >= 2, "{moved:?}");
    assert_ne!(moved.checksum, first.checksum, "the new file's checksum");
    assert!(
        moved.phases[&rule]["migrate_since_ms"].is_u64(),
        "{moved:?}"
    );
    assert_eq!(
        row(&reg, &ids[1]).await.unwrap().phases[&rule]["phase"],
        "expand",
        "one instance's reload changes only its own row"
    );

    b.stop().await.unwrap();
    assert!(
        row(&reg, &ids[1]).await.is_none(),
        "a clean shutdown deregisters before it returns"
    );

    c.signal("KILL");
    c.child.wait().await.unwrap();
    eventually(
        20,
        "the killed instance's row ages past stale_after_ms",
        || async { row(&reg, &ids[2]).await.is_some_and(|r| r.age_ms > 3_000.0) },
    )
    .await;
    eventually(
        30,
        "the killed instance is forgotten after forget_after_ms",
        || async { row(&reg, &ids[2]).await.is_none() },
    )
    .await;
    assert!(
        row(&reg, &ids[0]).await.unwrap().age_ms < 3_000.0,
        "the live instance keeps beating"
    );
    a.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_down_does_not_stop_serving_or_spam_the_log() {
    // The registry database does not exist: every beat fails the same way.
    let id = unique_name("lost");
    let rules =
        "[fleet]\ndatabase = \"no_such_database\"\nheartbeat_ms = 100\nstale_after_ms = 1000\n";
    let mut proxy = AdminBinary::start(named(&id), rules, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let client = crate::support::connect(&proxy.config(crate::support::pg::DB))
        .await
        .expect("pgshim serves while the registry cannot be written");
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let log = proxy.log_text();
    assert_eq!(
        log.matches("cannot write to the fleet registry").count(),
        1,
        "one line per distinct failure:\n{log}"
    );
    proxy.signal("TERM");
    assert!(proxy.child.wait().await.unwrap().success());
}

#[tokio::test]
async fn rules_without_a_database_register_in_the_control_database() {
    let db = Db::create(
        "fleet_ctl",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let rule = unique_name("fctl");
    let fleet = format!(
        "[fleet]\ndatabase = \"{}\"\nheartbeat_ms = 200\nstale_after_ms = 3000\n",
        db.name
    );
    let id = unique_name("ctl");
    let proxy =
        Reloadable::start(named(&id), &format!("{fleet}{}", ab_rule(&rule, "migrate"))).await;
    let reg = registry(&db.name).await;
    converged(&reg, &[&id], &rule, "migrate").await;

    let config = ops_file(&fleet, &ab_rule(&rule, "migrate"));
    let out = run(&config, &["status", "--json", "--database", &db.name]).await;
    assert!(out.status.success(), "{out:?}");
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s[0]["registry_database"], db.name.as_str(), "{s}");
    assert_eq!(s[0]["instances"][0]["instance_id"], id.as_str(), "{s}");
    assert_eq!(s[0]["instances"][0]["phase"], "migrate", "{s}");
    proxy.stop().await.unwrap();
    assert!(row(&reg, &id).await.is_none());
}
