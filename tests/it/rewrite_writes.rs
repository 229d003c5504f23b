//! Dual writes through pgshim against real Postgres: every value evaluated
//! exactly once, parameters and labels as the client expects, COPY, and two
//! pgshim instances in adjacent phases sharing one database.
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::Client;

use crate::support::rules::{db_error, extended_rows, simple_rows, Db};
use crate::support::within;

const USERS: &str = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, email text);
                     INSERT INTO users (id, name, email) VALUES (1, 'Ann Lee', 'a@x'), (2, 'Bob Ray', 'b@x');";

fn rename(phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n"
    )
}

/// Runs `steps` in order, the even ones in the simple protocol and the odd
/// ones in the extended protocol; any error fails the test, naming `context`.
async fn run_alternating(client: &Client, steps: &[&str], context: &str) {
    for (i, sql) in steps.iter().enumerate() {
        let run = if i % 2 == 0 {
            simple_rows(client, sql).await.map(|_| ())
        } else {
            extended_rows(client, sql, &[]).await.map(|_| ())
        };
        run.unwrap_or_else(|e| panic!("{context}: {sql}: {e:?}"));
    }
}

/// Rows whose two shapes differ physically.
async fn mismatched(db: &Db) -> Vec<String> {
    db.physical(
        "SELECT id, name, full_name FROM users WHERE name IS DISTINCT FROM full_name ORDER BY id",
    )
    .await
}

#[tokio::test]
async fn volatile_values_are_evaluated_once_per_row() {
    for phase in ["expand", "migrate"] {
        let db = Db::create(
            "rw_once",
            &format!("{USERS} UPDATE users SET full_name = name;"),
        )
        .await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        let statements = [
            "INSERT INTO users (id, name) VALUES (3, gen_random_uuid()::text)",
            "INSERT INTO users (id, full_name) VALUES (4, gen_random_uuid()::text), (5, random()::text)",
            "INSERT INTO users (id, name) SELECT 6, md5(random()::text)",
            "INSERT INTO users (id, name) VALUES (7, random()::text) ON CONFLICT (id) DO UPDATE SET name = random()::text",
            "INSERT INTO users (id, name) VALUES (7, 'x') ON CONFLICT (id) DO UPDATE SET name = random()::text",
            "UPDATE users SET name = random()::text",
            "UPDATE users SET full_name = gen_random_uuid()::text WHERE id <= 2",
            "WITH w AS (UPDATE users SET name = random()::text WHERE id = 1 RETURNING id) SELECT id FROM w",
        ];
        for sql in statements {
            for extended in [false, true] {
                let ran = if extended {
                    extended_rows(&client, sql, &[]).await.map(|_| ())
                } else {
                    simple_rows(&client, sql).await.map(|_| ())
                };
                ran.unwrap_or_else(|e| panic!("{phase} {sql}: {e:?}"));
                if sql.starts_with("INSERT") && !sql.contains("ON CONFLICT") {
                    // Run the plain inserts once; the second protocol's turn
                    // would hit the primary key.
                    break;
                }
            }
            assert_eq!(
                mismatched(&db).await,
                Vec::<String>::new(),
                "{phase}: {sql}"
            );
        }
        let nulls = db
            .physical("SELECT id FROM users WHERE name IS NULL OR full_name IS NULL")
            .await;
        assert!(nulls.is_empty(), "{phase}: rows left NULL: {nulls:?}");
        let distinct = db
            .physical("SELECT count(DISTINCT name) = count(*) FROM users")
            .await;
        assert_eq!(
            distinct,
            ["t"],
            "{phase}: volatile values not per row: {:?}",
            db.physical("SELECT * FROM users ORDER BY id").await
        );
    }
}

