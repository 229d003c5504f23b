//! pgshim with a config file it reloads and an admin listener: in-process
//! ([`Reloadable`], through [`pgshim::server::Server`]) or as the real binary
//! ([`AdminBinary`], for SIGHUP, the `pgshim reload` CLI and an admin token in
//! the environment), plus a tiny HTTP client for the admin API and a reader
//! of the Prometheus text format.
//!
//! ```ignore
//! let proxy = Reloadable::start(proxy(), &db.scope(&rule("expand"))).await;
//! proxy.replace_rules(&db.scope(&rule("migrate")));
//! let (status, body) = proxy.admin.post_reload().await;
//! ```
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pg::{free_port, run_dir, TRUST_USER};
use super::proxy::ProxyBuilder;
use super::{unique_name, within};

/// A rename rule `a` -> `b` on table `t` with id `id` in `phase`, for a
/// database named by [`super::rules::Db::scope`].
pub fn ab_rule(id: &str, phase: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"{phase}\"\n"
    )
}

/// Sends one HTTP/1.1 request to `addr` and returns the status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let run = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to admin listener");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    };
    within(60, &format!("{method} {path}"), run).await
}

/// Parses a JSON body, panicking with the body when it is not JSON.
pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// The Prometheus text format as `name{labels}` -> value; read it with [`Metrics::get`].
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<(String, HashMap<String, String>, f64)>,
    /// The text as served.
    pub text: String,
}

// === impl Metrics ===

impl Metrics {
    /// Parses `text`.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = inner
                        .split("\",")
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim_matches('"').to_owned()))
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (key.to_owned(), HashMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The sum of every sample named `name` whose labels include `labels`;
    /// 0 when there is none (a counter not incremented yet).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// The admin API of one pgshim, by address.
#[derive(Debug, Clone, Copy)]
pub struct AdminApi {
    /// The admin listener.
    pub addr: SocketAddr,
}

// === impl AdminApi ===

impl AdminApi {
    /// `POST /reload` without a token: status and JSON body.
    pub async fn post_reload(&self) -> (u16, Value) {
        let (status, body) = http(self.addr, "POST", "/reload", None).await;
        (status, json(&body))
    }

    /// `GET /rules` (must answer 200).
    pub async fn rules(&self) -> Value {
        let (status, body) = http(self.addr, "GET", "/rules", None).await;
        assert_eq!(status, 200, "GET /rules: {body}");
        json(&body)
    }

    /// The rules version `GET /rules` reports.
    pub async fn version(&self) -> u64 {
        self.rules().await["version"]
            .as_u64()
            .expect("/rules has a numeric version")
    }

    /// The phase `GET /rules` reports for rule `id`.
    pub async fn phase(&self, id: &str) -> String {
        let rules = self.rules().await;
        rules["rules"]
            .as_array()
            .expect("/rules has a rules array")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("rule {id} not in {rules}"))["phase"]
            .as_str()
            .expect("phase is a string")
            .to_owned()
    }

    /// `GET /metrics`, parsed (must answer 200).
    pub async fn metrics(&self) -> Metrics {
        let (status, body) = http(self.addr, "GET", "/metrics", None).await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }
}

/// The full config file: `base` with `rules` appended, listening on
/// `listen`, with `[admin]` at `admin` (and `token_env` when given).
fn render(
    base: &ProxyBuilder,
    listen: &str,
    admin: SocketAddr,
    token_env: Option<&str>,
    rules: &str,
) -> String {
    let mut text = base.clone().rules(rules).toml(listen);
    text += &format!("\n[admin]\nlisten = \"{admin}\"\n");
    if let Some(var) = token_env {
        text += &format!("token_env = \"{var}\"\n");
    }
    text
}

/// Writes `text` to a temporary file beside `path` and renames it over
/// `path`, as editors do.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", unique_name("swap")));
    std::fs::write(&tmp, text).expect("write temporary config");
    std::fs::rename(&tmp, path).expect("rename config into place");
}

/// An in-process pgshim serving a config file it reloads, with an admin
/// listener; stopped when dropped.
pub struct Reloadable {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin API.
    pub admin: AdminApi,
    /// The config file.
    pub path: PathBuf,
    base: ProxyBuilder,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), pgshim::Error>>>,
}

// === impl Reloadable ===

