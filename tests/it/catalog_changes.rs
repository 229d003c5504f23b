//! The catalog of a mapped table follows the table: DDL through pgshim is
//! seen at once, DDL run elsewhere within the watch interval, and a
//! positional INSERT is never resolved against columns that are gone.
use std::time::Duration;

use crate::support::rules::{db_error, simple_rows, Db};
use crate::support::{eventually, within};

const SETUP: &str =
    "CREATE TABLE users (id serial PRIMARY KEY, name text, full_name text, email text);
INSERT INTO users (name, full_name, email) VALUES ('Ann', 'Ann', 'a@x');";

fn rule(phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n"
    )
}

#[tokio::test]
async fn ddl_through_pgshim_is_seen_by_every_session_at_once() {
    let db = Db::create("cat_ddl", SETUP).await;
    let proxy = db.proxy(&rule("migrate")).start().await;
    let a = db.through(&proxy).await;
    let b = db.through(&proxy).await;
    let star = |client| async move { simple_rows(client, "SELECT * FROM users").await.unwrap().0 };
    assert_eq!(star(&b).await, ["1|Ann|Ann|a@x"]);
    let returning = b
        .prepare("INSERT INTO users (name, email) VALUES ($1, $2) RETURNING *")
        .await
        .unwrap();
    // The session that ran the DDL stays idle, as a pooled connection would:
    // the other session sees the new column at its next statement all the same.
    a.batch_execute("ALTER TABLE users ADD COLUMN nickname text")
        .await
        .unwrap();
    assert_eq!(star(&b).await, ["1|Ann|Ann|a@x|∅"]);
    let rows = b.query(&returning, &[&"Bo", &"b@x"]).await;
    // A prepared statement whose result changed: either re-described or
    // refused as Postgres refuses a changed cached plan, never a short row.
    if let Ok(rows) = rows {
        assert_eq!(rows[0].len(), 5);
    }
    // DDL in a transaction counts once it commits, and a dropped column is
    // gone for the other session at once (not an error naming it).
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("ALTER TABLE users DROP COLUMN nickname")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(star(&b).await[0], "1|Ann|Ann|a@x");
}