#[tokio::test]
async fn parameters_keep_their_count_and_types() {
    let db = Db::create("rw_params", USERS).await;
    let proxy = db.proxy(&rename("migrate")).start().await;
    let client = db.through(&proxy).await;
    let direct = db.direct().await;
    let cases: &[(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)])] = &[
        (
            "INSERT INTO users (id, name, email) VALUES ($1, $2, $3) RETURNING id, full_name",
            &[&3i32, &"Cy Doe", &"c@x"],
        ),
        (
            "INSERT INTO users (id, full_name) VALUES ($1, $2), ($3, $2)",
            &[&4i32, &"Di Fox", &5i32],
        ),
        (
            "UPDATE users SET full_name = $1 WHERE id = $2 AND name IS NOT NULL",
            &[&"Ann Lea", &1i32],
        ),
        (
            "SELECT id, name, full_name FROM users WHERE full_name = $1 OR name = $2 ORDER BY id",
            &[&"Ann Lea", &"Di Fox"],
        ),
    ];
    let mut outputs = Vec::new();
    for (sql, params) in cases {
        let got = extended_rows(&client, sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let st = direct.prepare(sql).await.expect("direct prepare");
        assert_eq!(got.params, st.params().len(), "{sql}");
        let direct_types: Vec<_> = st.params().to_vec();
        let proxied_types = client.prepare(sql).await.unwrap().params().to_vec();
        assert_eq!(proxied_types, direct_types, "{sql}: parameter types");
        assert_eq!(got.labels, crate::support::rules::labels(&st), "{sql}");
        outputs.push(got.rows);
    }
    assert_eq!(outputs[0], ["3|Cy Doe"]);
    assert_eq!(
        outputs[3],
        ["1|Ann Lea|Ann Lea", "4|Di Fox|Di Fox", "5|Di Fox|Di Fox"]
    );
    // Row 2 was written before the rule and never touched.
    assert_eq!(mismatched(&db).await, ["2|Bob Ray|∅"]);
    assert_eq!(
        db.physical("SELECT id, full_name FROM users ORDER BY id")
            .await,
        ["1|Ann Lea", "2|∅", "3|Cy Doe", "4|Di Fox", "5|Di Fox"]
    );
}

#[tokio::test]
async fn output_labels_are_what_the_client_asked_for() {
    let db = Db::create("rw_labels", USERS).await;
    // Contract with the old column dropped: every old-shape reference is
    // replaced, so every label must come from an alias pgshim adds.
    db.direct()
        .await
        .batch_execute("UPDATE users SET full_name = name; ALTER TABLE users DROP COLUMN name")
        .await
        .unwrap();
    let proxy = db.proxy(&rename("contract")).start().await;
    let client = db.through(&proxy).await;
    let cases: &[(&str, &[&str])] = &[
        ("SELECT name FROM users", &["name"]),
        (
            "SELECT u.name, name AS n2, (name), name::varchar, CAST(u.name AS text) FROM users u",
            &["name", "n2", "name", "name", "name"],
        ),
        (
            "SELECT upper(name), name || '' FROM users",
            &["upper", "?column?"],
        ),
        ("SELECT * FROM users", &["id", "full_name", "email"]),
        ("SELECT x.name FROM (SELECT name FROM users) x", &["name"]),
        (
            "INSERT INTO users (id, name) VALUES (9, 'Z') RETURNING name, users.name",
            &["name", "name"],
        ),
    ];
    for (sql, want) in cases {
        let st = client
            .prepare(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(crate::support::rules::labels(&st), *want, "{sql}");
        let msgs = client.simple_query(sql).await.unwrap();
        let names: Vec<String> = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                    Some(cols.iter().map(|c| c.name().to_owned()).collect())
                }
                _ => None,
            })
            .expect("RowDescription");
        assert_eq!(names, *want, "{sql} (simple protocol)");
        client
            .batch_execute("DELETE FROM users WHERE id = 9")
            .await
            .unwrap();
    }
}

async fn copy_out(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    Ok(chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect())
}

async fn copy_in(client: &Client, sql: &str, data: &str) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in(sql).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(data.to_owned())).await?;
    sink.as_mut().finish().await
}

