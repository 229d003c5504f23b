//! Raw protocol v3 over TCP, for what real clients never send (malformed
//! packets) and for what they do not expose (status bytes, message order).
use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// `SSLRequest` code.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;

/// A backend message: type byte and body (without the length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Type byte.
    pub tag: u8,
    /// Body after the length word.
    pub body: Vec<u8>,
}

/// What a connection received until the server side closed it.
#[derive(Debug)]
pub struct Received {
    /// Complete messages, in order.
    pub messages: Vec<Message>,
    /// Bytes after the last complete message (a cut-off message or noise).
    pub trailing: Vec<u8>,
    /// How the stream ended: `Ok(())` for EOF, the error otherwise (a reset).
    pub end: Result<(), String>,
}

/// A `StartupMessage` for protocol `major.minor` with the given parameters.
pub fn startup(version: (u16, u16), params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&((i32::from(version.0) << 16) | i32::from(version.1)).to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    untagged(&body)
}

/// A packet without a type byte (startup phase): length word, then `body`.
pub fn untagged(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// An 8-byte request packet (`SSLRequest`, `GSSENCRequest`).
pub fn request(code: i32) -> Vec<u8> {
    untagged(&code.to_be_bytes())
}

/// A frontend message with type byte `tag`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A simple `Query`.
pub fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql))
}

/// `s` with its NUL terminator.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Reads one backend message; `Ok(None)` at a clean EOF between messages.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Message>> {
    let tag = match r.read_u8().await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = r.read_i32().await?;
    assert!(
        (4..1 << 30).contains(&len),
        "backend message {:?} with invalid length {len}",
        tag as char
    );
    let mut body = vec![0; len as usize - 4];
    r.read_exact(&mut body).await?;
    Ok(Some(Message { tag, body }))
}

