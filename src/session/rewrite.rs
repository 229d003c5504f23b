//! Rewriting `Query` and `Parse` messages on their way to the server.
//!
//! Statements that do not mention a mapped table pass a byte prefilter and are
//! forwarded untouched, without parsing. The rest are rewritten through the
//! per-database cache, or refused in order (see [`super::reject`]), or, with
//! `on_unrewritable = "pass"`, forwarded unrewritten with a warning.
use std::sync::Arc;

use bytes::BytesMut;

use crate::active::{DbRules, RulesVersion};
use crate::config::OnUnrewritable;
use crate::protocol::frontend::{parse_body, query_sql, write_parse, write_query, PARSE_TAG};
use crate::protocol::QUERY_TAG;
use crate::rewrite::{mentions_mapped_table, Outcome, RewriteError};

use super::reject::Rejections;
use super::state::State;

/// What to tell the user to do about a refused statement.
const REFUSAL_HINT: &str = "write the statement in a form pgshim can rewrite for the rule's current phase, or set on_unrewritable = \"pass\" in pgshim's config to forward such statements unrewritten";

/// A session's view of the rules: one version, held until the session is idle.
pub struct Rewriter {
    /// The version in force for this session.
    pub version: Arc<RulesVersion>,
    /// Its rules for the session's database.
    pub db: Arc<DbRules>,
}

// === impl Rewriter ===

impl Rewriter {
    /// True when some rule applies in this database, so Query and Parse
    /// messages must be looked at.
    pub fn active(&self) -> bool {
        !self.db.rules.is_empty()
    }

    /// Rewrites a whole `Query` or `Parse` message.
    ///
    /// # Returns
    /// The message to send instead, or `None` to forward it as it is.
    pub fn message(&self, msg: &[u8], state: &State, rejections: &Rejections) -> Option<BytesMut> {
        let tag = *msg.first()?;
        let (sql, parse) = match tag {
            QUERY_TAG => (query_sql(msg)?, None),
            PARSE_TAG => {
                let body = parse_body(msg)?;
                (body.sql, Some(body))
            }
            _ => return None,
        };
        if !mentions_mapped_table(sql, &self.db.rules) {
            return None;
        }
        let new_sql = match self.rewrite(sql) {
            Ok(Outcome::Unchanged) => return None,
            Ok(Outcome::Rewritten(new)) => {
                tracing::debug!(original = %String::from_utf8_lossy(sql), rewritten = %new, "statement rewritten");
                new.into_bytes()
            }
            Err(e) if self.version.on_unrewritable == OnUnrewritable::Pass => {
                tracing::warn!(rule = %e.rule_id, reason = %e.reason, statement = %String::from_utf8_lossy(sql), "statement forwarded unrewritten (on_unrewritable = \"pass\")");
                return None;
            }
            Err(e) => {
                tracing::info!(rule = %e.rule_id, reason = %e.reason, "statement refused");
                rejections
                    .push(state.next_request(), &format!("pgshim: {e}"), REFUSAL_HINT)
                    .into_bytes()
            }
        };
        let mut out = BytesMut::with_capacity(new_sql.len() + 64);
        match parse {
            Some(body) => write_parse(&mut out, &body, &new_sql),
            None => write_query(&mut out, &new_sql),
        }
        Some(out)
    }

    fn rewrite(&self, sql: &[u8]) -> Result<Outcome, RewriteError> {
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
        self.db
            .cache
            .get_or_rewrite(sql, self.version.number, &self.db.rules, catalog)
    }
}
