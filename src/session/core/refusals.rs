//! Refusing a statement at exactly the point Postgres would have failed it.
//!
//! pgshim never writes a refusal to the client itself: with pipelining,
//! Flush without Sync and transaction blocks, the error's place among the
//! server's replies (and its effect on the transaction) must be the server's.
//! So a refused statement is replaced by a one-word statement,
//! `pgshim_rejected_<nonce>_<n>`, that Postgres fails with a syntax error at
//! the same point in the stream (skipped, like the original would have been,
//! if an earlier message already failed). On the way back, that syntax error is
//! replaced by pgshim's own ErrorResponse. Entries the server never answered
//! (because it skipped the statement) expire at the ReadyForQuery that ends
//! their pipeline.
use std::collections::VecDeque;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

use crate::protocol::backend::{error_field, shift_position, write_error_fields, Severity};
use crate::rewrite::RewriteError;

/// SQLSTATE for a statement pgshim cannot rewrite: feature_not_supported.
pub(crate) const CANNOT_REWRITE: &str = "0A000";
/// SQLSTATE of a syntax error.
const SYNTAX_ERROR: &str = "42601";
/// Prefix of the stand-in statement.
const TOKEN_PREFIX: &str = "pgshim_rejected_";

/// What to tell the user to do about a refused statement.
const REFUSAL_HINT: &str = "write the statement in a form pgshim can rewrite for the rule's current phase, or set on_unrewritable = \"pass\" in pgshim's config to forward such statements unrewritten";

/// Why pgshim fails one statement; the session goes on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatementError {
    /// pgshim cannot rewrite the statement for a rule's phase.
    #[error("pgshim: {0}")]
    Refused(RewriteError),
    /// A statement arrived before the session's rules were loaded.
    #[error("pgshim: statement received before the session's rules were loaded")]
    NoRules,
    /// A prepared statement's result columns changed when pgshim prepared it
    /// again under new rules. The message is Postgres's own for a
    /// revalidated plan: drivers recognise it by message and routine and
    /// prepare the statement again, so pgshim's part goes in the detail.
    #[error("cached plan must not change result type")]
    ResultChanged {
        /// The prepared statement's name.
        statement: String,
    },
}

// === impl StatementError ===

impl StatementError {
    /// The SQLSTATE the client is shown.
    pub(crate) fn sqlstate(&self) -> &'static str {
        match self {
            StatementError::Refused(_) | StatementError::ResultChanged { .. } => CANNOT_REWRITE,
            StatementError::NoRules => "08P01",
        }
    }

    /// Appends the `ErrorResponse` (severity ERROR) for this failure.
    pub(crate) fn to_error_response(&self, out: &mut BytesMut) {
        let message = self.to_string();
        let (detail, file, routine, hint) = match self {
            StatementError::Refused(_) => (None, None, None, Some(REFUSAL_HINT)),
            StatementError::NoRules => (None, None, None, Some("retry the statement")),
            StatementError::ResultChanged { statement } => (
                Some(format!("pgshim: the result columns of prepared statement \"{statement}\" changed under new rules; prepare it again")),
                Some("plancache.c"),
                Some("RevalidateCachedQuery"),
                None,
            ),
        };
        write_error_fields(
            out,
            Severity::Error,
            &[
                (b'C', Some(self.sqlstate())),
                (b'M', Some(&message)),
                (b'D', detail.as_deref()),
                (b'H', hint),
                (b'F', file),
                (b'R', routine),
            ],
        );
    }
}

/// Refusals in flight for one session.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    queue: VecDeque<Pending>,
    next: u64,
}

#[derive(Debug)]
struct Pending {
    token: String,
    /// The ReadyForQuery number that ends the pipeline the statement is in.
    request: u64,
    response: Bytes,
    /// For a simple query sent behind a failing prefix of this many
    /// characters so that Postgres judges its syntax first: Postgres's own
    /// syntax error goes to the client, with its position moved back.
    prefix: Option<usize>,
}

// === impl Refusals ===

impl Refusals {
    /// Registers `error` for the statement answered by ReadyForQuery
    /// number `request`.
    ///
    /// # Returns
    /// The SQL to send to Postgres in place of the statement.
    pub(crate) fn push(&mut self, request: u64, error: &StatementError) -> String {
        let mut response = BytesMut::new();
        error.to_error_response(&mut response);
        self.push_response(request, response.freeze(), None)
    }

