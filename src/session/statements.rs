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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Mutex;

use bytes::Bytes;

use crate::protocol::frontend::{CLOSE_TAG, PARSE_TAG};

/// Backend `ParseComplete`.
pub const PARSE_COMPLETE_TAG: u8 = b'1';
/// Backend `CloseComplete`.
pub const CLOSE_COMPLETE_TAG: u8 = b'3';
/// Backend `CommandComplete`.
pub const COMMAND_COMPLETE_TAG: u8 = b'C';

/// A named statement as the client prepared it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The client's SQL, as sent.
    pub sql: Bytes,
    /// Parameter type count and OIDs, as sent.
    pub param_types: Bytes,
    /// The SQL the server holds for it (rewritten or not).
    pub sent: Bytes,
}

/// The session's named statements.
#[derive(Debug, Default)]
pub struct Statements {
    by_name: HashMap<Bytes, Prepared>,
    /// Statements prepared under an older rules version, not re-checked yet.
    stale: HashSet<Bytes>,
}

// === impl Statements ===

impl Statements {
    /// Remembers `name` (a new Parse replaces an older one of the same name).
    pub fn insert(&mut self, name: Bytes, prepared: Prepared) {
        self.stale.remove(&name);
        self.by_name.insert(name, prepared);
    }

    /// Forgets `name` (Close, DEALLOCATE).
    pub fn remove(&mut self, name: &[u8]) {
        self.stale.remove(name);
        self.by_name.remove(name);
    }

    /// Forgets everything (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.stale.clear();
        self.by_name.clear();
    }

    /// True when no statement is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Marks every statement for re-checking against new rules.
    pub fn mark_all_stale(&mut self) {
        self.stale = self.by_name.keys().cloned().collect();
    }

    /// Marks `name` for re-checking (its re-prepare failed).
    pub fn mark_stale(&mut self, name: Bytes) {
        if self.by_name.contains_key(&name) {
            self.stale.insert(name);
        }
    }

    /// True when some statement must be re-checked before it is used.
    pub fn any_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    /// Takes `name` off the stale list, returning it if it was stale.
    pub fn take_stale(&mut self, name: &[u8]) -> Option<&mut Prepared> {
        if !self.stale.remove(name) {
            return None;
        }
        self.by_name.get_mut(name)
    }
}

/// Counts the Close and Parse messages sent in the current pipeline, so a
/// re-prepare knows the position of its replies.
#[derive(Debug, Default)]
pub struct SentCounter {
    pipeline: u64,
    closes: u32,
    parses: u32,
}

