//! `pgshim rules push`: load the config file's `[[rule]]`s into `pgshim.rules`,
//! for instances with `[rules] source = "database"`.
use std::path::Path;

use anyhow::Context as _;

use super::common;
use crate::config::Config;
use crate::fleet::{registry, registry_database, rules, spread};
use crate::ops::OpsError;
use crate::rewrite::RuleSet;

/// `pgshim rules` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RulesCommand,
}

/// `pgshim rules` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RulesCommand {
    /// Replace the rules in pgshim.rules with the config file's [[rule]]s, then notify every instance.
    #[command(after_help = "Example:\n  pgshim rules push --config proxy.toml")]
    Push,
}

/// Runs the subcommand.
///
/// # Errors
/// Invalid rules, a phase change the phase guards refuse (nothing is written
/// then), or the control database unreachable.
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    match args.command {
        RulesCommand::Push => push(config_path),
    }
}

fn push(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config file {}", config_path.display()))?;
    let rows = rules::from_file_text(&text).map_err(|e| {
        OpsError::Usage(format!(
            "the [[rule]]s of {} are invalid: {e}",
            config_path.display()
        ))
    })?;
    let database = config.fleet.database.clone();
    common::runtime()?.block_on(async {
        let mut client = rules::connect(&config).await?;
        let stored = rules::read(&client)
            .await
            .with_context(|| format!("reading pgshim.rules in database {database}"))?;
        if let Some(stored) = &stored {
            guard(&config, &stored.rule_set()?, &client).await?;
        }
        let version = rules::push(&mut client, &rows)
            .await
            .with_context(|| format!("writing pgshim.rules in database {database} (pgshim's [upstream] user needs CREATE on it the first time)"))?;
        println!(
            "pushed {} rules to pgshim.rules in database {database} (rules version {version})",
            rows.len()
        );
        Ok(())
    })
}

/// The checks a reload would make of each changed phase: one step at a time, and
/// not two steps from a live instance.
async fn guard(
    config: &Config,
    old: &RuleSet,
    client: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let new = RuleSet::from_configs(&config.rule)?;
    crate::reload::check_phase_steps(old, &new)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was pushed"))?;
    for rule in new.rules() {
        let before = old.rules().iter().find(|r| r.id == rule.id);
        if rule.force || before.is_none_or(|b| b.phase == rule.phase) {
            continue;
        }
        let db = registry_database(rule, &config.fleet.database);
        let instances = if db == config.fleet.database {
            registry::read(client, &config.fleet).await
        } else {
            let mut in_db = config.clone();
            in_db.fleet.database = db.to_owned();
            registry::read(&rules::connect(&in_db).await?, &config.fleet).await
        }
        .with_context(|| format!("reading the fleet registry in database {db}"))?;
        spread::decide("", &[(rule.id.clone(), rule.phase)], &instances)
            .map_err(|e| anyhow::anyhow!("{e}; nothing was pushed"))?;
    }
    Ok(())
}
