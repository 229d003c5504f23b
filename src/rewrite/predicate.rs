//! Predicates on a mapped column in the migrate phase, rewritten so an index can serve them.
//!
//! In migrate a column reads as `CASE WHEN <not migrated> THEN u ELSE m END`, and no index
//! can serve `CASE … END = $1`: a lookup by a mapped column would turn into a sequential
//! scan the moment the rule flips to migrate. For a predicate `P` that is deterministic in
//! its column, `P(CASE WHEN c THEN u ELSE m END)` equals `(c AND P(u)) OR (NOT c AND P(m))`
//! exactly, NULLs included, because `c` (`n IS NULL`) is never NULL. Each arm is then a
//! plain predicate on a column (or a transform, which an expression index can serve), so
//! the planner can combine index scans on the old and the new column.
//!
//! Only the operand that is not the column is repeated, so it must be free to evaluate
//! twice: literals and `$n` parameters, possibly cast with `::type`. Anything else keeps
//! the `CASE` form.
//!
//! A query that also orders by the column (`WHERE c > $1 ORDER BY c LIMIT 10`) sorts by
//! the `CASE` value, which only an index on that expression (the one `pgshim plan --phase
//! expand` adds) returns in order; the two-column form cannot bound a scan of it, so it
//! would read from the start of the index. Its `WHERE` predicates on the column keep the
//! `CASE` form as well, `(two-column form) AND P(CASE …)`: the same predicate twice, so
//! the result is the same, and the planner takes whichever index serves it best.
use sqlparser::ast::{BinaryOperator, CastKind, DataType, Expr, Ident};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Span, Token, Tokenizer};

use super::ctx::Ctx;
use super::phase::{migrate_value, migrated, MigrateValue};
use super::scope::{resolve, Resolution};
use super::Refuse;

/// A predicate over one column reference: the text before and after it in the statement.
struct Shape<'e> {
    qualifier: &'e [Ident],
    column: &'e Ident,
    /// Byte range of the whole predicate.
    start: usize,
    end: usize,
}

/// The index-friendly form of `expr`, when it is a predicate on a mapped column in migrate.
///
/// # Returns
/// The byte range of the predicate and its replacement text, or `None` to leave it to the
/// ordinary column rewrite.
///
/// # Errors
/// A [`Refuse`] from name resolution (an ambiguous column, …).
pub(crate) fn rewrite(
    ctx: &Ctx<'_>,
    expr: &Expr,
) -> Result<Option<(usize, usize, String)>, Refuse> {
    for shape in shapes(ctx, expr).into_iter().flatten() {
        if let Some(rewritten) = rewrite_shape(ctx, &shape)? {
            return Ok(Some(rewritten));
        }
    }
    Ok(None)
}

fn rewrite_shape(
    ctx: &Ctx<'_>,
    shape: &Shape<'_>,
) -> Result<Option<(usize, usize, String)>, Refuse> {
    let m = match resolve(
        &ctx.scopes,
        ctx.rules,
        ctx.catalog,
        shape.qualifier,
        shape.column,
    )? {
        Resolution::Mapped(m) => m,
        Resolution::Other => return Ok(None),
    };
    let Some(MigrateValue {
        not_migrated,
        unmigrated,
        migrated: migrated_value,
    }) = migrate_value(m.rule, m.side, m.index, &m.row())
    else {
        return Ok(None);
    };
    let (ref_start, ref_end) = ref_range(ctx, shape.qualifier, shape.column)?;
    let text = ctx.src.text;
    let (before, after) = (&text[shape.start..ref_start], &text[ref_end..shape.end]);
    let has_migrated = migrated(m.rule, &m.qual);
    let case = MigrateValue {
        not_migrated,
        unmigrated,
        migrated: migrated_value,
    };
    let MigrateValue {
        not_migrated,
        unmigrated,
        migrated: migrated_value,
    } = &case;
    let split = format!(
        "(({not_migrated} AND {before}{unmigrated}{after}) OR (({has_migrated}) AND {before}{migrated_value}{after}))"
    );
    let value = case.case();
    let text = if ctx.ordered.contains(&value) {
        format!("({split} AND {before}{value}{after})")
    } else {
        split
    };
    Ok(Some((shape.start, shape.end, text)))
}

/// The ways `expr` reads as a predicate on one column (a comparison of two columns reads
/// as either).
fn shapes<'e>(ctx: &Ctx<'_>, expr: &'e Expr) -> [Option<Shape<'e>>; 2] {
    match expr {
        Expr::BinaryOp { left, op, right } if comparison(op) => [
            compared(ctx, left, right, false),
            compared(ctx, right, left, true),
        ],
        _ => [shape(ctx, expr), None],
    }
}

