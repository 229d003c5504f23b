//! Waiting for the fleet to acknowledge a write to `pgshim.rules`: `pgshim
//! flip` and `pgshim rules push` both return only once every live instance
//! has the new rules in force, or name the ones that lag after `--timeout`.
//!
//! An instance has acknowledged when its registry row reports every rule
//! written in the phase written and no longer reports a rule the write
//! removed, i.e. once the rules are in force there. Database-mode instances
//! report the `pgshim.rules` version they applied as their `rules_version`,
//! shown for each laggard; the version alone cannot decide, since an instance
//! that reads its rules from a file reports its own reload counter there (such
//! an instance counts once its file has the phase). Instances serving none of
//! the rules concerned are not waited for.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::registry::{self, Instance, Liveness};
use super::registry_database;
use crate::config::FleetConfig;
use crate::rewrite::{Phase, Rule, RuleSet};

/// How often the registry is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// What a write asks of the instances registered in one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// An instance serving any of these rules is waited for.
    pub scope: BTreeSet<String>,
    /// Rules it must report, each in its phase.
    pub wanted: Vec<(String, Phase)>,
    /// Rules it must no longer report.
    pub gone: Vec<String>,
}

/// One registry database to wait on.
pub struct Waiting<'a> {
    /// Its name, for errors.
    pub database: String,
    /// A connection to it.
    pub client: &'a Client,
    /// What its instances must report.
    pub expected: Expected,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// Every live instance concerned reports the write.
    Acknowledged {
        /// How many live instances were waited for (0: none serves the rules).
        instances: usize,
        /// From the start of the wait to the registry read that saw them all.
        after: Duration,
    },
    /// After the timeout, these instances (described for the operator) still lag.
    Lagging(Vec<String>),
}

/// The registry of a database could not be read while waiting.
#[derive(Debug, thiserror::Error)]
#[error("reading the fleet registry in database {database}: {source}")]
pub struct WaitError {
    /// The registry database.
    pub database: String,
    /// What Postgres said.
    pub source: tokio_postgres::Error,
}

// === impl Expected ===

impl Expected {
    /// `flip`: `rule` in `phase`, on the instances serving it.
    pub fn phase(rule: &str, phase: Phase) -> Expected {
        Expected {
            scope: BTreeSet::from([rule.to_owned()]),
            wanted: vec![(rule.to_owned(), phase)],
            gone: Vec::new(),
        }
    }

    /// `rules push`: the rules of `new` whose registry is `database` (the
    /// control database `control` for rules naming none), in their phases, and
    /// those of `old` that `new` drops gone, on the instances serving any rule
    /// of either.
    pub fn rules(old: Option<&RuleSet>, new: &RuleSet, database: &str, control: &str) -> Expected {
        let here = |r: &&Rule| registry_database(r, control) == database;
        let old_rules = old.map(RuleSet::rules).unwrap_or_default();
        let mut expected = Expected::default();
        for rule in new.rules().iter().filter(here) {
            expected.scope.insert(rule.id.clone());
            expected.wanted.push((rule.id.clone(), rule.phase));
        }
        for rule in old_rules.iter().filter(here) {
            expected.scope.insert(rule.id.clone());
            if !new.rules().iter().any(|n| n.id == rule.id) {
                expected.gone.push(rule.id.clone());
            }
        }
        expected
    }

    /// Whether `instance` is live and serves a rule this is about.
    fn concerns(&self, instance: &Instance) -> bool {
        instance.liveness == Liveness::Live
            && instance.phases.keys().any(|id| self.scope.contains(id))
    }

    /// What `instance` still lacks, for the operator; empty once it acknowledged.
    fn missing(&self, instance: &Instance) -> Vec<String> {
        let mut out = Vec::new();
        for (rule, phase) in &self.wanted {
            match instance.phases.get(rule) {
                None => out.push(format!("{rule} not served")),
                Some(theirs) if theirs.phase != phase.name() => {
                    out.push(format!("{rule} in {}", theirs.phase));
                }
                Some(_) => {}
            }
        }
        for rule in &self.gone {
            if instance.phases.contains_key(rule) {
                out.push(format!("{rule} still served"));
            }
        }
        out
    }
}

