//! `pgshim plan`: the DDL of a migration step, read from the live catalog and written the
//! safe way.
//!
//! Expand adds the new columns nullable without a default (a catalog-only change) and
//! recreates indexes that cover old columns on the new ones with `CREATE INDEX
//! CONCURRENTLY`. Contract adds NOT NULL to new columns whose sources are NOT NULL
//! through `CHECK (...) NOT VALID` + `VALIDATE CONSTRAINT` + `SET NOT NULL` (only a short
//! lock; the scan runs under SHARE UPDATE EXCLUSIVE), lets old columns take NULL (writes
//! in phase contract set N only), then drops old indexes concurrently and the old
//! columns. Steps that are already done in the catalog are left out, so a plan can be
//! re-run after a partial apply.
use std::time::Duration;

use tokio_postgres::Client;

use super::bypass::{self, Bypass};
use super::error::OpsError;
use super::indexdef;
use super::sql::{ident, setting};
use super::target::Target;
use crate::rewrite::{Phase, TableInfo};

/// Which DDL step to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Add the new shape.
    Expand,
    /// Drop the old shape.
    Contract,
}

/// How long a statement waits for locks and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Takes a strong lock briefly: short lock_timeout and statement_timeout.
    Quick,
    /// Scans or builds under a weak lock: short lock_timeout, no statement_timeout;
    /// must run outside a transaction block when it is CONCURRENTLY.
    Long,
}

/// One statement of a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Statement {
    /// Why it is there.
    pub comment: String,
    /// The DDL.
    pub sql: String,
    /// Its timeouts.
    pub kind: Kind,
    /// Only safe once every pgshim runs the rule in phase contract.
    pub needs_contract_phase: bool,
    /// Run before retrying after a lock timeout (drops an invalid half-built index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<String>,
    /// The old columns it drops: `--apply` first waits until no pgshim writes
    /// them (`super::retire`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drops_old: Vec<String>,
}

/// The DDL for one step of one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The rule.
    pub rule: String,
    /// `schema.table`.
    pub table: String,
    /// The database.
    pub database: String,
    /// The step planned.
    pub step: Step,
    /// The rule's phase in the config.
    pub phase: String,
    /// Statements, in order.
    pub statements: Vec<Statement>,
    /// Things the operator must know or do by hand.
    pub notes: Vec<String>,
    /// Views, functions and triggers that use the mapped columns inside Postgres.
    pub bypass: Vec<Bypass>,
}

/// Timeouts the plan's statements run under.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `lock_timeout` of every statement.
    pub lock: Duration,
    /// `statement_timeout` of [`Kind::Quick`] statements.
    pub statement: Duration,
}

/// An index on the table, as the catalog shows it.
struct Index {
    name: String,
    def: String,
    valid: bool,
    /// Backs a constraint (primary key, unique, exclusion): dropped with its columns.
    constraint: bool,
}

const INDEXES_SQL: &str = "\
SELECT ic.relname::text, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisvalid, \
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid) \
FROM pg_catalog.pg_index i \
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
WHERE i.indrelid = $1::text::regclass ORDER BY ic.relname";

/// Default expressions of the table's plain columns (not identity or generated).
const DEFAULTS_SQL: &str = "\
SELECT a.attname::text, pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped \
  AND a.attidentity = '' AND a.attgenerated = ''";

const CHECKS_SQL: &str = "\
SELECT conname::text FROM pg_catalog.pg_constraint \
WHERE conrelid = $1::text::regclass AND contype = 'c' AND conname LIKE 'pgshim\\_%'";

// === impl Statement ===

impl Statement {
    fn new(comment: impl Into<String>, sql: String, kind: Kind) -> Statement {
        Statement {
            comment: comment.into(),
            sql,
            kind,
            needs_contract_phase: false,
            cleanup: None,
            drops_old: Vec::new(),
        }
    }

    /// The `SET` lines this statement runs under.
    pub fn settings(&self, t: Timeouts) -> [String; 2] {
        let statement = match self.kind {
            Kind::Quick => setting(t.statement),
            Kind::Long => "0".into(),
        };
        [
            format!("SET lock_timeout = {}", setting(t.lock)),
            format!("SET statement_timeout = {statement}"),
        ]
    }
}

