//! Running one generated statement on one connection and recording all a
//! client can observe of it: labels, types, rows, row count, or SQLSTATE.
use std::pin::pin;

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use super::generator::{Op, Param, Stmt};
use super::NULL;
use crate::support::within;

/// What a client observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(Answer),
    /// SQLSTATE (`client` for an error tokio-postgres raised itself) and message.
    Err(String, String),
}

/// A successful statement's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub labels: Vec<String>,
    /// Result column type OIDs then parameter type OIDs (extended protocol only).
    pub types: Vec<u32>,
    pub params: Vec<u32>,
    pub rows: Vec<String>,
    pub count: u64,
    /// Every CommandComplete tag (raw simple protocol only, see [`super::raw`]).
    pub tags: Vec<String>,
}

impl Outcome {
    /// pgshim's own refusal: the reason, without the rule id.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Outcome::Err(code, msg) if code == "0A000" && msg.starts_with("pgshim:") => Some(
                msg.split_once("): ")
                    .map_or(msg.as_str(), |(_, r)| r)
                    .to_owned(),
            ),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// What must be equal between pgshim and the reference: rows sorted when
    /// their order is not defined, errors by SQLSTATE only.
    pub fn comparable(&self, ordered: bool) -> Outcome {
        match self {
            Outcome::Ok(a) => {
                let mut a = a.clone();
                if !ordered {
                    a.rows.sort();
                }
                Outcome::Ok(a)
            }
            Outcome::Err(code, _) => Outcome::Err(code.clone(), String::new()),
        }
    }
}

fn error(e: &tokio_postgres::Error) -> Outcome {
    match e.as_db_error() {
        Some(db) => Outcome::Err(db.code().code().to_owned(), db.message().to_owned()),
        None => Outcome::Err("client".into(), e.to_string()),
    }
}

/// Any column value as text: decoded for the types the workload reads,
/// hex of the binary value otherwise (still exact).
struct Cell(String);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        let text = match *ty {
            Type::INT2 => i16::from_sql(ty, raw)?.to_string(),
            Type::INT4 => i32::from_sql(ty, raw)?.to_string(),
            Type::INT8 => i64::from_sql(ty, raw)?.to_string(),
            Type::BOOL => if bool::from_sql(ty, raw)? { "t" } else { "f" }.to_owned(),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                String::from_sql(ty, raw)?
            }
            _ => raw.iter().map(|b| format!("{b:02x}")).collect(),
        };
        Ok(Cell(text))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn to_sql(p: &Param) -> &(dyn ToSql + Sync) {
    match p {
        Param::Int(i) => i,
        Param::Text(t) => t,
    }
}

/// Runs `s` on `client`, through `prepared` when given (a statement kept
/// across flips), else as `s.extended` says.
pub async fn execute(client: &Client, s: &Stmt, prepared: Option<&Statement>) -> Outcome {
    let run = async {
        match (&s.op, prepared) {
            (Op::CopyIn(_, data), _) => copy_in(client, &s.sql, data).await,
            (Op::CopyOut, _) => copy_out(client, &s.sql).await,
            (_, Some(statement)) => query(client, statement, &s.params).await,
            (_, None) if s.extended => match client.prepare(&s.sql).await {
                Ok(statement) => query(client, &statement, &s.params).await,
                Err(e) => error(&e),
            },
            (_, None) => simple(client, &s.sql).await,
        }
    };
    within(60, &s.sql, run).await
}

async fn simple(client: &Client, sql: &str) -> Outcome {
    let messages = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => return error(&e),
    };
    let mut answer = Answer::default();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                answer.labels = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => answer.rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or(NULL).to_owned())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            SimpleQueryMessage::CommandComplete(n) => answer.count = n,
            _ => {}
        }
    }
    Outcome::Ok(answer)
}

async fn query(client: &Client, statement: &Statement, params: &[Param]) -> Outcome {
    let run = async {
        let stream = client
            .query_raw(statement, params.iter().map(to_sql))
            .await?;
        let mut stream = pin!(stream);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await? {
            let mut cells = Vec::new();
            for i in 0..row.len() {
                let cell: Option<Cell> = row.try_get(i)?;
                cells.push(cell.map_or_else(|| NULL.to_owned(), |c| c.0));
            }
            rows.push(cells.join("|"));
        }
        Ok::<_, tokio_postgres::Error>((rows, stream.rows_affected().unwrap_or(0)))
    };
    match run.await {
        Ok((rows, count)) => Outcome::Ok(Answer {
            labels: statement
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            types: statement
                .columns()
                .iter()
                .map(|c| c.type_().oid())
                .collect(),
            params: statement.params().iter().map(Type::oid).collect(),
            rows,
            count,
            tags: Vec::new(),
        }),
        Err(e) => error(&e),
    }
}

async fn copy_in(client: &Client, sql: &str, data: &str) -> Outcome {
    let run = async {
        let sink = client.copy_in::<_, Bytes>(sql).await?;
        let mut sink = pin!(sink);
        sink.send(Bytes::from(data.to_owned())).await?;
        sink.as_mut().finish().await
    };
    match run.await {
        Ok(count) => Outcome::Ok(Answer {
            count,
            ..Answer::default()
        }),
        Err(e) => error(&e),
    }
}

async fn copy_out(client: &Client, sql: &str) -> Outcome {
    let run = async {
        let stream = client.copy_out(sql).await?;
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok::<_, tokio_postgres::Error>(chunks.concat())
    };
    match run.await {
        Ok(bytes) => Outcome::Ok(Answer {
            rows: String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect(),
            ..Answer::default()
        }),
        Err(e) => error(&e),
    }
}

/// Every row of `table` (physical columns) as `a|b|∅` text, by id.
pub async fn table_rows(client: &Client, table: &str) -> Vec<Vec<String>> {
    let sql = format!("SELECT * FROM {table} ORDER BY id");
    let messages = within(30, &sql, client.simple_query(&sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or(NULL).to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
