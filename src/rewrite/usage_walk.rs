//! Noting, during the rewrite walk, which shape of each rule a statement
//! names (see [`super::usage`]): column references, `*`, write targets.
use sqlparser::ast::{
    AssignmentTarget, ConflictTarget, Expr, Ident, Insert, OnConflictAction, OnInsert, SelectItem,
    SelectItemQualifiedWildcardKind, Statement, TableFactor, TableObject, Visit, Visitor,
};

use super::ctx::{name_parts, Ctx};
use super::ident::normalize;
use super::rules::Rule;
use super::scope::{find_rel, resolve, RelKind, Resolution};
use super::usage::{Shape, UsageSet};

/// Finds the column references inside an expression rewritten whole.
struct Refs<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl Visitor for Refs<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> std::ops::ControlFlow<()> {
        self.ctx.note_expr(expr);
        std::ops::ControlFlow::Continue(())
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// Notes the shape of a column reference that resolves to a mapped column. A reference
    /// that does not resolve is refused by the rewrite itself, so it is left alone here.
    pub(crate) fn note_ref(&mut self, qualifier: &[Ident], column: &Ident) {
        if let Ok(Resolution::Mapped(m)) =
            resolve(&self.scopes, self.rules, self.catalog, qualifier, column)
        {
            self.usage.note(m.rule, Shape::of(m.side));
        }
    }

    /// What the walk noted; the context keeps nothing.
    pub(crate) fn take_usage(&mut self) -> UsageSet {
        std::mem::take(&mut self.usage)
    }

    /// Notes `expr` when it is a column reference.
    pub(crate) fn note_expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Identifier(id) => self.note_ref(&[], id),
            Expr::CompoundIdentifier(parts) => {
                if let Some((column, qualifier)) = parts.split_last() {
                    if !qualifier.is_empty() {
                        self.note_ref(qualifier, column);
                    }
                }
            }
            _ => {}
        }
    }

    /// Notes every column reference inside `expr`, which is rewritten as a whole (its
    /// parts are not walked one by one).
    pub(crate) fn note_refs_in(&mut self, expr: &Expr) {
        let _ = expr.visit(&mut Refs { ctx: self });
    }

    /// Notes that `*` covers mapped table `schema.table`.
    pub(crate) fn note_star(&mut self, schema: &str, table: &str) {
        let rules: Vec<&Rule> = self.rules.on_table(schema, table).collect();
        for rule in rules {
            self.usage.note(rule, Shape::Star);
        }
    }

    /// Notes the columns a write names outside expressions: the column list of `INSERT`
    /// and `COPY` (or its absence), `SET` targets, `ON CONFLICT` columns.
    pub(crate) fn note_targets(&mut self, statement: &Statement) {
        match statement {
            Statement::Insert(ins) => self.note_insert(ins),
            Statement::Update(u) => {
                if let TableFactor::Table { name, .. } = &u.table.relation {
                    if let Some((schema, table)) = self.mapped_table(name) {
                        self.note_assignments(&schema, &table, &u.assignments);
                    }
                }
            }
            Statement::Copy {
                source:
                    sqlparser::ast::CopySource::Table {
                        table_name,
                        columns,
                    },
                ..
            } => {
                if let Some((schema, table)) = self.mapped_table(table_name) {
                    self.note_columns(&schema, &table, columns);
                }
            }
            _ => {}
        }
    }

    fn note_insert(&mut self, ins: &Insert) {
        let TableObject::TableName(name) = &ins.table else {
            return;
        };
        let Some((schema, table)) = self.mapped_table(name) else {
            return;
        };
        if ins.source.is_some() {
            // A column list names a column, or a field of one (`INSERT INTO t (c.f)`).
            let columns: Vec<Ident> = ins
                .columns
                .iter()
                .filter_map(|c| name_parts(c).and_then(|p| p.first().map(|f| (*f).clone())))
                .collect();
            self.note_columns(&schema, &table, &columns);
        }
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            if let Some(ConflictTarget::Columns(cols)) = &oc.conflict_target {
                for c in cols {
                    self.note_column(&schema, &table, c);
                }
            }
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                self.note_assignments(&schema, &table, &du.assignments);
            }
        }
    }

    /// A column list; an empty one means every column, in table order.
    fn note_columns(&mut self, schema: &str, table: &str, columns: &[Ident]) {
        if columns.is_empty() {
            self.note_star(schema, table);
        }
        for c in columns {
            self.note_column(schema, table, c);
        }
    }

    fn note_assignments(
        &mut self,
        schema: &str,
        table: &str,
        assignments: &[sqlparser::ast::Assignment],
    ) {
        for a in assignments {
            let names = match &a.target {
                AssignmentTarget::ColumnName(n) => std::slice::from_ref(n),
                AssignmentTarget::Tuple(ns) => ns.as_slice(),
            };
            for name in names {
                // `SET col.field = ...` assigns a field of column `col`.
                if let Some(first) = name_parts(name).and_then(|p| p.first().copied()) {
                    self.note_column(schema, table, first);
                }
            }
        }
    }

    fn note_column(&mut self, schema: &str, table: &str, column: &Ident) {
        if let Some((rule, side, _)) = self.rules.rule_for(schema, table, &normalize(column)) {
            self.usage.note(rule, Shape::of(side));
        }
    }
}

// === impl Ctx: select lists ===

impl Ctx<'_> {
    /// Notes `*` and `qual.*` items of a select or `RETURNING` list over mapped tables.
    pub(crate) fn note_stars(&mut self, items: &[SelectItem]) {
        for item in items {
            let qualifier: Option<Vec<Ident>> = match item {
                SelectItem::Wildcard(_) => None,
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => Some(
                    name_parts(n)
                        .unwrap_or_default()
                        .into_iter()
                        .cloned()
                        .collect(),
                ),
                _ => continue,
            };
            let tables: Vec<(String, String)> = match &qualifier {
                Some(q) => find_rel(&self.scopes, q).into_iter().collect::<Vec<_>>(),
                None => self
                    .scopes
                    .last()
                    .map(|s| s.rels.iter().collect())
                    .unwrap_or_default(),
            }
            .into_iter()
            .filter_map(|rel| match &rel.kind {
                RelKind::Mapped { schema, table } => Some((schema.clone(), table.clone())),
                RelKind::Other { .. } => None,
            })
            .collect();
            for (schema, table) in tables {
                self.note_star(&schema, &table);
            }
        }
    }
}
