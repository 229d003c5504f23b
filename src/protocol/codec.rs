//! Splits a byte stream into runs of raw bytes to forward and whole messages to
//! look at.
//!
//! Messages nobody needs to read are streamed: once their header has arrived,
//! their body is forwarded as it comes in, so a multi-gigabyte `DataRow` or
//! `CopyData` never has to fit in memory. Only messages the caller asks to see
//! (by tag) are held until complete.
use super::header::{FrameError, Header};

/// The framing state of one direction of a connection.
#[derive(Debug)]
pub struct Framer {
    /// Largest message accepted, header included.
    max_len: usize,
    /// Body bytes of a streamed message that have not arrived yet.
    remaining: usize,
}

/// What is at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `n` bytes to forward as they are: the continuation of a streamed message,
    /// or a message (or the part of it that has arrived) the caller did not ask
    /// to see. `tag` is set when a message starts here.
    Raw {
        /// Type byte of the message starting here, if one does.
        tag: Option<u8>,
        /// Bytes to forward.
        len: usize,
    },
    /// A whole message the caller asked to see.
    Whole(Header),
}

// === impl Framer ===

impl Framer {
    /// A framer that rejects messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Framer {
        Framer {
            max_len,
            remaining: 0,
        }
    }

    /// True when no message is partly forwarded, so a message pgshim writes
    /// itself can go next.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Looks at the front of `buf`; `whole(tag)` says which messages to hold
    /// until complete.
    ///
    /// # Returns
    /// `Ok(None)` when more bytes are needed; the caller keeps `buf` and reads.
    ///
    /// # Errors
    /// [`FrameError`] for an invalid or oversized header; the stream cannot be
    /// framed any further.
    pub fn next(
        &mut self,
        buf: &[u8],
        whole: impl Fn(u8) -> bool,
    ) -> Result<Option<Frame>, FrameError> {
        if self.remaining > 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            let len = self.remaining.min(buf.len());
            self.remaining -= len;
            return Ok(Some(Frame::Raw { tag: None, len }));
        }
        let Some(header) = Header::parse(buf, self.max_len)? else {
            return Ok(None);
        };
        if whole(header.tag) {
            return Ok((buf.len() >= header.total_len).then_some(Frame::Whole(header)));
        }
        let len = header.total_len.min(buf.len());
        self.remaining = header.total_len - len;
        Ok(Some(Frame::Raw {
            tag: Some(header.tag),
            len,
        }))
    }

    /// How many more bytes are needed before [`Framer::next`] can return the
    /// whole message at the front of `buf`, if it is one the caller holds.
    pub fn missing(&self, buf: &[u8]) -> usize {
        match Header::parse(buf, self.max_len) {
            Ok(Some(h)) if self.remaining == 0 => h.total_len.saturating_sub(buf.len()),
            _ => 0,
        }
    }
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

    /// Drives a framer over `input` delivered in `chunk`-byte reads, returning
    /// every byte forwarded and every whole message seen.
    fn run(input: &[u8], chunk: usize, whole: u8) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut f = Framer::new(1 << 20);
        let (mut buf, mut out, mut seen) = (Vec::new(), Vec::new(), Vec::new());
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = f.next(&buf, |t| t == whole).unwrap() {
                let n = match frame {
                    Frame::Raw { len, .. } => len,
                    Frame::Whole(h) => {
                        seen.push(buf[..h.total_len].to_vec());
                        h.total_len
                    }
                };
                out.extend(buf.drain(..n));
            }
        }
        assert!(buf.is_empty() && f.at_boundary());
        (out, seen)
    }

    #[test]
    fn reads_split_at_every_point_forward_everything_once() {
        let mut input = msg(b'D', &[7; 300]);
        input.extend(msg(b'Z', b"I"));
        input.extend(msg(b'C', b"SELECT 1\0"));
        for chunk in 1..input.len() {
            let (out, seen) = run(&input, chunk, b'Z');
            assert_eq!(out, input, "chunk {chunk}");
            assert_eq!(seen, vec![msg(b'Z', b"I")], "chunk {chunk}");
        }
    }

    #[test]
    fn streamed_message_reports_tag_once() {
        let mut f = Framer::new(1 << 20);
        let m = msg(b'd', &[1; 100]);
        assert_eq!(
            f.next(&m[..10], |_| false).unwrap(),
            Some(Frame::Raw {
                tag: Some(b'd'),
                len: 10
            })
        );
        assert!(!f.at_boundary());
        assert_eq!(
            f.next(&m[10..], |_| false).unwrap(),
            Some(Frame::Raw { tag: None, len: 95 })
        );
        assert!(f.at_boundary());
    }

    #[test]
    fn whole_message_waits_for_body() {
        let mut f = Framer::new(1 << 20);
        let m = msg(b'Q', b"select 1\0");
        assert_eq!(f.next(&m[..7], |_| true).unwrap(), None);
        assert_eq!(f.missing(&m[..7]), m.len() - 7);
        assert!(matches!(
            f.next(&m, |_| true).unwrap(),
            Some(Frame::Whole(_))
        ));
    }

    #[test]
    fn oversized_message_is_an_error() {
        let mut f = Framer::new(64);
        let m = msg(b'Q', &[b'x'; 100]);
        assert!(f.next(&m, |_| false).is_err());
    }
}
