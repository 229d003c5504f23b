//! The session's view of the rules: rewriting `Query` and `Parse` messages,
//! remembering named statements, and re-preparing them after a rules change.
//!
//! Statements that do not mention a mapped table pass a byte prefilter and are
//! forwarded untouched, without parsing. The rest are rewritten through the
//! per-database cache, or refused in order (see [`super::reject`]), or, with
//! `on_unrewritable = "pass"`, forwarded unrewritten with a warning. A session
//! takes the rules in force only when it is idle, so one transaction never
//! sees two versions.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::active::{DbRules, RulesVersion};
use crate::admin::metrics::{self, metrics};
use crate::config::OnUnrewritable;
use crate::protocol::frontend::{
    bind_statement, parse_body, query_sql, statement_target, write_close_statement, write_parse,
    write_query, ParseBody, BIND_TAG, CLOSE_TAG, DESCRIBE_TAG, PARSE_TAG,
};
use crate::protocol::QUERY_TAG;
use crate::rewrite::{
    first_mentioned_rule, mentions_mapped_table, names_mapped_table, prepared_statement_name,
    starts_with_prepare, Lookup, Outcome, RefusalKind, RewriteError,
};

use super::context::{Context, Settings};
use super::reject::Rejections;
use super::state::{Phase, State};
use super::statements::{Hidden, Prepared, SentCounter, Statements};

/// What to tell the user to do about a refused statement.
const REFUSAL_HINT: &str = "write the statement in a form pgshim can rewrite for the rule's current phase, or set on_unrewritable = \"pass\" in pgshim's config to forward such statements unrewritten";

/// State shared with the server direction.
pub struct Shared<'a> {
    /// Transaction and pipeline tracking.
    pub state: &'a State,
    /// Refusals in flight.
    pub rejections: &'a Rejections,
    /// Replies to pgshim's own re-prepares.
    pub hidden: &'a Hidden,
    /// Who the client is, for the old-name usage report.
    pub client: &'a crate::usage::Client,
}

/// One session's rules, statements and counters. Owned by the client
/// direction of the forwarding loop.
pub struct Rewriter {
    database: String,
    version: Arc<RulesVersion>,
    db: Arc<DbRules>,
    statements: Statements,
    /// SQL-level prepared statements (`PREPARE name AS ...`), by name.
    sql_prepared: BTreeMap<String, SqlPrepared>,
    sent: SentCounter,
    /// The client sent DDL naming a mapped table: the catalog is read afresh
    /// once the session is idle again (the DDL has run, or rolled back).
    ddl_sent: bool,
}

/// A statement prepared with SQL `PREPARE`, as the client wrote it.
struct SqlPrepared {
    /// The name, quoted, for `DEALLOCATE`.
    quoted_name: String,
    /// The whole `PREPARE` statement.
    text: String,
}

// === impl Rewriter ===

impl Rewriter {
    /// The rules in force for `database`.
    pub async fn new(ctx: &Context, settings: &Settings, database: &str) -> Rewriter {
        let version = ctx.rules.current();
        let db = version
            .for_database(database, &settings.config.upstream, &settings.upstream)
            .await;
        Rewriter {
            database: database.to_owned(),
            version,
            db,
            statements: Statements::default(),
            sql_prepared: BTreeMap::new(),
            sent: SentCounter::default(),
            ddl_sent: false,
        }
    }

    /// True when some rule applies in this database.
    fn active(&self) -> bool {
        !self.db.rules.is_empty()
    }

    /// Which client messages must be seen whole.
    pub fn wants_whole(&self, tag: u8) -> bool {
        match tag {
            PARSE_TAG => true,
            QUERY_TAG => self.active() || !self.statements.is_empty(),
            CLOSE_TAG => !self.statements.is_empty(),
            BIND_TAG | DESCRIBE_TAG => self.statements.any_stale(),
            _ => false,
        }
    }

    /// Notes a message forwarded without being looked at.
    pub fn note_forwarded(&mut self, pipeline: u64, tag: u8) {
        self.sent.on_sent(pipeline, tag);
    }

