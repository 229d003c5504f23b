//! Reads the physical shape of mapped tables from `pg_catalog`, through
//! pgshim's own login (`[upstream] user` and `password_env`).
//!
//! The rewriter needs each mapped table's columns in order (to expand `*` and
//! INSERT without a column list) and their types (to keep literal typing the
//! same when VALUES become a derived table). Catalogs are per database.
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::config::UpstreamConfig;
use crate::net::upstream::Upstream;
use std::collections::{HashMap, HashSet};

use crate::fleet::retire;
use crate::rewrite::{Catalog, ColumnInfo, Phase, RuleSet, TableInfo};

/// The catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// `[upstream] user` is not set, so pgshim cannot log in itself.
    #[error("[upstream] user is not set: pgshim needs its own login to read the catalog of mapped tables")]
    NoUser,
    /// `password_env` names a variable that is not set.
    #[error("[upstream] password_env names {0}, which is not set in pgshim's environment")]
    MissingPassword(String),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] crate::net::error::ConnectError),
    /// Logging in or querying failed.
    #[error("reading the catalog of database {database:?} as user {user:?}: {source}")]
    Query {
        /// The database.
        database: String,
        /// pgshim's login.
        user: String,
        /// What Postgres said.
        source: tokio_postgres::Error,
    },
}

/// The catalog query: columns of every table in the schemas of mapped tables, in
/// attnum order. Unmapped tables are read too, so an unqualified column inside a
/// subquery over them resolves as Postgres resolves it instead of being refused.
/// Default expressions are read for mapped tables only: `pg_get_expr` locks the
/// table, and a client's transaction that alters or drops another table must
/// not hold pgshim up.
const COLUMNS_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, \
       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
       a.atthasdef OR a.attidentity <> '', a.atttypid, \
       CASE WHEN a.attidentity = '' AND a.attgenerated = '' AND c.relname = ANY($2::text[]) \
            THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END \
FROM pg_catalog.pg_attribute a \
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
JOIN (SELECT DISTINCT unnest($1::text[])) AS t(nspname) ON t.nspname = n.nspname \
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
ORDER BY n.nspname, c.relname, a.attnum";

/// How long pgshim's catalog read waits for a lock on a mapped table.
const LOCK_TIMEOUT_SQL: &str = "SET lock_timeout = '2s'";

/// Relations that share a name with a mapped table, in any schema but the
/// temporary ones: an unqualified name resolves through the search path to
/// one of them.
const RELATIONS_SQL: &str = "\
SELECT n.nspname::text, c.relname::text \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
  AND n.nspname !~ '^pg_(toast_)?temp_'";

/// Opens a connection to `database` as pgshim's own login.
///
/// # Errors
/// [`CatalogError`] when the login is not configured or Postgres refuses it.
pub async fn connect(
    cfg: &UpstreamConfig,
    upstream: &Upstream,
    database: &str,
) -> Result<tokio_postgres::Client, CatalogError> {
    let user = cfg.user.as_deref().ok_or(CatalogError::NoUser)?;
    let mut pg = tokio_postgres::Config::new();
    pg.user(user)
        .dbname(database)
        .application_name("pgshim")
        .ssl_mode(SslMode::Disable);
    if let Some(var) = &cfg.password_env {
        let password =
            std::env::var(var).map_err(|_| CatalogError::MissingPassword(var.clone()))?;
        pg.password(password);
    }
    let stream = upstream.connect().await?;
    let query_error = |source| CatalogError::Query {
        database: database.to_owned(),
        user: user.to_owned(),
        source,
    };
    let (client, connection) = pg.connect_raw(stream, NoTls).await.map_err(query_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "catalog connection closed");
        }
    });
    Ok(client)
}

