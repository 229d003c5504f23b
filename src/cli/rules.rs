//! `pgshim rules push`: load the config file's `[[rule]]`s into `pgshim.rules`,
//! for instances with `[rules] source = "database"`, and wait until every live
//! instance serving them has them in force (as `pgshim flip` does).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio_postgres::Client;

use super::common;
use super::flip::await_fleet;
use crate::config::Config;
use crate::fleet::{ack, registry, registry_database, rules, spread};
use crate::ops::sql::parse_duration;
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
    /// Replace the rules in pgshim.rules with the config file's [[rule]]s, notify every
    /// instance, and wait until every live instance serving them has them in force.
    #[command(
        after_help = "Example:\n  pgshim rules push --config proxy.toml --timeout 10s\n\nExit codes: 0 every live instance applied them, 1 refused or instances lagging (named), 2 usage error."
    )]
    Push {
        /// How long to wait for every live instance to acknowledge, e.g. 10s.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Runs the subcommand.
///
/// # Errors
/// Invalid rules, a phase change the phase guards refuse (nothing is written
/// then), the control database unreachable, or instances that have not
/// acknowledged after `--timeout` (named).
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    match args.command {
        RulesCommand::Push { timeout } => push(config_path, timeout),
    }
}

fn push(config_path: &Path, timeout: Duration) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read config file {}", config_path.display()))?;
    let rows = rules::from_file_text(&text).map_err(|e| {
        OpsError::Usage(format!(
            "the [[rule]]s of {} are invalid: {e}",
            config_path.display()
        ))
    })?;
    let new = RuleSet::from_configs(&config.rule)?;
    let control = config.fleet.database.clone();
    common::runtime()?.block_on(async {
        let mut client = rules::connect(&config).await?;
        let stored = rules::read(&client)
            .await
            .with_context(|| format!("reading pgshim.rules in database {control}"))?;
        let old = stored.as_ref().map(rules::Stored::rule_set).transpose()?;
        // The registries of every rule before and after, each read over one connection.
        let databases: BTreeSet<String> = old
            .iter()
            .flat_map(RuleSet::rules)
            .chain(new.rules())
            .map(|r| registry_database(r, &control).to_owned())
            .collect();
        let mut others = BTreeMap::new();
        for db in databases.iter().filter(|db| **db != control) {
            let mut in_db = config.clone();
            in_db.fleet.database.clone_from(db);
            others.insert(db.clone(), rules::connect(&in_db).await?);
        }
        let registry_of = |db: &str| -> &Client { others.get(db).unwrap_or(&client) };
        if let Some(old) = &old {
            guard(&config, old, &new, registry_of).await?;
        }
        let version = rules::push(&mut client, &rows)
            .await
            .with_context(|| format!("writing pgshim.rules in database {control} (pgshim's [upstream] user needs CREATE on it the first time)"))?;
        println!(
            "pushed {} rules to pgshim.rules in database {control} (rules version {version})",
            rows.len()
        );
        let registry_of = |db: &str| -> &Client { others.get(db).unwrap_or(&client) };
        let waits: Vec<ack::Waiting<'_>> = databases
            .iter()
            .map(|db| ack::Waiting {
                database: db.clone(),
                client: registry_of(db),
                expected: ack::Expected::rules(old.as_ref(), &new, db, &control),
            })
            .collect();
        await_fleet(&config, &waits, "pgshim.rules", version, timeout).await
    })
}

/// The checks a reload would make of each changed phase: one step at a time, and
/// not two steps from a live instance.
async fn guard<'a>(
    config: &Config,
    old: &RuleSet,
    new: &RuleSet,
    registry_of: impl Fn(&str) -> &'a Client,
) -> anyhow::Result<()> {
    crate::reload::check_phase_steps(old, new)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was pushed"))?;
    for rule in new.rules() {
        let before = old.rules().iter().find(|r| r.id == rule.id);
        if rule.force || before.is_none_or(|b| b.phase == rule.phase) {
            continue;
        }
        let db = registry_database(rule, &config.fleet.database);
        let instances = registry::read(registry_of(db), &config.fleet)
            .await
            .with_context(|| format!("reading the fleet registry in database {db}"))?;
        spread::decide("", &[(rule.id.clone(), rule.phase)], &instances)
            .map_err(|e| anyhow::anyhow!("{e}; nothing was pushed"))?;
    }
    Ok(())
}