#[tokio::test]
async fn copy_to_reads_phase_values_and_copy_from_never_bypasses_dual_write() {
    let setup = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, email text);
                 INSERT INTO users VALUES (1, 'Ann Lee', NULL, 'a@x'), (2, 'stale', 'Bob Ray', 'b@x');";
    // (phase, COPY TO of the old shape, COPY TO of the new shape)
    let reads = [
        ("expand", "1\tAnn Lee\n2\tstale\n"),
        ("migrate", "1\tAnn Lee\n2\tBob Ray\n"),
        ("contract", "1\t\\N\n2\tBob Ray\n"),
    ];
    for (phase, want) in reads {
        let db = Db::create("rw_copy", setup).await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        for sql in [
            "COPY users (id, name) TO STDOUT",
            "COPY users (id, full_name) TO STDOUT",
            "COPY (SELECT id, name FROM users ORDER BY id) TO STDOUT",
            "COPY (SELECT u.id, u.full_name FROM users u ORDER BY 1) TO STDOUT",
        ] {
            let got = within(20, sql, copy_out(&client, sql))
                .await
                .unwrap_or_else(|e| panic!("{phase} {sql}: {e:?}"));
            let mut lines: Vec<&str> = got.lines().collect();
            lines.sort_unstable();
            let mut want_lines: Vec<&str> = want.lines().collect();
            want_lines.sort_unstable();
            assert_eq!(lines, want_lines, "{phase} {sql}");
        }
        // COPY FROM of a single shape needs mirrors in expand and migrate:
        // refused. Writing both shapes is passed through. In contract a
        // rename's column list is renamed.
        let old_only = copy_in(&client, "COPY users (id, name) FROM STDIN", "3\tCy Doe\n").await;
        let both = copy_in(
            &client,
            "COPY users (id, name, full_name) FROM STDIN",
            "4\tDi Fox\tDi Fox\n",
        )
        .await;
        match phase {
            "contract" => {
                assert_eq!(old_only.expect("contract COPY FROM old shape"), 1);
                assert_eq!(
                    db.physical("SELECT name, full_name FROM users WHERE id = 3")
                        .await,
                    ["∅|Cy Doe"]
                );
            }
            _ => {
                let e = old_only.expect_err("COPY FROM old shape must be refused");
                let (code, message) = db_error(&e);
                assert_eq!(code, "0A000", "{message}");
                assert!(
                    message.starts_with("pgshim: cannot rewrite")
                        && message.contains("users-full-name"),
                    "{message}"
                );
                assert!(db
                    .physical("SELECT id FROM users WHERE id = 3")
                    .await
                    .is_empty());
                assert_eq!(both.as_ref().map_err(|e| format!("{e:?}")), Ok(&1));
                assert_eq!(
                    db.physical("SELECT name, full_name FROM users WHERE id = 4")
                        .await,
                    ["Di Fox|Di Fox"]
                );
            }
        }
        // The session is usable afterwards.
        assert_eq!(
            simple_rows(&client, "SELECT 1").await.unwrap().0,
            ["1"],
            "{phase}"
        );
    }
}

