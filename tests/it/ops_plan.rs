//! `pgshim plan`: expand and contract DDL read from the live catalog, applied on a copy
//! of a schema, leaves the expected columns, indexes and constraints; and lists only what
//! is left to do when run again.
use tokio_postgres::Client;

use crate::support::ops::{ops_config, rename_rule, run};
use crate::support::pg::{cluster, DB};
use crate::support::unique_name;

/// `name type [NOT NULL]` for each column, in order.
async fn columns(c: &Client, schema: &str) -> Vec<String> {
    c.query(
        "SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END \
         FROM pg_attribute WHERE attrelid = ($1 || '.users')::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Valid index definitions, by name.
async fn indexes(c: &Client, schema: &str) -> Vec<String> {
    c.query(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = ($1 || '.users')::regclass \
         AND indisvalid ORDER BY indexrelid::regclass::text",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0).replace(&format!("{schema}."), ""))
    .collect()
}

#[tokio::test]
async fn expand_then_contract_ddl_applied_on_a_schema_copy() {
    let schema = unique_name("plan");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.users (id int PRIMARY KEY, name text NOT NULL DEFAULT 'anon', email text);
             CREATE INDEX users_name_idx ON {schema}.users (name);
             CREATE UNIQUE INDEX users_lower_name_key ON {schema}.users (lower(name)) WHERE name <> 'name';
             CREATE INDEX users_email_idx ON {schema}.users (email);
             INSERT INTO {schema}.users SELECT g, 'user ' || g, NULL FROM generate_series(1, 300) g;"
        ))
        .await
        .unwrap();
    let table = format!("{schema}.users");
    let rule = |phase| rename_rule(&schema, &table, "name", "full_name", phase);
    let config = ops_config(&rule("expand"));

    let printed = run(&config, &["plan", &schema, "--phase", "expand"]).await;
    assert!(printed.status.success(), "{printed:?}");
    assert!(
        printed.stdout.contains("SET lock_timeout = '2000ms';"),
        "{}",
        printed.stdout
    );
    assert!(
        printed
            .stdout
            .contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS"),
        "{}",
        printed.stdout
    );
    assert!(
        columns(&admin, &schema)
            .await
            .iter()
            .all(|c| !c.starts_with("full_name")),
        "printing changes nothing"
    );

    let applied = run(&config, &["plan", &schema, "--phase", "expand", "--apply"]).await;
    assert!(applied.status.success(), "{applied:?}");
    assert_eq!(
        columns(&admin, &schema).await,
        [
            "id integer NOT NULL",
            "name text NOT NULL",
            "email text",
            "full_name text"
        ]
    );
    assert_eq!(
        indexes(&admin, &schema).await,
        [
            "CREATE INDEX users_email_idx ON users USING btree (email)",
            "CREATE INDEX users_full_name_idx ON users USING btree (full_name)",
            "CREATE UNIQUE INDEX users_lower_full_name_key ON users USING btree (lower(full_name)) WHERE (full_name <> 'name'::text)",
            "CREATE UNIQUE INDEX users_lower_name_key ON users USING btree (lower(name)) WHERE (name <> 'name'::text)",
            "CREATE INDEX users_name_idx ON users USING btree (name)",
            "CREATE INDEX users_name_idx_pgshim_migrate ON users USING btree ((\nCASE\n    WHEN (full_name IS NULL) THEN name\n    ELSE full_name\nEND))",
            "CREATE UNIQUE INDEX users_pkey ON users USING btree (id)",
        ]
    );
    let again = run(&config, &["plan", &schema, "--phase", "expand"]).await;
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);

    let backfill = run(&config, &["backfill", &schema]).await;
    assert!(backfill.status.success(), "{backfill:?}");
    let migrate = ops_config(&rule("migrate"));
    let partial = run(
        &migrate,
        &["plan", &schema, "--phase", "contract", "--apply"],
    )
    .await;
    assert!(partial.status.success(), "{partial:?}");
    assert!(partial.stdout.contains("held back"), "{}", partial.stdout);
    assert_eq!(
        columns(&admin, &schema).await,
        [
            "id integer NOT NULL",
            "name text",
            "email text",
            "full_name text NOT NULL"
        ],
        "NOT NULL moved to the new column; the old one stays until phase contract"
    );
    let checks: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = ($1 || '.users')::regclass AND contype = 'c'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        checks, 0,
        "the helper check constraint is dropped after SET NOT NULL"
    );

    let contract = ops_config(&rule("contract"));
    let done = run(
        &contract,
        // No pgshim serves this table: the fleet guard is for fleet_contract.rs.
        &["plan", &schema, "--phase", "contract", "--apply", "--force"],
    )
    .await;
    assert!(done.status.success(), "{done:?}");
    assert_eq!(
        columns(&admin, &schema).await,
        [
            "id integer NOT NULL",
            "email text",
            "full_name text NOT NULL"
        ]
    );
    // The old column's default went to the new one before the drop.
    let default: String = admin
        .query_one(
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef d JOIN pg_attribute a \
             ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
             WHERE d.adrelid = ($1 || '.users')::regclass AND a.attname = 'full_name'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "'anon'::text");
    assert_eq!(
        indexes(&admin, &schema).await,
        [
            "CREATE INDEX users_email_idx ON users USING btree (email)",
            "CREATE INDEX users_full_name_idx ON users USING btree (full_name)",
            "CREATE UNIQUE INDEX users_lower_full_name_key ON users USING btree (lower(full_name)) WHERE (full_name <> 'name'::text)",
            "CREATE UNIQUE INDEX users_pkey ON users USING btree (id)",
        ]
    );
}

#[tokio::test]
async fn new_column_type_comes_from_the_transform_and_failures_say_what_ran() {
    let table = unique_name("plan_orders");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, status text);
             CREATE VIEW {table}_v AS SELECT status FROM {table};"
        ))
        .await
        .unwrap();
    let rule = |phase: &str| {
        format!(
            "[[rule]]\nid = \"{table}\"\ndatabase = \"{DB}\"\ntable = \"{table}\"\n\
             old = \"status\"\nnew = \"status_code\"\nphase = \"{phase}\"\n\
             [rule.to_new]\nstatus_code = \"CASE status WHEN 'paid' THEN 2 END\"\n\
             [rule.to_old]\nstatus = \"CASE status_code WHEN 2 THEN 'paid' END\"\n"
        )
    };
    let out = run(
        &ops_config(&rule("expand")),
        &["plan", &table, "--phase", "expand", "--apply"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let ty: String = admin
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = 'status_code'",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "integer");
    // A view reads the old column: DROP COLUMN fails, and the error says what ran.
    let out = run(
        &ops_config(&rule("contract")),
        &["plan", &table, "--phase", "contract", "--apply", "--force"],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("DROP COLUMN IF EXISTS \"status\"") && out.stderr.contains("failed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("depend"), "{}", out.stderr);
    assert!(out.stderr.contains("not run (0)"), "{}", out.stderr);
}