/// `column OP operand`, or `operand OP column` when `column_last`.
fn compared<'e>(
    ctx: &Ctx<'_>,
    column_side: &'e Expr,
    operand: &'e Expr,
    column_last: bool,
) -> Option<Shape<'e>> {
    // `col::text = $1` reads as a predicate on `col` whose text runs to the operand;
    // with the column last, the cast would be cut off.
    let (q, c) = if column_last {
        column(column_side)?
    } else {
        column_or_cast(column_side)?
    };
    let (ref_start, ref_end) = ref_range(ctx, q, c).ok()?;
    let (op_start, op_end) = operand_range(ctx, operand)?;
    let (start, end) = if column_last {
        (op_start, ref_end)
    } else {
        (ref_start, op_end)
    };
    Some(Shape {
        qualifier: q,
        column: c,
        start,
        end,
    })
}

/// Recognises `ref IS [NOT] NULL`, `ref [NOT] IN (values)`, `ref [NOT] [I]LIKE value`,
/// `ref [NOT] BETWEEN value AND value` and `ref OP ANY | SOME | ALL (array)`.
fn shape<'e>(ctx: &Ctx<'_>, expr: &'e Expr) -> Option<Shape<'e>> {
    let src = ctx.src;
    match expr {
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let (q, c) = column(inner)?;
            let last = src.ident_index(c).ok()?;
            let mut i = last + 1;
            if !src.is_kw(i, Keyword::IS) {
                return None;
            }
            i += 1;
            if matches!(expr, Expr::IsNotNull(_)) {
                src.is_kw(i, Keyword::NOT).then_some(())?;
                i += 1;
            }
            src.is_kw(i, Keyword::NULL).then_some(())?;
            with_ref(ctx, q, c, src.toks[i].end)
        }
        Expr::InList {
            expr: inner, list, ..
        } => {
            let (q, c) = column(inner)?;
            if list.is_empty() || !list.iter().all(|e| value_end(ctx, e).is_some()) {
                return None;
            }
            let mut i = src.ident_index(c).ok()? + 1;
            if src.is_kw(i, Keyword::NOT) {
                i += 1;
            }
            (src.is_kw(i, Keyword::IN) && src.is(i + 1, &Token::LParen)).then_some(())?;
            let close = src.matching_close(i + 1)?;
            with_ref(ctx, q, c, src.toks[close].end)
        }
        Expr::Like {
            expr: inner,
            pattern,
            escape_char: None,
            any: false,
            ..
        }
        | Expr::ILike {
            expr: inner,
            pattern,
            escape_char: None,
            any: false,
            ..
        } => {
            let (q, c) = column_or_cast(inner)?;
            with_ref(ctx, q, c, value_end(ctx, pattern)?)
        }
        Expr::Between {
            expr: inner,
            low,
            high,
            ..
        } => {
            let (q, c) = column(inner)?;
            value_end(ctx, low)?;
            with_ref(ctx, q, c, value_end(ctx, high)?)
        }
        Expr::AnyOp {
            left,
            compare_op,
            right,
            ..
        }
        | Expr::AllOp {
            left,
            compare_op,
            right,
        } if comparison(compare_op) => {
            let (q, c) = column(left)?;
            repeatable_array(ctx, right).then_some(())?;
            // ref, operator, ANY | SOME | ALL, ( … )
            let op = src.ident_index(c).ok()? + 1;
            let quantifier = [Keyword::ANY, Keyword::SOME, Keyword::ALL];
            quantifier
                .iter()
                .any(|k| src.is_kw(op + 1, *k))
                .then_some(())?;
            src.is(op + 2, &Token::LParen).then_some(())?;
            let close = src.matching_close(op + 2)?;
            with_ref(ctx, q, c, src.toks[close].end)
        }
        _ => None,
    }
}

fn with_ref<'e>(ctx: &Ctx<'_>, q: &'e [Ident], c: &'e Ident, end: usize) -> Option<Shape<'e>> {
    let (start, _) = ref_range(ctx, q, c).ok()?;
    Some(Shape {
        qualifier: q,
        column: c,
        start,
        end,
    })
}

fn comparison(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
    )
}

