//! Following the session's `search_path`, so unqualified names resolve as
//! Postgres resolves them.
//!
//! The path a session runs with comes from many places: role and database
//! defaults, the startup packet's `options`, `SET`, `SET LOCAL` (undone at
//! the end of the transaction), `RESET`, `set_config()`, `ROLLBACK` of any of
//! them. Rather than imitate all of it, pgshim asks Postgres: a hidden query
//! (a named statement, run and closed), sent when nothing else is in flight, reads `current_schemas(false)` and the
//! session's temporary tables that share a name with a mapped table. It is
//! asked when the session starts and after any statement that may have
//! changed the answer, before the next statement is rewritten.
use bytes::BytesMut;

use crate::protocol::backend::{
    BIND_COMPLETE_TAG, CLOSE_COMPLETE_TAG, COMMAND_COMPLETE_TAG, PARSE_COMPLETE_TAG,
    ROW_DESCRIPTION_TAG,
};
use crate::protocol::frontend::{write_run_named, RUN_READIES};
use crate::protocol::header::HEADER_LEN;
use crate::protocol::{ERROR_RESPONSE_TAG, READY_FOR_QUERY_TAG};
use crate::rewrite::{RuleSet, SearchPath};

/// Backend `DataRow`.
const DATA_ROW_TAG: u8 = b'D';

/// Words in a statement that may change the search path or the temporary
/// tables, in any case.
const TRIGGERS: &[&[u8]] = &[
    b"search_path",
    b"set_config",
    b"reset",
    b"discard",
    b"role",
    b"authorization",
    b"temp",
    b"temporary",
    b"pg_temp",
    b"rollback",
    b"abort",
];

/// Whether `sql` may change what the search path resolves to: it has one of
/// [`TRIGGERS`] as a whole word (a table called `user_roles` is no reason to
/// ask). Words inside literals count too, which only costs a round trip.
pub(crate) fn may_change_path(sql: &[u8]) -> bool {
    super::has_any_word(sql, TRIGGERS)
}

/// The hidden query: the schemas of the path, and the session's temporary
/// tables named like a mapped table.
pub(crate) fn probe_query(rules: &RuleSet) -> BytesMut {
    let mut names = String::new();
    for (_, table) in rules.tables() {
        if !names.is_empty() {
            names.push(',');
        }
        names.push('"');
        for c in table.chars() {
            match c {
                '"' | '\\' => {
                    names.push('\\');
                    names.push(c);
                }
                '\'' => names.push_str("''"),
                c => names.push(c),
            }
        }
        names.push('"');
    }
    let sql = format!(
        "SELECT pg_catalog.current_schemas(false)::text[], \
         ARRAY(SELECT c.relname::text FROM pg_catalog.pg_class c \
         WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() \
         AND c.relname = ANY('{{{names}}}'::text[]))"
    );
    let mut out = BytesMut::with_capacity(2 * sql.len() + 128);
    write_run_named(&mut out, PROBE_NAME, sql.as_bytes());
    out
}

/// The statement and portal name of the hidden query: named, since a `Query`
/// or an unnamed `Parse` would drop the client's unnamed statement, which a
/// client may bind in a later round trip (asyncpg does, with a named
/// statement that sets `jit` in between). Not an unquoted SQL name, as
/// the core's `HIDDEN_RUN`.
const PROBE_NAME: &[u8] = b"pgshim:search_path";

/// An answer being read.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    answer: Option<SearchPath>,
    failed: bool,
    /// ReadyForQuery messages seen (the run has [`RUN_READIES`]).
    readies: u32,
}

// === impl Probe ===