/// Reads `(id, value)` through a client of each shape.
async fn reads(client: &Client) -> (Vec<String>, Vec<String>) {
    let old = simple_rows(client, "SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap()
        .0;
    let new = simple_rows(client, "SELECT id, full_name FROM users ORDER BY id")
        .await
        .unwrap()
        .0;
    (old, new)
}

async fn two_instances(first: &str, second: &str) {
    let db = Db::create("rw_two", USERS).await;
    // Row 2 has migrated (a backfill ran); row 1 has not.
    db.direct()
        .await
        .batch_execute("UPDATE users SET full_name = name WHERE id = 2")
        .await
        .unwrap();
    let a_proxy = db.proxy(&rename(first)).start().await;
    let b_proxy = db.proxy(&rename(second)).start().await;
    let (a, b) = (db.through(&a_proxy).await, db.through(&b_proxy).await);
    // Interleaved writes of both shapes from both instances; after each one,
    // both instances and both shapes read the value just written.
    let steps: &[(bool, &str, i32, &str)] = &[
        (
            true,
            "INSERT INTO users (id, name) VALUES (3, 'a-old')",
            3,
            "a-old",
        ),
        (
            false,
            "UPDATE users SET full_name = 'b-new' WHERE id = 3",
            3,
            "b-new",
        ),
        (
            true,
            "UPDATE users SET name = 'a-old2' WHERE id = 3",
            3,
            "a-old2",
        ),
        (
            false,
            "INSERT INTO users (id, name) VALUES (4, 'b-old')",
            4,
            "b-old",
        ),
        (
            true,
            "UPDATE users SET full_name = 'a-new' WHERE id = 4",
            4,
            "a-new",
        ),
        (
            false,
            "UPDATE users SET name = name || '+' WHERE id = 4",
            4,
            "a-new+",
        ),
        (
            true,
            "UPDATE users SET full_name = full_name || '!' WHERE id = 1",
            1,
            "Ann Lee!",
        ),
        (
            false,
            "UPDATE users SET name = name || '?' WHERE id = 1",
            1,
            "Ann Lee!?",
        ),
        (
            true,
            "UPDATE users SET name = 'x' || name WHERE id = 2",
            2,
            "xBob Ray",
        ),
        (
            false,
            "UPDATE users SET full_name = full_name || 'y' WHERE id = 2",
            2,
            "xBob Rayy",
        ),
    ];
    for (on_a, sql, id, value) in steps {
        let writer = if *on_a { &a } else { &b };
        simple_rows(writer, sql)
            .await
            .unwrap_or_else(|e| panic!("{first}+{second}: {sql}: {e:?}"));
        for (who, client) in [(first, &a), (second, &b)] {
            let (old, new) = reads(client).await;
            let want = format!("{id}|{value}");
            assert!(
                old.contains(&want) && new.contains(&want),
                "{first}+{second} after {sql:?}: {who} reads {old:?} / {new:?}, want {want}"
            );
        }
    }
    // Concurrent read-modify-write from both instances on one row: no update
    // is lost.
    let mut tasks = Vec::new();
    for (client, sql) in [
        (a, "UPDATE users SET name = name || 'x' WHERE id = 2"),
        (
            b,
            "UPDATE users SET full_name = full_name || 'y' WHERE id = 2",
        ),
    ] {
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                client.simple_query(sql).await.expect(sql);
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("writer task"));
    }
    for client in &clients {
        let (old, new) = reads(client).await;
        for rows in [old, new] {
            let value = rows.iter().find(|r| r.starts_with("2|")).expect("row 2");
            let suffix = &value["2|xBob Rayy".len()..];
            assert_eq!(suffix.matches('x').count(), 10, "{first}+{second}: {value}");
            assert_eq!(suffix.matches('y').count(), 10, "{first}+{second}: {value}");
        }
    }
    let physical = db
        .physical("SELECT name IS NOT DISTINCT FROM full_name FROM users ORDER BY id")
        .await;
    if second != "contract" {
        // Expand and migrate both write both shapes.
        assert!(physical.iter().all(|p| p == "t"), "{physical:?}");
    }
}

#[tokio::test]
async fn two_instances_in_expand_and_migrate() {
    two_instances("expand", "migrate").await;
}

#[tokio::test]
async fn two_instances_in_migrate_and_contract() {
    two_instances("migrate", "contract").await;
}

