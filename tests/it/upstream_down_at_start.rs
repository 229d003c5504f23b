//! `pgshim serve` starts while Postgres is down: it listens, refuses clients
//! with 08001, `/healthz` names the catalog checks it waits for, and once
//! Postgres answers the rules become active without a reload.
//!
//! "Postgres starts" is a TCP relay to the shared test cluster, opened on the
//! port pgshim was pointed at.
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::error::SqlState;

use crate::reload_triggers::{fixture, rule, view, EXPAND_VIEW};
use crate::support::binary::Binary;
use crate::support::pg::{client_config, cluster, free_port, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::reloadable::{http, Reloadable};
use crate::support::{eventually, within};

/// Relays every connection on `listener` to the test cluster.
async fn relay(listener: TcpListener) {
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(("127.0.0.1", cluster().port)).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_before_postgres_and_activates_rules_when_it_answers() {
    let db = fixture("pg_down").await;
    let id = format!("{}-ab", db.name);
    let port = free_port();
    let pgshim = Reloadable::start(
        proxy().upstream("127.0.0.1", port).connect_timeout_ms(500),
        &rule(&db, &id, "expand"),
    )
    .await;

    let (status, body) = http(pgshim.admin.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog check"), "{body}");
    assert!(body.contains(&db.name), "{body}");

    let err = within(
        20,
        "connect",
        crate::support::connect(&pgshim.config(&db.name)),
    )
    .await
    .expect_err("Postgres is not there yet");
    let db_err = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected pgshim's ErrorResponse, got {err:?}"));
    assert_eq!(
        db_err.code(),
        &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        "{db_err:?}"
    );
    assert!(db_err.message().starts_with("pgshim:"), "{db_err:?}");

    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the port pgshim points at");
    let relay = tokio::spawn(relay(listener));
    eventually(30, "/healthz is 200 once Postgres answers", || async {
        http(pgshim.admin.addr, "GET", "/healthz", None).await.0 == 200
    })
    .await;
    let client = pgshim.connect(&db.name).await;
    // Straight from Postgres the row reads `old|new`: the rule rewrites `b`.
    assert_eq!(view(&client).await, EXPAND_VIEW, "the rule is active");
    relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_running_while_postgres_is_down_and_exits_0_on_sigterm() {
    let db = fixture("pg_down_bin").await;
    let id = format!("{}-ab", db.name);
    let closed = free_port();
    let settings = proxy()
        .upstream("127.0.0.1", closed)
        .connect_timeout_ms(500)
        .rules(&rule(&db, &id, "expand"));
    // `start` panics if the process exits before it listens.
    let mut pgshim = Binary::start(settings, &[]).await;
    let cfg = client_config("127.0.0.1", pgshim.port, TRUST_USER, None);
    let err = within(20, "connect", crate::support::connect(&cfg))
        .await
        .expect_err("Postgres is not there");
    let code = err.as_db_error().map(|e| e.code().clone());
    assert_eq!(
        code,
        Some(SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
        "{err:?}"
    );
    assert!(
        pgshim.child.try_wait().unwrap().is_none(),
        "{}",
        pgshim.log_text()
    );
    pgshim.signal("TERM");
    let status = pgshim.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", pgshim.log_text());
}
