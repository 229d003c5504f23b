//! Which shape of each rule a statement uses: old column names, new ones, or `*`.
//!
//! The rewrite walk already resolves every column reference the way Postgres would, so it
//! notes the shape of each mapped column it meets; the answer rides along with the
//! rewrite (and its cache entry), and tells an operator whether any client still speaks
//! the old shape before the rule is removed. A statement counts once per rule and shape,
//! however often it names the column.

use std::sync::Arc;

use super::rules::{Rule, Side};

/// How a statement named a rule's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// An old column, by name.
    Old,
    /// A new column, by name.
    New,
    /// All columns of a mapped table without naming them: `*`, `t.*`, an `INSERT` or
    /// `COPY` without a column list.
    Star,
}

/// The shapes one statement used, per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage(Option<Arc<[RuleUsage]>>);

/// The shapes one statement used of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleUsage {
    /// The rule's id.
    pub rule: String,
    /// Old column names appear.
    pub old: bool,
    /// New column names appear.
    pub new: bool,
    /// `*` (or an implicit column list) covers the rule's table.
    pub star: bool,
}

/// Collected during one rewrite; frozen into a [`Usage`].
#[derive(Debug, Default)]
pub(crate) struct UsageSet(Vec<RuleUsage>);

// === impl Shape ===

impl Shape {
    /// Every shape, in label order.
    pub const ALL: [Shape; 3] = [Shape::Old, Shape::New, Shape::Star];

    /// The metric label: `old`, `new` or `star`.
    pub fn label(self) -> &'static str {
        match self {
            Shape::Old => "old",
            Shape::New => "new",
            Shape::Star => "star",
        }
    }

    pub(crate) fn of(side: Side) -> Shape {
        match side {
            Side::Old => Shape::Old,
            Side::New => Shape::New,
        }
    }
}

// === impl Usage ===

impl Usage {
    /// Every `(rule id, shape)` the statement used.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Shape)> + '_ {
        self.0.iter().flat_map(|rules| rules.iter()).flat_map(|r| {
            Shape::ALL
                .into_iter()
                .filter(|s| r.has(*s))
                .map(|s| (r.rule.as_str(), s))
        })
    }

    /// Whether the statement used `shape` of rule `rule`.
    pub fn has(&self, rule: &str, shape: Shape) -> bool {
        self.iter().any(|(r, s)| r == rule && s == shape)
    }

    /// Whether the statement named no mapped column.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

// === impl RuleUsage ===

impl RuleUsage {
    /// Whether `shape` was used.
    pub fn has(&self, shape: Shape) -> bool {
        match shape {
            Shape::Old => self.old,
            Shape::New => self.new,
            Shape::Star => self.star,
        }
    }
}

// === impl UsageSet ===

impl UsageSet {
    pub(crate) fn note(&mut self, rule: &Rule, shape: Shape) {
        let at = match self.0.iter().position(|r| r.rule == rule.id) {
            Some(at) => at,
            None => {
                self.0.push(RuleUsage {
                    rule: rule.id.clone(),
                    old: false,
                    new: false,
                    star: false,
                });
                self.0.len() - 1
            }
        };
        let entry = &mut self.0[at];
        match shape {
            Shape::Old => entry.old = true,
            Shape::New => entry.new = true,
            Shape::Star => entry.star = true,
        }
    }

    /// Adds what `other` saw.
    pub(crate) fn merge(&mut self, other: UsageSet) {
        for r in other.0 {
            let at = match self.0.iter().position(|mine| mine.rule == r.rule) {
                Some(at) => at,
                None => {
                    self.0.push(r);
                    continue;
                }
            };
            let mine = &mut self.0[at];
            mine.old |= r.old;
            mine.new |= r.new;
            mine.star |= r.star;
        }
    }

    pub(crate) fn freeze(self) -> Usage {
        if self.0.is_empty() {
            Usage(None)
        } else {
            Usage(Some(self.0.into()))
        }
    }
}

#[cfg(test)]
mod tests;