impl Reloadable {
    /// Writes `base` plus `rules` and `[admin]` to a fresh config file and
    /// serves it with [`pgshim::server::Server`], reloading on file changes
    /// and `POST /reload`.
    pub async fn start(base: ProxyBuilder, rules: &str) -> Reloadable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = listener.local_addr().expect("proxy address");
        let admin = admin_listener.local_addr().expect("admin address");
        let path = run_dir().join(format!("{}.toml", unique_name("reload")));
        let text = render(&base, "127.0.0.1:0", admin, None, rules);
        std::fs::write(&path, &text).expect("write config");
        let config = pgshim::Config::load(&path)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{text}"));
        let (stop, stopped) = oneshot::channel::<()>();
        // Sessions on threads of their own, as `pgshim serve` runs them.
        let server = pgshim::server::Server::new(Arc::new(config))
            .config_file(path.clone())
            .admin(admin_listener)
            .session_threads(2);
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Reloadable {
            addr,
            admin: AdminApi { addr: admin },
            path,
            base,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The config file text for `rules` (everything else as at start).
    pub fn text(&self, rules: &str) -> String {
        render(&self.base, "127.0.0.1:0", self.admin.addr, None, rules)
    }

    /// Rewrites the config file in place with `rules`.
    pub fn write_rules(&self, rules: &str) {
        std::fs::write(&self.path, self.text(rules)).expect("write config");
    }

    /// Replaces the config file with `rules` by writing a temporary file and
    /// renaming it over the original.
    pub fn replace_rules(&self, rules: &str) {
        replace_file(&self.path, &self.text(rules));
    }

    /// Replaces the config file with `text`, verbatim.
    pub fn replace_text(&self, text: &str) {
        replace_file(&self.path, text);
    }

    /// A tokio-postgres config for [`TRUST_USER`] on `database` through this proxy.
    pub fn config(&self, database: &str) -> tokio_postgres::Config {
        trust_config(self.addr.port(), database)
    }

    /// A [`TRUST_USER`] session on `database` through this proxy.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        trust_connect(&self.config(database)).await
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) -> Result<(), pgshim::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("proxy task");
        task.await.expect("pgshim server panicked")
    }
}

impl Drop for Reloadable {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `pgshim serve` binary with a config file and an admin listener, and
/// optionally a bearer token in its environment.
pub struct AdminBinary {
    /// The process.
    pub child: Child,
    /// Where clients connect.
    pub port: u16,
    /// The admin API.
    pub admin: AdminApi,
    /// The config file.
    pub path: PathBuf,
    /// `(variable, value)` of the admin token, when one is required.
    pub token: Option<(String, String)>,
    base: ProxyBuilder,
    listen: String,
    log: PathBuf,
}

// === impl AdminBinary ===

impl AdminBinary {
    /// Starts `pgshim serve --config <file>` for `base` plus `rules` and
    /// `[admin]`, with `token` (its value) required on POST when given, and
    /// waits until both listeners accept.
    pub async fn start(base: ProxyBuilder, rules: &str, token: Option<&str>) -> AdminBinary {
        let port = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let name = unique_name("pgshim_admin");
        let path = run_dir().join(format!("{name}.toml"));
        let log = run_dir().join(format!("{name}.log"));
        let listen = format!("127.0.0.1:{port}");
        let token = token.map(|t| (unique_name("PGSHIM_IT_TOKEN").to_uppercase(), t.to_owned()));
        let var = token.as_ref().map(|(v, _)| v.as_str());
        std::fs::write(&path, render(&base, &listen, admin, var, rules)).expect("write config");
        let log_file = std::fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshim"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some((var, value)) = &token {
            cmd.env(var, value);
        }
        let child = cmd.spawn().expect("start the pgshim binary");
        let mut binary = AdminBinary {
            child,
            port,
            admin: AdminApi { addr: admin },
            path,
            token,
            base,
            listen,
            log,
        };
        let ready = async {
            loop {
                if TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                    && TcpStream::connect(admin).await.is_ok()
                {
                    return;
                }
                if let Some(status) = binary.child.try_wait().expect("poll child") {
                    panic!(
                        "pgshim exited at startup ({status}):\n{}",
                        binary.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        within(30, "pgshim binary listening", ready).await;
        binary
    }

    /// The config file text for `rules` (everything else as at start).
    pub fn text(&self, rules: &str) -> String {
        let var = self.token.as_ref().map(|(v, _)| v.as_str());
        render(&self.base, &self.listen, self.admin.addr, var, rules)
    }

    /// Replaces the config file with `rules` (temporary file and rename).
    pub fn replace_rules(&self, rules: &str) {
        replace_file(&self.path, &self.text(rules));
    }

    /// A tokio-postgres config for [`TRUST_USER`] on `database` through this pgshim.
    pub fn config(&self, database: &str) -> tokio_postgres::Config {
        trust_config(self.port, database)
    }

    /// A [`TRUST_USER`] session on `database` through this pgshim.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        trust_connect(&self.config(database)).await
    }

    /// Everything the process logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`HUP`, `TERM`) with `kill`.
    pub fn signal(&self, name: &str) {
        super::binary::signal(&self.child, name);
    }

    /// Runs `pgshim reload --config <file>` (with the token variable set
    /// when `with_token`): exit success, stdout, stderr.
    pub async fn cli_reload(&self, with_token: bool) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshim"));
        cmd.args(["reload", "--json"])
            .arg("--config")
            .arg(&self.path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some((var, value)) = &self.token {
            if with_token {
                cmd.env(var, value);
            } else {
                cmd.env_remove(var);
            }
        }
        let out = within(60, "pgshim reload", cmd.output())
            .await
            .expect("run pgshim reload");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A tokio-postgres config for [`TRUST_USER`] on `database` through the
/// pgshim on 127.0.0.1:`port`.
fn trust_config(port: u16, database: &str) -> tokio_postgres::Config {
    let mut cfg = super::pg::client_config("127.0.0.1", port, TRUST_USER, None);
    cfg.dbname(database);
    cfg
}

/// Connects with `config` through pgshim.
async fn trust_connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    within(20, "connect through pgshim", super::connect(config))
        .await
        .expect("connection through pgshim")
}
