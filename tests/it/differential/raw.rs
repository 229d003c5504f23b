//! A raw protocol connection for simple queries, for what tokio-postgres does
//! not expose: the exact command tags (`INSERT 0 2`, `UPDATE 1`, `BEGIN`…).
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::outcome::{Answer, Outcome};
use super::NULL;
use crate::support::pg::TRUST_USER;
use crate::support::wire::{self, fields, query};

/// One logged-in connection; a simple query at a time.
pub struct Raw(Mutex<TcpStream>);

impl Raw {
    /// Logs in as [`TRUST_USER`] to `database` at `addr`.
    pub async fn connect(addr: SocketAddr, database: &str) -> Raw {
        let startup = wire::startup((3, 0), &[("user", TRUST_USER), ("database", database)]);
        let (stream, _) = wire::login(addr, &startup).await;
        Raw(Mutex::new(stream))
    }

    /// Runs `sql` as one Query message: labels, rows as text, every command
    /// tag, or the first error's SQLSTATE and message.
    pub async fn simple(&self, sql: &str) -> Outcome {
        let mut stream = self.0.lock().await;
        wire::send(&mut stream, &query(sql)).await;
        let messages = wire::read_until(&mut *stream, |m| m.tag == b'Z').await;
        let mut answer = Answer::default();
        for m in messages {
            match m.tag {
                b'T' => answer.labels = row_description(&m.body),
                b'D' => answer.rows.push(data_row(&m.body).join("|")),
                b'C' => answer.tags.push(cstr(&m.body)),
                b'E' => {
                    let f = fields(&m.body);
                    let get = |k: u8| f.get(&k).cloned().unwrap_or_default();
                    return Outcome::Err(get(b'C'), get(b'M'));
                }
                _ => {}
            }
        }
        Outcome::Ok(answer)
    }
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn row_description(body: &[u8]) -> Vec<String> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut labels = Vec::new();
    for _ in 0..count {
        let name = cstr(&body[at..]);
        // Name, NUL, then table oid, column, type oid, size, modifier, format.
        at += name.len() + 1 + 18;
        labels.push(name);
    }
    labels
}

fn data_row(body: &[u8]) -> Vec<String> {
    let count = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut cells = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            cells.push(NULL.to_owned());
        } else {
            let end = at + len as usize;
            cells.push(String::from_utf8_lossy(&body[at..end]).into_owned());
            at = end;
        }
    }
    cells
}
