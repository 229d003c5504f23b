//! Named prepared statements, remembered per session, and the server replies
//! to pgshim's own re-prepares, which the client must never see.
//!
//! When the rules change, a statement prepared under the old rules would keep
//! running the old rewrite. So before the next `Bind` or `Describe` that uses
//! it, pgshim sends a `Close` and a `Parse` of its own with the new rewrite,
//! and swallows their `CloseComplete` and `ParseComplete`. Replies are matched
//! by position: within one pipeline (up to a Sync or Query), the n-th
//! `CloseComplete` answers the n-th `Close` sent, and Postgres skips everything
//! after an error until the Sync, so entries whose pipeline ended unanswered
//! are dropped at its ReadyForQuery (and a failed re-`Parse` is retried).
use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::rewrite::Usage;

use crate::protocol::backend::{CLOSE_COMPLETE_TAG, PARSE_COMPLETE_TAG};
use crate::protocol::frontend::{CLOSE_TAG, PARSE_TAG};

/// A named statement as the client prepared it.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The client's SQL, as sent.
    pub(crate) sql: Bytes,
    /// Parameter type count and OIDs, as sent.
    pub(crate) param_types: Bytes,
    /// The SQL the server holds for it (rewritten or not).
    pub(crate) sent: Bytes,
    /// The RowDescription or NoData the client was shown when it described
    /// the statement (or a portal bound to it).
    pub(crate) described: Option<Bytes>,
    /// Its result columns may differ under other rules: it was rewritten, or
    /// uses a mapped table.
    pub(crate) shape_wanted: bool,
    /// Prepared again under new rules with other result columns: every Bind
    /// fails until the client prepares it again, as with Postgres.
    pub(crate) result_changed: bool,
    /// Its text may change the search path (each Execute runs it again).
    pub(crate) changes_path: bool,
    /// Which shapes of the rules the statement uses, counted at each Bind.
    pub(crate) usage: Usage,
}

// === impl Prepared ===

impl Prepared {
    /// Whether its result columns may differ under other rules and pgshim
    /// has not seen what the client was shown: pgshim needs them to keep Postgres's
    /// promise that a prepared statement's result never changes shape.
    pub(crate) fn unshaped(&self) -> bool {
        self.described.is_none() && self.shape_wanted
    }
}

/// The session's named statements.
#[derive(Debug, Default)]
pub(crate) struct Statements {
    by_name: HashMap<Bytes, Prepared>,
    /// Statements prepared under an older rules version, not re-checked yet.
    stale: HashSet<Bytes>,
    /// How many statements have `result_changed` set.
    changed: usize,
    /// How many statements use a mapped table's columns.
    with_usage: usize,
    /// How many statements may change the search path.
    path_changers: usize,
    /// How many statements have a shape pgshim wants and does not know
    /// ([`Prepared::unshaped`]).
    unshaped: usize,
}

// === impl Statements ===

impl Statements {
    /// Remembers `name` (a new Parse replaces an older one of the same name).
    pub(crate) fn insert(&mut self, name: Bytes, prepared: Prepared) {
        self.stale.remove(&name);
        self.count(&prepared, 1);
        if let Some(old) = self.by_name.insert(name, prepared) {
            self.count(&old, -1);
        }
    }

    /// Forgets `name` (Close, DEALLOCATE).
    pub(crate) fn remove(&mut self, name: &[u8]) {
        self.stale.remove(name);
        if let Some(old) = self.by_name.remove(name) {
            self.count(&old, -1);
        }
    }

    /// Adds (`sign` 1) or takes away (-1) `p` in the counts of statements
    /// with each property.
    fn count(&mut self, p: &Prepared, sign: isize) {
        let add = |n: &mut usize, has: bool| {
            if has {
                *n = n.wrapping_add_signed(sign);
            }
        };
        add(&mut self.changed, p.result_changed);
        add(&mut self.with_usage, !p.usage.is_empty());
        add(&mut self.path_changers, p.changes_path);
        add(&mut self.unshaped, p.unshaped());
    }

    /// Forgets everything (DEALLOCATE ALL, DISCARD ALL).
    pub(crate) fn clear(&mut self) {
        self.stale.clear();
        self.by_name.clear();
        self.changed = 0;
        self.with_usage = 0;
        self.path_changers = 0;
        self.unshaped = 0;
    }

