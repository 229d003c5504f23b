//! The value a mapped column reads as in each phase (the semantics table of issue 3).
//!
//! Reads are rewritten to these expressions; `None` means the plain column is already the
//! right value (old columns in expand, new columns in contract), so the reference is left
//! alone and indexes keep working.

use super::ident::quote;
use super::rules::{Phase, Rule, Side};

/// `qual.column`, both parts quoted as needed.
pub(crate) fn column_ref(qual: &str, column: &str) -> String {
    format!("{qual}.{}", quote(column))
}

/// The expression to read `rule.side(side)[index]` as, for the row named `qual`.
///
/// `absent`, for a relation on the nullable side of an outer join, holds exactly when its
/// row does not exist: a value computed by a transform is NULL then, as a column would be.
pub(crate) fn read_value(
    rule: &Rule,
    side: Side,
    index: usize,
    qual: &str,
    absent: Option<&str>,
) -> Option<String> {
    match (rule.phase, side) {
        (Phase::Expand, Side::Old) | (Phase::Contract, Side::New) => None,
        (Phase::Expand, Side::New) | (Phase::Contract, Side::Old) => {
            computed(rule, side, index, qual, absent)
        }
        (Phase::Migrate, _) => {
            let MigrateValue {
                not_migrated,
                unmigrated,
                migrated,
            } = migrate_value(rule, side, index, qual, absent)?;
            Some(format!(
                "(CASE WHEN {not_migrated} THEN {unmigrated} ELSE {migrated} END)"
            ))
        }
    }
}

/// The two values a column reads as in the migrate phase, and which applies.
pub(crate) struct MigrateValue {
    /// True when the row has not migrated (never NULL).
    pub not_migrated: String,
    /// The value for a row that has not migrated.
    pub unmigrated: String,
    /// The value for a row that has.
    pub migrated: String,
}

/// The migrate-phase value of `rule.side(side)[index]` for the row named `qual`, as its
/// branches; `None` outside migrate.
pub(crate) fn migrate_value(
    rule: &Rule,
    side: Side,
    index: usize,
    qual: &str,
    absent: Option<&str>,
) -> Option<MigrateValue> {
    if rule.phase != Phase::Migrate {
        return None;
    }
    let plain = column_ref(qual, rule.side(side).get(index)?);
    let other = computed(rule, side, index, qual, absent)?;
    let (unmigrated, migrated) = match side {
        Side::Old => (plain, other),
        Side::New => (other, plain),
    };
    Some(MigrateValue {
        not_migrated: not_migrated(rule, qual),
        unmigrated,
        migrated,
    })
}

/// `rule.side(side)[index]` computed from the other shape; NULL when `absent` holds (a
/// bare column needs no such guard: it is NULL in a missing row already).
fn computed(
    rule: &Rule,
    side: Side,
    index: usize,
    qual: &str,
    absent: Option<&str>,
) -> Option<String> {
    let template = rule.transform(side, index)?;
    let value = template.render_text(&mut |c| column_ref(qual, c));
    Some(match absent {
        Some(absent) if template.identity_column().is_none() => {
            format!("(CASE WHEN {absent} THEN NULL ELSE {value} END)")
        }
        _ => value,
    })
}

/// `q.n1 IS NOT NULL OR q.n2 IS NOT NULL`: the row has migrated.
pub(crate) fn migrated(rule: &Rule, qual: &str) -> String {
    rule.new
        .iter()
        .map(|n| format!("{} IS NOT NULL", column_ref(qual, n)))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `q.n1 IS NULL AND q.n2 IS NULL`: the row has not migrated.
pub(crate) fn not_migrated(rule: &Rule, qual: &str) -> String {
    rule.new
        .iter()
        .map(|n| format!("{} IS NULL", column_ref(qual, n)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