impl Probe {
    /// Looks at a whole server message answering the probe.
    ///
    /// # Returns
    /// `Some(path)` once the probe is over: the new path, or `None` inside
    /// when it failed (in an aborted transaction, say).
    pub(crate) fn on_server(&mut self, msg: &[u8]) -> Option<Option<SearchPath>> {
        match *msg.first()? {
            DATA_ROW_TAG => {
                self.answer = data_row(msg);
                self.failed |= self.answer.is_none();
                None
            }
            ERROR_RESPONSE_TAG => {
                self.failed = true;
                None
            }
            READY_FOR_QUERY_TAG => {
                self.readies += 1;
                if self.readies < RUN_READIES {
                    return None;
                }
                Some(if self.failed {
                    None
                } else {
                    self.answer.take()
                })
            }
            _ => None,
        }
    }

    /// Whether a message with `tag` belongs to the probe's answer (others,
    /// such as notices, pass).
    pub(crate) fn answers(tag: u8) -> bool {
        matches!(
            tag,
            PARSE_COMPLETE_TAG
                | BIND_COMPLETE_TAG
                | CLOSE_COMPLETE_TAG
                | ROW_DESCRIPTION_TAG
                | DATA_ROW_TAG
                | COMMAND_COMPLETE_TAG
                | ERROR_RESPONSE_TAG
                | READY_FOR_QUERY_TAG
        )
    }
}

/// The path in a DataRow of two text arrays.
fn data_row(msg: &[u8]) -> Option<SearchPath> {
    let body = msg.get(HEADER_LEN..)?;
    if body.get(..2)? != [0, 2] {
        return None;
    }
    let mut rest = &body[2..];
    let mut columns = Vec::with_capacity(2);
    for _ in 0..2 {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let value = rest.get(4..4 + len)?;
        columns.push(text_array(std::str::from_utf8(value).ok()?)?);
        rest = &rest[4 + len..];
    }
    let temp = columns.pop()?;
    let schemas = columns.pop()?;
    Some(SearchPath::new(schemas, temp))
}

/// The elements of a one-dimensional text array in Postgres's output format
/// (`{a,"b c","d\"e"}`).
pub(crate) fn text_array(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// A DataRow of text values, for tests.
#[cfg(test)]
pub(crate) fn data_row_message(values: &[&str]) -> Vec<u8> {
    use bytes::BufMut;
    let mut body = BytesMut::new();
    body.put_u16(values.len() as u16);
    for v in values {
        body.put_i32(v.len() as i32);
        body.put_slice(v.as_bytes());
    }
    let mut msg = vec![DATA_ROW_TAG];
    msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_in_postgres_text_format() {
        assert_eq!(text_array("{}"), Some(vec![]));
        assert_eq!(
            text_array(r#"{app,"My Schema","q\"x",public}"#),
            Some(vec![
                "app".to_owned(),
                "My Schema".to_owned(),
                "q\"x".to_owned(),
                "public".to_owned()
            ])
        );
        assert_eq!(text_array("{a,"), None);
        assert_eq!(text_array("nope"), None);
    }

    #[test]
    fn a_probe_answer_becomes_the_path() {
        let mut p = Probe::default();
        assert_eq!(
            p.on_server(&data_row_message(&["{app,public}", "{users}"])),
            None
        );
        let ready = [READY_FOR_QUERY_TAG, 0, 0, 0, 5, b'I'];
        assert_eq!(
            p.on_server(&ready),
            None,
            "the closes' ReadyForQuery is next"
        );
        let path = p.on_server(&ready).flatten().unwrap();
        assert_eq!(path.schemas(), ["app", "public"]);
        assert_ne!(
            path,
            SearchPath::new(vec!["app".into(), "public".into()], vec![])
        );
    }

    #[test]
    fn trigger_words_in_any_case() {
        assert!(may_change_path(b"SET SEARCH_PATH TO app"));
        assert!(may_change_path(b"create temporary table users (id int)"));
        assert!(may_change_path(b"ROLLBACK"));
        assert!(may_change_path(b"DROP TABLE pg_temp.users"));
        assert!(may_change_path(b"SET ROLE app_owner"));
        assert!(!may_change_path(b"SELECT name FROM users"));
        assert!(!may_change_path(
            b"SELECT * FROM user_roles WHERE temperature > 3"
        ));
    }
}
