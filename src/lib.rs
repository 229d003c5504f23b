//! pgshim: a Postgres wire-protocol proxy for expand/contract column migrations.
//!
//! Apps point their connection string at pgshim instead of Postgres. When it has
//! nothing to do, pgshim forwards every message byte for byte, batching writes and
//! allocating nothing per message, so clients behave exactly as on a direct
//! connection.
//!
//! # Layout
//! - [`config`]: `proxy.toml`, parsed and checked before anything listens.
//! - [`protocol`]: bytes <-> messages; framing by header, startup packets, the few
//!   messages pgshim writes itself. No sockets, so it is unit-tested and fuzzable.
//! - `net`: sockets and TLS on both legs (client-facing rustls acceptor, upstream
//!   connector with the `disable`/`prefer`/`require`/`verify-full` policies).
//! - `session`: one task per client: startup negotiation, authentication relay,
//!   the full-duplex forwarding loop and its transaction-state tracking.
//! - [`rewrite`]: pure SQL rewriting for column mapping rules (no I/O).
//! - `introspect`: reads mapped tables' columns (and the relations unqualified
//!   names may resolve to) through pgshim's own login.
//! - `settings` and `active`: the settings and the rules in force, versioned
//!   and swapped together, with per-database catalogs; `runtime`: what every
//!   session, reload, the admin API and the fleet heartbeat share.
//! - `usage`: per rule, which clients still name the old columns, the new ones, or `*`.
//! - `admin`: the admin HTTP listener; `metrics`: the Prometheus metric
//!   families, a leaf every layer counts into.
//! - `reload`: hot reload of `proxy.toml` with validation and the phase guard.
//! - `ops`: migration operations (backfill, verify, plan, status) and their `pgshim`
//!   schema of checkpoints and results.
//! - [`fleet`]: the registry of running instances in Postgres, their heartbeat, and
//!   the guard that keeps `plan --phase contract --apply` from dropping data.
//! - [`server`]: accept loop, connection cap, graceful shutdown.
//! - [`cli`]: the `pgshim` command line.
//! - `error`: the crate error type and how each failure is shown to a client.
#![warn(missing_docs, rust_2018_idioms, clippy::all)]
#![forbid(unsafe_code)]

pub(crate) mod active;
pub(crate) mod admin;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub(crate) mod error;
pub mod fleet;
pub(crate) mod introspect;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod ops;
pub mod protocol;
pub(crate) mod reload;
pub mod rewrite;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod session;
pub(crate) mod settings;
pub(crate) mod usage;

pub use config::Config;
pub use error::Error;