    /// Records the description the client was shown for `name`.
    pub(crate) fn set_described(&mut self, name: &[u8], shown: Bytes) {
        if let Some(p) = self.by_name.get_mut(name) {
            let was = p.unshaped();
            p.described = Some(shown);
            if was {
                self.unshaped -= 1;
            }
        }
    }

    /// Whether pgshim wants the shape of statement `name` from a Describe of
    /// a portal bound to it ([`Prepared::unshaped`]).
    pub(crate) fn wants_shape(&self, name: &[u8]) -> bool {
        self.by_name.get(name).is_some_and(Prepared::unshaped)
    }

    /// True when some statement's shape is wanted, so Binds are looked at.
    pub(crate) fn any_unshaped(&self) -> bool {
        self.unshaped > 0
    }

    /// True when some statement uses a mapped table's columns, so each Bind
    /// is counted.
    pub(crate) fn any_usage(&self) -> bool {
        self.with_usage > 0
    }

    /// The shapes statement `name` uses.
    pub(crate) fn usage(&self, name: &[u8]) -> Option<&Usage> {
        self.by_name
            .get(name)
            .map(|p| &p.usage)
            .filter(|u| !u.is_empty())
    }

    /// True when some statement may change the search path, so each Bind is
    /// looked at.
    pub(crate) fn any_changes_path(&self) -> bool {
        self.path_changers > 0
    }

    /// The text of statement `name` when it may change the search path.
    pub(crate) fn path_changer(&self, name: &[u8]) -> Option<Bytes> {
        if self.path_changers == 0 {
            return None;
        }
        self.by_name
            .get(name)
            .filter(|p| p.changes_path)
            .map(|p| p.sql.clone())
    }

    /// True when some statement's result changed under new rules.
    pub(crate) fn any_changed(&self) -> bool {
        self.changed > 0
    }

    /// True when `name`'s result changed under new rules.
    pub(crate) fn result_changed(&self, name: &[u8]) -> bool {
        self.changed > 0 && self.by_name.get(name).is_some_and(|p| p.result_changed)
    }

    /// Marks `name`'s result as changed under new rules.
    pub(crate) fn set_result_changed(&mut self, name: &[u8]) {
        if let Some(p) = self.by_name.get_mut(name) {
            if !p.result_changed {
                p.result_changed = true;
                self.changed += 1;
            }
        }
    }

    /// True when no statement is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Marks every statement for re-checking against new rules. A statement
    /// whose result had changed is checked afresh, as Postgres compares a
    /// cached plan with the columns it was first prepared with at every use
    /// (a column added and dropped again makes it run again): what the server
    /// holds for it is prepared again, and its shape compared once more.
    pub(crate) fn mark_all_stale(&mut self) {
        self.stale = self.by_name.keys().cloned().collect();
        if self.changed > 0 {
            for p in self.by_name.values_mut().filter(|p| p.result_changed) {
                p.result_changed = false;
                p.sent = Bytes::new();
            }
            self.changed = 0;
        }
    }

    /// Marks `name` for preparing again: its re-prepare was skipped or
    /// failed, so what the server holds for it is unknown.
    pub(crate) fn mark_stale(&mut self, name: Bytes) {
        if let Some(p) = self.by_name.get_mut(&name) {
            p.sent = Bytes::new();
            self.stale.insert(name);
        }
    }

    /// True when some statement must be re-checked before it is used.
    pub(crate) fn any_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Takes `name` off the stale list, returning it if it was stale.
    pub(crate) fn take_stale(&mut self, name: &[u8]) -> Option<&mut Prepared> {
        if !self.stale.remove(name) {
            return None;
        }
        self.by_name.get_mut(name)
    }
}

/// Counts the Close and Parse messages sent in the current pipeline, so a
/// re-prepare knows the position of its replies.
#[derive(Debug, Default)]
pub(crate) struct SentCounter {
    pipeline: u64,
    closes: u32,
    parses: u32,
}

