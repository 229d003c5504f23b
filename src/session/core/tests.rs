//! The session core on byte vectors: what it forwards, replaces and swallows
//! for given client and server messages, and a property test that replays
//! random pipelines against a small model of Postgres's extended protocol.
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::BytesMut;

use super::shape::tests::row_description;
use super::*;
use crate::active::DbRules;
use crate::config::OnUnrewritable;
use crate::protocol::backend::{write_error, Severity};
use crate::protocol::frontend::FLUSH_TAG;
use crate::protocol::{Frame, Framer, SYNC_TAG};
use crate::rewrite::tests::support::{catalog, rules};
use crate::rewrite::RewriteCache;

// --- message builders ---

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql.as_bytes());
    msg(QUERY_TAG, &b)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name.as_bytes());
    cstr(&mut b, sql.as_bytes());
    b.extend_from_slice(&[0, 0]);
    msg(PARSE_TAG, &b)
}

fn bind(statement: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, b"");
    cstr(&mut b, statement.as_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(BIND_TAG, &b)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name.as_bytes());
    msg(DESCRIBE_TAG, &b)
}

fn describe_portal() -> Vec<u8> {
    msg(DESCRIBE_TAG, b"P\0")
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name.as_bytes());
    msg(CLOSE_TAG, &b)
}

fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    msg(SYNC_TAG, b"")
}

fn flush() -> Vec<u8> {
    msg(FLUSH_TAG, b"")
}

fn ready(status: u8) -> Vec<u8> {
    msg(READY_FOR_QUERY_TAG, &[status])
}

fn parse_complete() -> Vec<u8> {
    msg(PARSE_COMPLETE_TAG, b"")
}

fn close_complete() -> Vec<u8> {
    msg(CLOSE_COMPLETE_TAG, b"")
}

fn bind_complete() -> Vec<u8> {
    msg(b'2', b"")
}

fn parameters() -> Vec<u8> {
    msg(PARAMETER_DESCRIPTION_TAG, &[0, 0])
}

fn command_complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag.as_bytes());
    msg(COMMAND_COMPLETE_TAG, &b)
}

fn error(code: &str, message: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_error(&mut out, Severity::Error, code, message, None);
    out.to_vec()
}

/// A syntax error naming whatever stand-in token `sent` carries, as Postgres
/// reports one.
fn syntax_error_for(sent: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(sent);
    let start = text.find("pgshim_rejected_").expect("a stand-in token");
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    error("42601", &format!("syntax error at or near \"{token}\""))
}

