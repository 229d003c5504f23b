//! Validated column-mapping rules and the phase each one is in.
//!
//! A [`Rule`] is a [`RuleConfig`] that passed every check that needs no database: known
//! phase, parseable transforms over the other shape's columns, no overlap with another rule.
//! [`RuleSet::check_catalog`] adds the checks that need the physical schema.

use std::collections::BTreeSet;
use std::fmt;

use super::catalog::Catalog;
use super::ident::{parse_dotted, parse_single};
use super::rule_config::RuleConfig;
use super::transform::TransformTemplate;

/// Where a migration stands; see the semantics table in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// O is the source of truth; writes also fill N.
    Expand,
    /// N is the source of truth, falling back to O for rows that have not migrated.
    Migrate,
    /// N only; O may be dropped.
    Contract,
}

/// Which side of a rule a column is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Old,
    New,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name used in errors, logs and metrics.
    pub id: String,
    /// Database the rule is limited to, if any.
    pub database: Option<String>,
    /// Normalised schema name (`public` when the config gave none).
    pub schema: String,
    /// Normalised table name.
    pub table: String,
    /// Normalised old columns, in config order.
    pub old: Vec<String>,
    /// Normalised new columns, in config order.
    pub new: Vec<String>,
    /// The rule's phase.
    pub phase: Phase,
    /// Lets the phase guard allow a jump of two phases (expand <-> contract).
    pub force: bool,
    /// `to_new[i]` computes `new[i]` from the old columns.
    pub(crate) to_new: Vec<TransformTemplate>,
    /// `to_old[i]` computes `old[i]` from the new columns.
    pub(crate) to_old: Vec<TransformTemplate>,
}

/// A query whose description tells what type a rule's transform computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformProbe {
    /// The mapped table's schema.
    pub schema: String,
    /// The mapped table.
    pub table: String,
    /// The column whose values the transform computes.
    pub column: String,
    /// The query to describe.
    pub sql: String,
    /// A statement that assigns the transform to its column, prepared (never run)
    /// to check that the column can hold what the transform computes.
    pub assign_sql: String,
    /// The columns the transform reads.
    pub reads: Vec<String>,
}

/// The active rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Lower-cased table names, for the byte prefilter.
    pub(crate) needles: Vec<Vec<u8>>,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The rule itself is wrong.
    #[error("invalid rule {rule}: {problem}")]
    Invalid {
        /// The rule's id.
        rule: String,
        /// What is wrong.
        problem: String,
    },
    /// Two rules map the same column.
    #[error("rules {first} and {second} overlap: both map column {column} of {table}")]
    Overlap {
        /// The earlier rule's id.
        first: String,
        /// The later rule's id.
        second: String,
        /// `schema.table`.
        table: String,
        /// The shared column.
        column: String,
    },
    /// The physical schema cannot serve the rule's phase.
    #[error("rule {rule} cannot run in phase {phase}: table {table} lacks column(s) {missing}")]
    MissingColumns {
        /// The rule's id.
        rule: String,
        /// The rule's phase.
        phase: Phase,
        /// `schema.table`.
        table: String,
        /// Comma-separated missing columns.
        missing: String,
    },
    /// A transform computes values its column cannot hold.
    #[error("rule {rule}: the transform for column {column} of {table} does not fit the column: {reason}; fix the transform (cast it to the column's type)")]
    TransformType {
        /// The rule's id.
        rule: String,
        /// `schema.table`.
        table: String,
        /// The column the transform computes.
        column: String,
        /// What Postgres said.
        reason: String,
    },
    /// The mapped table does not exist.
    #[error("rule {rule}: table {table} not found in the catalog")]
    MissingTable {
        /// The rule's id.
        rule: String,
        /// `schema.table`.
        table: String,
    },
}

// === impl Phase ===

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Phase, String> {
        match s {
            "expand" => Ok(Phase::Expand),
            "migrate" => Ok(Phase::Migrate),
            "contract" => Ok(Phase::Contract),
            other => Err(format!(
                "unknown phase {other:?} (expected expand, migrate or contract)"
            )),
        }
    }
}

