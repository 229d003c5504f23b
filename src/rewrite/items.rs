//! Select lists and `RETURNING` lists: `*` expansion and output labels.
//!
//! A replaced column reference would change the label the client sees (`name` becomes
//! `case`), so an unaliased item whose label comes from a replaced reference gets
//! `AS <label>`. `*` over a mapped table is expanded from the catalog, in column order.

use sqlparser::ast::{Expr, Ident, SelectItem, SelectItemQualifiedWildcardKind};
use sqlparser::keywords::Keyword;

use super::ctx::{name_parts, Ctx, ItemsKind, Labels};
use super::ident::{normalize, quote};
use super::phase::{column_ref, read_value, value_type, Row};
use super::scope::{find_rel, Rel, RelKind};
use super::Refuse;

/// The label Postgres gives an unaliased select item (close enough for `ORDER BY`).
pub(crate) fn figure_label(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(i) => normalize(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize).unwrap_or_default(),
        Expr::Nested(e) | Expr::Cast { expr: e, .. } | Expr::Collate { expr: e, .. } => {
            figure_label(e)
        }
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalize)
            .unwrap_or_default(),
        Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

/// Peel parentheses, casts and collations: what decides an item's label.
fn label_terminus(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(e) | Expr::Cast { expr: e, .. } | Expr::Collate { expr: e, .. } => {
            label_terminus(e)
        }
        other => other,
    }
}

// === impl Ctx ===

impl Ctx<'_> {
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
        Ok(self
            .replacement(qualifier, column)?
            .map(|_| normalize(column)))
    }

    /// Walk a select list or `RETURNING` list starting at token `first`.
    pub fn walk_items(
        &mut self,
        items: &[SelectItem],
        first: usize,
        kind: ItemsKind,
    ) -> Result<Labels, Refuse> {
        self.note_stars(items);
        let mut ranges: Option<Vec<(usize, usize)>> = None;
        let mut labels = Some(Vec::with_capacity(items.len()));
        for (n, item) in items.iter().enumerate() {
            let mut range = |ctx: &Ctx<'_>| -> Result<(usize, usize), Refuse> {
                if ranges.is_none() {
                    let found = match kind {
                        ItemsKind::Select => {
                            ctx.src.split_list(first, |s, i| s.ends_clause_list(i))
                        }
                        ItemsKind::Returning => ctx.src.split_list(first, |_, _| false),
                    };
                    if found.len() != items.len() {
                        return Err(Refuse::new("cannot locate the select list items"));
                    }
                    ranges = Some(found);
                }
                let (a, b) = ranges
                    .as_ref()
                    .and_then(|r| r.get(n).copied())
                    .ok_or_else(|| Refuse::new("select item"))?;
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
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    let parts: Vec<Ident> = name_parts(name)
                        .unwrap_or_default()
                        .into_iter()
                        .cloned()
                        .collect();
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
        if !rels
            .iter()
            .any(|r| matches!(r.kind, RelKind::Mapped { .. }))
        {
            return Ok(None);
        }
        let mut texts = Vec::new();
        let mut labels = Some(Vec::new());
        for rel in rels {
            let qual = rel
                .qual()
                .ok_or_else(|| Refuse::new("cannot expand * next to an unnamed FROM item"))?;
            match &rel.kind {
                RelKind::Mapped { schema, table } => {
                    let rule = self.rules.on_table(schema, table).next();
                    if qualifier.is_none() && scope.merged_columns {
                        return Err(rule.map_or_else(
                            || Refuse::new("* over USING join"),
                            |r| Refuse::rule(r, "* over a USING join"),
                        ));
                    }
                    let info = self.catalog.table(schema, table).ok_or_else(|| {
                        rule.map_or_else(
                            || Refuse::new("mapped table missing from the catalog"),
                            |r| Refuse::rule(r, "mapped table missing from the catalog"),
                        )
                    })?;
                    let absent = rel.absent(self.catalog, self.rules);
                    for col in &info.columns {
                        let value = self.rules.rule_for(schema, table, &col.name).and_then(
                            |(r, side, i)| {
                                let row = Row {
                                    qual: &qual,
                                    absent: absent.as_deref(),
                                    ty: value_type(self.catalog, schema, table, r, side, i),
                                };
                                read_value(r, side, i, &row)
                            },
                        );
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
