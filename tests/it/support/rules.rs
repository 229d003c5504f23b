//! Column-mapping rules under test: a fresh database with mapped tables, a
//! pgshim serving rules for it, and helpers that render rows as text so a
//! proxied client's view and the physical columns (read over a direct
//! connection) can be compared to expectations written as `a|b|∅` strings.
use std::pin::pin;

use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use super::pg::{cluster, TRUST_USER};
use super::proxy::{proxy, Proxy, ProxyBuilder};

/// How NULL is written in expected rows.
pub const NULL: &str = "∅";

/// A database of its own, set up over a direct connection before any proxy
/// reads its catalog.
#[derive(Debug, Clone)]
pub struct Db {
    /// The database's name.
    pub name: String,
}

// === impl Db ===

impl Db {
    /// Creates a fresh database owned by [`TRUST_USER`] and runs `setup` in it.
    pub async fn create(prefix: &str, setup: &str) -> Db {
        let name = cluster().create_database(prefix, TRUST_USER).await;
        let db = Db { name };
        db.direct()
            .await
            .batch_execute(setup)
            .await
            .unwrap_or_else(|e| panic!("setup of {}: {e:?}", db.name));
        db
    }

    /// A [`TRUST_USER`] session straight to this database (no pgshim).
    pub async fn direct(&self) -> Client {
        let mut cfg = cluster().direct(TRUST_USER, None);
        cfg.dbname(&self.name);
        super::connect(&cfg).await.expect("direct connection")
    }

    /// A [`TRUST_USER`] session to this database through `proxy`.
    pub async fn through(&self, proxy: &Proxy) -> Client {
        let mut cfg = proxy.config(TRUST_USER, None);
        cfg.dbname(&self.name);
        super::within(20, "connect through pgshim", super::connect(&cfg))
            .await
            .expect("connection through pgshim")
    }

    /// A pgshim builder with `rules` (each `[[rule]]` gets `database = <this>`
    /// inserted after its header line).
    pub fn proxy(&self, rules: &str) -> ProxyBuilder {
        proxy().rules(&self.scope(rules))
    }

    /// `rules` with `database = "<this>"` added to every `[[rule]]`.
    pub fn scope(&self, rules: &str) -> String {
        rules.replace(
            "[[rule]]",
            &format!("[[rule]]\ndatabase = \"{}\"", self.name),
        )
    }

    /// Every row of `sql` run directly, as `a|b|∅` strings.
    pub async fn physical(&self, sql: &str) -> Vec<String> {
        simple_rows(&self.direct().await, sql)
            .await
            .unwrap_or_else(|e| panic!("direct {sql}: {e:?}"))
            .0
    }
}

/// Runs `sql` with the simple protocol.
///
/// # Returns
/// The rows of every statement as `a|b|∅` strings, and the last statement's
/// affected-row count.
pub async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<(Vec<String>, u64), tokio_postgres::Error> {
    let messages = super::within(20, sql, client.simple_query(sql)).await?;
    let mut rows = Vec::new();
    let mut count = 0;
    for m in messages {
        match m {
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or(NULL).to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    Ok((rows, count))
}

/// Runs `sql` with the extended protocol (Parse, Describe, Bind, Execute) and
/// `params`.
///
/// # Returns
/// The rows as `a|b|∅` strings, the affected-row count, and the prepared
/// statement's column names and parameter count.
pub async fn extended_rows(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Extended, tokio_postgres::Error> {
    let run = async {
        let statement = client.prepare(sql).await?;
        let stream = client.query_raw(&statement, params.iter().copied()).await?;
        let mut stream = pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await? {
            rows.push(row_text(&row));
        }
        Ok(Extended {
            rows,
            count: stream.rows_affected().unwrap_or(0),
            labels: labels(&statement),
            params: statement.params().len(),
        })
    };
    super::within(20, sql, run).await
}

/// What an extended-protocol run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended {
    /// Rows as `a|b|∅` strings.
    pub rows: Vec<String>,
    /// CommandComplete's row count.
    pub count: u64,
    /// RowDescription's column names.
    pub labels: Vec<String>,
    /// ParameterDescription's length.
    pub params: usize,
}

/// The column names a prepared statement describes.
pub fn labels(statement: &tokio_postgres::Statement) -> Vec<String> {
    statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect()
}

/// One row as an `a|b|∅` string, for the column types these tests use.
pub fn row_text(row: &Row) -> String {
    (0..row.len())
        .map(|i| cell(row, i).unwrap_or_else(|| NULL.to_owned()))
        .collect::<Vec<_>>()
        .join("|")
}

fn cell(row: &Row, i: usize) -> Option<String> {
    let ty = row.columns()[i].type_().clone();
    match ty {
        Type::INT2 => row.get::<_, Option<i16>>(i).map(|v| v.to_string()),
        Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| v.to_string()),
        Type::INT8 => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
        Type::BOOL => row
            .get::<_, Option<bool>>(i)
            .map(|v| if v { "t" } else { "f" }.to_owned()),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
            row.get::<_, Option<String>>(i)
        }
        other => panic!("row_text: add a conversion for type {other}"),
    }
}

/// The SQLSTATE and message of a failed statement.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
        None => panic!("expected an ErrorResponse, got {e:?}"),
    }
}
