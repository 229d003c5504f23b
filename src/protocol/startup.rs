//! Packets a client sends before the regular message flow: StartupMessage,
//! SSLRequest, GSSENCRequest and CancelRequest. They have no type byte, only an
//! `i32` length followed by an `i32` code.
use memchr::memchr;

/// `SSLRequest` code.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `CancelRequest` code.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Postgres refuses startup packets longer than this; so does pgshim.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;
/// Longest cancel key protocol 3.2 allows.
const MAX_CANCEL_KEY_LEN: usize = 256;

/// A decoded pre-startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// A cancel request; the caller forwards the raw packet bytes.
    Cancel,
    /// A StartupMessage for protocol `major.minor`.
    Startup(StartupParams),
}

/// The parameters of a StartupMessage that pgshim logs; the packet itself is
/// forwarded raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams {
    /// Protocol version the client asked for, `(major, minor)`.
    pub version: (u16, u16),
    /// `user`.
    pub user: String,
    /// `database`, defaulting to the user as Postgres does.
    pub database: String,
    /// `application_name`, if given.
    pub application_name: Option<String>,
}

/// A packet that cannot be a valid startup packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Length below 8 or above the limit.
    #[error("invalid startup packet length {0}")]
    BadLength(i32),
    /// A code that is neither a known request nor protocol 3.x.
    #[error("unsupported frontend protocol {}.{}: pgshim supports 3.0 to 3.2", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocol(u32),
    /// A request packet whose length does not fit its code.
    #[error("invalid length {len} for request code {code}")]
    BadRequestLength {
        /// The code.
        code: u32,
        /// The packet length.
        len: usize,
    },
    /// The parameter list is not a sequence of name/value strings.
    #[error("invalid startup packet layout")]
    BadParameters,
}

// === impl StartupError ===

impl StartupError {
    /// True when Postgres answers this packet with an ErrorResponse. For a
    /// length that cannot be right it only logs and closes, so a peer that is
    /// not speaking the protocol (or a client hanging up with a Terminate
    /// before its startup packet) gets no reply it could misread.
    pub fn answered(&self) -> bool {
        match self {
            StartupError::UnsupportedProtocol(_) | StartupError::BadParameters => true,
            StartupError::BadLength(_) | StartupError::BadRequestLength { .. } => false,
        }
    }
}

/// Parses the packet at the front of `buf`.
///
/// # Returns
/// `Ok(None)` when more bytes are needed, else the packet and its length.
///
/// # Errors
/// [`StartupError`] for anything Postgres itself would refuse.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet, usize)>, StartupError> {
    let Some(head) = buf.get(..8) else {
        if let Some(len) = buf.get(..4) {
            check_len(i32::from_be_bytes([len[0], len[1], len[2], len[3]]))?;
        }
        return Ok(None);
    };
    let len = check_len(i32::from_be_bytes([head[0], head[1], head[2], head[3]]))?;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let fixed = |expected: bool, p: Packet| {
        if expected {
            Ok(Some((p, len)))
        } else {
            Err(StartupError::BadRequestLength { code, len })
        }
    };
    match code {
        SSL_REQUEST_CODE => fixed(len == 8, Packet::SslRequest),
        GSSENC_REQUEST_CODE => fixed(len == 8, Packet::GssEncRequest),
        CANCEL_REQUEST_CODE => fixed(
            (16..=12 + MAX_CANCEL_KEY_LEN).contains(&len),
            Packet::Cancel,
        ),
        _ if code >> 16 == 3 => Ok(Some((
            Packet::Startup(parse_params(code, &packet[8..])?),
            len,
        ))),
        _ => Err(StartupError::UnsupportedProtocol(code)),
    }
}

fn check_len(len: i32) -> Result<usize, StartupError> {
    if !(8..=MAX_STARTUP_PACKET_LEN as i32).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    Ok(len as usize)
}

fn parse_params(code: u32, mut body: &[u8]) -> Result<StartupParams, StartupError> {
    let mut params = StartupParams {
        version: ((code >> 16) as u16, (code & 0xffff) as u16),
        ..StartupParams::default()
    };
    loop {
        let name = read_cstr(&mut body)?;
        if name.is_empty() {
            break;
        }
        let value = String::from_utf8_lossy(read_cstr(&mut body)?).into_owned();
        match name {
            b"user" => params.user = value,
            b"database" => params.database = value,
            b"application_name" => params.application_name = Some(value),
            _ => {}
        }
    }
    if params.database.is_empty() {
        params.database.clone_from(&params.user);
    }
    Ok(params)
}

fn read_cstr<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], StartupError> {
    let end = memchr(0, buf).ok_or(StartupError::BadParameters)?;
    let s = &buf[..end];
    *buf = &buf[end + 1..];
    Ok(s)
}

/// Builds a StartupMessage; used by tests and by pgshim's own connections.
pub fn encode_startup(version: (u16, u16), params: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0; 4];
    out.extend_from_slice(&((u32::from(version.0) << 16) | u32::from(version.1)).to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// The 8-byte SSLRequest.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&8i32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_params_parsed_and_database_defaults_to_user() {
        let p = encode_startup((3, 0), &[("user", "alice"), ("application_name", "x")]);
        let (packet, len) = parse(&p).unwrap().unwrap();
        assert_eq!(len, p.len());
        let Packet::Startup(params) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(params.user, "alice");
        assert_eq!(params.database, "alice");
        assert_eq!(params.version, (3, 0));
    }

    #[test]
    fn protocol_3_2_accepted() {
        let p = encode_startup((3, 2), &[("user", "a")]);
        assert!(matches!(parse(&p), Ok(Some((Packet::Startup(_), _)))));
    }

    #[test]
    fn ssl_request_recognised() {
        assert_eq!(
            parse(&encode_ssl_request()),
            Ok(Some((Packet::SslRequest, 8)))
        );
    }

    #[test]
    fn unknown_code_rejected() {
        let mut p = encode_startup((2, 0), &[("user", "a")]);
        assert!(matches!(
            parse(&p),
            Err(StartupError::UnsupportedProtocol(_))
        ));
        p[4..8].copy_from_slice(&1234u32.to_be_bytes());
        let err = parse(&p).unwrap_err().to_string();
        assert!(err.contains("unsupported frontend protocol"), "{err}");
    }

    #[test]
    fn bad_lengths_rejected_before_the_body_arrives() {
        assert_eq!(
            parse(&(-5i32).to_be_bytes()),
            Err(StartupError::BadLength(-5))
        );
        assert_eq!(
            parse(&100_000i32.to_be_bytes()),
            Err(StartupError::BadLength(100_000))
        );
        assert_eq!(parse(&[0, 0]), Ok(None));
    }

    #[test]
    fn unterminated_parameters_rejected() {
        let mut p = encode_startup((3, 0), &[("user", "a")]);
        p.pop();
        p.pop();
        let len = p.len() as i32;
        p[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&p), Err(StartupError::BadParameters));
    }

    #[test]
    fn terminate_before_startup_is_a_length_that_goes_unanswered() {
        let err = parse(&[b'X', 0, 0, 0, 4]).unwrap_err();
        assert_eq!(err, StartupError::BadLength(0x5800_0000));
        assert!(!err.answered());
        assert!(StartupError::UnsupportedProtocol(0x0002_0000).answered());
    }

    #[test]
    fn cancel_with_long_key_accepted() {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        p.extend_from_slice(&[1; 4 + 32]);
        let len = p.len() as i32;
        p[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&p), Ok(Some((Packet::Cancel, p.len()))));
    }
}
