//! `UPDATE` of a mapped table, and the `SET` list of `ON CONFLICT DO UPDATE`.
//!
//! Mirrors are appended as extra assignments; their right-hand sides see the row as it was
//! before the update, which is what "computed from the row's current phase values" needs.
//! Exactly-once: every value that is not repeatable but feeds a mirror, and the source of
//! `SET (a, b) = (SELECT …)`, move into one multi-column assignment (the `group` module)
//! whose sub-select evaluates them once per row:
//! `(name, full_name) = (SELECT s.c1, s.c1 FROM (SELECT <expr>, u.ctid) s(c1, pgshim_ctid)
//! WHERE s.pgshim_ctid IS NOT NULL)`.
//! The `ctid` reference correlates the sub-select with the row, so Postgres cannot hoist it
//! into an init plan that would run once for the whole statement. The `WHERE` (always true)
//! is what keeps it: an output column nothing reads is replaced by NULL by the planner
//! (`remove_unused_subquery_outputs`), which would drop the correlation and turn the
//! sub-select into an init plan evaluated once (seen on PostgreSQL 15: `SET name =
//! random()::text` then gave every row the same value).

use sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, Ident, TableFactor, TableWithJoins, Update,
    UpdateTableFromKind,
};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use super::ctx::{name_parts, Ctx, Labels};
use super::group::{Group, Slot, SubSelect};
use super::ident::{normalize, quote};
use super::list::{edit_list, ItemEdit};
use super::scope::RelKind;
use super::write::{
    from_defaults_only, inline_slot, mirror_slot, plan, render, repeatable, written_default,
    Current, Out, Placement, SetCol, SlotText,
};
use super::Refuse;

/// Rewrite one `UPDATE`.
pub(crate) fn walk(ctx: &mut Ctx<'_>, update: &Update) -> Result<Labels, Refuse> {
    let mut from: Vec<TableWithJoins> = vec![update.table.clone()];
    if let Some(UpdateTableFromKind::AfterSet(t) | UpdateTableFromKind::BeforeSet(t)) = &update.from
    {
        from.extend(t.iter().cloned());
    }
    let target = match &update.table.relation {
        TableFactor::Table { name, alias, .. } => {
            Some(ctx.table_rel(name, alias.as_ref().map(|a| &a.name)))
        }
        _ => None,
    };
    let deferred = ctx.push_scope(&from)?;
    let result = (|| {
        ctx.walk_deferred(deferred)?;
        for a in &update.assignments {
            ctx.walk_expr(&a.value)?;
        }
        ctx.walk_node(&update.selection)?;
        if let Some(rel) = &target {
            if let (RelKind::Mapped { schema, table }, Some(qual)) = (&rel.kind, rel.qual()) {
                rewrite_assignments(ctx, &update.assignments, schema, table, &qual)?;
            }
        }
        ctx.walk_returning(
            update.update_token.0.span.start,
            update.returning.as_deref(),
        )
    })();
    ctx.scopes.pop();
    result
}

fn first_token(ctx: &Ctx<'_>, a: &Assignment) -> Result<usize, Refuse> {
    match &a.target {
        AssignmentTarget::ColumnName(name) => {
            let first = name_parts(name)
                .and_then(|p| p.first().copied())
                .ok_or_else(|| Refuse::new("SET target"))?;
            ctx.src.ident_index(first)
        }
        AssignmentTarget::Tuple(names) => {
            let first = names
                .first()
                .and_then(|n| name_parts(n).and_then(|p| p.first().copied()))
                .ok_or_else(|| Refuse::new("SET target"))?;
            let i = ctx.src.ident_index(first)?;
            i.checked_sub(1)
                .filter(|&o| ctx.src.is(o, &Token::LParen))
                .ok_or_else(|| Refuse::new("SET target"))
        }
    }
}

fn target_names(a: &Assignment) -> Result<Vec<(String, bool)>, Refuse> {
    let names = match &a.target {
        AssignmentTarget::ColumnName(n) => std::slice::from_ref(n),
        AssignmentTarget::Tuple(ns) => ns.as_slice(),
    };
    names
        .iter()
        .map(|n| {
            let parts = name_parts(n).ok_or_else(|| Refuse::new("SET target"))?;
            let first = parts.first().ok_or_else(|| Refuse::new("SET target"))?;
            Ok((normalize(first), parts.len() == 1))
        })
        .collect()
}