impl SentCounter {
    /// Notes a message with `tag` sent in pipeline `pipeline`.
    pub fn on_sent(&mut self, pipeline: u64, tag: u8) {
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
pub struct Hidden {
    queue: Mutex<VecDeque<HiddenReply>>,
    any: AtomicBool,
    /// Statements whose re-prepare was never answered (an error skipped it).
    failed: Mutex<Vec<Bytes>>,
    /// Mirrors `!failed.is_empty()`, checked without the lock.
    any_failed: AtomicBool,
    /// pgshim's own simple queries (re-PREPAREs) not yet answered by ReadyForQuery.
    queries: AtomicU32,
    /// CloseComplete messages received in the current pipeline.
    closes_received: AtomicU32,
    /// ParseComplete messages received in the current pipeline.
    parses_received: AtomicU32,
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
    pub fn expect_reprepare(&self, counter: &mut SentCounter, pipeline: u64, statement: Bytes) {
        counter.on_sent(pipeline, CLOSE_TAG);
        counter.on_sent(pipeline, PARSE_TAG);
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back(HiddenReply {
            pipeline,
            tag: CLOSE_COMPLETE_TAG,
            ordinal: counter.closes,
            statement: statement.clone(),
        });
        queue.push_back(HiddenReply {
            pipeline,
            tag: PARSE_COMPLETE_TAG,
            ordinal: counter.parses,
            statement,
        });
        self.any.store(true, Relaxed);
    }

    /// Notes `n` simple queries of pgshim's own, sent while the session was
    /// idle, whose replies (up to and including ReadyForQuery) are swallowed.
    pub fn add_queries(&self, n: u32) {
        self.queries.fetch_add(n, Relaxed);
    }

    /// True while replies to pgshim's own queries are due.
    pub fn queries_pending(&self) -> bool {
        self.queries.load(Relaxed) > 0
    }

    /// One of pgshim's own queries is complete.
    pub fn query_done(&self) {
        let _ = self
            .queries
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// True when replies are expected, so the server direction must look at
    /// CloseComplete and ParseComplete.
    pub fn any(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// Notes a CloseComplete or ParseComplete from the server in pipeline
    /// `pipeline`; returns true when it answers pgshim and must be swallowed.
    pub fn on_reply(&self, pipeline: u64, tag: u8) -> bool {
        let counter = if tag == CLOSE_COMPLETE_TAG {
            &self.closes_received
        } else {
            &self.parses_received
        };
        let ordinal = counter.fetch_add(1, Relaxed) + 1;
        if !self.any() {
            return false;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = queue
            .iter()
            .position(|h| h.pipeline == pipeline && h.tag == tag && h.ordinal == ordinal)
        else {
            return false;
        };
        queue.remove(at);
        self.any.store(!queue.is_empty(), Relaxed);
        true
    }

    /// Ends pipeline `pipeline` (its ReadyForQuery arrived): resets the reply
    /// counts and drops expectations it never answered.
    pub fn end_pipeline(&self, pipeline: u64) {
        self.closes_received.store(0, Relaxed);
        self.parses_received.store(0, Relaxed);
        if !self.any() {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        queue.retain(|h| {
            let done = h.pipeline <= pipeline;
            if done && h.tag == PARSE_COMPLETE_TAG {
                failed.push(h.statement.clone());
            }
            !done
        });
        self.any_failed.store(!failed.is_empty(), Relaxed);
        self.any.store(!queue.is_empty(), Relaxed);
    }

    /// True when some re-prepare did not complete.
    pub fn any_failed(&self) -> bool {
        self.any_failed.load(Relaxed)
    }

    /// Statements whose re-prepare did not complete, to be tried again.
    pub fn take_failed(&self) -> Vec<Bytes> {
        self.any_failed.store(false, Relaxed);
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprepare_replies_are_swallowed_after_the_clients_own() {
        let hidden = Hidden::default();
        let mut sent = SentCounter::default();
        // The client sent a Parse of its own first in pipeline 1.
        sent.on_sent(1, PARSE_TAG);
        hidden.expect_reprepare(&mut sent, 1, Bytes::from_static(b"s1"));
        assert!(
            !hidden.on_reply(1, PARSE_COMPLETE_TAG),
            "the client's own ParseComplete"
        );
        assert!(hidden.on_reply(1, CLOSE_COMPLETE_TAG));
        assert!(hidden.on_reply(1, PARSE_COMPLETE_TAG));
        assert!(!hidden.any());
        hidden.end_pipeline(1);
        assert!(hidden.take_failed().is_empty());
    }

    #[test]
    fn skipped_reprepare_is_reported_failed_at_end_of_pipeline() {
        let hidden = Hidden::default();
        let mut sent = SentCounter::default();
        hidden.expect_reprepare(&mut sent, 3, Bytes::from_static(b"s1"));
        hidden.end_pipeline(3);
        assert!(!hidden.any());
        assert_eq!(hidden.take_failed(), vec![Bytes::from_static(b"s1")]);
    }

    #[test]
    fn counts_restart_each_pipeline() {
        let hidden = Hidden::default();
        let mut sent = SentCounter::default();
        sent.on_sent(1, CLOSE_TAG);
        hidden.on_reply(1, CLOSE_COMPLETE_TAG);
        hidden.end_pipeline(1);
        hidden.expect_reprepare(&mut sent, 2, Bytes::from_static(b"s"));
        assert!(hidden.on_reply(2, CLOSE_COMPLETE_TAG));
    }

    #[test]
    fn stale_statements_are_taken_once() {
        let mut s = Statements::default();
        let p = Prepared {
            sql: Bytes::new(),
            param_types: Bytes::new(),
            sent: Bytes::new(),
        };
        s.insert(Bytes::from_static(b"a"), p);
        s.mark_all_stale();
        assert!(s.any_stale());
        assert!(s.take_stale(b"a").is_some());
        assert!(s.take_stale(b"a").is_none());
        assert!(!s.any_stale());
    }
}
