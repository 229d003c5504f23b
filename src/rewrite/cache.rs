//! Bounded rewrite cache keyed on a literal-insensitive fingerprint.
//!
//! Keys are `(rules_version, search path, fingerprint key)`. A hit splices the statement's own literals
//! into the cached template, so `... WHERE aid = 1` and `... WHERE aid = 2` share one entry.
//! The map is a `DashMap` (sharded locks, no global lock on the hot path); when full, an
//! arbitrary eighth of the entries is dropped, which is cheap and good enough for a working
//! set that fits. Texts whose literals the rewriter reads are never cached: a literal
//! naming a mapped table (a function body, a `DO` block) and a `SET search_path`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::fingerprint::{fingerprint, Fingerprint, Template};
use super::prefilter::find_ignore_ascii_case;
use super::{
    mentions_mapped_table, rewrite_in, Catalog, Outcome, RefusalKind, RewriteError, RuleSet,
    SearchPath, Usage,
};

/// Counters readable by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to rewrite.
    pub misses: u64,
    /// Entries held.
    pub size: usize,
}

#[derive(Debug)]
enum Entry {
    Unchanged,
    Rewritten(Template),
}

/// A cached answer and the shapes the statement uses, which do not depend on its
/// literals, so a hit reports them as the first rewrite did.
#[derive(Debug)]
struct Cached {
    entry: Entry,
    usage: Usage,
}

/// What [`RewriteCache::lookup_with_usage`] answers: the rewrite and the shapes used.
pub type Classified = Result<(Outcome, Usage), RewriteError>;

/// Rules version, search path and fingerprint of a statement.
type Key = (u64, u64, String);

/// Whether a [`RewriteCache::lookup`] was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from the cache.
    Hit,
    /// Computed; the cache's size changed by `size_change` entries.
    Miss {
        /// Entries added minus entries evicted.
        size_change: isize,
    },
}

/// A bounded cache of rewrites, shared by all sessions.
#[derive(Debug)]
pub struct RewriteCache {
    map: DashMap<Key, Arc<Cached>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

// === impl RewriteCache ===

impl RewriteCache {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> RewriteCache {
        RewriteCache {
            map: DashMap::new(),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The rewrite of `sql` from the cache, or computed and cached.
    ///
    /// Call it only for texts that pass [`mentions_mapped_table`](super::mentions_mapped_table)
    /// (others are forwarded untouched anyway); `rules_version` must change whenever `rules`
    /// or `catalog` do.
    ///
    /// # Errors
    /// As [`rewrite`](super::rewrite).
    pub fn get_or_rewrite(
        &self,
        sql: &str,
        rules_version: u64,
        rules: &RuleSet,
        catalog: &Catalog,
    ) -> Result<Outcome, RewriteError> {
        self.lookup(sql, rules_version, rules, catalog).0
    }

    /// As [`RewriteCache::get_or_rewrite`], also saying whether the answer
    /// came from the cache, so callers can count hits exactly even when many
    /// sessions share the cache.
    pub fn lookup(
        &self,
        sql: &str,
        rules_version: u64,
        rules: &RuleSet,
        catalog: &Catalog,
    ) -> (Result<Outcome, RewriteError>, Lookup) {
        let (out, lookup) = self.lookup_with_usage(sql, rules_version, rules, catalog);
        (out.map(|(outcome, _)| outcome), lookup)
    }

    /// As [`RewriteCache::lookup`], also saying which shape of each rule the statement
    /// uses (see [`rewrite_with_usage`](super::rewrite_with_usage)); a hit reports what
    /// the first rewrite found.
    pub fn lookup_with_usage(
        &self,
        sql: &str,
        rules_version: u64,
        rules: &RuleSet,
        catalog: &Catalog,
    ) -> (Classified, Lookup) {
        self.lookup_in(sql, rules_version, rules, catalog, SearchPath::public())
    }

    /// As [`RewriteCache::lookup_with_usage`], resolving unqualified table names
    /// through the session's search path `path` (part of the cache key).
    pub fn lookup_in(
        &self,
        sql: &str,
        rules_version: u64,
        rules: &RuleSet,
        catalog: &Catalog,
        path: &SearchPath,
    ) -> (Classified, Lookup) {
        let rewrite =
            |sql: &str, rules: &RuleSet, catalog: &Catalog| rewrite_in(sql, rules, catalog, path);
        let miss = |size_change| Lookup::Miss { size_change };
        // The rewriter reads two kinds of literal: a function body or `DO` block (SQL
        // Postgres runs, found by its naming a mapped table) and the schemas of a
        // `SET search_path TO 'app'`, which decide what later statements of the text
        // name. Sentinels would hide them, so such a text is rewritten from its own
        // text and not cached.
        let reads_literals = |fp: &Fingerprint<'_>| {
            find_ignore_ascii_case(sql.as_bytes(), b"search_path").is_some()
                || fp
                    .literals
                    .iter()
                    .any(|l| mentions_mapped_table(l.as_bytes(), rules))
        };
        let fp = fingerprint(sql).filter(|fp| !reads_literals(fp));
        let Some(fp) = fp else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return (rewrite(sql, rules, catalog), miss(0));
        };
        let key = (rules_version, path.key(), fp.key);
        if let Some(entry) = self.map.get(&key).map(|e| Arc::clone(e.value())) {
            if let Some(out) = answer(&entry, &fp.literals) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return (out, Lookup::Hit);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let entry = match rewrite(&fp.sentinel_sql, rules, catalog) {
            Ok((Outcome::Unchanged, usage)) => Cached {
                entry: Entry::Unchanged,
                usage,
            },
            Ok((Outcome::Rewritten(text), usage)) => {
                match Template::from_rewritten(&text, &fp.literals) {
                    Some(t) => Cached {
                        entry: Entry::Rewritten(t),
                        usage,
                    },
                    None => return (rewrite(sql, rules, catalog), miss(0)),
                }
            }
            // Too deep does not depend on literals: answer at once.
            Err(e) if e.kind == RefusalKind::TooDeep => return (Err(e), miss(0)),
            // Sentinels could in theory trip the parser where the real literal would not:
            // answer from the real text and do not cache.
            Err(_) => return (rewrite(sql, rules, catalog), miss(0)),
        };
        let out = answer(&entry, &fp.literals).unwrap_or_else(|| rewrite(sql, rules, catalog));
        let size_change = self.insert(key, entry);
        (out, miss(size_change))
    }