fn field(error: &[u8], code: u8) -> Option<String> {
    let mut rest = error.get(5..)?;
    while let Some((&f, tail)) = rest.split_first() {
        if f == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if f == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

// --- fixtures ---

/// Rules, catalog and rewrite cache per phase, built once: building them
/// parses every transform.
static DATABASES: LazyLock<[Arc<DbRules>; 3]> = LazyLock::new(|| {
    ["expand", "migrate", "contract"].map(|phase| {
        Arc::new(DbRules {
            rules: rules(phase),
            left_out: Default::default(),
            state: Ok(catalog()),
            cache: RewriteCache::new(256),
        })
    })
});

fn session_rules(number: u64, phase: &str) -> SessionRules {
    let at = ["expand", "migrate", "contract"]
        .iter()
        .position(|p| *p == phase)
        .expect("a phase");
    SessionRules {
        number,
        on_unrewritable: OnUnrewritable::Reject,
        db: Arc::clone(&DATABASES[at]),
    }
}

/// A core past authentication with rules version 1 in `phase`.
fn ready_core(phase: &str) -> Core {
    let mut core = Core::default();
    assert_eq!(core.server_message(&ready(b'I')), ToClient::Forward);
    assert!(core.authenticated());
    assert_eq!(core.take_rules(session_rules(1, phase)), None);
    core
}

/// Feeds a client message the way the socket code does.
fn client(core: &mut Core, m: &[u8]) -> ToServer {
    if core.client_wants_whole(m[0]) {
        core.client_message(m)
    } else {
        core.client_passed(m[0]);
        ToServer::Forward
    }
}

/// Feeds a server message the way the socket code does.
fn server(core: &mut Core, m: &[u8]) -> ToClient {
    if core.server_wants_whole(m[0]) {
        core.server_message(m)
    } else {
        core.server_passed(m[0]);
        ToClient::Forward
    }
}

fn sent_bytes(action: ToServer) -> BytesMut {
    match action {
        ToServer::Send(b) | ToServer::SendAndCheck(b) => b,
        ToServer::Forward => panic!("expected a replacement"),
    }
}

fn tags(bytes: &[u8]) -> Vec<u8> {
    let mut framer = Framer::new(usize::MAX);
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(Some(frame)) = framer.next(&bytes[off..], |_| true) {
        let Frame::Whole(h) = frame else { break };
        out.push(h.tag);
        off += h.total_len;
    }
    out
}

// --- authentication ---

#[test]
fn nothing_but_authentication_goes_through_before_the_login_is_accepted() {
    let mut core = Core::default();
    assert_eq!(core.activity(), Activity::Authenticating);
    assert_eq!(core.auth_step(QUERY_TAG), AuthStep::Hold);
    assert_eq!(core.auth_step(PARSE_TAG), AuthStep::Hold);
    assert_eq!(core.auth_step(PASSWORD_TAG), AuthStep::Relay);
    assert_eq!(core.auth_step(TERMINATE_TAG), AuthStep::Terminate);
    assert!(core.server_wants_whole(AUTHENTICATION_TAG));
    // A statement handed over without rules is refused, never forwarded.
    let action = core.client_message(&query("SELECT name FROM users"));
    let sent = sent_bytes(action);
    assert!(String::from_utf8_lossy(&sent).contains("pgshim_rejected_"));
}

#[test]
fn channel_binding_is_hidden_and_the_first_ready_ends_authentication() {
    let mut core = Core::default();
    let mut body = 10i32.to_be_bytes().to_vec();
    cstr(&mut body, b"SCRAM-SHA-256-PLUS");
    cstr(&mut body, b"SCRAM-SHA-256");
    body.push(0);
    let sasl = msg(AUTHENTICATION_TAG, &body);
    let ToClient::Send(edited) = server(&mut core, &sasl) else {
        panic!("channel binding not stripped");
    };
    assert!(!String::from_utf8_lossy(&edited).contains("PLUS"));
    assert_eq!(server(&mut core, &ready(b'I')), ToClient::Forward);
    assert!(core.authenticated());
    assert!(!core.server_wants_whole(AUTHENTICATION_TAG));
    assert_eq!(core.activity(), Activity::Idle);
}

// --- rewriting and refusals ---

#[test]
fn mapped_statements_are_rewritten_and_others_pass_untouched() {
    let mut core = ready_core("expand");
    assert_eq!(client(&mut core, &query("SELECT 1")), ToServer::Forward);
    let sent = sent_bytes(client(
        &mut core,
        &query("INSERT INTO users (email, name) VALUES ('a', 'b')"),
    ));
    assert!(String::from_utf8_lossy(&sent).contains("full_name"));
    assert_eq!(
        core.tally.statements[StatementOutcome::Rewritten.index()],
        1
    );
}

#[test]
fn refusal_mid_pipeline_comes_back_in_the_server_s_place() {
    let mut core = ready_core("expand");
    assert_eq!(client(&mut core, &query("BEGIN")), ToServer::Forward);
    server(&mut core, &command_complete("BEGIN"));
    server(&mut core, &ready(b'T'));
    assert_eq!(client(&mut core, &parse("", "SELECT 1")), ToServer::Forward);
    let refused = sent_bytes(client(
        &mut core,
        &parse("s1", "COPY users (id, name) FROM STDIN"),
    ));
    client(&mut core, &bind("s1"));
    client(&mut core, &execute());
    client(&mut core, &sync());
    assert_eq!(server(&mut core, &parse_complete()), ToClient::Forward);
    let ToClient::Send(ours) = server(&mut core, &syntax_error_for(&refused)) else {
        panic!("stand-in error not replaced");
    };
    assert_eq!(field(&ours, b'C').as_deref(), Some("0A000"));
    assert!(field(&ours, b'M').is_some_and(|m| m.starts_with("pgshim: ")));
    assert_eq!(server(&mut core, &ready(b'E')), ToClient::Forward);
    assert_eq!(core.tx_status(), Some(crate::protocol::TxStatus::Failed));
    assert!(!core.refusals.any());
}

#[test]
fn a_refusal_skipped_after_an_earlier_error_expires_with_its_pipeline() {
    let mut core = ready_core("expand");
    client(&mut core, &parse("", "SELEC oops"));
    let refused = sent_bytes(client(
        &mut core,
        &parse("", "COPY users (id, name) FROM STDIN"),
    ));
    assert!(!refused.is_empty());
    client(&mut core, &sync());
    // Postgres fails the first Parse and skips the stand-in.
    assert_eq!(
        server(
            &mut core,
            &error("42601", "syntax error at or near \"SELEC\"")
        ),
        ToClient::Forward
    );
    server(&mut core, &ready(b'I'));
    assert!(!core.refusals.any());
    assert_eq!(core.activity(), Activity::Idle);
}

// --- pipelines ---

#[test]
fn flush_without_sync_keeps_the_session_busy_until_ready() {
    let mut core = ready_core("expand");
    for m in [parse("", "SELECT 1"), bind(""), execute(), flush()] {
        assert_eq!(client(&mut core, &m), ToServer::Forward);
    }
    for m in [
        parse_complete(),
        bind_complete(),
        command_complete("SELECT 1"),
    ] {
        assert_eq!(server(&mut core, &m), ToClient::Forward);
    }
    assert_eq!(core.activity(), Activity::Busy);
    assert!(!core.idle());
    client(&mut core, &sync());
    server(&mut core, &ready(b'I'));
    assert_eq!(core.activity(), Activity::Idle);
    assert_eq!(core.in_flight(), 0);
}

#[test]
fn copy_in_both_directions_passes_without_inspection() {
    let mut core = ready_core("expand");
    client(&mut core, &query("COPY accounts FROM STDIN"));
    server(&mut core, &msg(b'G', &[0, 0, 0]));
    for m in [msg(b'd', b"1\n"), msg(b'd', b"2\n"), msg(b'c', b"")] {
        assert!(!core.client_wants_whole(m[0]));
        assert_eq!(client(&mut core, &m), ToServer::Forward);
    }
    server(&mut core, &command_complete("COPY 2"));
    server(&mut core, &ready(b'I'));
    client(&mut core, &query("COPY accounts TO STDOUT"));
    for m in [msg(b'H', &[0, 0, 0]), msg(b'd', b"1\n"), msg(b'c', b"")] {
        assert!(!core.server_wants_whole(m[0]));
        assert_eq!(server(&mut core, &m), ToClient::Forward);
    }
    server(&mut core, &command_complete("COPY 1"));
    server(&mut core, &ready(b'I'));
    assert_eq!(core.activity(), Activity::Idle);
}

// --- re-prepare ---

/// Prepares `s1` under version 1 and switches to version 2 in `phase`.
fn prepared_then_new_rules(sql: &str, from: &str, to: &str, describe: bool) -> Core {
    let mut core = ready_core(from);
    client(&mut core, &parse("s1", sql));
    if describe {
        client(&mut core, &describe_statement("s1"));
    }
    client(&mut core, &sync());
    server(&mut core, &parse_complete());
    if describe {
        server(&mut core, &parameters());
        server(&mut core, &row_description(&[("name", 25, -1)]));
    }
    server(&mut core, &ready(b'I'));
    assert!(core.idle());
    assert_eq!(core.take_rules(session_rules(2, to)), None);
    core
}

#[test]
fn reprepare_replies_are_swallowed_and_the_client_s_own_pass() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", false);
    client(&mut core, &parse("s2", "SELECT 1"));
    let sent = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(tags(&sent), vec![CLOSE_TAG, PARSE_TAG, BIND_TAG]);
    client(&mut core, &execute());
    client(&mut core, &sync());
    assert_eq!(
        server(&mut core, &parse_complete()),
        ToClient::Forward,
        "s2"
    );
    assert_eq!(server(&mut core, &close_complete()), ToClient::Swallow);
    assert_eq!(server(&mut core, &parse_complete()), ToClient::Swallow);
    assert_eq!(server(&mut core, &bind_complete()), ToClient::Forward);
    server(&mut core, &command_complete("SELECT 0"));
    server(&mut core, &ready(b'I'));
    // Prepared once: the next Bind goes as it is.
    assert_eq!(client(&mut core, &bind("s1")), ToServer::Forward);
}

#[test]
fn a_reprepare_skipped_by_an_error_is_tried_again() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", false);
    client(&mut core, &parse("", "SELEC oops"));
    let sent = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(tags(&sent), vec![CLOSE_TAG, PARSE_TAG, BIND_TAG]);
    client(&mut core, &sync());
    server(&mut core, &error("42601", "syntax error"));
    server(&mut core, &ready(b'I'));
    let again = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(tags(&again), vec![CLOSE_TAG, PARSE_TAG, BIND_TAG]);
}