    /// Takes the rules in force if the session is idle and they changed.
    ///
    /// # Returns
    /// Simple queries to send first, re-preparing SQL-level prepared
    /// statements under the new rules (their replies are swallowed).
    pub async fn refresh(
        &mut self,
        ctx: &Context,
        settings: &Settings,
        shared: &Shared<'_>,
    ) -> Option<BytesMut> {
        if shared.hidden.any_failed() {
            for name in shared.hidden.take_failed() {
                self.statements.mark_stale(name);
            }
        }
        if shared.state.phase() != Phase::Idle {
            return None;
        }
        if std::mem::take(&mut self.ddl_sent) {
            ctx.rules.catalog_changed(&self.database);
        }
        if ctx.rules.current_number() == self.version.number {
            return None;
        }
        let version = ctx.rules.current();
        self.db = version
            .for_database(
                &self.database,
                &settings.config.upstream,
                &settings.upstream,
            )
            .await;
        tracing::debug!(
            from = self.version.number,
            to = version.number,
            "session takes new rules"
        );
        self.version = version;
        self.statements.mark_all_stale();
        self.reprepare_sql(shared.hidden)
    }

    /// `DEALLOCATE name; PREPARE name AS <new rewrite>` for every SQL-level
    /// prepared statement, one simple query each so one failure cannot skip
    /// the others.
    fn reprepare_sql(&self, hidden: &Hidden) -> Option<BytesMut> {
        if self.sql_prepared.is_empty() {
            return None;
        }
        let mut out = BytesMut::new();
        for prepared in self.sql_prepared.values() {
            let text = match self.rewrite_text(prepared.text.as_bytes()) {
                Ok(Outcome::Unchanged) => prepared.text.clone(),
                Ok(Outcome::Rewritten(new)) => new,
                Err(e) => {
                    tracing::warn!(statement = %prepared.quoted_name, error = %e, "SQL prepared statement cannot be rewritten under the new rules; deallocating it");
                    String::new()
                }
            };
            write_query(
                &mut out,
                format!("DEALLOCATE {}; {text}", prepared.quoted_name).as_bytes(),
            );
            metrics().reprepared.increment(1);
        }
        hidden.add_queries(self.sql_prepared.len() as u32);
        Some(out)
    }

    /// Handles a whole client message.
    ///
    /// # Returns
    /// The bytes to send instead of it, or `None` to forward it as it is.
    pub fn message(&mut self, msg: &[u8], shared: &Shared<'_>) -> Option<BytesMut> {
        let tag = *msg.first()?;
        let pipeline = shared.state.next_request();
        self.sent.on_sent(pipeline, tag);
        match tag {
            QUERY_TAG => self.query(msg, shared),
            PARSE_TAG => self.parse(msg, shared),
            BIND_TAG => self.reprepare(bind_statement(msg)?, msg, shared),
            DESCRIBE_TAG => self.reprepare(statement_target(msg)?, msg, shared),
            CLOSE_TAG => {
                self.statements.remove(statement_target(msg)?);
                None
            }
            _ => None,
        }
    }

    fn query(&mut self, msg: &[u8], shared: &Shared<'_>) -> Option<BytesMut> {
        let sql = query_sql(msg)?;
        if !self.statements.is_empty() || !self.sql_prepared.is_empty() {
            for forget in deallocated(sql) {
                match forget {
                    Deallocated::All => {
                        self.statements.clear();
                        self.sql_prepared.clear();
                    }
                    Deallocated::Name(name) => {
                        self.statements.remove(name.as_bytes());
                        self.sql_prepared.remove(&name);
                    }
                }
            }
        }
        self.remember_sql_prepare(sql);
        let new_sql = self.rewrite(sql, shared)?;
        let mut out = BytesMut::with_capacity(new_sql.len() + 6);
        write_query(&mut out, &new_sql);
        Some(out)
    }

