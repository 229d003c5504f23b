//! Literal-insensitive fingerprints, so statements that differ only in inline literals
//! (pgbench's simple protocol, many ORMs) share one cached rewrite.
//!
//! A light lexer finds plain string literals (`'...'`) and numeric literals, skipping
//! comments, quoted identifiers, prefixed strings (`E'..'`, `B'..'`, `U&'..'`), dollar
//! quotes and `$n` parameters, which stay part of the key. The statement is then rewritten
//! once with each literal replaced by a unique *sentinel* of the same kind; sentinels in the
//! output mark where the client's literals go back. Sentinels keep the literal's kind
//! (string or integer-looking number), so the parse and the rewrite are the same as for the
//! real literals: the rewriter never looks at literal values.

/// A statement split into its literal-free key and its literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint<'s> {
    /// The text with each literal replaced by a one-byte kind marker.
    pub key: String,
    /// The literals, in order, as written.
    pub literals: Vec<&'s str>,
    /// The text with each literal replaced by its sentinel.
    pub sentinel_sql: String,
}

/// Most literals a statement may have and still be cached.
pub(crate) const MAX_LITERALS: usize = 9999;
const NUMBER_BASE: u64 = 7_777_777_770_000;

/// The sentinel standing for literal `n` of the kind of `literal`.
pub(crate) fn sentinel(n: usize, literal: &str) -> String {
    if literal.starts_with('\'') {
        format!("'\u{1}pgshim{n}\u{1}'")
    } else {
        (NUMBER_BASE + n as u64).to_string()
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// End (exclusive) of a quoted run starting at `start` (the opening quote `q`); doubled
/// quotes continue it, and so do backslash escapes when `backslash` is set.
///
/// # Returns
/// `None` when the run is never closed.
fn quoted_end(s: &[u8], start: usize, q: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        if backslash && s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == q {
            if s.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn number_end(s: &[u8], start: usize) -> usize {
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    if s.get(i) == Some(&b'.') && s.get(i + 1) != Some(&b'.') {
        i += 1;
        digits(&mut i);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if s.get(j).is_some_and(u8::is_ascii_digit) {
            i = j;
            digits(&mut i);
        }
    }
    i
}

/// End of a dollar-quoted string starting at `start`, if one starts there.
///
/// # Returns
/// `None` when no tag starts there; `Some(None)` when the string is never closed.
fn dollar_quote_end(sql: &str, start: usize) -> Option<Option<usize>> {
    let s = sql.as_bytes();
    let mut i = start + 1;
    while i < s.len() && is_ident_byte(s[i]) && !(i == start + 1 && s[i].is_ascii_digit()) {
        i += 1;
    }
    if s.get(i) != Some(&b'$') {
        return None;
    }
    let tag = &sql[start..=i];
    let body = i + 1;
    Some(sql[body..].find(tag).map(|at| body + at + tag.len()))
}

/// Split `sql` into key and literals.
///
/// # Returns
/// `None` when the statement has too many literals to be worth caching, or leaves a
/// quote, comment or dollar-quoted string open: how such a text ends is for the parser
/// to judge on the real text, not on one whose tail became a sentinel.
pub(crate) fn fingerprint(sql: &str) -> Option<Fingerprint<'_>> {
    let s = sql.as_bytes();
    let mut key = String::with_capacity(sql.len());
    let mut sentinel_sql = String::with_capacity(sql.len() + 32);
    let mut literals = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < s.len() {
        let prev = i.checked_sub(1).map(|p| s[p]);
        let literal_end = match s[i] {
            b'-' if s.get(i + 1) == Some(&b'-') => {
                i = s[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(s.len(), |p| i + p);
                continue;
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                i = i + 2 + sql.get(i + 2..)?.find("*/")? + 2;
                continue;
            }
            b'"' => {
                i = quoted_end(s, i, b'"', false)?;
                continue;
            }
            b'\'' if prev.is_some_and(|p| is_ident_byte(p) || p == b'&') => {
                let backslash = matches!(prev, Some(b'e' | b'E'));
                i = quoted_end(s, i, b'\'', backslash)?;
                continue;
            }
            b'\'' => quoted_end(s, i, b'\'', false)?,
            b'$' if s.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(s, i + 1);
                continue;
            }
            b'$' if !prev.is_some_and(is_ident_byte) => match dollar_quote_end(sql, i) {
                Some(end) => {
                    i = end?;
                    continue;
                }
                None => {
                    i += 1;
                    continue;
                }
            },
            b'0'..=b'9' if !prev.is_some_and(|p| is_ident_byte(p) || p == b'.') => number_end(s, i),
            _ => {
                i += 1;
                continue;
            }
        };
        let literal = sql.get(i..literal_end)?;
        if literals.len() >= MAX_LITERALS || s.get(literal_end).is_some_and(|&b| is_ident_byte(b)) {
            return None;
        }
        let before = sql.get(copied..i)?;
        key.push_str(before);
        key.push(if literal.starts_with('\'') {
            '\u{1}'
        } else {
            '\u{2}'
        });
        sentinel_sql.push_str(before);
        sentinel_sql.push_str(&sentinel(literals.len(), literal));
        literals.push(literal);
        i = literal_end;
        copied = literal_end;
    }
    let rest = sql.get(copied..)?;
    key.push_str(rest);
    sentinel_sql.push_str(rest);
    Some(Fingerprint {
        key,
        literals,
        sentinel_sql,
    })
}

/// A rewritten text with holes where the literals go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
    literals: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Literal(usize),
}

// === impl Template ===

impl Template {
    /// Find the sentinels of `literals` literals in `rewritten`.
    ///
    /// # Returns
    /// `None` when a sentinel cannot be told apart from surrounding text.
    pub fn from_rewritten(rewritten: &str, literals: &[&str]) -> Option<Template> {
        let mut marks: Vec<(usize, usize, usize)> = Vec::new();
        for (n, lit) in literals.iter().enumerate() {
            let needle = sentinel(n, lit);
            let mut from = 0;
            while let Some(at) = rewritten[from..].find(&needle).map(|p| from + p) {
                let end = at + needle.len();
                let b = rewritten.as_bytes();
                if !lit.starts_with('\'')
                    && (at > 0 && is_ident_byte(b[at - 1])
                        || b.get(end).is_some_and(|&c| is_ident_byte(c)))
                {
                    return None;
                }
                marks.push((at, end, n));
                from = end;
            }
        }
        marks.sort_unstable();
        let mut parts = Vec::with_capacity(marks.len() * 2 + 1);
        let mut at = 0;
        for (s, e, n) in marks {
            if s < at {
                return None;
            }
            parts.push(Part::Text(rewritten.get(at..s)?.to_owned()));
            parts.push(Part::Literal(n));
            at = e;
        }
        parts.push(Part::Text(rewritten.get(at..)?.to_owned()));
        Some(Template {
            parts,
            literals: literals.len(),
        })
    }

    /// The rewritten text for these literals.
    pub fn fill(&self, literals: &[&str]) -> Option<String> {
        if literals.len() != self.literals {
            return None;
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Literal(n) => out.push_str(literals.get(*n)?),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_and_keyed_by_kind() {
        let f = fingerprint("SELECT 1, 'a''b', x1, $1, \"q'\", 2.5e3 -- 'c'\n FROM t WHERE e = E'\\'' AND d = $$x'$$").unwrap();
        assert_eq!(f.literals, ["1", "'a''b'", "2.5e3"]);
        assert_eq!(f.key, "SELECT \u{2}, \u{1}, x1, $1, \"q'\", \u{2} -- 'c'\n FROM t WHERE e = E'\\'' AND d = $$x'$$");
        let g = fingerprint(
            "SELECT 7, 'zz', x1, $1, \"q'\", 1 -- 'c'\n FROM t WHERE e = E'\\'' AND d = $$x'$$",
        )
        .unwrap();
        assert_eq!(f.key, g.key);
    }

    #[test]
    fn template_round_trip_with_repeated_literals() {
        let f = fingerprint("INSERT INTO t (a, b) VALUES ('x', 10)").unwrap();
        let rewritten = f
            .sentinel_sql
            .replace(')', &format!(", {})", sentinel(0, "'")));
        let t = Template::from_rewritten(&rewritten, &f.literals).unwrap();
        assert_eq!(
            t.fill(&["'y'", "20"]).unwrap(),
            "INSERT INTO t (a, b, 'y') VALUES ('y', 20, 'y')"
        );
        assert!(t.fill(&["'y'"]).is_none());
    }

    #[test]
    fn open_quotes_and_comments_are_not_fingerprinted() {
        for s in [
            "UPDATE t SET a = ' x WHERE b = $1",
            "SELECT \"a FROM t",
            "SELECT 1 /* open",
            "SELECT $q$ open",
            "SELECT E'\\",
        ] {
            assert!(fingerprint(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn odd_text_does_not_panic() {
        for s in [
            "'", "$", "$a", "$a$", "1.", "1e", "1e+", "/*", "--", "\"", "é'x'", "E'\\", "0x1F",
        ] {
            let _ = fingerprint(s);
        }
    }
}
