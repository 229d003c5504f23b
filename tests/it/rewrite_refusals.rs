//! What pgshim must leave alone or refuse when rules are active: look-alike
//! names, literals and comments, statements not mentioning a mapped table
//! (forwarded byte for byte), statements it cannot rewrite (0A000 in order,
//! in both protocols, in transactions and pipelines, or passed with
//! `on_unrewritable = "pass"`), a schema that cannot serve a rule's phase, and
//! invalid rules.
use std::path::Path;

use crate::support::rules::{db_error, extended_rows, simple_rows, Db};
use crate::support::wire::{self, bind_execute, parse, replies, send, sync};

const SETUP: &str = r#"
CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, "Name" text);
CREATE TABLE "Users" (id int, name text);
CREATE TABLE superusers (id int, name text);
CREATE TABLE orders (id int, user_id int, name text);
INSERT INTO users VALUES (1, 'old-1', 'new-1', 'quoted-1');
INSERT INTO "Users" VALUES (1, 'Users-1');
INSERT INTO superusers VALUES (1, 'super-1');
INSERT INTO orders VALUES (1, 1, 'order-1');
"#;

/// Contract, so an old-shape reference that is rewritten reads `new-1`, and
/// one that is wrongly rewritten shows.
const RULE: &str = r#"
[[rule]]
id = "users-full-name"
table = "users"
old = "name"
new = "full_name"
phase = "contract"
"#;

/// Statements Postgres accepts that pgshim refuses (sqlparser cannot parse
/// them, or a whole-row reference it cannot map).
const UNREWRITABLE: &[&str] = &[
    "SELECT row_to_json(u) FROM users u",
    "INSERT INTO users (id, name) SELECT 5, 'x' ON CONFLICT (id) DO NOTHING",
    "TABLE users",
];

fn assert_refused(e: &tokio_postgres::Error, sql: &str) {
    let (code, message) = db_error(e);
    assert_eq!(code, "0A000", "{sql}: {message}");
    assert!(
        message.starts_with("pgshim: cannot rewrite")
            && message.contains("(rule users-full-name): "),
        "{sql}: {message}"
    );
}

