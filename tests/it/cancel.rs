//! CancelRequest through pgshim: forwarded to the server with the key as
//! received, so it works through the same pgshim and through another one
//! (as behind a load balancer).
use std::future::Future;

use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::support::certs::certs;
use crate::support::pg::{cluster, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{read_to_end, send};
use crate::support::within;

/// Runs `SELECT pg_sleep(secs)` on `client`, calls `cancel` once the server
/// is executing it, and returns the query's outcome.
async fn sleep_and<F: Future<Output = ()>>(
    client: &Client,
    secs: u32,
    cancel: F,
) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sql = format!("SELECT pg_sleep({secs})");
    let sleeping = client.simple_query(&sql);
    let canceller = async {
        crate::cancel_tls::until_running(pid, &sql).await;
        cancel.await;
    };
    let (result, ()) = within(25, "pg_sleep returns", async {
        tokio::join!(sleeping, canceller)
    })
    .await;
    result
}

#[tokio::test]
async fn cancel_through_the_same_proxy() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let token = client.cancel_token();
    let err = sleep_and(&client, 30, async {
        token
            .cancel_query(NoTls)
            .await
            .expect("send CancelRequest to pgshim");
    })
    .await
    .expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    // The session goes on after the cancel.
    let row = client.query_one("SELECT 'alive'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "alive");
}

#[tokio::test]
async fn cancel_through_another_proxy_instance() {
    let first = proxy().start().await;
    let second = proxy().start().await;
    let client = first
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    let token = client.cancel_token();
    let err = sleep_and(&client, 30, async {
        let tcp = TcpStream::connect(second.addr).await.unwrap();
        token
            .cancel_query_raw(tcp, NoTls)
            .await
            .expect("send CancelRequest to the second pgshim");
    })
    .await
    .expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn cancel_with_a_wrong_key_cancels_nothing() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let result = sleep_and(&client, 2, async {
        // A CancelRequest for the right backend with a made-up key.
        let mut packet = 16i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80_877_102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&0x5eed_1234i32.to_be_bytes());
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        send(&mut tcp, &packet).await;
        let got = read_to_end(&mut tcp).await;
        assert!(
            got.messages.is_empty(),
            "no reply to a CancelRequest: {got:?}"
        );
    })
    .await;
    result.expect("a wrong cancel key must not cancel anything");
}

#[tokio::test]
async fn cancel_over_verified_upstream_tls() {
    // The CancelRequest goes upstream with the sessions' TLS policy.
    let proxy = proxy()
        .upstream("localhost", cluster().port)
        .upstream_tls("verify-full", Some(&certs().ca))
        .start()
        .await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let token = client.cancel_token();
    let err = sleep_and(&client, 30, async {
        token.cancel_query(NoTls).await.expect("send CancelRequest");
    })
    .await
    .expect_err("pg_sleep(30) should have been cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
}
