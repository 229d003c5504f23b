//! The AST walk: scopes, reads, and dispatch to the write rewrites.
//!
//! Follows DataFusion's `RelationVisitor` pattern: sqlparser's read-only [`Visitor`] finds
//! column references inside expressions, while query structure (CTE scopes, `FROM` before
//! the select list, `ORDER BY` seeing output labels) is walked by hand so every reference
//! is resolved in the scope Postgres would use. Subqueries met inside an expression are
//! handed back to [`Ctx::walk_query`] and skipped by the expression visitor.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Delete, Distinct, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    OrderBy, OrderByKind, Query, Select, SetExpr, Statement, TableWithJoins, Visit, Visitor,
};
use sqlparser::keywords::Keyword;

use super::ctx::{name_parts, Ctx, Deferred, ItemsKind, Labels};
use super::ident::normalize;
use super::phase::{migrate_value, read_value};
use super::scope::{find_rel, resolve, Rel, RelKind, Resolution};
use super::{copy, function, insert, predicate, update, Refuse};

struct ExprWalk<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    /// Depth inside a subquery, which [`Ctx::walk_query`] has walked already.
    skip: usize,
    /// Depth inside an expression rewritten whole, whose parts must not be edited again.
    skip_expr: usize,
}

/// Whether the walk goes on into an expression's parts.
enum Walked {
    Parts,
    Whole,
}

