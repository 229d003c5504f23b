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
    JoinConstraint, JoinOperator, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Query, Select,
    SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, TableWithJoins, Visit,
    Visitor,
};
use sqlparser::keywords::Keyword;

use super::catalog::Catalog;
use super::edits::Edits;
use super::ident::{normalize, quote};
use super::phase::{column_ref, read_value};
use super::rules::RuleSet;
use super::scope::{find_rel, resolve, Rel, RelKind, Resolution, Scope};
use super::source::Source;
use super::{copy, insert, update, Refuse};

/// Output column labels of a query, when known.
pub(crate) type Labels = Option<Vec<String>>;

/// State of one rewrite.
pub(crate) struct Ctx<'a> {
    pub src: &'a Source<'a>,
    pub rules: &'a RuleSet,
    pub catalog: &'a Catalog,
    pub edits: Edits,
    pub scopes: Vec<Scope>,
    /// CTE names visible at this point, innermost last, with their columns when known.
    ctes: Vec<(String, Labels)>,
    /// Counter for generated relation names (`pgshim_s1`, ...).
    pub generated: usize,
}

/// Parts of a `FROM` clause that must be walked once its scope is pushed.
enum Deferred<'q> {
    Expr(&'q Expr),
    Query(&'q Query),
    Factor(&'q TableFactor),
}

/// Where a list of select items sits, which decides what ends it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemsKind {
    Select,
    Returning,
}

struct ExprWalk<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    skip: usize,
}

