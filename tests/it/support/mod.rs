//! Test harness: a throwaway Postgres cluster ([`pg`]), test certificates
//! ([`certs`]), an in-process pgshim ([`proxy`]), raw protocol helpers
//! ([`wire`]) and the external clients `psql`/`pgbench` ([`tools`]).
pub mod binary;
pub mod certs;
pub mod fleet;
pub mod ops;
pub mod pg;
pub mod proxy;
pub mod reloadable;
pub mod rules;
pub mod tools;
pub mod wire;

use std::future::Future;
use std::time::Duration;

/// Runs `fut`, panicking with `what` if it takes longer than `secs` seconds.
/// The limits are generous upper bounds so a hang fails instead of blocking
/// the run; no test depends on how fast anything is.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// Polls `check` every 50 ms until it returns true, panicking after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {secs} s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name unique within this test run, for tables and databases that outlive
/// a session.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects with tokio-postgres (no TLS) and drives the connection in a task.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects through `proxy` as the trust user, expects pgshim's 08001
/// refusal (`why` says why the connection must fail) and returns its message.
pub async fn expect_upstream_unreachable(proxy: &proxy::Proxy, why: &str) -> String {
    use tokio_postgres::error::SqlState;
    let err = within(20, "connect", proxy.connect(pg::TRUST_USER, None))
        .await
        .expect_err(why);
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected pgshim's ErrorResponse, got {err:?}"));
    assert_eq!(
        db.code(),
        &SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        "{db:?}"
    );
    assert!(db.message().starts_with("pgshim:"), "{db:?}");
    db.message().to_owned()
}
