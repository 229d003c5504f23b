//! Name resolution: which relation a column reference points at, as Postgres decides it.
//!
//! Each `SELECT` (and each DML statement) pushes a [`Scope`] with the relations of its
//! `FROM` clause; references resolve innermost scope first. A relation is *mapped* when it
//! is a mapped table (not shadowed by a CTE of the same name); other relations are opaque,
//! their columns known only when they are CTEs or derived tables we walked.

use sqlparser::ast::Ident;

use super::catalog::Catalog;
use super::ident::{normalize, quote};
use super::rules::{Rule, RuleSet, Side};
use super::Refuse;

/// What a relation in `FROM` is.
#[derive(Debug, Clone)]
pub(crate) enum RelKind {
    /// A mapped table.
    Mapped { schema: String, table: String },
    /// Anything else; `columns` when known (CTEs, derived tables, function aliases).
    Other { columns: Option<Vec<String>> },
}

/// One relation visible to column references.
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    /// The name references use: the alias, else the table's own name.
    pub refname: Option<String>,
    /// `(schema, table)` when the relation is an unaliased table, for `schema.table.col`.
    pub full_name: Option<(String, String)>,
    pub kind: RelKind,
    /// Reachable only through its name (`EXCLUDED` in `ON CONFLICT DO UPDATE`).
    pub qualified_only: bool,
    /// On the nullable side of an outer join: a row of it may not exist, and then every
    /// column reads NULL, whatever a transform would compute from NULLs.
    pub nullable: bool,
}

/// The relations of one query level.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub rels: Vec<Rel>,
    /// A `USING` or `NATURAL` join merges columns, which `*` expansion cannot reproduce.
    pub merged_columns: bool,
}

/// A reference that resolved to a mapped column.
#[derive(Debug, Clone)]
pub(crate) struct MappedColumn<'r> {
    pub rule: &'r Rule,
    pub side: Side,
    pub index: usize,
    /// Qualifier to use in generated SQL (quoted as needed).
    pub qual: String,
    /// For a relation on the nullable side of an outer join, the condition that its row
    /// does not exist (a NOT NULL column, or `ctid`, IS NULL).
    pub absent: Option<String>,
    /// The column's type, to cast computed values to.
    pub ty: Option<String>,
}

impl MappedColumn<'_> {
    /// The row the column is read from, for [`super::phase::read_value`].
    pub fn row(&self) -> super::phase::Row<'_> {
        super::phase::Row {
            qual: &self.qual,
            absent: self.absent.as_deref(),
            ty: self.ty.as_deref(),
        }
    }
}

/// What a column reference is.
#[derive(Debug)]
pub(crate) enum Resolution<'r> {
    Mapped(MappedColumn<'r>),
    /// Not a mapped column (or not a column we know): leave it.
    Other,
}

// === impl Rel ===

impl Rel {
    /// When this relation is on the nullable side of an outer join: the condition that
    /// holds exactly for its NULL-extended rows.
    pub fn absent(&self, catalog: &Catalog, rules: &RuleSet) -> Option<String> {
        if !self.nullable {
            return None;
        }
        let qual = self.qual()?;
        let RelKind::Mapped { schema, table } = &self.kind else {
            return None;
        };
        let mapped = |c: &str| rules.rule_for(schema, table, c).is_some();
        let key = catalog
            .table(schema, table)
            .and_then(|t| t.columns.iter().find(|c| c.not_null && !mapped(&c.name)))
            .map_or("ctid", |c| c.name.as_str());
        Some(format!("{} IS NULL", super::phase::column_ref(&qual, key)))
    }

    /// The qualifier text for generated references, when the relation can be named.
    pub fn qual(&self) -> Option<String> {
        self.refname.as_deref().map(|n| quote(n).into_owned())
    }

    fn matches(&self, qualifier: &[String]) -> bool {
        match qualifier {
            [name] => self.refname.as_deref() == Some(name.as_str()),
            [.., schema, table] => self
                .full_name
                .as_ref()
                .is_some_and(|(s, t)| s == schema && t == table),
            [] => false,
        }
    }

    /// Whether the relation has `column` (mapped tables: physical or mapped columns).
    fn has_column(&self, column: &str, rules: &RuleSet, catalog: &Catalog) -> Option<bool> {
        match &self.kind {
            RelKind::Mapped { schema, table } => Some(
                rules.rule_for(schema, table, column).is_some()
                    || catalog
                        .table(schema, table)
                        .is_some_and(|t| t.column(column).is_some()),
            ),
            RelKind::Other { columns } => columns.as_ref().map(|cs| cs.iter().any(|c| c == column)),
        }
    }
}

