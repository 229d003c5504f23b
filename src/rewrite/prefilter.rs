//! Byte-level prefilter: does a statement text possibly mention a mapped table?
//!
//! Most traffic touches no mapped table; it is forwarded byte for byte without parsing. The
//! check is a case-insensitive substring search for each mapped table name (a superset of
//! real mentions: `superusers` matches `users`, which only costs a parse). It allocates
//! nothing: `memchr2` finds candidate first bytes in either case, then the rest is compared
//! with `eq_ignore_ascii_case`.

use super::rules::RuleSet;

/// Whether `sql` may mention a table some rule maps.
///
/// # Returns
/// `false` means the text certainly does not name a mapped table, so the proxy can forward
/// it unparsed.
pub fn mentions_mapped_table(sql: &[u8], rules: &RuleSet) -> bool {
    rules
        .needles
        .iter()
        .any(|needle| contains_ignore_ascii_case(sql, needle))
        || unicode_identifiers_mention(sql, rules)
}

/// Whether a Unicode-escaped identifier (`U&"\0075sers"`) in `sql` may name a mapped
/// table: its bytes need not contain the name. Such an identifier names one when its
/// decoded text contains a table name, or when pgshim cannot decode it (`UESCAPE`, a
/// bad escape): the statement is then parsed, and refused, as sqlparser reads no
/// `U&` identifiers. Texts without `&` cost one `memchr` scan.
fn unicode_identifiers_mention(sql: &[u8], rules: &RuleSet) -> bool {
    !rules.needles.is_empty()
        && unicode_identifiers(sql).any(|decoded| match decoded {
            Some(text) => rules
                .needles
                .iter()
                .any(|needle| contains_ignore_ascii_case(text.as_bytes(), needle)),
            None => true,
        })
}

/// The decoded text of each `U&"…"` identifier in `sql` (`None` for one pgshim
/// cannot decode).
pub(crate) fn unicode_identifiers(sql: &[u8]) -> impl Iterator<Item = Option<String>> + '_ {
    // `&` is rare in SQL, `u` is not: look for the `&` of each `U&"`.
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let amp = from + memchr::memchr(b'&', sql.get(from..)?)?;
        from = amp + 1;
        let prefixed = amp > 0 && sql[amp - 1].eq_ignore_ascii_case(&b'u');
        if !prefixed || sql.get(amp + 1) != Some(&b'"') {
            continue;
        }
        return Some(match decode_unicode_identifier(sql, amp + 1) {
            Some((text, end)) => {
                from = end;
                Some(text)
            }
            None => {
                from = sql.len();
                None
            }
        });
    })
}

/// The text of the `U&` identifier whose opening quote is at `open`, decoded with the
/// default escape `\`, and the index just past its closing quote.
///
/// # Returns
/// `None` when it is unterminated, has an escape that is not `\\`, `\XXXX` or
/// `\+XXXXXX`, or is followed by `UESCAPE` (another escape character).
fn decode_unicode_identifier(sql: &[u8], open: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = open + 1;
    loop {
        match *sql.get(i)? {
            b'"' if sql.get(i + 1) == Some(&b'"') => {
                out.push(b'"');
                i += 2;
            }
            b'"' => break,
            b'\\' if sql.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            b'\\' => {
                let (digits, skip) = match sql.get(i + 1) {
                    Some(b'+') => (6, 2),
                    _ => (4, 1),
                };
                let hex = std::str::from_utf8(sql.get(i + skip..i + skip + digits)?).ok()?;
                let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += skip + digits;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let end = i + 1;
    let rest = &sql[end..];
    let next = rest.iter().position(|b| !b.is_ascii_whitespace());
    if next.is_some_and(|n| rest[n..].len() >= 7 && rest[n..n + 7].eq_ignore_ascii_case(b"uescape"))
    {
        return None;
    }
    Some((String::from_utf8_lossy(&out).into_owned(), end))
}

/// The index of the first case-insensitive occurrence of `needle` (lower-case) in `hay`.
pub(crate) fn find_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let at = from + memchr::memchr2(lo, up, &hay[from..=hay.len() - needle.len()])?;
        if hay[at + 1..at + needle.len()].eq_ignore_ascii_case(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    find_ignore_ascii_case(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::rule_config::{OneOrMany, RuleConfig};

    fn rules() -> RuleSet {
        RuleSet::from_configs(&[RuleConfig {
            id: None,
            database: None,
            table: "app.Users".into(),
            old: OneOrMany::One("name".into()),
            new: OneOrMany::One("full_name".into()),
            phase: "expand".into(),
            to_new: Default::default(),
            to_old: Default::default(),
            force: false,
        }])
        .unwrap()
    }

    #[test]
    fn matches_any_case_and_position() {
        let r = rules();
        assert!(mentions_mapped_table(b"select * from USERS", &r));
        assert!(mentions_mapped_table(b"users", &r));
        assert!(mentions_mapped_table(b"select 1 from app.\"users\" u", &r));
        assert!(mentions_mapped_table(b"xxusersxx", &r));
    }

    #[test]
    fn misses_texts_without_the_name() {
        let r = rules();
        assert!(!mentions_mapped_table(b"select * from orders", &r));
        assert!(!mentions_mapped_table(b"", &r));
        assert!(!mentions_mapped_table(b"user", &r));
        assert!(!mentions_mapped_table(b"u\xffsers", &r));
        assert!(!mentions_mapped_table(b"select 1", &RuleSet::default()));
    }

    #[test]
    fn sees_unicode_escaped_identifiers() {
        let r = rules();
        assert!(mentions_mapped_table(
            br#"select name from U&"\0075sers""#,
            &r
        ));
        assert!(mentions_mapped_table(
            br#"select 1 from u&"us\+000065rs" x"#,
            &r
        ));
        assert!(mentions_mapped_table(
            br#"select 1 from u&"a!0075" UESCAPE '!'"#,
            &r
        ));
        assert!(mentions_mapped_table(br#"select 1 from u&"\zz""#, &r));
        assert!(mentions_mapped_table(
            br#"select 1 from u&"unterminated"#,
            &r
        ));
        assert!(!mentions_mapped_table(
            br#"select 1 from U&"\0064\0061ta""#,
            &r
        ));
        assert!(!mentions_mapped_table(
            br#"select U&"a""b", U&"\\" from t"#,
            &r
        ));
    }

    #[test]
    fn find_reports_first_match() {
        assert_eq!(find_ignore_ascii_case(b"abUSxusers", b"users"), Some(5));
        assert_eq!(find_ignore_ascii_case(b"ab", b"abc"), None);
    }
}