#[test]
fn deallocate_and_discard_all_forget_statements() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", false);
    client(&mut core, &query("DEALLOCATE s1"));
    server(&mut core, &command_complete("DEALLOCATE"));
    server(&mut core, &ready(b'I'));
    assert_eq!(client(&mut core, &bind("s1")), ToServer::Forward);
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", false);
    client(&mut core, &query("DISCARD ALL"));
    assert!(!core.client_wants_whole(CLOSE_TAG));
    assert_eq!(client(&mut core, &bind("s1")), ToServer::Forward);
}

#[test]
fn a_changed_result_fails_the_bind_as_postgres_does() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", true);
    let sent = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(
        tags(&sent),
        vec![CLOSE_TAG, PARSE_TAG, DESCRIBE_TAG, FLUSH_TAG]
    );
    assert!(!core.verdict_ready());
    assert_eq!(server(&mut core, &close_complete()), ToClient::Swallow);
    assert_eq!(server(&mut core, &parse_complete()), ToClient::Swallow);
    assert_eq!(server(&mut core, &parameters()), ToClient::Swallow);
    let wider = row_description(&[("name", 25, -1), ("nickname", 25, -1)]);
    assert_eq!(server(&mut core, &wider), ToClient::Swallow);
    assert!(core.verdict_ready());
    let stand_in = sent_bytes(core.after_check());
    assert_eq!(tags(&stand_in), vec![PARSE_TAG]);
    client(&mut core, &execute());
    client(&mut core, &sync());
    let ToClient::Send(ours) = server(&mut core, &syntax_error_for(&stand_in)) else {
        panic!("stand-in error not replaced");
    };
    assert_eq!(field(&ours, b'C').as_deref(), Some("0A000"));
    assert_eq!(
        field(&ours, b'M').as_deref(),
        Some("cached plan must not change result type")
    );
    assert_eq!(field(&ours, b'R').as_deref(), Some("RevalidateCachedQuery"));
    server(&mut core, &ready(b'I'));
    // Every later Bind fails the same way until the client prepares it again.
    let again = sent_bytes(client(&mut core, &bind("s1")));
    assert!(String::from_utf8_lossy(&again).contains("pgshim_rejected_"));
    client(&mut core, &sync());
    server(&mut core, &syntax_error_for(&again));
    server(&mut core, &ready(b'I'));
    // Closed and prepared again by the client, the statement binds again.
    client(&mut core, &close_statement("s1"));
    client(&mut core, &parse("s1", "SELECT name FROM users"));
    assert_eq!(client(&mut core, &bind("s1")), ToServer::Forward);
}