/// Resolve `qualifier.column` (qualifier possibly empty) against the scope stack.
///
/// # Errors
/// When the reference is ambiguous in a way that matters: an unqualified mapped column name
/// that could also belong to a relation of unknown shape in an inner scope, two mapped
/// relations offering the column, or an outer relation whose name an inner one shadows.
pub(crate) fn resolve<'r>(
    scopes: &[Scope],
    rules: &'r RuleSet,
    catalog: &Catalog,
    qualifier: &[Ident],
    column: &Ident,
) -> Result<Resolution<'r>, Refuse> {
    let column = normalize(column);
    let qualifier: Vec<String> = qualifier.iter().map(normalize).collect();
    let found = if qualifier.is_empty() {
        find_unqualified(scopes, rules, catalog, &column)?
    } else {
        find_qualified(scopes, &qualifier)
    };
    let Some((depth, rel)) = found else {
        return Ok(Resolution::Other);
    };
    let RelKind::Mapped { schema, table } = &rel.kind else {
        return Ok(Resolution::Other);
    };
    let Some((rule, side, index)) = rules.rule_for(schema, table, &column) else {
        return Ok(Resolution::Other);
    };
    let Some(qual) = rel.qual() else {
        return Err(Refuse::rule(rule, "mapped table without a usable name"));
    };
    // A generated `qual.col` inside an inner scope must not bind to a same-named inner rel.
    let shadowed = scopes[depth + 1..]
        .iter()
        .any(|s| s.rels.iter().any(|r| r.refname == rel.refname));
    if shadowed {
        return Err(Refuse::rule(
            rule,
            format!("reference to {column} crosses a shadowing relation name"),
        ));
    }
    let absent = rel.absent(catalog, rules);
    let ty = super::phase::value_type(catalog, schema, table, rule, side, index).map(str::to_owned);
    Ok(Resolution::Mapped(MappedColumn {
        rule,
        side,
        index,
        qual,
        absent,
        ty,
    }))
}

fn find_qualified<'s>(scopes: &'s [Scope], qualifier: &[String]) -> Option<(usize, &'s Rel)> {
    scopes
        .iter()
        .enumerate()
        .rev()
        .find_map(|(d, s)| s.rels.iter().find(|r| r.matches(qualifier)).map(|r| (d, r)))
}

fn find_unqualified<'s>(
    scopes: &'s [Scope],
    rules: &RuleSet,
    catalog: &Catalog,
    column: &str,
) -> Result<Option<(usize, &'s Rel)>, Refuse> {
    let mut unknown_inner = false;
    for (depth, scope) in scopes.iter().enumerate().rev() {
        let visible = scope.rels.iter().filter(|r| !r.qualified_only);
        let mut mapped = visible.clone().filter(|r| {
            matches!(r.kind, RelKind::Mapped { .. })
                && r.has_column(column, rules, catalog) == Some(true)
        });
        if let Some(rel) = mapped.next() {
            let rule = match &rel.kind {
                RelKind::Mapped { schema, table } => {
                    rules.rule_for(schema, table, column).map(|(r, _, _)| r)
                }
                RelKind::Other { .. } => None,
            };
            if mapped.next().is_some() {
                return match rule {
                    Some(rule) => Err(Refuse::rule(
                        rule,
                        format!("column reference {column} is ambiguous"),
                    )),
                    None => Ok(None),
                };
            }
            if unknown_inner {
                if let Some(rule) = rule {
                    return Err(Refuse::rule(
                        rule,
                        format!("unqualified column {column} in a subquery may refer to an inner relation; qualify it"),
                    ));
                }
            }
            return Ok(Some((depth, rel)));
        }
        let known_elsewhere = scope
            .rels
            .iter()
            .any(|r| r.has_column(column, rules, catalog) == Some(true));
        if known_elsewhere {
            return Ok(None);
        }
        unknown_inner |= scope
            .rels
            .iter()
            .any(|r| r.has_column(column, rules, catalog).is_none());
    }
    Ok(None)
}

/// The mapped relation named by a whole-row reference or `qual.*`, if any.
pub(crate) fn find_rel<'s>(scopes: &'s [Scope], qualifier: &[Ident]) -> Option<&'s Rel> {
    let qualifier: Vec<String> = qualifier.iter().map(normalize).collect();
    find_qualified(scopes, &qualifier).map(|(_, r)| r)
}
