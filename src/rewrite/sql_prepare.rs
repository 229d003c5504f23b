//! Recognising a SQL-level `PREPARE name AS …` without parsing the statement.
//!
//! A session remembers such statements so it can prepare them again when the rules change.
//! Every simple query would otherwise have to be parsed to find out, and parsing is what a
//! hostile statement can make expensive: here a byte check on the first word rules out
//! nearly every query, and the rest is only tokenized, which is linear and never recurses.
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::depth::MAX_TEXT_BYTES;

/// The name a simple query prepares, when the query is exactly one `PREPARE name …`.
///
/// # Returns
/// The name as Postgres folds it (unquoted names lower-cased), or `None` when the text is
/// not one `PREPARE` statement.
pub fn prepared_statement_name(sql: &str) -> Option<String> {
    if sql.len() > MAX_TEXT_BYTES || !starts_with_prepare(sql.as_bytes()) {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut significant = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF));
    let name = match (significant.next(), significant.next()) {
        (Some(Token::Word(first)), Some(Token::Word(name)))
            if first.keyword == Keyword::PREPARE =>
        {
            match name.quote_style {
                Some('"') => name.value.clone(),
                Some(_) => return None,
                None => name.value.to_lowercase(),
            }
        }
        _ => return None,
    };
    match significant.next() {
        Some(Token::LParen) => {}
        Some(Token::Word(w)) if w.keyword == Keyword::AS => {}
        _ => return None,
    }
    // Exactly one statement: nothing but semicolons after the first semicolon.
    let mut rest = significant.skip_while(|t| **t != Token::SemiColon);
    rest.all(|t| *t == Token::SemiColon).then_some(name)
}

/// Whether the first word of `sql`, after whitespace and comments, is `PREPARE`: the
/// check that lets every other query skip [`prepared_statement_name`].
pub fn starts_with_prepare(sql: &[u8]) -> bool {
    let mut i = 0;
    loop {
        while sql.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        match (sql.get(i), sql.get(i + 1)) {
            (Some(b'-'), Some(b'-')) => {
                i += memchr::memchr(b'\n', &sql[i..]).unwrap_or(sql.len() - i);
            }
            (Some(b'/'), Some(b'*')) => i = block_comment_end(sql, i),
            _ => break,
        }
    }
    let word = b"prepare";
    sql.len() >= i + word.len()
        && sql[i..i + word.len()].eq_ignore_ascii_case(word)
        && !sql
            .get(i + word.len())
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80)
}

/// End (exclusive) of the block comment opening at `start`; Postgres nests them.
fn block_comment_end(sql: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < sql.len() {
        match (sql[i], sql[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_name_of_one_prepare() {
        assert_eq!(
            prepared_statement_name("PREPARE Q1 AS SELECT name FROM users WHERE id = $1"),
            Some("q1".into())
        );
        assert_eq!(
            prepared_statement_name(
                "/* a /* nested */ comment */ -- x\n prepare \"Q1\" (int) AS SELECT $1;"
            ),
            Some("Q1".into())
        );
    }

    #[test]
    fn other_statements_are_not_prepares() {
        for sql in [
            "SELECT 1 -- prepare",
            "SELECT 'prepare q AS SELECT 1'",
            "PREPARE q AS SELECT 1; SELECT 2",
            "PREPAREd",
            "PREPARE",
            "PREPARE q SELECT 1",
            "EXECUTE q",
        ] {
            assert_eq!(prepared_statement_name(sql), None, "{sql}");
        }
    }

    #[test]
    fn a_deep_statement_is_only_tokenized() {
        let deep = format!("PREPARE q AS SELECT {}1", "1+".repeat(1_000_000));
        assert_eq!(prepared_statement_name(&deep), Some("q".into()));
    }
}