    /// Remembers a simple query that is exactly one `PREPARE name AS ...`.
    fn remember_sql_prepare(&mut self, sql: &[u8]) {
        if !starts_with_prepare(sql) {
            return;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        let Some(key) = prepared_statement_name(text) else {
            return;
        };
        let quoted_name = format!("\"{}\"", key.replace('"', "\"\""));
        let text = text
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
            .to_owned();
        self.sql_prepared
            .insert(key, SqlPrepared { quoted_name, text });
    }

    fn parse(&mut self, msg: &[u8], shared: &Shared<'_>) -> Option<BytesMut> {
        let body = parse_body(msg)?;
        let new_sql = self.rewrite(body.sql, shared);
        if !body.name.is_empty() {
            let sent = new_sql.as_deref().unwrap_or(body.sql);
            let prepared = Prepared {
                sql: Bytes::copy_from_slice(body.sql),
                param_types: Bytes::copy_from_slice(body.param_types),
                sent: Bytes::copy_from_slice(sent),
            };
            self.statements
                .insert(Bytes::copy_from_slice(body.name), prepared);
        }
        let new_sql = new_sql?;
        let mut out = BytesMut::with_capacity(msg.len() + new_sql.len());
        write_parse(&mut out, &body, &new_sql);
        Some(out)
    }

    /// Before a Bind or Describe of a statement prepared under older rules:
    /// prepares it again (hidden Close and Parse) if its rewrite changed.
    fn reprepare(&mut self, name: &[u8], msg: &[u8], shared: &Shared<'_>) -> Option<BytesMut> {
        let pipeline = shared.state.next_request();
        let prepared = self.statements.take_stale(name)?.clone();
        let new_sql = self
            .rewrite(&prepared.sql, shared)
            .unwrap_or_else(|| prepared.sql.to_vec());
        if new_sql == prepared.sent {
            return None;
        }
        let name = Bytes::copy_from_slice(name);
        shared
            .hidden
            .expect_reprepare(&mut self.sent, pipeline, name.clone());
        let mut out = BytesMut::with_capacity(msg.len() + new_sql.len() + name.len() * 2 + 32);
        write_close_statement(&mut out, &name);
        let body = ParseBody {
            name: &name,
            sql: &prepared.sql,
            param_types: &prepared.param_types,
        };
        write_parse(&mut out, &body, &new_sql);
        out.extend_from_slice(msg);
        self.statements.insert(
            name,
            Prepared {
                sent: Bytes::from(new_sql),
                ..prepared
            },
        );
        metrics().reprepared.increment(1);
        tracing::debug!(
            version = self.version.number,
            "prepared statement prepared again under new rules"
        );
        Some(out)
    }

    /// The SQL to send instead of `sql`, or `None` to send it as it is.
    fn rewrite(&mut self, sql: &[u8], shared: &Shared<'_>) -> Option<Vec<u8>> {
        if !self.active() || !mentions_mapped_table(sql, &self.db.rules) {
            metrics().statements_passed.increment(1);
            return None;
        }
        // DDL naming a mapped table: the catalog is read afresh once it has run.
        if !self.ddl_sent {
            self.ddl_sent = is_ddl(sql);
        }
        let started = Instant::now();
        let outcome = self.rewrite_text_with_usage(sql);
        metrics()
            .rewrite_duration
            .record(started.elapsed().as_secs_f64());
        if let Ok((_, usage)) = &outcome {
            crate::usage::board().record(usage, shared.client);
        }
        let outcome = outcome.map(|(outcome, _)| outcome);
        match outcome {
            Ok(Outcome::Unchanged) => {
                metrics().statements_passed.increment(1);
                None
            }
            Ok(Outcome::Rewritten(new)) => {
                metrics().statements_rewritten.increment(1);
                self.count_rules(sql);
                tracing::debug!(original = %String::from_utf8_lossy(sql), rewritten = %new, "statement rewritten");
                Some(new.into_bytes())
            }
            Err(e) if self.version.on_unrewritable == OnUnrewritable::Pass => {
                metrics().statements_unrewritten.increment(1);
                tracing::warn!(rule = %e.rule_id, reason = %e.reason, statement = %String::from_utf8_lossy(sql), "statement forwarded unrewritten (on_unrewritable = \"pass\")");
                None
            }
            Err(e) => {
                metrics().statements_rejected.increment(1);
                tracing::info!(rule = %e.rule_id, reason = %e.reason, "statement refused");
                let request = shared.state.next_request();
                Some(
                    shared
                        .rejections
                        .push(request, &format!("pgshim: {e}"), REFUSAL_HINT)
                        .into_bytes(),
                )
            }
        }
    }

    fn rewrite_text(&self, sql: &[u8]) -> Result<Outcome, RewriteError> {
        self.rewrite_text_with_usage(sql)
            .map(|(outcome, _)| outcome)
    }

    /// As [`Rewriter::rewrite_text`], with the shapes of the rules the text uses.
    fn rewrite_text_with_usage(&self, sql: &[u8]) -> crate::rewrite::Classified {
        let first_rule = || {
            self.db
                .rules
                .rules()
                .first()
                .map(|r| r.id.clone())
                .unwrap_or_default()
        };
        let sql = std::str::from_utf8(sql).map_err(|_| RewriteError {
            rule_id: first_rule(),
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
                    .map(|outcome| (outcome, crate::rewrite::Usage::default()))
            }
        };
        let (outcome, lookup) =
            self.db
                .cache
                .lookup_with_usage(sql, self.version.number, &self.db.rules, catalog);
        let m = metrics();
        match lookup {
            Lookup::Hit => m.cache_hits.increment(1),
            Lookup::Miss { size_change } => {
                m.cache_misses.increment(1);
                m.cache_size.increment(size_change as f64);
            }
        }
        outcome
    }

    /// A statement in a database where the rules could not be activated: it
    /// passes when it names no mapped table (the prefilter matches names
    /// loosely, and a rule on table `t` must not refuse `SELECT 1`), and is
    /// refused otherwise, since it cannot be rewritten without the catalog.
    fn without_catalog(&self, sql: &str, reason: &str) -> Result<Outcome, RewriteError> {
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
    fn count_rules(&self, sql: &[u8]) {
        let sql = sql.to_ascii_lowercase();
        for rule in self.db.rules.rules() {
            // Quoted mixed-case names (`"Users"`) are compared in one case too.
            let table = rule.table.to_ascii_lowercase();
            if memchr::memmem::find(&sql, table.as_bytes()).is_some() {
                metrics::rewrite_by_rule(&rule.id, phase_name(rule.phase));
            }
        }
    }
}

/// The `pgshim_rewrites_total` label of a phase.
pub fn phase_name(phase: crate::rewrite::Phase) -> &'static str {
    match phase {
        crate::rewrite::Phase::Expand => "expand",
        crate::rewrite::Phase::Migrate => "migrate",
        crate::rewrite::Phase::Contract => "contract",
    }
}

/// What a simple query deallocates.
#[derive(Debug, PartialEq, Eq)]
enum Deallocated {
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    All,
    /// `DEALLOCATE [PREPARE] name`, normalised as Postgres folds it.
    Name(String),
}

/// The statements `sql` deallocates (`DEALLOCATE [PREPARE] name`,
/// `DEALLOCATE ALL`, `DISCARD ALL`).
fn deallocated(sql: &[u8]) -> Vec<Deallocated> {
    if !contains_word(sql, b"deallocate") && !contains_word(sql, b"discard") {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(sql);
    let mut found = Vec::new();
    for statement in text.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        match lower
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["discard", "all"] | ["deallocate", "all"] | ["deallocate", "prepare", "all"] => {
                found.push(Deallocated::All)
            }
            ["deallocate", "prepare", _] | ["deallocate", _] => {
                let name = words[words.len() - 1];
                let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\"\"", "\""),
                    None => name.to_ascii_lowercase(),
                };
                found.push(Deallocated::Name(name));
            }
            _ => {}
        }
    }
    found
}