    /// Inserts `entry`, evicting an eighth of the cache when full.
    ///
    /// # Returns
    /// How much the number of entries changed.
    fn insert(&self, key: Key, entry: Cached) -> isize {
        let before = self.map.len() as isize;
        if self.map.len() >= self.capacity {
            let drop_count = (self.capacity / 8).max(1);
            let victims: Vec<Key> = self
                .map
                .iter()
                .take(drop_count)
                .map(|e| e.key().clone())
                .collect();
            for v in victims {
                self.map.remove(&v);
            }
        }
        self.map.insert(key, Arc::new(entry));
        self.map.len() as isize - before
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            size: self.map.len(),
        }
    }

    /// Drop every entry (e.g. after a rules reload, though a new `rules_version` also works).
    pub fn clear(&self) {
        self.map.clear();
    }
}

fn answer(cached: &Cached, literals: &[&str]) -> Option<Classified> {
    let outcome = match &cached.entry {
        Entry::Unchanged => Outcome::Unchanged,
        Entry::Rewritten(t) => Outcome::Rewritten(t.fill(literals)?),
    };
    Some(Ok((outcome, cached.usage.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::rewrite;
    use crate::rewrite::tests::support::{catalog, rules};

    #[test]
    fn inline_literals_hit_and_are_spliced_back() {
        let cache = RewriteCache::new(16);
        let (r, c) = (rules("expand"), catalog());
        let a = cache
            .get_or_rewrite("INSERT INTO users (id, name) VALUES (1, 'Ann')", 1, &r, &c)
            .unwrap();
        let b = cache
            .get_or_rewrite("INSERT INTO users (id, name) VALUES (2, 'B''o')", 1, &r, &c)
            .unwrap();
        assert_eq!(
            a,
            Outcome::Rewritten(
                "INSERT INTO users (id, name, full_name) VALUES (1, 'Ann', 'Ann')".into()
            )
        );
        assert_eq!(
            b,
            Outcome::Rewritten(
                "INSERT INTO users (id, name, full_name) VALUES (2, 'B''o', 'B''o')".into()
            )
        );
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                size: 1
            }
        );
    }

    #[test]
    fn cached_result_equals_direct_rewrite() {
        let cache = RewriteCache::new(16);
        let (r, c) = (rules("migrate"), catalog());
        for sql in [
            "SELECT name FROM users WHERE id = 5 LIMIT 10",
            "UPDATE orders SET status = 'paid' WHERE id = 3",
            "SELECT name::varchar(20) FROM users WHERE name = 'x'",
            "UPDATE orders SET status = 'paid' WHERE id = 4",
            "SELECT 1",
        ] {
            assert_eq!(
                cache.get_or_rewrite(sql, 7, &r, &c),
                rewrite(sql, &r, &c),
                "{sql}"
            );
        }
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn rules_version_separates_entries_and_capacity_bounds_size() {
        let cache = RewriteCache::new(2);
        let (r, c) = (rules("contract"), catalog());
        for v in 0..5 {
            let _ = cache.get_or_rewrite("SELECT name FROM users WHERE id = 1", v, &r, &c);
        }
        assert!(cache.stats().size <= 2);
        assert_eq!(cache.stats().misses, 5);
    }

    #[test]
    fn a_search_path_set_by_a_literal_is_read_from_the_text() {
        use crate::rewrite::rewrite_in;
        let (r, c) = (rules("migrate"), catalog());
        let cache = RewriteCache::new(16);
        let elsewhere = SearchPath::new(vec!["other".into()], vec![]);
        // The same fingerprint: only the literal tells the texts apart.
        for sql in [
            "SET search_path TO 'other'; SELECT name FROM users",
            "SET search_path TO 'public'; SELECT name FROM users",
        ] {
            let cached = cache.lookup_in(sql, 1, &r, &c, &elsewhere).0;
            let direct = rewrite_in(sql, &r, &c, &elsewhere);
            assert_eq!(cached, direct, "{sql}");
        }
        assert!(matches!(
            rewrite_in(
                "SET search_path TO 'public'; SELECT name FROM users",
                &r,
                &c,
                &elsewhere
            ),
            Ok((Outcome::Rewritten(_), _))
        ));
    }
}
