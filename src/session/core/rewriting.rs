//! The session's rules and what rewriting one statement text decides.
//!
//! Statements that do not mention a mapped table pass a byte prefilter and
//! are forwarded untouched, without parsing. The rest are rewritten through
//! the per-database cache, refused (see [`super::refusals`]), or, with
//! `on_unrewritable = "pass"`, forwarded unrewritten with a warning. What
//! happened is counted in a [`Tally`] that the socket code publishes as
//! metrics, so this module does no I/O of its own.
use std::sync::Arc;
use std::time::Instant;

use crate::active::{DbRules, RulesVersion};
use crate::config::OnUnrewritable;
pub(crate) use crate::metrics::StatementOutcome;
use crate::rewrite::{
    first_mentioned_rule, mentions_mapped_table, names_mapped_table, Lookup, Outcome, RefusalKind,
    RewriteError, RuleSet, SearchPath, Usage,
};

/// The rules a session applies: one version, for the session's database.
#[derive(Clone)]
pub(crate) struct SessionRules {
    /// The version's number; a session takes a newer one only when idle.
    pub(crate) number: u64,
    /// What to do with statements that cannot be rewritten.
    pub(crate) on_unrewritable: OnUnrewritable,
    /// Rules, catalog and cache of the session's database.
    pub(crate) db: Arc<DbRules>,
}

/// What rewriting decided for one statement text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rewrite {
    /// The text names no mapped table (by the byte prefilter): send it as it is.
    Unmapped,
    /// The text names a mapped table and needs no rewrite: send it as it is.
    Keep,
    /// Send this text instead.
    Replace(String),
    /// Refuse the statement with this error.
    Refuse(RewriteError),
}

/// Counts kept by the core and published as metrics by the socket code.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Statement texts by outcome, indexed by [`StatementOutcome::index`].
    pub(crate) statements: [u64; 4],
    /// Prepared statements prepared again under new rules.
    pub(crate) reprepared: u64,
    /// Rewrites answered from the cache.
    pub(crate) cache_hits: u64,
    /// Rewrites computed.
    pub(crate) cache_misses: u64,
    /// Entries the cache gained (negative: lost).
    pub(crate) cache_size_change: i64,
    /// Seconds each rewrite took; the capacity is reused between publishes.
    pub(crate) rewrite_seconds: Vec<f64>,
    /// Rewrites per rule, by index in the session's rule set.
    pub(crate) by_rule: Vec<u64>,
    /// Which shapes of the rules each statement run used (old names, new
    /// names, `*`); the capacity is reused between publishes.
    pub(crate) usage: Vec<Usage>,
}

// === impl SessionRules ===

impl SessionRules {
    /// The rules of `version` for one database.
    pub(crate) fn new(version: &RulesVersion, db: Arc<DbRules>) -> SessionRules {
        SessionRules {
            number: version.number,
            on_unrewritable: version.on_unrewritable,
            db,
        }
    }

    /// The rule set.
    pub(crate) fn rules(&self) -> &RuleSet {
        &self.db.rules
    }

    /// Whether `sql` may name the table of a rule left out in this database
    /// for want of its table (a `CREATE TABLE` of it is news).
    pub(crate) fn mentions_left_out(&self, sql: &[u8]) -> bool {
        self.has_left_out() && mentions_mapped_table(sql, &self.db.left_out)
    }

    /// True when some rule was left out in this database for want of its table.
    pub(crate) fn has_left_out(&self) -> bool {
        !self.db.left_out.is_empty()
    }

    /// True when some rule applies in this database.
    pub(crate) fn active(&self) -> bool {
        !self.db.rules.is_empty()
    }

    /// Decides what to send for statement text `sql`.
    ///
    /// # Returns
    /// The decision, and which shapes of the rules the statement uses.
    pub(crate) fn rewrite(
        &self,
        sql: &[u8],
        path: &SearchPath,
        tally: &mut Tally,
    ) -> (Rewrite, Usage) {
        if !self.active() || !mentions_mapped_table(sql, &self.db.rules) {
            tally.count(StatementOutcome::PassedThrough);
            return (Rewrite::Unmapped, Usage::default());
        }
        let started = Instant::now();
        let outcome = self.rewrite_with_usage(sql, path, tally);
        tally.rewrite_seconds.push(started.elapsed().as_secs_f64());
        let (outcome, usage) = match outcome {
            Ok((outcome, usage)) => (Ok(outcome), usage),
            Err(e) => (Err(e), Usage::default()),
        };
        (self.decide(sql, outcome, tally), usage)
    }

