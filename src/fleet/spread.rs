//! The fleet phase guard: a reload does not put a rule in a phase two steps
//! away from the phase another live instance has in force.
//!
//! Expand and contract write different shapes (expand writes the old columns
//! only, contract the new ones only), so with one instance in each, rows
//! written through one are wrong for the other. Migrate writes both and is
//! compatible with either neighbour, which is why one step is always allowed.
//! The check reads the registry at reload time; when the registry cannot be
//! read the reload goes ahead with a warning (the catalog check has just
//! reached Postgres, so this is rare, and an instance must not be stuck
//! because the registry is), and stale instances do not count.
use std::collections::BTreeMap;

use super::registry::{self, Instance, Liveness};
use super::registry_database;
use crate::rewrite::{Phase, RuleSet};
use crate::settings::Settings;

/// Refuses `new` when a rule whose phase it changes would be two steps from
/// a live instance other than `own_id`; rules with `force = true` are exempt.
///
/// # Errors
/// A message naming the rule, the instance and what to do.
pub async fn check(
    settings: &Settings,
    own_id: &str,
    old: &RuleSet,
    new: &RuleSet,
) -> Result<(), String> {
    let config = &settings.config;
    if config.upstream.user.is_none() {
        return Ok(());
    }
    let mut by_db: BTreeMap<String, Vec<(String, Phase)>> = BTreeMap::new();
    for rule in new.rules() {
        let before = old.rules().iter().find(|r| r.id == rule.id);
        if rule.force || before.is_some_and(|b| b.phase == rule.phase) {
            continue;
        }
        let db = registry_database(rule, &config.fleet.database).to_owned();
        by_db
            .entry(db)
            .or_default()
            .push((rule.id.clone(), rule.phase));
    }
    for (db, changes) in by_db {
        let instances = match read(settings, &db).await {
            Ok(instances) => instances,
            Err(e) => {
                tracing::warn!(database = %db, error = %e, "cannot read the fleet registry; reloading without the fleet phase guard");
                continue;
            }
        };
        decide(own_id, &changes, &instances)?;
    }
    Ok(())
}

async fn read(settings: &Settings, db: &str) -> Result<Vec<Instance>, String> {
    let client = crate::introspect::connect(&settings.config.upstream, &settings.upstream, db)
        .await
        .map_err(|e| e.to_string())?;
    registry::read(&client, &settings.config.fleet)
        .await
        .map_err(|e| e.to_string())
}

/// The decision, given the registry.
///
/// # Errors
/// A message naming the rule, the instance and what to do.
pub fn decide(
    own_id: &str,
    changes: &[(String, Phase)],
    instances: &[Instance],
) -> Result<(), String> {
    for (rule, phase) in changes {
        for i in instances {
            if i.instance_id == own_id || i.liveness != Liveness::Live {
                continue;
            }
            let Some(theirs) = i.phases.get(rule).and_then(|p| rank(&p.phase)) else {
                continue;
            };
            if theirs.abs_diff(rank_of(*phase)) > 1 {
                return Err(format!(
                    "rule {rule}: phase {phase} is two steps from instance {}, which has {} in force; move every instance to migrate first (`pgshim status` lists them), or set force = true on the rule",
                    i.instance_id, i.phases[rule].phase
                ));
            }
        }
    }
    Ok(())
}

fn rank_of(phase: Phase) -> u8 {
    match phase {
        Phase::Expand => 0,
        Phase::Migrate => 1,
        Phase::Contract => 2,
    }
}

fn rank(phase: &str) -> Option<u8> {
    match phase {
        "expand" => Some(0),
        "migrate" => Some(1),
        "contract" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, phase: &str, liveness: Liveness) -> Instance {
        Instance::for_test(id, 1, &[("r", phase, None)], liveness)
    }

    #[test]
    fn two_steps_from_a_live_instance_refused() {
        let fleet = [
            at("me", "migrate", Liveness::Live),
            at("b", "expand", Liveness::Live),
        ];
        let err = decide("me", &[("r".into(), Phase::Contract)], &fleet).unwrap_err();
        assert!(
            err.contains("instance b") && err.contains("expand"),
            "{err}"
        );
        assert!(decide("me", &[("r".into(), Phase::Migrate)], &fleet).is_ok());
    }

    #[test]
    fn own_row_and_stale_rows_do_not_count() {
        let fleet = [
            at("me", "expand", Liveness::Live),
            at("b", "expand", Liveness::Stale),
        ];
        assert!(decide("me", &[("r".into(), Phase::Contract)], &fleet).is_ok());
    }
}