#[tokio::test]
async fn several_rules_on_one_table_and_one_statement() {
    let setup = "CREATE TABLE accounts (id int PRIMARY KEY, name text, full_name text, status text, status_code int);";
    let rules = |phase: &str| {
        format!(
            "{}\n[[rule]]\nid = \"account-status\"\ntable = \"accounts\"\nold = \"status\"\nnew = \"status_code\"\nphase = \"{phase}\"\n\
             [rule.to_new]\nstatus_code = \"CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END\"\n\
             [rule.to_old]\nstatus = \"CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END\"\n",
            rename(phase).replace("\"users\"", "\"accounts\"").replace("users-full-name", "account-name")
        )
    };
    for phase in ["expand", "migrate", "contract"] {
        let db = Db::create("rw_multi", setup).await;
        let proxy = db.proxy(&rules(phase)).start().await;
        let client = db.through(&proxy).await;
        let steps = [
            "INSERT INTO accounts (id, name, status) VALUES (1, 'Ann', 'paid')",
            "UPDATE accounts SET name = 'Bo', status = 'failed' WHERE id = 1",
            "INSERT INTO accounts (id, full_name, status_code) VALUES (2, 'Cy', 2)",
            "UPDATE accounts SET name = 'Di', status_code = 1 WHERE id = 2",
            "INSERT INTO accounts (id, status, full_name) VALUES (3, 'pending', 'Ed')",
        ];
        run_alternating(&client, &steps, phase).await;
        let old = simple_rows(&client, "SELECT id, name, status FROM accounts ORDER BY id")
            .await
            .unwrap()
            .0;
        assert_eq!(
            old,
            ["1|Bo|failed", "2|Di|pending", "3|Ed|pending"],
            "{phase}"
        );
        let new = extended_rows(
            &client,
            "SELECT a.id, a.full_name, a.status_code FROM accounts a ORDER BY a.id",
            &[],
        )
        .await
        .unwrap()
        .rows;
        assert_eq!(new, ["1|Bo|3", "2|Di|1", "3|Ed|1"], "{phase}");
        let star = simple_rows(
            &client,
            "SELECT * FROM accounts WHERE name = 'Di' AND status_code = 1",
        )
        .await
        .unwrap()
        .0;
        assert_eq!(star, ["2|Di|Di|pending|1"], "{phase}");
        let physical = db.physical("SELECT * FROM accounts ORDER BY id").await;
        // Contract mirrors into the old columns while they exist, as migrate does.
        let want = ["1|Bo|Bo|failed|3", "2|Di|Di|pending|1", "3|Ed|Ed|pending|1"];
        assert_eq!(physical, want, "{phase}");
    }
}

#[tokio::test]
async fn default_feeding_a_mirror_is_the_written_columns_default() {
    // `full_name` has a default `name` lacks: a mirror written as DEFAULT
    // would take it and the shapes would disagree.
    let setup =
        "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text DEFAULT 'unnamed');
                 INSERT INTO users VALUES (1, 'Ann', 'Ann');";
    for phase in ["expand", "migrate"] {
        let db = Db::create("rw_default", setup).await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        for sql in [
            "UPDATE users SET name = DEFAULT WHERE id = 1",
            "INSERT INTO users (id, name) VALUES (2, DEFAULT)",
        ] {
            simple_rows(&client, sql)
                .await
                .unwrap_or_else(|e| panic!("{phase}: {sql}: {e:?}"));
        }
        assert_eq!(
            db.physical("SELECT * FROM users ORDER BY id").await,
            ["1|∅|∅", "2|∅|∅"],
            "{phase}"
        );
    }
}

