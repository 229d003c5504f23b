//! `proxy.toml`: the configuration file, parsed strictly.
//!
//! Unknown keys are errors that name the key and the file: a typo in a limit
//! must not silently fall back to a default in front of a production database.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default for `[limits] max_message_bytes`: Postgres's own limit on a message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024 - 1;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to, e.g. `127.0.0.1:6432`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The Postgres server pgshim forwards to.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Client-facing TLS; absent means SSLRequest is answered `N`.
    pub tls: Option<ClientTlsConfig>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// What to do with a statement that mentions a mapped table but cannot be
    /// rewritten safely.
    #[serde(default)]
    pub on_unrewritable: OnUnrewritable,
    /// The admin HTTP listener (`/metrics`, `/rules`, `/reload`, `/healthz`).
    pub admin: Option<AdminConfig>,
    /// Column mapping rules (`[[rule]]`), validated by [`crate::rewrite::RuleSet`].
    #[serde(default)]
    pub rule: Vec<crate::rewrite::RuleConfig>,
    /// This instance's name in the fleet registry; default host name and listen address.
    pub instance_id: Option<String>,
    /// The fleet registry (`pgshim.instance`): where and how often instances report.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// `[rules]`: where the `[[rule]]`s come from.
    #[serde(default)]
    pub rules: RulesConfig,
}

/// `[rules]`: whether the rules in force are this file's `[[rule]]`s or the
/// `pgshim.rules` table in the control database (`[fleet] database`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// `file` (the default) or `database`.
    #[serde(default)]
    pub source: RulesSource,
}

/// `[rules] source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RulesSource {
    /// This file's `[[rule]]`s.
    #[default]
    File,
    /// The `pgshim.rules` table, loaded by `pgshim rules push` and changed by `pgshim flip`.
    Database,
}

/// `[fleet]`: the registry every `pgshim serve` writes its state to, and when
/// readers (`status`, `plan --apply`) stop trusting a row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The control database: holds the registry for rules without `database`.
    #[serde(default = "default_fleet_database")]
    pub database: String,
    /// How often each instance writes its row.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A row older than this is shown as stale.
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: u64,
    /// A row older than this is ignored (and removed by live instances).
    #[serde(default = "default_forget_after_ms")]
    pub forget_after_ms: u64,
}

/// `on_unrewritable`: a statement that mentions a mapped table but cannot be
/// parsed or safely rewritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnrewritable {
    /// Refuse it with SQLSTATE 0A000 naming the rule (the default).
    #[default]
    Reject,
    /// Forward it unrewritten, logged and counted.
    Pass,
}

/// `[upstream]`: where Postgres is and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name or IP address of the Postgres server.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port of the Postgres server.
    #[serde(default = "default_port")]
    pub port: u16,
    /// TLS policy towards the server.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA certificates (PEM) that `verify-full` checks the server certificate against.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the TCP connection (and TLS handshake) to the server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// pgshim's own login, used to read the catalog of mapped tables.
    pub user: Option<String>,
    /// Name of the environment variable holding `user`'s password.
    pub password_env: Option<String>,
}

/// `[upstream] tls`: the libpq `sslmode` values pgshim supports towards the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plaintext.
    Disable,
    /// TLS when the server offers it, plaintext otherwise; certificate not checked.
    #[default]
    Prefer,
    /// TLS or fail; certificate not checked.
    Require,
    /// TLS, certificate checked against `ca_file` and the host name.
    VerifyFull,
}

/// `[tls]`: TLS between clients and pgshim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// Certificate chain (PEM) presented to clients.
    pub cert: PathBuf,
    /// Private key (PEM) for `cert`.
    pub key: PathBuf,
    /// When true, clients that do not negotiate TLS are refused with an error.
    #[serde(default)]
    pub required: bool,
}

