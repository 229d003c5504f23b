//! What every session shares: TLS, the live settings, the rules, shutdown.
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::active::LiveRules;
use crate::config::Config;
use crate::error::Error;
use crate::net::upstream::Upstream;

/// Settings that a reload may replace; a session takes one snapshot when it
/// starts and keeps it.
pub struct Settings {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// How to reach the server, built from `config.upstream`.
    pub upstream: Upstream,
}

/// Shared by every session.
pub struct Context {
    /// Client-facing TLS, when `[tls]` is set (changes need a restart).
    pub acceptor: Option<TlsAcceptor>,
    /// The settings in force.
    pub settings: ArcSwap<Settings>,
    /// The rewrite rules in force.
    pub rules: LiveRules,
    /// Cancelled when pgshim starts shutting down.
    pub shutdown: CancellationToken,
}

// === impl Settings ===

impl Settings {
    /// Builds settings from a configuration.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when the upstream CA file or host name cannot be used.
    pub fn new(config: Arc<Config>) -> Result<Settings, Error> {
        let upstream = Upstream::from_config(&config.upstream)?;
        Ok(Settings { config, upstream })
    }
}

// === impl Context ===

impl Context {
    /// Builds the shared context: loads certificates, validates the rules and
    /// checks them against the catalog.
    ///
    /// # Errors
    /// [`Error::TlsSetup`] when a certificate, key or CA file cannot be used,
    /// [`Error::Rules`] when a rule cannot be activated.
    pub async fn new(config: Arc<Config>, shutdown: CancellationToken) -> Result<Context, Error> {
        let acceptor = config
            .tls
            .as_ref()
            .map(crate::net::tls::acceptor)
            .transpose()?;
        let settings = Settings::new(config)?;
        let rules = LiveRules::load(&settings.config, &settings.upstream).await?;
        Ok(Context {
            acceptor,
            settings: ArcSwap::from_pointee(settings),
            rules,
            shutdown,
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }
}