#[test]
fn an_unchanged_result_lets_the_held_bind_through() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", true);
    let bind_msg = bind("s1");
    sent_bytes(client(&mut core, &bind_msg));
    server(&mut core, &close_complete());
    server(&mut core, &parse_complete());
    server(&mut core, &parameters());
    let renamed = row_description(&[("name", 25, -1)]);
    assert_eq!(server(&mut core, &renamed), ToClient::Swallow);
    let held = sent_bytes(core.after_check());
    assert_eq!(&held[..], &bind_msg[..]);
    assert!(!core.checking());
}

#[test]
fn a_check_without_an_answer_in_time_still_swallows_its_replies() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", true);
    let bind_msg = bind("s1");
    sent_bytes(client(&mut core, &bind_msg));
    // The socket code gave up waiting: the Bind goes on unchecked.
    let held = sent_bytes(core.after_check());
    assert_eq!(&held[..], &bind_msg[..]);
    assert!(!core.idle());
    for m in [close_complete(), parse_complete(), parameters()] {
        assert_eq!(server(&mut core, &m), ToClient::Swallow);
    }
    let shape = row_description(&[("name", 25, -1)]);
    assert_eq!(server(&mut core, &shape), ToClient::Swallow);
    assert!(!core.checking());
    assert_eq!(server(&mut core, &bind_complete()), ToClient::Forward);
}

#[test]
fn a_check_behind_an_error_is_skipped_not_waited_for() {
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", true);
    client(&mut core, &parse("", "SELEC oops"));
    client(&mut core, &flush());
    server(&mut core, &error("42601", "syntax error"));
    // The pipeline already failed: no check, Postgres skips the Bind anyway.
    let sent = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(tags(&sent), vec![CLOSE_TAG, PARSE_TAG, BIND_TAG]);
    let mut core = prepared_then_new_rules("SELECT name FROM users", "expand", "migrate", true);
    client(&mut core, &parse("", "SELEC oops"));
    let sent = sent_bytes(client(&mut core, &bind("s1")));
    assert_eq!(
        tags(&sent),
        vec![CLOSE_TAG, PARSE_TAG, DESCRIBE_TAG, FLUSH_TAG]
    );
    // The error arrives after the check started: the verdict is "skipped".
    assert_eq!(
        server(&mut core, &error("42601", "syntax error")),
        ToClient::Forward
    );
    assert!(core.verdict_ready());
    assert_eq!(tags(&sent_bytes(core.after_check())), vec![BIND_TAG]);
}

// --- property test ---

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Postgres's extended protocol, reduced to what the replies' order depends
/// on: statements by name, the skip-until-Sync rule after an error, and
/// statements that fail (syntax errors and pgshim's stand-ins).
#[derive(Default)]
struct Model {
    /// Statement name to its SQL.
    statements: HashMap<Vec<u8>, Vec<u8>>,
    skipping: bool,
}

/// The result a statement text describes as: its type depends on the text,
/// so a statement prepared again with another rewrite may change shape.
fn described_as(sql: &[u8]) -> Vec<u8> {
    let oid = if sql.len().is_multiple_of(2) { 25 } else { 23 };
    row_description(&[("name", oid, -1)])
}

impl Model {
    /// The server's replies to one message pgshim sent.
    fn answer(&mut self, m: &[u8], out: &mut Vec<Vec<u8>>) {
        let body = &m[5..];
        // Postgres reads a whole text before running any of it: its own
        // syntax errors come first.
        let typo = |text: &str| text.contains("SELEC ") || text.contains("WHER ");
        let fails = |sql: &[u8]| {
            let text = String::from_utf8_lossy(sql);
            text.contains("pgshim_rejected_") || typo(&text)
        };
        let err = |sql: &[u8]| {
            let text = String::from_utf8_lossy(sql);
            if typo(&text) {
                error("42601", "syntax error at or near \"WHER\"")
            } else {
                syntax_error_for(sql)
            }
        };
        match m[0] {
            QUERY_TAG => {
                self.skipping = false;
                if fails(body) {
                    out.push(err(body));
                } else {
                    out.push(command_complete("SELECT 1"));
                }
                out.push(ready(b'I'));
            }
            SYNC_TAG => {
                self.skipping = false;
                out.push(ready(b'I'));
            }
            _ if self.skipping => {}
            PARSE_TAG => {
                let Some(p) = parse_body(m) else { return };
                if fails(p.sql) {
                    out.push(err(p.sql));
                    self.skipping = true;
                } else {
                    self.statements.insert(p.name.to_vec(), p.sql.to_vec());
                    out.push(parse_complete());
                }
            }
            BIND_TAG => {
                let name = bind_statement(m).unwrap_or_default();
                if self.statements.contains_key(name) {
                    out.push(bind_complete());
                } else {
                    out.push(error("26000", "prepared statement does not exist"));
                    self.skipping = true;
                }
            }
            DESCRIBE_TAG => match statement_target(m).map(|n| self.statements.get(n)) {
                Some(Some(sql)) => {
                    out.push(parameters());
                    out.push(described_as(sql));
                }
                Some(None) => {
                    out.push(error("26000", "prepared statement does not exist"));
                    self.skipping = true;
                }
                None => out.push(row_description(&[("name", 25, -1)])),
            },
            CLOSE_TAG => {
                if let Some(name) = statement_target(m) {
                    self.statements.remove(name);
                }
                out.push(close_complete());
            }
            b'E' => out.push(command_complete("SELECT 1")),
            _ => {}
        }
    }
}