    /// Counts and logs what happens to a statement text.
    fn decide(
        &self,
        sql: &[u8],
        outcome: Result<Outcome, RewriteError>,
        tally: &mut Tally,
    ) -> Rewrite {
        match outcome {
            Ok(Outcome::Unchanged) => {
                tally.count(StatementOutcome::PassedThrough);
                Rewrite::Keep
            }
            Ok(Outcome::Rewritten(new)) => {
                tally.count(StatementOutcome::Rewritten);
                self.count_rules(sql, tally);
                tracing::debug!(original = %String::from_utf8_lossy(sql), rewritten = %new, "statement rewritten");
                Rewrite::Replace(new)
            }
            Err(e) if self.on_unrewritable == OnUnrewritable::Pass => {
                tally.count(StatementOutcome::Unrewritten);
                tracing::warn!(rule = %e.rule_id, reason = %e.reason, statement = %String::from_utf8_lossy(sql), "statement forwarded unrewritten (on_unrewritable = \"pass\")");
                Rewrite::Keep
            }
            Err(e) => {
                tally.count(StatementOutcome::Refused);
                tracing::info!(rule = %e.rule_id, reason = %e.reason, "statement refused");
                Rewrite::Refuse(e)
            }
        }
    }

    /// The rewrite of `sql` (through the cache), without counting outcomes.
    ///
    /// # Errors
    /// [`RewriteError`] when the statement cannot be rewritten.
    pub(crate) fn rewrite_text(
        &self,
        sql: &[u8],
        path: &SearchPath,
        tally: &mut Tally,
    ) -> Result<Outcome, RewriteError> {
        self.rewrite_with_usage(sql, path, tally)
            .map(|(outcome, _)| outcome)
    }

    /// As [`SessionRules::rewrite_text`], with the shapes the statement uses.
    fn rewrite_with_usage(
        &self,
        sql: &[u8],
        path: &SearchPath,
        tally: &mut Tally,
    ) -> Result<(Outcome, Usage), RewriteError> {
        let sql = std::str::from_utf8(sql).map_err(|_| RewriteError {
            rule_id: first_mentioned_rule(&String::from_utf8_lossy(sql), &self.db.rules),
            reason:
                "the statement is not valid UTF-8 (pgshim rewrites UTF-8 client encodings only)"
                    .into(),
            kind: RefusalKind::Unrewritable,
        })?;
        let catalog = match &self.db.state {
            Ok(catalog) => catalog,
            Err(reason) => {
                return self
                    .without_catalog(sql, reason)
                    .map(|outcome| (outcome, Usage::default()))
            }
        };
        let (outcome, lookup) =
            self.db
                .cache
                .lookup_in(sql, self.number, &self.db.rules, catalog, path);
        match lookup {
            Lookup::Hit => tally.cache_hits += 1,
            Lookup::Miss { size_change } => {
                tally.cache_misses += 1;
                tally.cache_size_change += size_change as i64;
            }
        }
        outcome
    }

    /// A statement in a database where the rules could not be activated: it
    /// passes when it names no mapped table (the prefilter matches names
    /// loosely, and a rule on table `t` must not refuse `SELECT 1`) or only
    /// changes the schema (the `CREATE TABLE` or `ADD COLUMN` that lets the
    /// rules serve this database, read afresh once it has run), and is
    /// refused otherwise, since it cannot be rewritten without the catalog.
    fn without_catalog(&self, sql: &str, reason: &str) -> Result<Outcome, RewriteError> {
        if crate::rewrite::schema_changes_only(sql) {
            return Ok(Outcome::Unchanged);
        }
        match names_mapped_table(sql, &self.db.rules) {
            Ok(false) => Ok(Outcome::Unchanged),
            Ok(true) => Err(RewriteError {
                rule_id: first_mentioned_rule(sql, &self.db.rules),
                reason: format!("the rule is not active in this database: {reason}"),
                kind: RefusalKind::Unrewritable,
            }),
            Err(e) => Err(RewriteError {
                reason: format!("the rule is not active in this database: {reason}"),
                ..e
            }),
        }
    }

    /// Counts a rewrite against each rule whose table the statement mentions.
    fn count_rules(&self, sql: &[u8], tally: &mut Tally) {
        let rules = self.db.rules.rules();
        tally.by_rule.resize(rules.len(), 0);
        for (count, rule) in tally.by_rule.iter_mut().zip(rules) {
            // Quoted mixed-case names (`"Users"`) are compared in one case too.
            let table = rule.table.as_bytes();
            if sql
                .windows(table.len().max(1))
                .any(|w| w.eq_ignore_ascii_case(table))
            {
                *count += 1;
            }
        }
    }
}

// === impl Tally ===

impl Tally {
    /// Counts one statement text.
    pub(crate) fn count(&mut self, outcome: StatementOutcome) {
        self.statements[outcome.index()] += 1;
    }

    /// True when nothing was counted since the last publish.
    pub(crate) fn is_empty(&self) -> bool {
        self.statements == [0; 4]
            && self.reprepared == 0
            && self.cache_hits == 0
            && self.cache_misses == 0
            && self.rewrite_seconds.is_empty()
            && self.usage.is_empty()
    }

    /// Forgets the counts, keeping allocations.
    pub(crate) fn clear(&mut self) {
        self.statements = [0; 4];
        self.reprepared = 0;
        self.cache_hits = 0;
        self.cache_misses = 0;
        self.cache_size_change = 0;
        self.rewrite_seconds.clear();
        self.by_rule.iter_mut().for_each(|n| *n = 0);
        self.usage.clear();
    }
}
