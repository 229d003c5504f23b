//! Graceful shutdown: the `pgshim` binary on SIGTERM/SIGINT stops accepting,
//! lets an open transaction finish, then exits 0; in-process, `serve` returns
//! once its shutdown future completes and sessions are done.
use tokio::net::TcpStream;

use crate::support::binary::Binary;
use crate::support::pg::{client_config, cluster, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::{connect, eventually, unique_name, within};

#[tokio::test]
async fn sigterm_lets_the_open_transaction_commit_then_exits_0() {
    let mut pgshim = Binary::start(proxy().limit("shutdown_timeout_ms", 30_000), &[]).await;
    let table = unique_name("shutdown_rows");
    let client = connect(&client_config("127.0.0.1", pgshim.port, TRUST_USER, None))
        .await
        .expect("connect through the pgshim binary");
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();

    pgshim.signal("TERM");

    // New connections are refused...
    eventually(20, "pgshim stops accepting after SIGTERM", || async {
        TcpStream::connect(("127.0.0.1", pgshim.port))
            .await
            .is_err()
    })
    .await;
    // ...while the process waits for the open transaction.
    assert!(
        pgshim.child.try_wait().unwrap().is_none(),
        "pgshim exited with a transaction open:\n{}",
        pgshim.log_text()
    );
    client
        .batch_execute(&format!("INSERT INTO {table} VALUES (2); COMMIT"))
        .await
        .expect("the open transaction can still commit after SIGTERM");
    drop(client);

    let status = pgshim.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        pgshim.log_text()
    );

    let admin = cluster().admin().await;
    let n: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both rows of the transaction are committed");
    admin
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn idle_session_is_told_and_closed_on_sigint() {
    let mut pgshim = Binary::start(proxy().limit("shutdown_timeout_ms", 30_000), &[]).await;
    let client = connect(&client_config("127.0.0.1", pgshim.port, TRUST_USER, None))
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    pgshim.signal("INT");
    // Idle: nothing to wait for, so the session ends and the process exits.
    let status = pgshim.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        pgshim.log_text()
    );
    eventually(20, "the idle client is disconnected", || async {
        client.is_closed()
    })
    .await;
}

#[tokio::test]
async fn transaction_past_shutdown_timeout_is_closed() {
    let mut pgshim = Binary::start(proxy().limit("shutdown_timeout_ms", 500), &[]).await;
    let client = connect(&client_config("127.0.0.1", pgshim.port, TRUST_USER, None))
        .await
        .unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE t (id int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    pgshim.signal("TERM");
    // The transaction never finishes: pgshim gives up after shutdown_timeout_ms.
    let status = pgshim.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        pgshim.log_text()
    );
    eventually(20, "the client is disconnected", || async {
        client.is_closed()
    })
    .await;
}

#[tokio::test]
async fn in_process_serve_returns_after_the_transaction_ends() {
    let proxy = proxy().limit("shutdown_timeout_ms", 30_000).start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE t (id int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let addr = proxy.addr;
    let stopped = tokio::spawn(proxy.stop());
    eventually(20, "the listener closes", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        !stopped.is_finished(),
        "serve returned with a transaction open"
    );
    client.batch_execute("COMMIT").await.unwrap();
    let result = within(20, "serve returns", stopped).await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    eventually(20, "the client is disconnected", || async {
        client.is_closed()
    })
    .await;
}