/// Splits bytes pgshim sent into whole messages.
fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut framer = Framer::new(usize::MAX);
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(Some(Frame::Whole(h))) = framer.next(&bytes[off..], |_| true) {
        out.push(bytes[off..off + h.total_len].to_vec());
        off += h.total_len;
    }
    out
}

/// What the client sent in one round.
#[derive(Default)]
struct Sent {
    requests: u32,
    parses: u32,
    closes: u32,
    /// Every message the client sent, in order.
    messages: Vec<Vec<u8>>,
}

/// What the client was shown in one round.
#[derive(Default)]
struct Seen {
    readies: u32,
    parses: u32,
    closes: u32,
    swallowed: u32,
    replaced: u32,
    /// Tags of every message the client was shown, in order.
    tags: Vec<u8>,
}

impl Seen {
    /// Passes server replies through the core, counting what the client sees.
    fn deliver(&mut self, core: &mut Core, replies: Vec<Vec<u8>>, seed: u64) {
        for r in replies {
            let shown = match server(core, &r) {
                ToClient::Forward => r,
                ToClient::Send(b) => {
                    self.replaced += 1;
                    b.to_vec()
                }
                ToClient::Swallow => {
                    self.swallowed += 1;
                    continue;
                }
            };
            self.tags.push(shown[0]);
            match shown[0] {
                READY_FOR_QUERY_TAG => self.readies += 1,
                PARSE_COMPLETE_TAG => self.parses += 1,
                CLOSE_COMPLETE_TAG => self.closes += 1,
                ERROR_RESPONSE_TAG => assert!(
                    !String::from_utf8_lossy(&shown).contains("pgshim_rejected_"),
                    "seed {seed}: a stand-in error reached the client"
                ),
                _ => {}
            }
        }
    }
}

/// Checks that `shown` is exactly what a server would answer to `sent`,
/// message by message: each message gets its own replies or an error, after
/// which everything up to the next Sync is skipped.
fn replies_match(sent: &[Vec<u8>], shown: &[u8]) -> Result<(), String> {
    let mut shown = shown.iter().copied().peekable();
    let mut failed = false;
    let mut expect = |want: &[u8], failed: &mut bool| -> Result<(), String> {
        match shown.next() {
            Some(ERROR_RESPONSE_TAG) => {
                *failed = true;
                Ok(())
            }
            Some(t) if want.contains(&t) => Ok(()),
            other => Err(format!(
                "expected one of {:?}, got {:?}",
                want.iter().map(|&b| b as char).collect::<String>(),
                other.map(char::from)
            )),
        }
    };
    for m in sent {
        match m[0] {
            QUERY_TAG => {
                expect(&[COMMAND_COMPLETE_TAG], &mut failed)?;
                failed = false;
                expect(&[READY_FOR_QUERY_TAG], &mut failed)?;
            }
            SYNC_TAG => {
                failed = false;
                expect(&[READY_FOR_QUERY_TAG], &mut failed)?;
            }
            _ if failed => {}
            PARSE_TAG => expect(&[PARSE_COMPLETE_TAG], &mut failed)?,
            BIND_TAG => expect(b"2", &mut failed)?,
            CLOSE_TAG => expect(&[CLOSE_COMPLETE_TAG], &mut failed)?,
            b'E' => expect(&[COMMAND_COMPLETE_TAG], &mut failed)?,
            DESCRIBE_TAG if m[5] == b'S' => {
                expect(&[PARAMETER_DESCRIPTION_TAG], &mut failed)?;
                if !failed {
                    expect(&[ROW_DESCRIPTION_TAG, NO_DATA_TAG], &mut failed)?;
                }
            }
            DESCRIBE_TAG => expect(&[ROW_DESCRIPTION_TAG, NO_DATA_TAG], &mut failed)?,
            _ => {}
        }
    }
    match shown.next() {
        None => Ok(()),
        Some(t) => Err(format!("unexpected {:?} at the end", t as char)),
    }
}

