//! Integration tests: pgshim in front of a real, throwaway PostgreSQL cluster,
//! driven by real clients (tokio-postgres, `psql`, `pgbench`) and by raw bytes.
//!
//! One binary, one module per feature; the harness is in [`support`]. Run with
//! `cargo test --test it`. The PostgreSQL server binaries must be installed
//! (`sudo apt-get install -y postgresql`); the run fails, never skips, without them.
mod support;

mod admin_api;
mod admin_auth;
mod auth;
mod bad_input;
mod cancel;
mod cancel_order;
mod cancel_tls;
mod catalog_changes;
mod cli;
mod cli_exit;
mod client_tls;
mod copy;
mod db_state;
mod deep_statements;
mod demo;
mod differential;
mod examples;
mod fleet_contract;
mod fleet_guard;
mod fleet_registry;
mod fleet_rules;
mod fleet_status;
mod fuzz_traffic;
mod limits;
mod log_sink;
mod memory_limits;
mod migrate_index;
mod notify;
mod ops_backfill;
mod ops_plan;
mod ops_status;
mod ops_verify;
mod pgbench;
mod postgres_errors;
mod pre_auth;
mod protocol;
mod psql;
mod queries;
mod reload_consistency;
mod reload_guards;
mod reload_invalid;
mod reload_pgbench;
mod reload_triggers;
mod reprepare_shape;
mod rewrite_fewer_refusals;
mod rewrite_outer_join;
mod rewrite_phases;
mod rewrite_refusals;
mod rewrite_types;
mod rewrite_writes;
mod search_path;
mod server_fatal;
mod shutdown;
mod startup_silence;
mod tls;
mod upstream;
mod upstream_down_at_start;
mod usage;