impl Phase {
    /// 0 for expand, 1 for migrate, 2 for contract: the `pgshim_rule_phase`
    /// gauge, and how many steps separate two phases.
    pub fn rank(self) -> u8 {
        match self {
            Phase::Expand => 0,
            Phase::Migrate => 1,
            Phase::Contract => 2,
        }
    }

    /// The phase's name, as in the config and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Migrate => "migrate",
            Phase::Contract => "contract",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Rule ===

impl Rule {
    fn from_config(cfg: &RuleConfig) -> Result<Rule, RuleError> {
        let first_old = cfg.old.as_slice().first().cloned().unwrap_or_default();
        let id = cfg
            .id
            .clone()
            .unwrap_or_else(|| format!("{}.{}", cfg.table, first_old));
        let invalid = |problem: String| RuleError::Invalid {
            rule: id.clone(),
            problem,
        };
        let phase = cfg.phase.parse::<Phase>().map_err(invalid)?;
        let (schema, table) = match parse_dotted(&cfg.table)
            .map_err(|e| invalid(format!("table: {e}")))?
            .as_slice()
        {
            [t] => ("public".to_owned(), t.clone()),
            [s, t] => (s.clone(), t.clone()),
            _ => {
                return Err(invalid(format!(
                    "table {:?} must be \"table\" or \"schema.table\"",
                    cfg.table
                )))
            }
        };
        let old = columns(cfg.old.as_slice(), "old").map_err(invalid)?;
        let new = columns(cfg.new.as_slice(), "new").map_err(invalid)?;
        if let Some(both) = old.iter().find(|c| new.contains(c)) {
            return Err(invalid(format!("column {both} is both old and new")));
        }
        let to_new = transforms(&cfg.to_new, &new, &old, "to_new", "old").map_err(invalid)?;
        let to_old = transforms(&cfg.to_old, &old, &new, "to_old", "new").map_err(invalid)?;
        Ok(Rule {
            id,
            database: cfg.database.clone(),
            schema,
            table,
            old,
            new,
            phase,
            force: cfg.force,
            to_new,
            to_old,
        })
    }

    /// `schema.table`, for messages.
    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Which side `column` is on, if the rule maps it.
    pub(crate) fn side_of(&self, column: &str) -> Option<(Side, usize)> {
        if let Some(i) = self.old.iter().position(|c| c == column) {
            return Some((Side::Old, i));
        }
        self.new
            .iter()
            .position(|c| c == column)
            .map(|i| (Side::New, i))
    }

    /// The transform that computes `column` from the other side.
    pub(crate) fn transform(&self, side: Side, index: usize) -> Option<&TransformTemplate> {
        match side {
            Side::Old => self.to_old.get(index),
            Side::New => self.to_new.get(index),
        }
    }

