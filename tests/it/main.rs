//! Integration tests: pgshim in front of a real, throwaway PostgreSQL cluster,
//! driven by real clients (tokio-postgres, `psql`, `pgbench`) and by raw bytes.
//!
//! One binary, one module per feature; the harness is in [`support`]. Run with
//! `cargo test --test it`. The PostgreSQL server binaries must be installed
//! (`sudo apt-get install -y postgresql`); the run fails, never skips, without them.
mod support;

mod admin_api;
mod auth;
mod bad_input;
mod cancel;
mod cli;
mod client_tls;
mod copy;
mod fuzz_traffic;
mod limits;
mod notify;
mod ops_backfill;
mod ops_plan;
mod ops_status;
mod ops_verify;
mod pgbench;
mod protocol;
mod psql;
mod queries;
mod reload_consistency;
mod reload_invalid;
mod reload_pgbench;
mod reload_triggers;
mod rewrite_phases;
mod rewrite_refusals;
mod rewrite_writes;
mod shutdown;
mod tls;
mod upstream;
