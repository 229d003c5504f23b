//! Putting the table's rules in force: in database mode the config's
//! `[[rule]]`s are replaced by the table's at start and at every reload, and
//! every other setting stays the file's.
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::{table, RulesError};
use crate::config::{Config, RulesSource};
use crate::net::upstream::Upstream;

/// Added to `connect_timeout_ms` for reading the table at start.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the control database of `config` with pgshim's `[upstream]` login.
///
/// # Errors
/// [`RulesError::Connect`].
pub async fn connect(config: &Config) -> Result<Client, RulesError> {
    let database = &config.fleet.database;
    let failed = |reason: String| RulesError::Connect {
        database: database.clone(),
        reason,
    };
    let upstream = Upstream::from_config(&config.upstream).map_err(|e| failed(e.to_string()))?;
    crate::introspect::connect(&config.upstream, &upstream, database)
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Replaces `config`'s `[[rule]]`s with the table's when `[rules] source =
/// "database"`; every other setting stays the file's.
///
/// # Returns
/// The table's version then, `None` in file mode.
///
/// # Errors
/// [`RulesError`]: the table cannot be read, holds nothing, or holds an invalid rule.
pub async fn overlay(config: &mut Config) -> Result<Option<u64>, RulesError> {
    if config.rules.source != RulesSource::Database {
        return Ok(None);
    }
    let database = config.fleet.database.clone();
    let client = connect(config).await?;
    let stored = table::read(&client)
        .await
        .map_err(|source| RulesError::Query {
            what: "reading",
            database: database.clone(),
            source,
        })?
        .ok_or(RulesError::Empty { database })?;
    config.rule = stored.configs()?;
    Ok(Some(stored.version))
}

/// The config to start serving with: in database mode, the table's rules
/// in place of the file's. When the table cannot be read the file's rules are
/// served (logged) until the listener (`crate::reload::listen`) can apply the table's.
///
/// # Returns
/// The config, and the table's version when its rules are in it.
pub async fn at_start(config: Arc<Config>) -> (Arc<Config>, Option<u64>) {
    if config.rules.source != RulesSource::Database {
        return (config, None);
    }
    let mut with_table = (*config).clone();
    let limit = config.upstream.connect_timeout() + START_TIMEOUT;
    match tokio::time::timeout(limit, overlay(&mut with_table)).await {
        Ok(Ok(version)) => {
            tracing::info!(
                version,
                rules = with_table.rule.len(),
                "rules loaded from pgshim.rules"
            );
            (Arc::new(with_table), version)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "serving the config file's [[rule]]s until pgshim.rules can be read");
            (config, None)
        }
        Err(_) => {
            tracing::warn!("reading pgshim.rules timed out; serving the config file's [[rule]]s until it can be read");
            (config, None)
        }
    }
}
