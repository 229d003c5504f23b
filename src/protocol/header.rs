//! The five-byte header of every regular message: a type byte and an `i32` length
//! that counts itself but not the type byte.
use std::fmt;

/// Length of a regular message header.
pub const HEADER_LEN: usize = 5;

/// A parsed, bounds-checked message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message type byte.
    pub tag: u8,
    /// Length of the message including the header.
    pub total_len: usize,
}

/// A header that cannot start a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below 4, i.e. shorter than itself.
    #[error("invalid message length {length} for message type {}", Tag(*tag))]
    BadLength {
        /// Message type byte.
        tag: u8,
        /// The length as sent.
        length: i32,
    },
    /// The message is larger than the configured limit.
    #[error("message type {} of {length} bytes exceeds the limit of {max} bytes", Tag(*tag))]
    TooLong {
        /// Message type byte.
        tag: u8,
        /// The length as sent.
        length: usize,
        /// `[limits] max_message_bytes`.
        max: usize,
    },
}

/// Shows a tag as a character when printable, else as a byte value.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

// === impl Header ===

impl Header {
    /// Parses the header at the front of `buf`.
    ///
    /// # Returns
    /// `Ok(None)` when fewer than five bytes are available.
    ///
    /// # Errors
    /// [`FrameError`] when the length is negative, below 4, or `total_len` would
    /// exceed `max`.
    pub fn parse(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let tag = head[0];
        let length = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if length < 4 {
            return Err(FrameError::BadLength { tag, length });
        }
        // `length` fits in usize on every platform tokio supports.
        let total_len = length as usize + 1;
        if total_len > max {
            return Err(FrameError::TooLong {
                tag,
                length: total_len,
                max,
            });
        }
        Ok(Some(Header { tag, total_len }))
    }

    /// Length of the body, after the header.
    pub fn body_len(&self) -> usize {
        self.total_len - HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffer_needs_more() {
        assert_eq!(Header::parse(b"Q\0\0", 100), Ok(None));
    }

    #[test]
    fn negative_length_rejected() {
        let err = Header::parse(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100).unwrap_err();
        assert!(matches!(err, FrameError::BadLength { length: -1, .. }));
        assert!(err.to_string().contains("'Q'"));
    }

    #[test]
    fn length_below_four_rejected() {
        assert!(Header::parse(&[b'S', 0, 0, 0, 3], 100).is_err());
    }

    #[test]
    fn oversized_rejected() {
        let err = Header::parse(&[b'Q', 0, 0, 1, 0], 100).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { length: 257, .. }));
    }

    #[test]
    fn sync_parses() {
        let h = Header::parse(&[b'S', 0, 0, 0, 4, b'x'], 100)
            .unwrap()
            .unwrap();
        assert_eq!(h.tag, b'S');
        assert_eq!(h.total_len, 5);
        assert_eq!(h.body_len(), 0);
    }
}
