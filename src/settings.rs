//! The settings a reload replaces: the configuration, and how to reach the
//! server built from it. A rules version holds the settings it was checked
//! with, so the settings and the rules are swapped together and a session
//! never reads a catalog for new rules through an old login.
use std::sync::Arc;

use crate::config::Config;
use crate::net::error::TlsSetupError;
use crate::net::upstream::Upstream;

/// Settings that a reload may replace; a session takes one snapshot when it
/// starts and keeps it.
pub struct Settings {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// How to reach the server, built from `config.upstream`.
    pub upstream: Upstream,
}

// === impl Settings ===

impl Settings {
    /// Builds settings from a configuration.
    ///
    /// # Errors
    /// [`TlsSetupError`] when the upstream CA file or host name cannot be used.
    pub fn new(config: Arc<Config>) -> Result<Settings, TlsSetupError> {
        let upstream = Upstream::from_config(&config.upstream)?;
        Ok(Settings { config, upstream })
    }
}
