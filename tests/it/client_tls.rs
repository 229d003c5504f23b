//! Client-facing TLS driven from Rust with rustls (tokio-postgres on top):
//! SSLRequest then TLS, PostgreSQL 17 direct TLS with ALPN `postgresql`, and
//! the handshakes pgshim must refuse (direct TLS without ALPN, a second
//! SSLRequest inside TLS).
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::certs::certs;
use crate::support::pg::{SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::{proxy, Proxy};
use crate::support::wire::{expect_pgshim_error_then_close, request, SSL_REQUEST_CODE};
use crate::support::within;

/// A rustls connector trusting the test CA, offering `alpn` if given.
fn connector(alpn: Option<&[u8]>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&certs().ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    TlsConnector::from(Arc::new(config))
}

/// TLS to pgshim after an SSLRequest (the classic way).
pub(crate) async fn ssl_request_then_tls(proxy: &Proxy) -> TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    let answer = within(20, "SSLRequest answer", tcp.read_u8())
        .await
        .unwrap();
    assert_eq!(answer, b'S', "pgshim with [tls] accepts TLS");
    tls_over(tcp).await
}

/// The TLS handshake with pgshim on `tcp`, once pgshim expects it.
pub(crate) async fn tls_over(tcp: TcpStream) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    within(20, "TLS handshake", connector(None).connect(name, tcp))
        .await
        .expect("TLS handshake with pgshim, verified against the test CA")
}

/// TLS to pgshim from the first byte (PostgreSQL 17 `sslnegotiation=direct`).
async fn direct_tls(proxy: &Proxy, alpn: Option<&[u8]>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    within(
        20,
        "direct TLS handshake",
        connector(alpn).connect(name, tcp),
    )
    .await
    .expect("direct TLS handshake with pgshim")
}

/// Runs a query with tokio-postgres over an already-encrypted stream.
async fn query_over(
    stream: TlsStream<TcpStream>,
    proxy: &Proxy,
    user: &str,
    password: Option<&str>,
) {
    let (client, connection) = proxy
        .config(user, password)
        .connect_raw(stream, NoTls)
        .await
        .expect("log in over TLS");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT $1::text", &[&"over tls"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "over tls");
}

#[tokio::test]
async fn ssl_request_then_tls_then_scram() {
    let proxy = proxy().client_tls(true).start().await;
    let tls = ssl_request_then_tls(&proxy).await;
    query_over(tls, &proxy, SCRAM_USER, Some(SCRAM_PASSWORD)).await;
}

#[tokio::test]
async fn direct_tls_with_alpn() {
    let proxy = proxy().client_tls(true).start().await;
    let tls = direct_tls(&proxy, Some(b"postgresql")).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    query_over(tls, &proxy, TRUST_USER, None).await;
}

#[tokio::test]
async fn direct_tls_without_alpn_refused() {
    let proxy = proxy().client_tls(false).start().await;
    let mut tls = direct_tls(&proxy, None).await;
    let text = expect_pgshim_error_then_close(&mut tls, "08P01").await;
    assert!(text.contains("ALPN"), "{text}");
    proxy.assert_serves_others().await;
}

#[tokio::test]
async fn second_ssl_request_inside_tls_refused() {
    let proxy = proxy().client_tls(false).start().await;
    let mut tls = ssl_request_then_tls(&proxy).await;
    tls.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    tls.flush().await.unwrap();
    expect_pgshim_error_then_close(&mut tls, "08P01").await;
    proxy.assert_serves_others().await;
}
