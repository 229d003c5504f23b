//! Whether the old columns of a rule may be dropped, judged from the fleet.
//!
//! Dropping is the one step of a migration that loses data, and one proxy's
//! config file says nothing about the others: an instance whose reload was
//! refused still serves the old phase. So the drop waits until every instance
//! in the registry has the rule in contract, and until a clean `verify`
//! finished after the last of them reached migrate (before that, an instance
//! still in expand could write rows whose new columns the verify never saw).
use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use super::{checkpoint, verify, OpsError, Target};
use crate::clock::unix_ms;
use crate::config::Config;
use crate::fleet::registry::{self, Instance, Liveness};
use crate::fleet::registry_database;

/// The drop is refused; the message says why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("refusing to drop the old columns of rule {rule}: {reason}\n(--force drops them anyway, at the risk of losing data that only the old columns hold)")]
pub struct ContractRefused {
    /// The rule.
    pub rule: String,
    /// Why, and what to do.
    pub reason: String,
}

/// The last verify of a rule, as the guard needs it.
#[derive(Debug, Clone, Copy)]
pub struct LastVerify {
    /// It ran to the end and found nothing to fix.
    pub ok: bool,
    /// When it finished (database clock).
    pub finished_at: SystemTime,
}

/// Reads the registry and the last verify, and decides; `client` is connected
/// to the target's database.
///
/// # Errors
/// [`ContractRefused`] (inside [`GuardError::Refused`]), or a database error.
pub async fn check_contract(
    config: &Config,
    target: &Target,
    client: &Client,
) -> Result<(), GuardError> {
    let registry_db = registry_database(&target.rule, &config.fleet.database);
    let instances = read_registry(config, target, client, registry_db).await?;
    let last = if checkpoint::schema_exists(client).await? {
        verify::last(client, &target.rule.id)
            .await?
            .map(|(report, finished_at)| LastVerify {
                ok: report.ok(),
                finished_at,
            })
    } else {
        None
    };
    decide(&target.rule.id, registry_db, &instances, last).map_err(|reason| {
        GuardError::Refused(ContractRefused {
            rule: target.rule.id.clone(),
            reason,
        })
    })
}

/// Why the guard did not allow the drop.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The fleet is not ready.
    #[error(transparent)]
    Refused(ContractRefused),
    /// The registry or the verify result could not be read.
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// The registry rows of `registry_db`, read over `client` when that is the
/// target's database.
///
/// # Errors
/// [`OpsError`] when the registry database cannot be reached or read.
pub async fn read_registry(
    config: &Config,
    target: &Target,
    client: &Client,
    registry_db: &str,
) -> Result<Vec<Instance>, OpsError> {
    let what = "reading the fleet registry (pgshim.instance)";
    let other = registry_client(config, target, registry_db).await?;
    registry::read(other.as_ref().unwrap_or(client), &config.fleet)
        .await
        .map_err(OpsError::db(what))
}

/// A connection to `registry_db`, or `None` when that is the target's own
/// database (whose connection the caller has).
///
/// # Errors
/// [`OpsError`] when the database cannot be reached.
pub async fn registry_client(
    config: &Config,
    target: &Target,
    registry_db: &str,
) -> Result<Option<Client>, OpsError> {
    if registry_db == target.database {
        return Ok(None);
    }
    let other = Target {
        rule: target.rule.clone(),
        database: registry_db.to_owned(),
    };
    other.connect(config).await.map(Some)
}

