//! Reads by a mapped column stay index lookups in every phase (ORDER BY …
//! LIMIT too, bounded by its WHERE), and the index-friendly migrate
//! predicates give exactly the phase's values, NULLs and negations included.
use crate::support::rules::{simple_rows, Db};

const SETUP: &str = "
CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);
INSERT INTO users SELECT g, 'user-' || g, CASE WHEN g % 2 = 0 THEN 'user-' || g END
  FROM generate_series(1, 20000) g;
INSERT INTO users VALUES (100001, NULL, NULL), (100002, 'x', NULL), (100003, 'y', 'x'),
  (100004, 'x', 'y');
CREATE INDEX users_name ON users (name);
CREATE INDEX users_full_name ON users (full_name);
ANALYZE users;";

fn rule(phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"users-full-name\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\n"
    )
}

async fn plan(client: &tokio_postgres::Client, sql: &str) -> String {
    simple_rows(client, &format!("EXPLAIN {sql}"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .0
        .join("\n")
}

#[tokio::test]
async fn point_lookups_by_a_mapped_column_use_an_index_in_every_phase() {
    let db = Db::create("mig_idx", SETUP).await;
    for phase in ["expand", "migrate", "contract"] {
        let proxy = db.proxy(&rule(phase)).start().await;
        let client = db.through(&proxy).await;
        for sql in [
            "SELECT id FROM users WHERE name = 'user-77'",
            "SELECT id FROM users WHERE full_name = 'user-78'",
            "SELECT id FROM users WHERE name IN ('user-5', 'user-6')",
            "SELECT id FROM users WHERE full_name BETWEEN 'user-100' AND 'user-101'",
            "SELECT u.id FROM users u WHERE u.name = 'user-9'::text",
            "SELECT id FROM users WHERE name = ANY('{user-3,user-4}'::text[])",
            "SELECT id FROM users WHERE name = ANY(ARRAY['user-3', 'user-4'])",
            "SELECT id FROM users WHERE name = CAST('user-7' AS text)",
            "SELECT id FROM users WHERE \"users\".\"name\"::text = 'user-7'",
        ] {
            let plan = plan(&client, sql).await;
            assert!(
                plan.contains("Index") && !plan.contains("Seq Scan"),
                "{phase}: {sql}\n{plan}"
            );
        }
        let rows = client
            .query("SELECT id FROM users WHERE name = $1", &[&"user-77"])
            .await
            .unwrap();
        let expected = if phase == "contract" { 0 } else { 1 };
        assert_eq!(rows.len(), expected, "{phase}: odd rows are not migrated");
        // An array parameter, as asyncpg and node-postgres send `IN` lists.
        let sql = "SELECT id FROM users WHERE name = ANY($1)";
        let plan = plan(&client, &sql.replace("$1", "'{user-77,user-79}'::text[]")).await;
        assert!(
            plan.contains("Index") && !plan.contains("Seq Scan"),
            "{phase}\n{plan}"
        );
        let names = vec!["user-77", "user-79"];
        let rows = client.query(sql, &[&names]).await.unwrap();
        assert_eq!(rows.len(), 2 * expected, "{phase}: ANY($1)");
    }
}

#[tokio::test]
async fn migrate_predicates_read_exact_values() {
    let db = Db::create("mig_pred", SETUP).await;
    let proxy = db.proxy(&rule("migrate")).start().await;
    let client = db.through(&proxy).await;
    // In migrate, name and full_name both read: 100001 NULL, 100002 x,
    // 100003 x, 100004 y.
    let cases = [
        ("name = 'x'", vec!["100002", "100003"]),
        ("full_name = 'x'", vec!["100002", "100003"]),
        ("NOT (name = 'x')", vec!["100004"]),
        ("NOT (full_name <> 'x')", vec!["100002", "100003"]),
        ("name IS NULL", vec!["100001"]),
        ("full_name IS NOT NULL", vec!["100002", "100003", "100004"]),
        ("name NOT IN ('x')", vec!["100004"]),
        ("NOT (name IN ('y', NULL))", vec![]),
        ("name LIKE 'x%'", vec!["100002", "100003"]),
        ("NOT (full_name BETWEEN 'a' AND 'x')", vec!["100004"]),
        ("(name = 'x') IS NULL", vec!["100001"]),
        ("name = ANY('{x,z}'::text[])", vec!["100002", "100003"]),
        ("NOT (name = ANY(ARRAY['y', NULL]))", vec![]),
        ("name <> ALL(ARRAY['x'])", vec!["100004"]),
        ("(full_name = SOME('{x}')) IS NULL", vec!["100001"]),
        ("CAST('x' AS text) = name", vec!["100002", "100003"]),
        (
            "\"users\".\"name\"::text LIKE 'x%'",
            vec!["100002", "100003"],
        ),
        ("NOT (full_name::text ILIKE 'Y')", vec!["100002", "100003"]),
    ];
    for (predicate, want) in cases {
        let sql = format!("SELECT id FROM users WHERE id > 100000 AND {predicate} ORDER BY id");
        let got = simple_rows(&client, &sql).await.unwrap().0;
        assert_eq!(got, want, "{predicate}");
        let got: Vec<String> = client
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i32>(0).to_string())
            .collect();
        assert_eq!(got, want, "extended: {predicate}");
    }
    let rows = client
        .query(
            "SELECT id FROM users WHERE full_name = $1::text AND id > 100000 ORDER BY id",
            &[&"x"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn order_by_a_renamed_column_in_migrate_uses_the_index_plan_creates() {
    use crate::support::ops::{ops_config, rename_rule, run};
    let schema = crate::support::unique_name("mig_order");
    let admin = crate::support::pg::cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.users (id int PRIMARY KEY, name text);
             CREATE INDEX users_name_idx ON {schema}.users (name);
             INSERT INTO {schema}.users SELECT g, 'user-' || g FROM generate_series(1, 20000) g;
             GRANT USAGE ON SCHEMA {schema} TO {user};
             GRANT SELECT ON {schema}.users TO {user};",
            user = crate::support::pg::TRUST_USER
        ))
        .await
        .unwrap();
    let table = format!("{schema}.users");
    let rule = |phase| rename_rule(&schema, &table, "name", "full_name", phase);
    let applied = run(
        &ops_config(&rule("expand")),
        &["plan", &schema, "--phase", "expand", "--apply"],
    )
    .await;
    assert!(applied.status.success(), "{applied:?}");
    admin
        .batch_execute(&format!(
            "UPDATE {table} SET full_name = name WHERE id % 2 = 0; ANALYZE {table};"
        ))
        .await
        .unwrap();
    let proxy = crate::support::proxy::proxy()
        .rules(&rule("migrate"))
        .start()
        .await;
    let client = proxy
        .connect(crate::support::pg::TRUST_USER, None)
        .await
        .unwrap();
    for column in ["name", "full_name"] {
        let sql = format!("SELECT id FROM {table} ORDER BY {column} LIMIT 5");
        let ordered = plan(&client, &sql).await;
        assert!(
            ordered.contains("users_name_idx_pgshim_migrate"),
            "{sql}\n{ordered}"
        );
        let rows = simple_rows(&client, &sql).await.unwrap().0;
        assert_eq!(rows, ["1", "10", "100", "1000", "10000"], "{sql}");
        // A range on the same column bounds the scan of that index rather
        // than filtering it from the start.
        let sql =
            format!("SELECT id FROM {table} WHERE {column} > 'user-5' ORDER BY {column} LIMIT 5");
        let ranged = plan(&client, &sql).await;
        let scan = ranged
            .lines()
            .skip_while(|l| !l.contains("users_name_idx_pgshim_migrate"))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(scan.contains("Index Cond"), "{sql}\n{ranged}");
        let rows = simple_rows(&client, &sql).await.unwrap().0;
        assert_eq!(rows, ["50", "500", "5000", "5001", "5002"], "{sql}");
    }
}