#[test]
fn random_pipelines_keep_reply_bookkeeping_consistent() {
    let statements = [
        "SELECT 1",
        "SELECT name FROM users WHERE id = $1",
        "INSERT INTO users (email, full_name) VALUES ($1, $2)",
        "COPY users (id, name) FROM STDIN",
        "SELEC oops",
        "SELECT name FROM users WHER id = 1",
        "TABLE users",
    ];
    let phases = ["expand", "migrate", "contract"];
    let (mut checks, mut changed) = (0u32, 0u32);
    let mut seen_total = Seen::default();
    for seed in 1..=500u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut core = ready_core("expand");
        let mut model = Model::default();
        let mut version = 1;
        for _round in 0..12 {
            let mut seen = Seen::default();
            let mut to_server: Vec<Vec<u8>> = Vec::new();
            let mut sent = Sent::default();
            if rng.below(4) == 0 {
                // A simple query.
                let sql = statements[rng.below(statements.len() as u64) as usize];
                sent.requests += 1;
                sent.messages.push(query(sql));
                match client(&mut core, &query(sql)) {
                    ToServer::Forward => to_server.push(query(sql)),
                    ToServer::Send(bytes) => to_server.extend(messages(&bytes)),
                    other => panic!("seed {seed}: a query became {other:?}"),
                }
            } else {
                // An extended-protocol pipeline ending in Sync.
                for _ in 0..1 + rng.below(8) {
                    let name = ["", "s1", "s2"][rng.below(3) as usize];
                    let sql = statements[rng.below(statements.len() as u64) as usize];
                    let m = match rng.below(8) {
                        0 | 1 => {
                            sent.parses += 1;
                            parse(name, sql)
                        }
                        2 | 3 => bind(name),
                        4 => describe_statement(name),
                        5 => describe_portal(),
                        6 => {
                            sent.closes += 1;
                            close_statement(name)
                        }
                        _ => {
                            if rng.below(2) == 0 {
                                execute()
                            } else {
                                flush()
                            }
                        }
                    };
                    sent.messages.push(m.clone());
                    match client(&mut core, &m) {
                        ToServer::Forward => to_server.push(m),
                        ToServer::Send(bytes) => to_server.extend(messages(&bytes)),
                        ToServer::SendAndCheck(bytes) => {
                            checks += 1;
                            to_server.extend(messages(&bytes));
                            let mut replies = Vec::new();
                            for m in to_server.drain(..) {
                                model.answer(&m, &mut replies);
                            }
                            seen.deliver(&mut core, replies, seed);
                            assert!(core.verdict_ready(), "seed {seed}: check left waiting");
                            match core.after_check() {
                                ToServer::Send(bytes) => {
                                    changed += u32::from(tags(&bytes) == [PARSE_TAG]);
                                    to_server.extend(messages(&bytes))
                                }
                                other => panic!("seed {seed}: held message became {other:?}"),
                            }
                        }
                    }
                }
                sent.requests += 1;
                sent.messages.push(sync());
                assert_eq!(client(&mut core, &sync()), ToServer::Forward);
                to_server.push(sync());
            }
            let mut replies = Vec::new();
            for m in &to_server {
                model.answer(m, &mut replies);
            }
            seen.deliver(&mut core, replies, seed);
            if let Err(e) = replies_match(&sent.messages, &seen.tags) {
                panic!(
                    "seed {seed}: {e}\nsent {:?}\nshown {:?}",
                    sent.messages
                        .iter()
                        .map(|m| m[0] as char)
                        .collect::<String>(),
                    String::from_utf8_lossy(&seen.tags)
                );
            }
            assert_eq!(
                seen.readies, sent.requests,
                "seed {seed}: ReadyForQuery count"
            );
            assert!(
                seen.parses <= sent.parses,
                "seed {seed}: hidden ParseComplete leaked"
            );
            assert!(
                seen.closes <= sent.closes,
                "seed {seed}: hidden CloseComplete leaked"
            );
            assert_eq!(core.in_flight(), 0, "seed {seed}");
            assert!(
                core.idle(),
                "seed {seed}: not idle after the last ReadyForQuery"
            );
            assert!(!core.refusals.any(), "seed {seed}: refusals left over");
            assert!(!core.hidden.any(), "seed {seed}: hidden replies left over");
            assert!(!core.describes.any(), "seed {seed}: describes left over");
            seen_total.swallowed += seen.swallowed;
            seen_total.replaced += seen.replaced;
            if rng.below(2) == 0 {
                version += 1;
                let phase = phases[rng.below(3) as usize];
                if let Some(queries) = core.take_rules(session_rules(version, phase)) {
                    let mut replies = Vec::new();
                    for m in messages(&queries) {
                        model.answer(&m, &mut replies);
                    }
                    for r in replies {
                        assert_eq!(server(&mut core, &r), ToClient::Swallow, "seed {seed}");
                    }
                }
            }
        }
    }
    // The runs went through every path they are meant to cover.
    assert!(
        checks > 0 && changed > 0,
        "checks {checks}, changed {changed}"
    );
    assert!(seen_total.swallowed > 100 && seen_total.replaced > 100);
}