    /// The columns of one side.
    pub(crate) fn side(&self, side: Side) -> &[String] {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    fn applies_to(&self, database: &str) -> bool {
        self.database.as_deref().is_none_or(|d| d == database)
    }

    fn shares_scope(&self, other: &Rule) -> bool {
        let dbs = match (&self.database, &other.database) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        dbs && self.schema == other.schema && self.table == other.table
    }
}

fn columns(raw: &[String], what: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err(format!("{what} lists no column"));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for c in raw {
        let c = parse_single(c).map_err(|e| format!("{what}: {e}"))?;
        if out.contains(&c) {
            return Err(format!("{what} lists column {c} twice"));
        }
        out.push(c);
    }
    Ok(out)
}

fn transforms(
    given: &std::collections::BTreeMap<String, String>,
    targets: &[String],
    sources: &[String],
    key: &str,
    source_side: &str,
) -> Result<Vec<TransformTemplate>, String> {
    for name in given.keys() {
        let norm = parse_single(name).map_err(|e| format!("{key}: {e}"))?;
        if !targets.contains(&norm) {
            return Err(format!(
                "{key} has an entry for {name}, which is not a column of the other shape"
            ));
        }
    }
    let lookup = |target: &str| {
        given
            .iter()
            .find(|(k, _)| parse_single(k).is_ok_and(|k| k == target))
    };
    let mut out = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        let template = match lookup(target) {
            Some((_, text)) => {
                TransformTemplate::parse(text).map_err(|e| format!("{key}.{target} {e}"))?
            }
            None if targets.len() == sources.len() => TransformTemplate::identity(&sources[i]),
            None => {
                return Err(format!(
                    "{key}.{target} is required when old and new differ in length"
                ))
            }
        };
        if let Some(bad) = template.columns().find(|c| !sources.iter().any(|s| s == c)) {
            return Err(format!(
                "{key}.{target} references {bad}, which is not an {source_side} column"
            ));
        }
        out.push(template);
    }
    Ok(out)
}

// === impl RuleSet ===

impl RuleSet {
    /// Validate rule configs.
    ///
    /// # Errors
    /// The first problem found, naming the rule: unknown phase, a transform that does not
    /// parse or reads a column not in the other shape, duplicate ids, overlapping rules.
    pub fn from_configs(configs: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(configs.len());
        for cfg in configs {
            let rule = Rule::from_config(cfg)?;
            for earlier in &rules {
                if earlier.id == rule.id {
                    return Err(RuleError::Invalid {
                        rule: rule.id,
                        problem: "duplicate rule id".into(),
                    });
                }
                if !earlier.shares_scope(&rule) {
                    continue;
                }
                let mine = rule.old.iter().chain(&rule.new);
                if let Some(column) = mine.into_iter().find(|c| earlier.side_of(c).is_some()) {
                    return Err(RuleError::Overlap {
                        first: earlier.id.clone(),
                        second: rule.id.clone(),
                        table: rule.qualified_table(),
                        column: column.clone(),
                    });
                }
            }
            rules.push(rule);
        }
        Ok(RuleSet::from_rules(rules))
    }

    fn from_rules(rules: Vec<Rule>) -> RuleSet {
        let needles: BTreeSet<Vec<u8>> = rules
            .iter()
            .map(|r| r.table.to_ascii_lowercase().into_bytes())
            .collect();
        RuleSet {
            rules,
            needles: needles.into_iter().collect(),
        }
    }

