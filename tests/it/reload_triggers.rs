//! Reload triggers: an edit of the config file in place, an editor's
//! write-and-rename, SIGHUP, `POST /reload` and the `pgshim reload` CLI all
//! put new rules in force, on sessions that were already open, and every
//! successful reload bumps the rules version.
//!
//! The fixture is table `t(id, a, b)` with a rename rule `a` -> `b` and one
//! row that has migrated but holds a stale old value (`a = 'old'`,
//! `b = 'new'`), so `SELECT a, b` shows the phase: `old|old` in expand (both
//! read from `a`), `new|new` in migrate (both read from `b`).
use crate::support::binary::Binary;
use crate::support::eventually;
use crate::support::proxy::proxy;
use crate::support::reloadable::{ab_rule, AdminBinary, Reloadable};
use crate::support::rules::{simple_rows, Db};

/// What `SELECT a, b` shows for the fixture row in expand.
pub const EXPAND_VIEW: &str = "old|old";
/// What `SELECT a, b` shows for the fixture row in migrate.
pub const MIGRATE_VIEW: &str = "new|new";

/// A fresh database with the fixture table and row.
pub async fn fixture(prefix: &str) -> Db {
    Db::create(
        prefix,
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text);
         INSERT INTO t VALUES (1, 'old', 'new');",
    )
    .await
}

/// The rename rule `a` -> `b` of `db`'s table `t`, with id `id`, in `phase`.
pub fn rule(db: &Db, id: &str, phase: &str) -> String {
    db.scope(&ab_rule(id, phase))
}