/// A bare column reference: its qualifier and column.
fn column(expr: &Expr) -> Option<(&[Ident], &Ident)> {
    match expr {
        Expr::Identifier(id) => Some((&[], id)),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let (column, qualifier) = parts.split_last()?;
            Some((qualifier, column))
        }
        _ => None,
    }
}

/// A column reference, bare or cast with `::type` (Django writes
/// `"users"."name"::text LIKE 'ab%'` for `startswith`): the cast stays part of the
/// text after the reference.
fn column_or_cast(expr: &Expr) -> Option<(&[Ident], &Ident)> {
    match expr {
        Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: inner,
            format: None,
            ..
        } => column(inner),
        _ => column(expr),
    }
}

/// Byte range of a column reference in the text.
fn ref_range(ctx: &Ctx<'_>, qualifier: &[Ident], column: &Ident) -> Result<(usize, usize), Refuse> {
    let first = qualifier.first().unwrap_or(column);
    let (start, _) = ctx.src.ident_range(first)?;
    let (_, end) = ctx.src.ident_range(column)?;
    Ok((start, end))
}

/// Byte range of an operand that may be repeated: a literal or `$n` parameter, bare or
/// cast (`::type` or `CAST(… AS type)`, how ORMs type parameters), or a column that no
/// rule maps (a join condition's other side).
fn operand_range(ctx: &Ctx<'_>, expr: &Expr) -> Option<(usize, usize)> {
    if let Some((q, c)) = column(expr) {
        let unmapped = matches!(
            resolve(&ctx.scopes, ctx.rules, ctx.catalog, q, c),
            Ok(Resolution::Other)
        );
        return unmapped.then(|| ref_range(ctx, q, c).ok()).flatten();
    }
    match expr {
        Expr::Value(v) if v.span != Span::empty() => {
            let t = &ctx.src.toks[ctx.src.index_at(v.span.start)?];
            Some((t.start, t.end))
        }
        Expr::Cast {
            kind: CastKind::DoubleColon,
            expr: inner,
            data_type,
            format: None,
        } => {
            let (start, inner_end) = operand_range(ctx, inner)?;
            let colons = ctx.src.toks.iter().position(|t| t.start == inner_end)?;
            ctx.src.is(colons, &Token::DoubleColon).then_some(())?;
            Some((start, type_end(ctx, colons + 1, data_type)?))
        }
        // CAST(value AS type)
        Expr::Cast {
            kind: CastKind::Cast,
            expr: inner,
            format: None,
            ..
        } => {
            let (inner_start, _) = operand_range(ctx, inner)?;
            let first = ctx.src.toks.iter().position(|t| t.start == inner_start)?;
            let open = first.checked_sub(1)?;
            let cast = open.checked_sub(1)?;
            (ctx.src.is_kw(cast, Keyword::CAST) && ctx.src.is(open, &Token::LParen))
                .then_some(())?;
            let close = ctx.src.matching_close(open)?;
            Some((ctx.src.toks[cast].start, ctx.src.toks[close].end))
        }
        _ => None,
    }
}

/// End of the type name starting at token `first`, when its tokens are those of
/// `data_type` as sqlparser prints it; `None` when they differ (then the caller keeps
/// the plain rewrite rather than guess where the type ends).
fn type_end(ctx: &Ctx<'_>, first: usize, data_type: &DataType) -> Option<usize> {
    let printed = data_type.to_string();
    let expected = Tokenizer::new(&PostgreSqlDialect {}, &printed)
        .tokenize()
        .ok()?;
    let expected: Vec<&Token> = expected
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let found = ctx.src.toks.get(first..first + expected.len())?;
    let same = expected
        .iter()
        .zip(found)
        .all(|(e, f)| match (e, &f.token) {
            (Token::Word(a), Token::Word(b)) => a.value.eq_ignore_ascii_case(&b.value),
            (a, b) => *a == b,
        });
    same.then(|| found.last().map(|t| t.end))?
}

/// Whether the array of `= ANY(array)` is free to evaluate twice: a literal or
/// parameter (`$1`, `'{a,b}'::text[]`), or `ARRAY[…]` of such values.
fn repeatable_array(ctx: &Ctx<'_>, expr: &Expr) -> bool {
    match expr {
        Expr::Array(array) => {
            !array.elem.is_empty() && array.elem.iter().all(|e| value_end(ctx, e).is_some())
        }
        _ => value_end(ctx, expr).is_some(),
    }
}

fn value_end(ctx: &Ctx<'_>, expr: &Expr) -> Option<usize> {
    operand_range(ctx, expr).map(|(_, end)| end)
}
