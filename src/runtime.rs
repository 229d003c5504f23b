//! What every session, the admin API, reload and the fleet heartbeat share:
//! TLS, the settings and rules in force (swapped together), shutdown, the
//! board of open sessions.
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::active::LiveRules;
use crate::config::Config;
use crate::error::Error;
use crate::session::SessionBoard;
use crate::settings::Settings;

/// Shared by every session.
pub struct Context {
    /// Client-facing TLS, when `[tls]` is set (changes need a restart).
    pub acceptor: Option<TlsAcceptor>,
    /// The rules in force, each version with the settings it was checked
    /// with: one swap replaces both.
    pub rules: Arc<LiveRules>,
    /// Cancelled when pgshim starts shutting down.
    pub shutdown: CancellationToken,
    /// The open sessions (see [`SessionBoard`]).
    pub sessions: SessionBoard,
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
        let settings = Arc::new(Settings::new(config)?);
        let rules = Arc::new(LiveRules::load(settings).await?);
        Ok(Context {
            acceptor,
            rules,
            shutdown,
            sessions: SessionBoard::default(),
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.rules.current().settings)
    }
}