#[tokio::test]
async fn look_alikes_literals_and_comments_are_untouched() {
    let db = Db::create("rw_neg", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let cases: &[(&str, &str)] = &[
        (r#"SELECT "Name" FROM users"#, "quoted-1"),
        (r#"SELECT name FROM "Users""#, "Users-1"),
        ("SELECT name FROM superusers", "super-1"),
        (
            "SELECT o.name FROM orders o JOIN users u ON u.id = o.user_id",
            "order-1",
        ),
        (
            "SELECT name FROM orders WHERE id IN (SELECT id FROM users)",
            "order-1",
        ),
        (
            "SELECT 'users.name' || ' name' FROM users",
            "users.name name",
        ),
        (
            "SELECT $$name$$ /* SELECT name FROM users */ FROM users -- name",
            "name",
        ),
        (r#"SELECT "Name" || name FROM users"#, "quoted-1new-1"),
        ("SELECT NAME FROM USERS", "new-1"),
        ("SELECT users.name FROM public.users", "new-1"),
    ];
    for (sql, want) in cases {
        let simple = simple_rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(simple.0, [*want], "{sql}");
        let ext = extended_rows(&client, sql, &[]).await.unwrap();
        assert_eq!(ext.rows, [*want], "{sql} (extended)");
    }
    // Writes to other tables' same-named columns stay where they were sent.
    simple_rows(
        &client,
        "UPDATE orders SET name = 'o2' WHERE name IN (SELECT name FROM users)",
    )
    .await
    .unwrap();
    assert_eq!(db.physical("SELECT name FROM orders").await, ["order-1"]);
    simple_rows(
        &client,
        "UPDATE orders o SET name = u.name FROM users u WHERE u.id = o.user_id",
    )
    .await
    .unwrap();
    assert_eq!(db.physical("SELECT name FROM orders").await, ["new-1"]);
}

#[tokio::test]
async fn statements_are_forwarded_byte_for_byte() {
    let db = Db::create("rw_bytes", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let texts = [
        // Not mentioning a mapped table.
        "SELECT   current_query()\n\t-- trailing comment, NAME\n, 1 /* x */",
        // Mentioning it, but nothing to rewrite (new shape in contract).
        "SELECT current_query(),\n  full_name   FROM users /* name */ WHERE  id = 1",
        // Mentioning only in a literal.
        "select current_query() , 'users'",
    ];
    for sql in texts {
        let simple = simple_rows(&client, sql).await.unwrap().0;
        let first = simple[0].split('|').next().unwrap_or_default().to_owned();
        assert_eq!(first, sql, "simple protocol");
        let ext = extended_rows(&client, sql, &[]).await.unwrap().rows;
        let first = ext[0].split('|').next().unwrap_or_default().to_owned();
        assert_eq!(first, sql, "extended protocol");
    }
    // And a rewritten statement keeps everything but the edited spans.
    let sql = "SELECT current_query(), name  /* name */ FROM users -- tail";
    let got = simple_rows(&client, sql).await.unwrap().0;
    assert!(
        got[0].ends_with("/* name */ FROM users -- tail|new-1"),
        "{got:?}"
    );
    assert!(got[0].starts_with("SELECT current_query(), "), "{got:?}");
}

#[tokio::test]
async fn unrewritable_statements_are_refused_in_both_protocols() {
    let db = Db::create("rw_refuse", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    for sql in UNREWRITABLE {
        let e = simple_rows(&client, sql).await.expect_err(sql);
        assert_refused(&e, sql);
        let e = client.prepare(sql).await.expect_err(sql);
        assert_refused(&e, sql);
        // The session carries on.
        assert_eq!(simple_rows(&client, "SELECT 1").await.unwrap().0, ["1"]);
    }
    // Nothing was written by the refused INSERT.
    assert_eq!(db.physical("SELECT count(*) FROM users").await, ["1"]);
    // In a transaction: the transaction is aborted as by a real error.
    client.batch_execute("BEGIN").await.unwrap();
    simple_rows(&client, "INSERT INTO users (id, name) VALUES (7, 'in-tx')")
        .await
        .unwrap();
    assert_refused(
        &client.simple_query(UNREWRITABLE[0]).await.unwrap_err(),
        UNREWRITABLE[0],
    );
    let e = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(db.physical("SELECT count(*) FROM users").await, ["1"]);
    // Several statements in one Query: the ones before the refusal ran
    // (implicit transaction: rolled back, as with a real error), none after.
    let e = client
        .simple_query("SELECT 1; SELECT row_to_json(u) FROM users u; SELECT 2")
        .await
        .unwrap_err();
    assert_refused(&e, "multi-statement");
    assert_eq!(simple_rows(&client, "SELECT 3").await.unwrap().0, ["3"]);
}

#[tokio::test]
async fn pass_forwards_unrewritable_statements() {
    let db = Db::create("rw_pass", SETUP).await;
    let proxy = db
        .proxy(RULE)
        .top_level("on_unrewritable = \"pass\"")
        .start()
        .await;
    let client = db.through(&proxy).await;
    let rows = simple_rows(&client, "TABLE users").await.unwrap().0;
    assert_eq!(rows, ["1|old-1|new-1|quoted-1"]);
    let rows = extended_rows(&client, "SELECT row_to_json(u)::text FROM users u", &[])
        .await
        .unwrap()
        .rows;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("\"name\":\"old-1\""), "{rows:?}");
}

#[tokio::test]
async fn a_refused_parse_fails_in_its_place_in_a_pipeline() {
    let db = Db::create("rw_pipe", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let startup = wire::startup(
        (3, 0),
        &[
            ("user", crate::support::pg::TRUST_USER),
            ("database", &db.name),
        ],
    );
    let (mut proxied, _) = wire::login(proxy.addr, &startup).await;
    let direct_addr = format!("127.0.0.1:{}", crate::support::pg::cluster().port);
    let (mut direct, _) = wire::login(direct_addr.parse().unwrap(), &startup).await;
    // Three queries with a Sync each, then three behind one Sync. Directly,
    // the middle one is a real syntax error; through pgshim, a refusal.
    let pipeline = |middle: &str| {
        [
            parse("SELECT name FROM users"),
            bind_execute(),
            sync(),
            parse(middle),
            bind_execute(),
            sync(),
            parse("SELECT 2"),
            bind_execute(),
            sync(),
            parse("SELECT 3"),
            bind_execute(),
            parse(middle),
            bind_execute(),
            parse("SELECT 4"),
            bind_execute(),
            sync(),
            parse("SELECT full_name FROM users"),
            bind_execute(),
            sync(),
        ]
        .concat()
    };
    send(&mut proxied, &pipeline(UNREWRITABLE[0])).await;
    send(&mut direct, &pipeline("SELEC 1")).await;
    let through = replies(&mut proxied, 5).await;
    let mut want = replies(&mut direct, 5).await;
    for tag in want.iter_mut() {
        if tag == "E42601" {
            *tag = "E0A000".into();
        }
    }
    // Directly `name` reads the old column; through pgshim, `full_name`.
    for tag in want.iter_mut() {
        if tag == "Dold-1" {
            *tag = "Dnew-1".into();
        }
    }
    assert_eq!(through, want);
    assert!(
        through.iter().filter(|t| *t == "E0A000").count() == 2,
        "{through:?}"
    );
}

#[tokio::test]
async fn a_phase_the_schema_cannot_serve_stops_startup() {
    let db = Db::create(
        "rw_check",
        "CREATE TABLE users (id int, name text); CREATE TABLE people (id int, full_name text);",
    )
    .await;
    let cases = [
        // contract without the new column
        ("contract", "users", "full_name"),
        // expand and migrate need both shapes
        ("expand", "users", "full_name"),
        ("migrate", "people", "name"),
    ];
    for (phase, table, missing) in cases {
        let rule = format!(
            "[[rule]]\nid = \"bad-{phase}\"\ntable = \"{table}\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n"
        );
        let proxy = db.proxy(&rule).start().await;
        let e = crate::support::within(20, "serve returns", proxy.stop())
            .await
            .expect_err("serve must refuse a rule the schema cannot serve");
        let text = e.to_string();
        assert!(
            text.contains(&format!("bad-{phase}")) && text.contains(missing),
            "{phase}: {text}"
        );
    }
    // A schema that can serve the phase starts.
    let rule = "[[rule]]\nid = \"ok\"\ntable = \"people\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"contract\"\n";
    let proxy = db.proxy(rule).start().await;
    let client = db.through(&proxy).await;
    assert!(simple_rows(&client, "SELECT name FROM people")
        .await
        .is_ok());
    assert!(proxy.stop().await.is_ok());
}

#[test]
fn invalid_rules_are_rejected_naming_the_rule() {
    let base = "table = \"users\"\nold = \"name\"\nnew = \"full_name\"\n";
    let cases = [
        ("phase = \"later\"\n", "later"),
        (
            "phase = \"expand\"\n[rule.to_new]\nfull_name = \"upper(name\"\n",
            "to_new",
        ),
        (
            "phase = \"expand\"\n[rule.to_new]\nfull_name = \"upper(email)\"\n",
            "email",
        ),
        (
            "phase = \"expand\"\n[rule.to_old]\nname = \"upper(name)\"\n",
            "name",
        ),
        (
            "phase = \"expand\"\n[rule.to_new]\nnickname = \"name\"\n",
            "nickname",
        ),
    ];
    for (extra, mentions) in cases {
        let text = format!("[[rule]]\nid = \"my-rule\"\n{base}{extra}");
        let config = pgshim::Config::from_toml(&text, Path::new("rules.toml"))
            .unwrap_or_else(|e| panic!("TOML accepted by config parsing: {e}\n{text}"));
        let e = pgshim::rewrite::RuleSet::from_configs(&config.rule)
            .expect_err(&text)
            .to_string();
        assert!(
            e.contains("my-rule") && e.contains(mentions),
            "{text}\n=> {e}"
        );
    }
    let overlap = format!(
        "[[rule]]\nid = \"first\"\n{base}phase = \"expand\"\n\
         [[rule]]\nid = \"second\"\ntable = \"public.users\"\nold = \"nick\"\nnew = \"full_name\"\nphase = \"expand\"\n"
    );
    let config = pgshim::Config::from_toml(&overlap, Path::new("rules.toml")).unwrap();
    let e = pgshim::rewrite::RuleSet::from_configs(&config.rule)
        .expect_err("overlapping rules")
        .to_string();
    assert!(
        e.contains("first") && e.contains("second") && e.contains("full_name"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_rules_stop_startup() {
    let text = "[[rule]]\nid = \"my-rule\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"sideways\"\n";
    let proxy = crate::support::proxy::proxy().rules(text).start().await;
    let e = crate::support::within(20, "serve returns", proxy.stop())
        .await
        .expect_err("serve must refuse an invalid rule");
    assert!(e.to_string().contains("my-rule"), "{e}");
}
