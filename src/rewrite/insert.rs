//! `INSERT` into a mapped table: dual-write of the column list, `VALUES` rows or a query,
//! `ON CONFLICT` and `RETURNING`.
//!
//! Exactly-once evaluation: a value that a mirror needs is repeated inline only when it is
//! repeatable (literals, `$n`, column references, casts and operators over those). Otherwise
//! the source becomes a derived table, `SELECT v.c1, <to_new>(v.c1) FROM (VALUES ...)
//! pgshim_v(c1)`, with each `VALUES` item cast to its column's type so literals and `$n`
//! type as they would in a direct insert.

use sqlparser::ast::{
    ConflictTarget, Expr, Ident, Insert, OnConflictAction, OnInsert, Query, SetExpr, TableObject,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use super::ctx::{name_parts, Ctx, Labels};
use super::ident::{normalize, quote};
use super::list::{edit_list, ItemEdit};
use super::rules::{Phase, Side};
use super::scope::{Rel, RelKind};
use super::transform::Piece;
use super::update::rewrite_assignments;
use super::write::{
    from_defaults_only, inline_slot, mirror_slot, plan, render, repeatable, written_default,
    Current, Out, Placement, SetCol, SlotText, WritePlan,
};
use super::Refuse;

const VALUES_ALIAS: &str = "pgshim_v";
/// The source of an `INSERT … SELECT` that defaults are written out next to.
const DEFAULTS_ALIAS: &str = "pgshim_d";

/// Rewrite one `INSERT`.
pub(crate) fn walk(ctx: &mut Ctx<'_>, ins: &Insert) -> Result<Labels, Refuse> {
    let TableObject::TableName(name) = &ins.table else {
        ctx.walk_node(&ins.table)?;
        return Ok(None);
    };
    let alias = ins.table_alias.as_ref().map(|a| &a.alias);
    let rel = ctx.table_rel(name, alias);
    let source_labels = match &ins.source {
        Some(q) => ctx.walk_query(q)?,
        None => None,
    };
    if let RelKind::Mapped { schema, table } = &rel.kind {
        let target = Target {
            schema,
            table,
            name_end: name_end(ctx, name, alias)?,
        };
        write_columns(ctx, ins, &target, source_labels)?;
    }
    let excluded = Rel {
        refname: Some("excluded".into()),
        full_name: None,
        kind: rel.kind.clone(),
        qualified_only: true,
        nullable: false,
    };
    if let Some(OnInsert::OnConflict(oc)) = &ins.on {
        if let (Some(ConflictTarget::Columns(cols)), RelKind::Mapped { schema, table }) =
            (&oc.conflict_target, &rel.kind)
        {
            conflict_columns(ctx, schema, table, cols)?;
        }
        if let OnConflictAction::DoUpdate(du) = &oc.action {
            ctx.push_rels(vec![rel.clone(), excluded]);
            let result = (|| {
                for a in &du.assignments {
                    ctx.walk_expr(&a.value)?;
                }
                ctx.walk_node(&du.selection)?;
                if let (RelKind::Mapped { schema, table }, Some(qual)) = (&rel.kind, rel.qual()) {
                    rewrite_assignments(ctx, &du.assignments, schema, table, &qual)?;
                }
                Ok(())
            })();
            ctx.scopes.pop();
            result?;
        }
    }
    ctx.push_rels(vec![rel]);
    let labels = ctx.walk_returning(ins.insert_token.0.span.start, ins.returning.as_deref());
    ctx.scopes.pop();
    labels
}

struct Target<'t> {
    schema: &'t str,
    table: &'t str,
    /// Token index of the table name's (or alias's) last token.
    name_end: usize,
}

fn name_end(
    ctx: &Ctx<'_>,
    name: &sqlparser::ast::ObjectName,
    alias: Option<&Ident>,
) -> Result<usize, Refuse> {
    let last = match alias {
        Some(a) => a,
        None => name_parts(name)
            .and_then(|p| p.last().copied())
            .ok_or_else(|| Refuse::new("table name"))?,
    };
    ctx.src.ident_index(last)
}