#[test]
fn tally_counts_outcomes_once() {
    let mut core = ready_core("expand");
    client(&mut core, &query("SELECT 1"));
    client(&mut core, &query("COPY users (id, name) FROM STDIN"));
    let t = &mut core.tally;
    assert_eq!(t.statements[StatementOutcome::PassedThrough.index()], 1);
    assert_eq!(t.statements[StatementOutcome::Refused.index()], 1);
    assert!(!t.is_empty());
    t.clear();
    assert!(t.is_empty());
}

// --- search path ---

#[test]
fn the_search_path_is_read_before_statements_and_after_a_change() {
    let mut core = ready_core("expand");
    let probe = core.probe_now().expect("a probe at the start");
    // A named statement, run and closed: a Query would drop the client's
    // unnamed statement.
    assert_eq!(
        tags(&probe),
        vec![PARSE_TAG, BIND_TAG, b'E', SYNC_TAG, CLOSE_TAG, CLOSE_TAG, SYNC_TAG]
    );
    assert!(core.probe_now().is_none(), "one at a time");
    let answer = [
        parse_complete(),
        bind_complete(),
        search::data_row_message(&["{app,public}", "{}"]),
        command_complete("SELECT 1"),
        ready(b'I'),
        close_complete(),
        close_complete(),
        ready(b'I'),
    ];
    for m in &answer {
        assert_eq!(server(&mut core, m), ToClient::Swallow);
    }
    assert!(core.probed());
    assert_eq!(core.search_path.schemas(), ["app", "public"]);
    assert_eq!(core.activity(), Activity::Idle);
    // A statement that may change it: the next batch waits for a new probe.
    client(&mut core, &query("SET search_path TO public"));
    assert!(core.take_settle());
    assert!(core.probe_now().is_none(), "not while the SET is in flight");
    server(&mut core, &command_complete("SET"));
    server(&mut core, &ready(b'I'));
    assert!(core.settled());
    assert!(core.probe_now().is_some());
}

/// Answers a probe of the search path with `schemas` (a text array),
/// outside a transaction block.
fn answer_probe(core: &mut Core, schemas: &str) {
    answer_probe_in(core, schemas, b'I');
}

/// Answers a probe of the search path with `schemas`, ending with
/// ReadyForQuery status `status`.
fn answer_probe_in(core: &mut Core, schemas: &str, status: u8) {
    assert!(core.probe_now().is_some(), "a probe is due");
    for m in [
        search::data_row_message(&[schemas, "{}"]),
        command_complete("SELECT 1"),
        ready(status),
        ready(status),
    ] {
        assert_eq!(server(core, &m), ToClient::Swallow);
    }
    assert!(core.probed());
}

#[test]
fn an_extended_protocol_path_change_settles_at_its_sync() {
    let mut core = ready_core("expand");
    answer_probe(&mut core, "{public}");
    // Parse, Bind, Execute, Sync of a SET, then a statement behind it.
    for m in [parse("", "SET search_path TO app"), bind(""), execute()] {
        client(&mut core, &m);
        assert!(!core.take_settle(), "not before the Sync");
    }
    client(&mut core, &sync());
    assert!(core.take_settle(), "the Sync settles");
    assert!(core.probe_now().is_none(), "not while the SET is in flight");
    for m in [parse_complete(), bind_complete(), command_complete("SET")] {
        server(&mut core, &m);
    }
    server(&mut core, &ready(b'I'));
    assert!(core.settled());
    answer_probe(&mut core, "{app}");
    // A Sync with nothing of the kind in front does not settle.
    for m in [parse("", "SELECT 1"), bind(""), execute(), sync()] {
        client(&mut core, &m);
    }
    assert!(!core.take_settle());
}

#[test]
fn each_run_of_a_prepared_path_change_is_followed() {
    let mut core = ready_core("expand");
    answer_probe(&mut core, "{public}");
    for m in [parse("to_app", "SET search_path TO app"), sync()] {
        client(&mut core, &m);
    }
    assert!(core.take_settle());
    server(&mut core, &parse_complete());
    server(&mut core, &ready(b'I'));
    answer_probe(&mut core, "{public}");
    // Only a Bind names it from now on: each one is looked at.
    assert!(core.client_wants_whole(BIND_TAG));
    for m in [bind("to_app"), execute(), sync()] {
        client(&mut core, &m);
    }
    assert!(core.take_settle());
    for m in [bind_complete(), command_complete("SET"), ready(b'I')] {
        server(&mut core, &m);
    }
    answer_probe(&mut core, "{app}");
    assert_eq!(core.search_path.schemas(), ["app"]);
    client(&mut core, &close_statement("to_app"));
    assert!(!core.statements.any_changes_path());
}

/// A migrate-phase session on path `public` with statement `s1` prepared.
fn with_s1_on_public() -> Core {
    let mut core = ready_core("migrate");
    answer_probe(&mut core, "{public}");
    client(&mut core, &parse("s1", "SELECT name FROM users"));
    client(&mut core, &sync());
    server(&mut core, &parse_complete());
    server(&mut core, &ready(b'I'));
    core
}

