//! `pgshim status`: every rule's phase, physical shape, backfill progress, last verify
//! result, and the next safe step.
use std::path::Path;

use super::common::{self, OpsArgs};
use crate::fleet::registry::Liveness;
use crate::ops::bypass;
use crate::ops::status::{self, RuleStatus};

/// `pgshim status` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: OpsArgs,
}

/// Runs the subcommand.
///
/// # Errors
/// An unreadable config or invalid rules; and, after the report, an error when any
/// rule could not be inspected (database unreachable, login refused), so scripts
/// and health checks see a non-zero exit.
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let config = common::load(config_path)?;
    let rules =
        common::runtime()?.block_on(status::status(&config, args.common.database.as_deref()))?;
    if args.common.json {
        let values: Vec<serde_json::Value> = rules
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["both_shapes"] = r.both_shapes().into();
                v
            })
            .collect();
        common::print_json(&values)?;
    } else {
        if rules.is_empty() {
            println!("no [[rule]] in {}", config_path.display());
        }
        for r in &rules {
            print_rule(r);
        }
    }
    let failed = rules.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        anyhow::bail!(
            "could not inspect {failed} of {} rules (the reason is in each rule's `error`)",
            rules.len()
        );
    }
    Ok(())
}

fn print_rule(r: &RuleStatus) {
    let db = r.database.as_deref().unwrap_or("?");
    println!(
        "rule {} ({} in database {db}): phase {}",
        r.rule, r.table, r.phase
    );
    if let Some(e) = &r.error {
        println!("  error:    {e}");
    } else {
        print_fleet(r);
        print_usage(r);
        if !r.without_rule.is_empty() {
            println!(
                "  note:     registered here without this rule (statements on its table pass unrewritten): {}",
                r.without_rule.join(", ")
            );
        }
        print_shapes(r);
        print_bypass(r);
    }
    print_progress(r);
    println!("  next:     {}", r.next);
}

/// `usage:    old names last used 3 min ago by billing-v1 (10.0.0.7); ...`
fn print_usage(r: &RuleStatus) {
    if let Some(u) = &r.usage {
        println!("  usage:    {}", u.line());
        for c in u.old_clients.iter().skip(1) {
            let name = if c.application_name.is_empty() {
                "(no application_name)"
            } else {
                &c.application_name
            };
            println!(
                "            also {name} ({}), {} ago",
                c.client_addr,
                crate::usage::summary::ago(c.last_seen_secs_ago)
            );
        }
    }
}

fn print_shapes(r: &RuleStatus) {
    if !r.table_exists {
        println!("  shapes:   table not found");
    } else if r.both_shapes() {
        println!("  shapes:   both present");
    } else {
        let list = |v: &[String]| {
            if v.is_empty() {
                "all present".to_string()
            } else {
                format!("missing {}", v.join(", "))
            }
        };
        println!(
            "  shapes:   old {}; new {}",
            list(&r.old_missing),
            list(&r.new_missing)
        );
    }
    if let Some(since) = &r.old_retired_since {
        println!("  retired:  the old columns, since {since}: no pgshim writes them");
    }
}

fn print_bypass(r: &RuleStatus) {
    if r.bypass.is_empty() {
        return;
    }
    println!("  WARNING:  {}", bypass::warning(r.bypass.len()));
    for b in &r.bypass {
        println!("            {}", bypass::describe(b));
    }
}

fn print_progress(r: &RuleStatus) {
    match &r.backfill {
        Some(b) => println!(
            "  backfill: {} ({} rows filled, {} visited; last batch {})",
            b.state, b.rows_done, b.rows_scanned, b.updated_at
        ),
        None => println!("  backfill: not started"),
    }
    match &r.verify {
        Some(v) => println!(
            "  verify:   {} ({} not migrated, {} disagree; {}{})",
            if v.ok { "ok" } else { "FAILED" },
            v.not_migrated,
            v.mismatched,
            v.finished_at,
            if v.stale {
                ", before the backfill finished"
            } else {
                ""
            }
        ),
        None => println!("  verify:   never run"),
    }
}

fn print_fleet(r: &RuleStatus) {
    let db = &r.registry_database;
    if r.instances.is_empty() {
        println!("  fleet:    no running pgshim reports this rule (registry in database {db})");
        return;
    }
    let stale = r
        .instances
        .iter()
        .filter(|i| i.liveness == Liveness::Stale)
        .count();
    println!(
        "  fleet:    {} instances ({} live, {stale} stale; registry in database {db})",
        r.instances.len(),
        r.instances.len() - stale
    );
    for i in &r.instances {
        let state = match i.liveness {
            Liveness::Live => String::new(),
            Liveness::Stale => ", STALE".into(),
        };
        println!(
            "            {}: {}{state} (rules v{}, {} sessions, config {}, last beat {} s ago)",
            i.instance_id,
            i.phase,
            i.rules_version,
            i.sessions,
            i.config_checksum,
            i.last_beat_secs_ago
        );
        if let Some(e) = &i.last_reload_error {
            println!("              last reload refused: {e}");
        }
    }
    if let Some(d) = &r.disagreement {
        println!("  disagree: {d}");
    }
}
