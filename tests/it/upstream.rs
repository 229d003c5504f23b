//! When the server is unreachable or goes away: the client gets an error
//! (pgshim's 08001 naming host:port at connect; the server's own error when
//! its backend is killed) and pgshim keeps serving everyone else.
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::support::pg::{cluster, free_port, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::{eventually, expect_upstream_unreachable, within};

#[tokio::test]
async fn upstream_down_at_connect() {
    let port = free_port();
    let proxy = proxy().upstream("127.0.0.1", port).start().await;
    let message = expect_upstream_unreachable(&proxy, "nothing listens upstream").await;
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the message names the upstream: {message}"
    );
    assert!(
        message.to_lowercase().contains("refused"),
        "the message gives the cause: {message}"
    );
    // And again: one failure does not wedge the proxy.
    let again = proxy
        .connect(TRUST_USER, None)
        .await
        .expect_err("still down");
    assert_eq!(
        again.code(),
        Some(&SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
    );
}

#[tokio::test]
async fn upstream_that_never_answers_times_out() {
    // Accepts TCP connections (the kernel does) but never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let proxy = proxy()
        .upstream("127.0.0.1", port)
        .upstream_tls("require", None)
        .connect_timeout_ms(300)
        .start()
        .await;
    let message = expect_upstream_unreachable(&proxy, "the upstream never answers").await;
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("connect_timeout_ms"), "{message}");
    drop(silent);
}

#[tokio::test]
async fn upstream_backend_killed_mid_query() {
    let proxy = proxy().start().await;
    let bystander = proxy
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    bystander
        .batch_execute("CREATE TEMPORARY TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let victim = proxy.connect(TRUST_USER, None).await.unwrap();
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = cluster().admin().await;
    let sleeping = victim.simple_query("SELECT pg_sleep(30)");
    let killer = async {
        eventually(20, "pg_sleep is running", || async {
            admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[&pid],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 1
        })
        .await;
        let killed: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(killed);
    };
    let (result, ()) = within(25, "killed query returns", async {
        tokio::join!(sleeping, killer)
    })
    .await;
    let err = result.expect_err("the query's backend was terminated");
    // The server's FATAL (57P01) is relayed; a bare close would also be an error.
    if let Some(db) = err.as_db_error() {
        assert_eq!(db.code(), &SqlState::ADMIN_SHUTDOWN, "{db:?}");
    }
    eventually(20, "the client's connection closes", || async {
        victim.is_closed()
    })
    .await;
    assert!(victim.simple_query("SELECT 1").await.is_err());

    // Everyone else is fine: the bystander's session and a new client.
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn upstream_backend_killed_while_idle() {
    let proxy = proxy().start().await;
    let (victim, connection) = proxy.config(TRUST_USER, None).connect(NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = cluster().admin().await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    // Nothing was in flight: the server's FATAL arrives outside any request
    // and must be forwarded at once, then the connection closes.
    let ended = within(20, "the idle client's connection ends", connection)
        .await
        .unwrap();
    let err = ended.expect_err("the connection ends with the server's error");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    assert!(victim.is_closed());
    proxy.assert_serves_others().await;
}