    /// Check each rule against the physical schema: expand and migrate need both shapes,
    /// contract needs the new columns.
    ///
    /// # Errors
    /// The first rule that cannot run, naming its table and the missing columns.
    pub fn check_catalog(&self, catalog: &Catalog) -> Result<(), RuleError> {
        for rule in &self.rules {
            let Some(table) = catalog.table(&rule.schema, &rule.table) else {
                return Err(RuleError::MissingTable {
                    rule: rule.id.clone(),
                    table: rule.qualified_table(),
                });
            };
            let needed: Vec<&String> = match rule.phase {
                Phase::Expand | Phase::Migrate => rule.old.iter().chain(&rule.new).collect(),
                Phase::Contract => rule.new.iter().collect(),
            };
            let missing: Vec<&str> = needed
                .into_iter()
                .filter(|c| table.column(c).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(RuleError::MissingColumns {
                    rule: rule.id.clone(),
                    phase: rule.phase,
                    table: rule.qualified_table(),
                    missing: missing.join(", "),
                });
            }
            for column in rule.old.iter().chain(&rule.new) {
                if let Some(reason) = catalog.type_error(&rule.schema, &rule.table, column) {
                    return Err(RuleError::TransformType {
                        rule: rule.id.clone(),
                        table: rule.qualified_table(),
                        column: column.clone(),
                        reason: reason.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `(schema, table)` pairs the proxy must read from the catalog.
    pub fn tables(&self) -> Vec<(String, String)> {
        let set: BTreeSet<(String, String)> = self
            .rules
            .iter()
            .map(|r| (r.schema.clone(), r.table.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// The rules that apply to `database` (rules without `database` apply everywhere).
    pub fn for_database(&self, database: &str) -> RuleSet {
        RuleSet::from_rules(
            self.rules
                .iter()
                .filter(|r| r.applies_to(database))
                .cloned()
                .collect(),
        )
    }

    /// These rules less those for every database (no `database` key) whose
    /// table `catalog` does not have: in a database without the table such a
    /// rule has nothing to rewrite, and refusing statements there would
    /// refuse the `CREATE TABLE` of a new database (a test database, say).
    /// A rule naming its database is kept, so its check fails loudly.
    pub fn present_in(&self, catalog: &Catalog) -> RuleSet {
        RuleSet::from_rules(
            self.rules
                .iter()
                .filter(|r| r.database.is_some() || catalog.table(&r.schema, &r.table).is_some())
                .cloned()
                .collect(),
        )
    }

    /// These rules less those in `other` (by id).
    pub fn without(&self, other: &RuleSet) -> RuleSet {
        RuleSet::from_rules(
            self.rules
                .iter()
                .filter(|r| !other.rules.iter().any(|o| o.id == r.id))
                .cloned()
                .collect(),
        )
    }

    /// All rules, in config order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule maps `schema.table`.
    pub(crate) fn maps_table(&self, schema: &str, table: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.schema == schema && r.table == table)
    }

    /// One query per transform, `SELECT <transform> FROM <table> LIMIT 0`, whose
    /// description gives the type of the values the transform computes.
    pub fn transform_probes(&self) -> Vec<TransformProbe> {
        let mut probes = Vec::new();
        for rule in &self.rules {
            for side in [Side::Old, Side::New] {
                for (index, column) in rule.side(side).iter().enumerate() {
                    let Some(template) = rule.transform(side, index) else {
                        continue;
                    };
                    let mut reads = Vec::new();
                    let expr = template.render_text(&mut |c| {
                        reads.push(c.to_owned());
                        super::ident::quote(c).into_owned()
                    });
                    let table = format!(
                        "{}.{}",
                        super::ident::quote(&rule.schema),
                        super::ident::quote(&rule.table)
                    );
                    probes.push(TransformProbe {
                        schema: rule.schema.clone(),
                        table: rule.table.clone(),
                        column: column.clone(),
                        sql: format!("SELECT {expr} FROM {table} LIMIT 0"),
                        assign_sql: format!(
                            "UPDATE {table} SET {} = {expr} WHERE false",
                            super::ident::quote(column)
                        ),
                        reads,
                    });
                }
            }
        }
        probes
    }

    /// Whether some rule maps a table named `table` in any schema.
    pub(crate) fn maps_table_anywhere(&self, table: &str) -> bool {
        self.rules.iter().any(|r| r.table == table)
    }

    /// The rules on `schema.table`.
    pub(crate) fn on_table<'a>(
        &'a self,
        schema: &'a str,
        table: &'a str,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.schema == schema && r.table == table)
    }

    /// The rule mapping `column` of `schema.table`, with the column's side and index.
    pub(crate) fn rule_for(
        &self,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Option<(&Rule, Side, usize)> {
        self.rules
            .iter()
            .filter(|r| r.schema == schema && r.table == table)
            .find_map(|r| r.side_of(column).map(|(s, i)| (r, s, i)))
    }
}

// === impl Rule: SQL for the migration operations (backfill, verify, plan) ===

impl Rule {
    /// The old column `new[index]` is a plain copy of, when its `to_new` is one column.
    pub fn to_new_identity(&self, index: usize) -> Option<&str> {
        self.to_new.get(index)?.identity_column()
    }

    /// `to_new` of new column `index`, with each old column written as
    /// `fill` says.
    pub fn to_new_with(
        &self,
        index: usize,
        fill: &mut dyn FnMut(&str) -> String,
    ) -> Option<String> {
        self.to_new.get(index).map(|t| t.render_text(fill))
    }

    /// The old columns `to_new` of `new[index]` reads (each once, in first-use order).
    pub fn to_new_sources(&self, index: usize) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in self
            .to_new
            .get(index)
            .into_iter()
            .flat_map(TransformTemplate::columns)
        {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
