//! Database objects that use a rule's columns inside Postgres, where pgshim never sees
//! the statements: views, materialized views and rules, functions and procedures,
//! and triggers on the mapped table.
//!
//! Such an object reads the raw columns instead of the phase's value (a view on the old
//! column shows stale values in migrate), writes one shape only (a function updating
//! the old column leaves the new one behind), and blocks or breaks when contract drops
//! the old columns. `plan` and `status` list them as a warning.
//!
//! What Postgres records as a dependency is exact: views and rules (through
//! `pg_rewrite`) and SQL-standard function bodies (`BEGIN ATOMIC`) depend on the
//! columns they use. Other function bodies are opaque text, so they are found by
//! searching `prosrc` for the table's name and a column's name as whole words; a
//! trigger function on the mapped table names the columns only (`NEW.name`), so for
//! triggers the column names suffice, as does a column list (`UPDATE OF name`). The
//! text search can list a function that merely mentions the names, never miss one
//! whose text names them.
use tokio_postgres::Client;

use super::error::OpsError;
use super::target::Target;

/// One object that uses mapped columns behind pgshim's back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bypass {
    /// `view`, `materialized view`, `rule`, `function`, `procedure` or `trigger`.
    pub kind: String,
    /// Its name as Postgres prints it: `public.v_users`, `public.f(integer)`,
    /// `audit on public.users (runs public.audit_fn)`.
    pub name: String,
    /// The rule's columns it uses (old and new).
    pub columns: Vec<String>,
}

/// One line per object: `view public.v (name, full_name)`.
pub fn describe(b: &Bypass) -> String {
    format!("{} {} ({})", b.kind, b.name, b.columns.join(", "))
}

/// The warning `plan` and `status` print above the list.
pub fn warning(count: usize) -> String {
    format!(
        "{count} database object(s) use mapped columns inside Postgres, where pgshim does not rewrite them: they read the raw columns instead of the phase's values, write one shape only, and stand in the way of dropping the old columns; change them for the new shape before contract"
    )
}

/// `$1` schema, `$2` table, `$3` the rule's old and new column names.
const BYPASS_SQL: &str = r#"
WITH tbl AS (
    SELECT c.oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1::text AND c.relname = $2::text
), cols AS (
    SELECT a.attnum, a.attname::text AS name FROM pg_catalog.pg_attribute a, tbl
    WHERE a.attrelid = tbl.oid AND a.attname = ANY ($3::text[]) AND NOT a.attisdropped
), names AS (
    SELECT name, '\m' || regexp_replace(name, '([^[:alnum:]_])', '\\\1', 'g') || '\M' AS word
    FROM unnest($3::text[]) AS name
), table_word AS (
    SELECT '\m' || regexp_replace($2::text, '([^[:alnum:]_])', '\\\1', 'g') || '\M' AS word
), found AS (
    SELECT CASE WHEN r.rulename = '_RETURN' THEN
                CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END
           ELSE 'rule' END AS kind,
           CASE WHEN r.rulename = '_RETURN' THEN v.oid::regclass::text
           ELSE format('%I on %s', r.rulename, v.oid::regclass) END AS name,
           cols.name AS col
    FROM pg_catalog.pg_depend d
    JOIN tbl ON d.refobjid = tbl.oid
    JOIN cols ON cols.attnum = d.refobjsubid
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
    WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND v.oid <> tbl.oid
  UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
           p.oid::regprocedure::text, cols.name
    FROM pg_catalog.pg_depend d
    JOIN tbl ON d.refobjid = tbl.oid
    JOIN cols ON cols.attnum = d.refobjsubid
    JOIN pg_catalog.pg_proc p ON p.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_proc'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
  UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
           p.oid::regprocedure::text, names.name
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_catalog.pg_language l ON l.oid = p.prolang
    CROSS JOIN table_word
    JOIN names ON p.prosrc ~* names.word
    WHERE p.prokind IN ('f', 'p') AND l.lanname NOT IN ('c', 'internal')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshim')
      AND p.prosrc ~* table_word.word
  UNION ALL
    SELECT 'trigger', format('%I on %s (runs %s)', t.tgname, t.tgrelid::regclass, t.tgfoid::regproc),
           names.name
    FROM pg_catalog.pg_trigger t
    JOIN tbl ON t.tgrelid = tbl.oid
    JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
    JOIN names ON p.prosrc ~* names.word
       OR EXISTS (SELECT 1 FROM cols WHERE cols.name = names.name
                  AND cols.attnum = ANY (t.tgattr::int2[]))
    WHERE NOT t.tgisinternal
)
SELECT kind, name, array_agg(DISTINCT col ORDER BY col) FROM found
GROUP BY kind, name ORDER BY kind, name"#;

/// The objects that use `target`'s mapped columns.
///
/// # Errors
/// [`OpsError::Db`] when the catalog cannot be read.
pub async fn find(client: &Client, target: &Target) -> Result<Vec<Bypass>, OpsError> {
    let rule = &target.rule;
    let columns: Vec<&str> = rule
        .old
        .iter()
        .chain(&rule.new)
        .map(String::as_str)
        .collect();
    let rows = client
        .query(BYPASS_SQL, &[&rule.schema, &rule.table, &columns])
        .await
        .map_err(OpsError::db(
            "looking for views, functions and triggers that use the mapped columns",
        ))?;
    Ok(rows
        .iter()
        .map(|r| Bypass {
            kind: r.get(0),
            name: r.get(1),
            columns: r.get(2),
        })
        .collect())
}
