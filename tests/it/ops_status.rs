//! `pgshim status`: each rule's shapes, backfill, verify and next safe step, following a
//! migration from a missing new column to a verified backfill.
use serde_json::Value;

use crate::support::ops::{ops_config, rename_rule, run};
use crate::support::pg::cluster;
use crate::support::unique_name;

async fn status(config: &std::path::PathBuf) -> Value {
    let out = run(config, &["status", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    all[0].clone()
}

#[tokio::test]
async fn status_follows_a_migration_step_by_step() {
    let table = unique_name("st_users");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text);
             INSERT INTO {table} SELECT g, 'n' || g FROM generate_series(1, 50) g;"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let s = status(&config).await;
    assert_eq!(s["new_missing"], serde_json::json!(["full_name"]));
    assert_eq!(s["both_shapes"], false);
    assert!(
        s["next"]
            .as_str()
            .unwrap()
            .contains("--phase expand --apply"),
        "{s}"
    );

    admin
        .batch_execute(&format!("ALTER TABLE {table} ADD COLUMN full_name text"))
        .await
        .unwrap();
    let s = status(&config).await;
    assert_eq!(s["both_shapes"], true);
    assert!(s["backfill"].is_null());
    assert!(
        s["next"].as_str().unwrap().contains("pgshim backfill"),
        "{s}"
    );

    assert!(run(&config, &["backfill", &table]).await.status.success());
    let s = status(&config).await;
    assert_eq!(s["backfill"]["state"], "done");
    assert_eq!(s["backfill"]["rows_done"], 50);
    assert!(s["next"].as_str().unwrap().contains("pgshim verify"), "{s}");

    assert!(run(&config, &["verify", &table]).await.status.success());
    let s = status(&config).await;
    assert_eq!(s["verify"]["ok"], true);
    assert_eq!(s["verify"]["stale"], false);
    assert!(
        s["next"].as_str().unwrap().contains("phase = \"migrate\""),
        "{s}"
    );

    let text = run(&config, &["status"]).await;
    assert!(
        text.stdout.contains("shapes:   both present"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("backfill: done (50 rows filled"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn status_and_plan_warn_about_objects_that_use_mapped_columns_inside_postgres() {
    let t = unique_name("st_bypass");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name text, full_name text, note text);
             CREATE VIEW {t}_v AS SELECT id, name FROM {t};
             CREATE VIEW {t}_v_note AS SELECT id, note FROM {t};
             CREATE MATERIALIZED VIEW {t}_mv AS SELECT full_name FROM {t};
             CREATE FUNCTION {t}_names() RETURNS SETOF text LANGUAGE sql AS $$ SELECT name FROM {t} $$;
             CREATE FUNCTION {t}_notes() RETURNS SETOF text LANGUAGE sql AS $$ SELECT note FROM {t} $$;
             CREATE FUNCTION {t}_atomic() RETURNS text LANGUAGE sql
               BEGIN ATOMIC SELECT full_name FROM {t} LIMIT 1; END;
             CREATE PROCEDURE {t}_rename(i int) LANGUAGE plpgsql
               AS $$ BEGIN UPDATE {t} SET name = 'x' WHERE id = i; END $$;
             CREATE FUNCTION {t}_upper() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
             CREATE FUNCTION {t}_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER upper_name BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_upper();
             CREATE TRIGGER on_full_name BEFORE UPDATE OF full_name ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_noop();
             CREATE TRIGGER on_any BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_noop();"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&t, &t, "name", "full_name", "migrate"));
    let s = status(&config).await;
    let found: Vec<(String, String, Value)> = s["bypass"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().unwrap().to_owned(),
                b["name"].as_str().unwrap().to_owned(),
                b["columns"].clone(),
            )
        })
        .collect();
    let expected = vec![
        (
            "function".to_owned(),
            format!("{t}_atomic()"),
            serde_json::json!(["full_name"]),
        ),
        (
            "function".to_owned(),
            format!("{t}_names()"),
            serde_json::json!(["name"]),
        ),
        (
            "materialized view".to_owned(),
            format!("{t}_mv"),
            serde_json::json!(["full_name"]),
        ),
        (
            "procedure".to_owned(),
            format!("{t}_rename(integer)"),
            serde_json::json!(["name"]),
        ),
        (
            "trigger".to_owned(),
            format!("on_full_name on {t} (runs {t}_noop)"),
            serde_json::json!(["full_name"]),
        ),
        (
            "trigger".to_owned(),
            format!("upper_name on {t} (runs {t}_upper)"),
            serde_json::json!(["name"]),
        ),
        (
            "view".to_owned(),
            format!("{t}_v"),
            serde_json::json!(["name"]),
        ),
    ];
    assert_eq!(found, expected, "{s}");

    let text = run(&config, &["status"]).await;
    assert!(text.status.success(), "{text:?}");
    assert!(
        text.stdout
            .contains("WARNING:  7 database object(s) use mapped columns")
            && text.stdout.contains(&format!("view {t}_v (name)"))
            && text
                .stdout
                .contains(&format!("procedure {t}_rename(integer) (name)")),
        "{}",
        text.stdout
    );

    let plan = run(&config, &["plan", &t, "--phase", "contract"]).await;
    assert!(plan.status.success(), "{plan:?}");
    assert!(
        plan.stdout.contains("-- WARNING: 7 database object(s)")
            && plan
                .stdout
                .contains(&format!("--   materialized view {t}_mv (full_name)")),
        "{}",
        plan.stdout
    );
    let plan = run(&config, &["plan", &t, "--phase", "expand", "--json"]).await;
    let json: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(json["bypass"].as_array().map(Vec::len), Some(7), "{json}");

    // Once the objects are changed to stop using the columns, the warning goes away.
    admin
        .batch_execute(&format!(
            "DROP VIEW {t}_v; DROP MATERIALIZED VIEW {t}_mv; DROP FUNCTION {t}_names();
             DROP FUNCTION {t}_atomic(); DROP PROCEDURE {t}_rename(int);
             DROP TRIGGER upper_name ON {t}; DROP TRIGGER on_full_name ON {t};"
        ))
        .await
        .unwrap();
    let s = status(&config).await;
    assert_eq!(s["bypass"], serde_json::json!([]), "{s}");
    let text = run(&config, &["status"]).await;
    assert!(!text.stdout.contains("WARNING"), "{}", text.stdout);
}