/// `[admin]`: the HTTP listener operators and Prometheus talk to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener, e.g. `127.0.0.1:9930`.
    pub listen: String,
    /// Name of an environment variable holding a bearer token that POST
    /// requests must present (`Authorization: Bearer <token>`).
    pub token_env: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Client connections served at once; further clients get `53300`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest message accepted from a client, in bytes (header included).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time a client has to complete startup and authentication.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long sessions may take to finish their transaction.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, which names the key, line and column.
        message: String,
    },
    /// `[admin] token_env` names a variable that is not set.
    #[error("[admin] token_env names {var}, which is not set or empty in pgshim's environment")]
    AdminTokenUnset {
        /// The variable.
        var: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

// === impl Config ===

impl Config {
    /// The admin API's bearer token, read from the variable `[admin]
    /// token_env` names; `None` when none is configured.
    ///
    /// # Errors
    /// [`ConfigError::AdminTokenUnset`] when the variable is unset or empty.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(var) = self.admin.as_ref().and_then(|a| a.token_env.as_ref()) else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(token) if !token.is_empty() => Ok(Some(token)),
            _ => Err(ConfigError::AdminTokenUnset { var: var.clone() }),
        }
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the offending key or value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and checks configuration text; `path` is used in messages only.
    ///
    /// # Errors
    /// [`ConfigError`] naming `path` and the offending key or value.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.upstream.tls == UpstreamTls::VerifyFull && self.upstream.ca_file.is_none() {
            return Err("[upstream] tls = \"verify-full\" needs ca_file".into());
        }
        check_listen("listen", &self.listen)?;
        if let Some(admin) = &self.admin {
            check_listen("[admin] listen", &admin.listen)?;
        }
        if self.limits.max_connections == 0 {
            return Err("[limits] max_connections must be at least 1".into());
        }
        if self.limits.max_message_bytes < 64 {
            return Err("[limits] max_message_bytes must be at least 64".into());
        }
        if self
            .instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(
                "instance_id must not be empty; remove it to use host name and listen address"
                    .into(),
            );
        }
        self.fleet.check()
    }
}

// === impl FleetConfig ===

impl FleetConfig {
    fn check(&self) -> Result<(), String> {
        if self.heartbeat_ms < 100 {
            return Err("[fleet] heartbeat_ms must be at least 100".into());
        }
        if self.stale_after_ms < self.heartbeat_ms.saturating_mul(2) {
            return Err("[fleet] stale_after_ms must be at least twice heartbeat_ms, or instances look stale between beats".into());
        }
        if self.forget_after_ms < self.stale_after_ms {
            return Err("[fleet] forget_after_ms must be at least stale_after_ms".into());
        }
        Ok(())
    }

    /// `heartbeat_ms` as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            database: default_fleet_database(),
            heartbeat_ms: default_heartbeat_ms(),
            stale_after_ms: default_stale_after_ms(),
            forget_after_ms: default_forget_after_ms(),
        }
    }
}

impl Config {
    /// Settings that only take effect on restart and differ between `self`
    /// and `new`, by config key.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.tls != new.tls {
            keys.push("[tls]");
        }
        if self.admin != new.admin {
            keys.push("[admin]");
        }
        if self.instance_id != new.instance_id {
            keys.push("instance_id");
        }
        keys
    }

    /// Upstream `host:port`, as shown in messages.
    pub fn upstream_addr(&self) -> String {
        format!("{}:{}", self.upstream.host, self.upstream.port)
    }
}

/// Checks that `value` (the key `key`) is `host:port` as a listener binds it:
/// an IP address or host name, and a port number.
fn check_listen(key: &str, value: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{key} = {value:?} is not a listen address ({why}); write host:port, e.g. \"127.0.0.1:6432\" or \"[::1]:6432\""
        ))
    };
    if value.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad("no port");
    };
    if port.parse::<u16>().is_err() {
        return bad("the port is not a number from 0 to 65535");
    }
    let host_name = |h: &str| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_name(host) {
        return bad("the host is neither an IP address nor a host name");
    }
    Ok(())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            upstream: UpstreamConfig::default(),
            tls: None,
            limits: Limits::default(),
            on_unrewritable: OnUnrewritable::default(),
            admin: None,
            rule: Vec::new(),
            instance_id: None,
            fleet: FleetConfig::default(),
            rules: RulesConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            host: default_host(),
            port: default_port(),
            tls: UpstreamTls::default(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            user: None,
            password_env: None,
        }
    }
}

