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

/// A TCP stream that notes the largest TLS application-data record it reads.
struct RecordSizes {
    tcp: TcpStream,
    /// Bytes of the current record header seen, and the header.
    header: (usize, [u8; 5]),
    /// Body bytes of the current record still to come.
    body_left: usize,
    largest: Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for RecordSizes {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        let fresh = buf.filled()[before..].to_vec();
        for b in fresh {
            if self.body_left > 0 {
                self.body_left -= 1;
                continue;
            }
            let (n, mut header) = self.header;
            header[n] = b;
            self.header = (n + 1, header);
            if n + 1 == 5 {
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                if header[0] == 23 {
                    self.largest
                        .fetch_max(len, std::sync::atomic::Ordering::Relaxed);
                }
                self.body_left = len;
                self.header = (0, [0; 5]);
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for RecordSizes {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// pgshim's TLS records carry at most 8 KiB, as Postgres's do: libpq in
/// non-blocking mode (psycopg async, pipelines) reads a record into at least
/// 8 KiB of free buffer and would wait on its socket for the rest of a larger
/// one, which OpenSSL already holds.
#[tokio::test]
async fn tls_records_to_the_client_carry_at_most_8_kib() {
    let proxy = proxy().client_tls(true).start().await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = RecordSizes {
        tcp,
        header: (0, [0; 5]),
        body_left: 0,
        largest: Arc::clone(&largest),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within(20, "TLS handshake", connector(None).connect(name, counting))
        .await
        .unwrap();
    let (client, connection) = proxy
        .config(TRUST_USER, None)
        .connect_raw(tls, NoTls)
        .await
        .expect("log in over TLS");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT repeat('x', 200000)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0).len(), 200_000);
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    // 8 KiB of plaintext, its content type and the AEAD tag.
    assert!((8192..=8192 + 1 + 16).contains(&largest), "{largest}");
}
