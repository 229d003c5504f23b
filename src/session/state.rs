//! What the session knows about the conversation, updated by both directions
//! of the forwarding loop. Both run in one task, so there is no contention: the
//! atomics (all `Relaxed`) are there only because the task must be `Send`.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};

use tokio::sync::Notify;

use crate::protocol::{TxStatus, FUNCTION_CALL_TAG, QUERY_TAG, SYNC_TAG, TERMINATE_TAG};

/// `tx` before the first ReadyForQuery.
const NO_STATUS: u8 = 0;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Relaying authentication; no ReadyForQuery yet.
    Authenticating,
    /// Between requests, outside a transaction block.
    Idle,
    /// Requests in flight, or inside a transaction block (`T` or `E`).
    Busy,
}

/// Shared state of one session.
#[derive(Debug)]
pub struct State {
    /// Status byte of the last ReadyForQuery; `None` before the first.
    tx: AtomicU8,
    /// Query, Sync and FunctionCall messages forwarded: each is answered by
    /// exactly one ReadyForQuery.
    requests: AtomicU64,
    /// ReadyForQuery messages received.
    readies: AtomicU64,
    /// The client sent something since the server was last idle.
    dirty: AtomicBool,
    /// Bytes forwarded from client to server.
    pub from_client: AtomicU64,
    /// Bytes forwarded from server to client.
    pub from_server: AtomicU64,
    /// Woken when the first ReadyForQuery arrives: the client direction holds
    /// everything but authentication messages until then.
    authenticated: Notify,
}

// === impl State ===

impl State {
    /// A session that has not authenticated yet.
    pub fn new() -> State {
        State {
            tx: AtomicU8::new(NO_STATUS),
            requests: AtomicU64::new(0),
            readies: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            from_client: AtomicU64::new(0),
            from_server: AtomicU64::new(0),
            authenticated: Notify::new(),
        }
    }

    /// Notes a message the client sent (by tag).
    pub fn on_frontend(&self, tag: u8) {
        match tag {
            QUERY_TAG | SYNC_TAG | FUNCTION_CALL_TAG => {
                self.requests.fetch_add(1, Relaxed);
            }
            TERMINATE_TAG => return,
            _ => {}
        }
        self.dirty.store(true, Relaxed);
    }

    /// Notes a ReadyForQuery with status byte `status`.
    pub fn on_ready_for_query(&self, status: Option<u8>) {
        let status = status
            .filter(|b| TxStatus::from_byte(*b).is_some())
            .unwrap_or(b'I');
        let before = self.phase();
        // The ReadyForQuery that ends authentication answers no request.
        let readies = self.readies.load(Relaxed) + u64::from(self.authenticated());
        self.tx.store(status, Relaxed);
        self.readies.store(readies, Relaxed);
        if readies >= self.requests.load(Relaxed) {
            self.dirty.store(false, Relaxed);
        }
        let after = self.phase();
        if before == Phase::Authenticating {
            // A stored permit: the client direction may start waiting later.
            self.authenticated.notify_one();
        }
        if before != after {
            tracing::trace!(?before, ?after, "session phase");
        }
    }

    /// True once the first ReadyForQuery has been seen.
    pub fn authenticated(&self) -> bool {
        self.tx.load(Relaxed) != NO_STATUS
    }

    /// Completes once the first ReadyForQuery has been seen.
    pub async fn wait_authenticated(&self) {
        if !self.authenticated() {
            self.authenticated.notified().await;
        }
    }

    /// The number of the ReadyForQuery that will answer the next Sync or
    /// Query the client sends: errors for statements pgshim refuses are
    /// matched to it.
    pub fn next_request(&self) -> u64 {
        self.requests.load(Relaxed) + 1
    }

    /// ReadyForQuery messages received so far.
    pub fn readies(&self) -> u64 {
        self.readies.load(Relaxed)
    }

    /// Transaction status from the last ReadyForQuery.
    pub fn tx_status(&self) -> Option<TxStatus> {
        TxStatus::from_byte(self.tx.load(Relaxed))
    }

    /// Counts `n` bytes forwarded from the client.
    pub fn add_from_client(&self, n: usize) {
        self.from_client.fetch_add(n as u64, Relaxed);
    }

    /// Counts `n` bytes forwarded from the server.
    pub fn add_from_server(&self, n: usize) {
        self.from_server.fetch_add(n as u64, Relaxed);
    }

    /// The session's phase, derived from the counters above.
    pub fn phase(&self) -> Phase {
        match self.tx_status() {
            None => Phase::Authenticating,
            Some(TxStatus::Idle) if !self.dirty.load(Relaxed) => Phase::Idle,
            Some(_) => Phase::Busy,
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_queries_stay_busy_until_last_ready() {
        let s = State::new();
        s.on_ready_for_query(Some(b'I'));
        s.on_frontend(b'Q');
        s.on_frontend(b'Q');
        s.on_ready_for_query(Some(b'I'));
        assert_eq!(s.phase(), Phase::Busy);
        s.on_ready_for_query(Some(b'I'));
        assert_eq!(s.phase(), Phase::Idle);
    }

    #[test]
    fn open_transaction_is_busy() {
        let s = State::new();
        s.on_frontend(b'Q');
        s.on_ready_for_query(Some(b'T'));
        assert_eq!(s.phase(), Phase::Busy);
        assert_eq!(s.tx_status(), Some(TxStatus::InTransaction));
    }

    #[test]
    fn extended_messages_without_sync_are_busy() {
        let s = State::new();
        s.on_ready_for_query(Some(b'I'));
        s.on_frontend(b'P');
        s.on_frontend(b'H');
        assert_eq!(s.phase(), Phase::Busy);
    }

    #[test]
    fn before_ready_is_authenticating() {
        assert_eq!(State::new().phase(), Phase::Authenticating);
    }
}
