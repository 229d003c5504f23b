//! Which schema an unqualified table name means: the first schema of the
//! session's `search_path` that has a relation of that name, as Postgres
//! resolves it. A temporary table the session created shadows every schema.
//!
//! The session learns its search path from Postgres (see the session core),
//! so role and database defaults, `options`, `SET`, `SET LOCAL`, `RESET` and
//! `set_config()` are all followed; a `SET search_path` inside one statement
//! text applies to the statements after it in that text.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use sqlparser::ast::{Expr, Set, Statement, Value};

use super::catalog::Catalog;
use super::ident::normalize;

/// A session's search path, and the temporary tables it created that share
/// a name with a mapped table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchPath {
    schemas: Arc<[String]>,
    temp: Arc<[String]>,
    key: u64,
}

static DEFAULT: LazyLock<SearchPath> =
    LazyLock::new(|| SearchPath::new(vec!["public".into()], Vec::new()));

// === impl SearchPath ===

impl SearchPath {
    /// `schemas` in search order (as `current_schemas(false)` lists them),
    /// and the names of the session's temporary tables among mapped names.
    pub fn new(schemas: Vec<String>, temp: Vec<String>) -> SearchPath {
        let mut h = DefaultHasher::new();
        schemas.hash(&mut h);
        temp.hash(&mut h);
        SearchPath {
            schemas: schemas.into(),
            temp: temp.into(),
            key: h.finish(),
        }
    }

    /// `public` only: what a session sees before pgshim has asked.
    pub fn public() -> &'static SearchPath {
        &DEFAULT
    }

    /// A number that differs between different paths, for cache keys.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The schemas, in search order.
    pub fn schemas(&self) -> &[String] {
        &self.schemas
    }

    /// The schema that unqualified `table` resolves to, if it resolves to a
    /// table pgshim knows of; `None` for a temporary table or a name no
    /// schema on the path has.
    pub(crate) fn resolve(&self, table: &str, catalog: &Catalog) -> Option<String> {
        if self.temp.iter().any(|t| t == table) {
            return None;
        }
        self.schemas
            .iter()
            .find(|schema| catalog.has_relation(schema, table))
            .cloned()
    }

    /// The path a `SET search_path` statement puts in force, if `statement`
    /// is one with literal schema names.
    pub(crate) fn after(&self, statement: &Statement) -> Option<SearchPath> {
        let Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) = statement
        else {
            return None;
        };
        let name = variable.0.last()?.as_ident()?;
        if normalize(name) != "search_path" {
            return None;
        }
        let mut schemas = Vec::new();
        for value in values {
            let schema = match value {
                Expr::Identifier(ident) => normalize(ident),
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    _ => return None,
                },
                _ => return None,
            };
            // `$user` and the temporary schema need the server to say what
            // they are; names the server has not confirmed are kept as given.
            if schema != "$user" && !schema.starts_with("pg_temp") {
                schemas.push(schema);
            }
        }
        Some(SearchPath::new(schemas, self.temp.to_vec()))
    }
}

impl Default for SearchPath {
    fn default() -> SearchPath {
        SearchPath::public().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{ColumnInfo, TableInfo};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn catalog() -> Catalog {
        let table = |schema: &str| TableInfo {
            schema: schema.into(),
            name: "users".into(),
            columns: vec![ColumnInfo {
                name: "id".into(),
                type_sql: "integer".into(),
                not_null: false,
                has_default: false,
            }],
        };
        let mut c = Catalog::new(vec![table("app")]);
        c.set_relations(vec![
            ("app".into(), "users".into()),
            ("other".into(), "users".into()),
        ]);
        c
    }

    #[test]
    fn the_first_schema_with_the_table_wins() {
        let c = catalog();
        let path = SearchPath::new(vec!["app".into(), "public".into()], vec![]);
        assert_eq!(path.resolve("users", &c).as_deref(), Some("app"));
        let path = SearchPath::new(vec!["other".into(), "app".into()], vec![]);
        assert_eq!(path.resolve("users", &c).as_deref(), Some("other"));
        assert_eq!(SearchPath::public().resolve("users", &c), None);
        let temp = SearchPath::new(vec!["app".into()], vec!["users".into()]);
        assert_eq!(temp.resolve("users", &c), None);
    }

    #[test]
    fn set_search_path_in_a_text_applies_to_what_follows() {
        let parse = |sql: &str| Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let set = parse("SET search_path TO app, \"$user\", 'Other'");
        let after = SearchPath::public().after(&set[0]).unwrap();
        assert_eq!(after.schemas(), ["app", "Other"]);
        assert_ne!(after.key(), SearchPath::public().key());
        assert!(SearchPath::public()
            .after(&parse("SET work_mem = '4MB'")[0])
            .is_none());
    }
}
