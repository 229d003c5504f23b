//! CancelRequest inside TLS, as libpq 17 sends it with `sslmode=prefer` or
//! stronger: pgshim forwards it as it does in plaintext and then closes the
//! cancel connection with close_notify (libpq reports a close without it as
//! `SSL error: unexpected eof while reading`). Also psql's own cancel
//! (Ctrl-C, a SIGINT) of a TLS session through a pgshim that requires TLS.
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client_tls::ssl_request_then_tls;
use crate::support::binary::signal;
use crate::support::pg::{cluster, DB, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::tools::command;
use crate::support::wire::{
    backend_pid, cancel_request, expect_silent_close, fields, login_over, message, query,
    read_until, request, trust_startup, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};
use crate::support::{eventually, unique_name, within};

/// Waits until backend `pid` is executing `sql`.
pub(crate) async fn until_running(pid: i32, sql: &str) {
    let admin = cluster().admin().await;
    eventually(20, "the statement is running", || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE pid = $1 AND state = 'active' AND query = $2",
                &[&pid, &sql],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
}

/// How many backends named `app` are running `sql`.
async fn running_named(app: &str, sql: &str) -> i64 {
    cluster()
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active' AND query = $2",
            &[&app, &sql],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn cancel_request_inside_tls_is_forwarded_and_closed_cleanly() {
    let proxy = proxy().client_tls(false).start().await;
    let mut session = ssl_request_then_tls(&proxy).await;
    let login = login_over(&mut session, &trust_startup(TRUST_USER, "cancel_tls")).await;
    let sql = "SELECT pg_sleep(30)";
    session.write_all(&query(sql)).await.unwrap();
    session.flush().await.unwrap();
    until_running(backend_pid(&login), sql).await;

    // What libpq 17's PQcancelBlocking does: TLS first, then the
    // CancelRequest, then wait for the server to close.
    let mut cancel = ssl_request_then_tls(&proxy).await;
    cancel.write_all(&cancel_request(&login)).await.unwrap();
    cancel.flush().await.unwrap();
    expect_silent_close(&mut cancel).await;

    let got = read_until(&mut session, |m| m.tag == b'Z').await;
    let error = got
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("the sleep should have been cancelled: {got:?}"));
    assert_eq!(fields(&error.body)[&b'C'], "57014", "{got:?}");

    // The session goes on, and ends with close_notify after Terminate.
    session.write_all(&query("SELECT 1")).await.unwrap();
    let got = read_until(&mut session, |m| m.tag == b'Z').await;
    assert!(got.iter().any(|m| m.tag == b'D'), "{got:?}");
    session.write_all(&message(b'X', &[])).await.unwrap();
    session.flush().await.unwrap();
    expect_silent_close(&mut session).await;
}

#[tokio::test]
async fn cancel_request_inside_tls_after_a_gssenc_refusal() {
    // libpq's `gssencmode=prefer` asks for GSS encryption first; refused, it
    // asks for TLS and sends the CancelRequest inside it.
    let proxy = proxy().client_tls(true).start().await;
    let mut session = ssl_request_then_tls(&proxy).await;
    let login = login_over(&mut session, &trust_startup(TRUST_USER, "cancel_gss")).await;
    let sql = "SELECT pg_sleep(30)";
    session.write_all(&query(sql)).await.unwrap();
    session.flush().await.unwrap();
    until_running(backend_pid(&login), sql).await;

    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    for (code, expected) in [(GSSENC_REQUEST_CODE, b'N'), (SSL_REQUEST_CODE, b'S')] {
        tcp.write_all(&request(code)).await.unwrap();
        let answer = within(20, "answer to the request", tcp.read_u8())
            .await
            .unwrap();
        assert_eq!(answer, expected, "answer to request code {code}");
    }
    let mut cancel = crate::client_tls::tls_over(tcp).await;
    cancel.write_all(&cancel_request(&login)).await.unwrap();
    cancel.flush().await.unwrap();
    expect_silent_close(&mut cancel).await;

    let got = read_until(&mut session, |m| m.tag == b'Z').await;
    assert!(
        got.iter()
            .any(|m| m.tag == b'E' && fields(&m.body)[&b'C'] == "57014"),
        "the sleep should have been cancelled: {got:?}"
    );
}

#[tokio::test]
async fn psql_ctrl_c_cancels_a_tls_session_when_tls_is_required() {
    let proxy = proxy().client_tls(true).start().await;
    let app = unique_name("psql_cancel");
    let sql = "SELECT pg_sleep(30)";
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname={DB} user={TRUST_USER} sslmode=require application_name={app}",
        proxy.port()
    );
    let child = command("psql", &["-X", "-d", &conninfo, "-c", sql], None)
        .spawn()
        .expect("start psql");
    eventually(20, "psql's statement is running", || async {
        running_named(&app, sql).await == 1
    })
    .await;
    // psql answers SIGINT by having libpq send a CancelRequest.
    signal(&child, "INT");
    let out = within(
        20,
        "psql returns after its cancel",
        child.wait_with_output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql should report the cancel: {stderr}"
    );
    assert!(!stderr.contains("SSL"), "no TLS error: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}
