//! A rule's transform expression as a template with holes at its column references.
//!
//! The transform text is spliced as written (parenthesised); only its column references are
//! replaced, by a qualified column when reading a row or by the value a statement writes.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::depth;
use super::ident::normalize;
use super::source::Source;

/// Part of generated SQL: literal text or the value written for a statement slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    /// The `n`th value a write statement supplies (a `VALUES` item, a `SET` right-hand side).
    Slot(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

/// A parsed transform.
#[derive(Debug, Clone)]
pub(crate) struct TransformTemplate {
    parts: Vec<Part>,
}

struct Refs<'s> {
    src: &'s Source<'s>,
    found: Vec<(usize, usize, String)>,
}

impl Visitor for Refs<'_> {
    type Break = String;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Identifier(ident) => match self.src.ident_range(ident) {
                Ok((s, e)) => self.found.push((s, e, normalize(ident))),
                Err(_) => return ControlFlow::Break("column reference without position".into()),
            },
            Expr::CompoundIdentifier(_) => {
                return ControlFlow::Break("qualified column references are not allowed".into())
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                return ControlFlow::Break("subqueries are not allowed".into())
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

// === impl TransformTemplate ===

impl TransformTemplate {
    /// A transform that is just `column`.
    pub fn identity(column: &str) -> TransformTemplate {
        TransformTemplate {
            parts: vec![Part::Column(column.to_owned())],
        }
    }

    /// Parse one transform expression.
    ///
    /// # Errors
    /// A message when it is not exactly one SQL expression, uses parameters, subqueries or
    /// qualified names.
    pub fn parse(text: &str) -> Result<TransformTemplate, String> {
        let (src, tokens) = Source::new(text).map_err(|e| format!("does not parse: {e}"))?;
        if src
            .toks
            .iter()
            .any(|t| matches!(t.token, Token::Placeholder(_)))
        {
            return Err("parameters are not allowed".into());
        }
        if text.len() > depth::MAX_TEXT_BYTES || depth::check(&tokens).is_err() {
            return Err(format!("is too deep: {}", depth::TOO_DEEP));
        }
        // Built, walked and dropped on a stack sized for the depth just checked.
        let found = depth::on_large_stack(|| {
            let mut parser = Parser::new(&PostgreSqlDialect {})
                .with_recursion_limit(depth::PARSER_RECURSION_LIMIT)
                .with_tokens_with_locations(tokens);
            let expr = parser
                .parse_expr()
                .map_err(|e| format!("does not parse: {e}"))?;
            if parser.peek_token().token != Token::EOF {
                return Err("does not parse: text after the expression".to_string());
            }
            let mut refs = Refs {
                src: &src,
                found: Vec::new(),
            };
            if let ControlFlow::Break(problem) = expr.visit(&mut refs) {
                return Err(problem);
            }
            Ok(refs.found)
        })?;
        let mut found = found;
        found.sort();
        let mut parts = Vec::new();
        let mut at = 0;
        let trimmed_end = text.trim_end().len();
        let start = text.len() - text.trim_start().len();
        at = at.max(start);
        for (s, e, name) in found {
            if s > at {
                parts.push(Part::Text(text[at..s].to_owned()));
            }
            parts.push(Part::Column(name));
            at = e;
        }
        if trimmed_end > at {
            parts.push(Part::Text(text[at..trimmed_end].to_owned()));
        }
        Ok(TransformTemplate { parts })
    }

    /// The columns the transform reads, with repeats.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The column when the transform is exactly one column reference.
    pub fn identity_column(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Column(c)] => Some(c),
            _ => None,
        }
    }

    /// Fill the holes, parenthesising the whole unless it is a bare column.
    pub fn render(&self, out: &mut Vec<Piece>, fill: &mut dyn FnMut(&str, &mut Vec<Piece>)) {
        if let Some(c) = self.identity_column() {
            fill(c, out);
            return;
        }
        out.push(Piece::Text("(".into()));
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push(Piece::Text(t.clone())),
                Part::Column(c) => fill(c, out),
            }
        }
        out.push(Piece::Text(")".into()));
    }

    /// Fill the holes with text, for reads.
    pub fn render_text(&self, fill: &mut dyn FnMut(&str) -> String) -> String {
        let mut pieces = Vec::new();
        self.render(&mut pieces, &mut |c, out| out.push(Piece::Text(fill(c))));
        pieces_text(&pieces)
    }
}

/// Concatenate text-only pieces.
pub(crate) fn pieces_text(pieces: &[Piece]) -> String {
    let mut s = String::new();
    for p in pieces {
        if let Piece::Text(t) = p {
            s.push_str(t);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_at_column_references_only() {
        let t = TransformTemplate::parse("split_part(Name, ' name ', 1) /* name */").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["name"]);
        let s = t.render_text(&mut |c| format!("u.{c}"));
        assert_eq!(s, "(split_part(u.name, ' name ', 1) /* name */)");
    }

    #[test]
    fn case_transform_keeps_literals() {
        let t =
            TransformTemplate::parse("CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END")
                .unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["status"]);
    }

    #[test]
    fn identity_is_recognised() {
        assert_eq!(
            TransformTemplate::parse(" name ")
                .unwrap()
                .identity_column(),
            Some("name")
        );
        assert_eq!(
            TransformTemplate::parse("\"Name\"")
                .unwrap()
                .identity_column(),
            Some("Name")
        );
        assert_eq!(
            TransformTemplate::parse("name || ''")
                .unwrap()
                .identity_column(),
            None
        );
    }

    #[test]
    fn bad_transforms_are_rejected() {
        assert!(TransformTemplate::parse("name +").is_err());
        assert!(TransformTemplate::parse("name name").is_err());
        assert!(TransformTemplate::parse("u.name").is_err());
        assert!(TransformTemplate::parse("$1").is_err());
        assert!(TransformTemplate::parse("(SELECT 1)").is_err());
        assert!(TransformTemplate::parse("'unterminated").is_err());
    }
}
