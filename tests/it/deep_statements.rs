//! Statements nested deeper than any syntax tree pgshim builds: refused with
//! `0A000 pgshim: statement too deep to rewrite` when they mention a mapped
//! table, forwarded untouched (Postgres answers) when they do not, in both
//! protocols, with and without rules, and never a crash: every other session
//! keeps working.
use crate::support::proxy::{proxy, Proxy};
use crate::support::rules::{db_error, Db};
use crate::support::within;

const SETUP: &str = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);
INSERT INTO users VALUES (1, 'Ann', 'Ann');";

const RULE: &str = r#"
[[rule]]
id = "users-full-name"
table = "users"
old = "name"
new = "full_name"
phase = "migrate"
"#;

/// `SELECT <terms joined by op>` with a `from` clause, `n` terms.
fn chain(op: &str, term: &str, n: usize, from: &str) -> String {
    let mut s = String::with_capacity(n * (op.len() + term.len()) + 64);
    s.push_str("SELECT ");
    for i in 0..n {
        if i > 0 {
            s.push_str(op);
        }
        s.push_str(term);
    }
    s.push_str(from);
    s
}

/// The deep forms, each with `n` levels, reading from `from`.
fn deep_forms(n: usize, from: &str) -> Vec<(&'static str, String)> {
    vec![
        ("plus", chain("+", "1", n, from)),
        ("and", chain(" AND ", "true", n, from)),
        ("concat", chain("||", "'a'", n, from)),
        (
            "parens",
            format!("SELECT {}1{}{from}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "case",
            format!(
                "SELECT {}1{}{from}",
                "CASE WHEN true THEN ".repeat(n),
                " END".repeat(n)
            ),
        ),
        (
            "subqueries",
            format!("SELECT {}1{}{from}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
    ]
}

fn sizes() -> [usize; 3] {
    [35_000, 100_000, 1_000_000]
}

/// Runs `sql` in both protocols and returns each protocol's SQLSTATE (or
/// `ok`) and message.
async fn both_protocols(client: &tokio_postgres::Client, sql: &str) -> [(String, String); 2] {
    let simple = within(120, "simple query", client.simple_query(sql)).await;
    let extended = within(120, "extended query", client.query(sql, &[])).await;
    let outcome = |r: Result<(), tokio_postgres::Error>| match r {
        Ok(()) => ("ok".to_owned(), String::new()),
        Err(e) => db_error(&e),
    };
    [outcome(simple.map(|_| ())), outcome(extended.map(|_| ()))]
}

async fn still_serves(proxy: &Proxy, db: &Db) {
    proxy.assert_serves_others().await;
    let client = db.through(proxy).await;
    let row = client
        .query_one("SELECT full_name FROM users WHERE id = 1", &[])
        .await
        .expect("a rewritten query still works");
    assert_eq!(row.get::<_, String>(0), "Ann");
}

#[tokio::test]
async fn deep_statements_on_a_mapped_table_are_refused_as_too_deep() {
    let db = Db::create("deep", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    for n in sizes() {
        let mut forms = deep_forms(n, " FROM users");
        // A mapped table named only in a comment still sends the text to the rewriter.
        forms.push(("comment", chain("+", "1", n, " /* users */")));
        for (form, sql) in forms {
            for (code, message) in both_protocols(&client, &sql).await {
                assert_eq!(code, "0A000", "{form} x{n}: {message}");
                assert!(
                    message.starts_with("pgshim: statement too deep to rewrite"),
                    "{form} x{n}: {message}"
                );
            }
        }
        // The session that sent them goes on.
        let row = client
            .query_one("SELECT name FROM users WHERE id = 1", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "Ann");
    }
    still_serves(&proxy, &db).await;
}

#[tokio::test]
async fn long_in_lists_on_a_mapped_table_are_rewritten() {
    let db = Db::create("deep_in", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let list: Vec<String> = (1..=35_000).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT full_name FROM users WHERE id IN ({})",
        list.join(",")
    );
    let rows = within(60, "long IN list", client.simple_query(&sql))
        .await
        .expect("a long IN list is rewritten");
    assert_eq!(rows.len(), 3, "description, row and command tag: {rows:?}");
    let rows = within(60, "long IN list", client.query(&sql, &[]))
        .await
        .expect("a long IN list is rewritten");
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn deep_statements_without_mapped_tables_reach_postgres() {
    let db = Db::create("deep_pass", SETUP).await;
    let with_rules = db.proxy(RULE).start().await;
    let without_rules = proxy().start().await;
    for proxy in [&with_rules, &without_rules] {
        let client = db.through(proxy).await;
        // A named statement makes the session look at simple queries for
        // SQL PREPAREs; the word must not make it parse them.
        client.prepare("SELECT 1").await.unwrap();
        for n in sizes() {
            let mut forms = deep_forms(n, "");
            // Postgres's own parse of a million ANDs runs for minutes, past
            // statement_timeout: direct or through pgshim alike.
            forms.retain(|(form, _)| n < 1_000_000 || *form != "and");
            forms.push(("prepare-comment", chain("+", "1", n, " -- prepare")));
            for (form, sql) in forms {
                for (code, message) in both_protocols(&client, &sql).await {
                    assert!(
                        !message.starts_with("pgshim:"),
                        "{form} x{n}: Postgres answers, not pgshim: {code} {message}"
                    );
                }
            }
        }
        client.query_one("SELECT 1", &[]).await.unwrap();
    }
    still_serves(&with_rules, &db).await;
    without_rules.assert_serves_others().await;
}

#[tokio::test]
async fn a_deep_sql_prepare_is_remembered_without_parsing() {
    let db = Db::create("deep_prep", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let deep = chain("+", "1", 100_000, "");
    let sql = format!("PREPARE q AS {deep}");
    let _ = within(60, "deep PREPARE", client.simple_query(&sql)).await;
    let rows = client
        .simple_query("PREPARE ok AS SELECT full_name FROM users WHERE id = $1; EXECUTE ok(1)")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    still_serves(&proxy, &db).await;
}
