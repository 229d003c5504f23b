//! Consistency across a flip: a transaction open while the rules
//! change keeps the rules it started with until it ends, and a statement
//! prepared before a flip runs the new rewrite after it, with no error and no
//! reply the client did not ask for: interleaved with simple queries, with
//! the extended protocol, pipelined, and with Flush instead of Sync.
//!
//! The fixture (see [`crate::reload_triggers`]) reads `old|old` in expand and
//! `new|new` in migrate.
use crate::reload_triggers::{fixture, rule, view, EXPAND_VIEW, MIGRATE_VIEW};
use crate::support::pg::TRUST_USER;
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;
use crate::support::rules::{row_text, simple_rows, Db};
use crate::support::wire::{self, cstr, message, read_until, Message};
use crate::support::within;

/// A proxy serving `db`'s rule `<db>-ab` in `phase`, and the rule id.
async fn start(db: &Db, phase: &str) -> (Reloadable, String) {
    let id = format!("{}-ab", db.name);
    (Reloadable::start(proxy(), &rule(db, &id, phase)).await, id)
}

/// Puts rule `id` in `phase` with `POST /reload` (must succeed).
async fn flip(proxy: &Reloadable, db: &Db, id: &str, phase: &str) {
    proxy.replace_rules(&rule(db, id, phase));
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "flip to {phase}: {body}");
}

