//! `pgshim verify`: exit 0 only when nothing is left to migrate and both shapes agree,
//! with samples of the offending keys, and the last result saved for `pgshim status`;
//! `--repair` rewrites disagreeing rows from the phase's source of truth, resumably.
use crate::support::ops::{finish, ops_config, rename_rule, run, spawn};
use crate::support::pg::{cluster, DB};
use crate::support::{eventually, unique_name};

#[tokio::test]
async fn verify_fails_on_a_hand_made_mismatch_and_names_the_keys() {
    let table = unique_name("vf_users");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, full_name text);
             INSERT INTO {table} SELECT g, 'user ' || g, 'user ' || g FROM generate_series(1, 1200) g;
             UPDATE {table} SET full_name = 'someone else' WHERE id = 7;
             UPDATE {table} SET full_name = NULL WHERE id = 900;
             INSERT INTO {table} VALUES (1201, NULL, NULL);"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let out = run(
        &config,
        &["verify", &table, "--batch-size", "500", "--json"],
    )
    .await;
    assert!(
        !out.status.success(),
        "a mismatch must fail verify: {out:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["rows_scanned"], 1201);
    assert_eq!(json["mismatched"], 1);
    assert_eq!(json["sample_mismatched"], serde_json::json!(["7"]));
    assert_eq!(
        json["not_migrated"], 1,
        "all-NULL rows have nothing to migrate"
    );
    assert_eq!(json["sample_not_migrated"], serde_json::json!(["900"]));
    assert!(out.stderr.contains("1 rows disagree"), "{}", out.stderr);

    admin
        .batch_execute(&format!(
            "UPDATE {table} SET full_name = name WHERE id IN (7, 900)"
        ))
        .await
        .unwrap();
    let out = run(&config, &["verify", &table]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let saved: (bool, i64) = admin
        .query_one(
            "SELECT ok, rows_scanned FROM pgshim.verify_result WHERE rule_id = $1",
            &[&table],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(saved, (true, 1201));
}

#[tokio::test]
async fn verify_compares_a_type_change_both_ways() {
    let table = unique_name("vf_orders");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, status text, status_code int);
             INSERT INTO {table} VALUES (1, 'pending', 1), (2, 'paid', 2), (3, 'failed', 3),
                                        (4, 'paid', 3), (5, 'refunded', NULL);"
        ))
        .await
        .unwrap();
    let rule = format!(
        "[[rule]]\nid = \"{table}\"\ndatabase = \"{DB}\"\ntable = \"{table}\"\n\
         old = \"status\"\nnew = \"status_code\"\nphase = \"migrate\"\n\
         [rule.to_new]\nstatus_code = \"CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END\"\n\
         [rule.to_old]\nstatus = \"CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END\"\n"
    );
    let config = ops_config(&rule);
    let out = run(&config, &["verify", &table]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.contains("disagreeing:  1"), "{}", out.stdout);
    assert!(out.stdout.contains("keys 4"), "{}", out.stdout);
    assert!(out.stdout.contains("not migrated: 1"), "{}", out.stdout);
    assert!(out.stdout.contains("keys 5"), "{}", out.stdout);
}

#[tokio::test]
async fn unknown_rule_and_missing_database_are_explained() {
    let table = unique_name("vf_none");
    let config = ops_config(&format!(
        "[[rule]]\nid = \"{table}\"\ntable = \"{table}\"\nold = \"a\"\nnew = \"b\"\nphase = \"expand\"\n"
    ));
    let out = run(&config, &["verify", "no-such-rule"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no rule with id \"no-such-rule\"") && out.stderr.contains(&table),
        "{}",
        out.stderr
    );
    let out = run(&config, &["verify", &table]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("--database"), "{}", out.stderr);
}

