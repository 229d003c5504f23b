//! `pgshim status`: for every rule, where the migration stands and the next safe step,
//! from the config, the live catalog and the `pgshim` schema.
use std::collections::HashMap;

use tokio_postgres::Client;

use super::bypass::{self, Bypass};
use super::checkpoint;
use super::error::OpsError;
use super::guard::{self, LastVerify};
use super::target::Target;
use crate::config::Config;
use crate::fleet::registry::{self, Instance, Liveness};
use crate::fleet::registry_database;
use crate::fleet::retire;
use crate::rewrite::{Phase, Rule, RuleSet};
use crate::usage::summary::{self, Reported, Summary};

/// One rule's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleStatus {
    /// The rule.
    pub rule: String,
    /// The database looked at, when one could be chosen.
    pub database: Option<String>,
    /// `schema.table`.
    pub table: String,
    /// The phase in the config.
    pub phase: String,
    /// Whether the table exists.
    pub table_exists: bool,
    /// Old columns the table lacks.
    pub old_missing: Vec<String>,
    /// Since when pgshim no longer writes the old columns, left from a `plan --phase
    /// contract --apply` that was stopped between retiring and dropping them.
    pub old_retired_since: Option<String>,
    /// New columns the table lacks.
    pub new_missing: Vec<String>,
    /// The backfill checkpoint, if a backfill ever started.
    pub backfill: Option<Backfill>,
    /// The last complete verify, if any.
    pub verify: Option<Verify>,
    /// The database whose fleet registry speaks for this rule.
    pub registry_database: String,
    /// Every registered instance that has this rule, with the phase it has in force.
    pub instances: Vec<InstancePhase>,
    /// Instances whose phase differs from the config's, if any.
    pub disagreement: Option<String>,
    /// Live instances registered in the same database whose config lacks this
    /// rule: they pass its table's statements through unrewritten.
    pub without_rule: Vec<String>,
    /// Which shapes clients used, summed over the live instances that report the rule;
    /// `None` when the registry could not be read.
    pub usage: Option<Summary>,
    /// Views, functions and triggers that use the mapped columns inside Postgres.
    pub bypass: Vec<Bypass>,
    /// Why `plan --phase contract --apply` would refuse to drop the old columns now.
    pub contract_blocked: Option<String>,
    /// What to do next, as a command or config change.
    pub next: String,
    /// Why the rule could not be inspected, if it could not.
    pub error: Option<String>,
}

/// One instance's view of a rule, from the fleet registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstancePhase {
    /// The instance.
    pub instance_id: String,
    /// The phase it has in force.
    pub phase: String,
    /// Live, or stale (missed heartbeats; may still be serving).
    pub liveness: Liveness,
    /// Seconds since its last heartbeat.
    pub last_beat_secs_ago: i64,
    /// Its rules version.
    pub rules_version: i64,
    /// Checksum of its config file.
    pub config_checksum: String,
    /// Client sessions open at its last beat.
    pub sessions: i64,
    /// pgshim's version.
    pub version: String,
    /// Why its last reload changed nothing, unless a later one succeeded.
    pub last_reload_error: Option<String>,
}

/// A backfill checkpoint, as status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Backfill {
    /// running, paused or done.
    pub state: String,
    /// Rows filled.
    pub rows_done: i64,
    /// Rows visited.
    pub rows_scanned: i64,
    /// When the last batch committed.
    pub updated_at: String,
}

/// A verify result, as status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verify {
    /// Nothing left, nothing disagrees.
    pub ok: bool,
    /// Rows not migrated.
    pub not_migrated: i64,
    /// Rows that disagree.
    pub mismatched: i64,
    /// When it finished.
    pub finished_at: String,
    /// It finished before the backfill did, so it says nothing about the filled rows.
    pub stale: bool,
}

/// The status of every rule in `config`; `database` serves rules without their own.
///
/// # Errors
/// [`OpsError::Rules`] when the rules are invalid. Per-rule problems (unreachable
/// database, missing table) are reported in [`RuleStatus::error`] instead.
pub async fn status(config: &Config, database: Option<&str>) -> Result<Vec<RuleStatus>, OpsError> {
    let rules = RuleSet::from_configs(&config.rule)?;
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut out = Vec::new();
    for rule in rules.rules() {
        let mut st = RuleStatus::new(rule);
        match Target::resolve(config, &rule.id, database) {
            Err(e) => st.error = Some(e.to_string()),
            Ok(target) => {
                st.database = Some(target.database.clone());
                if let Err(e) = inspect(config, &target, &mut clients, &mut st).await {
                    st.error = Some(e.to_string());
                }
            }
        }
        st.next = next_step(rule, &st);
        out.push(st);
    }
    Ok(out)
}

