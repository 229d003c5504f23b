//! Rules from the database: `pgshim rules push` and `pgshim flip` change the
//! rules of every instance with `[rules] source = "database"` at once; both
//! wait for every live instance and name the ones that lag, flip refuses a
//! phase two steps from a live instance, and `/rules` shows the table version
//! in force; file-mode instances keep their file.
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::support::fleet::{converged, named, ops_file, phase, registry, row};
use crate::support::ops::run;
use crate::support::reloadable::{ab_rule, AdminApi, AdminBinary, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name};

/// `[fleet]` with the test database as control database (so parallel tests do
/// not share a rules table), fast beats, and rows live long enough that a
/// paused instance still counts.
fn fleet(db: &Db) -> String {
    format!(
        "[fleet]\ndatabase = \"{}\"\nheartbeat_ms = 200\nstale_after_ms = 10000\nforget_after_ms = 20000\n",
        db.name
    )
}

/// [`fleet`] plus `[rules] source = "database"`.
fn database_mode(db: &Db) -> String {
    format!("{}\n[rules]\nsource = \"database\"\n", fleet(db))
}

async fn setup() -> (Db, String) {
    let db = Db::create(
        "fleet_rules",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text); INSERT INTO t VALUES (1, 'old', 'new')",
    )
    .await;
    (db, unique_name("fr"))
}

/// Pushes `rule` in `phase` from a database-mode config file, which is returned.
async fn push(db: &Db, rule: &str, phase: &str) -> std::path::PathBuf {
    let ops = ops_file(&database_mode(db), &db.scope(&ab_rule(rule, phase)));
    let out = run(&ops, &["rules", "push"]).await;
    assert!(out.status.success(), "push: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pushed 1 rules"), "{}", out.stdout);
    ops
}

/// What column `a` of row 1 reads as through a session.
async fn read_a(client: &Client) -> String {
    client
        .query_one("SELECT a FROM t WHERE id = 1", &[])
        .await
        .expect("select through pgshim")
        .get(0)
}

async fn table_phase(reg: &Client, rule: &str) -> String {
    reg.query_one("SELECT phase FROM pgshim.rules WHERE id = $1", &[&rule])
        .await
        .expect("read pgshim.rules")
        .get(0)
}

async fn phases(admins: &[AdminApi], rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in admins {
        out.push(a.phase(rule).await);
    }
    out
}

