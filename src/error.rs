//! Errors that stop pgshim from starting or from applying a reload. Errors
//! that end one session are [`crate::session::SessionError`]; errors of the
//! ops commands are [`crate::ops::OpsError`].
use crate::config::ConfigError;
use crate::net::error::TlsSetupError;

/// Why pgshim cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A rewrite rule cannot be activated.
    #[error(transparent)]
    Rules(#[from] crate::active::ActivateError),
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    TlsSetup(#[from] TlsSetupError),
    /// The threads that serve sessions could not be started.
    #[error("cannot start the session threads (lower PGSHIM_WORKER_THREADS, or raise the process's thread limit): {0}")]
    Runtime(#[source] std::io::Error),
}