/// `(rows where full_name and name differ, rows with a name but no full_name)`.
async fn disagreeing(table: &str) -> (i64, i64) {
    let row = cluster()
        .admin()
        .await
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE full_name IS DISTINCT FROM name), \
                        count(*) FILTER (WHERE full_name IS NULL AND name IS NOT NULL) FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn repair_rewrites_hand_made_disagreements_from_the_phase_source_of_truth() {
    for phase in ["expand", "migrate", "contract"] {
        let table = unique_name("vf_repair");
        let admin = cluster().admin().await;
        // Written directly on Postgres, around pgshim: one row whose new column says
        // something else, one whose new column was never filled, one renamed in the
        // old column only.
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, full_name text);
                 INSERT INTO {table} SELECT g, 'user ' || g, 'user ' || g FROM generate_series(1, 3000) g;
                 UPDATE {table} SET full_name = 'new truth' WHERE id = 7;
                 UPDATE {table} SET full_name = NULL WHERE id = 1500;
                 UPDATE {table} SET name = 'old truth' WHERE id = 2999;"
            ))
            .await
            .unwrap();
        let config = ops_config(&rename_rule(&table, &table, "name", "full_name", phase));
        let report = run(&config, &["verify", &table, "--json"]).await;
        assert!(!report.status.success(), "{phase}: {report:?}");
        let json: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
        assert_eq!(
            (json["mismatched"].as_i64(), json["not_migrated"].as_i64()),
            (Some(2), Some(1)),
            "{phase}: {json}"
        );
        assert_eq!(
            disagreeing(&table).await,
            (3, 1),
            "{phase}: verify only reports"
        );

        let out = run(
            &config,
            &[
                "verify",
                &table,
                "--repair",
                "--batch-size",
                "400",
                "--json",
            ],
        )
        .await;
        assert!(out.status.success(), "{phase}: {out:?}");
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(json["ok"], true, "{phase}: {json}");
        assert_eq!(json["repaired"], 3, "{phase}: only the three rows: {json}");
        assert_eq!(disagreeing(&table).await, (0, 0), "{phase}");
        let names: Vec<(i64, String)> = admin
            .query(
                &format!("SELECT id, name FROM {table} WHERE id IN (7, 1500, 2999) ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // Expand reads the old shape, migrate and contract the new one; a row with no
        // new value is read from the old shape in every phase.
        let (seven, last) = match phase {
            "expand" => ("user 7", "old truth"),
            _ => ("new truth", "user 2999"),
        };
        assert_eq!(
            names,
            vec![
                (7, seven.to_owned()),
                (1500, "user 1500".to_owned()),
                (2999, last.to_owned())
            ],
            "{phase}"
        );
        let journal: (String, i64, i64) = admin
            .query_one(
                "SELECT state, rows_done, rows_scanned FROM pgshim.repair_progress WHERE rule_id = $1",
                &[&table],
            )
            .await
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .unwrap();
        assert_eq!(journal, ("done".to_owned(), 3, 3000), "{phase}");

        // On a clean table --repair is one scan and no walk (a new walk would start its
        // journal over).
        let again = run(&config, &["verify", &table, "--repair", "--json"]).await;
        assert!(again.status.success(), "{phase}: {again:?}");
        let json: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(
            (json["ok"].as_bool(), json["repaired"].as_i64()),
            (Some(true), Some(0))
        );
        let journal_after: (String, i64) = admin
            .query_one(
                "SELECT state, rows_done FROM pgshim.repair_progress WHERE rule_id = $1",
                &[&table],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(journal_after, ("done".to_owned(), 3), "{phase}");
    }
}

#[tokio::test]
async fn repair_of_a_type_change_recomputes_the_old_column_in_migrate() {
    let table = unique_name("vf_repair_codes");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, status text, status_code int);
             INSERT INTO {table} VALUES (1, 'pending', 1), (2, 'paid', 2), (3, 'failed', NULL),
                                        (4, 'paid', 3);"
        ))
        .await
        .unwrap();
    let rule = format!(
        "[[rule]]\nid = \"{table}\"\ndatabase = \"{DB}\"\ntable = \"{table}\"\n\
         old = \"status\"\nnew = \"status_code\"\nphase = \"migrate\"\n\
         [rule.to_new]\nstatus_code = \"CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END\"\n\
         [rule.to_old]\nstatus = \"CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END\"\n"
    );
    let config = ops_config(&rule);
    let out = run(&config, &["verify", &table, "--repair"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("2 rows rewritten"), "{}", out.stdout);
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let rows: Vec<(String, i32)> = admin
        .query(
            &format!("SELECT status, status_code FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [("pending", 1), ("paid", 2), ("failed", 3), ("failed", 3)];
    let expected: Vec<(String, i32)> = expected.iter().map(|(s, c)| (s.to_string(), *c)).collect();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn interrupted_repair_resumes_from_its_checkpoint() {
    let table = unique_name("vf_repair_resume");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, full_name text);
             INSERT INTO {table} SELECT g, 'user ' || g, 'stale ' || g FROM generate_series(1, 3000) g;"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));
    let running = spawn(
        &config,
        &[
            "verify",
            &table,
            "--repair",
            "--batch-size",
            "100",
            "--sleep",
            "50",
        ],
    );
    let journal = || async {
        admin
            .query_opt(
                "SELECT state, rows_done FROM pgshim.repair_progress WHERE rule_id = $1",
                &[&table],
            )
            .await
            .ok()
            .flatten()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
    };
    eventually(30, "the repair has rewritten some rows", || async {
        journal().await.is_some_and(|(_, done)| done >= 300)
    })
    .await;
    let pid = running.id().expect("repair is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let stopped = finish(running).await;
    assert!(!stopped.status.success(), "{stopped:?}");
    assert!(
        stopped
            .stderr
            .contains("rerun the same command to continue"),
        "{}",
        stopped.stderr
    );
    let (state, done) = journal().await.unwrap();
    assert_eq!(state, "running");
    assert!(done < 3_000, "stopped before the end: {done}");
    let fixed: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE full_name = name"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fixed, done, "each batch committed with its checkpoint");

    let rest = run(&config, &["verify", &table, "--repair", "--json"]).await;
    assert!(rest.status.success(), "{rest:?}");
    let json: serde_json::Value = serde_json::from_str(&rest.stdout).unwrap();
    assert_eq!(json["repaired"], 3_000 - done, "{json}");
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(journal().await.unwrap(), ("done".to_owned(), 3_000));
}