impl UpstreamConfig {
    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            max_message_bytes: default_max_message_bytes(),
            startup_timeout_ms: default_startup_timeout_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
        }
    }
}

impl Limits {
    /// `startup_timeout_ms` as a duration.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_connections() -> usize {
    1_000
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_startup_timeout_ms() -> u64 {
    60_000
}
fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
fn default_fleet_database() -> String {
    "postgres".into()
}
fn default_heartbeat_ms() -> u64 {
    2_000
}
fn default_stale_after_ms() -> u64 {
    10_000
}
fn default_forget_after_ms() -> u64 {
    60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = Config::from_toml("[limits]\nmax_conections = 5\n", Path::new("proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.toml"), "{err}");
        assert!(err.contains("max_conections"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", Path::new("p.toml")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6432");
        assert_eq!(c.upstream.port, 5432);
        assert_eq!(c.upstream.tls, UpstreamTls::Prefer);
    }

    #[test]
    fn verify_full_needs_ca_file() {
        let err = Config::from_toml("[upstream]\ntls = \"verify-full\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca_file"), "{err}");
    }

    #[test]
    fn malformed_listen_addresses_rejected() {
        for listen in [
            "127.0.0.1:99[9",
            "127.0.0.1",
            "127.0.0.1:70000",
            ":6432",
            "a b:1",
            "[::1:5",
        ] {
            let text = format!("listen = {listen:?}\n");
            let err = Config::from_toml(&text, Path::new("p.toml"))
                .err()
                .unwrap_or_else(|| panic!("{listen:?} accepted"))
                .to_string();
            assert!(err.contains("listen"), "{err}");
        }
        let text = "[admin]\nlisten = \"localhost:x\"\n";
        let err = Config::from_toml(text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[admin] listen"), "{err}");
    }

    #[test]
    fn usual_listen_addresses_accepted() {
        for listen in [
            "127.0.0.1:0",
            "0.0.0.0:6432",
            "[::1]:6432",
            "localhost:6432",
            "db-proxy.internal:5432",
        ] {
            let text = format!("listen = {listen:?}\n");
            assert!(
                Config::from_toml(&text, Path::new("p.toml")).is_ok(),
                "{listen:?}"
            );
        }
    }

    #[test]
    fn fleet_timings_must_be_consistent() {
        let c = Config::from_toml("", Path::new("p.toml")).unwrap();
        assert_eq!(c.fleet, FleetConfig::default());
        assert_eq!(c.fleet.database, "postgres");
        for (text, key) in [
            ("[fleet]\nheartbeat_ms = 10\n", "heartbeat_ms"),
            ("[fleet]\nstale_after_ms = 3000\n", "stale_after_ms"),
            ("[fleet]\nforget_after_ms = 5000\n", "forget_after_ms"),
            ("instance_id = \" \"\n", "instance_id"),
        ] {
            let err = Config::from_toml(text, Path::new("p.toml"))
                .err()
                .unwrap_or_else(|| panic!("{text:?} accepted"))
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn rules_source_defaults_to_file() {
        let c = Config::from_toml("", Path::new("p.toml")).unwrap();
        assert_eq!(c.rules.source, RulesSource::File);
        let c = Config::from_toml("[rules]\nsource = \"database\"\n", Path::new("p.toml")).unwrap();
        assert_eq!(c.rules.source, RulesSource::Database);
        let err = Config::from_toml("[rules]\nsource = \"s3\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3"), "{err}");
    }

    #[test]
    fn unknown_tls_mode_rejected() {
        let err = Config::from_toml("[upstream]\ntls = \"allow\"\n", Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow"), "{err}");
    }
}
