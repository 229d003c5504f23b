//! What can go wrong in a migration operation, worded so the operator knows what to do.
use crate::introspect::CatalogError;
use crate::rewrite::RuleError;

/// A migration operation (backfill, verify, plan, status) could not run.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The rules in the config are invalid.
    #[error("the rules in the config are invalid: {0}")]
    Rules(#[from] RuleError),
    /// No rule has the id given on the command line.
    #[error("no rule with id {id:?} in the config (rules: {known}); the id is the rule's `id` key, or `<table>.<first old column>` without one")]
    UnknownRule {
        /// The id asked for.
        id: String,
        /// Ids that exist, comma-separated.
        known: String,
    },
    /// The rule applies to every database and none was named.
    #[error("rule {rule} has no `database` key, so pgshim cannot tell which database to work on: pass --database NAME")]
    NoDatabase {
        /// The rule's id.
        rule: String,
    },
    /// pgshim's own login could not connect or the upstream config is unusable.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The upstream TLS settings cannot be used.
    #[error("cannot prepare the upstream connection: {0}")]
    Upstream(#[from] crate::net::error::TlsSetupError),
    /// The mapped table does not exist.
    #[error("rule {rule}: table {table} does not exist in database {database}")]
    MissingTable {
        /// The rule's id.
        rule: String,
        /// `schema.table`.
        table: String,
        /// The database.
        database: String,
    },
    /// Columns the operation needs are missing.
    #[error("rule {rule}: table {table} has no column(s) {missing}; {hint}")]
    MissingColumns {
        /// The rule's id.
        rule: String,
        /// `schema.table`.
        table: String,
        /// Comma-separated columns.
        missing: String,
        /// What to do.
        hint: &'static str,
    },
    /// No primary key or unique not-null columns to walk the table by.
    #[error("table {table} has no primary key and no unique index over NOT NULL columns, so it cannot be walked in keyset batches: add a primary key (or a unique index on NOT NULL columns) and retry")]
    NoKey {
        /// `schema.table`.
        table: String,
    },
    /// The only usable key contains a column the backfill writes.
    #[error("table {table}: the key {key} includes new column {column} of rule {rule}, which the backfill writes; add a primary key that does not")]
    KeyIsMapped {
        /// `schema.table`.
        table: String,
        /// The key's columns.
        key: String,
        /// The new column in the key.
        column: String,
        /// The rule's id.
        rule: String,
    },
    /// A statement failed.
    #[error("{what}: {}", db_message(source))]
    Db {
        /// What pgshim was doing.
        what: String,
        /// What Postgres said.
        source: tokio_postgres::Error,
    },
    /// A lock could not be taken within `lock_timeout`, retries included.
    #[error("{what}: still blocked by other sessions' locks after {attempts} attempts with lock_timeout; retry at a quieter time or raise --lock-timeout / --max-retries")]
    LockRetriesExhausted {
        /// What pgshim was doing.
        what: String,
        /// How many tries.
        attempts: u32,
    },
    /// Instances did not confirm they stopped writing the old columns.
    #[error("not dropping the old columns of rule {rule}: after {secs} s these pgshim instances still do not confirm that they stopped writing them: {waiting}; nothing was dropped. An instance confirms once none of its sessions in database {database} is inside a transaction or pipeline begun before the mark (it logs those it waits for); otherwise check its logs (each reads pgshim.retiring with its own login, which needs SELECT on it) and rerun; --force drops without waiting. Until then those that did stop wrote the new columns only: before stepping back to migrate or expand, run `pgshim verify {rule} --repair`")]
    NotRetired {
        /// The rule's id.
        rule: String,
        /// The database.
        database: String,
        /// `id (why)`, comma-separated.
        waiting: String,
        /// How long pgshim waited.
        secs: u64,
    },
    /// The operation's arguments make no sense.
    #[error("{0}")]
    Usage(String),
}

/// The server's message, with detail and hint when it gave them.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s += &format!("; detail: {d}");
            }
            if let Some(h) = db.hint() {
                s += &format!("; hint: {h}");
            }
            s
        }
        None => e.to_string(),
    }
}

// === impl OpsError ===

impl OpsError {
    /// Wraps a Postgres error with what pgshim was doing.
    pub fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> OpsError {
        let what = what.into();
        move |source| OpsError::Db { what, source }
    }

    /// The SQLSTATE of a Postgres error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            OpsError::Db { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether retrying the same transaction later may succeed: lock timeout (55P03),
    /// deadlock (40P01) or serialization failure (40001).
    pub fn is_retryable(&self) -> bool {
        matches!(self.sqlstate(), Some("55P03" | "40P01" | "40001"))
    }
}