/// Whether `sql` has the word `ALTER`, `DROP` or `CREATE` (any case): DDL that
/// can change a table's columns. Words inside literals count too, which only
/// costs a catalog read.
fn is_ddl(sql: &[u8]) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    sql.split(|b| !is_word(*b)).any(|w| {
        w.eq_ignore_ascii_case(b"alter")
            || w.eq_ignore_ascii_case(b"drop")
            || w.eq_ignore_ascii_case(b"create")
    })
}

/// Case-insensitive substring check, without allocating.
fn contains_word(sql: &[u8], word: &[u8]) -> bool {
    sql.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deallocate_names_one_statement() {
        assert_eq!(
            deallocated(b"DEALLOCATE s1"),
            vec![Deallocated::Name("s1".into())]
        );
        assert_eq!(
            deallocated(b"deallocate prepare \"S1\""),
            vec![Deallocated::Name("S1".into())]
        );
    }

    #[test]
    fn ddl_is_recognised_by_whole_words() {
        assert!(is_ddl(b"ALTER TABLE users ADD COLUMN nickname text"));
        assert!(is_ddl(b"begin; drop table users"));
        assert!(!is_ddl(b"SELECT created_at, altered FROM users"));
    }

    #[test]
    fn discard_all_forgets_everything() {
        assert_eq!(
            deallocated(b"select 1; discard  ALL"),
            vec![Deallocated::All]
        );
        assert!(deallocated(b"select 'no'").is_empty());
    }
}