/// Allows the drop, or says why not and what to do.
///
/// # Errors
/// The reason, as a sentence for the operator.
pub fn decide(
    rule: &str,
    registry_db: &str,
    instances: &[Instance],
    last: Option<LastVerify>,
) -> Result<(), String> {
    let serving: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.phases.contains_key(rule))
        .collect();
    if serving.is_empty() {
        return Err(format!("no running pgshim reports the rule in the fleet registry of database {registry_db:?}, so nothing shows that every proxy is in contract; start or reload the proxies (they register within seconds; `pgshim status` lists them), or if no pgshim serves this table, rerun with --force"));
    }
    let stale: Vec<String> = serving
        .iter()
        .filter(|i| i.liveness == Liveness::Stale)
        .map(|i| {
            format!(
                "{} (last beat {} s ago)",
                i.instance_id,
                i.age_ms.max(0) / 1000
            )
        })
        .collect();
    if !stale.is_empty() {
        return Err(format!("instances missed their heartbeats and may still serve an older phase: {}; wait until they are back in contract or, if they are gone for good, until the registry forgets them ([fleet] forget_after_ms)", stale.join(", ")));
    }
    let behind: Vec<String> = serving
        .iter()
        .filter(|i| i.phases[rule].phase != "contract")
        .map(|i| format!("{} ({})", i.instance_id, i.phases[rule].phase))
        .collect();
    if !behind.is_empty() {
        return Err(format!("not every instance has the rule in contract: {}; set phase = \"contract\" in their proxy.toml and reload them, then rerun", behind.join(", ")));
    }
    let reached = serving
        .iter()
        .map(|i| i.phases[rule].migrate_since_ms.unwrap_or(u64::MAX))
        .max()
        .unwrap_or(u64::MAX);
    let Some(last) = last else {
        return Err(format!("no verify has been recorded: run `pgshim verify {rule}` and fix what it finds, then rerun"));
    };
    if !last.ok {
        return Err(format!("the last verify was not clean (or was interrupted): fix the rows it names (`pgshim backfill {rule} --restart` fills unmigrated ones), run `pgshim verify {rule}` again, then rerun"));
    }
    if unix_ms(last.finished_at) < reached {
        let ago = |ms: u64| {
            let now = unix_ms(SystemTime::now());
            Duration::from_millis(now.saturating_sub(ms)).as_secs()
        };
        return Err(format!("the last clean verify finished {} s ago, before the last instance reached migrate ({} s ago), so rows written meanwhile were never checked: run `pgshim verify {rule}` again, then rerun", ago(unix_ms(last.finished_at)), ago(reached)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::registry::Phases;

    fn instance(id: &str, phase: &str, since: Option<u64>, liveness: Liveness) -> Instance {
        let age_ms = if liveness == Liveness::Live {
            1_000
        } else {
            20_000
        };
        Instance {
            version: "0".into(),
            age_ms,
            ..Instance::for_test(id, 1, &[("r", phase, since)], liveness)
        }
    }

    fn verified_at(ms: u64, ok: bool) -> Option<LastVerify> {
        Some(LastVerify {
            ok,
            finished_at: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        })
    }

    #[test]
    fn allowed_when_all_contract_and_verified_after_the_last_migrate() {
        let fleet = [
            instance("a", "contract", Some(100), Liveness::Live),
            instance("b", "contract", Some(200), Liveness::Live),
        ];
        assert!(decide("r", "db", &fleet, verified_at(300, true)).is_ok());
    }

    #[test]
    fn refused_with_the_reason() {
        let live = |p, s| instance("a", p, s, Liveness::Live);
        let no_one = decide("r", "db", &[], verified_at(300, true)).unwrap_err();
        assert!(no_one.contains("--force"), "{no_one}");
        let fleet = [
            live("contract", Some(1)),
            instance("b", "migrate", Some(1), Liveness::Live),
        ];
        let behind = decide("r", "db", &fleet, verified_at(300, true)).unwrap_err();
        assert!(behind.contains("b (migrate)"), "{behind}");
        let fleet = [
            live("contract", Some(1)),
            instance("b", "contract", Some(1), Liveness::Stale),
        ];
        let stale = decide("r", "db", &fleet, verified_at(300, true)).unwrap_err();
        assert!(stale.contains("b (last beat 20 s ago)"), "{stale}");
        let fleet = [live("contract", Some(500))];
        let early = decide("r", "db", &fleet, verified_at(300, true)).unwrap_err();
        assert!(
            early.contains("before the last instance reached migrate"),
            "{early}"
        );
        let dirty = decide("r", "db", &fleet, verified_at(900, false)).unwrap_err();
        assert!(dirty.contains("not clean"), "{dirty}");
        let never = decide("r", "db", &fleet, None).unwrap_err();
        assert!(never.contains("pgshim verify r"), "{never}");
    }

    #[test]
    fn instances_without_the_rule_do_not_count() {
        let mut other = instance("x", "expand", None, Liveness::Stale);
        other.phases = Phases::new();
        let fleet = [other, instance("a", "contract", Some(1), Liveness::Live)];
        assert!(decide("r", "db", &fleet, verified_at(300, true)).is_ok());
    }
}
