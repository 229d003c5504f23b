//! The session's view of the rules: rewriting `Query` and `Parse` messages,
//! remembering named statements, and re-preparing them after a rules change.
//!
//! Statements that do not mention a mapped table pass a byte prefilter and are
//! forwarded untouched, without parsing. The rest are rewritten through the
//! per-database cache, or refused in order (see [`super::reject`]), or, with
//! `on_unrewritable = "pass"`, forwarded unrewritten with a warning. A session
//! takes the rules in force only when it is idle, so one transaction never
//! sees two versions.
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
use crate::rewrite::{mentions_mapped_table, Outcome, RewriteError};

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
}

/// One session's rules, statements and counters. Owned by the client
/// direction of the forwarding loop.
pub struct Rewriter {
    database: String,
    version: Arc<RulesVersion>,
    db: Arc<DbRules>,
    statements: Statements,
    sent: SentCounter,
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
            sent: SentCounter::default(),
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
    pub async fn refresh(&mut self, ctx: &Context, settings: &Settings, shared: &Shared<'_>) {
        for name in shared.hidden.take_failed() {
            self.statements.mark_stale(name);
        }
        if shared.state.phase() != Phase::Idle || ctx.rules.current_number() == self.version.number
        {
            return;
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
        if !self.statements.is_empty() {
            forget_deallocated(&mut self.statements, sql);
        }
        let new_sql = self.rewrite(sql, shared)?;
        let mut out = BytesMut::with_capacity(new_sql.len() + 6);
        write_query(&mut out, &new_sql);
        Some(out)
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
    fn rewrite(&self, sql: &[u8], shared: &Shared<'_>) -> Option<Vec<u8>> {
        if !self.active() || !mentions_mapped_table(sql, &self.db.rules) {
            metrics().statements_passed.increment(1);
            return None;
        }
        let started = Instant::now();
        let outcome = self.rewrite_text(sql);
        metrics()
            .rewrite_duration
            .record(started.elapsed().as_secs_f64());
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
        let first_rule = || {
            self.db
                .rules
                .rules()
                .first()
                .map(|r| r.id.clone())
                .unwrap_or_default()
        };
        let catalog = self.db.state.as_ref().map_err(|reason| RewriteError {
            rule_id: first_rule(),
            reason: format!("the rule is not active in this database: {reason}"),
        })?;
        let sql = std::str::from_utf8(sql).map_err(|_| RewriteError {
            rule_id: first_rule(),
            reason:
                "the statement is not valid UTF-8 (pgshim rewrites UTF-8 client encodings only)"
                    .into(),
        })?;
        let before = self.db.cache.stats();
        let outcome =
            self.db
                .cache
                .get_or_rewrite(sql, self.version.number, &self.db.rules, catalog);
        let after = self.db.cache.stats();
        let m = metrics();
        m.cache_hits
            .increment(after.hits.saturating_sub(before.hits));
        m.cache_misses
            .increment(after.misses.saturating_sub(before.misses));
        m.cache_size
            .increment(after.size as f64 - before.size as f64);
        outcome
    }

    /// Counts a rewrite against each rule whose table the statement mentions.
    fn count_rules(&self, sql: &[u8]) {
        let sql = sql.to_ascii_lowercase();
        for rule in self.db.rules.rules() {
            if memchr::memmem::find(&sql, rule.table.as_bytes()).is_some() {
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

/// Forgets statements a simple query deallocates (`DEALLOCATE [PREPARE] name`,
/// `DEALLOCATE ALL`, `DISCARD ALL`).
fn forget_deallocated(statements: &mut Statements, sql: &[u8]) {
    let mentions = |word: &[u8]| {
        sql.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    if !mentions(b"deallocate") && !mentions(b"discard") {
        return;
    }
    let text = String::from_utf8_lossy(sql);
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
                statements.clear()
            }
            ["deallocate", "prepare", _] | ["deallocate", _] => {
                let name = words[words.len() - 1];
                let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                    Some(quoted) => quoted.to_owned(),
                    None => name.to_ascii_lowercase(),
                };
                statements.remove(name.as_bytes());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(names: &[&str]) -> Statements {
        let mut s = Statements::default();
        for n in names {
            let p = Prepared {
                sql: Bytes::new(),
                param_types: Bytes::new(),
                sent: Bytes::new(),
            };
            s.insert(Bytes::copy_from_slice(n.as_bytes()), p);
        }
        s
    }

    #[test]
    fn deallocate_forgets_one_statement() {
        let mut s = with(&["s1", "s2"]);
        forget_deallocated(&mut s, b"DEALLOCATE s1");
        s.mark_all_stale();
        assert!(s.take_stale(b"s1").is_none());
        assert!(s.take_stale(b"s2").is_some());
    }

    #[test]
    fn discard_all_forgets_everything() {
        let mut s = with(&["a", "b"]);
        forget_deallocated(&mut s, b"select 1; discard  ALL");
        assert!(s.is_empty());
    }
}
