//! Which rule, table and database an operation works on, and the connection to it.
//!
//! Operations log in as pgshim itself (`[upstream] user`, `password_env`), over the same
//! TLS policy as the proxy, so they need no credentials of their own.
use tokio_postgres::Client;

use super::error::OpsError;
use crate::config::Config;
use crate::net::upstream::Upstream;
use crate::rewrite::{ColumnInfo, Rule, RuleSet, TableInfo};

/// A rule and the database to apply it in.
#[derive(Debug, Clone)]
pub struct Target {
    /// The validated rule.
    pub rule: Rule,
    /// The database holding its table.
    pub database: String,
}

/// The columns of a table, read with an operation's own connection.
const COLUMNS_SQL: &str = "\
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attnum";

// === impl Target ===

impl Target {
    /// Finds rule `rule_id` in `config` and decides the database: the rule's own
    /// `database`, else `database`.
    ///
    /// # Errors
    /// Invalid rules, an unknown id, no database, or a `--database` that contradicts the rule.
    pub fn resolve(
        config: &Config,
        rule_id: &str,
        database: Option<&str>,
    ) -> Result<Target, OpsError> {
        let rules = RuleSet::from_configs(&config.rule)?;
        let rule = rules
            .rules()
            .iter()
            .find(|r| r.id == rule_id)
            .cloned()
            .ok_or_else(|| OpsError::UnknownRule {
                id: rule_id.to_owned(),
                known: known_ids(&rules),
            })?;
        let database = pick_database(&rule, database)?;
        Ok(Target { rule, database })
    }

    /// Connects to the target database as pgshim's own login.
    ///
    /// # Errors
    /// [`OpsError::Catalog`] when the login is not configured or refused.
    pub async fn connect(&self, config: &Config) -> Result<Client, OpsError> {
        let upstream = Upstream::from_config(&config.upstream)?;
        let client =
            crate::introspect::connect(&config.upstream, &upstream, &self.database).await?;
        // Operations run idempotent DDL (`CREATE ... IF NOT EXISTS`) on every run; the
        // NOTICEs it draws ("already exists, skipping") would reach the operator as
        // log lines. Warnings and errors still come through.
        client
            .batch_execute("SET client_min_messages = warning")
            .await
            .map_err(OpsError::db("configuring pgshim's connection"))?;
        Ok(client)
    }

    /// `"schema"."table"`.
    pub fn table_sql(&self) -> String {
        super::sql::table(&self.rule.schema, &self.rule.table)
    }

    /// Reads the table's columns.
    ///
    /// # Errors
    /// [`OpsError::MissingTable`] when it does not exist; [`OpsError::Db`] on failure.
    pub async fn table_info(&self, client: &Client) -> Result<TableInfo, OpsError> {
        let rows = client
            .query(COLUMNS_SQL, &[&self.rule.schema, &self.rule.table])
            .await
            .map_err(OpsError::db("reading the table's columns"))?;
        if rows.is_empty() {
            return Err(OpsError::MissingTable {
                rule: self.rule.id.clone(),
                table: self.rule.qualified_table(),
                database: self.database.clone(),
            });
        }
        let columns = rows
            .iter()
            .map(|r| ColumnInfo {
                name: r.get(0),
                type_sql: r.get(1),
                not_null: r.get(2),
                has_default: r.get(3),
            })
            .collect();
        Ok(TableInfo {
            schema: self.rule.schema.clone(),
            name: self.rule.table.clone(),
            columns,
        })
    }

    /// Fails unless the table has every old and new column of the rule.
    ///
    /// # Errors
    /// [`OpsError::MissingColumns`] naming what is missing and what to do.
    pub fn require_both_shapes(&self, info: &TableInfo) -> Result<(), OpsError> {
        let missing = missing_columns(&self.rule, info);
        if missing.is_empty() {
            return Ok(());
        }
        Err(OpsError::MissingColumns {
            rule: self.rule.id.clone(),
            table: self.rule.qualified_table(),
            missing: missing.join(", "),
            hint: "both shapes must exist: add the new columns first (`pgshim plan RULE --phase expand --apply`); once the old ones are dropped there is nothing left to fill or compare",
        })
    }
}

/// The rule's old and new columns the table lacks.
pub fn missing_columns<'r>(rule: &'r Rule, info: &TableInfo) -> Vec<&'r str> {
    rule.old
        .iter()
        .chain(&rule.new)
        .filter(|c| info.column(c).is_none())
        .map(String::as_str)
        .collect()
}

fn known_ids(rules: &RuleSet) -> String {
    if rules.is_empty() {
        return "none".into();
    }
    let ids: Vec<&str> = rules.rules().iter().map(|r| r.id.as_str()).collect();
    ids.join(", ")
}

fn pick_database(rule: &Rule, asked: Option<&str>) -> Result<String, OpsError> {
    match (&rule.database, asked) {
        (Some(own), Some(asked)) if own != asked => Err(OpsError::Usage(format!(
            "rule {} applies only to database {own:?}, but --database {asked:?} was given: drop --database or fix the rule",
            rule.id
        ))),
        (Some(own), _) => Ok(own.clone()),
        (None, Some(asked)) => Ok(asked.to_owned()),
        (None, None) => Err(OpsError::NoDatabase {
            rule: rule.id.clone(),
        }),
    }
}
