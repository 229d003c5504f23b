//! TLS on both legs, without psql: `[tls] required` refuses plaintext clients
//! with a clear error, and `[upstream] tls = "verify-full"` checks the server
//! certificate against `ca_file` and the host name. (psql over client TLS is
//! in `psql.rs`.)
use tokio_postgres::error::SqlState;

use crate::support::certs::certs;
use crate::support::expect_upstream_unreachable;
use crate::support::pg::{cluster, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::{proxy, Proxy};

async fn upstream_ssl(proxy: &Proxy) -> bool {
    let client = proxy
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn plaintext_client_refused_when_tls_required() {
    let proxy = proxy().client_tls(true).start().await;
    let err = proxy
        .connect(TRUST_USER, None)
        .await
        .expect_err("plaintext must be refused");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected pgshim's ErrorResponse, got {err:?}"));
    assert_eq!(
        db.code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        "{db:?}"
    );
    assert!(db.message().starts_with("pgshim:"), "{db:?}");
    assert!(db.message().contains("TLS"), "{db:?}");
}

#[tokio::test]
async fn plaintext_client_allowed_when_tls_optional() {
    let proxy = proxy().client_tls(false).start().await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn upstream_verify_full_with_wrong_host_name() {
    // The server's certificate names `localhost`; 127.0.0.1 is not in it.
    let port = cluster().port;
    let proxy = proxy()
        .upstream("127.0.0.1", port)
        .upstream_tls("verify-full", Some(&certs().ca))
        .start()
        .await;
    let text =
        expect_upstream_unreachable(&proxy, "the upstream certificate must be rejected").await;
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.to_lowercase().contains("certificate"),
        "the cause is the certificate: {text}"
    );
}

#[tokio::test]
async fn upstream_verify_full_with_wrong_ca() {
    let proxy = proxy()
        .upstream("localhost", cluster().port)
        .upstream_tls("verify-full", Some(&certs().other_ca))
        .start()
        .await;
    let text =
        expect_upstream_unreachable(&proxy, "the upstream certificate must be rejected").await;
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn upstream_verify_full_with_right_host_name() {
    let proxy = proxy()
        .upstream("localhost", cluster().port)
        .upstream_tls("verify-full", Some(&certs().ca))
        .start()
        .await;
    assert!(upstream_ssl(&proxy).await, "the upstream leg should be TLS");
}

#[tokio::test]
async fn upstream_tls_disable_and_require() {
    let plain = proxy().upstream_tls("disable", None).start().await;
    assert!(!upstream_ssl(&plain).await);
    let tls = proxy().upstream_tls("require", None).start().await;
    assert!(upstream_ssl(&tls).await);
}
