//! The SQL statements of a plpgsql body, rewritten in place.
//!
//! pgshim does not parse plpgsql, but the bodies ORMs generate are a flat list of
//! SQL statements between `BEGIN` and `EXCEPTION`/`END` (Sequelize's `findOrCreate`:
//! `BEGIN INSERT … RETURNING * INTO response; EXCEPTION WHEN unique_violation THEN
//! …; END`). Each statement of such a body that names a mapped table is rewritten
//! like a statement sent on its own, with a trailing `INTO target` set aside and put
//! back. Anything else that names a mapped table (control structures, dynamic SQL,
//! `SELECT … INTO … FROM`) is refused: a body that writes one shape is never created.
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::Token;

use super::edits::Edits;
use super::prefilter::mentions_mapped_table;
use super::source::{Source, Tok};
use super::{rewrite_parsed, Catalog, Outcome, Refuse, RuleSet, SearchPath};

/// Keywords that start a plain SQL statement the rewriter handles.
const SQL_STARTS: [Keyword; 5] = [
    Keyword::INSERT,
    Keyword::UPDATE,
    Keyword::DELETE,
    Keyword::SELECT,
    Keyword::WITH,
];

/// The body with every statement that names a mapped table rewritten.
///
/// # Returns
/// `None` when nothing changed.
///
/// # Errors
/// A [`Refuse`] saying which part of the body cannot be rewritten.
pub(crate) fn rewrite_body(
    body: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
) -> Result<Option<String>, Refuse> {
    let (src, _) =
        Source::new(body).map_err(|e| Refuse::new(format!("the body does not tokenize: {e}")))?;
    let mut edits = Edits::default();
    for (first, last) in statements(&src.toks) {
        let (start, end) = src.range(first, last);
        if !mentions_mapped_table(&body.as_bytes()[start..end], rules) {
            continue;
        }
        let first = skip_block_words(&src, first, last);
        if first > last || !SQL_STARTS.iter().any(|k| src.is_kw(first, *k)) {
            return Err(Refuse::new(
                "a plpgsql body names a mapped table outside a plain INSERT, UPDATE, DELETE or SELECT statement",
            ));
        }
        let sql_end = into_clause(&src, first, last)?.unwrap_or(last);
        let (start, end) = src.range(first, sql_end);
        match rewrite_parsed(&body[start..end], rules, catalog, path)? {
            Outcome::Unchanged => {}
            Outcome::Rewritten(new) => edits.replace(start, end, new)?,
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    edits.apply(body).map(Some)
}

/// Token ranges between top-level semicolons.
fn statements(toks: &[Tok]) -> Vec<(usize, usize)> {
    let (mut out, mut depth, mut from) = (Vec::new(), 0usize, 0usize);
    for (i, t) in toks.iter().enumerate() {
        match t.token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::SemiColon if depth == 0 => {
                if i > from {
                    out.push((from, i - 1));
                }
                from = i + 1;
            }
            _ => {}
        }
    }
    if from < toks.len() {
        out.push((from, toks.len() - 1));
    }
    out
}

/// The first token after the block words a statement may follow (`BEGIN`, and an
/// exception handler's `EXCEPTION WHEN <condition> THEN`).
fn skip_block_words(src: &Source<'_>, mut i: usize, last: usize) -> usize {
    while i <= last {
        if src.is_kw(i, Keyword::BEGIN) {
            i += 1;
        } else if src.is_kw(i, Keyword::EXCEPTION) || src.is_kw(i, Keyword::WHEN) {
            match (i..=last).find(|&j| src.is_kw(j, Keyword::THEN)) {
                Some(then) => i = then + 1,
                None => return last + 1,
            }
        } else {
            return i;
        }
    }
    i
}

/// The last token of the statement before a trailing plpgsql `INTO target`, if it has
/// one (`… RETURNING * INTO response`).
///
/// # Errors
/// An `INTO` elsewhere (`SELECT … INTO target FROM …`), which would have to be moved.
fn into_clause(src: &Source<'_>, first: usize, last: usize) -> Result<Option<usize>, Refuse> {
    let mut depth = 0usize;
    let mut into = None;
    for i in first..=last {
        match src.toks[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && src.is_kw(i, Keyword::INTO) => into = Some(i),
            _ => {}
        }
    }
    let Some(into) = into else {
        return Ok(None);
    };
    // `INSERT INTO t …` is the statement's own INTO.
    if src.is_kw(first, Keyword::INSERT) && into == first + 1 {
        return Ok(None);
    }
    let returning = (first..into).any(|i| src.is_kw(i, Keyword::RETURNING));
    let targets_only = (into + 1..=last).all(|i| {
        matches!(
            src.toks[i].token,
            Token::Word(_) | Token::Comma | Token::Period
        ) && !src.is_kw(i, Keyword::FROM)
    });
    if returning && targets_only && into > first {
        return Ok(Some(into - 1));
    }
    Err(Refuse::new(
        "a plpgsql SELECT … INTO over a mapped table cannot be rewritten; use RETURNING … INTO or a LANGUAGE sql function",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::tests::support::{catalog, rules};

    #[test]
    fn sequelize_find_or_create_body_is_rewritten() {
        let body = " BEGIN INSERT INTO \"users\" (\"id\",\"name\") VALUES (DEFAULT,'Ann') RETURNING * INTO response; EXCEPTION WHEN unique_violation THEN GET STACKED DIAGNOSTICS sequelize_caught_exception = PG_EXCEPTION_DETAIL; END ";
        let out = rewrite_body(body, &rules("expand"), &catalog(), SearchPath::public())
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            " BEGIN INSERT INTO \"users\" (\"id\",\"name\", full_name) VALUES (DEFAULT,'Ann', 'Ann') RETURNING users.id, users.name, users.name AS full_name, users.email INTO response; EXCEPTION WHEN unique_violation THEN GET STACKED DIAGNOSTICS sequelize_caught_exception = PG_EXCEPTION_DETAIL; END "
        );
    }

    #[test]
    fn control_structures_over_a_mapped_table_are_refused() {
        for body in [
            "BEGIN IF true THEN INSERT INTO users (name) VALUES ('x'); END IF; END",
            "BEGIN EXECUTE 'INSERT INTO users (name) VALUES (1)'; END",
            "BEGIN SELECT name INTO v FROM users; END",
        ] {
            assert!(
                rewrite_body(body, &rules("expand"), &catalog(), SearchPath::public()).is_err(),
                "{body}"
            );
        }
        assert_eq!(
            rewrite_body(
                "BEGIN PERFORM 1; END",
                &rules("expand"),
                &catalog(),
                SearchPath::public()
            ),
            Ok(None)
        );
    }
}
