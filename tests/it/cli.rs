//! The `pgshim` binary itself: a configuration file with an unknown key is
//! refused with the key and file named, and every connection gets one "opened"
//! and one "closed" log line with client, user, database, duration and bytes,
//! in text and JSON.
use tokio::process::Command;

use crate::support::binary::Binary;
use crate::support::pg::{client_config, run_dir, DB, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::{connect, eventually, unique_name, within};

/// `text` without ANSI colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after `key` in `line`.
fn number_after(line: &str, key: &str) -> u64 {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len()..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key} in {line}"))
}

/// Runs one session through the binary, stops it, and returns the log lines
/// (ANSI stripped) that mention its user.
async fn session_log(extra: &[&str]) -> Vec<String> {
    let mut pgshim = Binary::start(proxy(), extra).await;
    let client = connect(&client_config("127.0.0.1", pgshim.port, TRUST_USER, None))
        .await
        .unwrap();
    client
        .query_one("SELECT repeat('z', 10000)", &[])
        .await
        .unwrap();
    drop(client);
    eventually(20, "the connection-closed line is logged", || async {
        strip_ansi(&pgshim.log_text())
            .lines()
            .any(|l| l.contains("connection closed") && l.contains(TRUST_USER))
    })
    .await;
    pgshim.signal("TERM");
    let status = pgshim.wait_exit().await;
    assert!(status.success(), "{status}:\n{}", pgshim.log_text());
    strip_ansi(&pgshim.log_text())
        .lines()
        .filter(|l| l.contains(TRUST_USER))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn unknown_config_key_is_refused_naming_key_and_file() {
    let path = run_dir().join(format!("{}.toml", unique_name("typo")));
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[limits]\nmax_conections = 5\n",
    )
    .unwrap();
    let out = within(
        30,
        "pgshim with a bad config exits",
        Command::new(env!("CARGO_BIN_EXE_pgshim"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
}

#[tokio::test]
async fn text_log_has_one_line_per_connection_open_and_close() {
    let lines = session_log(&[]).await;
    let opened: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("connection opened"))
        .collect();
    let closed: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("connection closed"))
        .collect();
    assert_eq!(opened.len(), 1, "{lines:#?}");
    assert_eq!(closed.len(), 1, "{lines:#?}");
    let line = closed[0];
    for field in [
        "client=127.0.0.1:",
        &format!("user={TRUST_USER}"),
        &format!("database={DB}"),
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(number_after(line, "bytes_in=") > 0, "{line}");
    assert!(number_after(line, "bytes_out=") > 10_000, "{line}");
}

#[tokio::test]
async fn json_log_has_one_object_per_connection_open_and_close() {
    let lines = session_log(&["--log-format", "json"]).await;
    for l in &lines {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object: {l}"
        );
    }
    let closed: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("\"connection closed\""))
        .collect();
    assert_eq!(closed.len(), 1, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("\"connection opened\""))
            .count(),
        1,
        "{lines:#?}"
    );
    let line = closed[0];
    for field in [
        "\"client\":\"127.0.0.1:",
        &format!("\"user\":\"{TRUST_USER}\""),
        &format!("\"database\":\"{DB}\""),
        "\"duration_ms\":",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(number_after(line, "\"bytes_in\":") > 0, "{line}");
    assert!(number_after(line, "\"bytes_out\":") > 10_000, "{line}");
}
