//! Is anyone still on the old shape? Per rule, how many statements named the old columns,
//! the new ones, or `*`, when each was last seen, and which clients used the old names.
//!
//! The rewriter classifies each statement (see [`crate::rewrite::Usage`]); sessions hand
//! the answer to the process-wide [`Board`], which `/rules`, the metrics, the fleet
//! registry and `pgshim status` read. Counts are kept by rule id for the life of the
//! process, across rules versions: a rule that moves from migrate to contract keeps its
//! history, which is what an operator asks about before removing it.
//!
//! Recording is lock-light: per rule and shape an atomic count and an atomic timestamp;
//! only the sample of clients that used the old names takes a small mutex, and only for
//! statements that used them.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use dashmap::DashMap;
use metrics::{Counter, Gauge};

use crate::clock::unix_ms;
use crate::rewrite::{Shape, Usage};

pub mod summary;

/// How many distinct clients that used the old names are remembered per rule.
pub const SAMPLE_SIZE: usize = 8;

/// Longest `application_name` kept, in bytes: what Postgres keeps (`NAMEDATALEN - 1`).
const MAX_APPLICATION_NAME: usize = 63;

/// Who sent a statement, as a session knows it from the startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `application_name` from the startup packet; empty when not given.
    pub application_name: String,
    /// The client's address (the port is left out: it changes with every connection).
    pub addr: IpAddr,
}

/// Statements of one shape of one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShapeCount {
    /// Statements that used the shape since the instance started.
    pub statements: u64,
    /// When the last one was seen (Unix ms, this instance's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
}

/// A client that used the old names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// Its `application_name` (empty when it gave none).
    pub application_name: String,
    /// Its address.
    pub client_addr: String,
    /// When it last used them (Unix ms, this instance's clock).
    pub last_seen_ms: u64,
}

/// One rule's usage, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleReport {
    /// Statements naming old columns.
    pub old: ShapeCount,
    /// Statements naming new columns.
    pub new: ShapeCount,
    /// Statements reading or writing every column without naming them (`*`).
    pub star: ShapeCount,
    /// The most recent distinct clients that used the old names, newest first.
    #[serde(default)]
    pub old_clients: Vec<Seen>,
}

/// What an instance reports: every rule's usage and the clock it was measured with.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Since when (Unix ms) the instance has been counting.
    pub since_ms: u64,
    /// When (Unix ms, same clock) the report was taken; ages are measured against it,
    /// so readers on another host need not share the instance's clock.
    pub at_ms: u64,
    /// Rule id -> usage.
    pub rules: BTreeMap<String, RuleReport>,
}

/// The process-wide usage counts.
#[derive(Debug)]
pub struct Board {
    since_ms: u64,
    rules: DashMap<String, Arc<RuleCounters>>,
}

/// One rule's counters. Indexed by [`slot`].
#[derive(Debug)]
struct RuleCounters {
    counts: [AtomicU64; 3],
    /// Unix ms of the last statement; 0 when none.
    last_ms: [AtomicU64; 3],
    /// `pgshim_column_usage_total{rule, shape}`.
    counters: [Counter; 3],
    /// `pgshim_column_usage_last_seen_seconds{rule, shape}`.
    last_seen: [Gauge; 3],
    /// Newest first, distinct by client, at most [`SAMPLE_SIZE`].
    old_clients: Mutex<Vec<Sampled>>,
}

/// A client in the sample, kept as recorded so a repeat visit allocates nothing.
#[derive(Debug, Clone)]
struct Sampled {
    client: Client,
    last_seen_ms: u64,
}

/// The board of this process, counting since its first use (the server touches it at
/// start).
pub fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::new)
}

fn slot(shape: Shape) -> usize {
    match shape {
        Shape::Old => 0,
        Shape::New => 1,
        Shape::Star => 2,
    }
}

// === impl Client ===

impl Client {
    /// The client at `peer` that gave `application_name` at startup.
    ///
    /// The name is cleaned much as Postgres cleans it, since `status` prints it on an
    /// operator's terminal: characters other than printable ASCII become `?`, and it
    /// is cut to 63 bytes.
    pub fn new(application_name: Option<&str>, peer: SocketAddr) -> Client {
        let application_name = application_name
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .take(MAX_APPLICATION_NAME)
            .collect();
        Client {
            application_name,
            addr: peer.ip().to_canonical(),
        }
    }
}

