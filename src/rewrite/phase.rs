//! The value a mapped column reads as in each phase (the semantics table in the README).
//!
//! Reads are rewritten to these expressions; `None` means the plain column is already the
//! right value (old columns in expand, new columns in contract), so the reference is left
//! alone and indexes keep working.

use super::catalog::Catalog;
use super::ident::quote;
use super::rules::{Phase, Rule, Side};

/// `qual.column`, both parts quoted as needed.
pub(crate) fn column_ref(qual: &str, column: &str) -> String {
    format!("{qual}.{}", quote(column))
}

/// The expression to read `rule.side(side)[index]` as, for the row named `qual`.
///
/// `row` says how to name the row and what the catalog knows of the column.
pub(crate) fn read_value(rule: &Rule, side: Side, index: usize, row: &Row<'_>) -> Option<String> {
    match (rule.phase, side) {
        (Phase::Expand, Side::Old) | (Phase::Contract, Side::New) => None,
        (Phase::Expand, Side::New) | (Phase::Contract, Side::Old) => {
            computed(rule, side, index, row)
        }
        (Phase::Migrate, _) => Some(migrate_value(rule, side, index, row)?.case()),
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

impl MigrateValue {
    /// The one expression: what a column reads as in migrate, and what the
    /// index `pgshim plan --phase expand` adds for it is built on.
    pub(crate) fn case(&self) -> String {
        let MigrateValue {
            not_migrated,
            unmigrated,
            migrated,
        } = self;
        format!("(CASE WHEN {not_migrated} THEN {unmigrated} ELSE {migrated} END)")
    }
}

/// The migrate-phase value of `rule.side(side)[index]` for the row named `qual`, as its
/// branches; `None` outside migrate.
pub(crate) fn migrate_value(
    rule: &Rule,
    side: Side,
    index: usize,
    row: &Row<'_>,
) -> Option<MigrateValue> {
    let qual = row.qual;
    if rule.phase != Phase::Migrate {
        return None;
    }
    let plain = column_ref(qual, rule.side(side).get(index)?);
    let other = computed(rule, side, index, row)?;
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

/// The row a column is read from.
pub(crate) struct Row<'a> {
    /// Its qualifier in generated SQL (quoted as needed).
    pub qual: &'a str,
    /// For a relation on the nullable side of an outer join, the condition that holds
    /// exactly when the row does not exist: a computed value is NULL then, as a column is.
    pub absent: Option<&'a str>,
    /// The column's type, which a computed value is cast to so that it describes as the
    /// column does; `None` when the catalog does not know it or no cast is needed.
    pub ty: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// A row of a table that is never NULL-extended, with no type information.
    pub(crate) fn plain(qual: &'a str) -> Row<'a> {
        Row {
            qual,
            absent: None,
            ty: None,
        }
    }
}

/// The type to cast a computed `rule.side(side)[index]` of `schema.table` to: the
/// column's own, when Postgres described the transform as another type.
pub(crate) fn value_type<'c>(
    catalog: &'c Catalog,
    schema: &str,
    table: &str,
    rule: &Rule,
    side: Side,
    index: usize,
) -> Option<&'c str> {
    let column = rule.side(side).get(index)?;
    if !catalog.is_retyped(schema, table, column) {
        return None;
    }
    Some(&catalog.table(schema, table)?.column(column)?.type_sql)
}

/// `rule.side(side)[index]` computed from the other shape, cast to the column's type and
/// NULL for a missing outer-join row (a bare column needs no guard: it is NULL there).
fn computed(rule: &Rule, side: Side, index: usize, row: &Row<'_>) -> Option<String> {
    let template = rule.transform(side, index)?;
    let mut value = template.render_text(&mut |c| column_ref(row.qual, c));
    if let Some(ty) = row.ty {
        value = format!("CAST({value} AS {ty})");
    }
    Some(match row.absent {
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
// === impl Rule: SQL for the migration operations (backfill, verify, plan) ===

impl Rule {
    /// `to_new_n(O)` for `new[index]`, reading the old columns of the row named
    /// `qualifier` (already quoted as needed), e.g. `(split_part(t.name, ' ', 1))`.
    ///
    /// # Returns
    /// `None` when `index` is out of range.
    pub fn to_new_sql(&self, index: usize, qualifier: &str) -> Option<String> {
        let t = self.to_new.get(index)?;
        Some(t.render_text(&mut |c| column_ref(qualifier, c)))
    }

    /// `to_old_o(N)` for `old[index]`, reading the new columns of the row named `qualifier`.
    ///
    /// # Returns
    /// `None` when `index` is out of range.
    pub fn to_old_sql(&self, index: usize, qualifier: &str) -> Option<String> {
        let t = self.to_old.get(index)?;
        Some(t.render_text(&mut |c| column_ref(qualifier, c)))
    }

    /// `q.n1 IS NULL AND ...`: true for a row of `qualifier` that has not migrated.
    pub fn not_migrated_sql(&self, qualifier: &str) -> String {
        not_migrated(self, qualifier)
    }
}
