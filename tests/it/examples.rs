//! The configuration files the repository ships parse with pgshim's own loader,
//! and the Docker files agree with the config they mount: an example that does
//! not load is worse than none.
use std::path::{Path, PathBuf};

use pgshim::rewrite::RuleSet;
use pgshim::Config;

/// A file of the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Loads `path` and validates its rules, as `pgshim serve` does.
fn load(path: &str) -> (Config, RuleSet) {
    let config = Config::load(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rules = RuleSet::from_configs(&config.rule).unwrap_or_else(|e| panic!("{path}: {e}"));
    (config, rules)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn example_migration_config_is_complete_and_loads() {
    let (config, rules) = load("examples/migration.toml");
    assert_eq!(rules.rules().len(), 1);
    let rule = &rules.rules()[0];
    assert_eq!(rule.id, "users-full-name");
    assert_eq!(rule.database.as_deref(), Some("app"));
    assert!(config.admin.is_some(), "[admin] missing");
    assert!(config.upstream.user.is_some(), "[upstream] user missing");
    assert!(
        config.upstream.password_env.is_some(),
        "password_env missing"
    );
}

#[test]
fn top_level_proxy_toml_loads() {
    load("proxy.toml");
}

#[test]
fn docker_config_loads_and_matches_compose_and_image() {
    let (config, _) = load("docker/pgshim/proxy.toml");
    assert!(config.listen.starts_with("0.0.0.0:"), "{}", config.listen);
    assert_eq!(config.upstream.host, "postgres");

    let compose = read("docker/docker-compose.yml");
    let password_env = config.upstream.password_env.expect("password_env");
    assert!(
        compose.contains(&format!("{password_env}: ")),
        "compose does not set {password_env}"
    );
    assert!(
        compose.contains("- ./pgshim:/etc/pgshim:ro"),
        "compose must mount the config directory"
    );

    let admin = config.admin.expect("[admin]");
    let port = admin.listen.rsplit(':').next().expect("admin port");
    let dockerfile = read("docker/Dockerfile");
    assert!(
        dockerfile.contains(&format!("/dev/tcp/127.0.0.1/{port} ")),
        "HEALTHCHECK does not call /healthz on the admin port {port}"
    );
    assert!(dockerfile.contains("/healthz"));
    assert!(dockerfile.contains("COPY docker/pgshim/ /etc/pgshim/"));
    assert!(
        !dockerfile.contains("rust:1-"),
        "the builder image must be pinned"
    );
}
