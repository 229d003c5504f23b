//! Rules as `pgshim.rules` stores them: one row per rule, its `[[rule]]` table
//! as TOML and its phase in a column of its own, so `flip` changes the phase
//! without rewriting the text (the column wins over a `phase` key in it).
use super::RulesError;
use crate::rewrite::{RuleConfig, RuleSet};

/// One rule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// The rule's id.
    pub id: String,
    /// Its `[[rule]]` table as TOML.
    pub toml: String,
    /// Its phase (wins over a `phase` key in `toml`).
    pub phase: String,
}

/// The table's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The counter every write bumps.
    pub version: u64,
    /// The rules, in the order pushed.
    pub rules: Vec<StoredRule>,
}

// === impl StoredRule ===

impl StoredRule {
    /// The rule's config, with the phase column in force.
    ///
    /// # Errors
    /// Why the stored text is not a `[[rule]]` table.
    pub fn config(&self) -> Result<RuleConfig, String> {
        let mut table: toml::Table = toml::from_str(&self.toml)
            .map_err(|e| format!("rule {} in pgshim.rules is not TOML: {e}", self.id))?;
        table.insert("phase".into(), toml::Value::String(self.phase.clone()));
        toml::Value::Table(table)
            .try_into()
            .map_err(|e| format!("rule {} in pgshim.rules is not a valid rule: {e}", self.id))
    }
}

// === impl Stored ===

impl Stored {
    /// Every rule's config, phases from the phase column.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the rule whose text cannot be read.
    pub fn configs(&self) -> Result<Vec<RuleConfig>, RulesError> {
        self.rules
            .iter()
            .map(|r| r.config().map_err(RulesError::Invalid))
            .collect()
    }

    /// The rules, validated as a file reload validates them.
    ///
    /// # Errors
    /// [`RulesError::Invalid`] naming the rule and the problem.
    pub fn rule_set(&self) -> Result<RuleSet, RulesError> {
        RuleSet::from_configs(&self.configs()?)
            .map_err(|e| RulesError::Invalid(format!("the rules in pgshim.rules are invalid: {e}")))
    }
}

/// The `[[rule]]` tables of a config file's text, validated, as rows to push.
///
/// # Errors
/// Why the text or one of its rules is invalid.
pub fn from_file_text(text: &str) -> Result<Vec<StoredRule>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let tables: Vec<toml::Table> = match doc.get("rule") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::Table(t) => Ok(t.clone()),
                _ => Err("`rule` must be an array of tables ([[rule]])".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`rule` must be an array of tables ([[rule]])".into()),
    };
    let configs: Vec<RuleConfig> = tables
        .iter()
        .map(|t| toml::Value::Table(t.clone()).try_into())
        .collect::<Result<_, toml::de::Error>>()
        .map_err(|e| e.to_string())?;
    let set = RuleSet::from_configs(&configs).map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(tables.len());
    for ((table, config), rule) in tables.iter().zip(&configs).zip(set.rules()) {
        let mut table = table.clone();
        table.remove("phase");
        rows.push(StoredRule {
            id: rule.id.clone(),
            toml: toml::to_string(&table).map_err(|e| e.to_string())?,
            phase: config.phase.clone(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "listen = \"127.0.0.1:6432\"\n\
        [[rule]]\nid = \"r1\"\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"expand\"\n\
        [[rule]]\ntable = \"u\"\nold = [\"x\", \"y\"]\nnew = \"z\"\nphase = \"migrate\"\n\
        to_new = { z = \"x || y\" }\nto_old = { x = \"z\", y = \"z\" }\n";

    #[test]
    fn file_rules_round_trip_with_the_phase_column_in_force() {
        let rows = from_file_text(FILE).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "u.x"]);
        assert_eq!(rows[1].phase, "migrate");
        assert!(!rows[0].toml.contains("phase"), "{}", rows[0].toml);
        let mut stored = Stored {
            version: 3,
            rules: rows,
        };
        stored.rules[0].phase = "migrate".into();
        let set = stored.rule_set().unwrap();
        assert_eq!(set.rules()[0].phase.name(), "migrate");
        assert_eq!(set.rules()[1].new, ["z"]);
    }

    #[test]
    fn invalid_rules_are_refused_naming_them() {
        let err = from_file_text(
            "[[rule]]\ntable = \"t\"\nold = \"a\"\nnew = \"b\"\nphase = \"sideways\"\n",
        )
        .unwrap_err();
        assert!(err.contains("sideways"), "{err}");
        let stored = Stored {
            version: 1,
            rules: vec![StoredRule {
                id: "bad".into(),
                toml: "table = 3".into(),
                phase: "expand".into(),
            }],
        };
        let err = stored.rule_set().unwrap_err().to_string();
        assert!(err.contains("rule bad"), "{err}");
        assert!(from_file_text("").unwrap().is_empty());
    }
}
