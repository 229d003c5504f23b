//! The statement text as tokens with byte offsets: where every edit is anchored.
//!
//! sqlparser reports 1-based line/column locations that count characters, not bytes. This
//! module converts them once, in a single pass over the text, so multi-byte UTF-8 input is
//! handled in one place. List boundaries (select items, `SET` assignments, `VALUES` items)
//! are found on the tokens, not from expression spans, because sqlparser's expression spans
//! leave out parts such as a trailing `::type`.

use sqlparser::ast::Ident;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, TokenizerError};

use super::Refuse;
use sqlparser::dialect::PostgreSqlDialect;

/// One significant token (whitespace and comments are left out).
#[derive(Debug, Clone)]
pub(crate) struct Tok {
    pub token: Token,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    loc: Location,
}

/// The text of one client message and its tokens.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub toks: Vec<Tok>,
}

/// Walks the text once, turning increasing locations into byte offsets.
struct Cursor<'a> {
    chars: std::str::CharIndices<'a>,
    byte: usize,
    line: u64,
    column: u64,
    len: usize,
}

impl Cursor<'_> {
    fn seek(&mut self, target: Location) -> usize {
        while (self.line, self.column) < (target.line, target.column) {
            match self.chars.next() {
                Some((_, ch)) => {
                    self.byte += ch.len_utf8();
                    if ch == '\n' {
                        self.line += 1;
                        self.column = 1;
                    } else {
                        self.column += 1;
                    }
                }
                None => return self.len,
            }
        }
        self.byte
    }
}

// === impl Source ===

impl<'a> Source<'a> {
    /// Tokenise `text` with Postgres rules; the full token list goes to the parser.
    ///
    /// # Errors
    /// The tokenizer's error (unterminated string, ...).
    pub fn new(text: &'a str) -> Result<(Source<'a>, Vec<TokenWithSpan>), TokenizerError> {
        let all = Tokenizer::new(&PostgreSqlDialect {}, text).tokenize_with_location()?;
        let mut cursor = Cursor {
            chars: text.char_indices(),
            byte: 0,
            line: 1,
            column: 1,
            len: text.len(),
        };
        let mut toks = Vec::with_capacity(all.len());
        for t in &all {
            if matches!(t.token, Token::Whitespace(_) | Token::EOF) {
                continue;
            }
            let start = cursor.seek(t.span.start);
            let end = cursor.seek(t.span.end);
            toks.push(Tok {
                token: t.token.clone(),
                start,
                end,
                loc: t.span.start,
            });
        }
        Ok((Source { text, toks }, all))
    }

    /// Whether the text has a Unicode-escaped identifier (`U&"…"`), which sqlparser
    /// tokenizes as the word `U`, `&` and a quoted identifier, all adjacent.
    pub fn has_unicode_identifier(&self) -> bool {
        self.toks.windows(3).any(|w| {
            matches!(&w[0].token, Token::Word(u) if u.quote_style.is_none() && u.value.eq_ignore_ascii_case("u"))
                && w[1].token == Token::Ampersand
                && matches!(&w[2].token, Token::Word(q) if q.quote_style == Some('"'))
                && w[0].end == w[1].start
                && w[1].end == w[2].start
        })
    }