#[tokio::test]
async fn ddl_elsewhere_is_noticed_and_positional_inserts_never_misplace() {
    let db = Db::create("cat_elsewhere", SETUP).await;
    let proxy = db.proxy(&rule("contract")).start().await;
    let client = db.through(&proxy).await;
    assert_eq!(
        simple_rows(&client, "SELECT * FROM users").await.unwrap().0,
        ["1|Ann|Ann|a@x"]
    );
    // The contract step run directly, not through pgshim.
    db.direct()
        .await
        .batch_execute("ALTER TABLE users DROP COLUMN name")
        .await
        .unwrap();
    // Before the change is noticed a positional INSERT fails; it never
    // stores values in the wrong columns.
    let early = client
        .batch_execute("INSERT INTO users VALUES (DEFAULT, 'Zed Zee', 'z@x')")
        .await;
    if early.is_ok() {
        let stored = db
            .physical("SELECT full_name, email FROM users WHERE email = 'z@x'")
            .await;
        assert_eq!(stored, ["Zed Zee|z@x"]);
    }
    eventually(20, "pgshim notices the dropped column", || async {
        simple_rows(&client, "SELECT * FROM users WHERE id = 1")
            .await
            .map(|r| r.0 == ["1|Ann|a@x"])
            .unwrap_or(false)
    })
    .await;
    client
        .batch_execute("INSERT INTO users VALUES (DEFAULT, 'Yo Yu', 'y@x')")
        .await
        .expect("a positional INSERT against the current columns");
    assert_eq!(
        db.physical("SELECT full_name, email FROM users WHERE email = 'y@x'")
            .await,
        ["Yo Yu|y@x"]
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The contract step's `DROP COLUMN`, run while pgshim still mirrors writes
/// into the column: the first write to name it fails, and the ones after it
/// (on any session) are written without it at once, not after the next
/// periodic comparison of catalogs.
#[tokio::test]
async fn a_dropped_column_reported_missing_is_read_afresh_at_once() {
    let db = Db::create("cat_dropped", SETUP).await;
    let proxy = db.proxy(&rule("contract")).start().await;
    let first = db.through(&proxy).await;
    let writer = db.through(&proxy).await;
    writer
        .batch_execute("INSERT INTO users (full_name, email) VALUES ('Bo', 'b@x')")
        .await
        .unwrap();
    db.direct()
        .await
        .batch_execute("ALTER TABLE users DROP COLUMN name")
        .await
        .unwrap();
    // (tokio-postgres may send a session's next statement before its
    // ReadyForQuery, so the one that fails and the ones after are on
    // sessions of their own: a statement rewritten while its session is
    // still busy keeps the rules it had.)
    if let Err(e) = first
        .batch_execute("INSERT INTO users (full_name, email) VALUES ('Cy', 'c@x')")
        .await
    {
        assert_eq!(db_error(&e).0, "42703", "{e}");
    }
    // No pause: the error itself had the catalog read again.
    writer
        .batch_execute("INSERT INTO users (full_name, email) VALUES ('Di', 'd@x')")
        .await
        .unwrap();
    writer
        .batch_execute("UPDATE users SET name = 'Ann B' WHERE email = 'a@x'")
        .await
        .unwrap();
    assert_eq!(
        db.physical("SELECT full_name FROM users WHERE email IN ('a@x', 'd@x') ORDER BY email")
            .await,
        ["Ann B", "Di"]
    );
}

/// After the contract drop, the comparisons of catalogs every 5 s ask nothing
/// of the dropped column: no statement of pgshim's fails there (each would be
/// an ERROR in Postgres's log, and a rollback in its statistics).
#[tokio::test]
async fn after_the_drop_catalog_checks_do_not_fail_in_postgres() {
    let db = Db::create("cat_quiet", SETUP).await;
    let proxy = db.proxy(&rule("contract")).start().await;
    let client = db.through(&proxy).await;
    db.direct()
        .await
        .batch_execute("ALTER TABLE users DROP COLUMN name")
        .await
        .unwrap();
    eventually(20, "pgshim notices the dropped column", || async {
        simple_rows(&client, "SELECT * FROM users WHERE id = 1")
            .await
            .is_ok_and(|(rows, _)| rows == ["1|Ann|a@x"])
    })
    .await;
    let rollbacks = || async {
        db.physical(&format!(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = '{}'",
            db.name
        ))
        .await
    };
    let before = rollbacks().await;
    // Longer than one comparison interval; statistics are flushed as the
    // catalog connection closes.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(rollbacks().await, before);
}

/// Within the transaction that changes a mapped table's columns, pgshim
/// still holds the columns from before: a `*` over the table is refused with
/// the reason rather than answered without an added column. Other DDL, and
/// DDL words in literals, refuse nothing.
#[tokio::test]
async fn star_after_column_changes_in_the_same_transaction_is_refused() {
    let db = Db::create("cat_same_tx", SETUP).await;
    let proxy = db.proxy(&rule("expand")).start().await;
    let client = db.through(&proxy).await;
    client
        .batch_execute(
            "BEGIN; CREATE INDEX ON users (email); UPDATE users SET email = 'alter table' WHERE id = 0",
        )
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&client, "SELECT * FROM users").await.unwrap().0,
        ["1|Ann|Ann|a@x"]
    );
    client
        .batch_execute("ALTER TABLE users ADD COLUMN nickname text")
        .await
        .unwrap();
    let refused = client
        .batch_execute("SELECT * FROM users")
        .await
        .unwrap_err();
    let (code, message) = db_error(&refused);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("earlier in this transaction"), "{message}");
    // Named columns are fine.
    client.batch_execute("ROLLBACK").await.unwrap();
    client
        .batch_execute("BEGIN; ALTER TABLE users ADD COLUMN nickname text")
        .await
        .unwrap();
    client
        .batch_execute("UPDATE users SET nickname = 'A', name = 'Ann B' WHERE id = 1; COMMIT")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&client, "SELECT * FROM users").await.unwrap().0,
        ["1|Ann B|Ann B|a@x|A"]
    );
}

/// A client's transaction that holds a lock on a table pgshim reads the
/// catalog of (here one in the mapped table's schema, and then the mapped
/// table itself) does not hold up other sessions: pgshim reads no default of
/// an unmapped table, and gives up waiting for a mapped one after a moment,
/// trying again later.
#[tokio::test]
async fn a_lock_held_by_a_client_transaction_does_not_hold_up_other_sessions() {
    let db = Db::create(
        "cat_locked",
        &format!("{SETUP} CREATE TABLE notes (id serial PRIMARY KEY, body text DEFAULT 'x');"),
    )
    .await;
    let proxy = db.proxy(&rule("expand")).start().await;
    let holder = db.through(&proxy).await;
    holder
        .batch_execute("BEGIN; ALTER TABLE notes ADD COLUMN extra int")
        .await
        .unwrap();
    // DDL on the mapped table through pgshim: the catalog is read afresh.
    let other = db.through(&proxy).await;
    other
        .batch_execute("ALTER TABLE users ADD COLUMN nick text")
        .await
        .unwrap();
    let reader = db.through(&proxy).await;
    let rows = within(10, "a read while notes is locked", async {
        simple_rows(&reader, "SELECT name FROM users WHERE id = 1").await
    })
    .await
    .unwrap();
    assert_eq!(rows.0, ["Ann"]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    // Now the mapped table itself, locked across a comparison of catalogs
    // (every 5 s), whose read gives up waiting and changes nothing.
    holder
        .batch_execute("BEGIN; ALTER TABLE users ADD COLUMN locked int")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let newcomer = db.through(&proxy).await;
    let answer = within(15, "a statement not touching the locked table", async {
        simple_rows(&newcomer, "SELECT 1").await
    })
    .await;
    assert_eq!(answer.unwrap().0, ["1"]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    let rows = within(15, "the read after the lock is gone", async {
        simple_rows(&newcomer, "SELECT name FROM users WHERE id = 1").await
    })
    .await
    .unwrap();
    assert_eq!(rows.0, ["Ann"]);
}