// === impl Board ===

impl Default for Board {
    fn default() -> Board {
        Board::new()
    }
}

impl Board {
    /// An empty board counting from now.
    pub fn new() -> Board {
        Board {
            since_ms: unix_ms(SystemTime::now()),
            rules: DashMap::new(),
        }
    }

    /// Counts one statement `client` sent that used `usage`.
    pub fn record(&self, usage: &Usage, client: &Client) {
        if usage.is_empty() {
            return;
        }
        self.record_at(usage, client, unix_ms(SystemTime::now()));
    }

    /// As [`Board::record`], at `now_ms`.
    pub fn record_at(&self, usage: &Usage, client: &Client, now_ms: u64) {
        for (rule, shape) in usage.iter() {
            let counters = self.counters(rule);
            let i = slot(shape);
            counters.counts[i].fetch_add(1, Ordering::Relaxed);
            counters.last_ms[i].fetch_max(now_ms, Ordering::Relaxed);
            counters.counters[i].increment(1);
            counters.last_seen[i].set(now_ms as f64 / 1000.0);
            if shape == Shape::Old {
                counters.saw_old(client, now_ms);
            }
        }
    }

    fn counters(&self, rule: &str) -> Arc<RuleCounters> {
        if let Some(c) = self.rules.get(rule) {
            return Arc::clone(c.value());
        }
        let entry = self
            .rules
            .entry(rule.to_owned())
            .or_insert_with(|| Arc::new(RuleCounters::new(rule)));
        Arc::clone(entry.value())
    }

    /// The usage of `rule` so far (all zero when no statement used it).
    pub fn rule(&self, rule: &str) -> RuleReport {
        self.rules.get(rule).map(|c| c.report()).unwrap_or_default()
    }

    /// The usage of each of `rules`, stamped with the current time.
    pub fn report<'a>(&self, rules: impl IntoIterator<Item = &'a str>) -> Report {
        Report {
            since_ms: self.since_ms,
            at_ms: unix_ms(SystemTime::now()),
            rules: rules
                .into_iter()
                .map(|id| (id.to_owned(), self.rule(id)))
                .collect(),
        }
    }

    /// Since when (Unix ms) this board has been counting.
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }
}

// === impl RuleCounters ===

impl RuleCounters {
    fn new(rule: &str) -> RuleCounters {
        let handles = Shape::ALL.map(|s| crate::metrics::column_usage(rule, s.label()));
        RuleCounters {
            counts: Default::default(),
            last_ms: Default::default(),
            counters: handles.clone().map(|(c, _)| c),
            last_seen: handles.map(|(_, g)| g),
            old_clients: Mutex::new(Vec::with_capacity(SAMPLE_SIZE)),
        }
    }

    fn saw_old(&self, client: &Client, now_ms: u64) {
        let mut sample = self
            .old_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match sample.iter().position(|s| &s.client == client) {
            Some(at) => {
                let seen = &mut sample[at];
                seen.last_seen_ms = seen.last_seen_ms.max(now_ms);
                sample[..=at].rotate_right(1);
            }
            None => {
                sample.insert(
                    0,
                    Sampled {
                        client: client.clone(),
                        last_seen_ms: now_ms,
                    },
                );
                sample.truncate(SAMPLE_SIZE);
            }
        }
    }

    fn report(&self) -> RuleReport {
        let count = |i: usize| {
            let last = self.last_ms[i].load(Ordering::Relaxed);
            ShapeCount {
                statements: self.counts[i].load(Ordering::Relaxed),
                last_seen_ms: (last > 0).then_some(last),
            }
        };
        RuleReport {
            old: count(0),
            new: count(1),
            star: count(2),
            old_clients: self
                .old_clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|s| Seen {
                    application_name: s.client.application_name.clone(),
                    client_addr: s.client.addr.to_string(),
                    last_seen_ms: s.last_seen_ms,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
