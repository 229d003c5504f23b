//! What the proxy reads from `pg_catalog` at startup for each mapped table.
//!
//! The rewriter needs the physical column order (for `*`, `INSERT` without a column list and
//! `COPY`) and each column's type (to type `VALUES` items the way a direct insert would).

use std::collections::{HashMap, HashSet};

/// One table's physical shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Schema name as stored in the catalog (already case-folded).
    pub schema: String,
    /// Table name as stored in the catalog.
    pub name: String,
    /// Columns in `attnum` order, dropped columns excluded.
    pub columns: Vec<ColumnInfo>,
}

/// One physical column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name as stored in the catalog.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(50)`.
    pub type_sql: String,
    /// `attnotnull`.
    pub not_null: bool,
    /// `atthasdef`.
    pub has_default: bool,
}

/// Lookup of [`TableInfo`] by `(schema, table)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    tables: HashMap<(String, String), TableInfo>,
    /// `(schema, table, column)` whose rule computes values of another type than the
    /// column's, as Postgres described the transform.
    retyped: HashSet<(String, String, String)>,
    /// `(schema, table, column)` whose rule computes values the column cannot hold,
    /// with Postgres's reason.
    type_errors: HashMap<(String, String, String), String>,
    /// `(schema, name)` of every relation that shares a name with a mapped
    /// table, temporary ones left out: unqualified names resolve through
    /// them. `None` when not read, and then only mapped tables count.
    relations: Option<HashSet<(String, String)>>,
    /// `(schema, table, column)` -> its default expression as Postgres prints it, for
    /// plain columns with a default (not identity or generated columns), so a `DEFAULT`
    /// that cannot stay where it is written can be replaced by its value.
    defaults: HashMap<(String, String, String), String>,
}

// === impl TableInfo ===

impl TableInfo {
    /// The column called `name`, if the table has it.
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

// === impl ColumnInfo ===

impl ColumnInfo {
    /// The type without its modifier (`character varying(50)` -> `character varying`).
    ///
    /// Casting to the bare type keeps length checks where a direct insert has them: an
    /// explicit cast to `varchar(3)` would silently truncate, the assignment to the column
    /// still raises the error the client expects.
    pub fn type_without_typmod(&self) -> String {
        let mut out = String::with_capacity(self.type_sql.len());
        let mut depth = 0usize;
        for ch in self.type_sql.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => out.push(ch),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

// === impl Catalog ===

impl Catalog {
    /// Build a catalog from what the proxy read.
    pub fn new(tables: Vec<TableInfo>) -> Catalog {
        let tables = tables
            .into_iter()
            .map(|t| ((t.schema.clone(), t.name.clone()), t))
            .collect();
        Catalog {
            tables,
            retyped: HashSet::new(),
            type_errors: HashMap::new(),
            relations: None,
            defaults: HashMap::new(),
        }
    }

    /// Records the relations that share a name with a mapped table.
    pub fn set_relations(&mut self, relations: Vec<(String, String)>) {
        self.relations = Some(relations.into_iter().collect());
    }

    /// Whether schema `schema` has a relation called `name`: one of the
    /// tables read, or a relation sharing a mapped table's name.
    pub fn has_relation(&self, schema: &str, name: &str) -> bool {
        let key = (schema.to_owned(), name.to_owned());
        self.tables.contains_key(&key) || self.relations.as_ref().is_some_and(|r| r.contains(&key))
    }

    /// Notes the default expression of a plain column.
    pub fn set_default(&mut self, schema: &str, table: &str, column: &str, expr: &str) {
        self.defaults.insert(
            (schema.to_owned(), table.to_owned(), column.to_owned()),
            expr.to_owned(),
        );
    }

    /// The default expression [`Catalog::set_default`] noted for the column.
    pub fn default_expr(&self, schema: &str, table: &str, column: &str) -> Option<&str> {
        self.defaults
            .get(&(schema.to_owned(), table.to_owned(), column.to_owned()))
            .map(String::as_str)
    }

    /// Notes that values a rule computes for `schema.table.column` are of another type
    /// than the column, so reads cast them to the column's type.
    pub fn mark_retyped(&mut self, schema: &str, table: &str, column: &str) {
        self.retyped
            .insert((schema.to_owned(), table.to_owned(), column.to_owned()));
    }

    /// Notes that the column cannot hold what its rule's transform computes.
    pub fn mark_type_error(&mut self, schema: &str, table: &str, column: &str, reason: &str) {
        self.type_errors.insert(
            (schema.to_owned(), table.to_owned(), column.to_owned()),
            reason.to_owned(),
        );
    }

    /// Why the column cannot hold what its rule computes, if it cannot.
    pub fn type_error(&self, schema: &str, table: &str, column: &str) -> Option<&str> {
        self.type_errors
            .get(&(schema.to_owned(), table.to_owned(), column.to_owned()))
            .map(String::as_str)
    }

    /// Whether [`Catalog::mark_retyped`] was called for the column.
    pub fn is_retyped(&self, schema: &str, table: &str, column: &str) -> bool {
        self.retyped
            .contains(&(schema.to_owned(), table.to_owned(), column.to_owned()))
    }

    /// The table `schema.name`, if it was read.
    pub fn table(&self, schema: &str, name: &str) -> Option<&TableInfo> {
        self.tables.get(&(schema.to_owned(), name.to_owned()))
    }
}

impl From<Vec<TableInfo>> for Catalog {
    fn from(tables: Vec<TableInfo>) -> Catalog {
        Catalog::new(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_sql: &str) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            type_sql: type_sql.into(),
            not_null: false,
            has_default: false,
        }
    }

    #[test]
    fn typmod_is_stripped_anywhere_in_the_type() {
        assert_eq!(
            col("character varying(50)").type_without_typmod(),
            "character varying"
        );
        assert_eq!(col("numeric(10,2)").type_without_typmod(), "numeric");
        assert_eq!(
            col("timestamp(3) without time zone").type_without_typmod(),
            "timestamp without time zone"
        );
        assert_eq!(
            col("character varying(20)[]").type_without_typmod(),
            "character varying[]"
        );
        assert_eq!(col("text").type_without_typmod(), "text");
    }

    #[test]
    fn lookup_by_schema_and_name() {
        let cat = Catalog::new(vec![TableInfo {
            schema: "public".into(),
            name: "users".into(),
            columns: vec![],
        }]);
        assert!(cat.table("public", "users").is_some());
        assert!(cat.table("other", "users").is_none());
    }
}
