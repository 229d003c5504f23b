//! Where the conversation stands: the last transaction status, and how many
//! requests are still waiting for their ReadyForQuery.
//!
//! Every Query, Sync and FunctionCall is answered by exactly one
//! ReadyForQuery, so counting both tells whether replies are still due. The
//! number of the ReadyForQuery that will answer a message is what ties
//! pgshim's own messages and refusals to the replies Postgres sends for them.
use crate::protocol::{TxStatus, FUNCTION_CALL_TAG, QUERY_TAG, SYNC_TAG, TERMINATE_TAG};

/// Frontend `Execute`.
const EXECUTE_TAG: u8 = b'E';
/// Frontend `CopyDone`.
const COPY_DONE_TAG: u8 = b'c';
/// Frontend `CopyFail`.
const COPY_FAIL_TAG: u8 = b'f';
/// Backend `CopyInResponse`.
const COPY_IN_RESPONSE_TAG: u8 = b'G';

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
    /// Syncs sent since the last Execute or Query: if that statement is a
    /// `COPY … FROM STDIN`, Postgres ignores them (it reads Syncs in copy-in
    /// mode and drops them), so they are answered by no ReadyForQuery.
    syncs_since_execute: u64,
    /// The server is in copy-in mode (it sent CopyInResponse).
    copy_in: bool,
}

// === impl Pipeline ===

impl Pipeline {
    /// Notes a message the client sent (by tag).
    pub(crate) fn on_frontend(&mut self, tag: u8) {
        match tag {
            SYNC_TAG => {
                self.requests += 1;
                self.syncs_since_execute += 1;
            }
            QUERY_TAG => {
                self.requests += 1;
                self.syncs_since_execute = 0;
            }
            FUNCTION_CALL_TAG => self.requests += 1,
            EXECUTE_TAG => self.syncs_since_execute = 0,
            COPY_DONE_TAG | COPY_FAIL_TAG if self.copy_in => {
                // Syncs sent behind the COPY's Execute were read in copy-in
                // mode and dropped: no ReadyForQuery answers them.
                self.requests -= self.syncs_since_execute.min(self.in_flight());
                self.syncs_since_execute = 0;
                self.copy_in = false;
            }
            TERMINATE_TAG => return,
            _ => {}
        }
        self.dirty = true;
    }

    /// Notes a server message (by tag) that changes how the server reads.
    pub(crate) fn on_backend(&mut self, tag: u8) {
        if tag == COPY_IN_RESPONSE_TAG {
            self.copy_in = true;
        }
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
        self.copy_in = false;
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
    fn syncs_behind_an_extended_copy_in_are_not_requests() {
        let mut p = Pipeline::default();
        p.on_ready_for_query(Some(b'I'));
        // Bind, Execute (COPY … FROM STDIN), Sync; the server starts copy-in.
        for tag in [b'B', b'E', b'S'] {
            p.on_frontend(tag);
        }
        p.on_backend(b'G');
        for tag in [b'd', b'd', b'c', b'S'] {
            p.on_frontend(tag);
        }
        assert_eq!(p.in_flight(), 1);
        p.on_ready_for_query(Some(b'I'));
        assert_eq!(p.activity(), Activity::Idle);
        // A Sync behind an Execute that is no COPY is answered as usual.
        for tag in [b'B', b'E', b'S'] {
            p.on_frontend(tag);
        }
        p.on_frontend(b'c');
        assert_eq!(p.in_flight(), 1);
    }

    #[test]
    fn before_ready_is_authenticating() {
        assert_eq!(Pipeline::default().activity(), Activity::Authenticating);
    }
}
