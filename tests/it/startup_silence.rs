//! Before a valid startup packet pgshim answers only what Postgres answers:
//! a packet length that cannot be right (node-postgres hanging up with a
//! Terminate before its startup packet, an HTTP request) is logged and the
//! connection closed without a reply, in plaintext and inside TLS.
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client_tls::ssl_request_then_tls;
use crate::support::pg::TRUST_USER;
use crate::support::proxy::proxy;
use crate::support::wire::{
    expect_pgshim_error_then_close, expect_silent_close, message, send, startup, trust_startup,
};

#[tokio::test]
async fn terminate_before_startup_is_closed_silently() {
    let proxy = proxy().start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &message(b'X', &[])).await;
    expect_silent_close(&mut s).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn terminate_before_startup_inside_tls_is_closed_silently() {
    let proxy = proxy().client_tls(false).start().await;
    let mut s = ssl_request_then_tls(&proxy).await;
    s.write_all(&message(b'X', &[])).await.unwrap();
    s.flush().await.unwrap();
    expect_silent_close(&mut s).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn half_a_startup_packet_then_close_is_closed_silently() {
    let proxy = proxy().start().await;
    let full = trust_startup(TRUST_USER, "half");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &full[..full.len() / 2]).await;
    s.shutdown().await.unwrap();
    expect_silent_close(&mut s).await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn unsupported_protocol_is_still_answered() {
    // Postgres answers this one itself, with a FATAL naming the versions.
    let proxy = proxy().start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &startup((4, 0), &[("user", TRUST_USER)])).await;
    let text = expect_pgshim_error_then_close(&mut s, "08P01").await;
    assert!(text.contains("unsupported frontend protocol"), "{text}");
}
