//! Hot reload: a new `proxy.toml` is parsed, validated and checked against the
//! catalog before it replaces the old one; an invalid one changes nothing.
//!
//! Triggers (file change, SIGHUP, `POST /reload`, and in database mode a
//! `NOTIFY` on `pgshim_rules`, see [`listen`]) all end up in
//! [`Reloader::reload`], which runs one reload at a time. New rules are
//! checked in every database pgshim serves, and settings that only a restart
//! applies are validated all the same.
pub mod listen;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::active::{ActivateError, RulesVersion};
use crate::config::{Config, ConfigError};
use crate::metrics::metrics;
use crate::net::error::TlsSetupError;
use crate::rewrite::RuleSet;
use crate::runtime::Context;
use crate::settings::Settings;

/// How many times a reload checks its rules again because the catalogs
/// changed under it, before it puts them in force as they are (the periodic
/// comparison of catalogs then catches up).
const MAX_ATTEMPTS: u32 = 4;

/// A reload that changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or parsed (the message has file and line).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A rule is invalid or the schema cannot serve its phase.
    #[error(transparent)]
    Rules(#[from] ActivateError),
    /// A rule jumps between expand and contract without `force = true`.
    #[error("{0}")]
    PhaseGuard(String),
    /// A rule would be two steps from the phase another live instance has in force.
    #[error("{0}")]
    FleetGuard(String),
    /// New upstream TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Settings that need a restart cannot be used (admin token, listener TLS).
    #[error(transparent)]
    Setup(#[from] crate::error::Error),
    /// `[rules] source = "database"` and `pgshim.rules` cannot be used.
    #[error(transparent)]
    RulesTable(#[from] crate::fleet::rules::RulesError),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new rules version.
    pub version: u64,
    /// Changed settings that only take effect on restart.
    pub restart_needed: Vec<&'static str>,
}

/// Reloads the config file into a running proxy.
pub struct Reloader {
    path: PathBuf,
    ctx: Arc<Context>,
    fleet: Option<Arc<crate::fleet::Shared>>,
    /// Why the last reload changed nothing; cleared by a successful one.
    last_error: arc_swap::ArcSwapOption<String>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

// === impl Reloader ===

impl Reloader {
    /// A reloader for the proxy serving `ctx`, reading `path`.
    pub fn new(path: PathBuf, ctx: Arc<Context>) -> Reloader {
        Reloader {
            path,
            ctx,
            fleet: None,
            last_error: arc_swap::ArcSwapOption::empty(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// Joins the reloader to the fleet: a phase change is checked against the
    /// other instances in the registry ([`crate::fleet::spread`]), and the
    /// checksum of each file put in force and the reason of each refusal go
    /// into this instance's registry row.
    pub fn fleet(mut self, fleet: Arc<crate::fleet::Shared>) -> Reloader {
        self.fleet = Some(fleet);
        self
    }

    /// What this instance shares with the fleet, when joined to it.
    pub fn fleet_state(&self) -> Option<&Arc<crate::fleet::Shared>> {
        self.fleet.as_ref()
    }

    /// Why the last reload was refused, unless a later one succeeded.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    fn set_last_error(&self, error: Option<Arc<String>>) {
        if let Some(fleet) = &self.fleet {
            fleet.reload_error.store(error.clone());
            fleet.beat_now.notify_one();
        }
        self.last_error.store(error);
    }

    /// The config file this reloader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, validates and applies the config file; `trigger` is logged.
    ///
    /// # Errors
    /// [`ReloadError`]; the settings and rules in force are left as they were.
    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let result = self.apply().await;
        match &result {
            Ok(done) => {
                self.set_last_error(None);
                metrics().reloads_ok.increment(1);
                if done.restart_needed.is_empty() {
                    tracing::info!(trigger, file = %self.path.display(), version = done.version, "config reloaded");
                } else {
                    tracing::warn!(trigger, file = %self.path.display(), version = done.version, restart_needed = ?done.restart_needed, "config reloaded; changes to these settings take effect after a restart");
                }
            }
            Err(e) => {
                self.set_last_error(Some(Arc::new(e.to_string())));
                metrics().reloads_failed.increment(1);
                tracing::error!(trigger, file = %self.path.display(), error = %e, "config reload failed; the previous config stays in force");
            }
        }
        result
    }

    async fn apply(&self) -> Result<Reloaded, ReloadError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read {
            path: self.path.clone(),
            source,
        })?;
        let mut config = Config::from_toml(&text, &self.path)?;
        // In database mode the rules come from pgshim.rules, the rest from the file.
        let db_version = crate::fleet::rules::overlay(&mut config).await?;
        check_restart_only(&config)?;
        let current = self.ctx.settings();
        let restart_needed = current.config.restart_needed(&config);
        config.listen.clone_from(&current.config.listen);
        config.tls.clone_from(&current.config.tls);
        config.admin.clone_from(&current.config.admin);
        let settings = Arc::new(Settings::new(Arc::new(config))?);
        let mut attempt = 1;
        let number = loop {
            let old = self.ctx.rules.current();
            let version = RulesVersion::load(Arc::clone(&settings), old.number + 1).await?;
            check_phase_steps(&old.rules, &version.rules).map_err(ReloadError::PhaseGuard)?;
            if let Some(fleet) = &self.fleet {
                crate::fleet::spread::check(
                    &settings,
                    &fleet.instance_id,
                    &old.rules,
                    &version.rules,
                )
                .await
                .map_err(ReloadError::FleetGuard)?;
            }
            version.check_served(&old).await?;
            let number = version.number;
            // Settings and rules go in force together, and only over the
            // version they were checked against: a catalog change that came
            // in meanwhile (DDL through pgshim) may postdate the catalogs
            // read here, so they are read again.
            if attempt == MAX_ATTEMPTS {
                self.ctx.rules.store(version);
            } else if !self.ctx.rules.replace(&old, version) {
                attempt += 1;
                continue;
            }
            break number;
        };
        self.ctx.rules.current().publish_metrics();
        if let Some(fleet) = &self.fleet {
            fleet.set_config_text(&text);
            fleet.db_rules_version.store(
                db_version.unwrap_or(0),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(Reloaded {
            version: number,
            restart_needed,
        })
    }
}

/// Checks the settings a reload does not apply, so a broken file is refused
/// now rather than at the next restart: `listen` and `[admin] listen` are
/// checked by [`Config::load`], the `[tls]` files are loaded, and `[admin]
/// token_env` must name a set variable.
fn check_restart_only(config: &Config) -> Result<(), ReloadError> {
    if let Some(tls) = &config.tls {
        crate::net::tls::acceptor(tls)?;
    }
    config.admin_token()?;
    Ok(())
}

/// Refuses a rule that jumps expand <-> contract without `force = true`.
///
/// # Errors
/// A message naming the rule and the step.
pub fn check_phase_steps(old: &RuleSet, new: &RuleSet) -> Result<(), String> {
    for rule in new.rules() {
        let Some(before) = old.rules().iter().find(|r| r.id == rule.id) else {
            continue;
        };
        if before.phase.rank().abs_diff(rule.phase.rank()) > 1 && !rule.force {
            return Err(format!(
                "rule {}: phase {} -> {} skips migrate; move one step at a time (expand <-> migrate <-> contract) or set force = true on the rule",
                rule.id,
                before.phase.name(),
                rule.phase.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::RuleConfig;

    fn rules(phase: &str, force: bool) -> RuleSet {
        let text = format!("table = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"{phase}\"\nforce = {force}\n");
        let config: RuleConfig = toml::from_str(&text).unwrap();
        RuleSet::from_configs(&[config]).unwrap()
    }

    #[test]
    fn one_step_allowed_either_way() {
        assert!(check_phase_steps(&rules("expand", false), &rules("migrate", false)).is_ok());
        assert!(check_phase_steps(&rules("contract", false), &rules("migrate", false)).is_ok());
    }

    #[test]
    fn jump_refused_naming_the_rule() {
        let err =
            check_phase_steps(&rules("expand", false), &rules("contract", false)).unwrap_err();
        assert!(err.contains("users.name") && err.contains("force"), "{err}");
        assert!(check_phase_steps(&rules("contract", false), &rules("expand", false)).is_err());
    }

    #[test]
    fn force_allows_a_jump() {
        assert!(check_phase_steps(&rules("expand", false), &rules("contract", true)).is_ok());
    }
}