async fn inspect(
    config: &Config,
    target: &Target,
    clients: &mut HashMap<String, Client>,
    st: &mut RuleStatus,
) -> Result<(), OpsError> {
    if !clients.contains_key(&target.database) {
        let client = target.connect(config).await?;
        clients.insert(target.database.clone(), client);
    }
    let registry_db = registry_database(&target.rule, &config.fleet.database).to_owned();
    if !clients.contains_key(&registry_db) {
        let other = Target {
            rule: target.rule.clone(),
            database: registry_db.clone(),
        };
        let client = other.connect(config).await?;
        clients.insert(registry_db.clone(), client);
    }
    let fleet = match clients.get(&registry_db) {
        Some(client) => registry::read(client, &config.fleet)
            .await
            .map_err(OpsError::db("reading the fleet registry (pgshim.instance)"))?,
        None => Vec::new(),
    };
    let (fleet, others): (Vec<Instance>, Vec<Instance>) = fleet
        .into_iter()
        .partition(|i| i.phases.contains_key(&target.rule.id));
    st.without_rule = others
        .into_iter()
        .filter(|i| i.liveness == Liveness::Live)
        .map(|i| i.instance_id)
        .collect();
    st.registry_database = registry_db.clone();
    st.instances = fleet
        .iter()
        .map(|i| InstancePhase::new(i, &target.rule.id))
        .collect();
    st.disagreement = disagreement(&st.phase, &st.instances);
    st.usage = Some(usage(&fleet, &target.rule.id));
    let Some(client) = clients.get(&target.database) else {
        return Ok(());
    };
    let info = match target.table_info(client).await {
        Ok(info) => info,
        Err(OpsError::MissingTable { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    st.table_exists = true;
    let missing = |cols: &[String]| -> Vec<String> {
        cols.iter()
            .filter(|c| info.column(c).is_none())
            .cloned()
            .collect()
    };
    st.old_missing = missing(&target.rule.old);
    st.new_missing = missing(&target.rule.new);
    if st.old_missing.len() < target.rule.old.len() {
        st.old_retired_since = retire::since(client, &target.rule.id)
            .await
            .map_err(OpsError::db("reading pgshim.retiring"))?;
    }
    inspect_bypass(client, target, st).await?;
    if !checkpoint::schema_exists(client).await? {
        return Ok(());
    }
    let id = &target.rule.id;
    let row = client
        .query_opt(
            "SELECT state, rows_done, rows_scanned, updated_at::text FROM pgshim.backfill_progress WHERE rule_id = $1",
            &[id],
        )
        .await
        .map_err(OpsError::db("reading the backfill checkpoint"))?;
    st.backfill = row.map(|r| Backfill {
        state: r.get(0),
        rows_done: r.get(1),
        rows_scanned: r.get(2),
        updated_at: r.get(3),
    });
    let row = client
        .query_opt(
            "SELECT v.ok, v.not_migrated, v.mismatched, v.finished_at::text, \
                    COALESCE(v.finished_at < b.finished_at OR b.state <> 'done', false), \
                    v.finished_at \
             FROM pgshim.verify_result v LEFT JOIN pgshim.backfill_progress b USING (rule_id) \
             WHERE v.rule_id = $1",
            &[id],
        )
        .await
        .map_err(OpsError::db("reading the last verify result"))?;
    let last = row.as_ref().map(|r| LastVerify {
        ok: r.get(0),
        finished_at: r.get(5),
    });
    st.verify = row.map(|r| Verify {
        ok: r.get(0),
        not_migrated: r.get(1),
        mismatched: r.get(2),
        finished_at: r.get(3),
        stale: r.get(4),
    });
    let old_left = st.old_missing.len() < target.rule.old.len();
    if target.rule.phase == Phase::Contract && old_left {
        st.contract_blocked = guard::decide(&target.rule.id, &registry_db, &fleet, last).err();
    }
    Ok(())
}

/// `rule`'s usage over the live instances of `fleet`: stale ones may have stopped
/// serving, and their counts would make the old names look used.
fn usage(fleet: &[Instance], rule: &str) -> Summary {
    let reported = fleet
        .iter()
        .filter(|i| i.liveness == Liveness::Live)
        .filter_map(|i| {
            Some(Reported {
                report: i.usage.as_ref()?,
                age_ms: i.age_ms,
                started_at: &i.started_at,
            })
        });
    summary::summarize(rule, reported)
}

/// Lists the objects that use the rule's columns without going through pgshim.
async fn inspect_bypass(
    client: &Client,
    target: &Target,
    st: &mut RuleStatus,
) -> Result<(), OpsError> {
    st.bypass = bypass::find(client, target).await?;
    Ok(())
}

/// Which instances have another phase in force than the config says.
fn disagreement(config_phase: &str, instances: &[InstancePhase]) -> Option<String> {
    let off: Vec<String> = instances
        .iter()
        .filter(|i| i.phase != config_phase)
        .map(|i| {
            let stale = if i.liveness == Liveness::Stale {
                ", stale"
            } else {
                ""
            };
            format!("{} ({}{stale})", i.instance_id, i.phase)
        })
        .collect();
    if off.is_empty() {
        return None;
    }
    Some(format!(
        "the config says {config_phase} but these instances have another phase in force: {}",
        off.join(", ")
    ))
}

/// The next safe step for a rule in this state.
fn next_step(rule: &Rule, st: &RuleStatus) -> String {
    let id = &rule.id;
    if st.error.is_some() {
        return "fix the error above, then rerun `pgshim status`".into();
    }
    if st.disagreement.is_some() {
        return format!("bring every instance to phase {}: fix their proxy.toml and reload them (a refused reload is in their log and /rules), then rerun `pgshim status`", rule.phase);
    }
    if !st.table_exists {
        return format!("create table {} (or fix the rule's `table`)", st.table);
    }
    if !st.new_missing.is_empty() {
        return match rule.phase {
            Phase::Contract => "the new columns are missing, so pgshim cannot serve phase contract: set phase = \"expand\" and add them".into(),
            _ => format!("add the new columns: pgshim plan {id} --phase expand --apply"),
        };
    }
    if st.old_missing.len() == rule.old.len() {
        return match rule.phase {
            Phase::Contract => "migration complete: the old columns are gone; remove the rule once no client uses the old names".into(),
            _ => "the old columns are gone: set phase = \"contract\" and reload".into(),
        };
    }
    if let Some(since) = &st.old_retired_since {
        return format!("pgshim has not written the old columns since {since}: a `plan --phase contract --apply` is dropping them, or stopped before it could. If none is running, rerun `pgshim plan {id} --phase contract --apply` to drop them; to keep them instead, DELETE FROM pgshim.retiring WHERE rule = '{id}', then run `pgshim verify {id} --repair` before stepping back to migrate or expand");
    }
    match st.backfill.as_ref().map(|b| b.state.as_str()) {
        None | Some("running") if rule.phase != Phase::Contract => {
            return format!("fill the rows that have not migrated: pgshim backfill {id}")
        }
        Some("paused") => return format!("the backfill is paused: pgshim backfill {id} --resume"),
        _ => {}
    }
    match &st.verify {
        Some(v) if v.ok && !v.stale => {}
        Some(v) if !v.ok && !v.stale => {
            return format!("the last verify found {} unmigrated and {} disagreeing rows: rewrite them from the phase's source of truth: pgshim verify {id} --repair", v.not_migrated, v.mismatched)
        }
        _ if rule.phase == Phase::Contract => {}
        _ => return format!("prove both shapes agree: pgshim verify {id}"),
    }
    match rule.phase {
        Phase::Expand => "set phase = \"migrate\" and reload: the new shape becomes the source of truth".into(),
        Phase::Migrate => format!("once every app uses the new shape: pgshim plan {id} --phase contract --apply (NOT NULL on the new columns), set phase = \"contract\", reload, and rerun it to drop the old columns"),
        Phase::Contract => match &st.contract_blocked {
            Some(why) => format!("not yet safe to drop the old columns: {why}"),
            None => format!("drop the old columns: pgshim plan {id} --phase contract --apply"),
        },
    }
}

// === impl RuleStatus ===

impl RuleStatus {
    fn new(rule: &Rule) -> RuleStatus {
        RuleStatus {
            rule: rule.id.clone(),
            database: rule.database.clone(),
            table: rule.qualified_table(),
            phase: rule.phase.to_string(),
            table_exists: false,
            old_missing: Vec::new(),
            old_retired_since: None,
            new_missing: Vec::new(),
            backfill: None,
            verify: None,
            registry_database: String::new(),
            instances: Vec::new(),
            disagreement: None,
            without_rule: Vec::new(),
            usage: None,
            bypass: Vec::new(),
            contract_blocked: None,
            next: String::new(),
            error: None,
        }
    }

    /// Both the old and the new columns exist physically.
    pub fn both_shapes(&self) -> bool {
        self.table_exists && self.old_missing.is_empty() && self.new_missing.is_empty()
    }
}

// === impl InstancePhase ===

impl InstancePhase {
    fn new(i: &Instance, rule: &str) -> InstancePhase {
        InstancePhase {
            instance_id: i.instance_id.clone(),
            phase: i
                .phases
                .get(rule)
                .map(|p| p.phase.clone())
                .unwrap_or_default(),
            liveness: i.liveness,
            last_beat_secs_ago: i.age_ms.max(0) / 1000,
            rules_version: i.rules_version,
            config_checksum: i.config_checksum.clone(),
            sessions: i.sessions,
            version: i.version.clone(),
            last_reload_error: i.last_reload_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, phase: &str, liveness: Liveness) -> InstancePhase {
        InstancePhase {
            instance_id: id.into(),
            phase: phase.into(),
            liveness,
            last_beat_secs_ago: 0,
            rules_version: 1,
            config_checksum: String::new(),
            sessions: 0,
            version: String::new(),
            last_reload_error: None,
        }
    }

    #[test]
    fn disagreement_names_the_instances_off_the_config() {
        let fleet = [
            at("a", "migrate", Liveness::Live),
            at("b", "expand", Liveness::Live),
            at("c", "expand", Liveness::Stale),
        ];
        let text = disagreement("migrate", &fleet).unwrap();
        assert!(text.contains("b (expand), c (expand, stale)"), "{text}");
        assert!(!text.contains("a ("), "{text}");
        assert!(disagreement("migrate", &fleet[..1]).is_none());
    }
}
