//! Per-database rules state: bounded however many database names clients
//! try, and a catalog check that fails in a database is remembered for a few
//! seconds, so a burst of sessions to it costs one catalog connection, not
//! one each (counted by Postgres itself in `pg_stat_database.sessions`).
//! Where the rules cannot serve a database yet, the DDL that makes them able
//! to still goes through.
use std::time::Duration;

use crate::support::pg::cluster;
use crate::support::proxy::proxy;
use crate::support::reloadable::ab_rule;
use crate::support::reloadable::Reloadable;
use crate::support::rules::{db_error, Db};
use crate::support::{eventually, within};

/// Sessions Postgres has counted for `database` so far.
async fn sessions(database: &str) -> i64 {
    let admin = cluster().admin().await;
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    admin
        .query_one(
            "SELECT coalesce(sum(sessions), 0)::int8 FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalog_check_is_not_repeated_by_every_session() {
    // The rule names no database, and this one's table lacks a column the
    // phase needs: the check fails here.
    let db = Db::create("failed_catalog", "CREATE TABLE t (a text)").await;
    let pgshim = proxy().rules(&ab_rule("missing-t", "expand")).start().await;
    const CLIENTS: i64 = 20;
    for _ in 0..CLIENTS {
        let client = db.through(&pgshim).await;
        // Statements that name no mapped table pass, though they contain "t".
        client
            .batch_execute("SELECT 1 AS t")
            .await
            .expect("a statement not naming t is forwarded");
        let err = client
            .batch_execute("SELECT a FROM t")
            .await
            .expect_err("t cannot be served here");
        let message = err.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message.is_some_and(|m| m.starts_with("pgshim:") && m.contains("lacks column(s) b")),
            "{err:?}"
        );
    }
    // Every session has ended and been counted once the total stops moving.
    eventually(30, "Postgres counted the client sessions", || async {
        sessions(&db.name).await > CLIENTS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total = sessions(&db.name).await;
    // One catalog connection, maybe a second if the burst outlasted the
    // remembered failure; one per client would be 2 * CLIENTS.
    assert!(
        total <= CLIENTS + 3,
        "{total} sessions for {CLIENTS} clients: the failed catalog check was retried per session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_database_names_do_not_grow_state_without_bound() {
    let db = crate::reload_triggers::fixture("many_names").await;
    let id = format!("{}-ab", db.name);
    let pgshim =
        Reloadable::start(proxy(), &crate::reload_triggers::rule(&db, &id, "expand")).await;
    let held = pgshim.connect(&db.name).await;
    for i in 0..300 {
        let name = format!("no_such_db_{i}");
        let _ = within(
            20,
            "connect",
            crate::support::connect(&pgshim.config(&name)),
        )
        .await;
    }
    let rules = pgshim.admin.rules().await;
    let count = rules["databases_held"].as_u64().expect("databases_held");
    assert!(
        count <= 64 + 1,
        "{count} databases held after 300 names: {rules}"
    );
    // The database in use keeps its rules.
    assert_eq!(
        crate::reload_triggers::view(&held).await,
        crate::reload_triggers::EXPAND_VIEW
    );
}

fn widget_rule() -> &'static str {
    "[[rule]]\nid = \"widget-title\"\ntable = \"widgets\"\nold = \"name\"\nnew = \"title\"\nphase = \"expand\"\n"
}

/// `widgets` lacks `title`, so the rule cannot serve it: an insert is refused
/// with that reason, `ADD COLUMN title` runs all the same, and the next
/// insert is mirrored.
async fn add_column_lets_the_rule_serve(db: &Db, client: &tokio_postgres::Client) {
    let refused = client
        .batch_execute("INSERT INTO widgets (id, name) VALUES (1, 'a')")
        .await
        .unwrap_err();
    let (code, message) = db_error(&refused);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("lacks column(s) title"), "{message}");
    client
        .batch_execute("ALTER TABLE widgets ADD COLUMN title text")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO widgets (id, name) VALUES (2, 'b')")
        .await
        .unwrap();
    assert_eq!(db.physical("SELECT id, title FROM widgets").await, ["2|b"]);
}

/// A rule for every database, in a database without its table (a test
/// database an ORM is about to build): statements pass, `CREATE TABLE` and
/// `ADD COLUMN` included, and each is taken into account as soon as it has
/// run: the rule cannot serve the table with one shape, and serves it with
/// both.
#[tokio::test]
async fn a_rule_for_every_database_waits_for_its_table() {
    let db = Db::create("dormant", "SELECT 1").await;
    let pgshim = proxy().rules(widget_rule()).start().await;
    let client = db.through(&pgshim).await;
    client
        .batch_execute("CREATE TABLE widgets (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    add_column_lets_the_rule_serve(&db, &client).await;
}

/// A rule whose table lacks the new column: statements on the table are
/// refused, but the `ADD COLUMN` that fixes it runs, and the rule serves from
/// the next statement on.
#[tokio::test]
async fn ddl_runs_where_the_rules_cannot_yet_serve() {
    let db = Db::create(
        "ddl_unusable",
        "CREATE TABLE widgets (id int PRIMARY KEY, name text)",
    )
    .await;
    let pgshim = proxy().rules(widget_rule()).start().await;
    let client = db.through(&pgshim).await;
    add_column_lets_the_rule_serve(&db, &client).await;
}
