//! The key a table is walked by in keyset batches: its primary key, else the narrowest
//! unique index over NOT NULL plain columns.
//!
//! Key values travel as text (`k::text` out, `CAST($n::text AS type)` back in), so any key
//! type with text I/O works and the checkpoint can store them as `text[]`.
use tokio_postgres::Client;

use super::error::OpsError;
use super::sql::ident;
use crate::rewrite::Rule;

/// Key columns, in index order, with their SQL types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Column names.
    pub columns: Vec<String>,
    /// `format_type` of each column.
    pub types: Vec<String>,
}

/// Unique, non-partial, plain-column, immediate indexes; primary key first, then narrowest.
const KEYS_SQL: &str = "\
SELECT i.indisprimary, \
       array_agg(a.attname::text ORDER BY k.ord), \
       array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.ord), \
       bool_and(a.attnotnull) \
FROM pg_catalog.pg_index i \
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indisvalid \
  AND i.indimmediate AND i.indexprs IS NULL AND i.indpred IS NULL \
  AND k.ord <= i.indnkeyatts \
GROUP BY i.indexrelid, i.indisprimary \
ORDER BY i.indisprimary DESC, count(*), i.indexrelid";

// === impl Key ===

impl Key {
    /// Finds the key to walk `rule`'s table by.
    ///
    /// # Errors
    /// [`OpsError::NoKey`] when there is none; [`OpsError::KeyIsMapped`] when the only
    /// candidates include a column the backfill writes.
    pub async fn find(client: &Client, rule: &Rule) -> Result<Key, OpsError> {
        let rows = client
            .query(KEYS_SQL, &[&rule.schema, &rule.table])
            .await
            .map_err(OpsError::db(
                "reading the table's primary key and unique indexes",
            ))?;
        let mut mapped = None;
        for row in rows {
            let (primary, not_null): (bool, bool) = (row.get(0), row.get(3));
            if !primary && !not_null {
                continue;
            }
            let key = Key {
                columns: row.get(1),
                types: row.get(2),
            };
            match key.columns.iter().find(|c| rule.new.contains(c)) {
                Some(c) => mapped = mapped.or(Some((key.columns.join(", "), c.clone()))),
                None => return Ok(key),
            }
        }
        let table = rule.qualified_table();
        Err(match mapped {
            Some((key, column)) => OpsError::KeyIsMapped {
                table,
                key,
                column,
                rule: rule.id.clone(),
            },
            None => OpsError::NoKey { table },
        })
    }

    /// `(q."a", q."b")`: the key of the row named `qual` as a row value.
    pub fn row(&self, qual: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{qual}.{}", ident(c)))
            .collect();
        format!("({})", cols.join(", "))
    }

    /// `(CAST($n::text AS t1), ...)`: parameters `first..` as a key row value.
    pub fn params(&self, first: usize) -> String {
        let vals: Vec<String> = self
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("CAST(${}::text AS {t})", first + i))
            .collect();
        format!("({})", vals.join(", "))
    }

    /// `q."a", q."b"`: for ORDER BY.
    pub fn order(&self, qual: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{qual}.{}", ident(c)))
            .collect();
        cols.join(", ")
    }

    /// `ARRAY[q."a"::text, ...]`: the key as the checkpoint stores it.
    pub fn text_array(&self, qual: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{qual}.{}::text", ident(c)))
            .collect();
        format!("ARRAY[{}]", cols.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_compare_as_row_values() {
        let key = Key {
            columns: vec!["tenant".into(), "id".into()],
            types: vec!["integer".into(), "bigint".into()],
        };
        assert_eq!(key.row("t"), "(t.\"tenant\", t.\"id\")");
        assert_eq!(
            key.params(3),
            "(CAST($3::text AS integer), CAST($4::text AS bigint))"
        );
    }
}
