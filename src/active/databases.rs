//! Per-database state of one rules version, bounded: databases no session
//! uses are forgotten least recently used first beyond [`KEPT_UNUSED`], and a
//! failed catalog read is remembered for [`FAILURE_TTL`] so a broken database
//! costs one read (and one log line) per window, not one per session.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::DbRules;

/// Databases remembered per rules version while no session uses them. Those
/// in use are always kept; they are bounded by `[limits] max_connections`.
pub const KEPT_UNUSED: usize = 64;

/// How long a failed catalog read is remembered before a session may retry it.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);

/// What one database's last catalog read gave.
#[derive(Clone)]
pub struct Loaded {
    /// The rules for the database, with the catalog or why it is unusable.
    pub db: Arc<DbRules>,
    /// When the read failed, and whether Postgres was out of reach; `None`
    /// after a successful read, which is kept for the version's lifetime.
    pub failure: Option<Failure>,
}

/// A failed catalog read.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// When it failed.
    pub at: Instant,
    /// Why, in the terms that decide what to do about it.
    pub kind: FailureKind,
}

/// What kind of failure a catalog read had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Postgres could not be reached, or a lock held by a client's
    /// transaction kept the read waiting; a retry may pass without any change.
    Unreachable,
    /// The database does not exist (any more).
    NoDatabase,
    /// Postgres answered, and the rules cannot be used as they are.
    Invalid,
}

/// One database's entry.
pub struct Slot {
    loaded: Mutex<Option<Loaded>>,
    /// Held while the catalog is read, so concurrent sessions read it once.
    pub loading: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
}

/// The entries of one rules version, by database name.
#[derive(Default)]
pub struct Databases {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Arc<Slot>>,
    clock: u64,
}

// === impl Slot ===

impl Slot {
    fn new(tick: u64) -> Slot {
        Slot {
            loaded: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(tick),
        }
    }

    /// The last read, whatever its age.
    pub fn current(&self) -> Option<Loaded> {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The rules, unless there are none yet or the last failure has expired.
    pub fn fresh(&self) -> Option<Arc<DbRules>> {
        let loaded = self.current()?;
        match loaded.failure {
            Some(f) if f.at.elapsed() >= FAILURE_TTL => None,
            _ => Some(loaded.db),
        }
    }

    /// Records a read.
    pub fn store(&self, loaded: Loaded) {
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = Some(loaded);
    }

    /// True while a session holds this database's rules or is loading them.
    fn in_use(self: &Arc<Slot>) -> bool {
        let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::strong_count(self) > 1
            || loaded
                .as_ref()
                .is_some_and(|loaded| Arc::strong_count(&loaded.db) > 1)
    }
}

// === impl Databases ===

impl Databases {
    /// The entry for `name`, created if needed; marks it most recently used
    /// and forgets the least recently used unused entries beyond the bound.
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.clock += 1;
        let tick = slots.clock;
        if let Some(slot) = slots.map.get(name) {
            slot.last_used.store(tick, Ordering::Relaxed);
            return slot.clone();
        }
        let slot = Arc::new(Slot::new(tick));
        slots.map.insert(name.to_owned(), slot.clone());
        slots.evict(name);
        slot
    }

    /// The entry for `name`, if there is one; does not count as a use.
    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.map.get(name).cloned()
    }

    /// The databases with an entry.
    pub fn names(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.map.keys().cloned().collect()
    }

    /// How many databases have an entry.
    pub fn count(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.map.len()
    }
}

// === impl Slots ===

impl Slots {
    /// Removes unused entries, oldest use first, until at most
    /// [`KEPT_UNUSED`] remain or all that remain are in use; `keep` is the
    /// entry just created for a caller.
    fn evict(&mut self, keep: &str) {
        while self.map.len() > KEPT_UNUSED {
            let oldest = self
                .map
                .iter()
                .filter(|(name, slot)| name.as_str() != keep && !slot.in_use())
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => {
                    self.map.remove(&name);
                }
                None => return,
            }
        }
    }
}