/// `UPDATE … SET col = DEFAULT` where the column has a volatile default: each
/// row gets one evaluation of it, in both shapes (Django writes `DEFAULT` for a
/// `db_default` field saved again before it was read back).
#[tokio::test]
async fn update_to_a_volatile_default_sets_both_shapes_once_per_row() {
    let setup = "CREATE SEQUENCE tag_seq;
                 CREATE TABLE users (id int PRIMARY KEY,
                   name text DEFAULT 'n' || nextval('tag_seq'),
                   full_name text DEFAULT 'f' || nextval('tag_seq'));
                 INSERT INTO users VALUES (1, 'Ann', 'Ann'), (2, 'Bo', 'Bo'), (3, 'Cy', 'Cy');";
    for phase in ["expand", "migrate", "contract"] {
        let db = Db::create("rw_update_default", setup).await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        for sql in [
            "UPDATE users SET name = DEFAULT WHERE id <= 2",
            "UPDATE users SET full_name = DEFAULT WHERE id = 3",
            "INSERT INTO users (id, name) VALUES (4, 'Di')",
            "INSERT INTO users (id, name) VALUES (4, 'Ed') ON CONFLICT (id) DO UPDATE SET name = DEFAULT",
        ] {
            simple_rows(&client, sql)
                .await
                .unwrap_or_else(|e| panic!("{phase}: {sql}: {e:?}"));
        }
        let rows = db
            .physical("SELECT id, name = full_name, left(name, 1) FROM users ORDER BY id")
            .await;
        // Rows 1 and 2 take name's default (two evaluations, one per row),
        // row 3 full_name's; each mirrored, not evaluated again.
        assert_eq!(rows, ["1|t|n", "2|t|n", "3|t|f", "4|t|n"], "{phase}");
        let distinct = db
            .physical("SELECT count(DISTINCT name) FROM users WHERE id <= 2")
            .await;
        assert_eq!(distinct, ["2"], "{phase}");
    }
    // After the drop, DEFAULT written for the old column is the new column's own.
    let db = Db::create("rw_update_default_dropped", setup).await;
    db.direct()
        .await
        .batch_execute("ALTER TABLE users DROP COLUMN name")
        .await
        .unwrap();
    let proxy = db.proxy(&rename("contract")).start().await;
    let client = db.through(&proxy).await;
    simple_rows(&client, "UPDATE users SET name = DEFAULT WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        db.physical("SELECT left(full_name, 1) FROM users WHERE id = 1")
            .await,
        ["f"]
    );
}

#[tokio::test]
async fn default_for_a_type_changed_column_mirrors_a_typed_null() {
    let setup =
        "CREATE TABLE orders (id int PRIMARY KEY, status text, status_code int, email text);";
    let rule = |phase: &str| {
        format!(
            "[[rule]]\nid = \"order-status\"\ntable = \"orders\"\nold = \"status\"\nnew = \"status_code\"\nphase = \"{phase}\"\n\
             [rule.to_new]\nstatus_code = \"CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END\"\n\
             [rule.to_old]\nstatus = \"CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END\"\n"
        )
    };
    for phase in ["expand", "migrate"] {
        let db = Db::create("rw_default_typed", setup).await;
        let proxy = db.proxy(&rule(phase)).start().await;
        let client = db.through(&proxy).await;
        let steps = [
            "INSERT INTO orders (id, status_code, email) VALUES (2, DEFAULT, 'b@x')",
            "INSERT INTO orders (id, status, email) VALUES (3, DEFAULT, 'c@x')",
            "UPDATE orders SET status_code = DEFAULT WHERE id = 2",
            "UPDATE orders SET status = DEFAULT WHERE id = 3",
        ];
        run_alternating(&client, &steps, phase).await;
        let physical = db.physical("SELECT * FROM orders ORDER BY id").await;
        assert_eq!(physical, ["2|∅|∅|b@x", "3|∅|∅|c@x"], "{phase}");
    }
}

#[tokio::test]
async fn contract_writes_keep_both_shapes_while_the_old_columns_exist() {
    let db = Db::create(
        "rw_contract_both",
        "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);
         INSERT INTO users VALUES (1, 'Ann', 'Ann'), (2, 'Bo', 'Bo');",
    )
    .await;
    let contract = db.proxy(&rename("contract")).start().await;
    let client = db.through(&contract).await;
    // Untyped parameters for both shapes: each still types from its column.
    let n = client
        .execute(
            "UPDATE users SET name = $1, full_name = $2 WHERE id = $3",
            &[&"Cy", &"Cy", &1i32],
        )
        .await
        .expect("an UPDATE setting both shapes in contract");
    assert_eq!(n, 1);
    client
        .execute("UPDATE users SET full_name = NULL WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO users (id, full_name) VALUES (3, 'Di')")
        .await
        .unwrap();
    assert_eq!(mismatched(&db).await, Vec::<String>::new());
    // Stepping back to migrate reads exactly what contract wrote.
    let migrate = db.proxy(&rename("migrate")).start().await;
    let back = db.through(&migrate).await;
    let rows = simple_rows(&back, "SELECT id, name, full_name FROM users ORDER BY id")
        .await
        .unwrap()
        .0;
    assert_eq!(rows, ["1|Cy|Cy", "2|∅|∅", "3|Di|Di"]);
}

