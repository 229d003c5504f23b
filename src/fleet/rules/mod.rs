//! The rules table, `pgshim.rules`: with `[rules] source = "database"` every
//! instance takes its `[[rule]]`s from here instead of from its own file, so
//! one write (`pgshim rules push`, `pgshim flip`) changes the whole fleet.
//!
//! A row is one rule's TOML table as pushed, with the phase in a column of its
//! own so `flip` changes it without rewriting the text (the column wins over a
//! `phase` key in the text). `pgshim.rules_version` holds one counter that
//! every write bumps; instances acknowledge a write by reporting that counter
//! as their registry `rules_version` once its rules are in force. Every write
//! is one transaction ending in `NOTIFY pgshim_rules`, which Postgres delivers
//! at commit, so a listener never reads a half-written table.
//!
//! The tables live in the control database (`[fleet] database`).
//!
//! The parts: `stored` turns rows into rules and a file's `[[rule]]`s into
//! rows, `table` creates and reads the tables, `write` is what `push` and
//! `flip` write, and `load` puts the table's rules in a config at start and
//! at each reload (the listener that triggers reloads is `crate::reload::listen`).
mod load;
mod stored;
mod table;
mod write;

pub use load::{at_start, connect, overlay};
pub use stored::{from_file_text, Stored, StoredRule};
pub use table::{ensure, read, version};
pub use write::{flip, push};

/// The channel every write notifies.
pub const CHANNEL: &str = "pgshim_rules";

/// Rules that could not be read from or written to the table.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The control database cannot be reached with pgshim's login.
    #[error("cannot connect to the control database {database} ([fleet] database) to read pgshim.rules: {reason}")]
    Connect {
        /// The control database.
        database: String,
        /// Why.
        reason: String,
    },
    /// A statement on the table failed.
    #[error("{what} pgshim.rules in database {database}: {}", super::pg_error(.source))]
    Query {
        /// Reading or writing.
        what: &'static str,
        /// The control database.
        database: String,
        /// What Postgres said.
        source: tokio_postgres::Error,
    },
    /// `[rules] source = "database"` but nothing was pushed yet.
    #[error("[rules] source = \"database\" but pgshim.rules in database {database} holds no rules yet: run `pgshim rules push --config proxy.toml`")]
    Empty {
        /// The control database.
        database: String,
    },
    /// A row (or the file being pushed) is not a valid rule.
    #[error("{0}")]
    Invalid(String),
}