/// The rows of a prepared statement as `a|b` strings.
async fn run(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    within(
        20,
        "execute prepared statement",
        client.query(statement, params),
    )
    .await
    .expect("prepared statement after a flip")
    .iter()
    .map(row_text)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_keeps_its_rules_until_commit() {
    let db = fixture("flip_txn").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;

    client.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(view(&client).await, EXPAND_VIEW);
    flip(&proxy, &db, &id, "migrate").await;
    // Another session takes the new rules at once...
    assert_eq!(view(&proxy.connect(&db.name).await).await, MIGRATE_VIEW);
    // ...while the open transaction still reads as expand, in both protocols.
    assert_eq!(view(&client).await, EXPAND_VIEW);
    let row = client
        .query_one("SELECT a, b FROM t WHERE id = $1", &[&1i32])
        .await
        .expect("extended read in the transaction");
    assert_eq!(row_text(&row), EXPAND_VIEW);
    client.batch_execute("COMMIT").await.expect("COMMIT");
    // After COMMIT the session takes migrate.
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    // Across migrate and contract: row 2 has not migrated, so it reads its old
    // value in migrate and NULL in contract.
    db.direct()
        .await
        .batch_execute("INSERT INTO t VALUES (2, 'x', NULL)")
        .await
        .expect("seed an unmigrated row");
    let row2 = |client| async move {
        let (rows, _) = simple_rows(client, "SELECT a, b FROM t WHERE id = 2")
            .await
            .expect("read row 2");
        let extended = client
            .query_one("SELECT a, b FROM t WHERE id = $1", &[&2i32])
            .await
            .expect("extended read of row 2");
        assert_eq!(rows, [row_text(&extended)], "both protocols agree");
        rows[0].clone()
    };
    client.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(row2(&client).await, "x|x");
    flip(&proxy, &db, &id, "contract").await;
    assert_eq!(row2(&client).await, "x|x", "the transaction keeps migrate");
    client.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(row2(&client).await, "∅|∅", "contract after COMMIT");

    // A failed transaction keeps its rules until ROLLBACK too.
    client.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(row2(&client).await, "∅|∅");
    flip(&proxy, &db, &id, "migrate").await;
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    assert_eq!(row2(&client).await, "x|x", "migrate after ROLLBACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_before_a_flip_runs_the_new_rewrite_extended() {
    let db = fixture("flip_prep_ext").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;
    let read = client
        .prepare("SELECT a, b FROM t WHERE id = $1")
        .await
        .expect("prepare");
    let old_read = client
        .prepare("SELECT a FROM t WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(run(&client, &read, &[&1i32]).await, [EXPAND_VIEW]);

    for (phase, expected, old) in [
        ("migrate", MIGRATE_VIEW, "new"),
        ("expand", EXPAND_VIEW, "old"),
        ("migrate", MIGRATE_VIEW, "new"),
    ] {
        flip(&proxy, &db, &id, phase).await;
        assert_eq!(run(&client, &read, &[&1i32]).await, [expected], "{phase}");
        assert_eq!(run(&client, &old_read, &[&1i32]).await, [old], "{phase}");
        // Twice: the re-prepare happens once, the statement keeps working.
        assert_eq!(run(&client, &read, &[&1i32]).await, [expected], "{phase}");
    }
    // A statement prepared after the flip is unaffected.
    let fresh = client
        .prepare("SELECT b FROM t WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(run(&client, &fresh, &[&1i32]).await, ["new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_write_before_a_flip_to_contract_writes_only_the_new_shape() {
    let db = fixture("flip_prep_write").await;
    let (proxy, id) = start(&db, "migrate").await;
    let client = proxy.connect(&db.name).await;
    let write = client
        .prepare("UPDATE t SET a = $2 WHERE id = $1")
        .await
        .expect("prepare");
    let n = client.execute(&write, &[&1i32, &"m"]).await.expect("write");
    assert_eq!(n, 1);
    assert_eq!(
        db.physical("SELECT a, b FROM t WHERE id = 1").await,
        ["m|m"]
    );

    // Contract with the old column dropped: the statement prepared in migrate
    // (which wrote `a`) must run the new rewrite, which writes `b` only.
    db.direct()
        .await
        .batch_execute("ALTER TABLE t DROP COLUMN a")
        .await
        .expect("drop the old column");
    flip(&proxy, &db, &id, "contract").await;
    let n = client.execute(&write, &[&1i32, &"c"]).await.expect("write");
    assert_eq!(n, 1);
    assert_eq!(db.physical("SELECT b FROM t WHERE id = 1").await, ["c"]);
    assert_eq!(view(&client).await, "c|c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_before_a_flip_interleaved_with_simple_queries() {
    let db = fixture("flip_prep_simple").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;
    let read = client
        .prepare("SELECT a, b FROM t WHERE id = $1")
        .await
        .expect("prepare");
    assert_eq!(view(&client).await, EXPAND_VIEW);
    assert_eq!(run(&client, &read, &[&1i32]).await, [EXPAND_VIEW]);

    flip(&proxy, &db, &id, "migrate").await;
    // The simple query takes the new rules first; the statement follows.
    assert_eq!(view(&client).await, MIGRATE_VIEW);
    assert_eq!(run(&client, &read, &[&1i32]).await, [MIGRATE_VIEW]);
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    // A flip inside a transaction: the statement keeps the transaction's
    // rules, then takes the new ones after COMMIT.
    client.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(run(&client, &read, &[&1i32]).await, [MIGRATE_VIEW]);
    flip(&proxy, &db, &id, "expand").await;
    assert_eq!(view(&client).await, MIGRATE_VIEW);
    assert_eq!(run(&client, &read, &[&1i32]).await, [MIGRATE_VIEW]);
    client.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(run(&client, &read, &[&1i32]).await, [EXPAND_VIEW]);
    assert_eq!(view(&client).await, EXPAND_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_before_a_flip_pipelined() {
    let db = fixture("flip_prep_pipe").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;
    let both = client
        .prepare("SELECT a, b FROM t WHERE id = $1")
        .await
        .expect("prepare");
    let old = client
        .prepare("SELECT a FROM t WHERE id = $1")
        .await
        .expect("prepare");
    let new = client
        .prepare("SELECT b FROM t WHERE id = $1")
        .await
        .expect("prepare");

    for (phase, expected, value) in [
        ("migrate", MIGRATE_VIEW, "new"),
        ("expand", EXPAND_VIEW, "old"),
    ] {
        flip(&proxy, &db, &id, phase).await;
        // tokio-postgres sends these back to back on one connection before
        // reading any reply: a pipeline in which every statement is stale.
        let (r1, r2, r3, r4, r5, r6) = within(20, "pipelined statements after a flip", async {
            tokio::join!(
                client.query(&both, &[&1i32]),
                client.query(&old, &[&1i32]),
                client.query(&new, &[&1i32]),
                client.simple_query("SELECT a, b FROM t WHERE id = 1"),
                client.query(&both, &[&1i32]),
                client.prepare("SELECT a FROM t WHERE id = $1"),
            )
        })
        .await;
        let text = |r: Result<Vec<tokio_postgres::Row>, _>| -> Vec<String> {
            r.expect("pipelined query").iter().map(row_text).collect()
        };
        assert_eq!(text(r1), [expected], "{phase}");
        assert_eq!(text(r2), [value], "{phase}");
        assert_eq!(text(r3), [value], "{phase}");
        let simple: Vec<String> = r4
            .expect("pipelined simple query")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(format!("{}|{}", r.get(0).unwrap(), r.get(1).unwrap()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(simple, [expected], "{phase}");
        assert_eq!(text(r5), [expected], "{phase}");
        let fresh = r6.expect("pipelined prepare");
        assert_eq!(run(&client, &fresh, &[&1i32]).await, [value], "{phase}");
    }
}

/// A raw session on `db` through `proxy`, logged in.
async fn raw_session(proxy: &Reloadable, db: &Db) -> tokio::net::TcpStream {
    let startup = wire::startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]);
    wire::login(proxy.addr, &startup).await.0
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend(0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind of statement `name` to the unnamed portal, one text parameter.
fn bind(name: &str, param: &str) -> Vec<u8> {
    let mut body = cstr("");
    body.extend(cstr(name));
    body.extend(0i16.to_be_bytes());
    body.extend(1i16.to_be_bytes());
    body.extend((param.len() as i32).to_be_bytes());
    body.extend(param.as_bytes());
    body.extend(0i16.to_be_bytes());
    message(b'B', &body)
}

fn execute() -> Vec<u8> {
    let mut body = cstr("");
    body.extend(0i32.to_be_bytes());
    message(b'E', &body)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    message(b'D', &body)
}

const FLUSH: [u8; 5] = [b'H', 0, 0, 0, 4];
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// The text cells of DataRow `m`, joined with `|`.
fn data_row(m: &Message) -> String {
    let b = &m.body;
    let n = i16::from_be_bytes([b[0], b[1]]) as usize;
    let mut at = 2;
    let mut cells = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        at += 4;
        let len = len as usize;
        cells.push(String::from_utf8_lossy(&b[at..at + len]).into_owned());
        at += len;
    }
    cells.join("|")
}

fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_before_a_flip_with_flush_and_no_sync() {
    let db = fixture("flip_prep_flush").await;
    let (proxy, id) = start(&db, "expand").await;
    let mut s = raw_session(&proxy, &db).await;

    let sql = "SELECT a, b FROM t WHERE id = $1::int";
    let mut out = parse("s1", sql);
    out.extend(SYNC);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "1Z", "{seen:?}");

    flip(&proxy, &db, &id, "migrate").await;
    // A simple query makes the session idle-take the new rules.
    wire::send(&mut s, &wire::query("SELECT 1")).await;
    read_until(&mut s, |m| m.tag == b'Z').await;

    // Describe, Bind, Execute, then Flush: the replies must come without a
    // Sync, and none of pgshim's own Close/Parse replies may show.
    let mut out = describe_statement("s1");
    out.extend(bind("s1", "1"));
    out.extend(execute());
    out.extend(FLUSH);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'C' || m.tag == b'E').await;
    assert_eq!(tags(&seen), "tT2DC", "{seen:?}");
    assert_eq!(data_row(&seen[3]), MIGRATE_VIEW);

    // Flip back; this time the stale statement is first used by a Bind
    // after a Flush-only exchange in the same pipeline.
    wire::send(&mut s, &SYNC).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "Z", "{seen:?}");
    flip(&proxy, &db, &id, "expand").await;
    let mut out = parse("s2", "SELECT 1");
    out.extend(FLUSH);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'1' || m.tag == b'E').await;
    assert_eq!(tags(&seen), "1", "{seen:?}");
    let mut out = bind("s1", "1");
    out.extend(execute());
    out.extend(FLUSH);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'C' || m.tag == b'E').await;
    assert_eq!(tags(&seen), "2DC", "{seen:?}");
    assert_eq!(data_row(&seen[1]), EXPAND_VIEW);
    wire::send(&mut s, &SYNC).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "Z", "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocated_statements_are_not_prepared_again() {
    let db = fixture("flip_dealloc").await;
    let (proxy, id) = start(&db, "expand").await;
    let mut s = raw_session(&proxy, &db).await;

    let mut out = parse("gone", "SELECT a FROM t WHERE id = $1::int");
    out.extend(parse("closed", "SELECT a FROM t WHERE id = $1::int"));
    out.extend(SYNC);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "11Z", "{seen:?}");

    wire::send(&mut s, &wire::query("DEALLOCATE gone")).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "CZ", "{seen:?}");
    let mut close = vec![b'S'];
    close.extend(cstr("closed"));
    let mut out = message(b'C', &close);
    out.extend(SYNC);
    wire::send(&mut s, &out).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "3Z", "{seen:?}");

    flip(&proxy, &db, &id, "migrate").await;
    // pgshim must not bring them back: Postgres reports them missing.
    for name in ["gone", "closed"] {
        let mut out = bind(name, "1");
        out.extend(execute());
        out.extend(SYNC);
        wire::send(&mut s, &out).await;
        let seen = read_until(&mut s, |m| m.tag == b'Z').await;
        assert_eq!(tags(&seen), "EZ", "{name}: {seen:?}");
        let fields = wire::fields(&seen[0].body);
        assert_eq!(fields[&b'C'], "26000", "{name}: {fields:?}");
    }
    // The session is still in step.
    wire::send(&mut s, &wire::query("SELECT a, b FROM t WHERE id = 1")).await;
    let seen = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&seen), "TDCZ", "{seen:?}");
    assert_eq!(data_row(&seen[1]), MIGRATE_VIEW);
}

