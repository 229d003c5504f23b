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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use memchr::memmem;

use crate::protocol::backend::{write_error, Severity};

/// SQLSTATE for a statement pgshim cannot rewrite: feature_not_supported.
pub const CANNOT_REWRITE: &str = "0A000";
/// Prefix of the stand-in statement.
const TOKEN_PREFIX: &str = "pgshim_rejected_";

/// Refusals in flight for one session.
#[derive(Debug, Default)]
pub struct Rejections {
    queue: Mutex<VecDeque<Pending>>,
    /// Mirrors `!queue.is_empty()`, so the server direction can skip looking
    /// at ErrorResponses without taking the lock.
    any: AtomicBool,
    next: AtomicU64,
}

#[derive(Debug)]
struct Pending {
    token: String,
    /// The ReadyForQuery number that ends the pipeline the statement is in.
    request: u64,
    response: Bytes,
}

// === impl Rejections ===

impl Rejections {
    /// Registers a refusal answered by ReadyForQuery number `request`.
    ///
    /// # Returns
    /// The SQL to send to Postgres in place of the refused statement.
    pub fn push(&self, request: u64, message: &str, hint: &str) -> String {
        let n = self.next.fetch_add(1, Relaxed);
        let token = format!("{TOKEN_PREFIX}{}_{n}", nonce());
        let mut response = BytesMut::new();
        write_error(
            &mut response,
            Severity::Error,
            CANNOT_REWRITE,
            message,
            Some(hint),
        );
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back(Pending {
            token: token.clone(),
            request,
            response: response.freeze(),
        });
        self.any.store(true, Relaxed);
        token
    }

    /// True when refusals are in flight, so ErrorResponses must be checked.
    pub fn any(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// If `error` (a whole ErrorResponse) is Postgres failing one of the
    /// stand-in statements, returns pgshim's ErrorResponse to send instead.
    pub fn replace(&self, error: &[u8]) -> Option<Bytes> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let at = queue
            .iter()
            .position(|p| memmem::find(error, p.token.as_bytes()).is_some())?;
        let pending = queue.remove(at)?;
        self.any.store(!queue.is_empty(), Relaxed);
        Some(pending.response)
    }

    /// Drops refusals whose pipeline ended with ReadyForQuery number `readies`.
    pub fn expire(&self, readies: u64) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.retain(|p| p.request > readies);
        self.any.store(!queue.is_empty(), Relaxed);
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
        let r = Rejections::default();
        let token = r.push(1, "pgshim: cannot rewrite statement (rule r): x", "hint");
        assert!(r.any());
        let ours = r.replace(&syntax_error(&token)).unwrap();
        assert!(memmem::find(&ours, b"0A000").is_some());
        assert!(!r.any());
        assert!(r.replace(&syntax_error(&token)).is_none());
    }

    #[test]
    fn other_errors_pass() {
        let r = Rejections::default();
        r.push(1, "m", "h");
        assert!(r.replace(&syntax_error("something_else")).is_none());
        assert!(r.any());
    }

    #[test]
    fn skipped_stand_ins_expire_with_their_pipeline() {
        let r = Rejections::default();
        r.push(3, "m", "h");
        r.expire(2);
        assert!(r.any());
        r.expire(3);
        assert!(!r.any());
    }
}
