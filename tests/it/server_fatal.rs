//! After the server's FATAL (`pg_terminate_backend`), the end of the
//! connection is the server's: the client gets that one error and a close,
//! never a second error of pgshim's, however the server's socket ends (a
//! backend that exits with unread input ends it with a reset).
use tokio::io::AsyncWriteExt;

use crate::cancel_tls::until_running;
use crate::client_tls::ssl_request_then_tls;
use crate::support::pg::{cluster, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{
    backend_pid, fields, login, login_over, query, read_to_end, send, trust_startup, Received,
};

async fn terminate(pid: i32) {
    let ok: bool = cluster()
        .admin()
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ok, "backend {pid} terminated");
}

/// Exactly one ErrorResponse, the server's `57P01`.
fn assert_only_the_servers_fatal(got: &Received) {
    let errors: Vec<_> = got.messages.iter().filter(|m| m.tag == b'E').collect();
    let [error] = errors.as_slice() else {
        panic!("expected exactly one error, got {got:?}");
    };
    let f = fields(&error.body);
    assert_eq!(f[&b'C'], "57P01", "{f:?}");
    assert_eq!(f[&b'S'], "FATAL", "{f:?}");
    assert!(!f[&b'M'].starts_with("pgshim:"), "{f:?}");
    assert!(got.trailing.is_empty(), "{got:?}");
}

#[tokio::test]
async fn terminated_backend_then_a_query_gets_one_error() {
    let proxy = proxy().upstream_tls("disable", None).start().await;
    for round in 0..10 {
        let (mut s, msgs) = login(proxy.addr, &trust_startup(TRUST_USER, "fatal_idle")).await;
        terminate(backend_pid(&msgs)).await;
        // The client does not know yet, as with psycopg's `connect_no_check`.
        let _ = s.write_all(&query("BEGIN")).await;
        let got = read_to_end(&mut s).await;
        assert_only_the_servers_fatal(&got);
        assert!(
            got.messages.iter().all(|m| m.tag == b'E'),
            "round {round}: {got:?}"
        );
    }
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn terminated_backend_with_unread_input_ends_with_a_reset_and_one_error() {
    // Plaintext upstream: over TLS the server's close_notify comes before
    // the reset and hides it.
    let proxy = proxy().upstream_tls("disable", None).start().await;
    let (mut s, msgs) = login(proxy.addr, &trust_startup(TRUST_USER, "fatal_reset")).await;
    let pid = backend_pid(&msgs);
    let sql = "SELECT pg_sleep(30)";
    send(&mut s, &query(sql)).await;
    until_running(pid, sql).await;
    // Left unread by the dying backend, so its socket closes with a reset.
    send(&mut s, &query("SELECT 'never read'")).await;
    terminate(pid).await;
    let got = read_to_end(&mut s).await;
    assert_only_the_servers_fatal(&got);
    assert_eq!(got.end, Ok(()), "pgshim closes cleanly: {got:?}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn terminated_backend_over_tls_closes_with_close_notify() {
    let proxy = proxy().client_tls(false).start().await;
    let mut s = ssl_request_then_tls(&proxy).await;
    let msgs = login_over(&mut s, &trust_startup(TRUST_USER, "fatal_tls")).await;
    terminate(backend_pid(&msgs)).await;
    let got = read_to_end(&mut s).await;
    assert_only_the_servers_fatal(&got);
    assert_eq!(got.end, Ok(()), "a TLS close with close_notify: {got:?}");
    proxy.assert_serves_others().await;
}
