//! Backend messages pgshim writes or edits itself: `ErrorResponse`, and the
//! SASL mechanism list of `AuthenticationSASL`.
use bytes::{BufMut, BytesMut};
use memchr::memchr;

use super::{AUTHENTICATION_TAG, ERROR_RESPONSE_TAG};

/// Backend `ParseComplete`.
pub const PARSE_COMPLETE_TAG: u8 = b'1';
/// Backend `CloseComplete`.
pub const CLOSE_COMPLETE_TAG: u8 = b'3';
/// Backend `BindComplete`.
pub const BIND_COMPLETE_TAG: u8 = b'2';
/// Backend `CommandComplete`.
pub const COMMAND_COMPLETE_TAG: u8 = b'C';
/// Backend `ParameterDescription`.
pub const PARAMETER_DESCRIPTION_TAG: u8 = b't';
/// Backend `RowDescription`.
pub const ROW_DESCRIPTION_TAG: u8 = b'T';
/// Backend `NoData`.
pub const NO_DATA_TAG: u8 = b'n';

/// `AuthenticationSASL` sub-code.
const AUTH_SASL: i32 = 10;
/// The channel-binding mechanism pgshim hides from clients, since TLS ends at pgshim.
const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// Severity of an `ErrorResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Appends an `ErrorResponse` to `out`.
pub fn write_error(
    out: &mut BytesMut,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    write_error_fields(
        out,
        severity,
        &[(b'C', Some(code)), (b'M', Some(message)), (b'H', hint)],
    );
}

/// Appends an `ErrorResponse` with `severity` and the other fields given
/// (by field code; `None` values are left out).
pub fn write_error_fields(out: &mut BytesMut, severity: Severity, fields: &[(u8, Option<&str>)]) {
    let start = out.len();
    out.put_u8(ERROR_RESPONSE_TAG);
    out.put_i32(0);
    let severity = [
        (b'S', Some(severity.as_str())),
        (b'V', Some(severity.as_str())),
    ];
    for &(field, value) in severity.iter().chain(fields) {
        if let Some(value) = value {
            out.put_u8(field);
            put_cstr(out, value);
        }
    }
    out.put_u8(0);
    patch_len(out, start);
}

/// The value of field `code` (`b'C'` for the SQLSTATE, `b'P'` for the
/// position, ...) of a whole `ErrorResponse` or `NoticeResponse`.
pub fn error_field(msg: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = msg.get(5..)?;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let end = memchr(0, tail)?;
        if field == code {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The `ErrorResponse` `msg` with its position field (`P`, in characters
/// from 1) moved back by `by` characters: the error of a statement text that
/// pgshim sent behind a prefix of `by` characters.
///
/// # Returns
/// `None` when `msg` is malformed; the message unchanged in substance when it
/// has no position.
pub fn shift_position(msg: &[u8], by: usize) -> Option<BytesMut> {
    map_position(msg, |p| p.saturating_sub(by).max(1))
}

/// The `ErrorResponse` (or `NoticeResponse`) `msg` with its position field
/// (`P`) replaced by `to(position)`.
///
/// # Returns
/// `None` when `msg` is malformed; the message unchanged in substance when it
/// has no position.
pub fn map_position(msg: &[u8], to: impl Fn(usize) -> usize) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(msg.len() + 8);
    out.put_u8(*msg.first()?);
    out.put_i32(0);
    let mut rest = msg.get(5..)?;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = memchr(0, tail)?;
        let value = &tail[..end];
        out.put_u8(field);
        let shifted = (field == b'P')
            .then(|| std::str::from_utf8(value).ok()?.parse::<usize>().ok())
            .flatten()
            .map(|p| to(p).to_string());
        match shifted {
            Some(p) => out.put_slice(p.as_bytes()),
            None => out.put_slice(value),
        }
        out.put_u8(0);
        rest = &tail[end + 1..];
    }
    out.put_u8(0);
    patch_len(&mut out, 0);
    Some(out)
}

/// Strips `SCRAM-SHA-256-PLUS` from an `AuthenticationSASL` message.
///
/// # Returns
/// The edited message, or `None` when `msg` is another message or offers no
/// channel binding, in which case it is forwarded as it is.
pub fn strip_channel_binding(msg: &[u8]) -> Option<BytesMut> {
    if msg.first() != Some(&AUTHENTICATION_TAG) || msg.get(5..9)? != AUTH_SASL.to_be_bytes() {
        return None;
    }
    let mut mechanisms = msg.get(9..)?;
    let mut kept = Vec::new();
    let mut stripped = false;
    while let Some(end) = memchr(0, mechanisms) {
        let name = &mechanisms[..end];
        mechanisms = &mechanisms[end + 1..];
        if name.is_empty() {
            break;
        }
        if name == SCRAM_PLUS {
            stripped = true;
        } else {
            kept.push(name);
        }
    }
    if !stripped {
        return None;
    }
    let mut out = BytesMut::with_capacity(msg.len());
    out.put_u8(AUTHENTICATION_TAG);
    out.put_i32(0);
    out.put_i32(AUTH_SASL);
    for name in kept {
        out.put_slice(name);
        out.put_u8(0);
    }
    out.put_u8(0);
    patch_len(&mut out, 0);
    Some(out)
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside a field would end it early; messages are ours, but be safe.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.put_u8(0);
}

fn patch_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let mut out = BytesMut::new();
        write_error(&mut out, Severity::Fatal, "08001", "pgshim: nope", None);
        assert_eq!(out[0], b'E');
        let len = i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        let body = &out[5..];
        assert_eq!(body, b"SFATAL\0VFATAL\0C08001\0Mpgshim: nope\0\0");
    }

    #[test]
    fn positions_shift_back_and_other_fields_stay() {
        let mut out = BytesMut::new();
        write_error_fields(
            &mut out,
            Severity::Error,
            &[
                (b'C', Some("42601")),
                (b'M', Some("syntax error")),
                (b'P', Some("40")),
            ],
        );
        let shifted = shift_position(&out, 30).unwrap();
        assert_eq!(error_field(&shifted, b'P'), Some(&b"10"[..]));
        assert_eq!(error_field(&shifted, b'C'), Some(&b"42601"[..]));
        assert_eq!(error_field(&shifted, b'M'), Some(&b"syntax error"[..]));
        assert_eq!(shifted.len(), out.len());
        for cut in 0..out.len() {
            let _ = shift_position(&out[..cut], 3);
            let _ = error_field(&out[..cut], b'P');
        }
    }

    fn sasl(mechs: &[&[u8]]) -> Vec<u8> {
        let mut body = AUTH_SASL.to_be_bytes().to_vec();
        for m in mechs {
            body.extend_from_slice(m);
            body.push(0);
        }
        body.push(0);
        let mut v = vec![b'R'];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn channel_binding_mechanism_removed() {
        let edited =
            strip_channel_binding(&sasl(&[b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-256"])).unwrap();
        assert_eq!(&edited[..], &sasl(&[b"SCRAM-SHA-256"])[..]);
    }

    #[test]
    fn plain_scram_left_alone() {
        assert!(strip_channel_binding(&sasl(&[b"SCRAM-SHA-256"])).is_none());
        assert!(strip_channel_binding(b"R\0\0\0\x08\0\0\0\0").is_none());
        assert!(strip_channel_binding(b"R\0\0").is_none());
    }
}
