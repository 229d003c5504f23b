//! Migration operations: the work around the proxy that teams get wrong by hand.
//!
//! Each operation reads the same `proxy.toml` as the proxy and logs in as pgshim itself
//! (`[upstream] user`), so it needs no other credentials. Progress and results live in a
//! `pgshim` schema in the target database, which makes every step resumable and lets
//! `pgshim status` answer "where are we?" from any shell. Rendering (progress bars,
//! `--json`) is the CLI's job; these modules only report events and results.
//!
//! # Layout
//! - `target`: rule id + database -> the rule, its table, a connection.
//! - `key`: the primary key (or unique NOT NULL columns) tables are walked by.
//! - `checkpoint`: the `pgshim` schema: backfill checkpoints, last verify results.
//! - `retry`: backoff on lock timeouts, deadlocks and serialization failures.
//! - `walk`, `walk_sql`, `throttle`: checkpointed key-range batches, their statements
//!   and the pause between them,
//!   shared by the two operations that rewrite rows:
//! - `backfill`: filling the new columns of unmigrated rows;
//! - `repair`: rewriting disagreeing rows from the phase's source of truth.
//! - `verify`: a batched scan comparing both shapes under the transforms.
//! - `plan`, `indexdef`, `apply`: expand/contract DDL from the live catalog (index
//!   definitions moved onto the new columns), and running it safely.
//! - `retire`: the wait before the drop, until every pgshim stopped writing the old
//!   columns.
//! - `bypass`: views, functions and triggers that use mapped columns inside Postgres.
//! - `status`: every rule's phase, physical shape, progress and next safe step.
//! - `sql`: identifier quoting and durations.

pub mod apply;
pub mod backfill;
pub mod bypass;
pub mod checkpoint;
pub mod error;
pub mod guard;
pub mod indexdef;
pub mod key;
pub mod plan;
pub mod repair;
pub mod retire;
pub mod retry;
pub mod sql;
pub mod status;
pub mod target;
pub mod throttle;
pub mod verify;
pub mod walk;
mod walk_sql;

pub use error::OpsError;
pub use target::Target;