/// Rewrite a `SET` list of a write to mapped table `schema.table`, row named `qual`.
pub(crate) fn rewrite_assignments(
    ctx: &mut Ctx<'_>,
    assignments: &[Assignment],
    schema: &str,
    table: &str,
    qual: &str,
) -> Result<(), Refuse> {
    let Some(first) = assignments.first() else {
        return Ok(());
    };
    let start = first_token(ctx, first)?;
    let items = ctx.src.split_list(start, |s, i| {
        s.ends_clause_list(i) || s.is_kw(i, Keyword::WHERE)
    });
    if items.len() != assignments.len() {
        return Err(Refuse::new("cannot locate the SET list items"));
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut sub_select: Option<SubSelect> = None;
    let mut touched = false;
    for (k, (a, &(first_tok, last_tok))) in assignments.iter().zip(&items).enumerate() {
        let names = target_names(a)?;
        for (name, plain) in &names {
            if let Some((rule, _, _)) = ctx.rules.rule_for(schema, table, name) {
                touched = true;
                if !plain {
                    return Err(Refuse::rule(
                        rule,
                        "assignment to a field of a mapped column",
                    ));
                }
            }
        }
        let eq = (first_tok..=last_tok)
            .find(|&i| ctx.src.is(i, &Token::Eq))
            .ok_or_else(|| Refuse::new("cannot locate the SET value"))?;
        let values = value_ranges(ctx, &a.value, eq + 1, last_tok, names.len());
        let values = match (values, &a.value) {
            (Some(v), _) => v,
            (None, Expr::Subquery(_)) if sub_select.is_none() => {
                // `(a, b) = (SELECT …)`: every target reads its column of the
                // sub-select, joined once into the group assignment below.
                let (s, e) = ctx.src.range(eq + 1, last_tok);
                let text = ctx.edits.peek_rendered(ctx.src.text, s, e)?;
                ctx.generated += 1;
                let alias = format!("pgshim_s{}", ctx.generated);
                let first = slots.len();
                for (i, (name, _)) in names.into_iter().enumerate() {
                    let column = ctx
                        .catalog
                        .table(schema, table)
                        .and_then(|t| t.column(&name));
                    slots.push(Slot {
                        column: name,
                        assignment: k,
                        text: SlotText {
                            text: format!("{alias}.c{}", i + 1),
                            repeatable: true,
                            default: false,
                            cast: column.map(|c| c.type_without_typmod()),
                            has_default: column.is_some_and(|c| c.has_default),
                        },
                    });
                }
                sub_select = Some(SubSelect {
                    text,
                    alias,
                    slots: (first..slots.len()).collect(),
                });
                continue;
            }
            (None, _) => {
                if let Some(rule) = names
                    .iter()
                    .find_map(|(n, _)| ctx.rules.rule_for(schema, table, n))
                {
                    return Err(Refuse::rule(
                        rule.0,
                        "SET (...) = (...) on a mapped column whose values are neither a list nor one sub-select",
                    ));
                }
                continue;
            }
        };
        for ((name, _), (range, expr)) in names.into_iter().zip(values) {
            let (s, e) = ctx.src.range(range.0, range.1);
            let text = ctx.edits.peek_rendered(ctx.src.text, s, e)?;
            let column = ctx
                .catalog
                .table(schema, table)
                .and_then(|t| t.column(&name));
            let default = matches!(expr, Expr::Identifier(Ident { value, quote_style: None, .. }) if value.eq_ignore_ascii_case("default"));
            let text = SlotText {
                text,
                repeatable: repeatable(expr),
                default,
                cast: column.map(|c| c.type_without_typmod()),
                has_default: column.is_some_and(|c| c.has_default),
            };
            slots.push(Slot {
                column: name,
                assignment: k,
                text,
            });
        }
    }
    if !touched {
        return Ok(());
    }
    let cols: Vec<SetCol> = slots
        .iter()
        .enumerate()
        .map(|(slot, s)| SetCol {
            name: s.column.clone(),
            slot,
        })
        .collect();
    let mut plan = plan(
        ctx.rules,
        ctx.catalog,
        schema,
        table,
        &cols,
        Current::Row(qual),
    );
    if plan.is_noop() {
        return Ok(());
    }
    let rule_of = |name: &str| ctx.rules.rule_for(schema, table, name).map(|(r, _, _)| r);
    let uses = plan.slot_uses(slots.len());
    // `DEFAULT` for a column with a default that a mirror is computed from: the default
    // written out, so the column and its mirror get one evaluation of it per row.
    for (n, s) in slots.iter_mut().enumerate() {
        if uses[n] >= 2 && s.text.default && s.text.has_default {
            if let Some(value) = written_default(ctx.catalog, schema, table, &s.column) {
                s.text.text = value;
                s.text.default = false;
                s.text.repeatable = false;
            }
        }
    }
    let once: Vec<usize> = (0..slots.len())
        .filter(|&n| uses[n] >= 2 && !slots[n].text.repeatable && !slots[n].text.default)
        .collect();
    let mut groups: Vec<(usize, String)> = Vec::new();
    if sub_select.is_some() || !once.is_empty() {
        let rule = slots.iter().find_map(|s| rule_of(&s.column));
        for &n in &once {
            let in_tuple = slots
                .iter()
                .filter(|s| s.assignment == slots[n].assignment)
                .count()
                > 1;
            if in_tuple {
                let reason = "a value in SET (...) = (...) that must be evaluated once; use separate assignments";
                return Err(rule.map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
            }
        }
        ctx.generated += 1;
        let alias = format!("pgshim_s{}", ctx.generated);
        let group = Group {
            once,
            sub_select: sub_select.as_ref(),
            alias: &alias,
            qual,
            rule,
        };
        let (anchor, text) = group.text(&mut plan, &slots)?;
        groups.push((anchor, text));
    }
    let mut inline = |n: usize, alone: bool| -> Result<String, Refuse> {
        let s = slots.get(n).ok_or_else(|| Refuse::new("slot"))?;
        inline_slot(&s.text, alone, rule_of(&s.column))
    };
    // Old columns replaced by new ones (contract, the old ones dropped): a new column
    // computed from `DEFAULT`s only takes its own default.
    let is_default = |n: usize| slots.get(n).is_some_and(|s| s.text.default);
    let assign = |o: &Out, inline: &mut dyn FnMut(usize, bool) -> Result<String, Refuse>| {
        render(&o.value, inline).map(|v| format!("{} = {v}", quote(&o.column)))
    };
    let mut edits = vec![ItemEdit::Keep; assignments.len()];
    for (k, edit) in edits.iter_mut().enumerate() {
        let mine: Vec<usize> = (0..slots.len())
            .filter(|&n| slots[n].assignment == k)
            .collect();
        let changed = mine
            .iter()
            .any(|&n| plan.placements[n] != Placement::Keep || groups.iter().any(|g| g.0 == n));
        if !changed {
            continue;
        }
        let mut parts = Vec::new();
        for &n in &mine {
            if let Some((_, g)) = groups.iter().find(|g| g.0 == n) {
                parts.push(g.clone());
            }
            match &plan.placements[n] {
                Placement::Keep if !groups.iter().any(|g| g.0 == n) => parts.push(format!(
                    "{} = {}",
                    quote(&slots[n].column),
                    slots[n].text.text
                )),
                Placement::Replace(outs) => {
                    for o in outs {
                        parts.push(match from_defaults_only(&o.value, is_default) {
                            true => format!("{} = DEFAULT", quote(&o.column)),
                            false => assign(o, &mut inline)?,
                        });
                    }
                }
                _ => {}
            }
        }
        *edit = if parts.is_empty() {
            ItemEdit::Remove
        } else {
            ItemEdit::Replace(parts.join(", "))
        };
    }
    let mut mirror = |n: usize, alone: bool| -> Result<String, Refuse> {
        let s = slots.get(n).ok_or_else(|| Refuse::new("slot"))?;
        mirror_slot(&s.text, alone, rule_of(&s.column))
    };
    let appended = plan
        .appended
        .iter()
        .map(|o| assign(o, &mut mirror))
        .collect::<Result<Vec<_>, _>>()?;
    let ranges: Vec<(usize, usize)> = items.iter().map(|&(a, b)| ctx.src.range(a, b)).collect();
    edit_list(&mut ctx.edits, ctx.src.text, &ranges, &edits, &appended)
}

/// Token ranges and expressions of each value an assignment gives, or `None` for a
/// sub-select source.
fn value_ranges<'e>(
    ctx: &Ctx<'_>,
    value: &'e Expr,
    first: usize,
    last: usize,
    width: usize,
) -> Option<Vec<((usize, usize), &'e Expr)>> {
    if width == 1 {
        return (first <= last).then(|| vec![((first, last), value)]);
    }
    let exprs: &[Expr] = match value {
        Expr::Tuple(exprs) => exprs,
        Expr::Function(_) => return None,
        _ => return None,
    };
    let open = if ctx.src.is_kw(first, Keyword::ROW) {
        first + 1
    } else {
        first
    };
    if !ctx.src.is(open, &Token::LParen) {
        return None;
    }
    let items = ctx.src.split_list(open + 1, |_, _| false);
    (items.len() == exprs.len() && exprs.len() == width)
        .then(|| items.into_iter().zip(exprs).collect())
}
