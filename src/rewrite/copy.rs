//! `COPY` of a mapped table.
//!
//! `COPY t TO` becomes `COPY (SELECT <phase values> FROM t) TO`, with the columns the client
//! asked for (or the catalog's, in order). `COPY t FROM` is forwarded when it writes no
//! mapped column or writes every column of each rule it touches (nothing to mirror), has
//! its column list renamed when the plan is only a rename (contract), and is refused
//! otherwise: row data arrives after the statement, so it cannot be mirrored in SQL text.

use sqlparser::ast::{CopySource, Ident};
use sqlparser::tokenizer::Token;

use super::catalog::Catalog;
use super::ctx::{name_parts, Ctx};
use super::ident::{normalize, quote};
use super::phase::{column_ref, read_value, Row};
use super::transform::Piece;
use super::write::{plan, Current, Placement, SetCol};
use super::Refuse;

/// Rewrite one `COPY`.
pub(crate) fn walk(ctx: &mut Ctx<'_>, source: &CopySource, to: bool) -> Result<(), Refuse> {
    let (table_name, columns) = match source {
        CopySource::Query(q) => return ctx.walk_query(q).map(|_| ()),
        CopySource::Table {
            table_name,
            columns,
        } => (table_name, columns),
    };
    let Some((schema, table)) = ctx.mapped_table(table_name) else {
        return Ok(());
    };
    let parts = name_parts(table_name).ok_or_else(|| Refuse::new("table name"))?;
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return Err(Refuse::new("table name"));
    };
    let names: Vec<String> = if columns.is_empty() {
        let info = ctx
            .catalog
            .table(&schema, &table)
            .ok_or_else(|| Refuse::new("mapped table missing from the catalog"))?;
        info.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        columns.iter().map(normalize).collect()
    };
    if to {
        copy_to(ctx, &schema, &table, (first, last), columns, &names)
    } else {
        copy_from(ctx, &schema, &table, columns, &names)
    }
}

fn copy_to(
    ctx: &mut Ctx<'_>,
    schema: &str,
    table: &str,
    (first, last): (&Ident, &Ident),
    columns: &[Ident],
    names: &[String],
) -> Result<(), Refuse> {
    let qual = quote(&normalize(last)).into_owned();
    let values: Vec<Option<String>> = names
        .iter()
        .map(|n| {
            ctx.rules
                .rule_for(schema, table, n)
                .and_then(|(r, side, i)| read_value(r, side, i, &Row::plain(&qual)))
        })
        .collect();
    if values.iter().all(Option::is_none) {
        return Ok(());
    }
    let items: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| match v {
            Some(v) => format!("{v} AS {}", quote(n)),
            None => column_ref(&qual, n),
        })
        .collect();
    let name_start = ctx.src.ident_index(first)?;
    let name_last = ctx.src.ident_index(last)?;
    let end = match columns.last() {
        Some(c) => {
            let i = ctx.src.ident_index(c)?;
            if !ctx.src.is(i + 1, &Token::RParen) {
                return Err(Refuse::new("cannot locate the COPY column list"));
            }
            i + 1
        }
        None => name_last,
    };
    let table_text = ctx.src.text_of(name_start, name_last).to_owned();
    let (s, e) = ctx.src.range(name_start, end);
    ctx.edits.replace(
        s,
        e,
        format!("(SELECT {} FROM {table_text})", items.join(", ")),
    )
}

fn copy_from(
    ctx: &mut Ctx<'_>,
    schema: &str,
    table: &str,
    columns: &[Ident],
    names: &[String],
) -> Result<(), Refuse> {
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
        // COPY cannot compute mirrors: in contract it renames old columns to new
        // ones and writes the new shape only, whether the old columns exist or not.
        &Catalog::default(),
        schema,
        table,
        &cols,
        Current::Null,
    );
    if plan.is_noop() {
        return Ok(());
    }
    let renames_only = !columns.is_empty()
        && plan.appended.is_empty()
        && plan.placements.iter().enumerate().all(|(i, p)| match p {
            Placement::Keep => true,
            Placement::Replace(outs) => outs.len() == 1 && outs[0].value == [Piece::Slot(i)],
            Placement::Remove => false,
        });
    if !renames_only {
        let rule = names
            .iter()
            .find_map(|n| ctx.rules.rule_for(schema, table, n))
            .map(|(r, _, _)| r);
        let reason = "COPY FROM writing mapped columns cannot be dual-written; list every column of the rule or use INSERT";
        return Err(rule.map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
    }
    for (col, p) in columns.iter().zip(&plan.placements) {
        if let Placement::Replace(outs) = p {
            let (s, e) = ctx.src.ident_range(col)?;
            ctx.edits
                .replace(s, e, quote(&outs[0].column).into_owned())?;
        }
    }
    Ok(())
}
