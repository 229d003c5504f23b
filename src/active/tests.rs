use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::databases::KEPT_UNUSED;
use super::*;
use crate::config::Config;

fn config(text: &str) -> Config {
    Config::from_toml(text, std::path::Path::new("test.toml")).unwrap()
}

fn version(config: &Config) -> RulesVersion {
    let settings = Settings::new(Arc::new(config.clone())).unwrap();
    RulesVersion::new(Arc::new(settings), 1).unwrap()
}

#[tokio::test]
async fn many_database_names_keep_a_bounded_state() {
    let config = config("");
    let version = version(&config);
    let held: Vec<_> = futures_held(&version, 10).await;
    for i in 0..10_000 {
        let db = version.for_database(&format!("db{i}")).await;
        assert!(db.state.is_ok());
    }
    assert!(
        version.databases_held() <= KEPT_UNUSED + held.len(),
        "{} databases held",
        version.databases_held()
    );
    // Databases in use are never forgotten: they still share their state.
    for (i, db) in held.iter().enumerate() {
        let again = version.for_database(&format!("held{i}")).await;
        assert!(
            Arc::ptr_eq(db, &again),
            "held{i} was forgotten while in use"
        );
    }
}

async fn futures_held(version: &RulesVersion, n: usize) -> Vec<Arc<DbRules>> {
    let mut held = Vec::new();
    for i in 0..n {
        held.push(version.for_database(&format!("held{i}")).await);
    }
    held
}

/// A "server" that accepts and hangs up, counting connections.
async fn hang_up_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (port, count)
}

const RULE: &str =
    "[[rule]]\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"expand\"\n";

#[tokio::test]
async fn failed_catalog_read_is_remembered_not_retried_by_every_session() {
    let (port, connections) = hang_up_server().await;
    let config = config(&format!(
        "[upstream]\nport = {port}\ntls = \"disable\"\nuser = \"pgshim\"\n{RULE}"
    ));
    let version = version(&config);
    for _ in 0..50 {
        let db = version.for_database("app").await;
        assert!(db.state.is_err(), "the catalog cannot be read");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // After the window a session tries again.
    tokio::time::sleep(databases::FAILURE_TTL + Duration::from_millis(100)).await;
    let db = version.for_database("app").await;
    assert!(db.state.is_err());
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_named_database_is_pending_not_fatal() {
    let (port, _) = hang_up_server().await;
    let config = config(&format!(
        "[upstream]\nport = {port}\ntls = \"disable\"\nuser = \"pgshim\"\n{RULE}database = \"app\"\n"
    ));
    let settings = Arc::new(Settings::new(Arc::new(config)).unwrap());
    let live = LiveRules::load(Arc::clone(&settings)).await.unwrap();
    let pending = live.current().pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, "app");
    // A reload, by contrast, must not activate rules it could not check.
    assert!(RulesVersion::load(settings, 2).await.is_err());
}
