//! Sockets and TLS on both legs of a session.
pub mod error;
pub mod stream;
pub mod tls;
pub mod upstream;

pub use stream::{Reader, Stream, Writer};