    /// Byte ranges of the statements of the text: between top-level semicolons, from
    /// the first token to the last of each, leaving empty statements out.
    pub fn statement_ranges(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut first: Option<usize> = None;
        for (i, t) in self.toks.iter().enumerate() {
            match t.token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
                Token::SemiColon if depth == 0 => {
                    if let Some(f) = first.take() {
                        out.push((self.toks[f].start, self.toks[i - 1].end));
                    }
                    continue;
                }
                _ => {}
            }
            first.get_or_insert(i);
        }
        if let (Some(f), Some(last)) = (first, self.toks.last()) {
            out.push((self.toks[f].start, last.end));
        }
        out
    }

    /// Index of the token that starts at `loc`.
    pub fn index_at(&self, loc: Location) -> Option<usize> {
        let key = (loc.line, loc.column);
        self.toks
            .binary_search_by_key(&key, |t| (t.loc.line, t.loc.column))
            .ok()
    }

    /// Token index of an identifier from the AST.
    ///
    /// # Errors
    /// When the parser gave the identifier no usable span: refuse rather than guess.
    pub fn ident_index(&self, ident: &Ident) -> Result<usize, Refuse> {
        self.index_at(ident.span.start).ok_or_else(|| {
            Refuse::new(format!("no source position for identifier {}", ident.value))
        })
    }

    /// Byte range of an identifier from the AST.
    ///
    /// # Errors
    /// As [`Source::ident_index`].
    pub fn ident_range(&self, ident: &Ident) -> Result<(usize, usize), Refuse> {
        let i = self.ident_index(ident)?;
        Ok((self.toks[i].start, self.toks[i].end))
    }

    /// Token index for a keyword or punctuation token the AST attached.
    ///
    /// # Errors
    /// When the span is empty or does not start a token.
    pub fn token_index(&self, loc: Location) -> Result<usize, Refuse> {
        self.index_at(loc)
            .ok_or_else(|| Refuse::new("no source position for a clause"))
    }

    /// Whether token `i` is the keyword `kw`.
    pub fn is_kw(&self, i: usize, kw: Keyword) -> bool {
        matches!(self.toks.get(i), Some(Tok { token: Token::Word(w), .. }) if w.keyword == kw && w.quote_style.is_none())
    }

    /// Whether token `i` is `tok`.
    pub fn is(&self, i: usize, tok: &Token) -> bool {
        self.toks.get(i).is_some_and(|t| &t.token == tok)
    }

    /// Byte range covering tokens `first..=last`.
    pub fn range(&self, first: usize, last: usize) -> (usize, usize) {
        (self.toks[first].start, self.toks[last].end)
    }

    /// Text covering tokens `first..=last`.
    pub fn text_of(&self, first: usize, last: usize) -> &'a str {
        let (s, e) = self.range(first, last);
        &self.text[s..e]
    }

    /// Index of the `)` or `]` matching the opener at `open`.
    pub fn matching_close(&self, open: usize) -> Option<usize> {
        let mut depth = 0usize;
        for (i, t) in self.toks.iter().enumerate().skip(open) {
            match t.token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Split a comma-separated list starting at token `first` into inclusive token ranges.
    ///
    /// The list ends at an unmatched closer, `;`, the end of input, or a token at depth 0
    /// for which `stop` says so.
    pub fn split_list(
        &self,
        first: usize,
        stop: impl Fn(&Source<'_>, usize) -> bool,
    ) -> Vec<(usize, usize)> {
        let mut items = Vec::new();
        let mut depth = 0usize;
        let mut item_start = first;
        let mut i = first;
        while i < self.toks.len() {
            match self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket if depth == 0 => break,
                Token::RParen | Token::RBracket => depth -= 1,
                Token::SemiColon if depth == 0 => break,
                Token::Comma if depth == 0 => {
                    if i > item_start {
                        items.push((item_start, i - 1));
                    }
                    item_start = i + 1;
                }
                _ if depth == 0 && stop(self, i) => break,
                _ => {}
            }
            i += 1;
        }
        if i > item_start {
            items.push((item_start, i - 1));
        }
        items
    }

    /// The first token at or after `from` that is keyword `kw` at nesting depth 0 (the
    /// search stops at an unmatched closer or `;`).
    pub fn find_kw_depth0(&self, from: usize, kw: Keyword) -> Option<usize> {
        let mut depth = 0usize;
        for i in from..self.toks.len() {
            match self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth = depth.checked_sub(1)?,
                Token::SemiColon if depth == 0 => return None,
                _ if depth == 0 && self.is_kw(i, kw) => return Some(i),
                _ => {}
            }
        }
        None
    }

    /// Index of the last token of the construct starting at `from`: the token before an
    /// unmatched closer, `;`, the end of input, or a depth-0 token `stop` accepts.
    pub fn last_before(
        &self,
        from: usize,
        stop: impl Fn(&Source<'_>, usize) -> bool,
    ) -> Option<usize> {
        let mut depth = 0usize;
        let mut i = from;
        while i < self.toks.len() {
            match self.toks[i].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket if depth == 0 => break,
                Token::RParen | Token::RBracket => depth -= 1,
                Token::SemiColon if depth == 0 => break,
                _ if depth == 0 && stop(self, i) => break,
                _ => {}
            }
            i += 1;
        }
        i.checked_sub(1).filter(|&last| last >= from)
    }

    /// Ends a select list or `SET` list: a clause keyword at depth 0.
    pub fn ends_clause_list(&self, i: usize) -> bool {
        use Keyword::*;
        let prev_is = |kw| i > 0 && self.is_kw(i - 1, kw);
        let Some(Tok {
            token: Token::Word(w),
            ..
        }) = self.toks.get(i)
        else {
            return false;
        };
        if w.quote_style.is_some() {
            return false;
        }
        match w.keyword {
            FROM => !prev_is(DISTINCT),
            GROUP => !prev_is(WITHIN),
            INTO | WHERE | HAVING | WINDOW | ORDER | LIMIT | OFFSET | FETCH | UNION | INTERSECT
            | EXCEPT | RETURNING => true,
            FOR => true,
            ON => self.is_kw(i + 1, CONFLICT),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_offsets_with_multibyte_text() {
        let (src, _) = Source::new("SELECT 'ü€', é.name FROM t é").unwrap();
        let name = src
            .toks
            .iter()
            .find(|t| matches!(&t.token, Token::Word(w) if w.value == "name"))
            .unwrap();
        assert_eq!(&src.text[name.start..name.end], "name");
        let last = src.toks.last().unwrap();
        assert_eq!(&src.text[last.start..last.end], "é");
    }

    #[test]
    fn byte_offsets_across_lines() {
        let (src, _) = Source::new("SELECT\n  'ä'\n  -- ü comment\n  , x").unwrap();
        let x = src.toks.last().unwrap();
        assert_eq!(&src.text[x.start..x.end], "x");
    }

    #[test]
    fn split_list_respects_nesting_and_clause_keywords() {
        let (src, _) =
            Source::new("SELECT a, f(b, c), x IS DISTINCT FROM y, z::int FROM t").unwrap();
        let items = src.split_list(1, |s, i| s.ends_clause_list(i));
        let texts: Vec<_> = items.iter().map(|&(a, b)| src.text_of(a, b)).collect();
        assert_eq!(texts, ["a", "f(b, c)", "x IS DISTINCT FROM y", "z::int"]);
    }
}