#[tokio::test]
async fn on_conflict_on_the_old_columns_constraint_in_contract() {
    let db = Db::create(
        "rw_on_constraint",
        "CREATE TABLE users (id int PRIMARY KEY, name text CONSTRAINT users_name_key UNIQUE,
           full_name text CONSTRAINT users_full_name_key UNIQUE, hits int DEFAULT 0);
         INSERT INTO users VALUES (1, 'Ann', 'Ann', 0);",
    )
    .await;
    let proxy = db.proxy(&rename("contract")).start().await;
    let client = db.through(&proxy).await;
    let steps = [
        "INSERT INTO users (id, name) VALUES (2, 'Ann') ON CONFLICT ON CONSTRAINT users_name_key DO UPDATE SET hits = users.hits + 1",
        "INSERT INTO users (id, full_name) VALUES (3, 'Ann') ON CONFLICT ON CONSTRAINT users_name_key DO UPDATE SET hits = users.hits + 1",
        "INSERT INTO users (id, name) VALUES (4, 'Ann') ON CONFLICT (name) DO UPDATE SET hits = users.hits + 1",
    ];
    run_alternating(&client, &steps, "contract").await;
    assert_eq!(
        db.physical("SELECT id, name, full_name, hits FROM users")
            .await,
        ["1|Ann|Ann|3"]
    );
}

#[tokio::test]
async fn function_bodies_write_both_shapes_or_are_refused() {
    let db = Db::create(
        "rw_function",
        "CREATE TABLE users (id serial PRIMARY KEY, email text, name text, full_name text);",
    )
    .await;
    let proxy = db.proxy(&rename("expand")).start().await;
    let client = db.through(&proxy).await;
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.f() RETURNS void AS $f$ BEGIN INSERT INTO users (email, full_name) VALUES ('f@x','Fn Ln'); END $f$ LANGUAGE plpgsql; SELECT pg_temp.f();",
        )
        .await
        .expect("a plpgsql body of plain statements is rewritten");
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.g(e text, n text) RETURNS void LANGUAGE sql AS $$ INSERT INTO users (email, full_name) VALUES (e, n) $$; SELECT pg_temp.g('g@x', 'Gi Go');",
        )
        .await
        .expect("a LANGUAGE sql body is rewritten");
    assert_eq!(
        db.physical("SELECT email, name, full_name FROM users ORDER BY id")
            .await,
        ["f@x|Fn Ln|Fn Ln", "g@x|Gi Go|Gi Go"]
    );
    let e = client
        .batch_execute(
            "CREATE FUNCTION pg_temp.h() RETURNS void AS $f$ BEGIN IF true THEN INSERT INTO users (full_name) VALUES ('x'); END IF; END $f$ LANGUAGE plpgsql",
        )
        .await
        .expect_err("a control structure over a mapped table");
    let (code, message) = db_error(&e);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("(rule users-full-name)"), "{message}");
}

/// Sequelize's `findOrCreate`: a temporary plpgsql function that inserts and
/// returns the row, called and dropped in one simple query.
fn find_or_create(id: i32, old_shape: bool) -> String {
    let (column, value) = if old_shape {
        ("name", "Ann Old")
    } else {
        ("full_name", "Ann New")
    };
    format!(
        "CREATE OR REPLACE FUNCTION pg_temp.testfunc(OUT response \"users\", OUT sequelize_caught_exception text) RETURNS RECORD AS $func_0a1b$ BEGIN INSERT INTO \"users\" (\"id\",\"email\",\"{column}\") VALUES ({id},'u{id}@x','{value}') RETURNING * INTO response; EXCEPTION WHEN unique_violation THEN GET STACKED DIAGNOSTICS sequelize_caught_exception = PG_EXCEPTION_DETAIL; END $func_0a1b$ LANGUAGE plpgsql; SELECT (testfunc.response).*, testfunc.sequelize_caught_exception FROM pg_temp.testfunc(); DROP FUNCTION IF EXISTS pg_temp.testfunc();"
    )
}