/// SQL-level `PREPARE` shares its namespace with protocol-level statements
/// (`DEALLOCATE` clears both), so it must follow a flip as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_before_a_flip_executes_the_new_rewrite() {
    let db = fixture("flip_sql_prepare").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;
    client
        .batch_execute("PREPARE p AS SELECT a, b FROM t WHERE id = 1")
        .await
        .expect("PREPARE");
    let execute = || async {
        crate::support::rules::simple_rows(&client, "EXECUTE p")
            .await
            .expect("EXECUTE")
            .0
    };
    assert_eq!(execute().await, [EXPAND_VIEW]);
    flip(&proxy, &db, &id, "migrate").await;
    assert_eq!(execute().await, [MIGRATE_VIEW]);
}

/// pgshim's own statements (the re-PREPARE at a flip) must not collide with a
/// client's statement of a plain name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_statements_keep_names_pgshim_might_use() {
    let db = fixture("flip_sql_prepare_names").await;
    let (proxy, id) = start(&db, "expand").await;
    let client = proxy.connect(&db.name).await;
    for name in ["pgshim_run", "pgshim_search_path", "pgshim"] {
        client
            .batch_execute(&format!(
                "PREPARE {name} AS SELECT a, b FROM t WHERE id = 1"
            ))
            .await
            .expect("PREPARE");
    }
    flip(&proxy, &db, &id, "migrate").await;
    for name in ["pgshim_run", "pgshim_search_path", "pgshim"] {
        let rows = crate::support::rules::simple_rows(&client, &format!("EXECUTE {name}"))
            .await
            .expect("EXECUTE")
            .0;
        assert_eq!(rows, [MIGRATE_VIEW], "{name}");
    }
}
