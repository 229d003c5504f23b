//! The raw TOML shape of one `[[rule]]` table, exactly as the README documents it.
//!
//! Nothing is validated here beyond what serde checks (unknown keys are rejected) so that
//! [`RuleSet::from_configs`](super::rules::RuleSet::from_configs) can report every problem
//! together with the rule's id.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One `[[rule]]` table of `proxy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in logs, metrics and errors; defaults to `<table>.<first old column>`.
    pub id: Option<String>,
    /// Database the rule applies to; `None` means every database.
    pub database: Option<String>,
    /// `"users"` or `"schema.users"`; unqualified means schema `public`.
    pub table: String,
    /// The old shape's columns.
    pub old: OneOrMany,
    /// The new shape's columns.
    pub new: OneOrMany,
    /// `expand`, `migrate` or `contract`; checked later so the error can name the rule.
    pub phase: String,
    /// One SQL expression per new column, over the old columns.
    #[serde(default)]
    pub to_new: BTreeMap<String, String>,
    /// One SQL expression per old column, over the new columns.
    #[serde(default)]
    pub to_old: BTreeMap<String, String>,
    /// Lets an operator override the phase guard (a jump of two phases on reload).
    #[serde(default)]
    pub force: bool,
}

/// A TOML value that may be a single string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `old = "name"`
    One(String),
    /// `old = ["first_name", "last_name"]`
    Many(Vec<String>),
}

// === impl OneOrMany ===

impl OneOrMany {
    /// The columns as a slice, in the order written.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pinned_format() {
        let text = r#"
            id = "users-full-name"
            database = "app"
            table = "users"
            old = "name"
            new = ["first_name", "last_name"]
            phase = "expand"
            [to_new]
            first_name = "split_part(name, ' ', 1)"
            last_name = "split_part(name, ' ', 2)"
            [to_old]
            name = "concat_ws(' ', first_name, last_name)"
        "#;
        let rule: RuleConfig = toml::from_str(text).unwrap();
        assert_eq!(rule.old.as_slice(), ["name"]);
        assert_eq!(rule.new.as_slice(), ["first_name", "last_name"]);
        assert_eq!(rule.to_new.len(), 2);
        assert!(!rule.force);
    }

    #[test]
    fn rejects_unknown_keys() {
        let text = "table = 't'\nold = 'a'\nnew = 'b'\nphase = 'expand'\nbogus = 1\n";
        assert!(toml::from_str::<RuleConfig>(text).is_err());
    }
}