impl Visitor for ExprWalk<'_, '_> {
    type Break = Refuse;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refuse> {
        if self.skip == 0 && self.skip_expr == 0 {
            if let Err(e) = self.ctx.walk_query(query) {
                return ControlFlow::Break(e);
            }
        }
        self.skip += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Refuse> {
        self.skip = self.skip.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Refuse> {
        if self.skip_expr > 0 {
            self.skip_expr += 1;
            return ControlFlow::Continue(());
        }
        if self.skip > 0 {
            return ControlFlow::Continue(());
        }
        match self.ctx.on_expr(expr) {
            Ok(Walked::Parts) => ControlFlow::Continue(()),
            Ok(Walked::Whole) => {
                self.skip_expr = 1;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Refuse> {
        self.skip_expr = self.skip_expr.saturating_sub(1);
        ControlFlow::Continue(())
    }
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    /// Walk one statement; returns its output labels (for data-modifying CTEs).
    pub fn walk_statement(&mut self, statement: &Statement) -> Result<Labels, Refuse> {
        self.note_targets(statement);
        match statement {
            Statement::Query(q) => self.walk_query(q),
            Statement::Insert(i) => insert::walk(self, i),
            Statement::Update(u) => update::walk(self, u),
            Statement::Delete(d) => self.walk_delete(d),
            Statement::Copy {
                source,
                to,
                target: _,
                ..
            } => copy::walk(self, source, *to).map(|()| None),
            Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
                self.walk_statement(statement).map(|_| None)
            }
            Statement::Declare { stmts } => {
                for q in stmts.iter().filter_map(|d| d.for_query.as_deref()) {
                    self.walk_query(q)?;
                }
                Ok(None)
            }
            Statement::CreateTable(ct) => match &ct.query {
                Some(q) => self.walk_query(q).map(|_| None),
                None => Ok(None),
            },
            Statement::CreateFunction(f) => function::walk(self, f),
            Statement::CreateView(_) | Statement::Merge(_) => {
                self.refuse_if_mapped(statement, "this statement kind over a mapped table")?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Refuse when `node` names a mapped table anywhere.
    pub(crate) fn refuse_if_mapped<V: Visit>(&self, node: &V, what: &str) -> Result<(), Refuse> {
        let mut found = None;
        let _ = sqlparser::ast::visit_relations(node, |name| {
            if let Some((schema, table)) = self.mapped_table(name) {
                found = self.rules.on_table(&schema, &table).next().cloned();
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        match found {
            Some(rule) => Err(Refuse::rule(&rule, format!("cannot rewrite {what}"))),
            None => Ok(()),
        }
    }

    pub fn walk_query(&mut self, query: &Query) -> Result<Labels, Refuse> {
        let mark = self.ctes.len();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = normalize(&cte.alias.name);
                let declared: Vec<String> = cte
                    .alias
                    .columns
                    .iter()
                    .map(|c| normalize(&c.name))
                    .collect();
                if with.recursive {
                    self.ctes.push((
                        name.clone(),
                        (!declared.is_empty()).then(|| declared.clone()),
                    ));
                }
                let labels = self.walk_query(&cte.query)?;
                let columns = if declared.is_empty() {
                    labels
                } else {
                    Some(declared)
                };
                if with.recursive {
                    self.ctes.pop();
                }
                self.ctes.push((name, columns));
            }
        }
        let labels = self.walk_set_expr(&query.body, query.order_by.as_ref())?;
        self.walk_node(&query.limit_clause)?;
        self.walk_node(&query.fetch)?;
        self.ctes.truncate(mark);
        Ok(labels)
    }

    fn walk_set_expr(
        &mut self,
        body: &SetExpr,
        order_by: Option<&OrderBy>,
    ) -> Result<Labels, Refuse> {
        match body {
            SetExpr::Select(select) => self.walk_select(select, order_by),
            SetExpr::Query(q) => self.walk_query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let labels = self.walk_set_expr(left, None)?;
                self.walk_set_expr(right, None)?;
                Ok(labels)
            }
            SetExpr::Values(values) => {
                for row in &values.rows {
                    for expr in &row.content {
                        self.walk_expr(expr)?;
                    }
                }
                let width = values.rows.first().map_or(0, |r| r.content.len());
                Ok(Some((1..=width).map(|i| format!("column{i}")).collect()))
            }
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => self.walk_statement(s),
            SetExpr::Merge(s) => {
                self.refuse_if_mapped(s, "MERGE")?;
                Ok(None)
            }
            SetExpr::Table(_) => {
                self.refuse_if_mapped(body, "TABLE over a mapped table; use SELECT *")?;
                Ok(None)
            }
        }
    }

    fn walk_select(
        &mut self,
        select: &Select,
        order_by: Option<&OrderBy>,
    ) -> Result<Labels, Refuse> {
        let deferred = self.push_scope(&select.from)?;
        let result = self.walk_select_in_scope(select, order_by, deferred);
        self.scopes.pop();
        result
    }

    fn walk_select_in_scope(
        &mut self,
        select: &Select,
        order_by: Option<&OrderBy>,
        deferred: Vec<Deferred<'_>>,
    ) -> Result<Labels, Refuse> {
        self.walk_deferred(deferred)?;
        let first = self.first_projection_token(select)?;
        let labels = self.walk_items(&select.projection, first, ItemsKind::Select)?;
        self.walk_node(&select.distinct)?;
        let ordered = self.ordered_values(order_by.filter(|_| select.selection.is_some()), &labels);
        let outer = std::mem::replace(&mut self.ordered, ordered);
        let walked = self.walk_node(&select.selection);
        self.ordered = outer;
        walked?;
        self.walk_node(&select.group_by)?;
        self.walk_node(&select.having)?;
        self.walk_node(&select.named_window)?;
        self.walk_node(&select.qualify)?;
        if let Some(OrderBy {
            kind: OrderByKind::Expressions(items),
            ..
        }) = order_by
        {
            for item in items {
                let is_label = match &item.expr {
                    Expr::Identifier(id) => {
                        labels.as_ref().is_some_and(|l| l.contains(&normalize(id)))
                    }
                    _ => false,
                };
                if !is_label {
                    self.walk_node(item)?;
                }
            }
        }
        Ok(labels)
    }

    /// What the mapped columns `order_by` names read as in migrate (labels of
    /// the select list aside), for the predicates of its `WHERE`. A name that
    /// does not resolve is left to the walk of the `ORDER BY` to report.
    fn ordered_values(&self, order_by: Option<&OrderBy>, labels: &Labels) -> Vec<String> {
        let Some(OrderBy {
            kind: OrderByKind::Expressions(items),
            ..
        }) = order_by
        else {
            return Vec::new();
        };
        let mut values = Vec::new();
        for item in items {
            let (qualifier, column) = match &item.expr {
                Expr::Identifier(id) => {
                    if labels.as_ref().is_some_and(|l| l.contains(&normalize(id))) {
                        continue;
                    }
                    (&[][..], id)
                }
                Expr::CompoundIdentifier(parts) => match parts.split_last() {
                    Some((column, qualifier)) if !qualifier.is_empty() => (qualifier, column),
                    _ => continue,
                },
                _ => continue,
            };
            if let Ok(Resolution::Mapped(m)) =
                resolve(&self.scopes, self.rules, self.catalog, qualifier, column)
            {
                if let Some(v) = migrate_value(m.rule, m.side, m.index, &m.row()) {
                    values.push(v.case());
                }
            }
        }
        values
    }

    fn first_projection_token(&self, select: &Select) -> Result<usize, Refuse> {
        let mut i = self.src.token_index(select.select_token.0.span.start)? + 1;
        match &select.distinct {
            Some(Distinct::On(_)) => {
                let open = i + 2;
                i = self
                    .src
                    .matching_close(open)
                    .ok_or_else(|| Refuse::new("unbalanced DISTINCT ON"))?
                    + 1;
            }
            Some(_) => i += 1,
            None if self.src.is_kw(i, Keyword::ALL) => i += 1,
            None => {}
        }
        Ok(i)
    }

    pub fn walk_expr(&mut self, expr: &Expr) -> Result<(), Refuse> {
        self.walk_node(expr)
    }

    /// Walk every expression inside `node` in the current scope.
    pub fn walk_node<V: Visit>(&mut self, node: &V) -> Result<(), Refuse> {
        let mut walk = ExprWalk {
            ctx: self,
            skip: 0,
            skip_expr: 0,
        };
        match node.visit(&mut walk) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e),
        }
    }

    fn on_expr(&mut self, expr: &Expr) -> Result<Walked, Refuse> {
        self.note_expr(expr);
        if let Some((start, end, text)) = predicate::rewrite(self, expr)? {
            self.note_refs_in(expr);
            self.edits.replace(start, end, text)?;
            return Ok(Walked::Whole);
        }
        match expr {
            Expr::Identifier(id) => self.rewrite_ref(&[], id, std::slice::from_ref(id))?,
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let (column, qualifier) = parts
                    .split_last()
                    .ok_or_else(|| Refuse::new("empty name"))?;
                self.rewrite_ref(qualifier, column, parts)?
            }
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(name)) = arg
                        {
                            self.refuse_mapped_whole_row(&name_parts(name).unwrap_or_default())?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(Walked::Parts)
    }

    fn refuse_mapped_whole_row(&self, qualifier: &[&Ident]) -> Result<(), Refuse> {
        let owned: Vec<Ident> = qualifier.iter().map(|i| (*i).clone()).collect();
        if let Some(Rel {
            kind: RelKind::Mapped { schema, table },
            ..
        }) = find_rel(&self.scopes, &owned)
        {
            if let Some(rule) = self.rules.on_table(schema, table).next() {
                return Err(Refuse::rule(
                    rule,
                    "whole-row reference to a mapped table; list the columns",
                ));
            }
        }
        Ok(())
    }

    /// The read expression for a reference, when it must change.
    pub fn replacement(
        &self,
        qualifier: &[Ident],
        column: &Ident,
    ) -> Result<Option<String>, Refuse> {
        match resolve(&self.scopes, self.rules, self.catalog, qualifier, column)? {
            Resolution::Mapped(m) => Ok(read_value(m.rule, m.side, m.index, &m.row())),
            Resolution::Other => Ok(None),
        }
    }

    fn rewrite_ref(
        &mut self,
        qualifier: &[Ident],
        column: &Ident,
        all: &[Ident],
    ) -> Result<(), Refuse> {
        match self.replacement(qualifier, column)? {
            Some(text) => {
                let (first, last) = match (all.first(), all.last()) {
                    (Some(f), Some(l)) => (f, l),
                    _ => return Err(Refuse::new("empty name")),
                };
                let (start, _) = self.src.ident_range(first)?;
                let (_, end) = self.src.ident_range(last)?;
                self.edits.replace(start, end, text)
            }
            None if qualifier.is_empty() => self.refuse_mapped_whole_row(&[column]),
            None => Ok(()),
        }
    }

    fn walk_delete(&mut self, delete: &Delete) -> Result<Labels, Refuse> {
        let mut from: Vec<TableWithJoins> = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t.clone(),
        };
        from.extend(delete.using.iter().flatten().cloned());
        let deferred = self.push_scope(&from)?;
        let result = (|| {
            self.walk_deferred(deferred)?;
            self.walk_node(&delete.selection)?;
            self.walk_returning(
                delete.delete_token.0.span.start,
                delete.returning.as_deref(),
            )
        })();
        self.scopes.pop();
        result
    }
}