// === impl Plan ===

impl Plan {
    /// The plan as a SQL script, one commented statement after another.
    pub fn script(&self, t: Timeouts) -> String {
        let mut out = format!(
            "-- pgshim plan {} --phase {}: table {} in database {} (rule phase: {})\n",
            self.rule,
            step_name(self.step),
            self.table,
            self.database,
            self.phase
        );
        if self.statements.is_empty() {
            out += "-- nothing to do: the catalog already has this step's shape\n";
        }
        for s in &self.statements {
            out += &format!("\n-- {}\n", s.comment);
            if s.needs_contract_phase {
                out += "-- (only once every pgshim runs this rule with phase = \"contract\")\n";
            }
            for line in s.settings(t) {
                out += &format!("{line};\n");
            }
            out += &format!("{};\n", s.sql);
        }
        for n in &self.notes {
            out += &format!("\n-- NOTE: {n}\n");
        }
        out += &self.bypass_warning("-- ");
        out
    }

    /// The bypass warning with its list, each line prefixed with `prefix`; empty when
    /// nothing bypasses pgshim.
    pub fn bypass_warning(&self, prefix: &str) -> String {
        if self.bypass.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\n{prefix}WARNING: {}\n",
            bypass::warning(self.bypass.len())
        );
        for b in &self.bypass {
            out += &format!("{prefix}  {}\n", bypass::describe(b));
        }
        out
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Expand => "expand",
        Step::Contract => "contract",
    }
}

/// Plans `step` for `target` from the live catalog.
///
/// # Errors
/// [`OpsError`] when the table is missing, a new column's type cannot be worked out, or
/// the catalog cannot be read.
pub async fn plan(client: &Client, target: &Target, step: Step) -> Result<Plan, OpsError> {
    let info = target.table_info(client).await?;
    let indexes = read_indexes(client, target).await?;
    let mut plan = Plan {
        rule: target.rule.id.clone(),
        table: target.rule.qualified_table(),
        database: target.database.clone(),
        step,
        phase: target.rule.phase.to_string(),
        statements: Vec::new(),
        notes: Vec::new(),
        bypass: bypass::find(client, target).await?,
    };
    match step {
        Step::Expand => expand(client, target, &info, &indexes, &mut plan).await?,
        Step::Contract => {
            let checks = read_checks(client, target).await?;
            let defaults = read_defaults(client, target).await?;
            carry_defaults(target, &info, &defaults, &mut plan);
            contract(target, &info, &indexes, &checks, &mut plan)?;
        }
    }
    Ok(plan)
}

async fn read_indexes(client: &Client, target: &Target) -> Result<Vec<Index>, OpsError> {
    let rows = client
        .query(INDEXES_SQL, &[&target.table_sql()])
        .await
        .map_err(OpsError::db("reading the table's indexes"))?;
    Ok(rows
        .iter()
        .map(|r| Index {
            name: r.get(0),
            def: r.get(1),
            valid: r.get(2),
            constraint: r.get(3),
        })
        .collect())
}

