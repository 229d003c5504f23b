//! A statement pgshim prepares again under new rules keeps the result shape
//! the client was shown, or fails its Bind with the error Postgres gives for a
//! cached plan whose result changed (`0A000 cached plan must not change
//! result type`), which drivers answer by preparing the statement again.
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;
use crate::support::rules::{db_error, row_text, Db};

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
