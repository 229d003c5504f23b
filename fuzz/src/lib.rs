//! Shared drivers for the fuzz targets: delivering a byte stream in reads of
//! arbitrary sizes, and running a [`Framer`] over it the way the session's
//! relay loop does while checking the result against an independent
//! re-framing of the whole stream.
//!
//! A framer input starts with [`CONTROL_LEN`] control bytes (which messages
//! to hold whole, the message size limit, where reads end) followed by the
//! traffic itself, so the seeds are recorded traffic behind a short prefix.
use pgshim::protocol::{Frame, Framer};

/// Bytes at the front of a framer input that steer the run, not traffic.
pub const CONTROL_LEN: usize = 4;

/// How a run is steered, decoded from the control bytes.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    /// Bit `i` set: the `i`-th candidate tag is held whole.
    pub whole_mask: u8,
    /// Picks the message size limit.
    pub limit: u8,
    /// Seeds the read sizes.
    pub split_seed: u16,
}

/// Splits a framer input into its control bytes and its traffic.
pub fn split_input(data: &[u8]) -> Option<(Control, &[u8])> {
    let (head, stream) = data.split_at_checked(CONTROL_LEN)?;
    Some((
        Control {
            whole_mask: head[0],
            limit: head[1],
            split_seed: u16::from_be_bytes([head[2], head[3]]),
        },
        stream,
    ))
}

/// The stream cut into reads whose sizes come from `seed`: mostly small, so
/// headers and bodies are split at every kind of point, sometimes large.
pub fn reads(stream: &[u8], seed: u16) -> Vec<&[u8]> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = match state % 8 {
            0 => 1,
            1..=4 => 1 + (state >> 8) as usize % 16,
            5 | 6 => 1 + (state >> 8) as usize % 512,
            _ => rest.len(),
        };
        let (read, tail) = rest.split_at(size.min(rest.len()));
        out.push(read);
        rest = tail;
    }
    out
}

/// The tags a run may hold whole, chosen by [`Control::whole_mask`].
pub fn whole_set(candidates: &[u8; 8], mask: u8) -> impl Fn(u8) -> bool + Copy + '_ {
    move |tag| {
        candidates
            .iter()
            .enumerate()
            .any(|(i, &c)| c == tag && mask & (1 << i) != 0)
    }
}

/// One message as an independent walk over the whole stream sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    tag: u8,
    start: usize,
    total_len: usize,
}

/// Frames the complete stream in one pass, without [`Framer`]: the messages
/// whose header is complete, and the offset of an invalid header, if any.
fn reference(stream: &[u8], max_len: usize) -> (Vec<Expected>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = stream.get(at..at + 5) {
        let length = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let total_len = usize::try_from(length).map_or(0, |l| l + 1);
        if length < 4 || total_len > max_len {
            return (out, Some(at));
        }
        out.push(Expected {
            tag: head[0],
            start: at,
            total_len,
        });
        at += total_len;
    }
    (out, None)
}

/// What a [`drive`] run observed.
#[derive(Debug, Default)]
pub struct Driven {
    /// Every byte forwarded, in order.
    pub forwarded: Vec<u8>,
    /// Tags of messages seen starting (raw or whole), in order.
    pub starts: Vec<u8>,
    /// Stream offset and length of every whole message.
    pub wholes: Vec<(usize, usize)>,
    /// The framer refused a header.
    pub failed: bool,
}

/// Runs a framer over `stream` delivered as `reads`, the way the relay does
/// (a buffer, an offset advanced per frame, forwarding on each pass), calls
/// `on_whole` with every whole message, and checks the framer's invariants:
/// every byte is forwarded exactly once and in order, every message start is
/// reported once with its tag, whole messages are exactly the bytes of one
/// message, an invalid header stops the stream exactly where it starts, and
/// [`Framer::missing`] says how far a held message is from complete.
///
/// # Panics
/// When an invariant does not hold: that is the finding.
pub fn drive(
    stream: &[u8],
    reads: &[&[u8]],
    max_len: usize,
    whole: impl Fn(u8) -> bool + Copy,
    mut on_whole: impl FnMut(&[u8]),
) -> Driven {
    let mut framer = Framer::new(max_len);
    let mut driven = Driven::default();
    let mut buf: Vec<u8> = Vec::new();
    'reads: for read in reads {
        buf.extend_from_slice(read);
        let mut off = 0;
        loop {
            match framer.next(&buf[off..], whole) {
                Ok(Some(Frame::Raw { tag, len })) => {
                    assert!(
                        len > 0 && len <= buf.len() - off,
                        "raw frame of {len} bytes"
                    );
                    driven.starts.extend(tag);
                    off += len;
                }
                Ok(Some(Frame::Whole(h))) => {
                    assert!(whole(h.tag), "whole frame for an unrequested tag");
                    assert!(framer.at_boundary());
                    let msg = &buf[off..off + h.total_len];
                    assert_eq!(msg[0], h.tag);
                    on_whole(msg);
                    driven.starts.push(h.tag);
                    driven
                        .wholes
                        .push((driven.forwarded.len() + off, h.total_len));
                    off += h.total_len;
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    driven.forwarded.extend(buf.drain(..off));
                    driven.failed = true;
                    break 'reads;
                }
            }
        }
        driven.forwarded.extend(buf.drain(..off));
        if let Some(missing) = (framer.missing(&buf) > 0).then(|| framer.missing(&buf)) {
            assert!(framer.at_boundary() && buf.len() >= 5);
            assert!(
                whole(buf[0]),
                "missing bytes reported for a streamed message"
            );
            let length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            assert_eq!(buf.len() + missing, length as usize + 1);
        }
    }
    check(stream, max_len, whole, &framer, &driven);
    driven
}