/// The statement's target columns with their token index ranges (empty when implied).
/// A target column: normalised name (`"a."` for a field of `a`) and token indices.
type Column = (String, (usize, usize));

fn explicit_columns(ctx: &Ctx<'_>, ins: &Insert) -> Result<Vec<Column>, Refuse> {
    ins.columns
        .iter()
        .map(|c| {
            let parts = name_parts(c).ok_or_else(|| Refuse::new("column name"))?;
            let (first, last) = match (parts.first(), parts.last()) {
                (Some(f), Some(l)) => (*f, *l),
                _ => return Err(Refuse::new("column name")),
            };
            let name = if parts.len() == 1 {
                normalize(first)
            } else {
                format!("{}.", normalize(first))
            };
            Ok((
                name,
                (ctx.src.ident_index(first)?, ctx.src.ident_index(last)?),
            ))
        })
        .collect()
}

fn write_columns(
    ctx: &mut Ctx<'_>,
    ins: &Insert,
    target: &Target<'_>,
    labels: Labels,
) -> Result<(), Refuse> {
    let Some(source) = ins.source.as_deref() else {
        return imply_default_values(ctx, target);
    };
    let explicit = explicit_columns(ctx, ins)?;
    for (name, _) in &explicit {
        if let Some(field_of) = name.strip_suffix('.') {
            if let Some((rule, _, _)) = ctx.rules.rule_for(target.schema, target.table, field_of) {
                return Err(Refuse::rule(rule, "insert into a field of a mapped column"));
            }
        }
    }
    let rows = values_rows(source);
    let values = match (&rows, source.body.as_ref()) {
        (Some(_), SetExpr::Values(values)) => Some(values),
        _ => None,
    };
    if imply_defaults(ctx, target, &explicit, values)? {
        return Ok(());
    }
    let width = match (&rows, explicit.len(), &labels) {
        (_, n, _) if n > 0 => n,
        (Some(rows), _, _) => rows.first().map_or(0, |r| r.len()),
        (None, _, Some(l)) => l.len(),
        (None, _, None) => usize::MAX,
    };
    let names: Vec<String> = if explicit.is_empty() {
        let info = ctx
            .catalog
            .table(target.schema, target.table)
            .ok_or_else(|| missing_table(ctx, target))?;
        if width == usize::MAX {
            let rule = ctx.rules.on_table(target.schema, target.table).next();
            let reason = "INSERT ... SELECT without a column list; list the columns";
            return Err(rule.map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
        }
        info.columns
            .iter()
            .take(width)
            .map(|c| c.name.clone())
            .collect()
    } else {
        explicit.iter().map(|(n, _)| n.clone()).collect()
    };
    let cols: Vec<SetCol> = names
        .iter()
        .enumerate()
        .map(|(slot, n)| SetCol {
            name: n.clone(),
            slot,
        })
        .collect();
    let plan = plan(
        ctx.rules,
        ctx.catalog,
        target.schema,
        target.table,
        &cols,
        Current::Null,
    );
    if plan.is_noop() {
        return Ok(());
    }
    let source_start = match explicit.last() {
        Some((_, (_, last))) if ctx.src.is(last + 1, &Token::RParen) => last + 2,
        Some(_) => return Err(Refuse::new("cannot locate the column list")),
        None => target.name_end + 1,
    };
    let mut render_ctx = RenderCtx {
        ctx,
        target,
        names: &names,
        plan: &plan,
    };
    let list_plan = match rows {
        Some(rows) if rows.len() == source_body_rows(source) => {
            render_ctx.values(source, source_start)?
        }
        _ => {
            render_ctx.query(source_start)?;
            None
        }
    };
    column_list(
        ctx,
        target,
        &explicit,
        &names,
        list_plan.as_ref().unwrap_or(&plan),
    )
}

/// Columns of the target's rules that the statement leaves to their defaults
/// where a mirror must see that default: the written shape's columns with a
/// default when the statement sets some of that shape, and when it sets none
/// of a rule's columns, those of the phase's source of truth (the old shape,
/// the new one in contract) or, when it has none, of the other shape.
/// Without this the mirror would be computed from NULL: a row inserted
/// through pgshim would read as not migrated, and as NULL from contract on.
fn implied_defaults(ctx: &Ctx<'_>, target: &Target<'_>, given: &[&str]) -> Vec<String> {
    let Some(info) = ctx.catalog.table(target.schema, target.table) else {
        return Vec::new();
    };
    let defaulted = |cols: &[String]| -> Vec<String> {
        cols.iter()
            .filter(|c| !given.contains(&c.as_str()))
            .filter(|c| info.column(c).is_some_and(|col| col.has_default))
            .filter(|c| {
                ctx.catalog
                    .default_expr(target.schema, target.table, c)
                    .is_some()
            })
            .cloned()
            .collect()
    };
    let mut implied = Vec::new();
    for rule in ctx.rules.on_table(target.schema, target.table) {
        let both_exist = rule
            .old
            .iter()
            .chain(&rule.new)
            .all(|c| info.column(c).is_some());
        if !both_exist {
            continue;
        }
        let sets = |cols: &[String]| cols.iter().any(|c| given.contains(&c.as_str()));
        let (old, new) = (defaulted(&rule.old), defaulted(&rule.new));
        // Neither shape written: the phase's source of truth gives its
        // defaults (when it has any), and the other shape mirrors them.
        let truth_is_new = rule.phase == Phase::Contract;
        implied.extend(match (sets(&rule.old), sets(&rule.new)) {
            (true, _) => old,
            (false, true) => new,
            (false, false) if old.is_empty() || (truth_is_new && !new.is_empty()) => new,
            (false, false) => old,
        });
    }
    implied
}

/// Adds [`implied_defaults`] to the text: to an explicit column list, and as
/// `DEFAULT` items of every row of a plain `VALUES` source, or else as the
/// written-out defaults next to the columns of a query source, which becomes
/// `SELECT pgshim_d.*, <defaults> FROM (<source>) AS pgshim_d`.
///
/// # Returns
/// Whether any were added (the statement is then rewritten from that text).
fn imply_defaults(
    ctx: &mut Ctx<'_>,
    target: &Target<'_>,
    explicit: &[Column],
    values: Option<&sqlparser::ast::Values>,
) -> Result<bool, Refuse> {
    let Some((_, (_, last))) = explicit.last() else {
        return Ok(false);
    };
    let given: Vec<&str> = explicit.iter().map(|(n, _)| n.as_str()).collect();
    let implied = implied_defaults(ctx, target, &given);
    if implied.is_empty() {
        return Ok(false);
    }
    let names: String = implied.iter().map(|c| format!(", {}", quote(c))).collect();
    if let Some(values) = values {
        ctx.implied.insert(ctx.src.toks[*last].end, names)?;
        let defaults = ", DEFAULT".repeat(implied.len());
        for row in &values.rows {
            let open = ctx.src.token_index(row.opening_token.0.span.start)?;
            let close = ctx
                .src
                .matching_close(open)
                .ok_or_else(|| Refuse::new("cannot locate the end of a VALUES row"))?;
            ctx.implied
                .insert(ctx.src.toks[close].start, defaults.clone())?;
        }
        return Ok(true);
    }
    // implied_defaults only names columns whose default can be written out.
    let written: String = implied
        .iter()
        .filter_map(|c| written_default(ctx.catalog, target.schema, target.table, c))
        .map(|d| format!(", {d}"))
        .collect();
    let start = last + 2;
    let src = ctx.src;
    let opener_ok = src.is(last + 1, &Token::RParen)
        && (src.is_kw(start, Keyword::SELECT)
            || src.is_kw(start, Keyword::WITH)
            || src.is_kw(start, Keyword::VALUES)
            || src.is(start, &Token::LParen));
    let end = src.last_before(start, |s, i| {
        s.is_kw(i, Keyword::RETURNING)
            || (s.is_kw(i, Keyword::ON) && s.is_kw(i + 1, Keyword::CONFLICT))
    });
    let Some(end) = end.filter(|_| opener_ok) else {
        // Left to the plain rewrite, which finds and reports what it cannot place.
        return Ok(false);
    };
    ctx.implied.insert(src.toks[*last].end, names)?;
    ctx.implied.insert(
        src.toks[start].start,
        format!("SELECT {DEFAULTS_ALIAS}.*{written} FROM ("),
    )?;
    ctx.implied
        .insert(src.toks[end].end, format!(") AS {DEFAULTS_ALIAS}"))?;
    Ok(true)
}

/// `INSERT … DEFAULT VALUES` where [`implied_defaults`] names columns: made
/// `(<those>) VALUES (DEFAULT, …)`, which is then rewritten.
fn imply_default_values(ctx: &mut Ctx<'_>, target: &Target<'_>) -> Result<(), Refuse> {
    let implied = implied_defaults(ctx, target, &[]);
    let (default, values) = (target.name_end + 1, target.name_end + 2);
    if implied.is_empty()
        || !ctx.src.is_kw(default, Keyword::DEFAULT)
        || !ctx.src.is_kw(values, Keyword::VALUES)
    {
        return Ok(());
    }
    let names: Vec<String> = implied.iter().map(|c| quote(c).into_owned()).collect();
    let items = vec!["DEFAULT"; implied.len()];
    let (start, end) = ctx.src.range(default, values);
    ctx.implied.replace(
        start,
        end,
        format!("({}) VALUES ({})", names.join(", "), items.join(", ")),
    )
}

fn missing_table(ctx: &Ctx<'_>, target: &Target<'_>) -> Refuse {
    let reason = "mapped table missing from the catalog";
    ctx.rules
        .on_table(target.schema, target.table)
        .next()
        .map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason))
}

