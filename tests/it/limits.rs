//! `[limits]`: the connection cap (53300 for the client over it) and the
//! startup timeout (a client that does not finish startup is closed).
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;

use crate::support::pg::{SCRAM_USER, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{read_to_end, read_until, send, startup};
use crate::support::{eventually, within};

#[tokio::test]
async fn connection_over_max_connections_gets_53300() {
    let proxy = proxy().limit("max_connections", 2).start().await;
    let first = proxy.connect(TRUST_USER, None).await.unwrap();
    let second = proxy.connect(TRUST_USER, None).await.unwrap();
    let err = within(20, "third connect", proxy.connect(TRUST_USER, None))
        .await
        .expect_err("a third client exceeds max_connections = 2");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected pgshim's ErrorResponse, got {err:?}"));
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS, "{db:?}");
    assert!(db.message().starts_with("pgshim:"), "{db:?}");
    // The two admitted clients are unaffected.
    for c in [&first, &second] {
        c.batch_execute("SELECT 1").await.unwrap();
    }
    // A slot frees up when a client leaves.
    drop(first);
    eventually(20, "a client is admitted after another left", || async {
        proxy.connect(TRUST_USER, None).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn silent_client_closed_after_startup_timeout() {
    let proxy = proxy().limit("startup_timeout_ms", 300).start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Send nothing at all.
    let got = read_to_end(&mut s).await;
    assert!(got.trailing.is_empty(), "{got:?}");
    // Nothing was asked, so nothing need be answered; if pgshim says
    // anything it is its own error.
    assert!(got.messages.iter().all(|m| m.tag == b'E'), "{got:?}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn partial_startup_closed_after_startup_timeout() {
    let proxy = proxy().limit("startup_timeout_ms", 300).start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &100i32.to_be_bytes()).await;
    let got = read_to_end(&mut s).await;
    assert!(got.messages.iter().all(|m| m.tag == b'E'), "{got:?}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn authentication_not_finished_in_time_is_closed() {
    let proxy = proxy().limit("startup_timeout_ms", 500).start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(
        &mut s,
        &startup(
            (3, 0),
            &[("user", SCRAM_USER), ("database", crate::support::pg::DB)],
        ),
    )
    .await;
    // The server asks for SCRAM; the client never answers.
    let got = read_until(&mut s, |m| m.tag == b'R').await;
    assert_eq!(
        got.last().unwrap().body[..4],
        10i32.to_be_bytes(),
        "AuthenticationSASL"
    );
    let rest = read_to_end(&mut s).await;
    let error = rest
        .messages
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("expected an error before the close: {rest:?}"));
    let f = crate::support::wire::fields(&error.body);
    assert!(f[&b'M'].starts_with("pgshim:"), "{f:?}");
    assert_eq!(f[&b'C'], "57014", "{f:?}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn startup_timeout_does_not_apply_after_login() {
    let proxy = proxy().limit("startup_timeout_ms", 300).start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    // Idle, then busy, well past the startup timeout.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        !client.is_closed(),
        "a logged-in idle session was closed at startup_timeout_ms"
    );
    client
        .batch_execute("SELECT pg_sleep(0.5)")
        .await
        .expect("a logged-in session must outlive startup_timeout_ms");
    assert!(!client.is_closed());
}
