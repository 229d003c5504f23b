//! The board: counts per shape, last-seen times, the bounded sample of old-name clients,
//! and the fleet summary built from instance reports.

use std::net::SocketAddr;

use super::summary::{ago, summarize, Reported};
use super::*;
use crate::rewrite::rewrite_with_usage;
use crate::rewrite::tests::support::{catalog, rules};

fn usage(sql: &str) -> Usage {
    rewrite_with_usage(sql, &rules("migrate"), &catalog())
        .unwrap()
        .1
}

fn client(app: &str, addr: &str) -> Client {
    Client::new(Some(app), addr.parse::<SocketAddr>().unwrap())
}

#[test]
fn counts_each_shape_with_its_last_time() {
    let board = Board::new();
    let billing = client("billing-v1", "10.0.0.7:5000");
    board.record_at(&usage("SELECT name FROM users"), &billing, 1_000);
    board.record_at(&usage("SELECT name, full_name FROM users"), &billing, 2_000);
    board.record_at(&usage("SELECT * FROM users"), &billing, 3_000);
    let r = board.rule("users.name");
    assert_eq!(
        (r.old, r.new, r.star),
        (
            ShapeCount {
                statements: 2,
                last_seen_ms: Some(2_000)
            },
            ShapeCount {
                statements: 1,
                last_seen_ms: Some(2_000)
            },
            ShapeCount {
                statements: 1,
                last_seen_ms: Some(3_000)
            },
        )
    );
    assert_eq!(board.rule("orders.status"), RuleReport::default());
}

#[test]
fn only_old_names_enter_the_sample_once_per_client_newest_first() {
    let board = Board::new();
    let old = usage("SELECT name FROM users");
    board.record_at(&old, &client("billing-v1", "10.0.0.7:5000"), 10);
    board.record_at(&old, &client("reports", "10.0.0.8:5000"), 20);
    // Another connection of the same app from the same host: one entry, newer.
    board.record_at(&old, &client("billing-v1", "10.0.0.7:6001"), 30);
    board.record_at(
        &usage("SELECT full_name FROM users"),
        &client("web-v2", "10.0.0.9:5000"),
        40,
    );
    let sample = board.rule("users.name").old_clients;
    let names: Vec<(&str, &str, u64)> = sample
        .iter()
        .map(|s| {
            (
                s.application_name.as_str(),
                s.client_addr.as_str(),
                s.last_seen_ms,
            )
        })
        .collect();
    assert_eq!(
        names,
        [("billing-v1", "10.0.0.7", 30), ("reports", "10.0.0.8", 20)]
    );
}

#[test]
fn the_sample_is_bounded() {
    let board = Board::new();
    let old = usage("SELECT name FROM users");
    for i in 0..20u64 {
        board.record_at(&old, &client(&format!("app-{i}"), "10.0.0.1:1"), i);
    }
    let sample = board.rule("users.name").old_clients;
    assert_eq!(sample.len(), SAMPLE_SIZE);
    assert_eq!(sample[0].application_name, "app-19");
    assert_eq!(board.rule("users.name").old.statements, 20);
}

#[test]
fn application_names_are_cleaned_as_postgres_does() {
    let c = client("bill\u{1b}[31mé", "10.0.0.7:1");
    assert_eq!(c.application_name, "bill?[31m?");
    let long = "x".repeat(100);
    assert_eq!(client(&long, "10.0.0.7:1").application_name.len(), 63);
}

#[test]
fn ipv4_mapped_addresses_show_as_ipv4() {
    let c = client("x", "[::ffff:10.0.0.7]:5432");
    assert_eq!(c.addr.to_string(), "10.0.0.7");
}

#[test]
fn report_round_trips_through_json() {
    let board = Board::new();
    board.record_at(
        &usage("SELECT name FROM users"),
        &client("a", "10.0.0.1:1"),
        5,
    );
    let report = board.report(["users.name", "orders.status"]);
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), report);
    assert_eq!(report.rules["orders.status"], RuleReport::default());
}

fn report(since_ms: u64, at_ms: u64, rule: RuleReport) -> Report {
    Report {
        since_ms,
        at_ms,
        rules: [("r".to_owned(), rule)].into(),
    }
}

fn seen(app: &str, addr: &str, at: u64) -> Seen {
    Seen {
        application_name: app.into(),
        client_addr: addr.into(),
        last_seen_ms: at,
    }
}

#[test]
fn summary_sums_counts_and_measures_ages_on_each_instance_clock() {
    // Instance a's clock runs an hour ahead of b's; both saw billing-v1.
    let hour = 3_600_000;
    let a = report(
        hour,
        hour + 600_000,
        RuleReport {
            old: ShapeCount {
                statements: 5,
                last_seen_ms: Some(hour + 420_000),
            },
            old_clients: vec![seen("billing-v1", "10.0.0.7", hour + 420_000)],
            ..RuleReport::default()
        },
    );
    let b = report(
        0,
        600_000,
        RuleReport {
            old: ShapeCount {
                statements: 2,
                last_seen_ms: Some(590_000),
            },
            new: ShapeCount {
                statements: 9,
                last_seen_ms: Some(599_000),
            },
            old_clients: vec![
                seen("billing-v1", "10.0.0.7", 590_000),
                seen("cron", "10.0.0.3", 100_000),
            ],
            ..RuleReport::default()
        },
    );
    let s = summarize(
        "r",
        [
            Reported {
                report: &a,
                age_ms: 0,
                started_at: "a-start",
            },
            Reported {
                report: &b,
                age_ms: 2_000,
                started_at: "b-start",
            },
        ],
    );
    assert_eq!(s.instances, 2);
    assert_eq!(s.old.statements, 7);
    assert_eq!(s.old.last_seen_secs_ago, Some(12));
    assert_eq!(s.new.last_seen_secs_ago, Some(3));
    assert_eq!(s.counting_since.as_deref(), Some("b-start"));
    let clients: Vec<(&str, u64)> = s
        .old_clients
        .iter()
        .map(|c| (c.application_name.as_str(), c.last_seen_secs_ago))
        .collect();
    assert_eq!(clients, [("billing-v1", 12), ("cron", 502)]);
    assert_eq!(
        s.line(),
        "old names last used 12 s ago by billing-v1 (10.0.0.7) and 1 other client; \
         statements since start: 7 with old names, 9 with new names, 0 with *"
    );
}

#[test]
fn summary_says_since_when_nobody_used_the_old_names() {
    let r = report(
        0,
        1_000,
        RuleReport {
            new: ShapeCount {
                statements: 3,
                last_seen_ms: Some(900),
            },
            ..RuleReport::default()
        },
    );
    let s = summarize(
        "r",
        [Reported {
            report: &r,
            age_ms: 0,
            started_at: "2026-12-01 05:00:00+00",
        }],
    );
    assert!(
        s.line()
            .starts_with("old names not used since 2026-12-01 05:00:00+00;"),
        "{}",
        s.line()
    );
    assert_eq!(
        summarize(
            "other",
            [Reported {
                report: &r,
                age_ms: 0,
                started_at: ""
            }]
        )
        .line(),
        "no live instance reports usage of this rule"
    );
}

#[test]
fn ages_read_short() {
    assert_eq!(ago(59), "59 s");
    assert_eq!(ago(180), "3 min");
    assert_eq!(ago(7_200), "2 h");
    assert_eq!(ago(200_000), "2 d");
}
