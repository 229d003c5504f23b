//! Protocol details real clients hide, checked over raw TCP through pgshim:
//! ReadyForQuery status bytes, ParameterStatus, notices, FunctionCall, Flush
//! without Sync, pipelining in one write, protocol 3.2 negotiation,
//! GSSENCRequest, SSLRequest without client TLS, and Terminate.
use tokio::io::AsyncWriteExt;

use crate::support::pg::{backends_named, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{
    self, cstr, fields, login, message, query, read_to_end, read_until, request, send,
    trust_startup, Message, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};
use crate::support::{eventually, unique_name, within};

fn ready_status(messages: &[Message]) -> u8 {
    let z = messages.last().expect("messages");
    assert_eq!(z.tag, b'Z', "{messages:?}");
    z.body[0]
}

fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}

async fn round_trip(s: &mut tokio::net::TcpStream, sql: &str) -> Vec<Message> {
    send(s, &query(sql)).await;
    read_until(s, |m| m.tag == b'Z').await
}

#[tokio::test]
async fn ready_for_query_reports_transaction_status() {
    let proxy = proxy().start().await;
    let (mut s, seen) = login(proxy.addr, &trust_startup(TRUST_USER, "rfq")).await;
    assert_eq!(ready_status(&seen), b'I');
    assert_eq!(ready_status(&round_trip(&mut s, "BEGIN").await), b'T');
    let failed = round_trip(&mut s, "SELECT 1/0").await;
    assert_eq!(tags(&failed), "EZ");
    assert_eq!(fields(&failed[0].body)[&b'C'], "22012");
    assert_eq!(ready_status(&failed), b'E');
    assert_eq!(ready_status(&round_trip(&mut s, "ROLLBACK").await), b'I');
}

#[tokio::test]
async fn parameter_status_and_notices_are_forwarded() {
    let proxy = proxy().start().await;
    let (mut s, seen) = login(proxy.addr, &trust_startup(TRUST_USER, "before")).await;
    let initial: Vec<String> = seen
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert!(
        initial.iter().any(|p| p.starts_with("server_version\0")),
        "{initial:?}"
    );
    let got = round_trip(&mut s, "SET application_name = 'after'").await;
    let mut sorted: Vec<u8> = got.iter().map(|m| m.tag).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, b"CSZ", "{got:?}");
    let status = got.iter().find(|m| m.tag == b'S').unwrap();
    assert_eq!(status.body, b"application_name\0after\0");

    send(
        &mut s,
        &query("DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$"),
    )
    .await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&got), "NCZ", "{got:?}");
    let notice = fields(&got[0].body);
    assert_eq!(notice[&b'M'], "hello from plpgsql");
    assert_eq!(notice[&b'S'], "NOTICE");
}

#[tokio::test]
async fn function_call_round_trip() {
    let proxy = proxy().start().await;
    let (mut s, _) = login(proxy.addr, &trust_startup(TRUST_USER, "fcall")).await;
    send(
        &mut s,
        &query("SELECT 'int4pl(int4,int4)'::regprocedure::oid::int4"),
    )
    .await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    let row = got.iter().find(|m| m.tag == b'D').expect("DataRow");
    // DataRow: int16 column count, int32 length, text value.
    let oid: i32 = String::from_utf8_lossy(&row.body[6..]).parse().unwrap();

    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes()); // one format code for all args
    body.extend_from_slice(&1i16.to_be_bytes()); // binary
    body.extend_from_slice(&2i16.to_be_bytes()); // two arguments
    for arg in [40i32, 2] {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&arg.to_be_bytes());
    }
    body.extend_from_slice(&1i16.to_be_bytes()); // binary result
    send(&mut s, &message(b'F', &body)).await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&got), "VZ", "{got:?}");
    assert_eq!(
        got[0].body,
        [&4i32.to_be_bytes()[..], &42i32.to_be_bytes()].concat()
    );
}

#[tokio::test]
async fn flush_without_sync_gets_answers_before_sync() {
    let proxy = proxy().start().await;
    let (mut s, _) = login(proxy.addr, &trust_startup(TRUST_USER, "flush")).await;
    let mut batch = Vec::new();
    batch.extend(message(
        b'P',
        &[cstr("st"), cstr("SELECT 7 + $1::int4"), vec![0, 0]].concat(),
    ));
    let mut bind = [cstr("po"), cstr("st")].concat();
    bind.extend_from_slice(&0i16.to_be_bytes()); // param formats: text
    bind.extend_from_slice(&1i16.to_be_bytes()); // one parameter
    bind.extend_from_slice(&2i32.to_be_bytes());
    bind.extend_from_slice(b"35");
    bind.extend_from_slice(&0i16.to_be_bytes()); // result formats: text
    batch.extend(message(b'B', &bind));
    batch.extend(message(
        b'E',
        &[cstr("po"), 0i32.to_be_bytes().to_vec()].concat(),
    ));
    batch.extend(message(b'H', &[]));
    send(&mut s, &batch).await;
    // Everything up to CommandComplete arrives although no Sync was sent.
    let got = read_until(&mut s, |m| m.tag == b'C' || m.tag == b'E').await;
    assert_eq!(tags(&got), "12DC", "{got:?}");
    assert_eq!(&got[2].body[6..], b"42");
    send(&mut s, &message(b'S', &[])).await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&got), "Z");
    // The named statement is still there for a second round.
    let mut again = message(b'B', &bind);
    again.extend(message(
        b'E',
        &[cstr("po"), 0i32.to_be_bytes().to_vec()].concat(),
    ));
    again.extend(message(b'S', &[]));
    send(&mut s, &again).await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&got), "2DCZ", "{got:?}");
}

