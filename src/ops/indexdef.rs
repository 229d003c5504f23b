//! Rewriting an index definition from `pg_get_indexdef` to cover new columns instead of
//! old ones: a small scanner over its identifiers, so string literals in a predicate and
//! the index and table names before `USING` are never touched.

/// One identifier in the text: byte range and the name Postgres reads.
struct Word {
    start: usize,
    end: usize,
    name: String,
}

/// Identifiers (bare or double-quoted) in `text`, skipping string literals.
fn words(text: &str) -> Vec<Word> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else if bytes[i] == b'\'' {
                    break;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == b'"' {
            let start = i;
            let mut name = String::new();
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'"' && bytes.get(i + 1) == Some(&b'"') {
                    name.push('"');
                    i += 2;
                } else if bytes[i] == b'"' {
                    break;
                } else {
                    let ch = text[i..].chars().next().unwrap_or('"');
                    name.push(ch);
                    i += ch.len_utf8();
                }
            }
            i += 1;
            out.push(Word {
                start,
                end: i.min(bytes.len()),
                name,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || matches!(bytes[i], b'_' | b'$')
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Word {
                start,
                end: i,
                name: text[start..i].to_ascii_lowercase(),
            });
        } else {
            i += 1;
        }
    }
    out
}

/// The part of an index definition after ` USING `: method, keys, INCLUDE, predicate.
fn body_start(def: &str) -> usize {
    def.find(" USING ").unwrap_or(0)
}

/// Old columns (of `old`) the index definition reads.
pub fn columns_used<'a>(def: &str, old: &'a [String]) -> Vec<&'a str> {
    let from = body_start(def);
    let mut used: Vec<&str> = Vec::new();
    for w in words(def).into_iter().filter(|w| w.start >= from) {
        if let Some(o) = old.iter().find(|o| **o == w.name) {
            if !used.contains(&o.as_str()) {
                used.push(o);
            }
        }
    }
    used
}

/// `def` with the index renamed to `new_name` (already quoted), `CONCURRENTLY IF NOT
/// EXISTS` added, and every reference to `old[i]` after `USING` replaced by `new[i]`
/// (already quoted).
pub fn rewrite(def: &str, new_name: &str, old: &[String], new: &[String]) -> Option<String> {
    let from = body_start(def);
    let on = def.find(" ON ")?;
    let unique = def.starts_with("CREATE UNIQUE INDEX");
    let mut out = format!(
        "CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {new_name}",
        if unique { "UNIQUE " } else { "" }
    );
    let mut at = on;
    for w in words(def).into_iter().filter(|w| w.start >= from) {
        if let Some(i) = old.iter().position(|o| *o == w.name) {
            out.push_str(&def[at..w.start]);
            out.push_str(new.get(i)?);
            at = w.end;
        }
    }
    out.push_str(&def[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_after_using_only_and_never_in_literals() {
        let def = "CREATE INDEX name_idx ON public.name USING btree (lower(name)) WHERE (name <> 'name'::text)";
        assert_eq!(columns_used(def, &v(&["name"])), ["name"]);
        let out = rewrite(
            def,
            "\"full_name_idx\"",
            &v(&["name"]),
            &v(&["\"full_name\""]),
        )
        .unwrap();
        assert_eq!(
            out,
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"full_name_idx\" ON public.name USING btree (lower(\"full_name\")) WHERE (\"full_name\" <> 'name'::text)"
        );
    }

    #[test]
    fn unique_and_quoted_columns() {
        let def = "CREATE UNIQUE INDEX u ON public.t USING btree (\"Mixed\", id) INCLUDE (x)";
        assert_eq!(columns_used(def, &v(&["Mixed", "x"])), ["Mixed", "x"]);
        let out = rewrite(def, "u2", &v(&["Mixed"]), &v(&["\"new\""])).unwrap();
        assert!(out.starts_with("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS u2 ON public.t"));
        assert!(out.contains("(\"new\", id)"), "{out}");
    }
}