/// The `VALUES` rows when the source is a plain `VALUES` list.
fn values_rows(source: &Query) -> Option<Vec<&Vec<Expr>>> {
    let plain = source.with.is_none() && source.order_by.is_none() && source.limit_clause.is_none();
    match source.body.as_ref() {
        SetExpr::Values(v) if plain => Some(v.rows.iter().map(|r| &r.content).collect()),
        _ => None,
    }
}

fn source_body_rows(source: &Query) -> usize {
    match source.body.as_ref() {
        SetExpr::Values(v) => v.rows.len(),
        _ => 0,
    }
}

fn out_names(outs: &[Out]) -> String {
    outs.iter()
        .map(|o| quote(&o.column).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_list(
    ctx: &mut Ctx<'_>,
    target: &Target<'_>,
    explicit: &[Column],
    names: &[String],
    plan: &WritePlan,
) -> Result<(), Refuse> {
    let appended: Vec<String> = plan
        .appended
        .iter()
        .map(|o| quote(&o.column).into_owned())
        .collect();
    if explicit.is_empty() {
        let mut all: Vec<String> = Vec::new();
        for (name, p) in names.iter().zip(&plan.placements) {
            match p {
                Placement::Keep => all.push(quote(name).into_owned()),
                Placement::Replace(outs) => all.push(out_names(outs)),
                Placement::Remove => {}
            }
        }
        all.extend(appended);
        let at = ctx.src.toks[target.name_end].end;
        return ctx.edits.insert(at, format!(" ({})", all.join(", ")));
    }
    let items: Vec<(usize, usize)> = explicit
        .iter()
        .map(|(_, (a, b))| ctx.src.range(*a, *b))
        .collect();
    let edits: Vec<ItemEdit> = plan
        .placements
        .iter()
        .map(|p| match p {
            Placement::Keep => ItemEdit::Keep,
            Placement::Replace(outs) => ItemEdit::Replace(out_names(outs)),
            Placement::Remove => ItemEdit::Remove,
        })
        .collect();
    edit_list(&mut ctx.edits, ctx.src.text, &items, &edits, &appended)
}

struct RenderCtx<'r, 'c, 'a> {
    ctx: &'r mut Ctx<'a>,
    target: &'r Target<'c>,
    names: &'r [String],
    plan: &'r WritePlan,
}

impl RenderCtx<'_, '_, '_> {
    fn slot_text(&self, name: &str, text: String, expr: Option<&Expr>) -> SlotText {
        let column = self
            .ctx
            .catalog
            .table(self.target.schema, self.target.table)
            .and_then(|t| t.column(name));
        let default = matches!(expr, Some(Expr::Identifier(Ident { value, quote_style: None, .. })) if value.eq_ignore_ascii_case("default"));
        SlotText {
            text,
            repeatable: expr.is_some_and(repeatable),
            default,
            cast: column.map(|c| c.type_without_typmod()),
            has_default: column.is_some_and(|c| c.has_default),
        }
    }

    /// The value `DEFAULT` stands for in column `slot`, typed as the column: its default
    /// expression, or NULL when it has none; `None` when it cannot be written out.
    fn default_value(&self, slot: usize, text: &SlotText) -> Option<String> {
        if text.has_default {
            return written_default(
                self.ctx.catalog,
                self.target.schema,
                self.target.table,
                self.names.get(slot)?,
            );
        }
        Some(match &text.cast {
            Some(ty) => format!("CAST(NULL AS {ty})"),
            None => "NULL".to_owned(),
        })
    }

    fn rule_of(&self, slot: usize) -> Option<&super::rules::Rule> {
        let name = self.names.get(slot)?;
        self.ctx
            .rules
            .rule_for(self.target.schema, self.target.table, name)
            .map(|(r, _, _)| r)
    }

    /// Rows of a plain `VALUES` source: inline when every reused value is repeatable,
    /// else a derived table.
    ///
    /// # Returns
    /// The plan the column list must follow when it differs from the statement's plan.
    fn values(&mut self, source: &Query, start: usize) -> Result<Option<WritePlan>, Refuse> {
        let SetExpr::Values(values) = source.body.as_ref() else {
            return Err(Refuse::new("VALUES expected"));
        };
        let uses = self.plan.slot_uses(self.names.len());
        let mut rows = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            let open = self.ctx.src.token_index(row.opening_token.0.span.start)?;
            let items = self.ctx.src.split_list(open + 1, |_, _| false);
            if items.len() != self.names.len() || row.content.len() != items.len() {
                return Err(Refuse::new("VALUES rows do not match the column list"));
            }
            let mut slots = Vec::with_capacity(items.len());
            for (i, ((a, b), expr)) in items.iter().zip(&row.content).enumerate() {
                let (s, e) = self.ctx.src.range(*a, *b);
                let text = self.ctx.edits.peek_rendered(self.ctx.src.text, s, e)?;
                slots.push((self.slot_text(&self.names[i], text, Some(expr)), (s, e)));
            }
            rows.push(slots);
        }
        // `DEFAULT` inline is the column's own default, which a mirror cannot
        // repeat when there is one: such a row goes through the derived table,
        // where the default is written out and evaluated once.
        let once = |(slot, _): &(SlotText, (usize, usize)), uses: usize| {
            uses < 2 || (slot.default && !slot.has_default) || (slot.repeatable && !slot.default)
        };
        let inline = rows
            .iter()
            .all(|r| r.iter().zip(&uses).all(|(s, &u)| once(s, u)));
        if inline {
            rows.iter().try_for_each(|row| self.inline_row(row))?;
            return Ok(None);
        }
        // A column that is DEFAULT in every row and feeds no mirror leaves the derived
        // table (DEFAULT is not allowed there) and the column list: it gets its default.
        let width = self.names.len();
        let dropped: Vec<bool> = (0..width)
            .map(|i| {
                uses[i] == 1
                    && self.plan.placements[i] == Placement::Keep
                    && rows.iter().all(|r| r[i].0.default)
            })
            .collect();
        for row in &rows {
            let mut edits = Vec::with_capacity(width);
            for (i, (slot, (s, e))) in row.iter().enumerate() {
                if dropped[i] {
                    edits.push(ItemEdit::Remove);
                    continue;
                }
                if slot.default {
                    // DEFAULT is not allowed in a derived table: its value is written instead.
                    let Some(value) = self.default_value(i, slot) else {
                        let reason = "DEFAULT for a column whose default pgshim cannot write out (identity or generated) next to a value that must be evaluated once; write the value";
                        return Err(self
                            .rule_of(i)
                            .map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
                    };
                    edits.push(ItemEdit::Replace(value));
                    continue;
                }
                edits.push(ItemEdit::Keep);
                if let Some(ty) = &slot.cast {
                    self.ctx.edits.insert(*s, "(")?;
                    self.ctx.edits.insert(*e, format!(")::{ty}"))?;
                }
            }
            let items: Vec<(usize, usize)> = row.iter().map(|(_, r)| *r).collect();
            edit_list(&mut self.ctx.edits, self.ctx.src.text, &items, &edits, &[])?;
        }
        let mut plan = self.plan.clone();
        for (p, _) in plan
            .placements
            .iter_mut()
            .zip(&dropped)
            .filter(|(_, d)| **d)
        {
            *p = Placement::Remove;
        }
        self.wrap(start, false, &plan, &dropped)?;
        Ok(Some(plan))
    }

    fn inline_row(&mut self, row: &[(SlotText, (usize, usize))]) -> Result<(), Refuse> {
        let rule_of: Vec<Option<&super::rules::Rule>> =
            (0..row.len()).map(|i| self.rule_of(i)).collect();
        let mut slot = |n: usize, alone: bool| -> Result<String, Refuse> {
            let (s, _) = row.get(n).ok_or_else(|| Refuse::new("slot"))?;
            inline_slot(s, alone, rule_of.get(n).copied().flatten())
        };
        let outs_text =
            |outs: &[Out], slot: &mut dyn FnMut(usize, bool) -> Result<String, Refuse>| {
                outs.iter()
                    .map(|o| render(&o.value, slot))
                    .collect::<Result<Vec<_>, _>>()
            };
        // Old columns replaced by new ones (contract, the old ones dropped).
        let from_defaults = |value: &[Piece]| {
            from_defaults_only(value, |n| row.get(n).is_some_and(|(s, _)| s.default))
        };
        let mut edits = Vec::with_capacity(row.len());
        for p in &self.plan.placements {
            edits.push(match p {
                Placement::Keep => ItemEdit::Keep,
                Placement::Replace(outs) => {
                    let mut texts = Vec::with_capacity(outs.len());
                    for out in outs {
                        texts.push(match from_defaults(&out.value) {
                            true => "DEFAULT".to_owned(),
                            false => render(&out.value, &mut slot)?,
                        });
                    }
                    ItemEdit::Replace(texts.join(", "))
                }
                Placement::Remove => ItemEdit::Remove,
            });
        }
        let mut mirror = |n: usize, alone: bool| -> Result<String, Refuse> {
            let (s, _) = row.get(n).ok_or_else(|| Refuse::new("slot"))?;
            mirror_slot(s, alone, rule_of.get(n).copied().flatten())
        };
        let appended = outs_text(&self.plan.appended, &mut mirror)?;
        let items: Vec<(usize, usize)> = row.iter().map(|(_, r)| *r).collect();
        edit_list(
            &mut self.ctx.edits,
            self.ctx.src.text,
            &items,
            &edits,
            &appended,
        )
    }

    /// `INSERT ... SELECT` (or any non-plain source): wrap it unless the plan only renames
    /// columns in place.
    fn query(&mut self, start: usize) -> Result<(), Refuse> {
        let renames_only = self.plan.appended.is_empty()
            && self
                .plan
                .placements
                .iter()
                .enumerate()
                .all(|(i, p)| match p {
                    Placement::Keep => true,
                    Placement::Replace(outs) => {
                        outs.len() == 1 && outs[0].value == [Piece::Slot(i)]
                    }
                    Placement::Remove => false,
                });
        if renames_only {
            return Ok(());
        }
        let plan = self.plan.clone();
        self.wrap(start, true, &plan, &[])
    }

    /// Turn the source into `SELECT <outs> FROM (<source>) pgshim_v(c1, ...)`.
    /// `dropped[i]`: slot `i` is not a column of the derived table.
    fn wrap(
        &mut self,
        start: usize,
        cast_outputs: bool,
        plan: &WritePlan,
        dropped: &[bool],
    ) -> Result<(), Refuse> {
        let src = self.ctx.src;
        let opener_ok = src.is_kw(start, Keyword::VALUES)
            || src.is_kw(start, Keyword::SELECT)
            || src.is_kw(start, Keyword::WITH)
            || src.is(start, &Token::LParen);
        let end = src.last_before(start, |s, i| {
            s.is_kw(i, Keyword::RETURNING)
                || (s.is_kw(i, Keyword::ON) && s.is_kw(i + 1, Keyword::CONFLICT))
        });
        let Some(end) = end.filter(|_| opener_ok) else {
            return Err(Refuse::new("cannot locate the INSERT source"));
        };
        let casts: Vec<Option<String>> = self
            .names
            .iter()
            .map(|n| {
                self.slot_text(n, String::new(), None)
                    .cast
                    .filter(|_| cast_outputs)
            })
            .collect();
        let position = |n: usize| {
            (0..n)
                .filter(|&i| !dropped.get(i).copied().unwrap_or(false))
                .count()
                + 1
        };
        let mut slot = |n: usize, _alone: bool| -> Result<String, Refuse> {
            let col = format!("{VALUES_ALIAS}.c{}", position(n));
            Ok(match casts.get(n).cloned().flatten() {
                Some(ty) => format!("({col})::{ty}"),
                None => col,
            })
        };
        let mut outs = Vec::new();
        for (i, p) in plan.placements.iter().enumerate() {
            match p {
                Placement::Keep => outs.push(slot(i, true)?),
                Placement::Replace(list) => {
                    for o in list {
                        outs.push(render(&o.value, &mut slot)?);
                    }
                }
                Placement::Remove => {}
            }
        }
        for o in &plan.appended {
            outs.push(render(&o.value, &mut slot)?);
        }
        let kept = (0..self.names.len())
            .filter(|&i| !dropped.get(i).copied().unwrap_or(false))
            .count();
        let columns: Vec<String> = (1..=kept).map(|i| format!("c{i}")).collect();
        let (s, e) = (src.toks[start].start, src.toks[end].end);
        self.ctx
            .edits
            .insert(s, format!("SELECT {} FROM (", outs.join(", ")))?;
        self.ctx
            .edits
            .insert(e, format!(") {VALUES_ALIAS}({})", columns.join(", ")))
    }
}

/// `ON CONFLICT (col)`: in contract an old column names an index that now covers its new
/// column; only a rename maps cleanly.
fn conflict_columns(
    ctx: &mut Ctx<'_>,
    schema: &str,
    table: &str,
    cols: &[Ident],
) -> Result<(), Refuse> {
    for col in cols {
        let Some((rule, side, i)) = ctx.rules.rule_for(schema, table, &normalize(col)) else {
            continue;
        };
        if rule.phase != Phase::Contract || side == Side::New {
            continue;
        }
        let renamed = (rule.old.len() == 1 && rule.new.len() == 1)
            .then(|| {
                rule.to_new
                    .first()
                    .and_then(|t| t.identity_column())
                    .map(|_| rule.new[0].clone())
            })
            .flatten();
        let Some(new) = renamed.filter(|_| i == 0) else {
            return Err(Refuse::rule(
                rule,
                "ON CONFLICT on an old column that is not a plain rename",
            ));
        };
        let (s, e) = ctx.src.ident_range(col)?;
        ctx.edits.replace(s, e, quote(&new).into_owned())?;
    }
    Ok(())
}