#[test]
fn statements_behind_a_bound_set_in_its_pipeline_use_the_path_it_sets() {
    let mut core = with_s1_on_public();
    // One pipeline: a SET, then the statements behind it, then one Sync.
    client(&mut core, &parse("", "SET search_path TO app, public"));
    assert_eq!(
        core.search_path.schemas(),
        ["public"],
        "a Parse runs nothing"
    );
    client(&mut core, &bind(""));
    assert_eq!(
        core.search_path.schemas(),
        ["app", "public"],
        "bound, it runs before what follows it, or nothing after it runs"
    );
    assert!(
        core.statements.any_stale(),
        "s1 is prepared again for that path before its Bind behind the SET"
    );
    for m in [execute(), bind("s1"), execute(), sync()] {
        client(&mut core, &m);
    }
    assert!(core.take_settle());
    for m in [
        parse_complete(),
        bind_complete(),
        command_complete("SET"),
        bind_complete(),
        command_complete("SELECT 0"),
        ready(b'I'),
    ] {
        server(&mut core, &m);
    }
    // The probe behind the Sync reads what holds.
    answer_probe(&mut core, "{app,public}");
    assert_eq!(core.search_path.schemas(), ["app", "public"]);
    // A change pgshim cannot read from the text waits for the probe.
    for m in [parse("", "RESET search_path"), bind("")] {
        client(&mut core, &m);
    }
    assert_eq!(core.search_path.schemas(), ["app", "public"]);
}

#[test]
fn a_new_search_path_prepares_statements_again_before_their_next_use() {
    let mut core = with_s1_on_public();
    client(&mut core, &query("SET search_path TO public, app"));
    assert!(core.take_settle());
    server(&mut core, &command_complete("SET"));
    server(&mut core, &ready(b'I'));
    // The same schemas again: nothing to redo.
    answer_probe(&mut core, "{public}");
    assert!(!core.statements.any_stale());
    client(&mut core, &query("SET search_path TO app, public"));
    server(&mut core, &command_complete("SET"));
    server(&mut core, &ready(b'I'));
    answer_probe(&mut core, "{app,public}");
    assert!(
        core.statements.any_stale(),
        "Postgres analyses it again under the new path, so pgshim rewrites it again"
    );
    assert!(core.client_wants_whole(BIND_TAG));
}

#[test]
fn a_new_search_path_prepares_sql_prepared_statements_again_once_idle() {
    let mut core = ready_core("migrate");
    answer_probe(&mut core, "{public}");
    client(&mut core, &query("PREPARE q AS SELECT name FROM users"));
    server(&mut core, &command_complete("PREPARE"));
    server(&mut core, &ready(b'I'));
    client(
        &mut core,
        &query("BEGIN; SET LOCAL search_path TO app, public"),
    );
    server(&mut core, &command_complete("BEGIN"));
    server(&mut core, &command_complete("SET"));
    server(&mut core, &ready(b'T'));
    answer_probe_in(&mut core, "{app,public}", b'T');
    assert!(
        core.take_path_reprepare().is_none(),
        "not inside the client's transaction block"
    );
    client(&mut core, &query("COMMIT"));
    server(&mut core, &command_complete("COMMIT"));
    server(&mut core, &ready(b'I'));
    answer_probe(&mut core, "{public}");
    let again = core
        .take_path_reprepare()
        .expect("prepared again when idle");
    let again = String::from_utf8_lossy(&again).into_owned();
    assert!(
        again.contains("DEALLOCATE") && again.contains("PREPARE"),
        "{again}"
    );
    assert!(core.take_path_reprepare().is_none(), "once");
    // Two named runs, answered before what the client sends next.
    client(&mut core, &parse("s9", "SELECT 1"));
    for _ in 0..2 {
        for m in [
            parse_complete(),
            bind_complete(),
            command_complete("DEALLOCATE"),
            ready(b'I'),
            close_complete(),
            close_complete(),
            ready(b'I'),
        ] {
            assert_eq!(server(&mut core, &m), ToClient::Swallow);
        }
    }
    assert_eq!(server(&mut core, &parse_complete()), ToClient::Forward);
}

#[test]
fn a_failed_probe_keeps_the_path_and_asks_again_after_the_transaction() {
    let mut core = ready_core("expand");
    client(&mut core, &query("BEGIN"));
    server(&mut core, &command_complete("BEGIN"));
    server(&mut core, &ready(b'T'));
    assert!(core.probe_now().is_some());
    for m in [error("57014", "canceled"), ready(b'E'), ready(b'E')] {
        assert_eq!(server(&mut core, &m), ToClient::Swallow);
    }
    assert_eq!(core.search_path.schemas(), ["public"]);
    assert!(core.probe_now().is_none(), "not in a failed transaction");
    client(&mut core, &query("ROLLBACK"));
    server(&mut core, &command_complete("ROLLBACK"));
    server(&mut core, &ready(b'I'));
    assert!(core.probe_now().is_some());
}