#[tokio::test]
async fn queries_pipelined_in_one_write() {
    let proxy = proxy().start().await;
    let (mut s, _) = login(proxy.addr, &trust_startup(TRUST_USER, "pipeline")).await;
    let batch: Vec<u8> = (1..=20)
        .flat_map(|i| query(&format!("SELECT {i}")))
        .collect();
    send(&mut s, &batch).await;
    let mut values = Vec::new();
    for _ in 1..=20 {
        let got = read_until(&mut s, |m| m.tag == b'Z').await;
        assert_eq!(tags(&got), "TDCZ", "{got:?}");
        values.push(String::from_utf8_lossy(&got[1].body[6..]).into_owned());
    }
    let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn protocol_3_2_startup_is_negotiated_by_the_server() {
    let proxy = proxy().start().await;
    let startup = wire::startup(
        (3, 2),
        &[("user", TRUST_USER), ("database", crate::support::pg::DB)],
    );
    let (mut s, seen) = login(proxy.addr, &startup).await;
    let version: u32 = seen
        .iter()
        .filter(|m| m.tag == b'S')
        .find_map(|m| {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            let value = text.strip_prefix("server_version\0")?.to_owned();
            value.split(['.', ' ']).next()?.parse().ok()
        })
        .expect("server_version");
    let negotiated = seen.iter().find(|m| m.tag == b'v');
    if version < 18 {
        // Servers before 18 speak 3.0 and say so; pgshim passes it through.
        let v = negotiated.unwrap_or_else(|| panic!("NegotiateProtocolVersion missing: {seen:?}"));
        assert_eq!(&v.body[..4], &0x0003_0000i32.to_be_bytes());
    }
    send(&mut s, &query("SELECT 1")).await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert_eq!(tags(&got), "TDCZ");
}

#[tokio::test]
async fn gssenc_request_is_refused_then_startup_proceeds() {
    let proxy = proxy().start().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut s, &request(GSSENC_REQUEST_CODE)).await;
    let mut answer = [0u8; 1];
    within(
        20,
        "GSSENCRequest answer",
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer),
    )
    .await
    .unwrap();
    assert_eq!(answer[0], b'N');
    send(&mut s, &trust_startup(TRUST_USER, "gss")).await;
    let got = read_until(&mut s, |m| m.tag == b'Z' || m.tag == b'E').await;
    assert_eq!(got.last().unwrap().tag, b'Z', "{got:?}");
}

#[tokio::test]
async fn ssl_request_without_client_tls_is_answered_n_even_when_pipelined() {
    let proxy = proxy().start().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Without [tls], 'N' is the answer and the bytes after it are a normal
    // plaintext startup, as with Postgres.
    let mut bytes = request(SSL_REQUEST_CODE);
    bytes.extend(trust_startup(TRUST_USER, "sslreq"));
    send(&mut s, &bytes).await;
    let mut answer = [0u8; 1];
    within(
        20,
        "SSLRequest answer",
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer),
    )
    .await
    .unwrap();
    assert_eq!(answer[0], b'N');
    let got = read_until(&mut s, |m| m.tag == b'Z' || m.tag == b'E').await;
    assert_eq!(got.last().unwrap().tag, b'Z', "{got:?}");
}

#[tokio::test]
async fn terminate_closes_both_legs() {
    let proxy = proxy().start().await;
    let app = unique_name("terminate");
    let (mut s, _) = login(proxy.addr, &trust_startup(TRUST_USER, &app)).await;
    assert_eq!(backends_named(&app).await, 1);
    send(&mut s, &message(b'X', &[])).await;
    let rest = read_to_end(&mut s).await;
    assert!(
        rest.messages.is_empty() && rest.trailing.is_empty(),
        "{rest:?}"
    );
    assert_eq!(rest.end, Ok(()));
    // As with Postgres, the client's connection closes once the backend has
    // gone, not before.
    assert_eq!(backends_named(&app).await, 0);
}

#[tokio::test]
async fn client_vanishing_ends_the_backend() {
    let proxy = proxy().start().await;
    let app = unique_name("vanish");
    let (mut s, _) = login(proxy.addr, &trust_startup(TRUST_USER, &app)).await;
    send(&mut s, &query("BEGIN")).await;
    read_until(&mut s, |m| m.tag == b'Z').await;
    s.shutdown().await.unwrap();
    drop(s);
    eventually(
        20,
        "the backend exits after the client disappears",
        || async { backends_named(&app).await == 0 },
    )
    .await;
    proxy.assert_serves_others().await;
}