async fn read_defaults(
    client: &Client,
    target: &Target,
) -> Result<Vec<(String, String)>, OpsError> {
    let rows = client
        .query(DEFAULTS_SQL, &[&target.table_sql()])
        .await
        .map_err(OpsError::db("reading the table's column defaults"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Before the old columns go: each new column without a default takes
/// `to_new` of its old columns' defaults, when all of them have one, so an
/// insert that leaves the column out stores after the drop what it stored
/// before (pgshim wrote the old default out and mirrored it until then).
fn carry_defaults(
    target: &Target,
    info: &TableInfo,
    defaults: &[(String, String)],
    plan: &mut Plan,
) {
    let rule = &target.rule;
    let default_of = |c: &str| defaults.iter().find(|(n, _)| n == c).map(|(_, e)| e);
    for (i, n) in rule.new.iter().enumerate() {
        let sources = rule.to_new_sources(i);
        let has_default = info.column(n).is_none_or(|c| c.has_default);
        if has_default || sources.is_empty() || !sources.iter().all(|s| default_of(s).is_some()) {
            continue;
        }
        let Some(expr) = rule.to_new_with(i, &mut |c| {
            default_of(c).map_or_else(|| "NULL".to_owned(), |e| format!("({e})"))
        }) else {
            continue;
        };
        plan.statements.push(Statement::new(
            format!(
                "{n} takes the default of {} through the rule's transform, so inserts that leave it out after the drop store what they stored before",
                sources.join(", ")
            ),
            format!(
                "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {expr}",
                target.table_sql(),
                ident(n)
            ),
            Kind::Quick,
        ));
    }
}

async fn read_checks(client: &Client, target: &Target) -> Result<Vec<String>, OpsError> {
    let rows = client
        .query(CHECKS_SQL, &[&target.table_sql()])
        .await
        .map_err(OpsError::db("reading the table's check constraints"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn expand(
    client: &Client,
    target: &Target,
    info: &TableInfo,
    indexes: &[Index],
    plan: &mut Plan,
) -> Result<(), OpsError> {
    let rule = &target.rule;
    let table = target.table_sql();
    for (i, n) in rule.new.iter().enumerate() {
        if info.column(n).is_some() {
            continue;
        }
        let (type_sql, why) = new_column_type(client, target, info, i).await?;
        plan.statements.push(Statement::new(
            format!("new column {n}: nullable, no default, so adding it only touches the catalog ({why})"),
            format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {type_sql}", ident(n)),
            Kind::Quick,
        ));
    }
    let one_to_one = rule.old.len() == rule.new.len();
    let quoted_new: Vec<String> = rule.new.iter().map(|n| ident(n)).collect();
    // pgshim's own migrate-phase indexes read both shapes by design.
    let own = |x: &&Index| x.name.ends_with(MIGRATE_INDEX_SUFFIX);
    for index in indexes.iter().filter(|x| x.valid && !own(x)) {
        let used = indexdef::columns_used(&index.def, &rule.old);
        if used.is_empty() {
            continue;
        }
        if !one_to_one {
            plan.notes.push(format!(
                "index {} covers old column(s) {}, which map to several new columns: recreate it on the new shape by hand",
                index.name,
                used.join(", ")
            ));
            continue;
        }
        let name = new_index_name(&index.name, rule, &used);
        let existing = indexes.iter().find(|x| x.name == name);
        if existing.is_some_and(|x| x.valid) {
            continue;
        }
        let qualified = format!("{}.{}", ident(&rule.schema), ident(&name));
        let Some(sql) = indexdef::rewrite(&index.def, &ident(&name), &rule.old, &quoted_new) else {
            plan.notes.push(format!(
                "index {} could not be rewritten: recreate it by hand",
                index.name
            ));
            continue;
        };
        let drop_invalid = format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}");
        if existing.is_some() {
            plan.statements.push(Statement::new(
                format!("{name} is left over from a failed CONCURRENTLY build and is invalid"),
                drop_invalid.clone(),
                Kind::Long,
            ));
        }
        let mut s = Statement::new(
            format!(
                "index {} on the new shape, built without blocking writes",
                index.name
            ),
            sql,
            Kind::Long,
        );
        s.cleanup = Some(drop_invalid);
        plan.statements.push(s);
        if index.constraint {
            plan.notes.push(format!(
                "index {} backs a constraint; {name} is a plain index with the same keys. To make it the constraint, after contract: ALTER TABLE {table} ADD CONSTRAINT ... USING INDEX {}",
                index.name,
                ident(&name)
            ));
        }
        if let Some(s) = migrate_index(rule, index, &table, indexes) {
            plan.statements.push(s);
        }
    }
    plan.notes.push(format!(
        "then run pgshim with phase = \"expand\" for rule {}, and `pgshim backfill {}`",
        rule.id, rule.id
    ));
    Ok(())
}

/// Ends the name of the index [`migrate_index`] creates.
const MIGRATE_INDEX_SUFFIX: &str = "_pgshim_migrate";

/// For a rename whose old column has a plain btree index: an index on the value both
/// names read as in migrate, `CASE WHEN new IS NULL THEN old ELSE new END`, so that
/// `ORDER BY … LIMIT` on either name stays an index scan in that phase (predicates do
/// not need it: pgshim rewrites them for the two column indexes). Contract drops it
/// with the old column's other indexes.
fn migrate_index(
    rule: &crate::rewrite::Rule,
    index: &Index,
    table: &str,
    indexes: &[Index],
) -> Option<Statement> {
    let ([old], [new]) = (rule.old.as_slice(), rule.new.as_slice()) else {
        return None;
    };
    let identity = rule.to_new.first()?.identity_column() == Some(old.as_str())
        && rule.to_old.first()?.identity_column() == Some(new.as_str());
    if !identity || !is_plain_btree_on(&index.def, old) {
        return None;
    }
    let name = truncate_name(&format!("{}{MIGRATE_INDEX_SUFFIX}", index.name));
    if indexes.iter().any(|x| x.name == name && x.valid) {
        return None;
    }
    let qualified = format!("{}.{}", ident(&rule.schema), ident(&name));
    let mut s = Statement::new(
        format!(
            "index on the value {old} and {new} read as in migrate, so ORDER BY either stays an index scan then"
        ),
        format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {table} ((CASE WHEN {} IS NULL THEN {} ELSE {} END))",
            ident(&name),
            ident(new),
            ident(old),
            ident(new)
        ),
        Kind::Long,
    );
    s.cleanup = Some(format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"));
    Some(s)
}

/// Whether `def` (from `pg_get_indexdef`) is a plain, non-partial btree index on `column`.
fn is_plain_btree_on(def: &str, column: &str) -> bool {
    let Some(rest) = def.rsplit_once(" USING btree (").map(|(_, r)| r) else {
        return false;
    };
    let Some(key) = rest.strip_suffix(')') else {
        return false;
    };
    let unquoted = match key.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => key.to_owned(),
    };
    unquoted == column
}

/// `name` cut to Postgres's 63-byte identifier limit on a character boundary.
fn truncate_name(name: &str) -> String {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The new column's type: the old column's for a plain copy, else what Postgres says the
/// transform returns.
async fn new_column_type(
    client: &Client,
    target: &Target,
    info: &TableInfo,
    i: usize,
) -> Result<(String, String), OpsError> {
    let rule = &target.rule;
    if let Some(src) = rule.to_new_identity(i).and_then(|c| info.column(c)) {
        return Ok((src.type_sql.clone(), format!("same type as {}", src.name)));
    }
    let expr = rule.to_new_sql(i, "t").unwrap_or_else(|| "NULL".into());
    let what = format!(
        "working out the type of new column {} from its to_new transform {expr}",
        rule.new.get(i).map_or("?", String::as_str)
    );
    let stmt = client
        .prepare(&format!("SELECT {expr} FROM {} AS t", target.table_sql()))
        .await
        .map_err(OpsError::db(what.as_str()))?;
    let oid = stmt.columns().first().map_or(25, |c| c.type_().oid());
    let row = client
        .query_one("SELECT pg_catalog.format_type($1::oid, NULL)", &[&oid])
        .await
        .map_err(OpsError::db(what.as_str()))?;
    Ok((
        row.get(0),
        "the type its to_new transform returns; add a cast in to_new for another".into(),
    ))
}

/// `users_name_idx` -> `users_full_name_idx`; else `<index>_<first new column>`; at most
/// 63 bytes.
fn new_index_name(old_name: &str, rule: &crate::rewrite::Rule, used: &[&str]) -> String {
    let first = used.first().copied().unwrap_or_default();
    let pos = rule.old.iter().position(|o| o == first).unwrap_or(0);
    let new_col = rule.new.get(pos).map_or("new", String::as_str);
    let name = if !first.is_empty() && old_name.contains(first) {
        old_name.replacen(first, new_col, 1)
    } else {
        format!("{old_name}_{new_col}")
    };
    let mut cut = name.len().min(63);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].to_owned()
}

fn contract(
    target: &Target,
    info: &TableInfo,
    indexes: &[Index],
    checks: &[String],
    plan: &mut Plan,
) -> Result<(), OpsError> {
    let rule = &target.rule;
    let table = target.table_sql();
    let missing: Vec<&str> = rule
        .new
        .iter()
        .filter(|n| info.column(n).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(OpsError::MissingColumns {
            rule: rule.id.clone(),
            table: rule.qualified_table(),
            missing: missing.join(", "),
            hint: "contract needs the new columns: run `pgshim plan RULE --phase expand --apply` and backfill first",
        });
    }
    for (i, n) in rule.new.iter().enumerate() {
        let sources = rule.to_new_sources(i);
        let required = !sources.is_empty()
            && sources
                .iter()
                .all(|s| info.column(s).is_some_and(|c| c.not_null));
        let check = constraint_name(n);
        let has_check = checks.contains(&check);
        let already = info.column(n).is_some_and(|c| c.not_null);
        if required && !already {
            let col = ident(n);
            if !has_check {
                plan.statements.push(Statement::new(
                    format!("{n} takes NOT NULL like its source(s) {}: a check that new writes obey, not yet checked on old rows", sources.join(", ")),
                    format!("ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({col} IS NOT NULL) NOT VALID", ident(&check)),
                    Kind::Quick,
                ));
            }
            plan.statements.push(Statement::new(
                format!("check every existing row under SHARE UPDATE EXCLUSIVE (reads and writes go on); fails if {n} has NULLs: backfill and verify first"),
                format!("ALTER TABLE {table} VALIDATE CONSTRAINT {}", ident(&check)),
                Kind::Long,
            ));
            plan.statements.push(Statement::new(
                "the validated check lets SET NOT NULL skip the table scan",
                format!("ALTER TABLE {table} ALTER COLUMN {col} SET NOT NULL"),
                Kind::Quick,
            ));
        }
        if (required && !already) || has_check {
            plan.statements.push(Statement::new(
                format!("the helper check on {n} is no longer needed"),
                format!(
                    "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {}",
                    ident(&check)
                ),
                Kind::Quick,
            ));
        }
    }
    let old_present: Vec<&String> = rule
        .old
        .iter()
        .filter(|o| info.column(o).is_some())
        .collect();
    for o in &old_present {
        if info.column(o).is_some_and(|c| c.not_null) {
            plan.statements.push(Statement::new(
                format!("{o} must accept NULL until it is dropped: contract mirrors NULLs into it, and clients on the new shape stop setting it"),
                format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", ident(o)),
                Kind::Quick,
            ));
        }
    }
    for index in indexes.iter().filter(|x| !x.constraint) {
        if indexdef::columns_used(&index.def, &rule.old).is_empty() {
            continue;
        }
        let mut s = Statement::new(
            format!("index {} covers old columns: dropped first, without blocking writes, so DROP COLUMN holds its lock only briefly", index.name),
            format!("DROP INDEX CONCURRENTLY IF EXISTS {}.{}", ident(&rule.schema), ident(&index.name)),
            Kind::Long,
        );
        s.needs_contract_phase = true;
        plan.statements.push(s);
    }
    if !old_present.is_empty() {
        let drops: Vec<String> = old_present
            .iter()
            .map(|o| format!("DROP COLUMN IF EXISTS {}", ident(o)))
            .collect();
        let mut s = Statement::new(
            "the old shape: a catalog-only change under a brief ACCESS EXCLUSIVE lock (constraints and indexes on these columns go with them); --apply first waits until no pgshim writes them",
            format!("ALTER TABLE {table} {}", drops.join(", ")),
            Kind::Quick,
        );
        s.needs_contract_phase = true;
        s.drops_old = old_present.iter().map(|o| (*o).clone()).collect();
        plan.statements.push(s);
    }
    if rule.phase != Phase::Contract && plan.statements.iter().any(|s| s.needs_contract_phase) {
        plan.notes.push(format!(
            "rule {} is in phase {}: pgshim still reads the old columns, so --apply stops before dropping them; set phase = \"contract\", reload every pgshim, then rerun",
            rule.id, rule.phase
        ));
    }
    Ok(())
}

/// The helper check constraint for NOT NULL on `column`.
fn constraint_name(column: &str) -> String {
    let mut name = format!("pgshim_{column}_not_null");
    if name.len() > 63 {
        let mut cut = 63;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}
