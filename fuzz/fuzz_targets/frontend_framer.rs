//! Client-to-server traffic: the startup packets, then regular messages framed
//! as the session does, with the bodies pgshim decodes (Query, Parse, Bind,
//! Describe, Close) decoded and re-encoded.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshim::protocol::frontend::{
    bind_statement, parse_body, query_sql, statement_target, write_close_statement, write_parse,
    write_query,
};
use pgshim::protocol::startup::{self, Packet, MAX_STARTUP_PACKET_LEN};
use pgshim_fuzz::{drive, reads, split_input, whole_set};

/// Tags the session may hold whole (Parse always; the others with rules or
/// prepared statements in play), and a few it never does.
const CANDIDATES: [u8; 8] = *b"PQCBDFSH";

/// Message size limits: tiny, Postgres's startup limit, defaults, unlimited.
const LIMITS: [usize; 8] = [
    64,
    255,
    4096,
    10_000,
    65_536,
    1 << 20,
    1_073_741_823,
    usize::MAX,
];

fuzz_target!(|data: &[u8]| {
    let Some((control, stream)) = split_input(data) else {
        return;
    };
    let reads = reads(stream, control.split_seed);
    let regular = if control.limit & 0x80 != 0 {
        match startup_phase(stream, &reads) {
            Some(at) => &stream[at..],
            None => return,
        }
    } else {
        stream
    };
    // The regular phase is re-cut from where the startup phase ended.
    let regular_reads = pgshim_fuzz::reads(regular, control.split_seed.rotate_left(5));
    let max_len = LIMITS[usize::from(control.limit & 7)];
    drive(
        regular,
        &regular_reads,
        max_len,
        whole_set(&CANDIDATES, control.whole_mask),
        check_message,
    );
});

/// Parses pre-startup packets as they arrive until a StartupMessage, checking
/// that a packet is never reported before all of it has arrived.
///
/// # Returns
/// Where the regular messages start, or `None` when the stream ends or is
/// refused first.
fn startup_phase(stream: &[u8], reads: &[&[u8]]) -> Option<usize> {
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed = 0;
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match startup::parse(&buf) {
                Ok(None) => {
                    if let Some(head) = buf.get(..4) {
                        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                        assert!((8..=MAX_STARTUP_PACKET_LEN as i32).contains(&len));
                        assert!(buf.len() < len as usize, "complete packet not parsed");
                    }
                    break;
                }
                Ok(Some((packet, len))) => {
                    assert!((8..=MAX_STARTUP_PACKET_LEN).contains(&len) && len <= buf.len());
                    let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    assert_eq!(declared as usize, len);
                    // Every shorter prefix must still be waiting for bytes.
                    assert_eq!(startup::parse(&buf[..len - 1]), Ok(None));
                    consumed += len;
                    buf.drain(..len);
                    if let Packet::Startup(params) = packet {
                        check_params(&params);
                        return Some(consumed);
                    }
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    return None;
                }
            }
        }
    }
    debug_assert!(consumed <= stream.len());
    None
}

/// A StartupMessage rebuilt from what was parsed parses to the same values.
fn check_params(params: &startup::StartupParams) {
    let mut pairs = vec![
        ("user", params.user.as_str()),
        ("database", params.database.as_str()),
    ];
    if let Some(app) = &params.application_name {
        pairs.push(("application_name", app));
    }
    let packet = startup::encode_startup(params.version, &pairs);
    if packet.len() > MAX_STARTUP_PACKET_LEN {
        // Invalid UTF-8 grew when replaced by U+FFFD.
        return;
    }
    match startup::parse(&packet) {
        Ok(Some((Packet::Startup(again), len))) => {
            assert_eq!(len, packet.len());
            assert_eq!(&again, params);
        }
        other => panic!("re-encoded startup packet parsed as {other:?}"),
    }
}

/// Decodes a whole message as the rewriter does; what decodes re-encodes to
/// the same bytes.
fn check_message(msg: &[u8]) {
    match msg[0] {
        b'Q' => {
            if let Some(sql) = query_sql(msg) {
                let mut out = BytesMut::new();
                write_query(&mut out, sql);
                assert_eq!(&out[..], msg);
            }
        }
        b'P' => {
            if let Some(parse) = parse_body(msg) {
                let mut out = BytesMut::new();
                write_parse(&mut out, &parse, parse.sql);
                assert_eq!(&out[..], msg);
                assert_eq!(parse_body(&out), Some(parse));
            }
        }
        b'B' => {
            if let Some(name) = bind_statement(msg) {
                assert!(!name.contains(&0));
            }
        }
        b'C' | b'D' => {
            if let Some(name) = statement_target(msg) {
                let mut out = BytesMut::new();
                write_close_statement(&mut out, name);
                assert_eq!(statement_target(&out), Some(name));
            }
        }
        _ => {}
    }
}