#[tokio::test]
async fn sequelize_find_or_create_writes_both_shapes_in_every_phase() {
    for phase in ["expand", "migrate", "contract"] {
        let db = Db::create(
            "rw_sequelize",
            "CREATE TABLE users (id int PRIMARY KEY, email text, name text, full_name text);",
        )
        .await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        for (id, old_shape) in [(1, true), (2, false)] {
            simple_rows(&client, &find_or_create(id, old_shape))
                .await
                .unwrap_or_else(|e| panic!("{phase}: findOrCreate {id}: {e:?}"));
        }
        // The second call for an existing row takes the exception branch.
        let again = simple_rows(&client, &find_or_create(1, true))
            .await
            .unwrap()
            .0;
        assert!(again[0].contains("already exists"), "{phase}: {again:?}");
        assert_eq!(
            db.physical("SELECT id, name, full_name FROM users ORDER BY id")
                .await,
            ["1|Ann Old|Ann Old", "2|Ann New|Ann New"],
            "{phase}"
        );
    }
}

/// An INSERT that leaves a mapped column to its default, or writes `DEFAULT`
/// for it (ORMs do both for unset attributes), stores the default in both
/// shapes, evaluated once: the row reads the same in every phase, contract
/// included, and `verify` finds it migrated.
#[tokio::test]
async fn defaults_of_mapped_columns_reach_both_shapes() {
    let setup = "CREATE TABLE users (id serial PRIMARY KEY, name text DEFAULT md5(random()::text), full_name text, email text);";
    for phase in ["expand", "migrate", "contract"] {
        let db = Db::create("rw_defaults", setup).await;
        let proxy = db.proxy(&rename(phase)).start().await;
        let client = db.through(&proxy).await;
        run_alternating(
            &client,
            &[
                "INSERT INTO users (email) VALUES ('a@x')",
                "INSERT INTO users (email) VALUES ('b@x'), ('c@x') RETURNING name, full_name",
                "INSERT INTO users (email, name) VALUES ('d@x', DEFAULT)",
                "INSERT INTO users (email, full_name) VALUES ('e@x', DEFAULT)",
                "INSERT INTO users (email) SELECT 'g@x'",
                "INSERT INTO users (email) SELECT email || '2' FROM users WHERE email IN ('a@x', 'b@x') ORDER BY 1 LIMIT 2 RETURNING name",
                "INSERT INTO users (email) VALUES ('h@x') ORDER BY 1",
                "INSERT INTO users DEFAULT VALUES RETURNING name, full_name",
            ],
            phase,
        )
        .await;
        let typed: String = client
            .query_one(
                "INSERT INTO users (email) VALUES ($1) RETURNING full_name",
                &[&"f@x"],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(typed.len(), 32, "{phase}: {typed}");
        assert_eq!(mismatched(&db).await, Vec::<String>::new(), "{phase}");
        // The new shape's DEFAULT is its own (none): written out as NULL in both.
        assert_eq!(
            db.physical("SELECT name IS NULL, full_name IS NULL FROM users WHERE email = 'e@x'")
                .await,
            ["t|t"],
            "{phase}"
        );
        assert_eq!(
            db.physical("SELECT count(*) FROM users WHERE full_name IS NULL")
                .await,
            ["1"],
            "{phase}"
        );
        if phase == "contract" {
            // The contract step carries the default over, then drops the old
            // column; `DEFAULT` written for it takes the new column's own.
            client
                .batch_execute(
                    "ALTER TABLE users ALTER COLUMN full_name SET DEFAULT 'carried'; \
                     ALTER TABLE users DROP COLUMN name",
                )
                .await
                .unwrap();
            let row = client
                .query_one(
                    "INSERT INTO users (email, name) VALUES ('z@x', DEFAULT) RETURNING name",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), "carried");
        }
    }
}