impl Visitor for ExprWalk<'_, '_> {
    type Break = Refuse;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refuse> {
        if self.skip == 0 {
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
        if self.skip > 0 {
            return ControlFlow::Continue(());
        }
        match self.ctx.on_expr(expr) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | FullOuter(c)
        | CrossJoin(c) | Semi(c) | LeftSemi(c) | RightSemi(c) | Anti(c) | LeftAnti(c)
        | RightAnti(c) | StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// Identifier parts of an object name; `None` for dialect-specific function parts.
pub(crate) fn name_parts(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0.iter().map(|p| match p {
        ObjectNamePart::Identifier(i) => Some(i),
        _ => None,
    }).collect()
}

/// The label Postgres gives an unaliased select item (close enough for `ORDER BY`).
pub(crate) fn figure_label(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(i) => normalize(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize).unwrap_or_default(),
        Expr::Nested(e) | Expr::Cast { expr: e, .. } | Expr::Collate { expr: e, .. } => figure_label(e),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(normalize).unwrap_or_default(),
        Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

/// Peel parentheses, casts and collations: what decides an item's label.
fn label_terminus(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(e) | Expr::Cast { expr: e, .. } | Expr::Collate { expr: e, .. } => label_terminus(e),
        other => other,
    }
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    pub fn new(src: &'a Source<'a>, rules: &'a RuleSet, catalog: &'a Catalog) -> Ctx<'a> {
        Ctx { src, rules, catalog, edits: Edits::default(), scopes: Vec::new(), ctes: Vec::new(), generated: 0 }
    }

    pub fn into_edits(self) -> Edits {
        self.edits
    }

    /// Walk one statement; returns its output labels (for data-modifying CTEs).
    pub fn walk_statement(&mut self, statement: &Statement) -> Result<Labels, Refuse> {
        match statement {
            Statement::Query(q) => self.walk_query(q),
            Statement::Insert(i) => insert::walk(self, i),
            Statement::Update(u) => update::walk(self, u),
            Statement::Delete(d) => self.walk_delete(d),
            Statement::Copy { source, to, target: _, .. } => copy::walk(self, source, *to).map(|()| None),
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
            Statement::CreateView(_) | Statement::Merge(_) => {
                self.refuse_if_mapped(statement, "this statement kind over a mapped table")?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Refuse when `node` names a mapped table anywhere.
    fn refuse_if_mapped<V: Visit>(&self, node: &V, what: &str) -> Result<(), Refuse> {
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

    /// `(schema, table)` when `name` denotes a mapped table (not a CTE).
    pub fn mapped_table(&self, name: &ObjectName) -> Option<(String, String)> {
        let parts: Vec<String> = name_parts(name)?.into_iter().map(normalize).collect();
        let (schema, table) = match parts.as_slice() {
            [t] if self.ctes.iter().any(|(c, _)| c == t) => return None,
            [t] => ("public".to_owned(), t.clone()),
            [.., s, t] => (s.clone(), t.clone()),
            [] => return None,
        };
        self.rules.maps_table(&schema, &table).then_some((schema, table))
    }

    /// A relation entry for a table named in `FROM`, `UPDATE`, `INSERT INTO`...
    pub fn table_rel(&self, name: &ObjectName, alias: Option<&Ident>) -> Rel {
        let parts: Vec<String> = name_parts(name).unwrap_or_default().into_iter().map(normalize).collect();
        let refname = alias.map(normalize).or_else(|| parts.last().cloned());
        let full_name = match (alias, parts.as_slice()) {
            (None, [t]) => Some(("public".to_owned(), t.clone())),
            (None, [.., s, t]) => Some((s.clone(), t.clone())),
            _ => None,
        };
        let cte = match parts.as_slice() {
            [t] => self.ctes.iter().rev().find(|(c, _)| c == t).map(|(_, cols)| cols.clone()),
            _ => None,
        };
        let kind = match (cte, self.mapped_table(name)) {
            (Some(columns), _) => RelKind::Other { columns },
            (None, Some((schema, table))) => RelKind::Mapped { schema, table },
            (None, None) => RelKind::Other { columns: None },
        };
        Rel { refname, full_name, kind }
    }

    pub fn walk_query(&mut self, query: &Query) -> Result<Labels, Refuse> {
        let mark = self.ctes.len();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = normalize(&cte.alias.name);
                let declared: Vec<String> = cte.alias.columns.iter().map(|c| normalize(&c.name)).collect();
                if with.recursive {
                    self.ctes.push((name.clone(), (!declared.is_empty()).then(|| declared.clone())));
                }
                let labels = self.walk_query(&cte.query)?;
                let columns = if declared.is_empty() { labels } else { Some(declared) };
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

    fn walk_set_expr(&mut self, body: &SetExpr, order_by: Option<&OrderBy>) -> Result<Labels, Refuse> {
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

    fn walk_select(&mut self, select: &Select, order_by: Option<&OrderBy>) -> Result<Labels, Refuse> {
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
        self.walk_node(&select.selection)?;
        self.walk_node(&select.group_by)?;
        self.walk_node(&select.having)?;
        self.walk_node(&select.named_window)?;
        self.walk_node(&select.qualify)?;
        if let Some(OrderBy { kind: OrderByKind::Expressions(items), .. }) = order_by {
            for item in items {
                let is_label = match &item.expr {
                    Expr::Identifier(id) => labels.as_ref().is_some_and(|l| l.contains(&normalize(id))),
                    _ => false,
                };
                if !is_label {
                    self.walk_node(item)?;
                }
            }
        }
        Ok(labels)
    }

    fn first_projection_token(&self, select: &Select) -> Result<usize, Refuse> {
        let mut i = self.src.token_index(select.select_token.0.span.start)? + 1;
        match &select.distinct {
            Some(Distinct::On(_)) => {
                let open = i + 2;
                i = self.src.matching_close(open).ok_or_else(|| Refuse::new("unbalanced DISTINCT ON"))? + 1;
            }
            Some(_) => i += 1,
            None if self.src.is_kw(i, Keyword::ALL) => i += 1,
            None => {}
        }
        Ok(i)
    }

    /// Build and push the scope of a `FROM` list; returns what must be walked inside it.
    pub fn push_scope<'q>(&mut self, from: &'q [TableWithJoins]) -> Result<Vec<Deferred<'q>>, Refuse> {
        let mut scope = Scope::default();
        let mut deferred = Vec::new();
        for twj in from {
            self.add_joined(twj, &mut scope, &mut deferred)?;
        }
        self.scopes.push(scope);
        Ok(deferred)
    }

    /// Push a scope holding exactly `rels`.
    pub fn push_rels(&mut self, rels: Vec<Rel>) {
        self.scopes.push(Scope { rels, merged_columns: false });
    }

    fn walk_deferred(&mut self, deferred: Vec<Deferred<'_>>) -> Result<(), Refuse> {
        for d in deferred {
            match d {
                Deferred::Expr(e) => self.walk_expr(e)?,
                Deferred::Query(q) => {
                    self.walk_query(q)?;
                }
                Deferred::Factor(f) => self.walk_node(f)?,
            }
        }
        Ok(())
    }

    fn add_joined<'q>(
        &mut self,
        twj: &'q TableWithJoins,
        scope: &mut Scope,
        deferred: &mut Vec<Deferred<'q>>,
    ) -> Result<(), Refuse> {
        self.add_factor(&twj.relation, scope, deferred)?;
        for join in &twj.joins {
            self.add_factor(&join.relation, scope, deferred)?;
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::On(e)) => deferred.push(Deferred::Expr(e)),
                Some(JoinConstraint::Using(_)) | Some(JoinConstraint::Natural) => {
                    scope.merged_columns = true;
                    let mapped = scope.rels.iter().find_map(|r| match &r.kind {
                        RelKind::Mapped { schema, table } => self.rules.on_table(schema, table).next(),
                        RelKind::Other { .. } => None,
                    });
                    if let Some(rule) = mapped {
                        return Err(Refuse::rule(rule, "USING or NATURAL join with a mapped table; use ON"));
                    }
                }
                Some(JoinConstraint::None) => {}
                None => return Err(Refuse::new("unsupported join kind")),
            }
        }
        Ok(())
    }

    fn add_factor<'q>(
        &mut self,
        factor: &'q TableFactor,
        scope: &mut Scope,
        deferred: &mut Vec<Deferred<'q>>,
    ) -> Result<(), Refuse> {
        let alias_of = |a: &Option<sqlparser::ast::TableAlias>| a.as_ref().map(|a| normalize(&a.name));
        let alias_columns = |a: &Option<sqlparser::ast::TableAlias>| {
            a.as_ref().filter(|a| !a.columns.is_empty()).map(|a| a.columns.iter().map(|c| normalize(&c.name)).collect())
        };
        match factor {
            TableFactor::Table { name, alias, args: None, .. } => {
                let rel = self.table_rel(name, alias.as_ref().map(|a| &a.name));
                if let (RelKind::Mapped { schema, table }, Some(a)) = (&rel.kind, alias) {
                    if !a.columns.is_empty() {
                        let rule = self.rules.on_table(schema, table).next();
                        return Err(rule.map_or_else(
                            || Refuse::new("column aliases on a mapped table"),
                            |r| Refuse::rule(r, "column aliases on a mapped table"),
                        ));
                    }
                }
                scope.rels.push(rel);
            }
            TableFactor::Derived { lateral, subquery, alias, .. } => {
                let labels = if *lateral {
                    deferred.push(Deferred::Query(subquery));
                    None
                } else {
                    self.walk_query(subquery)?
                };
                let columns = alias_columns(alias).or(labels);
                scope.rels.push(Rel { refname: alias_of(alias), full_name: None, kind: RelKind::Other { columns } });
            }
            TableFactor::NestedJoin { table_with_joins, alias: None } => {
                self.add_joined(table_with_joins, scope, deferred)?;
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                let mut inner = Scope::default();
                self.add_joined(table_with_joins, &mut inner, deferred)?;
                if inner.rels.iter().any(|r| matches!(r.kind, RelKind::Mapped { .. })) {
                    return Err(Refuse::new("aliased join over a mapped table"));
                }
                scope.rels.push(Rel { refname: alias_of(alias), full_name: None, kind: RelKind::Other { columns: None } });
            }
            TableFactor::Table { name, alias, .. } | TableFactor::Function { name, alias, .. } => {
                deferred.push(Deferred::Factor(factor));
                let fallback = name.0.last().and_then(|p| p.as_ident()).map(normalize);
                let refname = alias_of(alias).or(fallback);
                scope.rels.push(Rel { refname, full_name: None, kind: RelKind::Other { columns: alias_columns(alias) } });
            }
            TableFactor::TableFunction { alias, .. } | TableFactor::UNNEST { alias, .. } => {
                deferred.push(Deferred::Factor(factor));
                scope.rels.push(Rel {
                    refname: alias_of(alias),
                    full_name: None,
                    kind: RelKind::Other { columns: alias_columns(alias) },
                });
            }
            other => {
                self.refuse_if_mapped(other, "this FROM item")?;
                deferred.push(Deferred::Factor(factor));
                scope.rels.push(Rel { refname: None, full_name: None, kind: RelKind::Other { columns: None } });
            }
        }
        Ok(())
    }

    pub fn walk_expr(&mut self, expr: &Expr) -> Result<(), Refuse> {
        self.walk_node(expr)
    }

    /// Walk every expression inside `node` in the current scope.
    pub fn walk_node<V: Visit>(&mut self, node: &V) -> Result<(), Refuse> {
        let mut walk = ExprWalk { ctx: self, skip: 0 };
        match node.visit(&mut walk) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e),
        }
    }

