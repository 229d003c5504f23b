//! Every open session, for the one thing the fleet must know of them: whether
//! one still runs rules older than those in force.
//!
//! A session takes new rules only when it is idle (no request in flight,
//! outside a transaction block), so that no pipeline or transaction mixes two
//! rewrites. Until then it may still write columns the rules in force have
//! retired: the contract step must not drop them under it. Idle sessions do
//! not count, whatever rules they hold: each takes the rules in force before
//! it forwards its next message. The heartbeat asks [`SessionBoard::lagging`]
//! once per beat; sessions register once, at connection, and never touch the
//! board on the forwarding path.
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::relay::Link;

/// The open sessions of this pgshim.
#[derive(Default)]
pub struct SessionBoard {
    sessions: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

struct Entry {
    database: Arc<str>,
    link: Weak<Link>,
}

/// A session's place on the board, given up when dropped.
pub(crate) struct Registration<'a> {
    board: &'a SessionBoard,
    id: u64,
}

// === impl SessionBoard ===

impl SessionBoard {
    /// Puts the session of `link` to `database` on the board.
    pub(crate) fn register(&self, database: &str, link: &Arc<Link>) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            database: Arc::from(database),
            link: Arc::downgrade(link),
        };
        self.lock().insert(id, entry);
        Registration { board: self, id }
    }

    /// The databases where a session is busy (requests in flight, or inside
    /// a transaction block) with rules older than version `current`.
    pub fn lagging(&self, current: u64) -> BTreeSet<String> {
        let sessions: Vec<(Arc<str>, Weak<Link>)> = self
            .lock()
            .values()
            .map(|e| (Arc::clone(&e.database), e.link.clone()))
            .collect();
        let mut lagging = BTreeSet::new();
        for (database, link) in sessions {
            if lagging.contains(&*database) {
                continue;
            }
            let Some(link) = link.upgrade() else {
                continue;
            };
            let core = link.core();
            let older = core.rules_number().is_some_and(|n| n < current);
            if older && !core.idle() {
                lagging.insert(database.to_string());
            }
        }
        lagging
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.board.lock().remove(&self.id);
    }
}
