//! Function bodies: SQL that Postgres runs later, where pgshim cannot see it.
//!
//! A body that writes a mapped table would write one shape only, whenever it is
//! called, so it is never created as written. A `LANGUAGE sql` body is rewritten
//! like any statement (its text is SQL), a plpgsql body statement by statement
//! (see [`plpgsql`]), and either is sent back dollar-quoted; a body in another
//! language that names a mapped table is refused. Bodies written in standard SQL
//! (`RETURN …`, `BEGIN ATOMIC … END`) are part of the statement and walked as such.
use sqlparser::ast::{CreateFunction, CreateFunctionBody, Expr, Value};

use super::ctx::{Ctx, Labels};
use super::prefilter::{find_ignore_ascii_case, mentions_mapped_table};
use super::{plpgsql, rewrite_parsed, Outcome, Refuse};

/// Rewrites or refuses the body of a `CREATE FUNCTION`.
///
/// # Errors
/// A [`Refuse`] for a procedural body that names a mapped table, or a SQL body that
/// cannot be rewritten.
pub(crate) fn walk(ctx: &mut Ctx<'_>, f: &CreateFunction) -> Result<Labels, Refuse> {
    let body = match &f.function_body {
        Some(CreateFunctionBody::AsBeforeOptions { body, .. })
        | Some(CreateFunctionBody::AsAfterOptions(body)) => body,
        Some(CreateFunctionBody::Return(e)) | Some(CreateFunctionBody::AsReturnExpr(e)) => {
            ctx.walk_node(e)?;
            return Ok(None);
        }
        Some(CreateFunctionBody::AsBeginEnd(block)) => {
            for statement in &block.statements {
                ctx.walk_statement(statement)?;
            }
            return Ok(None);
        }
        Some(CreateFunctionBody::AsReturnSelect(select)) => {
            ctx.refuse_if_mapped(select, "a RETURN SELECT function body over a mapped table")?;
            return Ok(None);
        }
        None => return Ok(None),
    };
    let Expr::Value(value) = body else {
        return Ok(None);
    };
    let text = match &value.value {
        Value::DollarQuotedString(d) => d.value.as_str(),
        Value::SingleQuotedString(s) => s.as_str(),
        _ => return Ok(None),
    };
    if !mentions_mapped_table(text.as_bytes(), ctx.rules) {
        return Ok(None);
    }
    let language = f
        .language
        .as_ref()
        .map_or_else(|| "sql".to_owned(), |l| l.value.to_ascii_lowercase());
    let rewritten = match language.as_str() {
        "sql" => rewrite_parsed(text, ctx.rules, ctx.catalog, &ctx.search_path).map(|o| match o {
            Outcome::Unchanged => None,
            Outcome::Rewritten(new) => Some(new),
        }),
        "plpgsql" => plpgsql::rewrite_body(text, ctx.rules, ctx.catalog, &ctx.search_path),
        _ => {
            return Err(refuse(
                ctx,
                text,
                format!(
                    "a LANGUAGE {language} function body that names a mapped table would write one shape only; write the function in LANGUAGE sql or plpgsql, or send its statements from the application"
                ),
            ))
        }
    };
    let rewritten = match rewritten {
        Ok(None) => return Ok(None),
        Ok(Some(new)) => new,
        Err(e) if e.rule.is_none() => {
            let reason = format!("in the function body: {}", e.reason);
            return Err(Refuse {
                kind: e.kind,
                ..refuse(ctx, text, reason)
            });
        }
        Err(e) => {
            return Err(Refuse {
                reason: format!("in the function body: {}", e.reason),
                ..e
            })
        }
    };
    let i = ctx
        .src
        .index_at(value.span.start)
        .ok_or_else(|| Refuse::new("no source position for the function body"))?;
    let (start, end) = ctx.src.range(i, i);
    ctx.edits.replace(start, end, dollar_quoted(&rewritten))?;
    Ok(None)
}

/// `text` dollar-quoted with a tag it does not contain.
fn dollar_quoted(text: &str) -> String {
    let mut tag = "$pgshim$".to_owned();
    let mut n = 0;
    while text.contains(&tag) {
        n += 1;
        tag = format!("$pgshim{n}$");
    }
    format!("{tag}{text}{tag}")
}

/// A refusal naming the first rule whose table the body mentions.
fn refuse(ctx: &Ctx<'_>, body: &str, reason: String) -> Refuse {
    let bytes = body.as_bytes();
    let rule = ctx
        .rules
        .rules()
        .iter()
        .filter_map(|r| {
            find_ignore_ascii_case(bytes, r.table.to_ascii_lowercase().as_bytes()).map(|at| (at, r))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, r)| r);
    match rule {
        Some(rule) => Refuse::rule(rule, reason),
        None => Refuse::new(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_quoted;

    #[test]
    fn the_tag_never_occurs_in_the_body() {
        assert_eq!(dollar_quoted("SELECT 1"), "$pgshim$SELECT 1$pgshim$");
        assert_eq!(
            dollar_quoted("SELECT '$pgshim$'"),
            "$pgshim1$SELECT '$pgshim$'$pgshim1$"
        );
    }
}
