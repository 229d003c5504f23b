//! A statement Postgres itself rejects gets Postgres's own error through
//! pgshim, with the same SQLSTATE, message and position, in both protocols;
//! `0A000` stays for statements Postgres accepts and pgshim cannot rewrite.
//! Nothing of a rejected text runs.
use crate::support::rules::{db_error, simple_rows, Db};
use crate::support::wire::{self, bind_execute, parse, replies, send, sync};

const SETUP: &str =
    "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, email text);
INSERT INTO users VALUES (1, 'Ann', 'Ann', 'a@x');";

const RULE: &str = "[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"expand\"\n";

/// Code, message and position of a failed statement.
fn error_of(e: &tokio_postgres::Error) -> (String, String, Option<String>) {
    let (code, message) = db_error(e);
    let position = e
        .as_db_error()
        .and_then(|d| d.position())
        .map(|p| format!("{p:?}"));
    (code, message, position)
}

const TYPOS: &[&str] = &[
    "SELECT name FROM users WHER id = 1",
    "SELEC name FROM users",
    "INSERT INTO users (id, name) VALUES (2, 'Bo'",
    "UPDATE users SET name = 'x' WHERE",
    "INSERT INTO users (id, name) VALUES (3, 'Cy'); SELECT name FROM users WHER id = 1",
];

#[tokio::test]
async fn typos_get_postgres_s_own_error_in_both_protocols() {
    let db = Db::create("pg_errors", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let direct = db.direct().await;
    for sql in TYPOS {
        let want = error_of(&direct.batch_execute(sql).await.unwrap_err());
        assert_eq!(want.0, "42601", "{sql}");
        let got = error_of(&simple_rows(&client, sql).await.unwrap_err());
        assert_eq!(got, want, "{sql} (simple)");
        if !sql.contains(';') {
            let want = error_of(&direct.prepare(sql).await.unwrap_err());
            let got = error_of(&client.prepare(sql).await.unwrap_err());
            assert_eq!(got, want, "{sql} (extended)");
        }
    }
    // Nothing of a rejected text ran, and the session goes on.
    assert_eq!(db.physical("SELECT count(*) FROM users").await, ["1"]);
    assert_eq!(
        simple_rows(&client, "SELECT name FROM users")
            .await
            .unwrap()
            .0,
        ["Ann"]
    );
}

#[tokio::test]
async fn a_typo_in_a_transaction_fails_it_as_postgres_does() {
    let db = Db::create("pg_errors_tx", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO users (id, name) VALUES (5, 'Ed')")
        .await
        .unwrap();
    let e = client
        .prepare("SELECT name FROM users WHER id = 5")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42601");
    let aborted = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&aborted).0, "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(db.physical("SELECT count(*) FROM users").await, ["1"]);
}

#[tokio::test]
async fn accepted_but_unparsable_statements_stay_refused_and_never_run() {
    let db = Db::create("pg_errors_ok", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    // Postgres accepts these; pgshim cannot parse them: refused, not run.
    for sql in [
        "TABLE users",
        "INSERT INTO users (id, name) VALUES (7, 'G'); TABLE users",
    ] {
        let (code, message) = db_error(&simple_rows(&client, sql).await.unwrap_err());
        assert_eq!(code, "0A000", "{sql}: {message}");
        assert!(message.starts_with("pgshim: cannot rewrite"), "{message}");
    }
    let (code, _) = db_error(&client.prepare("TABLE users").await.unwrap_err());
    assert_eq!(code, "0A000");
    assert_eq!(db.physical("SELECT count(*) FROM users").await, ["1"]);
}

#[tokio::test]
async fn the_statement_postgres_judged_is_not_left_behind() {
    let db = Db::create("pg_errors_unnamed", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let startup = wire::startup(
        (3, 0),
        &[
            ("user", crate::support::pg::TRUST_USER),
            ("database", &db.name),
        ],
    );
    let (mut s, _) = wire::login(proxy.addr, &startup).await;
    send(
        &mut s,
        &[parse("TABLE users"), bind_execute(), sync()].concat(),
    )
    .await;
    assert_eq!(replies(&mut s, 1).await, ["E0A000", "Z"]);
    // Binding the unnamed statement cannot run the unrewritten text.
    send(&mut s, &[bind_execute(), sync()].concat()).await;
    assert_eq!(replies(&mut s, 1).await, ["E26000", "Z"]);
    // A typo in the same position gets Postgres's error.
    send(
        &mut s,
        &[
            parse("SELECT name FROM users WHER id = 1"),
            bind_execute(),
            sync(),
        ]
        .concat(),
    )
    .await;
    assert_eq!(replies(&mut s, 1).await, ["E42601", "Z"]);
}

/// An error in a statement pgshim rewrote points into the text the client
/// sent (psql draws its caret there, pgjdbc prints it), in the simple and the
/// extended protocol.
#[tokio::test]
async fn error_positions_count_in_the_clients_text() {
    let setup = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);";
    let rule = |phase: &str| {
        format!("[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n")
    };
    let sql = "SELECT id FROM users WHERE name = 5 AND id = 'x'::int";
    let direct_db = Db::create("err_pos_direct", setup).await;
    let direct = direct_db.direct().await;
    let want = db_position(direct.batch_execute(sql).await.unwrap_err());
    assert_eq!(want, sql.find("= 5").unwrap() + 1);
    for phase in ["expand", "migrate", "contract"] {
        let db = Db::create("err_pos", setup).await;
        let proxy = db.proxy(&rule(phase)).start().await;
        let client = db.through(&proxy).await;
        let simple = db_position(client.batch_execute(sql).await.unwrap_err());
        let extended = db_position(client.prepare(sql).await.unwrap_err());
        // The operator is the client's own character, inside the predicate
        // pgshim rewrote.
        assert_eq!((simple, extended), (want, want), "{phase}");
        // An error after the rewritten part is exactly where Postgres puts it.
        let after = "SELECT id FROM users WHERE name = 'x' AND id = 'y'";
        let direct_after = db_position(direct.batch_execute(after).await.unwrap_err());
        let through = db_position(client.batch_execute(after).await.unwrap_err());
        assert_eq!(through, direct_after, "{phase}");
    }
}

fn db_position(e: tokio_postgres::Error) -> usize {
    match e.as_db_error().and_then(|d| d.position()) {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => *p as usize,
        other => panic!("no position: {e:?} {other:?}"),
    }
}
