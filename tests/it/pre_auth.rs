//! Before Postgres has accepted a login, a client's messages go to Postgres
//! as they are, capped as Postgres caps them: nothing reaches the rewriter,
//! and a message pipelined behind the startup packet waits for the login and
//! is then rewritten like any other.
use tokio::net::TcpStream;

use crate::support::pg::{SCRAM_USER, TRUST_USER};
use crate::support::rules::Db;
use crate::support::wire::{
    expect_pgshim_error_then_close, fields, query, read_to_end, read_until, send, startup,
};

const SETUP: &str = "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);
INSERT INTO users VALUES (1, 'old', 'new');";

/// Contract: an old-shape read that is rewritten reads `new`; one forwarded
/// unrewritten would read `old`.
const RULE: &str = r#"
[[rule]]
id = "users-full-name"
table = "users"
old = "name"
new = "full_name"
phase = "contract"
"#;

/// Connects as [`SCRAM_USER`] and reads up to the SASL challenge.
async fn at_sasl_challenge(addr: std::net::SocketAddr, database: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(
        &mut s,
        &startup((3, 0), &[("user", SCRAM_USER), ("database", database)]),
    )
    .await;
    let seen = read_until(&mut s, |m| m.tag == b'R' || m.tag == b'E').await;
    let last = seen.last().unwrap();
    assert_eq!(last.tag, b'R', "{seen:?}");
    assert_eq!(&last.body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    s
}

#[tokio::test]
async fn a_query_instead_of_the_sasl_answer_never_reaches_the_rewriter() {
    let db = Db::create("preauth", SETUP).await;
    let proxy = proxy_for(&db)
        .limit("startup_timeout_ms", 2_000)
        .start()
        .await;
    let mut s = at_sasl_challenge(proxy.addr, &db.name).await;
    // Too deep to rewrite: had it reached the rewriter, pgshim would answer 0A000.
    let deep = format!("SELECT {} FROM users", vec!["1"; 50_000].join("+"));
    send(&mut s, &query(&deep)).await;
    let got = read_to_end(&mut s).await;
    for m in got.messages.iter().filter(|m| m.tag == b'E') {
        let f = fields(&m.body);
        assert_ne!(f.get(&b'C').map(String::as_str), Some("0A000"), "{f:?}");
    }
    assert!(got.messages.iter().all(|m| m.tag != b'T' && m.tag != b'D'));
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn oversized_messages_before_authentication_are_refused_at_the_header() {
    let db = Db::create("preauth_big", SETUP).await;
    let proxy = proxy_for(&db).start().await;
    for tag in [b'p', b'P', b'Q'] {
        let mut s = at_sasl_challenge(proxy.addr, &db.name).await;
        // A header announcing 127 MiB and a few body bytes: refused before
        // anything the length announces is held.
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&(127i32 * 1024 * 1024).to_be_bytes());
        bytes.extend_from_slice(b"n,,n=,r=abc");
        send(&mut s, &bytes).await;
        let text = expect_pgshim_error_then_close(&mut s, "08P01").await;
        assert!(text.contains("65535"), "{text}");
    }
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn a_query_pipelined_behind_the_startup_packet_is_rewritten() {
    let db = Db::create("preauth_pipe", SETUP).await;
    let proxy = proxy_for(&db).start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]);
    bytes.extend(query("SELECT name FROM users WHERE id = 1"));
    send(&mut s, &bytes).await;
    // The login's ReadyForQuery, then the query's.
    let mut got = read_until(&mut s, |m| m.tag == b'Z').await;
    got.extend(read_until(&mut s, |m| m.tag == b'Z').await);
    let rows: Vec<String> = got
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| String::from_utf8_lossy(&m.body[6..]).into_owned())
        .collect();
    assert_eq!(rows, vec!["new".to_owned()], "{got:?}");
}

fn proxy_for(db: &Db) -> crate::support::proxy::ProxyBuilder {
    db.proxy(RULE)
}
