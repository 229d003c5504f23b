//! Bytes <-> Postgres protocol messages: no sockets, no rules.
//!
//! Only what pgshim has to look at is decoded; everything else is framed by its
//! header and forwarded raw. See the protocol chapter of the Postgres docs:
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
pub mod backend;
pub mod codec;
pub mod frontend;
pub mod header;
pub mod startup;

pub use codec::{Frame, Framer};
pub use header::{FrameError, Header};

/// Frontend `Query` (simple protocol).
pub const QUERY_TAG: u8 = b'Q';
/// Frontend `Sync`.
pub const SYNC_TAG: u8 = b'S';
/// Frontend `FunctionCall`.
pub const FUNCTION_CALL_TAG: u8 = b'F';
/// Frontend `Terminate`.
pub const TERMINATE_TAG: u8 = b'X';
/// Frontend `PasswordMessage`, `SASLInitialResponse`, `SASLResponse` and
/// `GSSResponse`: the only messages a client sends while authenticating.
pub const PASSWORD_TAG: u8 = b'p';
/// Largest message a client may send before authentication completes:
/// Postgres's own cap on authentication responses (`PG_MAX_AUTH_TOKEN_LENGTH`).
pub const MAX_AUTH_MESSAGE_LEN: usize = 65_535;
/// Backend `Authentication*`.
pub const AUTHENTICATION_TAG: u8 = b'R';
/// Backend `ReadyForQuery`.
pub const READY_FOR_QUERY_TAG: u8 = b'Z';
/// Backend `ErrorResponse`.
pub const ERROR_RESPONSE_TAG: u8 = b'E';

/// Transaction status from the last `ReadyForQuery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// Decodes the status byte of `ReadyForQuery`.
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }
}
