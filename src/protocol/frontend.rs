//! Frontend messages pgshim decodes to rewrite: `Query` and `Parse`. Bodies
//! are read with bounds checks only; anything malformed is left for Postgres to
//! reject, so the client sees exactly the error a direct connection gives.
use bytes::{BufMut, BytesMut};
use memchr::memchr;

use super::header::HEADER_LEN;

/// Frontend `Parse`.
pub const PARSE_TAG: u8 = b'P';
/// Frontend `Bind`.
pub const BIND_TAG: u8 = b'B';
/// Frontend `Describe`.
pub const DESCRIBE_TAG: u8 = b'D';
/// Frontend `Close`.
pub const CLOSE_TAG: u8 = b'C';
/// Frontend `Flush`.
pub const FLUSH_TAG: u8 = b'H';
/// `Describe`/`Close` target kind: a prepared statement.
pub const TARGET_STATEMENT: u8 = b'S';

/// A decoded `Parse` message, borrowing from the raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseBody<'a> {
    /// Statement name (empty for the unnamed statement).
    pub name: &'a [u8],
    /// The SQL text.
    pub sql: &'a [u8],
    /// The parameter type count and OIDs, as sent.
    pub param_types: &'a [u8],
}

/// The SQL text of a whole `Query` message, without its terminator.
pub fn query_sql(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(HEADER_LEN..)?;
    let end = memchr(0, body)?;
    (end + 1 == body.len()).then(|| &body[..end])
}

/// Decodes a whole `Parse` message.
pub fn parse_body(msg: &[u8]) -> Option<ParseBody<'_>> {
    let body = msg.get(HEADER_LEN..)?;
    let name_end = memchr(0, body)?;
    let rest = &body[name_end + 1..];
    let sql_end = memchr(0, rest)?;
    Some(ParseBody {
        name: &body[..name_end],
        sql: &rest[..sql_end],
        param_types: &rest[sql_end + 1..],
    })
}

/// The prepared statement a whole `Bind` message uses.
pub fn bind_statement(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(HEADER_LEN..)?;
    let portal_end = memchr(0, body)?;
    let rest = &body[portal_end + 1..];
    Some(&rest[..memchr(0, rest)?])
}

/// The prepared statement a whole `Describe` or `Close` message targets, when
/// it targets a statement (not a portal).
pub fn statement_target(msg: &[u8]) -> Option<&[u8]> {
    target(msg, TARGET_STATEMENT)
}

/// The portal a whole `Describe` message targets, when it targets a portal.
pub fn portal_target(msg: &[u8]) -> Option<&[u8]> {
    target(msg, TARGET_PORTAL)
}

/// The name a whole `Describe` or `Close` message targets, when its target
/// is of `kind`.
fn target(msg: &[u8], kind: u8) -> Option<&[u8]> {
    let body = msg.get(HEADER_LEN..)?;
    if *body.first()? != kind {
        return None;
    }
    let name = &body[1..];
    Some(&name[..memchr(0, name)?])
}

/// The portal a whole `Bind` message binds.
pub fn bind_portal(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(HEADER_LEN..)?;
    Some(&body[..memchr(0, body)?])
}

/// Appends `Close` of prepared statement `name`.
pub fn write_close_statement(out: &mut BytesMut, name: &[u8]) {
    write_targeted(out, CLOSE_TAG, TARGET_STATEMENT, name);
}

/// Appends a `Describe` or `Close` (`tag`) of the statement or portal
/// (`kind`) `name`.
fn write_targeted(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    out.put_u8(tag);
    out.put_i32((4 + 1 + name.len() + 1) as i32);
    out.put_u8(kind);
    out.put_slice(name);
    out.put_u8(0);
}

/// ReadyForQuery messages answering one [`write_run_named`].
pub const RUN_READIES: u32 = 2;

/// Frontend `Execute`.
pub const EXECUTE_TAG: u8 = b'E';
/// `Describe`/`Close` target kind: a portal.
pub const TARGET_PORTAL: u8 = b'P';

/// Appends the extended-protocol run of `sql`, which takes no parameters,
/// under statement and portal `name`: `Parse`, `Bind` (text results),
/// `Execute`, `Sync`, then `Close` of both and `Sync` again, so they are
/// closed even when the run failed (Postgres skips to the Sync after an
/// error, and accepts a Close in a failed transaction). Answered by two
/// ReadyForQuery ([`RUN_READIES`]). Unlike a `Query` message it leaves the
/// client's unnamed statement and portal alone.
pub fn write_run_named(out: &mut BytesMut, name: &[u8], sql: &[u8]) {
    write_parse(
        out,
        &ParseBody {
            name,
            sql,
            param_types: &[0, 0],
        },
        sql,
    );
    // Bind: portal, statement, no parameter formats, no parameters, no result formats.
    out.put_u8(BIND_TAG);
    out.put_i32((4 + 2 * (name.len() + 1) + 2 + 2 + 2) as i32);
    for _ in 0..2 {
        out.put_slice(name);
        out.put_u8(0);
    }
    out.put_slice(&[0, 0, 0, 0, 0, 0]);
    out.put_u8(EXECUTE_TAG);
    out.put_i32((4 + name.len() + 1 + 4) as i32);
    out.put_slice(name);
    out.put_u8(0);
    out.put_i32(0);
    out.put_u8(super::SYNC_TAG);
    out.put_i32(4);
    for kind in [TARGET_PORTAL, TARGET_STATEMENT] {
        write_targeted(out, CLOSE_TAG, kind, name);
    }
    out.put_u8(super::SYNC_TAG);
    out.put_i32(4);
}