#[tokio::test]
async fn flip_converges_on_every_instance_and_refuses_a_two_step_spread() {
    let (db, rule) = setup().await;
    let ops = push(&db, &rule, "expand").await;
    let ids = [unique_name("a"), unique_name("b"), unique_name("c")];
    let mut proxies = Vec::new();
    for id in &ids {
        // No [[rule]] in their files: what they serve comes from pgshim.rules.
        proxies.push(Reloadable::start(named(id), &database_mode(&db)).await);
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reg = registry(&db.name).await;
    converged(&reg, &all, &rule, "expand").await;
    for p in &proxies {
        assert_eq!(
            read_a(&p.connect(&db.name).await).await,
            "old",
            "expand reads the old column"
        );
    }

    let out = run(&ops, &["flip", &rule, "--to", "migrate"]).await;
    assert!(out.status.success(), "flip: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("on all 3 live instances"),
        "{}",
        out.stdout
    );
    let ms: u64 = out
        .stdout
        .split("acknowledged in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {}", out.stdout));
    assert!(ms < 1_000, "converged in {ms} ms");
    let admins: Vec<AdminApi> = proxies.iter().map(|p| p.admin).collect();
    assert_eq!(phases(&admins, &rule).await, ["migrate"; 3]);
    for p in &proxies {
        assert_eq!(
            read_a(&p.connect(&db.name).await).await,
            "new",
            "migrate reads the new column"
        );
    }
    // The migration commands read the table too: the ops file still says expand.
    let status = run(&ops, &["status"]).await;
    assert!(
        status.stdout.contains(&format!("rule {rule} ("))
            && status.stdout.contains("phase migrate"),
        "{}{}",
        status.stdout,
        status.stderr
    );

    // An instance still reading its own file, with the rule in expand.
    let file_id = unique_name("file");
    let file_mode = Reloadable::start(
        named(&file_id),
        &format!("{}{}", fleet(&db), db.scope(&ab_rule(&rule, "expand"))),
    )
    .await;
    eventually(20, "the file-mode instance registers", || async {
        phase(&reg, &file_id, &rule).await.as_deref() == Some("expand")
    })
    .await;
    let out = run(&ops, &["flip", &rule, "--to", "contract"]).await;
    assert!(
        !out.status.success(),
        "flip to contract beside an expand instance: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!("instance {file_id}"))
            && out.stderr.contains("expand")
            && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
    assert_eq!(
        table_phase(&reg, &rule).await,
        "migrate",
        "refused before writing"
    );
    assert_eq!(phases(&admins, &rule).await, ["migrate"; 3]);
    // File mode is unaffected by the table.
    assert_eq!(file_mode.admin.phase(&rule).await, "expand");
    assert_eq!(read_a(&file_mode.connect(&db.name).await).await, "old");

    // Skipping migrate is refused as a reload would refuse it.
    let out = run(&ops, &["flip", &rule, "--to", "expand"]).await;
    assert!(out.status.success(), "back to expand: {}", out.stderr);
    let out = run(&ops, &["flip", &rule, "--to", "contract"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("skips migrate"), "{}", out.stderr);
    assert_eq!(table_phase(&reg, &rule).await, "expand");

    // A restart picks up the table's rules.
    let late = Reloadable::start(named(&unique_name("d")), &database_mode(&db)).await;
    assert_eq!(late.admin.phase(&rule).await, "expand");

    file_mode.stop().await.unwrap();
    late.stop().await.unwrap();
    for p in proxies {
        p.stop().await.unwrap();
    }
}

#[tokio::test]
async fn flip_names_a_paused_instance_and_it_catches_up() {
    let (db, rule) = setup().await;
    let ops = push(&db, &rule, "expand").await;
    let ids = [unique_name("a"), unique_name("b"), unique_name("paused")];
    let a = Reloadable::start(named(&ids[0]), &database_mode(&db)).await;
    let b = Reloadable::start(named(&ids[1]), &database_mode(&db)).await;
    let mut c = AdminBinary::start(named(&ids[2]), &database_mode(&db), None).await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reg = registry(&db.name).await;
    converged(&reg, &all, &rule, "expand").await;

    c.signal("STOP");
    let out = run(&ops, &["flip", &rule, "--to", "migrate", "--timeout", "1s"]).await;
    c.signal("CONT");
    assert!(
        !out.status.success(),
        "flip with a paused instance: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("have not applied it")
            && out.stderr.contains(&ids[2])
            && !out.stderr.contains(&ids[0])
            && !out.stderr.contains(&ids[1]),
        "names the paused instance only: {}",
        out.stderr
    );
    assert_eq!(a.admin.phase(&rule).await, "migrate");
    assert_eq!(b.admin.phase(&rule).await, "migrate");
    // Resumed, it applies the write it missed.
    eventually(20, "the paused instance catches up", || async {
        c.admin.phase(&rule).await == "migrate"
    })
    .await;
    converged(&reg, &all, &rule, "migrate").await;
    assert_eq!(read_a(&c.connect(&db.name).await).await, "new");

    c.signal("TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), c.child.wait()).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_lost_notification_is_caught_by_the_version_check() {
    let (db, rule) = setup().await;
    push(&db, &rule, "expand").await;
    let proxy = Reloadable::start(named(&unique_name("quiet")), &database_mode(&db)).await;
    assert_eq!(proxy.admin.phase(&rule).await, "expand");
    // A write without NOTIFY, as if the notification had been lost.
    let reg = registry(&db.name).await;
    reg.batch_execute(&format!(
        "BEGIN; UPDATE pgshim.rules SET phase = 'migrate' WHERE id = '{rule}'; \
         UPDATE pgshim.rules_version SET version = version + 1; COMMIT"
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    eventually(20, "the version check applies the table", || async {
        proxy.admin.phase(&rule).await == "migrate"
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "caught after {:?}",
        started.elapsed()
    );
    assert_eq!(read_a(&proxy.connect(&db.name).await).await, "new");
    proxy.stop().await.unwrap();
}

/// A rename rule `x` -> `y` on table `u` with id `id`, in expand.
fn xy_rule(id: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ntable = \"u\"\nold = \"x\"\nnew = \"y\"\nphase = \"expand\"\n"
    )
}

#[tokio::test]
async fn push_waits_for_every_instance_and_names_the_laggards() {
    let (db, rule) = setup().await;
    db.direct()
        .await
        .batch_execute("CREATE TABLE u (id int PRIMARY KEY, x text, y text)")
        .await
        .unwrap();
    let extra = unique_name("fu");
    let file = |rules: &str| ops_file(&database_mode(&db), &db.scope(rules));

    let out = run(&file(&ab_rule(&rule, "expand")), &["rules", "push"]).await;
    assert!(out.status.success(), "push: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("no live instance serves these rules"),
        "nothing to wait for yet: {}",
        out.stdout
    );

    let ids = [unique_name("a"), unique_name("b"), unique_name("paused")];
    let a = Reloadable::start(named(&ids[0]), &database_mode(&db)).await;
    let b = Reloadable::start(named(&ids[1]), &database_mode(&db)).await;
    let mut c = AdminBinary::start(named(&ids[2]), &database_mode(&db), None).await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reg = registry(&db.name).await;
    converged(&reg, &all, &rule, "expand").await;

    // One push changes a phase and adds a rule; it returns once all three serve both.
    let both = format!("{}{}", ab_rule(&rule, "migrate"), xy_rule(&extra));
    let out = run(&file(&both), &["rules", "push"]).await;
    assert!(out.status.success(), "push: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("pushed 2 rules")
            && out.stdout.contains("on all 3 live instances")
            && out.stdout.contains("acknowledged in"),
        "{}",
        out.stdout
    );
    for admin in [a.admin, b.admin, c.admin] {
        assert_eq!(admin.phase(&rule).await, "migrate");
        assert_eq!(admin.phase(&extra).await, "expand");
    }

    // Removing the rule again while one instance is paused: named, exit 1.
    c.signal("STOP");
    let out = run(
        &file(&ab_rule(&rule, "migrate")),
        &["rules", "push", "--timeout", "1s"],
    )
    .await;
    c.signal("CONT");
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("have not applied it")
            && out.stderr.contains(&format!(
                "{} (rules version 2, {extra} still served",
                ids[2]
            ))
            && !out.stderr.contains(&ids[0])
            && !out.stderr.contains(&ids[1]),
        "names the paused instance only: {}",
        out.stderr
    );
    eventually(20, "the paused instance drops the removed rule", || async {
        row(&reg, &ids[2])
            .await
            .is_some_and(|r| r.phases.get(&extra).is_none() && r.rules_version == 3)
    })
    .await;

    c.signal("TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), c.child.wait()).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn admin_rules_shows_the_table_version_in_force_and_the_source() {
    let (db, rule) = setup().await;
    let db_mode = Reloadable::start(named(&unique_name("db")), &database_mode(&db)).await;
    let before = db_mode.admin.rules().await;
    assert_eq!(
        (
            &before["source"],
            &before["configured_source"],
            &before["table_version"]
        ),
        (&json!("file"), &json!("database"), &Value::Null),
        "nothing pushed yet, so the file's (empty) rules serve: {before}"
    );

    push(&db, &rule, "expand").await;
    eventually(20, "the pushed rules are in force", || async {
        db_mode.admin.rules().await["table_version"] == 1
    })
    .await;
    let reg = registry(&db.name).await;
    reg.batch_execute(
        "UPDATE pgshim.rules_version SET version = 5; SELECT pg_notify('pgshim_rules', '5')",
    )
    .await
    .unwrap();
    eventually(20, "a new table version is shown", || async {
        db_mode.admin.rules().await["table_version"] == 5
    })
    .await;
    let now = db_mode.admin.rules().await;
    assert_eq!(now["source"], "database", "{now}");
    assert_eq!(now["rules"][0]["id"], rule.as_str(), "{now}");
    assert!(
        now["version"].as_u64().is_some_and(|v| v != 5),
        "the local reload counter is kept apart: {now}"
    );

    let file_mode = Reloadable::start(
        named(&unique_name("file")),
        &format!("{}{}", fleet(&db), db.scope(&ab_rule(&rule, "expand"))),
    )
    .await;
    let theirs = file_mode.admin.rules().await;
    assert_eq!(
        (
            &theirs["source"],
            &theirs["configured_source"],
            &theirs["table_version"]
        ),
        (&json!("file"), &json!("file"), &Value::Null),
        "{theirs}"
    );
    file_mode.stop().await.unwrap();
    db_mode.stop().await.unwrap();
}
