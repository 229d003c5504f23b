//! Identifier normalisation, in one place, the way Postgres does it.
//!
//! Unquoted identifiers fold to lower case (ASCII only, as Postgres does for UTF-8), quoted
//! ones are kept as written. Every name the rewriter compares (rule columns, catalog names,
//! names in statements) goes through here, so comparisons are plain string equality.

use std::borrow::Cow;

use sqlparser::ast::Ident;

/// Keywords that cannot stand as a bare column or table name (Postgres's reserved and
/// type/function-name keywords). Generated SQL quotes these.
const NEEDS_QUOTES: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// The name Postgres would look up for `ident`.
pub(crate) fn normalize(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// Render `name` so Postgres reads it back as exactly `name`.
pub(crate) fn quote(name: &str) -> Cow<'_, str> {
    let mut chars = name.chars();
    let simple = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if simple && !NEEDS_QUOTES.contains(&name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("\"{}\"", name.replace('"', "\"\"")))
    }
}

/// Split a dotted name from the config (`schema.table`, `"Odd"."Name"`) into normalised
/// parts.
///
/// # Errors
/// A message when the text is not a dotted list of identifiers.
pub(crate) fn parse_dotted(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("unterminated quoted identifier in {text:?}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c.is_whitespace() {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            let valid = part
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
            if !valid {
                return Err(format!("{text:?} is not a valid identifier"));
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(_) => return Err(format!("{text:?} is not a valid identifier")),
        }
    }
}

/// A single identifier from the config (a column name).
///
/// # Errors
/// A message when the text is not exactly one identifier.
pub(crate) fn parse_single(text: &str) -> Result<String, String> {
    let mut parts = parse_dotted(text)?;
    match (parts.pop(), parts.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(format!("{text:?} must be a single column name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_folds_quoted_kept() {
        assert_eq!(normalize(&Ident::new("UsErS")), "users");
        assert_eq!(normalize(&Ident::with_quote('"', "UsErS")), "UsErS");
    }

    #[test]
    fn quote_only_when_needed() {
        assert_eq!(quote("full_name"), "full_name");
        assert_eq!(quote("Full"), "\"Full\"");
        assert_eq!(quote("order"), "\"order\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("1a"), "\"1a\"");
    }

    #[test]
    fn dotted_names_from_config() {
        assert_eq!(parse_dotted("Sales.Users").unwrap(), ["sales", "users"]);
        assert_eq!(parse_dotted("\"My\"\"T\".x").unwrap(), ["My\"T", "x"]);
        assert!(parse_dotted("a..b").is_err());
        assert!(parse_dotted("a b").is_err());
        assert!(parse_dotted("\"open").is_err());
        assert!(parse_single("a.b").is_err());
    }
}
