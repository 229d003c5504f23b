//! What the subcommands tell a shell: exit codes (0 done, 1 failed, 2 usage,
//! 3 verify not clean), each error printed once (as JSON with
//! `--log-format json`), `reload` answering in a sentence, and no Postgres
//! NOTICEs from backfill and verify however often they run.
use std::path::PathBuf;

use serde_json::Value;

use crate::support::ops::{ops_config, rename_rule, run, Run};
use crate::support::pg::{cluster, free_port, run_dir};
use crate::support::proxy::proxy;
use crate::support::reloadable::AdminBinary;
use crate::support::unique_name;

/// The non-empty lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Asserts that `out` printed nothing Postgres sent as a NOTICE.
fn assert_no_notice(out: &Run) {
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains("NOTICE") && !text.contains("already exists"),
            "{out:?}"
        );
    }
}

/// A config whose upstream port has nothing listening on it.
fn unreachable_config() -> PathBuf {
    let path = run_dir().join(format!("{}.toml", unique_name("down")));
    let rule = rename_rule("down", "users", "name", "full_name", "expand");
    let text = proxy()
        .upstream("127.0.0.1", free_port())
        .connect_timeout_ms(2_000)
        .rules(&rule)
        .toml("127.0.0.1:0");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn status_exits_1_when_postgres_cannot_be_reached() {
    let config = unreachable_config();
    let out = run(&config, &["status"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.contains("error:"), "{out:?}");
    let errors = lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].starts_with("pgshim: could not inspect 1 of 1 rules"));

    let out = run(&config, &["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rules: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(rules[0]["error"].is_string(), "{rules}");
}

#[tokio::test]
async fn an_error_is_printed_once_in_text_and_as_one_json_object() {
    let missing = run_dir().join(format!("{}.toml", unique_name("missing")));
    let out = run(&missing, &["status"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let errors = lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{out:?}");
    let line = errors[0];
    assert!(
        line.starts_with("pgshim: cannot read config file"),
        "{line}"
    );
    assert_eq!(line.matches("No such file").count(), 1, "{line}");

    for args in [
        &["status", "--log-format", "json"][..],
        &["status", "--json"],
    ] {
        let out = run(&missing, args).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let errors = lines(&out.stderr);
        assert_eq!(errors.len(), 1, "{out:?}");
        let error: Value = serde_json::from_str(errors[0]).expect("a JSON error");
        assert_eq!(error["level"], "ERROR", "{error}");
        assert_eq!(error["exit_code"], 1, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("cannot read config file"), "{error}");
    }
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let config = ops_config("");
    let out = run(&config, &["verify"]).await;
    assert_eq!(out.status.code(), Some(2), "missing RULE: {out:?}");
    let out = run(&config, &["verify", "no-such-rule"]).await;
    assert_eq!(out.status.code(), Some(2), "unknown rule: {out:?}");
    assert!(out.stderr.contains("no-such-rule"), "{out:?}");
}

#[tokio::test]
async fn verify_exits_3_until_backfilled_and_no_run_prints_notices() {
    let table = unique_name("ex_users");
    let admin = cluster().admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text, full_name text);
             INSERT INTO {table} SELECT g, 'n' || g, NULL FROM generate_series(1, 300) g;"
        ))
        .await
        .unwrap();
    let config = ops_config(&rename_rule(&table, &table, "name", "full_name", "expand"));

    let out = run(&config, &["verify", &table]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.contains("NOT OK"), "{out:?}");
    assert_eq!(lines(&out.stderr).len(), 1, "{out:?}");
    assert_no_notice(&out);

    // The second runs find the `pgshim` schema in place.
    for args in [["backfill", &table], ["backfill", &table]] {
        let out = run(&config, &args).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_no_notice(&out);
    }
    for _ in 0..2 {
        let out = run(&config, &["verify", &table]).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_no_notice(&out);
    }
}

#[tokio::test]
async fn reload_answers_in_a_sentence_and_json_on_request() {
    let pgshim = AdminBinary::start(proxy(), "", None).await;
    let config = pgshim.path.clone();
    let out = run(&config, &["reload"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = lines(&out.stdout);
    assert_eq!(said.len(), 1, "{out:?}");
    assert!(said[0].starts_with("reloaded "), "{out:?}");
    assert!(said[0].contains("rules version"), "{out:?}");

    let out = run(&config, &["reload", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
}

#[tokio::test]
async fn reload_exits_1_when_no_pgshim_listens() {
    let path = run_dir().join(format!("{}.toml", unique_name("noadmin")));
    let text = proxy()
        .rules(&format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\n",
            free_port()
        ))
        .toml("127.0.0.1:0");
    std::fs::write(&path, text).unwrap();
    let out = run(&path, &["reload"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let errors = lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].contains("is pgshim running?"), "{out:?}");
}