    /// Registers the refusal of a simple query that pgshim's parser does not
    /// accept: the query goes to Postgres behind a failing prefix, so
    /// Postgres's own syntax error, if it finds one, reaches the client
    /// instead (nothing in the query runs either way).
    ///
    /// # Returns
    /// The query to send in place of `sql`.
    pub(crate) fn push_judged(
        &mut self,
        request: u64,
        error: &StatementError,
        sql: &[u8],
    ) -> Vec<u8> {
        let token = self.push(request, error);
        let prefix = format!("SELECT {token}(); ");
        if let Some(last) = self.queue.back_mut() {
            last.prefix = Some(prefix.len());
        }
        let mut out = prefix.into_bytes();
        out.extend_from_slice(sql);
        out
    }

    fn push_response(&mut self, request: u64, response: Bytes, prefix: Option<usize>) -> String {
        let n = self.next;
        self.next += 1;
        let token = format!("{TOKEN_PREFIX}{}_{n}", nonce());
        self.queue.push_back(Pending {
            token: token.clone(),
            request,
            response,
            prefix,
        });
        token
    }

    /// True when refusals are in flight, so ErrorResponses must be checked.
    pub(crate) fn any(&self) -> bool {
        !self.queue.is_empty()
    }

    /// If `error` (a whole ErrorResponse answering the request that
    /// ReadyForQuery number `ready` ends) is Postgres failing one of the
    /// stand-in statements, returns what to send instead: pgshim's
    /// ErrorResponse, or Postgres's syntax error with its position fixed.
    pub(crate) fn replace(&mut self, error: &[u8], ready: u64) -> Option<Bytes> {
        if let Some(at) = self
            .queue
            .iter()
            .position(|p| memmem::find(error, p.token.as_bytes()).is_some())
        {
            return Some(self.queue.remove(at)?.response);
        }
        let at = self
            .queue
            .iter()
            .position(|p| p.request == ready && p.prefix.is_some())?;
        let by = self.queue[at].prefix?;
        if error_field(error, b'C') != Some(SYNTAX_ERROR.as_bytes()) {
            return None;
        }
        self.queue.remove(at);
        shift_position(error, by).map(BytesMut::freeze)
    }

    /// Drops refusals whose pipeline ended with ReadyForQuery number `readies`.
    pub(crate) fn expire(&mut self, readies: u64) {
        self.queue.retain(|p| p.request > readies);
    }
}

/// A per-process random number, so a client cannot forge a stand-in token.
fn nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish() & 0xffff_ffff
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::write_error;

    fn syntax_error(token: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_error(
            &mut out,
            Severity::Error,
            "42601",
            &format!("syntax error at or near \"{token}\""),
            None,
        );
        out.to_vec()
    }

    #[test]
    fn stand_in_error_is_replaced_once() {
        let mut r = Refusals::default();
        let refused = StatementError::Refused(RewriteError {
            rule_id: "r".into(),
            reason: "x".into(),
            kind: crate::rewrite::RefusalKind::Unrewritable,
        });
        let token = r.push(1, &refused);
        assert!(r.any());
        let ours = r.replace(&syntax_error(&token), 1).unwrap();
        assert_eq!(error_field(&ours, b'C'), Some(&b"0A000"[..]));
        assert_eq!(
            error_field(&ours, b'M'),
            Some(&b"pgshim: cannot rewrite statement (rule r): x"[..])
        );
        assert!(!r.any());
        assert!(r.replace(&syntax_error(&token), 1).is_none());
    }

    #[test]
    fn other_errors_pass() {
        let mut r = Refusals::default();
        r.push(1, &StatementError::NoRules);
        assert!(r.replace(&syntax_error("something_else"), 1).is_none());
        assert!(r.any());
    }

    #[test]
    fn skipped_stand_ins_expire_with_their_pipeline() {
        let mut r = Refusals::default();
        r.push(3, &StatementError::NoRules);
        r.expire(2);
        assert!(r.any());
        r.expire(3);
        assert!(!r.any());
    }
}
