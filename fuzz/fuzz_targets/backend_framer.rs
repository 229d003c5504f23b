//! Server-to-client traffic framed as the session does, holding whole the
//! messages it may need to read (ReadyForQuery, Authentication before login,
//! ErrorResponse, CommandComplete, ParseComplete, CloseComplete), with the
//! channel-binding edit applied to every whole message and ErrorResponses
//! written from the traffic's bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgshim::protocol::backend::{strip_channel_binding, write_error, Severity};
use pgshim::protocol::{Frame, Framer, TxStatus};
use pgshim_fuzz::{drive, reads, split_input, whole_set};

/// The server-side "whole" tags, and two the session always streams.
const CANDIDATES: [u8; 8] = *b"ZREC13DN";

/// The session frames server traffic without a size limit; tiny limits
/// exercise the refusal path too.
const LIMITS: [usize; 4] = [usize::MAX, 64, 65_536, 1_073_741_823];

const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

fuzz_target!(|data: &[u8]| {
    let Some((control, stream)) = split_input(data) else {
        return;
    };
    let reads = reads(stream, control.split_seed);
    let max_len = LIMITS[usize::from(control.limit & 3)];
    drive(
        stream,
        &reads,
        max_len,
        whole_set(&CANDIDATES, control.whole_mask),
        check_message,
    );
    if control.limit & 0x80 != 0 {
        check_error_writer(stream);
    }
});

fn check_message(msg: &[u8]) {
    if msg[0] == b'Z' {
        let _ = msg.get(5).copied().and_then(TxStatus::from_byte);
    }
    let Some(edited) = strip_channel_binding(msg) else {
        return;
    };
    assert_eq!(edited[0], b'R');
    let length = i32::from_be_bytes([edited[1], edited[2], edited[3], edited[4]]);
    assert_eq!(length as usize + 1, edited.len());
    assert_eq!(&edited[5..9], &10i32.to_be_bytes());
    assert_eq!(edited.last(), Some(&0));
    let kept = names(&edited[9..]);
    assert!(!kept.contains(&SCRAM_PLUS), "channel binding still offered");
    let offered: Vec<&[u8]> = names(&msg[9..])
        .into_iter()
        .filter(|n| *n != SCRAM_PLUS)
        .collect();
    assert_eq!(
        kept, offered,
        "mechanisms other than channel binding changed"
    );
}

/// The mechanism names of a SASL list, up to the empty one.
fn names(mut list: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(end) = list.iter().position(|&b| b == 0) {
        if end == 0 {
            break;
        }
        out.push(&list[..end]);
        list = &list[end + 1..];
    }
    out
}

/// An ErrorResponse written from arbitrary text is one well-formed message
/// whose fields hold the text without NULs.
fn check_error_writer(stream: &[u8]) {
    let text = String::from_utf8_lossy(stream);
    let (code, message) = text.split_at(text.char_indices().nth(5).map_or(text.len(), |(i, _)| i));
    let hint = (message.len() % 2 == 0).then_some(message);
    let mut out = BytesMut::from(&b"prefix"[..]);
    write_error(&mut out, Severity::Error, code, message, hint);
    let msg = &out[6..];
    let mut framer = Framer::new(usize::MAX);
    match framer.next(msg, |t| t == b'E') {
        Ok(Some(Frame::Whole(h))) => assert_eq!(h.total_len, msg.len()),
        other => panic!("written ErrorResponse framed as {other:?}"),
    }
    let fields = &msg[5..];
    assert_eq!(fields.last(), Some(&0));
    let expected_fields = 4 + usize::from(hint.is_some());
    assert_eq!(
        fields.iter().filter(|&&b| b == 0).count(),
        expected_fields + 1
    );
}
