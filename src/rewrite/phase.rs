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
pub(crate) fn read_value(rule: &Rule, side: Side, index: usize, qual: &str) -> Option<String> {
    let computed = || {
        let template = rule.transform(side, index)?;
        Some(template.render_text(&mut |c| column_ref(qual, c)))
    };
    match (rule.phase, side) {
        (Phase::Expand, Side::Old) | (Phase::Contract, Side::New) => None,
        (Phase::Expand, Side::New) | (Phase::Contract, Side::Old) => computed(),
        (Phase::Migrate, _) => {
            let plain = column_ref(qual, rule.side(side).get(index)?);
            let (when_unmigrated, when_migrated) = match side {
                Side::Old => (plain, computed()?),
                Side::New => (computed()?, plain),
            };
            Some(format!(
                "(CASE WHEN {} THEN {when_unmigrated} ELSE {when_migrated} END)",
                not_migrated(rule, qual)
            ))
        }
    }
}

/// `q.n1 IS NULL AND q.n2 IS NULL`: the row has not migrated.
pub(crate) fn not_migrated(rule: &Rule, qual: &str) -> String {
    rule.new
        .iter()
        .map(|n| format!("{} IS NULL", column_ref(qual, n)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
