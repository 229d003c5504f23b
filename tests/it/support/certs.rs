//! Test certificates, generated once per run with rcgen: one test CA that signs
//! both the Postgres server certificate and pgshim's client-facing certificate,
//! plus an unrelated CA for "wrong CA" cases.
//!
//! The Postgres certificate names only `localhost` (no IP address), so an
//! upstream `verify-full` connection to `127.0.0.1` is a host-name mismatch
//! against the real server, while `localhost` verifies.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Paths of the PEM files written for this run.
#[derive(Debug)]
pub struct Certs {
    /// The test CA that signed both server certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing used here.
    pub other_ca: PathBuf,
    /// Postgres's certificate: SAN `localhost` only.
    pub pg_cert: PathBuf,
    /// Key for `pg_cert`.
    pub pg_key: PathBuf,
    /// pgshim's client-facing certificate: SANs `localhost` and `127.0.0.1`.
    pub proxy_cert: PathBuf,
    /// Key for `proxy_cert`.
    pub proxy_key: PathBuf,
}

/// The run's certificates, generated on first use under the run directory.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| generate(&super::pg::run_dir().join("certs")))
}

fn generate(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).expect("create certs dir");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    };
    let (ca, ca_key) = ca("pgshim test CA");
    let (other, _) = ca_pair_pem("unrelated test CA");
    let (pg_cert, pg_key) = leaf(&["localhost"], &ca, &ca_key);
    let (proxy_cert, proxy_key) = leaf(&["localhost", "127.0.0.1"], &ca, &ca_key);
    Certs {
        ca: write("ca.crt", ca.pem()),
        other_ca: write("other-ca.crt", other),
        pg_cert: write("pg.crt", pg_cert),
        pg_key: write("pg.key", pg_key),
        proxy_cert: write("proxy.crt", proxy_cert),
        proxy_key: write("proxy.key", proxy_key),
    }
}

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("generate CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, key)
}

fn ca_pair_pem(name: &str) -> (String, String) {
    let (cert, key) = ca(name);
    (cert.pem(), key.serialize_pem())
}

fn leaf(names: &[&str], ca: &Certificate, ca_key: &KeyPair) -> (String, String) {
    let key = KeyPair::generate().expect("generate leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, ca, ca_key).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}
