//! Reloads that must not loosen what is in force: a lower connection cap
//! holds once the sessions above it close; new rules are checked in every
//! database pgshim serves, not only those they name; and settings that only
//! a restart applies are still validated.
use tokio_postgres::error::SqlState;

use crate::reload_triggers::{fixture, view, EXPAND_VIEW};
use crate::support::pg::backends_named;
use crate::support::proxy::proxy;
use crate::support::reloadable::{ab_rule, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name, within};

/// A session through `proxy` to `database` tagged with `app`, or the error.
async fn connect_as(
    proxy: &Reloadable,
    database: &str,
    app: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = proxy.config(database);
    cfg.application_name(app);
    within(20, "connect through pgshim", crate::support::connect(&cfg)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_max_connections_holds_once_sessions_close() {
    let proxy = Reloadable::start(proxy().limit("max_connections", 50), "").await;
    let db = crate::support::pg::DB;
    let app = unique_name("cap");
    let mut open = Vec::new();
    for _ in 0..40 {
        open.push(connect_as(&proxy, db, &app).await.expect("under the cap"));
    }
    let lowered = proxy
        .text("")
        .replace("max_connections = 50", "max_connections = 10");
    assert!(lowered.contains("max_connections = 10"), "{lowered}");
    proxy.replace_text(&lowered);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");

    // Over the new cap, a newcomer is refused while the 40 stay.
    let err = connect_as(&proxy, db, &app)
        .await
        .expect_err("40 open sessions exceed the reloaded cap of 10");
    let code = err.as_db_error().map(|e| e.code().clone());
    assert_eq!(code, Some(SqlState::TOO_MANY_CONNECTIONS), "{err:?}");
    open[0]
        .batch_execute("SELECT 1")
        .await
        .expect("open sessions stay");

    drop(open);
    eventually(20, "the 40 sessions are gone", || async {
        backends_named(&app).await == 0
    })
    .await;
    // pgshim releases a session's slot just after its server connection ends.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let mut admitted = Vec::new();
    for i in 0..10 {
        let client = connect_as(&proxy, db, &app)
            .await
            .unwrap_or_else(|e| panic!("session {} of 10 refused: {e:?}", i + 1));
        admitted.push(client);
    }
    let err = connect_as(&proxy, db, &app)
        .await
        .expect_err("an 11th session exceeds the reloaded cap of 10");
    let code = err.as_db_error().map(|e| e.code().clone());
    assert_eq!(code, Some(SqlState::TOO_MANY_CONNECTIONS), "{err:?}");
    for client in &admitted {
        client
            .batch_execute("SELECT 1")
            .await
            .expect("admitted session works");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_without_database_is_checked_in_every_served_database() {
    let one = fixture("served_one").await;
    let two = Db::create("served_two", "CREATE TABLE t (id int PRIMARY KEY, a text);").await;
    let good = ab_rule("typo-ab", "expand");
    let scoped = one.scope(&good);
    let proxy = Reloadable::start(proxy(), &scoped).await;
    let client = proxy.connect(&one.name).await;
    assert_eq!(view(&client).await, EXPAND_VIEW);
    let other = proxy.connect(&two.name).await;
    let version = proxy.admin.version().await;

    // A typo in the new column, in a rule that names no database: it fails
    // in both databases pgshim serves.
    let typo = good.replace("new = \"b\"", "new = \"fullname\"");
    proxy.replace_rules(&typo);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("fullname"),
        "{body}"
    );
    assert_eq!(proxy.admin.version().await, version);
    assert_eq!(view(&client).await, EXPAND_VIEW, "old rules kept");

    // Valid in one database, not in the other (it lacks column b).
    proxy.replace_rules(&good);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&two.name), "{body}");
    assert_eq!(proxy.admin.version().await, version);
    assert_eq!(view(&client).await, EXPAND_VIEW, "old rules kept");
    other
        .batch_execute("SELECT a FROM t")
        .await
        .expect("other database untouched");

    // Once the other database can serve the rule, the reload applies.
    two.direct()
        .await
        .batch_execute("ALTER TABLE t ADD COLUMN b text")
        .await
        .unwrap();
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(proxy.admin.version().await > version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_keys_are_validated_on_reload() {
    let proxy = Reloadable::start(proxy(), "").await;
    let version = proxy.admin.version().await;
    let text = proxy.text("");
    let admin_line = format!("listen = \"{}\"", proxy.admin.addr);
    let cases = [
        (
            "listen",
            text.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:99[9\""),
            "listen",
        ),
        (
            "[admin] listen",
            text.replace(&admin_line, "listen = \"localhost\""),
            "[admin] listen",
        ),
        (
            "[tls] files",
            format!("{text}\n[tls]\ncert = \"/nonexistent/pgshim.crt\"\nkey = \"/nonexistent/pgshim.key\"\n"),
            "/nonexistent/pgshim.crt",
        ),
        (
            "[admin] token_env",
            text.replace(&admin_line, &format!("{admin_line}\ntoken_env = \"PGSHIM_IT_UNSET_TOKEN\"")),
            "PGSHIM_IT_UNSET_TOKEN",
        ),
    ];
    for (what, text, needle) in cases {
        proxy.replace_text(&text);
        let (status, body) = proxy.admin.post_reload().await;
        assert_eq!(status, 422, "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{what}: {needle:?} not in {error:?}"
        );
        assert_eq!(proxy.admin.version().await, version, "{what}");
    }
    proxy
        .connect(crate::support::pg::DB)
        .await
        .batch_execute("SELECT 1")
        .await
        .expect("still serving");
}