    fn on_expr(&mut self, expr: &Expr) -> Result<(), Refuse> {
        match expr {
            Expr::Identifier(id) => self.rewrite_ref(&[], id, std::slice::from_ref(id)),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let (column, qualifier) = parts.split_last().ok_or_else(|| Refuse::new("empty name"))?;
                self.rewrite_ref(qualifier, column, parts)
            }
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    for arg in &list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(name)) = arg {
                            self.refuse_mapped_whole_row(&name_parts(name).unwrap_or_default())?;
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn refuse_mapped_whole_row(&self, qualifier: &[&Ident]) -> Result<(), Refuse> {
        let owned: Vec<Ident> = qualifier.iter().map(|i| (*i).clone()).collect();
        if let Some(Rel { kind: RelKind::Mapped { schema, table }, .. }) = find_rel(&self.scopes, &owned) {
            if let Some(rule) = self.rules.on_table(schema, table).next() {
                return Err(Refuse::rule(rule, "whole-row reference to a mapped table; list the columns"));
            }
        }
        Ok(())
    }

    /// The read expression for a reference, when it must change.
    pub fn replacement(&self, qualifier: &[Ident], column: &Ident) -> Result<Option<String>, Refuse> {
        match resolve(&self.scopes, self.rules, self.catalog, qualifier, column)? {
            Resolution::Mapped(m) => Ok(read_value(m.rule, m.side, m.index, &m.qual)),
            Resolution::Other => Ok(None),
        }
    }

    fn rewrite_ref(&mut self, qualifier: &[Ident], column: &Ident, all: &[Ident]) -> Result<(), Refuse> {
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

    /// Whether an unaliased item's label comes from a reference that was replaced.
    fn replaced_label(&self, expr: &Expr) -> Result<Option<String>, Refuse> {
        let (qualifier, column): (&[Ident], &Ident) = match label_terminus(expr) {
            Expr::Identifier(id) => (&[], id),
            Expr::CompoundIdentifier(parts) => match parts.split_last() {
                Some((c, q)) if !q.is_empty() => (q, c),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(self.replacement(qualifier, column)?.map(|_| normalize(column)))
    }

    /// Walk a select list or `RETURNING` list starting at token `first`.
    pub fn walk_items(&mut self, items: &[SelectItem], first: usize, kind: ItemsKind) -> Result<Labels, Refuse> {
        let mut ranges: Option<Vec<(usize, usize)>> = None;
        let mut labels = Some(Vec::with_capacity(items.len()));
        for (n, item) in items.iter().enumerate() {
            let mut range = |ctx: &Ctx<'_>| -> Result<(usize, usize), Refuse> {
                if ranges.is_none() {
                    let found = match kind {
                        ItemsKind::Select => ctx.src.split_list(first, |s, i| s.ends_clause_list(i)),
                        ItemsKind::Returning => ctx.src.split_list(first, |_, _| false),
                    };
                    if found.len() != items.len() {
                        return Err(Refuse::new("cannot locate the select list items"));
                    }
                    ranges = Some(found);
                }
                let (a, b) = ranges.as_ref().and_then(|r| r.get(n).copied()).ok_or_else(|| Refuse::new("select item"))?;
                Ok(ctx.src.range(a, b))
            };
            let item_labels: Labels = match item {
                SelectItem::UnnamedExpr(expr) => {
                    self.walk_expr(expr)?;
                    if let Some(label) = self.replaced_label(expr)? {
                        let (_, end) = range(self)?;
                        self.edits.insert(end, format!(" AS {}", quote(&label)))?;
                    }
                    Some(vec![figure_label(expr)])
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    self.walk_expr(expr)?;
                    Some(vec![normalize(alias)])
                }
                SelectItem::ExprWithAliases { expr, aliases } => {
                    self.walk_expr(expr)?;
                    Some(aliases.iter().map(normalize).collect())
                }
                SelectItem::Wildcard(_) => match self.expand_star(None)? {
                    Some((text, cols)) => {
                        let (s, e) = range(self)?;
                        self.edits.replace(s, e, text)?;
                        cols
                    }
                    None => None,
                },
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                    let parts: Vec<Ident> = name_parts(name).unwrap_or_default().into_iter().cloned().collect();
                    match self.expand_star(Some(&parts))? {
                        Some((text, cols)) => {
                            let (s, e) = range(self)?;
                            self.edits.replace(s, e, text)?;
                            cols
                        }
                        None => None,
                    }
                }
                SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::Expr(expr), _) => {
                    self.walk_expr(expr)?;
                    None
                }
            };
            labels = match (labels, item_labels) {
                (Some(mut all), Some(mine)) => {
                    all.extend(mine);
                    Some(all)
                }
                _ => None,
            };
        }
        Ok(labels)
    }

    /// The text replacing `*` (or `qual.*`) when it covers a mapped table, and its labels.
    fn expand_star(&self, qualifier: Option<&[Ident]>) -> Result<Option<(String, Labels)>, Refuse> {
        let Some(scope) = self.scopes.last() else {
            return Ok(None);
        };
        let rels: Vec<&Rel> = match qualifier {
            Some(q) => find_rel(&self.scopes, q).into_iter().collect(),
            None => scope.rels.iter().collect(),
        };
        if !rels.iter().any(|r| matches!(r.kind, RelKind::Mapped { .. })) {
            return Ok(None);
        }
        let mut texts = Vec::new();
        let mut labels = Some(Vec::new());
        for rel in rels {
            let qual = rel.qual().ok_or_else(|| Refuse::new("cannot expand * next to an unnamed FROM item"))?;
            match &rel.kind {
                RelKind::Mapped { schema, table } => {
                    let rule = self.rules.on_table(schema, table).next();
                    if qualifier.is_none() && scope.merged_columns {
                        return Err(rule.map_or_else(|| Refuse::new("* over USING join"), |r| Refuse::rule(r, "* over a USING join")));
                    }
                    let info = self.catalog.table(schema, table).ok_or_else(|| {
                        rule.map_or_else(|| Refuse::new("mapped table missing from the catalog"), |r| Refuse::rule(r, "mapped table missing from the catalog"))
                    })?;
                    for col in &info.columns {
                        let value = self
                            .rules
                            .rule_for(schema, table, &col.name)
                            .and_then(|(r, side, i)| read_value(r, side, i, &qual));
                        texts.push(match value {
                            Some(v) => format!("{v} AS {}", quote(&col.name)),
                            None => column_ref(&qual, &col.name),
                        });
                        if let Some(l) = labels.as_mut() {
                            l.push(col.name.clone());
                        }
                    }
                }
                RelKind::Other { columns } => {
                    texts.push(format!("{qual}.*"));
                    labels = match (labels, columns) {
                        (Some(mut l), Some(c)) => {
                            l.extend(c.iter().cloned());
                            Some(l)
                        }
                        _ => None,
                    };
                }
            }
        }
        Ok(Some((texts.join(", "), labels)))
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
            self.walk_returning(delete.delete_token.0.span.start, delete.returning.as_deref())
        })();
        self.scopes.pop();
        result
    }

    /// Walk a `RETURNING` list of the statement starting at `start`.
    pub fn walk_returning(
        &mut self,
        start: sqlparser::tokenizer::Location,
        items: Option<&[SelectItem]>,
    ) -> Result<Labels, Refuse> {
        let Some(items) = items else {
            return Ok(None);
        };
        let from = self.src.token_index(start)?;
        let at = self
            .src
            .find_kw_depth0(from, Keyword::RETURNING)
            .ok_or_else(|| Refuse::new("cannot locate RETURNING"))?;
        self.walk_items(items, at + 1, ItemsKind::Returning)
    }
}
