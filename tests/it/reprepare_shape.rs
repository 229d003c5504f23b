//! A statement pgshim prepares again under new rules keeps the result shape
//! the client was shown, or fails its Bind with the error Postgres gives for a
//! cached plan whose result changed (`0A000 cached plan must not change
//! result type`), which drivers answer by preparing the statement again.
use crate::support::pg::TRUST_USER;
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;
use crate::support::rules::{db_error, row_text, Db};
use crate::support::wire::{cstr, login, message, replies, send, startup, sync};
use crate::support::within;

const SETUP: &str =
    "CREATE TABLE users (id serial PRIMARY KEY, name text, full_name text, email text);
INSERT INTO users (name, full_name, email) VALUES ('Ann', 'Ann', 'a@x');";

fn rule(phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n"
    )
}

const CHANGED: (&str, &str) = ("0A000", "cached plan must not change result type");

#[tokio::test]
async fn a_changed_result_fails_like_postgres_and_preparing_again_works() {
    let db = Db::create("shape_changed", SETUP).await;
    // Postgres itself, for reference.
    let direct = db.direct().await;
    let star = direct
        .prepare("SELECT * FROM users WHERE id = $1")
        .await
        .unwrap();
    let proxy = db.proxy(&rule("migrate")).start().await;
    let client = db.through(&proxy).await;
    let other = db.through(&proxy).await;
    let through = client
        .prepare("SELECT * FROM users WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(through.columns().len(), 4);
    assert_eq!(
        row_text(&client.query_one(&through, &[&1]).await.unwrap()),
        "1|Ann|Ann|a@x"
    );

    other
        .batch_execute("ALTER TABLE users ADD COLUMN nickname text")
        .await
        .unwrap();
    other.batch_execute("SELECT 1").await.unwrap();

    let direct_error = direct.query(&star, &[&1]).await.unwrap_err();
    assert_eq!(
        db_error(&direct_error),
        (CHANGED.0.into(), CHANGED.1.into())
    );
    let error = client.query(&through, &[&1]).await.unwrap_err();
    assert_eq!(db_error(&error), (CHANGED.0.into(), CHANGED.1.into()));
    // It keeps failing, as with Postgres, until the client prepares it again.
    let again = client.query(&through, &[&1]).await.unwrap_err();
    assert_eq!(db_error(&again).0, CHANGED.0);
    // The session is fine, and a new statement sees the new column.
    let fresh = client
        .prepare("SELECT * FROM users WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(fresh.columns().len(), 5);
    assert_eq!(
        row_text(&client.query_one(&fresh, &[&1]).await.unwrap()),
        "1|Ann|Ann|a@x|∅"
    );
    // The changed statement fails inside a transaction too, which then
    // fails as a direct one would.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.query(&through, &[&1]).await.is_err());
    let aborted = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&aborted).0, "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    // The column goes again (a migration rolled back): the statement has the
    // columns it was prepared with and runs again, as on Postgres.
    other
        .batch_execute("ALTER TABLE users DROP COLUMN nickname")
        .await
        .unwrap();
    assert_eq!(
        row_text(&direct.query_one(&star, &[&1]).await.unwrap()),
        "1|Ann|Ann|a@x"
    );
    assert_eq!(
        row_text(&client.query_one(&through, &[&1]).await.unwrap()),
        "1|Ann|Ann|a@x"
    );
}

#[tokio::test]
async fn an_unchanged_result_goes_on_across_a_phase_flip() {
    let db = Db::create("shape_same", SETUP).await;
    let proxy = Reloadable::start(proxy(), &db.scope(&rule("expand"))).await;
    let old_app = proxy.connect(&db.name).await;
    let new_app = proxy.connect(&db.name).await;
    let by_old = old_app
        .prepare("SELECT id, name FROM users WHERE id = $1")
        .await
        .unwrap();
    let by_new = new_app
        .prepare("SELECT id, full_name FROM users WHERE id = $1")
        .await
        .unwrap();
    new_app
        .execute(
            "UPDATE users SET full_name = 'Ann Lee' WHERE id = $1",
            &[&1],
        )
        .await
        .unwrap();
    proxy.replace_rules(&db.scope(&rule("migrate")));
    let (status, _) = proxy.admin.post_reload().await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let old = old_app.query_one(&by_old, &[&1]).await.unwrap();
        let new = new_app.query_one(&by_new, &[&1]).await.unwrap();
        assert_eq!(row_text(&old), "1|Ann Lee");
        assert_eq!(row_text(&new), "1|Ann Lee");
    }
}

/// pgjdbc's way: a named statement whose rows it was shown by describing the
/// portal, never the statement; later executions send Bind and Execute only,
/// with a result format per column it was shown. After a column is added,
/// pgshim's re-prepare would give rows of another width: the Bind fails as
/// it does on Postgres (`0A000`, routine `RevalidateCachedQuery`, which
/// pgjdbc answers by preparing the statement again).
#[tokio::test]
async fn a_shape_shown_by_a_portal_describe_is_kept_too() {
    let db = Db::create("shape_portal", SETUP).await;
    let proxy = db.proxy(&rule("contract")).start().await;
    let (mut s, _) = login(
        proxy.addr,
        &startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]),
    )
    .await;
    let mut parse = cstr("S_1");
    parse.extend(cstr("SELECT * FROM users WHERE id = 1"));
    parse.extend(0i16.to_be_bytes());
    let mut bind = cstr("");
    bind.extend(cstr("S_1"));
    bind.extend([0u8; 6]);
    let mut portal = vec![b'P'];
    portal.extend(cstr(""));
    let mut execute = cstr("");
    execute.extend(0i32.to_be_bytes());
    let (bind, execute) = (message(b'B', &bind), message(b'E', &execute));
    let first = [
        message(b'P', &parse),
        bind.clone(),
        message(b'D', &portal),
        execute.clone(),
        sync(),
    ];
    send(&mut s, &first.concat()).await;
    let got = within(20, "first execution", replies(&mut s, 1)).await;
    let tags: Vec<&str> = got.iter().map(|m| &m[..1]).collect();
    assert_eq!(tags, ["1", "2", "T", "D", "C", "Z"], "{got:?}");
    db.direct()
        .await
        .batch_execute("ALTER TABLE users ADD COLUMN nickname text")
        .await
        .unwrap();
    let client = db.through(&proxy).await;
    // Through another session: the DDL is noticed at once.
    client
        .batch_execute("ALTER TABLE users ADD COLUMN nick2 text")
        .await
        .unwrap();
    send(&mut s, &[bind, execute, sync()].concat()).await;
    let got = within(20, "after the change", replies(&mut s, 1)).await;
    assert_eq!(got, ["E0A000", "Z"], "{got:?}");
}
