//! Several pgshim instances on one database: naming them, flipping their
//! phases, and reading what they wrote to the fleet registry.
use std::path::PathBuf;

use serde_json::Value;
use tokio_postgres::Client;

use super::pg::{cluster, run_dir, SUPERUSER};
use super::proxy::{proxy, ProxyBuilder};
use super::reloadable::Reloadable;
use super::unique_name;

/// `[fleet]` with short timings: stale after 3 s (fifteen missed beats, so a
/// loaded machine does not make a live instance look stale), forgotten after 6 s.
pub const FAST: &str =
    "[fleet]\nheartbeat_ms = 200\nstale_after_ms = 3000\nforget_after_ms = 6000\n";

/// A pgshim builder with `instance_id = id`.
pub fn named(id: &str) -> ProxyBuilder {
    proxy().top_level(&format!("instance_id = \"{id}\""))
}

/// A config file for the migration subcommands: `fleet` (a `[fleet]` table,
/// e.g. [`FAST`]) plus `rules`.
pub fn ops_file(fleet: &str, rules: &str) -> PathBuf {
    let path = run_dir().join(format!("{}.toml", unique_name("fleet_ops")));
    let text = proxy()
        .rules(&format!("{fleet}{rules}"))
        .toml("127.0.0.1:0");
    std::fs::write(&path, text).expect("write ops config");
    path
}

/// A superuser session on `database`, which can read the `pgshim` schema.
pub async fn registry(database: &str) -> Client {
    let mut cfg = cluster().direct(SUPERUSER, None);
    cfg.dbname(database);
    super::connect(&cfg)
        .await
        .expect("connect to the registry database")
}

/// One registry row.
#[derive(Debug, Clone)]
pub struct Row {
    /// pgshim's version.
    pub version: String,
    /// Its rules version.
    pub rules_version: i64,
    /// Checksum of its config file.
    pub checksum: String,
    /// Rule id -> `{"phase": .., "migrate_since_ms": ..}`.
    pub phases: Value,
    /// Sessions open.
    pub sessions: i64,
    /// Milliseconds since its last beat.
    pub age_ms: f64,
    /// Why its last reload was refused, if it was.
    pub last_reload_error: Option<String>,
}

/// The registry row of `instance` in `database`, if any.
pub async fn row(client: &Client, instance: &str) -> Option<Row> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgshim.instance') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    client
        .query_opt(
            "SELECT version, rules_version, config_checksum, phases::text, sessions, \
                    (extract(epoch FROM now() - last_beat) * 1000)::float8, last_reload_error \
             FROM pgshim.instance WHERE instance_id = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .map(|r| Row {
            version: r.get(0),
            rules_version: r.get(1),
            checksum: r.get(2),
            phases: serde_json::from_str(r.get(3)).unwrap(),
            sessions: r.get(4),
            age_ms: r.get(5),
            last_reload_error: r.get(6),
        })
}

/// The phase `instance` reports for `rule`, if it has a row with that rule.
pub async fn phase(client: &Client, instance: &str, rule: &str) -> Option<String> {
    let row = row(client, instance).await?;
    row.phases[rule]["phase"].as_str().map(str::to_owned)
}

/// Puts `rules` in `proxy`'s config file and reloads it (must succeed).
pub async fn flip(proxy: &Reloadable, rules: &str) {
    proxy.replace_rules(rules);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "reload: {body}");
}

/// Waits until every instance in `ids` reports `rule` in `phase`.
pub async fn converged(client: &Client, ids: &[&str], rule: &str, phase_wanted: &str) {
    // Generous: on a loaded 2-core machine one instance once took over 20 s.
    super::eventually(
        45,
        &format!("{ids:?} report {rule} in {phase_wanted}"),
        || async {
            for id in ids {
                if phase(client, id, rule).await.as_deref() != Some(phase_wanted) {
                    return false;
                }
            }
            true
        },
    )
    .await;
}