/// Appends `Describe` of prepared statement `name`.
pub fn write_describe_statement(out: &mut BytesMut, name: &[u8]) {
    write_targeted(out, DESCRIBE_TAG, TARGET_STATEMENT, name);
}

/// Appends `Flush`: the server sends what it has buffered.
pub fn write_flush(out: &mut BytesMut) {
    out.put_u8(FLUSH_TAG);
    out.put_i32(4);
}

/// Appends a `Query` message carrying `sql`.
pub fn write_query(out: &mut BytesMut, sql: &[u8]) {
    out.put_u8(super::QUERY_TAG);
    out.put_i32((4 + sql.len() + 1) as i32);
    out.put_slice(sql);
    out.put_u8(0);
}

/// Appends a `Parse` message: `parse` with its SQL replaced by `sql`.
pub fn write_parse(out: &mut BytesMut, parse: &ParseBody<'_>, sql: &[u8]) {
    out.put_u8(PARSE_TAG);
    out.put_i32((4 + parse.name.len() + 1 + sql.len() + 1 + parse.param_types.len()) as i32);
    out.put_slice(parse.name);
    out.put_u8(0);
    out.put_slice(sql);
    out.put_u8(0);
    out.put_slice(parse.param_types);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let mut out = BytesMut::new();
        write_query(&mut out, b"select 1");
        assert_eq!(query_sql(&out), Some(&b"select 1"[..]));
    }

    #[test]
    fn query_with_trailing_garbage_is_not_decoded() {
        assert_eq!(query_sql(b"Q\0\0\0\x07a\0b"), None);
        assert_eq!(query_sql(b"Q\0\0\0\x05a"), None);
    }

    #[test]
    fn parse_round_trip_keeps_name_and_types() {
        let original = ParseBody {
            name: b"s1",
            sql: b"select $1",
            param_types: &[0, 1, 0, 0, 0, 23],
        };
        let mut out = BytesMut::new();
        write_parse(&mut out, &original, original.sql);
        let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        assert_eq!(parse_body(&out), Some(original));
    }

    #[test]
    fn bind_names_its_statement() {
        let msg = b"B\0\0\0\x0ep1\0s1\0\0\0\0\0\0\0";
        assert_eq!(bind_statement(msg), Some(&b"s1"[..]));
        assert_eq!(bind_statement(b"B\0\0\0\x06p1"), None);
    }

    #[test]
    fn portal_targets_and_bound_portals() {
        assert_eq!(portal_target(b"D\0\0\0\x08Pp1\0"), Some(&b"p1"[..]));
        assert_eq!(portal_target(b"D\0\0\0\x08Ss1\0"), None);
        assert_eq!(portal_target(b"D\0\0\0\x08Pp1"), None);
        let msg = b"B\0\0\0\x0ep1\0s1\0\0\0\0\0\0\0";
        assert_eq!(bind_portal(msg), Some(&b"p1"[..]));
        assert_eq!(bind_portal(b"B\0\0\0\x06p1"), None);
    }

    #[test]
    fn close_round_trip_and_portal_targets_ignored() {
        let mut out = BytesMut::new();
        write_close_statement(&mut out, b"s1");
        assert_eq!(statement_target(&out), Some(&b"s1"[..]));
        assert_eq!(statement_target(b"C\0\0\0\x08Pp1\0"), None);
    }

    #[test]
    fn a_named_run_frames_every_message() {
        let mut out = BytesMut::new();
        write_run_named(&mut out, b"n", b"select 1");
        let mut tags = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            tags.push(rest[0]);
            rest = &rest[1 + len..];
        }
        assert_eq!(tags, b"PBESCCS");
        assert_eq!(bind_statement(&out[parse_len(&out)..]), Some(&b"n"[..]));
    }

    fn parse_len(out: &[u8]) -> usize {
        1 + i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize
    }

    #[test]
    fn truncated_parse_is_not_decoded() {
        assert_eq!(parse_body(b"P\0\0\0\x06s1"), None);
        assert_eq!(parse_body(b"P\0"), None);
    }
}
