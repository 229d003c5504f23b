//! pgshim under test: built from TOML like a user's `proxy.toml`, served
//! in-process on a port-0 listener on the test's runtime.
//!
//! ```ignore
//! let proxy = proxy().client_tls(true).limit("max_connections", 2).start().await;
//! let client = proxy.connect(TRUST_USER, None).await?;
//! ```
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::certs::certs;
use super::pg::{client_config, cluster};

/// Settings for one pgshim instance; defaults point at the test cluster with
/// the config file's own defaults for everything else.
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    upstream_host: String,
    upstream_port: u16,
    upstream_tls: Option<String>,
    ca_file: Option<PathBuf>,
    connect_timeout_ms: Option<u64>,
    client_tls: Option<bool>,
    limits: Vec<(String, String)>,
    /// Top-level `key = value` lines (they must precede every table).
    top_level: Vec<String>,
    /// `[upstream] user`: pgshim's own login, used to read the catalog.
    catalog_user: Option<String>,
    /// Raw TOML appended after everything else, e.g. `[[rule]]` tables.
    tail: String,
}

/// A pgshim builder pointing at the shared test cluster.
pub fn proxy() -> ProxyBuilder {
    ProxyBuilder {
        upstream_host: "127.0.0.1".into(),
        upstream_port: cluster().port,
        upstream_tls: None,
        ca_file: None,
        connect_timeout_ms: None,
        client_tls: None,
        limits: Vec::new(),
        top_level: Vec::new(),
        catalog_user: Some("postgres".into()),
        tail: String::new(),
    }
}

// === impl ProxyBuilder ===

impl ProxyBuilder {
    /// Points `[upstream]` at `host:port`.
    pub fn upstream(mut self, host: &str, port: u16) -> Self {
        self.upstream_host = host.into();
        self.upstream_port = port;
        self
    }

    /// Sets `[upstream] tls` and, if given, `ca_file`.
    pub fn upstream_tls(mut self, mode: &str, ca_file: Option<&Path>) -> Self {
        self.upstream_tls = Some(mode.into());
        self.ca_file = ca_file.map(Path::to_path_buf);
        self
    }

    /// Sets `[upstream] connect_timeout_ms`.
    pub fn connect_timeout_ms(mut self, ms: u64) -> Self {
        self.connect_timeout_ms = Some(ms);
        self
    }

    /// Enables client-facing TLS with the test certificate (`localhost`,
    /// `127.0.0.1`, signed by the test CA); `required` as in `[tls] required`.
    pub fn client_tls(mut self, required: bool) -> Self {
        self.client_tls = Some(required);
        self
    }

    /// Sets `[limits] key = value`.
    pub fn limit(mut self, key: &str, value: impl Display) -> Self {
        self.limits.push((key.into(), value.to_string()));
        self
    }

    /// Adds a top-level `key = value` line, e.g. `on_unrewritable = "pass"`.
    pub fn top_level(mut self, line: &str) -> Self {
        self.top_level.push(line.into());
        self
    }

    /// Appends raw TOML (e.g. `[[rule]]` tables) to the configuration.
    pub fn rules(mut self, toml: &str) -> Self {
        self.tail.push('\n');
        self.tail.push_str(toml);
        self
    }

    /// The configuration file for these settings, listening on `listen`.
    pub fn toml(&self, listen: &str) -> String {
        let mut out = format!("listen = \"{listen}\"\n");
        for line in &self.top_level {
            out += line;
            out.push('\n');
        }
        out += &format!(
            "\n[upstream]\nhost = \"{}\"\nport = {}\n",
            self.upstream_host, self.upstream_port
        );
        if let Some(user) = &self.catalog_user {
            out += &format!("user = \"{user}\"\n");
        }
        if let Some(mode) = &self.upstream_tls {
            out += &format!("tls = \"{mode}\"\n");
        }
        if let Some(ca) = &self.ca_file {
            out += &format!("ca_file = \"{}\"\n", ca.display());
        }
        if let Some(ms) = self.connect_timeout_ms {
            out += &format!("connect_timeout_ms = {ms}\n");
        }
        if let Some(required) = self.client_tls {
            let c = certs();
            out += &format!(
                "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequired = {required}\n",
                c.proxy_cert.display(),
                c.proxy_key.display()
            );
        }
        if !self.limits.is_empty() {
            out += "\n[limits]\n";
            for (k, v) in &self.limits {
                out += &format!("{k} = {v}\n");
            }
        }
        out += &self.tail;
        out
    }

    /// Parses the configuration with [`pgshim::Config::from_toml`] and serves
    /// it on a fresh 127.0.0.1 port in a task on the current runtime.
    pub async fn start(self) -> Proxy {
        let text = self.toml("127.0.0.1:0");
        let config = pgshim::Config::from_toml(&text, Path::new("it-proxy.toml"))
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{text}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(pgshim::server::serve(listener, Arc::new(config), async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// A running in-process pgshim; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), pgshim::Error>>>,
}

// === impl Proxy ===

impl Proxy {
    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A tokio-postgres config (no TLS) for `user` through this proxy.
    pub fn config(&self, user: &str, password: Option<&str>) -> tokio_postgres::Config {
        client_config("127.0.0.1", self.port(), user, password)
    }

    /// Connects `user` through this proxy with tokio-postgres.
    pub async fn connect(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        super::connect(&self.config(user, password)).await
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), pgshim::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("proxy task");
        task.await.expect("pgshim::server::serve panicked")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Proxy {
    /// Asserts that a fresh tokio-postgres client through this proxy works:
    /// the check that one client's failure left everyone else unaffected.
    pub async fn assert_serves_others(&self) {
        let client = super::within(
            20,
            "healthy client connects",
            self.connect(super::pg::TRUST_USER, None),
        )
        .await
        .expect("a healthy client can still connect through pgshim");
        let row = client
            .query_one("SELECT $1::int + 1", &[&41i32])
            .await
            .expect("a healthy client can still query through pgshim");
        assert_eq!(row.get::<_, i32>(0), 42);
    }
}
