//! Authentication is relayed between client and server: trust, md5 and
//! SCRAM-SHA-256 logins work with the right password, and the server's own
//! refusal (SQLSTATE 28P01/28000) reaches the client unchanged otherwise.
use tokio_postgres::error::SqlState;

use crate::support::pg::{cluster, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::{proxy, Proxy};

async fn current_user(proxy: &Proxy, user: &str, password: Option<&str>) -> String {
    let client = proxy
        .connect(user, password)
        .await
        .unwrap_or_else(|e| panic!("{user} should log in through pgshim: {e}"));
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Asserts the login fails with the server's `code`, relayed (not pgshim's).
async fn refused(proxy: &Proxy, user: &str, password: Option<&str>, code: &SqlState) {
    let err = proxy
        .connect(user, password)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} must not log in with password {password:?}"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected the server's ErrorResponse, got {err:?}"));
    assert_eq!(db.code(), code, "{db:?}");
    assert_eq!(db.severity(), "FATAL");
    assert!(
        !db.message().starts_with("pgshim:"),
        "the server's message is relayed unchanged: {db:?}"
    );
    assert!(db.message().contains(user), "{db:?}");
}

#[tokio::test]
async fn roles_use_the_intended_password_methods() {
    // Guards the tests below: md5_user really has an md5 hash and scram_user a SCRAM one.
    let admin = cluster().admin().await;
    let rows = admin
        .query(
            "SELECT rolname::text, left(rolpassword, 13) FROM pg_authid
             WHERE rolname IN ($1, $2) ORDER BY rolname",
            &[&MD5_USER, &SCRAM_USER],
        )
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got[0].0, MD5_USER);
    assert!(got[0].1.starts_with("md5"), "{got:?}");
    assert_eq!(got[1].0, SCRAM_USER);
    assert_eq!(got[1].1, "SCRAM-SHA-256", "{got:?}");
}

#[tokio::test]
async fn trust_login() {
    let proxy = proxy().start().await;
    assert_eq!(current_user(&proxy, TRUST_USER, None).await, TRUST_USER);
}

#[tokio::test]
async fn md5_login_with_right_and_wrong_password() {
    let proxy = proxy().start().await;
    assert_eq!(
        current_user(&proxy, MD5_USER, Some(MD5_PASSWORD)).await,
        MD5_USER
    );
    refused(
        &proxy,
        MD5_USER,
        Some("not-the-password"),
        &SqlState::INVALID_PASSWORD,
    )
    .await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn scram_login_with_right_and_wrong_password() {
    let proxy = proxy().start().await;
    assert_eq!(
        current_user(&proxy, SCRAM_USER, Some(SCRAM_PASSWORD)).await,
        SCRAM_USER
    );
    refused(
        &proxy,
        SCRAM_USER,
        Some("not-the-password"),
        &SqlState::INVALID_PASSWORD,
    )
    .await;
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn scram_login_over_upstream_tls() {
    // pgshim's leg to the server is TLS here, the client's is not: channel
    // binding must not be offered to the client.
    let proxy = proxy().upstream_tls("require", None).start().await;
    let client = proxy
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the upstream leg should be TLS");
}

#[tokio::test]
async fn unknown_role_refused_by_the_server() {
    let proxy = proxy().start().await;
    refused(
        &proxy,
        "no_such_role",
        Some("x"),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
    )
    .await;
    proxy.assert_serves_others().await;
}
