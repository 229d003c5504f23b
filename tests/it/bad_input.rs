//! Malformed client input over raw TCP: each bad client gets a FATAL
//! ErrorResponse from pgshim (SQLSTATE 08P01, message starting `pgshim:`)
//! where Postgres would answer too (a startup packet whose length cannot be
//! right is closed without a reply), is disconnected, and leaves everyone
//! else alone.
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::pg::{backends_named, TRUST_USER};
use crate::support::proxy::{proxy, Proxy};
use crate::support::wire::{
    expect_pgshim_error_then_close, expect_silent_close, fields, login, message, query,
    read_to_end, read_until, request, send, startup, trust_startup, untagged, SSL_REQUEST_CODE,
};
use crate::support::{eventually, unique_name};

/// Sends `bytes` as a fresh connection's first write and expects pgshim's
/// 08P01 error and a close; returns the message.
async fn rejected(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, bytes).await;
    expect_pgshim_error_then_close(&mut s, "08P01").await
}

/// Sends `bytes` as a fresh connection's first write and expects a close
/// without a reply, as Postgres gives a packet length it cannot accept.
async fn closed_silently(proxy: &Proxy, bytes: &[u8]) {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, bytes).await;
    expect_silent_close(&mut s).await;
}

/// Logs in over raw TCP with a unique application_name, returning both.
async fn logged_in(proxy: &Proxy) -> (TcpStream, String) {
    let app = unique_name("bad_input");
    let (s, _) = login(proxy.addr, &trust_startup(TRUST_USER, &app)).await;
    (s, app)
}

async fn backend_gone(app: &str) {
    eventually(
        20,
        "the server backend of a rejected client exits",
        || async { backends_named(app).await == 0 },
    )
    .await;
}

/// Deterministic pseudo-random bytes (xorshift64).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn negative_length_in_startup() {
    let proxy = proxy().start().await;
    let mut bytes = (-5i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&196_608i32.to_be_bytes());
    closed_silently(&proxy, &bytes).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn oversized_length_in_startup() {
    let proxy = proxy().start().await;
    let mut bytes = 1_000_000i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&196_608i32.to_be_bytes());
    bytes.extend_from_slice(b"user\0x\0");
    closed_silently(&proxy, &bytes).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn unknown_startup_code() {
    let proxy = proxy().start().await;
    rejected(&proxy, &untagged(&12_345_678i32.to_be_bytes())).await;
    // Protocol 2.0 is an unknown code too.
    rejected(&proxy, &startup((2, 0), &[("user", TRUST_USER)])).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn startup_parameters_without_terminator() {
    let proxy = proxy().start().await;
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0trust_user");
    rejected(&proxy, &untagged(&body)).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn http_request_instead_of_startup() {
    let proxy = proxy().start().await;
    closed_silently(&proxy, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn random_garbage_instead_of_startup() {
    let proxy = proxy().start().await;
    for seed in 1..=8 {
        let bytes = garbage(seed, 300);
        let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        assert!(
            !(8..=10_000).contains(&len),
            "seed {seed} happens to start with a plausible length; pick another"
        );
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        send(&mut s, &bytes).await;
        s.shutdown().await.unwrap();
        expect_silent_close(&mut s).await;
    }
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn truncated_startup_then_close() {
    let proxy = proxy().start().await;
    let full = trust_startup(TRUST_USER, "truncated");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &full[..full.len() / 2]).await;
    s.shutdown().await.unwrap();
    // The client has gone; pgshim may still say why (as a `pgshim:` error),
    // or just close, as Postgres does for an incomplete startup packet.
    let got = read_to_end(&mut s).await;
    assert!(got.trailing.is_empty(), "{got:?}");
    assert!(got.messages.len() <= 1, "{got:?}");
    if let Some(m) = got.messages.first() {
        assert_eq!(m.tag, b'E', "{got:?}");
        let f = fields(&m.body);
        assert!(f[&b'M'].starts_with("pgshim:"), "{f:?}");
    }
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn ssl_request_followed_by_plaintext_in_the_same_write() {
    let proxy = proxy().client_tls(false).start().await;
    let mut bytes = request(SSL_REQUEST_CODE);
    bytes.extend(trust_startup(TRUST_USER, "sneaky"));
    // No 'S': the bytes after the SSLRequest would otherwise be read as if
    // they had been encrypted (CVE-2021-23214).
    let text = rejected(&proxy, &bytes).await;
    assert!(text.contains("unencrypted"), "{text}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn negative_length_after_login() {
    let proxy = proxy().start().await;
    let (mut s, app) = logged_in(&proxy).await;
    let mut bytes = vec![b'Q'];
    bytes.extend_from_slice(&(-1i32).to_be_bytes());
    send(&mut s, &bytes).await;
    expect_pgshim_error_then_close(&mut s, "08P01").await;
    backend_gone(&app).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn length_below_four_after_login() {
    let proxy = proxy().start().await;
    let (mut s, app) = logged_in(&proxy).await;
    send(&mut s, &[b'Q', 0, 0, 0, 2]).await;
    expect_pgshim_error_then_close(&mut s, "08P01").await;
    backend_gone(&app).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn oversized_message_after_login() {
    let proxy = proxy().limit("max_message_bytes", 1024).start().await;
    let (mut s, app) = logged_in(&proxy).await;
    // Under the limit: fine.
    let sql = format!("SELECT '{}'", "a".repeat(900));
    send(&mut s, &query(&sql)).await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert!(got.iter().any(|m| m.tag == b'D'), "{got:?}");
    // Over it: refused from the header alone, before the body arrives.
    let mut bytes = vec![b'Q'];
    bytes.extend_from_slice(&1_000_000i32.to_be_bytes());
    bytes.extend_from_slice(b"SELECT 1");
    send(&mut s, &bytes).await;
    let text = expect_pgshim_error_then_close(&mut s, "08P01").await;
    assert!(text.contains("1024") || text.contains("1000000"), "{text}");
    backend_gone(&app).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn truncated_message_after_login_then_close() {
    let proxy = proxy().start().await;
    let (mut s, app) = logged_in(&proxy).await;
    let whole = query("SELECT 'this message is cut short'");
    send(&mut s, &whole[..12]).await;
    s.shutdown().await.unwrap();
    let got = read_to_end(&mut s).await;
    assert!(
        got.messages.iter().all(|m| m.tag == b'E'),
        "nothing but an error after a half-sent query: {got:?}"
    );
    backend_gone(&app).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn unknown_message_type_after_login_gets_the_servers_error() {
    let proxy = proxy().start().await;
    let (mut s, app) = logged_in(&proxy).await;
    // Well framed but meaningless: pgshim forwards it and relays the
    // server's own protocol error.
    send(&mut s, &message(0x01, b"junk")).await;
    let got = read_to_end(&mut s).await;
    let error = got
        .messages
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("expected the server's error: {got:?}"));
    let f = fields(&error.body);
    assert_eq!(f[&b'C'], "08P01", "{f:?}");
    assert!(!f[&b'M'].starts_with("pgshim:"), "{f:?}");
    backend_gone(&app).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn bad_clients_do_not_disturb_an_open_transaction() {
    let proxy = proxy().limit("max_message_bytes", 4096).start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE t (id int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    for seed in 10..20 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        send(&mut s, &garbage(seed, 64)).await;
        s.shutdown().await.unwrap();
        let _ = read_to_end(&mut s).await;
    }
    let (mut s, _) = logged_in(&proxy).await;
    send(&mut s, &[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
    expect_pgshim_error_then_close(&mut s, "08P01").await;
    client
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}
