//! `pgshim flip RULE --to PHASE`: change one rule's phase in `pgshim.rules` for
//! the whole fleet, and wait until every live instance has it in force.
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::common;
use crate::config::{Config, RulesSource};
use crate::fleet::{ack, registry, registry_database, rules, spread};
use crate::ops::sql::parse_duration;
use crate::ops::OpsError;
use crate::rewrite::Phase;

/// `pgshim flip` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The rule's id.
    pub rule: String,
    /// The phase to put it in: expand, migrate or contract.
    #[arg(long, value_name = "PHASE")]
    pub to: String,
    /// How long to wait for every live instance to acknowledge, e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs the subcommand.
///
/// # Errors
/// A config not in database mode, an unknown rule or phase, a step the phase
/// guards refuse (nothing is written then), or instances that have not
/// acknowledged after `--timeout` (named).
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if config.rules.source != RulesSource::Database {
        return Err(OpsError::Usage(format!(
            "{} has [rules] source = \"file\": flip changes pgshim.rules, which only instances with [rules] source = \"database\" follow; edit the rule's phase in the file and reload instead",
            config_path.display()
        ))
        .into());
    }
    let phase: Phase = args.to.parse().map_err(OpsError::Usage)?;
    common::runtime()?.block_on(flip_rule(&config, &args.rule, phase, args.timeout))
}

async fn flip_rule(
    config: &Config,
    id: &str,
    phase: Phase,
    timeout: Duration,
) -> anyhow::Result<()> {
    let database = &config.fleet.database;
    let mut client = rules::connect(config).await?;
    let stored = rules::read(&client)
        .await
        .with_context(|| format!("reading pgshim.rules in database {database}"))?
        .ok_or_else(|| rules::RulesError::Empty {
            database: database.clone(),
        })?;
    let old = stored.rule_set()?;
    let Some(before) = old.rules().iter().find(|r| r.id == id).cloned() else {
        let known: Vec<&str> = old.rules().iter().map(|r| r.id.as_str()).collect();
        return Err(OpsError::UnknownRule {
            id: id.to_owned(),
            known: known.join(", "),
        }
        .into());
    };
    let mut next = stored.clone();
    for r in &mut next.rules {
        if r.id == id {
            r.phase = phase.name().to_owned();
        }
    }
    let new = next.rule_set()?;
    crate::reload::check_phase_steps(&old, &new)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
    let registry_db = registry_database(&before, database).to_owned();
    let registry_client = if registry_db == *database {
        None
    } else {
        let mut in_db = config.clone();
        in_db.fleet.database.clone_from(&registry_db);
        Some(rules::connect(&in_db).await?)
    };
    let reg = registry_client.as_ref().unwrap_or(&client);
    let instances = registry::read(reg, &config.fleet)
        .await
        .with_context(|| format!("reading the fleet registry in database {registry_db}"))?;
    if !before.force {
        spread::decide("", &[(id.to_owned(), phase)], &instances)
            .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
    }
    let version = rules::flip(&mut client, id, phase.name())
        .await
        .with_context(|| format!("writing pgshim.rules in database {database}"))?
        .ok_or_else(|| {
            anyhow::anyhow!("rule {id} left pgshim.rules while flipping; run flip again")
        })?;
    eprintln!("rule {id}: phase {phase} written (rules version {version}); waiting for every live instance");
    let waits = [ack::Waiting {
        database: registry_db,
        client: registry_client.as_ref().unwrap_or(&client),
        expected: ack::Expected::phase(id, phase),
    }];
    let what = format!("rule {id}: phase {phase}");
    await_fleet(config, &waits, &what, version, timeout).await
}

/// Waits until every live instance concerned has acknowledged the write of
/// `version` (`what`, e.g. "rule r: phase migrate"), and says so.
///
/// # Errors
/// The instances that lag after `timeout`, named; a registry that cannot be read.
pub(super) async fn await_fleet(
    config: &Config,
    waits: &[ack::Waiting<'_>],
    what: &str,
    version: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    match ack::wait(&config.fleet, waits, timeout).await? {
        ack::Waited::Acknowledged { instances: 0, .. } => {
            println!("{what} written (rules version {version}); no live instance serves these rules, so none was waited for");
            Ok(())
        }
        ack::Waited::Acknowledged { instances, after } => {
            println!(
                "{what} in force on all {instances} live instances (rules version {version}, acknowledged in {} ms)",
                after.as_millis()
            );
            Ok(())
        }
        ack::Waited::Lagging(late) => anyhow::bail!(
            "{what} is written (rules version {version}) but {} live instances have not applied it after {}: {}; `pgshim status` shows them, and each retries at its next version check",
            late.len(),
            crate::ops::sql::human(timeout),
            late.join("; ")
        ),
    }
}
