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
    fn find_reports_first_match() {
        assert_eq!(find_ignore_ascii_case(b"abUSxusers", b"users"), Some(5));
        assert_eq!(find_ignore_ascii_case(b"ab", b"abc"), None);
    }
}