impl SentCounter {
    /// Notes a message with `tag` sent in pipeline `pipeline`.
    pub(crate) fn on_sent(&mut self, pipeline: u64, tag: u8) {
        if pipeline != self.pipeline {
            *self = SentCounter {
                pipeline,
                ..SentCounter::default()
            };
        }
        match tag {
            CLOSE_TAG => self.closes += 1,
            PARSE_TAG => self.parses += 1,
            _ => {}
        }
    }
}

/// Replies to pgshim's own Close and Parse messages, to be swallowed.
#[derive(Debug, Default)]
pub(crate) struct Hidden {
    queue: VecDeque<HiddenReply>,
    /// pgshim's own simple queries (re-PREPAREs) not yet answered by ReadyForQuery.
    queries: u32,
    /// CloseComplete messages received in the current pipeline.
    closes_received: u32,
    /// ParseComplete messages received in the current pipeline.
    parses_received: u32,
}

#[derive(Debug)]
struct HiddenReply {
    pipeline: u64,
    tag: u8,
    ordinal: u32,
    statement: Bytes,
}

// === impl Hidden ===

impl Hidden {
    /// Registers the replies to a Close and a Parse of `statement` that the
    /// caller is about to send in pipeline `pipeline`; `counter` has counted
    /// every message sent before them in that pipeline.
    ///
    /// # Returns
    /// The position of the Parse among those sent in the pipeline.
    pub(crate) fn expect_reprepare(
        &mut self,
        counter: &mut SentCounter,
        pipeline: u64,
        statement: Bytes,
    ) -> u32 {
        counter.on_sent(pipeline, CLOSE_TAG);
        counter.on_sent(pipeline, PARSE_TAG);
        self.queue.push_back(HiddenReply {
            pipeline,
            tag: CLOSE_COMPLETE_TAG,
            ordinal: counter.closes,
            statement: statement.clone(),
        });
        self.queue.push_back(HiddenReply {
            pipeline,
            tag: PARSE_COMPLETE_TAG,
            ordinal: counter.parses,
            statement,
        });
        counter.parses
    }

    /// Registers the replies to a Parse and a Close of the unnamed statement
    /// that the caller is about to send in pipeline `pipeline`, to have
    /// Postgres judge a statement without keeping it.
    ///
    /// The client's own Parse, already counted, goes after them: the hidden
    /// Parse takes its place in the count, and the client's the next one.
    pub(crate) fn expect_check(&mut self, counter: &mut SentCounter, pipeline: u64) {
        let parse = counter.parses;
        counter.on_sent(pipeline, PARSE_TAG);
        counter.on_sent(pipeline, CLOSE_TAG);
        // An empty name: a skipped check leaves no statement to prepare again.
        self.queue.push_back(HiddenReply {
            pipeline,
            tag: PARSE_COMPLETE_TAG,
            ordinal: parse,
            statement: Bytes::new(),
        });
        self.queue.push_back(HiddenReply {
            pipeline,
            tag: CLOSE_COMPLETE_TAG,
            ordinal: counter.closes,
            statement: Bytes::new(),
        });
    }

    /// Notes `n` simple queries of pgshim's own, sent while the session was
    /// idle, whose replies (up to and including ReadyForQuery) are swallowed.
    pub(crate) fn add_queries(&mut self, n: u32) {
        self.queries += n;
    }

    /// True while replies to pgshim's own queries are due.
    pub(crate) fn queries_pending(&self) -> bool {
        self.queries > 0
    }

    /// One of pgshim's own queries is complete.
    pub(crate) fn query_done(&mut self) {
        self.queries = self.queries.saturating_sub(1);
    }

