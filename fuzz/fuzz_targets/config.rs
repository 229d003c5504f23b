//! `proxy.toml` text: parsing and checking never panic, every error reads as
//! a message, and an accepted file's rules are validated as serve and reload
//! do.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pgshim::rewrite::RuleSet;
use pgshim::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text, Path::new("proxy.toml")) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.to_string().contains("proxy.toml"), "{e}");
            return;
        }
    };
    assert!(config.restart_needed(&config).is_empty());
    let _ = config.upstream_addr();
    let _ = (
        config.upstream.connect_timeout(),
        config.limits.startup_timeout(),
        config.limits.shutdown_timeout(),
    );
    match RuleSet::from_configs(&config.rule) {
        Ok(rules) => {
            for (schema, table) in rules.tables() {
                let _ = rules.for_database(&schema);
                let _ = rules.for_database(&table);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
