//! A bound on how deep a statement's syntax tree can get, checked on tokens before a tree is
//! built, and a stack known to be large enough for every tree that passes it.
//!
//! sqlparser builds a chain of left-associative operators (`1+1+…`, `a AND b AND …`,
//! `x::a::b…`, `SELECT … UNION SELECT …`) in a loop, so its own recursion limit does not stop
//! it, but the tree it returns is as deep as the chain is long, and walking it, printing it or
//! dropping it recurses once per level. A 70 kB statement is enough to overflow a thread's
//! stack and abort the process. So before parsing, [`check`] estimates the depth from the
//! tokens alone (iteratively, in one pass), and [`on_large_stack`] runs parsing, the walk and
//! the drop of the tree on a stack sized for the deepest tree [`check`] lets through.
//!
//! The estimate is an upper bound: every level of a tree is an operator token or a bracket
//! (`(`, `[`, `CASE … END`), so the depth at a token is at most the brackets open around it plus the
//! operators seen since the last comma or bracket at each open level. Commas and semicolons
//! end a list item (a select item, an argument, a statement), which is its own subtree.
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

/// Deepest tree pgshim builds. Real statements, ORM-generated ones included, stay far below;
/// Postgres itself gives up (`54001`) on chains some tens of times longer.
pub(crate) const MAX_DEPTH: usize = 2_000;

/// Longest statement text pgshim tokenizes: tokens take tens of times the text's size, so
/// the bound keeps one statement's rewrite within some hundreds of MiB. Bulk `INSERT`s of
/// many thousand rows stay below it.
pub(crate) const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

/// The reason given for a statement that fails [`check`].
pub(crate) const TOO_DEEP: &str = "more than 2000 chained operators, or 64 nested brackets or CASEs; write long OR chains as IN (...) or = ANY($1), or split the statement";

/// Deepest nesting of brackets and `CASE`s (subqueries included).
pub(crate) const MAX_NESTING: usize = 64;

/// sqlparser's recursion limit (its default is 50): each nesting level takes a few units, and
/// each prefix operator (`NOT`, `-`) one.
pub(crate) const PARSER_RECURSION_LIMIT: usize = 4 * MAX_NESTING + 100;

/// The stack every tree that passes [`check`] fits on, with a wide margin: a debug build
/// needs under 4 MiB for [`MAX_NESTING`] subqueries around a chain of [`MAX_DEPTH`]
/// operators. Only the pages touched are ever mapped.
const STACK_BYTES: usize = 64 * 1024 * 1024;

/// A statement nested deeper than pgshim builds trees for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep;

/// Checks that parsing `tokens` builds a tree at most [`MAX_DEPTH`] deep, with at most
/// [`MAX_NESTING`] brackets open at once.
///
/// # Errors
/// [`TooDeep`] when the bound is exceeded; the tokens must not be parsed.
pub(crate) fn check(tokens: &[TokenWithSpan]) -> Result<(), TooDeep> {
    // Operators counted at each enclosing bracket level, and at the current one.
    let mut outer: Vec<usize> = Vec::new();
    let mut level = 0usize;
    let mut depth = 0usize;
    for t in tokens {
        match &t.token {
            token if opens(token) => {
                outer.push(level);
                level = 0;
                depth += 1;
                if outer.len() > MAX_NESTING {
                    return Err(TooDeep);
                }
            }
            token if closes(token) => {
                depth -= level + usize::from(!outer.is_empty());
                level = outer.pop().unwrap_or(0);
            }
            Token::Comma | Token::SemiColon => {
                depth -= level;
                level = 0;
            }
            token if is_operator(token) => {
                level += 1;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TooDeep);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Brackets, and `CASE`, whose branches sqlparser parses recursively.
fn opens(token: &Token) -> bool {
    match token {
        Token::LParen | Token::LBracket | Token::LBrace => true,
        Token::Word(w) => w.keyword == Keyword::CASE,
        _ => false,
    }
}

/// What ends an [`opens`]: a closing bracket or `END`.
fn closes(token: &Token) -> bool {
    match token {
        Token::RParen | Token::RBracket | Token::RBrace => true,
        Token::Word(w) => w.keyword == Keyword::END,
        _ => false,
    }
}

/// Whether a token can add a level to the tree: any punctuation, and the keywords that
/// combine expressions or queries.
fn is_operator(token: &Token) -> bool {
    match token {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::XOR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::NOTNULL
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OPERATOR
                | Keyword::OVERLAPS
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::EXISTS
                | Keyword::ARRAY
                | Keyword::SELECT
        ),
        Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::Placeholder(_)
        | Token::Whitespace(_)
        | Token::EOF => false,
        _ => true,
    }
}

/// Runs `f` on a stack of [`STACK_BYTES`], whatever thread calls it (a tokio worker has
/// 2 MiB). Parsing, walking and dropping a tree that passed [`check`] all happen inside.
pub(crate) fn on_large_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::grow(STACK_BYTES, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn depth_ok(sql: &str) -> bool {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .unwrap();
        check(&tokens).is_ok()
    }

    fn chain(op: &str, term: &str, n: usize) -> String {
        let mut s = String::from("SELECT ");
        for i in 0..n {
            if i > 0 {
                s.push_str(op);
            }
            s.push_str(term);
        }
        s
    }

    #[test]
    fn ordinary_statements_pass() {
        assert!(depth_ok(
            "SELECT a.id, b.name FROM users a JOIN people b ON b.id = a.id + 1 WHERE a.x IN (1, 2, 3) AND NOT b.y IS NULL"
        ));
        let long_list = format!(
            "SELECT * FROM users WHERE id IN ({})",
            (0..100_000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(depth_ok(&long_list));
        let many_items = (0..5_000).map(|i| format!("a+{i}")).collect::<Vec<_>>();
        assert!(depth_ok(&format!("SELECT {}", many_items.join(", "))));
    }

    #[test]
    fn long_chains_of_every_operator_are_too_deep() {
        for (op, term) in [
            ("+", "1"),
            (" AND ", "true"),
            (" OR ", "x = 1"),
            ("||", "'a'"),
            (" UNION SELECT ", "1"),
            ("::", "int"),
        ] {
            assert!(depth_ok(&chain(op, term, 100)), "{op}");
            assert!(!depth_ok(&chain(op, term, 35_000)), "{op}");
        }
    }

    #[test]
    fn deep_nesting_is_too_deep() {
        let n = 1_000;
        let parens = format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
        assert!(!depth_ok(&parens));
        let cases = format!(
            "SELECT {} 1 {}",
            "CASE WHEN true THEN ".repeat(n),
            "END ".repeat(n)
        );
        assert!(!depth_ok(&cases));
        let subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n));
        assert!(!depth_ok(&subqueries));
    }

    #[test]
    fn unbalanced_brackets_do_not_underflow() {
        assert!(depth_ok(")))) SELECT 1 ))"));
        assert!(depth_ok("]], ; )"));
    }
}