    /// True when replies are expected, so the server direction must look at
    /// CloseComplete and ParseComplete.
    pub(crate) fn any(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Notes a CloseComplete or ParseComplete from the server in pipeline
    /// `pipeline`.
    ///
    /// # Returns
    /// Its position among the replies of its kind in the pipeline when it
    /// answers pgshim and must be swallowed.
    pub(crate) fn on_reply(&mut self, pipeline: u64, tag: u8) -> Option<u32> {
        let counter = if tag == CLOSE_COMPLETE_TAG {
            &mut self.closes_received
        } else {
            &mut self.parses_received
        };
        *counter += 1;
        let ordinal = *counter;
        let at = self
            .queue
            .iter()
            .position(|h| h.pipeline == pipeline && h.tag == tag && h.ordinal == ordinal)?;
        self.queue.remove(at);
        Some(ordinal)
    }

    /// Ends pipeline `pipeline` (its ReadyForQuery arrived): resets the reply
    /// counts and drops expectations it never answered.
    ///
    /// # Returns
    /// Statements whose re-prepare did not complete, to be tried again.
    pub(crate) fn end_pipeline(&mut self, pipeline: u64) -> Vec<Bytes> {
        self.closes_received = 0;
        self.parses_received = 0;
        let mut failed = Vec::new();
        self.queue.retain(|h| {
            let done = h.pipeline <= pipeline;
            if done && h.tag == PARSE_COMPLETE_TAG {
                failed.push(h.statement.clone());
            }
            !done
        });
        failed
    }
}

/// A statement prepared with SQL `PREPARE`, as the client wrote it.
#[derive(Debug)]
pub(crate) struct SqlPrepared {
    /// The name, quoted, for `DEALLOCATE`.
    pub(crate) quoted_name: String,
    /// The whole `PREPARE` statement.
    pub(crate) text: String,
}

/// What a simple query deallocates.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Deallocated {
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    All,
    /// `DEALLOCATE [PREPARE] name`, normalised as Postgres folds it.
    Name(String),
}

/// The statements `sql` deallocates (`DEALLOCATE [PREPARE] name`,
/// `DEALLOCATE ALL`, `DISCARD ALL`).
pub(crate) fn deallocated(sql: &[u8]) -> Vec<Deallocated> {
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
    fn discard_all_forgets_everything() {
        assert_eq!(
            deallocated(b"select 1; discard  ALL"),
            vec![Deallocated::All]
        );
        assert!(deallocated(b"select 'no'").is_empty());
    }

    #[test]
    fn reprepare_replies_are_swallowed_after_the_clients_own() {
        let mut hidden = Hidden::default();
        let mut sent = SentCounter::default();
        // The client sent a Parse of its own first in pipeline 1.
        sent.on_sent(1, PARSE_TAG);
        assert_eq!(
            hidden.expect_reprepare(&mut sent, 1, Bytes::from_static(b"s1")),
            2
        );
        assert!(
            hidden.on_reply(1, PARSE_COMPLETE_TAG).is_none(),
            "the client's own ParseComplete"
        );
        assert_eq!(hidden.on_reply(1, CLOSE_COMPLETE_TAG), Some(1));
        assert_eq!(hidden.on_reply(1, PARSE_COMPLETE_TAG), Some(2));
        assert!(!hidden.any());
        assert!(hidden.end_pipeline(1).is_empty());
    }

    #[test]
    fn skipped_reprepare_is_reported_failed_at_end_of_pipeline() {
        let mut hidden = Hidden::default();
        let mut sent = SentCounter::default();
        let _ = hidden.expect_reprepare(&mut sent, 3, Bytes::from_static(b"s1"));
        assert_eq!(hidden.end_pipeline(3), vec![Bytes::from_static(b"s1")]);
        assert!(!hidden.any());
    }

    #[test]
    fn counts_restart_each_pipeline() {
        let mut hidden = Hidden::default();
        let mut sent = SentCounter::default();
        sent.on_sent(1, CLOSE_TAG);
        hidden.on_reply(1, CLOSE_COMPLETE_TAG);
        hidden.end_pipeline(1);
        let _ = hidden.expect_reprepare(&mut sent, 2, Bytes::from_static(b"s"));
        assert!(hidden.on_reply(2, CLOSE_COMPLETE_TAG).is_some());
    }

    #[test]
    fn stale_statements_are_taken_once() {
        let mut s = Statements::default();
        let p = Prepared {
            sql: Bytes::new(),
            param_types: Bytes::new(),
            sent: Bytes::new(),
            described: None,
            shape_wanted: false,
            result_changed: false,
            changes_path: false,
            usage: Usage::default(),
        };
        s.insert(Bytes::from_static(b"a"), p);
        s.mark_all_stale();
        assert!(s.any_stale());
        assert!(s.take_stale(b"a").is_some());
        assert!(s.take_stale(b"a").is_none());
        assert!(!s.any_stale());
    }
}