/// The live instances concerned by `expected` that have not acknowledged it,
/// each described for the operator.
pub fn laggards(instances: &[Instance], expected: &Expected) -> Vec<String> {
    instances
        .iter()
        .filter(|i| expected.concerns(i))
        .filter_map(|i| {
            let missing = expected.missing(i);
            if missing.is_empty() {
                return None;
            }
            let mut text = format!(
                "{} (rules version {}, {})",
                i.instance_id,
                i.rules_version,
                missing.join(", ")
            );
            if let Some(e) = &i.last_reload_error {
                text += &format!(", last reload refused: {e}");
            }
            Some(text)
        })
        .collect()
}

/// The ids of the live instances concerned by `expected`.
pub fn serving<'a>(instances: &'a [Instance], expected: &Expected) -> Vec<&'a str> {
    instances
        .iter()
        .filter(|i| expected.concerns(i))
        .map(|i| i.instance_id.as_str())
        .collect()
}

/// Reads the registries of `waits` until every live instance concerned has
/// acknowledged, or `timeout` passes.
///
/// # Errors
/// A registry that cannot be read.
pub async fn wait(
    fleet: &FleetConfig,
    waits: &[Waiting<'_>],
    timeout: Duration,
) -> Result<Waited, WaitError> {
    let started = Instant::now();
    loop {
        let mut late = Vec::new();
        let mut waited_for = BTreeSet::new();
        for w in waits {
            let instances = registry::read(w.client, fleet)
                .await
                .map_err(|source| WaitError {
                    database: w.database.clone(),
                    source,
                })?;
            late.extend(laggards(&instances, &w.expected));
            waited_for.extend(
                serving(&instances, &w.expected)
                    .into_iter()
                    .map(str::to_owned),
            );
        }
        if late.is_empty() {
            return Ok(Waited::Acknowledged {
                instances: waited_for.len(),
                after: started.elapsed(),
            });
        }
        if started.elapsed() >= timeout {
            // An instance registered in several databases is named once.
            let mut seen = BTreeSet::new();
            late.retain(|l| seen.insert(l.clone()));
            return Ok(Waited::Lagging(late));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, version: i64, phases: &[(&str, &str)], liveness: Liveness) -> Instance {
        let phases: Vec<_> = phases.iter().map(|&(r, p)| (r, p, None)).collect();
        Instance::for_test(id, version, &phases, liveness)
    }

    #[test]
    fn flip_laggards_are_live_instances_without_the_phase() {
        let fleet = [
            at("done", 7, &[("r", "migrate")], Liveness::Live),
            at("file-mode-done", 2, &[("r", "migrate")], Liveness::Live),
            at("behind", 6, &[("r", "expand")], Liveness::Live),
            at("file-mode", 40, &[("r", "expand")], Liveness::Live),
            at("stale", 1, &[("r", "expand")], Liveness::Stale),
            at("no-rule", 1, &[], Liveness::Live),
        ];
        let expected = Expected::phase("r", Phase::Migrate);
        let late = laggards(&fleet, &expected);
        assert_eq!(late.len(), 2, "{late:?}");
        assert!(
            late[0].starts_with("behind (rules version 6, r in expand"),
            "{late:?}"
        );
        assert!(late[1].starts_with("file-mode"), "{late:?}");
        assert_eq!(serving(&fleet, &expected).len(), 4);
    }

    #[test]
    fn push_waits_for_added_rules_and_for_removed_ones_to_go() {
        let expected = Expected {
            scope: BTreeSet::from(["old".into(), "kept".into(), "added".into()]),
            wanted: vec![
                ("kept".into(), Phase::Migrate),
                ("added".into(), Phase::Expand),
            ],
            gone: vec!["old".into()],
        };
        let fleet = [
            at(
                "done",
                4,
                &[("kept", "migrate"), ("added", "expand")],
                Liveness::Live,
            ),
            at(
                "before",
                3,
                &[("kept", "migrate"), ("old", "expand")],
                Liveness::Live,
            ),
            at("other-rules", 9, &[("elsewhere", "expand")], Liveness::Live),
        ];
        let late = laggards(&fleet, &expected);
        assert_eq!(
            late,
            ["before (rules version 3, added not served, old still served)"]
        );
        assert_eq!(serving(&fleet, &expected), ["done", "before"]);
    }
}
