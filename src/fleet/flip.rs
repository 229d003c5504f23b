//! What `pgshim flip` decides from the registry: whether the new phase may be
//! written at all (the fleet phase guard, [`super::spread::decide`]), and which
//! live instances have not acknowledged it yet.
//!
//! An instance has acknowledged a write when its registry row reports the rule
//! in the phase written, i.e. once that phase is in force there. Database-mode
//! instances report the `pgshim.rules` version they applied as their
//! `rules_version`, shown for each laggard; the version alone cannot decide,
//! since an instance that reads its rules from a file reports its own reload
//! counter there (such an instance counts once its file has the phase).
//! Instances that do not serve the rule at all are not waited for.
use std::time::{Duration, Instant};

use super::registry::{self, Instance, Liveness};
use crate::config::Config;
use crate::rewrite::Phase;

/// How often the registry is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// The live instances serving `rule` that do not have it in `phase` yet, each
/// described for the operator.
pub fn laggards(instances: &[Instance], rule: &str, phase: Phase) -> Vec<String> {
    instances
        .iter()
        .filter(|i| i.liveness == Liveness::Live)
        .filter_map(|i| {
            let theirs = i.phases.get(rule)?;
            if theirs.phase == phase.name() {
                return None;
            }
            let mut text = format!(
                "{} (rules version {}, {rule} in {})",
                i.instance_id, i.rules_version, theirs.phase
            );
            if let Some(e) = &i.last_reload_error {
                text += &format!(", last reload refused: {e}");
            }
            Some(text)
        })
        .collect()
}

/// How many live instances serve `rule` in `instances`.
pub fn serving(instances: &[Instance], rule: &str) -> usize {
    instances
        .iter()
        .filter(|i| i.liveness == Liveness::Live && i.phases.contains_key(rule))
        .count()
}

/// Reads the registry behind `client` until every live instance serving
/// `rule` has it in `phase`, or `timeout` passes.
///
/// # Returns
/// `Ok(instances acknowledged)`, or `Err(laggards)` after `timeout`.
///
/// # Errors
/// The outer error is a registry that cannot be read.
pub async fn wait(
    config: &Config,
    client: &tokio_postgres::Client,
    rule: &str,
    phase: Phase,
    timeout: Duration,
) -> Result<Result<usize, Vec<String>>, tokio_postgres::Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let instances = registry::read(client, &config.fleet).await?;
        let late = laggards(&instances, rule, phase);
        if late.is_empty() {
            return Ok(Ok(serving(&instances, rule)));
        }
        if Instant::now() >= deadline {
            return Ok(Err(late));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::registry::{Phases, RulePhase};

    fn at(id: &str, version: i64, phase: Option<&str>, liveness: Liveness) -> Instance {
        let mut phases = Phases::new();
        if let Some(phase) = phase {
            phases.insert(
                "r".into(),
                RulePhase {
                    phase: phase.into(),
                    migrate_since_ms: None,
                },
            );
        }
        Instance {
            instance_id: id.into(),
            version: String::new(),
            started_at: String::new(),
            rules_version: version,
            config_checksum: String::new(),
            phases,
            sessions: 0,
            last_reload_error: None,
            usage: None,
            last_beat: String::new(),
            age_ms: 0,
            liveness,
        }
    }

    #[test]
    fn laggards_are_live_instances_without_the_phase() {
        let fleet = [
            at("done", 7, Some("migrate"), Liveness::Live),
            at("file-mode-done", 2, Some("migrate"), Liveness::Live),
            at("behind", 6, Some("expand"), Liveness::Live),
            at("file-mode", 40, Some("expand"), Liveness::Live),
            at("stale", 1, Some("expand"), Liveness::Stale),
            at("no-rule", 1, None, Liveness::Live),
        ];
        let late = laggards(&fleet, "r", Phase::Migrate);
        assert_eq!(late.len(), 2, "{late:?}");
        assert!(
            late[0].starts_with("behind (rules version 6, r in expand"),
            "{late:?}"
        );
        assert!(late[1].starts_with("file-mode"), "{late:?}");
        assert_eq!(serving(&fleet, "r"), 4);
    }
}
