//! rustls configuration for both legs: the acceptor clients negotiate with, and
//! the connector pgshim uses towards the server.
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::error::TlsSetupError;
use crate::config::{ClientTlsConfig, UpstreamConfig, UpstreamTls};

/// ALPN protocol name for direct TLS connections (PostgreSQL 17).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The one crypto provider pgshim uses; installed as the process default so no
/// dependency can pick another (rustls panics when two are compiled in and
/// none is chosen).
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Most plaintext in one TLS record to a client: Postgres's own, whose send
/// buffer is 8 KiB. libpq reads a record with at least 8 KiB free in its
/// buffer and, in non-blocking mode, does not look for the part of a larger
/// record that OpenSSL keeps: a client that then waits for its socket (psycopg
/// async, pipelines) would wait forever for bytes it already has.
const MAX_RECORD_PLAINTEXT: usize = 8192;

/// A TLS record's header, which rustls counts in `max_fragment_size`.
const RECORD_HEADER_LEN: usize = 5;

/// Builds the client-facing acceptor from `[tls]`.
///
/// # Errors
/// [`TlsSetupError`] naming the file that could not be read or used.
pub fn acceptor(cfg: &ClientTlsConfig) -> Result<TlsAcceptor, TlsSetupError> {
    let certs = read_certs(&cfg.cert)?;
    let key = read_key(&cfg.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsSetupError(format!(
                "[tls] cert {} and key {} cannot be used together: {e}",
                cfg.cert.display(),
                cfg.key.display()
            ))
        })?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    config.max_fragment_size = Some(MAX_RECORD_PLAINTEXT + RECORD_HEADER_LEN);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds the upstream connector for `[upstream] tls`; `None` for `disable`.
///
/// # Errors
/// [`TlsSetupError`] when `ca_file` cannot be read.
pub fn connector(cfg: &UpstreamConfig) -> Result<Option<TlsConnector>, TlsSetupError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(format!("TLS setup failed: {e}")))?;
    let config = match cfg.tls {
        UpstreamTls::Disable => return Ok(None),
        UpstreamTls::Prefer | UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let path = cfg.ca_file.as_deref().ok_or_else(|| {
                TlsSetupError("[upstream] tls = \"verify-full\" needs ca_file".into())
            })?;
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| {
                    TlsSetupError(format!("[upstream] ca_file {}: {e}", path.display()))
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// The name the server certificate is checked against.
///
/// # Errors
/// [`TlsSetupError`] when `host` is neither a DNS name nor an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        TlsSetupError(format!(
            "[upstream] host {host:?} is not a valid TLS server name: {e}"
        ))
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError(format!("{}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            TlsSetupError(format!("{}: no private key found", path.display()))
        }
        e => TlsSetupError(format!("{}: invalid PEM: {e}", path.display())),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|e| TlsSetupError(format!("cannot read {}: {e}", path.display())))
}

/// `prefer` and `require`: encrypt, but accept any certificate, as libpq does.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
