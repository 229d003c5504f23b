//! Where the conversation stands: the last transaction status, and how many
//! requests are still waiting for their ReadyForQuery.
//!
//! Every Query, Sync and FunctionCall is answered by exactly one
//! ReadyForQuery, so counting both tells whether replies are still due. The
//! number of the ReadyForQuery that will answer a message is what ties
//! pgshim's own messages and refusals to the replies Postgres sends for them.
use crate::protocol::{TxStatus, FUNCTION_CALL_TAG, QUERY_TAG, SYNC_TAG, TERMINATE_TAG};

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Relaying authentication; no ReadyForQuery yet.
    Authenticating,
    /// Between requests, outside a transaction block.
    Idle,
    /// Requests in flight, or inside a transaction block (`T` or `E`).
    Busy,
}

/// Request and ReadyForQuery bookkeeping of one session.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    /// Status of the last ReadyForQuery; `None` before the first.
    tx: Option<TxStatus>,
    /// Query, Sync and FunctionCall messages forwarded.
    requests: u64,
    /// ReadyForQuery messages that answered a request.
    readies: u64,
    /// The client sent something since the server was last idle.
    dirty: bool,
}

// === impl Pipeline ===

impl Pipeline {
    /// Notes a message the client sent (by tag).
    pub(crate) fn on_frontend(&mut self, tag: u8) {
        match tag {
            QUERY_TAG | SYNC_TAG | FUNCTION_CALL_TAG => self.requests += 1,
            TERMINATE_TAG => return,
            _ => {}
        }
        self.dirty = true;
    }

    /// Notes a ReadyForQuery with status byte `status`.
    ///
    /// # Returns
    /// True when it is the first, which ends authentication.
    pub(crate) fn on_ready_for_query(&mut self, status: Option<u8>) -> bool {
        let status = status
            .and_then(TxStatus::from_byte)
            .unwrap_or(TxStatus::Idle);
        let first = self.tx.is_none();
        // The ReadyForQuery that ends authentication answers no request.
        if !first {
            self.readies += 1;
        }
        self.tx = Some(status);
        if self.readies >= self.requests {
            self.dirty = false;
        }
        first
    }

    /// True once the first ReadyForQuery has been seen.
    pub(crate) fn authenticated(&self) -> bool {
        self.tx.is_some()
    }

    /// The number of the ReadyForQuery that will answer the next Sync or
    /// Query the client sends.
    pub(crate) fn next_request(&self) -> u64 {
        self.requests + 1
    }

    /// The number of the ReadyForQuery the server will send next.
    pub(crate) fn next_ready(&self) -> u64 {
        self.readies + 1
    }

    /// ReadyForQuery messages that answered a request so far.
    pub(crate) fn readies(&self) -> u64 {
        self.readies
    }

    /// Transaction status from the last ReadyForQuery.
    pub(crate) fn tx_status(&self) -> Option<TxStatus> {
        self.tx
    }

    /// True when everything the client sent has been answered: no request in
    /// flight, and no extended-protocol message waiting for its Sync (a
    /// statement pgshim sends of its own now cannot land inside the client's
    /// pipeline or a COPY).
    pub(crate) fn quiet(&self) -> bool {
        self.tx.is_some() && !self.dirty && self.in_flight() == 0
    }

    /// Requests sent and not yet answered.
    pub(crate) fn in_flight(&self) -> u64 {
        self.requests.saturating_sub(self.readies)
    }

    /// The session's activity, derived from the counts above.
    pub(crate) fn activity(&self) -> Activity {
        match self.tx {
            None => Activity::Authenticating,
            Some(TxStatus::Idle) if !self.dirty => Activity::Idle,
            Some(_) => Activity::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_queries_stay_busy_until_last_ready() {
        let mut p = Pipeline::default();
        assert!(p.on_ready_for_query(Some(b'I')));
        p.on_frontend(b'Q');
        p.on_frontend(b'Q');
        assert!(!p.on_ready_for_query(Some(b'I')));
        assert_eq!(p.activity(), Activity::Busy);
        p.on_ready_for_query(Some(b'I'));
        assert_eq!(p.activity(), Activity::Idle);
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn open_transaction_is_busy() {
        let mut p = Pipeline::default();
        p.on_ready_for_query(Some(b'I'));
        p.on_frontend(b'Q');
        p.on_ready_for_query(Some(b'T'));
        assert_eq!(p.activity(), Activity::Busy);
        assert_eq!(p.tx_status(), Some(TxStatus::InTransaction));
    }

    #[test]
    fn extended_messages_without_sync_are_busy() {
        let mut p = Pipeline::default();
        p.on_ready_for_query(Some(b'I'));
        p.on_frontend(b'P');
        p.on_frontend(b'H');
        assert_eq!(p.activity(), Activity::Busy);
    }

    #[test]
    fn before_ready_is_authenticating() {
        assert_eq!(Pipeline::default().activity(), Activity::Authenticating);
    }
}