/// What `client` sees of the fixture row with the simple protocol.
pub async fn view(client: &tokio_postgres::Client) -> String {
    let (rows, _) = simple_rows(client, "SELECT a, b FROM t WHERE id = 1")
        .await
        .expect("read the fixture row through pgshim");
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// Waits (up to 10 s) until `client`, an idle session, sees `expected`.
async fn wait_view(client: &tokio_postgres::Client, expected: &str) {
    let what = format!("an open session sees {expected}");
    eventually(10, &what, || async { view(client).await == expected }).await;
}

/// Edits `proxy`'s file with `change` and checks that the watcher puts
/// migrate in force on a session opened before the edit.
async fn reloads_on_file_change(prefix: &str, change: impl FnOnce(&Reloadable, &str)) {
    let db = fixture(prefix).await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let client = proxy.connect(&db.name).await;
    assert_eq!(view(&client).await, EXPAND_VIEW);
    let before = proxy.admin.version().await;

    change(&proxy, &rule(&db, &id, "migrate"));
    wait_view(&client, MIGRATE_VIEW).await;
    assert_eq!(proxy.admin.phase(&id).await, "migrate");
    assert!(proxy.admin.version().await > before);
    // A session opened after the reload sees the new phase too.
    assert_eq!(view(&proxy.connect(&db.name).await).await, MIGRATE_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_editing_the_file_in_place() {
    reloads_on_file_change("reload_edit", |proxy, rules| proxy.write_rules(rules)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_writing_a_temporary_file_and_renaming_it() {
    reloads_on_file_change("reload_rename", |proxy, rules| proxy.replace_rules(rules)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_post_applies_before_the_answer() {
    let db = fixture("reload_post").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let client = proxy.connect(&db.name).await;
    assert_eq!(view(&client).await, EXPAND_VIEW);
    let before = proxy.admin.version().await;

    proxy.replace_rules(&rule(&db, &id, "migrate"));
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["restart_needed"], serde_json::json!([]), "{body}");
    let migrated = body["version"].as_u64().expect("version in the answer");
    assert!(migrated > before, "{body} after version {before}");
    // No waiting: the rules are in force once POST /reload has answered.
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    proxy.replace_rules(&rule(&db, &id, "expand"));
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["version"].as_u64().expect("version") > migrated,
        "{body}"
    );
    assert_eq!(view(&client).await, EXPAND_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_successful_reload_bumps_the_rules_version() {
    let db = fixture("reload_version").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let mut version = proxy.admin.version().await;
    let mut gauge = Vec::new();
    // The file does not change, so only these requests reload.
    for _ in 0..3 {
        let (status, body) = proxy.admin.post_reload().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"].as_u64(), Some(version + 1), "{body}");
        version += 1;
        assert_eq!(proxy.admin.version().await, version);
        gauge.push(
            proxy
                .admin
                .metrics()
                .await
                .get("pgshim_rule_phase", &[("rule", &id)]),
        );
    }
    assert_eq!(
        gauge,
        [0.0, 0.0, 0.0],
        "pgshim_rule_phase of {id} (expand = 0)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_sighup() {
    let db = fixture("reload_hup").await;
    let id = format!("{}-ab", db.name);
    let pgshim = AdminBinary::start(proxy(), &rule(&db, &id, "expand"), None).await;
    let client = pgshim.connect(&db.name).await;
    assert_eq!(view(&client).await, EXPAND_VIEW);

    pgshim.replace_rules(&rule(&db, &id, "migrate"));
    pgshim.signal("HUP");
    let reloaded_by_hup = || {
        pgshim
            .log_text()
            .lines()
            .any(|l| l.contains("config reloaded") && l.contains("SIGHUP"))
    };
    eventually(10, "pgshim logs a reload triggered by SIGHUP", || async {
        reloaded_by_hup()
    })
    .await;
    wait_view(&client, MIGRATE_VIEW).await;
    assert_eq!(pgshim.admin.phase(&id).await, "migrate");
    assert!(
        pgshim.child.id().is_some(),
        "SIGHUP must not stop pgshim:\n{}",
        pgshim.log_text()
    );
    // Still serving new sessions.
    assert_eq!(view(&pgshim.connect(&db.name).await).await, MIGRATE_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_the_cli_subcommand() {
    let db = fixture("reload_cli").await;
    let id = format!("{}-ab", db.name);
    let pgshim = AdminBinary::start(proxy(), &rule(&db, &id, "expand"), None).await;
    let client = pgshim.connect(&db.name).await;
    assert_eq!(view(&client).await, EXPAND_VIEW);
    let before = pgshim.admin.version().await;

    pgshim.replace_rules(&rule(&db, &id, "migrate"));
    let (ok, stdout, stderr) = pgshim.cli_reload(false).await;
    assert!(ok, "pgshim reload failed:\n{stdout}\n{stderr}");
    let answer = crate::support::reloadable::json(stdout.trim());
    assert_eq!(answer["ok"], true, "{stdout}");
    assert!(
        answer["version"].as_u64().expect("version") > before,
        "{stdout}"
    );
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    // A reload pgshim refuses (the schema has no column `zz`) makes the CLI
    // fail with pgshim's reason.
    let missing = rule(&db, &id, "migrate").replace("new = \"b\"", "new = \"zz\"");
    pgshim.replace_rules(&missing);
    let (ok, stdout, stderr) = pgshim.cli_reload(false).await;
    assert!(!ok, "pgshim reload of an invalid file succeeded:\n{stdout}");
    assert!(stdout.contains("zz"), "{stdout}\n{stderr}");
    assert!(stderr.contains("422"), "{stdout}\n{stderr}");
    assert_eq!(view(&client).await, MIGRATE_VIEW);
}

/// A SIGHUP sent as soon as pgshim accepts connections, while it still starts
/// (here: its catalog check waits on a Postgres that never answers), reloads
/// instead of killing the process.
#[tokio::test]
async fn sighup_while_starting_does_not_stop_pgshim() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut accepted = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            accepted.push(socket);
        }
    });
    let settings = proxy()
        .upstream("127.0.0.1", port)
        .connect_timeout_ms(3_000)
        .rules(&format!(
            "{}database = \"app\"\n",
            ab_rule("starting-ab", "expand")
        ));
    let mut pgshim = Binary::start(settings, &[]).await;
    pgshim.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        pgshim.child.try_wait().unwrap().is_none(),
        "SIGHUP while starting stopped pgshim:\n{}",
        pgshim.log_text()
    );
    eventually(20, "pgshim logs a reload triggered by SIGHUP", || async {
        pgshim.log_text().lines().any(|l| l.contains("SIGHUP"))
    })
    .await;
    assert!(
        pgshim.child.try_wait().unwrap().is_none(),
        "{}",
        pgshim.log_text()
    );
    held.abort();
}