/// Compares a finished run with the reference framing of the whole stream.
fn check(stream: &[u8], max_len: usize, whole: impl Fn(u8) -> bool, framer: &Framer, d: &Driven) {
    assert_eq!(
        d.forwarded,
        stream[..d.forwarded.len()],
        "forwarded bytes differ from the stream"
    );
    let (messages, bad_header) = reference(stream, max_len);
    // Where the framer must have stopped, and which starts it must have reported.
    let mut end = stream.len();
    let mut reported = messages.len();
    let mut boundary = true;
    for (i, m) in messages.iter().enumerate() {
        if m.start + m.total_len > stream.len() {
            if whole(m.tag) {
                (end, reported) = (m.start, i);
            } else {
                boundary = false;
            }
        }
    }
    if let Some(at) = bad_header {
        end = at;
        assert!(d.failed, "invalid header at {at} accepted");
    } else {
        assert!(!d.failed, "valid stream refused");
        let tail = messages.last().map_or(0, |m| m.start + m.total_len);
        if tail < stream.len() && boundary && reported == messages.len() {
            // Fewer than five bytes of the next header.
            end = tail;
        }
        assert_eq!(framer.at_boundary(), boundary, "boundary state");
    }
    assert_eq!(d.forwarded.len(), end, "bytes forwarded");
    let tags: Vec<u8> = messages[..reported].iter().map(|m| m.tag).collect();
    assert_eq!(d.starts, tags, "message starts reported");
    let wholes: Vec<(usize, usize)> = messages[..reported]
        .iter()
        .filter(|m| whole(m.tag))
        .map(|m| (m.start, m.total_len))
        .collect();
    assert_eq!(d.wholes, wholes, "whole messages");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn run(stream: &[u8], seed: u16) -> Driven {
        let mut seen = Vec::new();
        let driven = drive(
            stream,
            &reads(stream, seed),
            1 << 20,
            |t| t == b'Q' || t == b'Z',
            |m| seen.push(m.to_vec()),
        );
        assert_eq!(seen.len(), driven.wholes.len());
        driven
    }

    #[test]
    fn stream_split_anywhere_is_forwarded_once_with_every_start() {
        let (q, d, z) = (
            msg(b'Q', b"select 1\0"),
            msg(b'D', &[7; 300]),
            msg(b'Z', b"I"),
        );
        let stream = [q.clone(), d.clone(), z.clone()].concat();
        for seed in 0..200 {
            let driven = run(&stream, seed);
            assert_eq!(driven.forwarded, stream);
            assert_eq!(driven.starts, b"QDZ");
            let z_at = q.len() + d.len();
            assert_eq!(driven.wholes, [(0, q.len()), (z_at, z.len())]);
        }
    }

    #[test]
    fn invalid_header_stops_the_stream_where_it_starts() {
        let good = msg(b'D', b"abc");
        let stream = [good.clone(), vec![b'S', 0, 0, 0, 2], msg(b'Z', b"I")].concat();
        for seed in 0..50 {
            let driven = run(&stream, seed);
            assert!(driven.failed);
            assert_eq!(driven.forwarded, good);
        }
    }

    #[test]
    fn incomplete_whole_message_is_held_and_streamed_one_is_not() {
        let q = msg(b'Q', b"select 1\0");
        let driven = run(&q[..q.len() - 1], 3);
        assert!(driven.forwarded.is_empty() && driven.starts.is_empty());
        let d = msg(b'D', b"select 1\0");
        let driven = run(&d[..d.len() - 1], 3);
        assert_eq!(driven.forwarded, d[..d.len() - 1]);
        assert_eq!(driven.starts, b"D");
    }
}