/// Reads messages until `pred` matches one (returned last), failing on EOF.
pub async fn read_until<R: AsyncRead + Unpin>(
    r: &mut R,
    mut pred: impl FnMut(&Message) -> bool,
) -> Vec<Message> {
    let mut seen = Vec::new();
    loop {
        let m = super::within(20, "expected backend message", read_message(r))
            .await
            .expect("read backend message")
            .unwrap_or_else(|| panic!("connection closed; received so far: {seen:?}"));
        let done = pred(&m);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

/// Reads everything until the other side closes (within 20 s).
pub async fn read_to_end<R: AsyncRead + Unpin>(r: &mut R) -> Received {
    let mut raw = Vec::new();
    let end = super::within(20, "pgshim closes the connection", async {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let mut messages = Vec::new();
    let mut rest = raw.as_slice();
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 || rest.len() < 1 + len as usize {
            break;
        }
        messages.push(Message {
            tag: rest[0],
            body: rest[5..1 + len as usize].to_vec(),
        });
        rest = &rest[1 + len as usize..];
    }
    Received {
        messages,
        trailing: rest.to_vec(),
        end,
    }
}

/// The fields of an `ErrorResponse`/`NoticeResponse` body, by field code.
pub fn fields(body: &[u8]) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.insert(code, String::from_utf8_lossy(&tail[..end]).into_owned());
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

/// Asserts that the connection got exactly one message, a FATAL
/// `ErrorResponse` from pgshim itself with SQLSTATE `code`, and was then
/// closed. Returns the message text.
pub async fn expect_pgshim_error_then_close<R: AsyncRead + Unpin>(r: &mut R, code: &str) -> String {
    let got = read_to_end(r).await;
    let [error] = got.messages.as_slice() else {
        panic!("expected exactly one ErrorResponse, got {got:?}");
    };
    assert_eq!(error.tag, b'E', "expected an ErrorResponse, got {got:?}");
    let f = fields(&error.body);
    assert_eq!(f.get(&b'C').map(String::as_str), Some(code), "{f:?}");
    assert_eq!(f.get(&b'S').map(String::as_str), Some("FATAL"), "{f:?}");
    let text = f.get(&b'M').cloned().unwrap_or_default();
    assert!(
        text.starts_with("pgshim:"),
        "message should start with `pgshim:`: {f:?}"
    );
    assert!(got.trailing.is_empty(), "bytes after the error: {got:?}");
    text
}

/// Asserts that the connection was closed without a single byte in reply,
/// as Postgres closes on a startup packet it cannot read (it only logs), and
/// that the close was clean (for TLS: with close_notify).
pub async fn expect_silent_close<R: AsyncRead + Unpin>(r: &mut R) {
    let got = read_to_end(r).await;
    assert!(
        got.messages.is_empty() && got.trailing.is_empty(),
        "expected a close without a reply, got {got:?}"
    );
    assert_eq!(got.end, Ok(()), "expected a clean close: {got:?}");
}

/// The process id and secret key from a login's `BackendKeyData`, as a
/// 16-byte `CancelRequest` for that backend.
pub fn cancel_request(login: &[Message]) -> Vec<u8> {
    let key = login
        .iter()
        .find(|m| m.tag == b'K')
        .unwrap_or_else(|| panic!("no BackendKeyData in {login:?}"));
    let mut body = 80_877_102i32.to_be_bytes().to_vec();
    body.extend_from_slice(&key.body);
    untagged(&body)
}

/// The backend process id announced in a login's `BackendKeyData`.
pub fn backend_pid(login: &[Message]) -> i32 {
    let key = login
        .iter()
        .find(|m| m.tag == b'K')
        .unwrap_or_else(|| panic!("no BackendKeyData in {login:?}"));
    i32::from_be_bytes([key.body[0], key.body[1], key.body[2], key.body[3]])
}

/// Opens a raw connection and logs in (the user must need no password) with the startup
/// packet `startup`, returning the stream after the first `ReadyForQuery`
/// and every message before it.
pub async fn login(addr: SocketAddr, startup: &[u8]) -> (TcpStream, Vec<Message>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let seen = login_over(&mut s, startup).await;
    (s, seen)
}

/// [`login`] over a connection already open (e.g. TLS), returning every
/// message up to the first `ReadyForQuery`.
pub async fn login_over<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    startup: &[u8],
) -> Vec<Message> {
    s.write_all(startup).await.expect("send startup");
    s.flush().await.expect("flush startup");
    let seen = read_until(s, |m| m.tag == b'Z' || m.tag == b'E').await;
    let last = seen.last().expect("messages");
    assert_eq!(last.tag, b'Z', "login failed: {seen:?}");
    seen
}

/// The standard login for `user` (trust) on the test database.
pub fn trust_startup(user: &str, application_name: &str) -> Vec<u8> {
    startup(
        (3, 0),
        &[
            ("user", user),
            ("database", super::pg::DB),
            ("application_name", application_name),
        ],
    )
}

/// Sends `bytes` in one write.
pub async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.expect("write");
    s.flush().await.expect("flush");
}

/// `Parse` of the unnamed statement.
pub fn parse(sql: &str) -> Vec<u8> {
    let mut body = cstr("");
    body.extend(cstr(sql));
    body.extend(0i16.to_be_bytes());
    message(b'P', &body)
}

/// `Bind` of the unnamed statement to the unnamed portal, and `Execute`.
pub fn bind_execute() -> Vec<u8> {
    let mut bind = cstr("");
    bind.extend(cstr(""));
    bind.extend([0u8; 6]);
    let mut execute = cstr("");
    execute.extend(0i32.to_be_bytes());
    [message(b'B', &bind), message(b'E', &execute)].concat()
}

/// `Sync`.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

/// Tags and, for errors, the SQLSTATE, until `syncs` ReadyForQuery.
pub async fn replies(s: &mut tokio::net::TcpStream, syncs: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..syncs {
        let got: Vec<Message> = read_until(s, |m| m.tag == b'Z').await;
        for m in got {
            out.push(match m.tag {
                b'E' => format!("E{}", fields(&m.body)[&b'C']),
                b'D' => format!("D{}", String::from_utf8_lossy(&m.body[6..])),
                t => (t as char).to_string(),
            });
        }
    }
    out
}