/// Reads the columns of the tables in the schemas `rules` map tables of in
/// `database`, the default expressions of plain columns, and which
/// transforms compute values of another type than their column. Tables that do
/// not exist are absent from the result.
///
/// # Errors
/// [`CatalogError`] when Postgres cannot be reached or refuses the login.
pub async fn read(
    cfg: &UpstreamConfig,
    upstream: &Upstream,
    database: &str,
    rules: &RuleSet,
) -> Result<Catalog, CatalogError> {
    let tables = rules.tables();
    let client = connect(cfg, upstream, database).await?;
    let query_error = |source| CatalogError::Query {
        database: database.to_owned(),
        user: cfg.user.clone().unwrap_or_default(),
        source,
    };
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    // Reading defaults and describing transforms lock the mapped tables; a
    // transaction altering one must not hold pgshim's read (and the sessions
    // waiting for it) for as long as it runs: the read fails and is retried.
    client
        .batch_execute(LOCK_TIMEOUT_SQL)
        .await
        .map_err(query_error)?;
    let retired = retired_columns(&client, rules).await.map_err(query_error)?;
    let rows = client
        .query(COLUMNS_SQL, &[&schemas, &names])
        .await
        .map_err(query_error)?;
    let mut infos: Vec<TableInfo> = Vec::new();
    let mut type_oids = HashMap::new();
    let mut defaults = Vec::new();
    for row in rows {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        if retired.contains(&(schema.clone(), table.clone(), row.get(2))) {
            continue;
        }
        if let Some(expr) = row.get::<_, Option<String>>(7) {
            defaults.push((schema.clone(), table.clone(), row.get::<_, String>(2), expr));
        }
        type_oids.insert(
            (schema.clone(), table.clone(), row.get::<_, String>(2)),
            row.get::<_, u32>(6),
        );
        let column = ColumnInfo {
            name: row.get(2),
            type_sql: row.get(3),
            not_null: row.get(4),
            has_default: row.get(5),
        };
        match infos.last_mut() {
            Some(last) if last.schema == schema && last.name == table => last.columns.push(column),
            _ => infos.push(TableInfo {
                schema,
                name: table,
                columns: vec![column],
            }),
        }
    }
    let mut catalog = Catalog::new(infos);
    let relations = client
        .query(RELATIONS_SQL, &[&names])
        .await
        .map_err(query_error)?;
    catalog.set_relations(relations.iter().map(|r| (r.get(0), r.get(1))).collect());
    for (schema, table, column, expr) in &defaults {
        catalog.set_default(schema, table, column, expr);
    }
    for probe in rules.transform_probes() {
        let key = (
            probe.schema.clone(),
            probe.table.clone(),
            probe.column.clone(),
        );
        let Some(&column_oid) = type_oids.get(&key) else {
            continue;
        };
        // A transform over a column that is gone (contract, after the drop) cannot
        // be described, and is not used either: not asked, so Postgres does not
        // log an error for it at every comparison of catalogs.
        let gone = |c: &String| {
            !type_oids.contains_key(&(probe.schema.clone(), probe.table.clone(), c.clone()))
        };
        if probe.reads.iter().any(gone) {
            continue;
        }
        match client.prepare(&probe.sql).await {
            Ok(statement) => {
                let computed = statement.columns().first().map(|c| c.type_().oid());
                if computed.is_some_and(|oid| oid != column_oid) {
                    catalog.mark_retyped(&probe.schema, &probe.table, &probe.column);
                }
            }
            Err(e) if waited_for_lock(&e) => return Err(query_error(e)),
            Err(e) => tracing::debug!(sql = %probe.sql, error = %e, "transform not described"),
        }
        // Assignment types are checked when a statement is prepared, before any
        // privilege or row is looked at.
        if let Err(e) = client.prepare(&probe.assign_sql).await {
            if waited_for_lock(&e) {
                return Err(query_error(e));
            }
            if let Some(db) = e.as_db_error() {
                if *db.code() == tokio_postgres::error::SqlState::DATATYPE_MISMATCH {
                    catalog.mark_type_error(
                        &probe.schema,
                        &probe.table,
                        &probe.column,
                        db.message(),
                    );
                }
            }
        }
    }
    Ok(catalog)
}

/// Whether `e` is the lock timeout: the catalog could not be read completely
/// now, which is no answer about the transform.
fn waited_for_lock(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// The old columns of rules this instance has in contract that `plan --phase
/// contract --apply` is about to drop (`pgshim.retiring`, see
/// [`crate::fleet::retire`]): left out of the catalog, so they are written as
/// if already dropped. A login that cannot read the table sees none.
async fn retired_columns(
    client: &tokio_postgres::Client,
    rules: &RuleSet,
) -> Result<HashSet<(String, String, String)>, tokio_postgres::Error> {
    let mut retired = HashSet::new();
    if !rules.rules().iter().any(|r| r.phase == Phase::Contract)
        || !client
            .query_one(retire::READABLE_SQL, &[])
            .await?
            .get::<_, bool>(0)
    {
        return Ok(retired);
    }
    for row in client.query(retire::READ_SQL, &[]).await? {
        let (id, schema, table): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let columns: Vec<String> = row.get(3);
        let Some(rule) = rules.rules().iter().find(|r| {
            r.id == id && r.phase == Phase::Contract && r.schema == schema && r.table == table
        }) else {
            continue;
        };
        for column in columns.into_iter().filter(|c| rule.old.contains(c)) {
            retired.insert((schema.clone(), table.clone(), column));
        }
    }
    Ok(retired)
}
