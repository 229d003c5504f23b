//! The forwarding loop: two directions in one task, each framing messages by
//! header and forwarding raw bytes in batches.
//!
//! The directions run concurrently (not turn by turn) so that a client that
//! pipelines without reading, or a server that streams while the client still
//! sends COPY data, cannot deadlock through pgshim. Each direction owns one
//! buffer that is reused for the whole session: a read, a scan of the headers,
//! one write of everything complete, `advance`. Nothing is allocated per
//! message; backpressure is the socket's, since nothing is read while a write
//! is pending.
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::net::{Reader, Writer};
use crate::protocol::backend::strip_channel_binding;
use crate::protocol::frontend::PARSE_TAG;
use crate::protocol::{
    Frame, Framer, AUTHENTICATION_TAG, ERROR_RESPONSE_TAG, QUERY_TAG, READY_FOR_QUERY_TAG,
    TERMINATE_TAG,
};

use super::reject::Rejections;
use super::rewrite::Rewriter;
use super::state::{Phase, State};

/// Minimum free space before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Why a direction stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its connection.
    ClientClosed,
    /// The server closed after sending an ErrorResponse (e.g. a failed login
    /// or `pg_terminate_backend`), which the client has received.
    ServerClosedAfterError,
    /// pgshim is shutting down and the session reached a safe point (or ran
    /// out of time); the client has been told.
    Shutdown,
}

/// One direction: where bytes come from, where they go, and how they are framed.
pub struct Pump<'a> {
    /// The side read from.
    pub from: &'a mut Reader,
    /// The side written to.
    pub to: &'a mut Writer,
    /// Bytes read and not yet forwarded.
    pub buf: &'a mut BytesMut,
    /// Framing state.
    pub framer: &'a mut Framer,
}

/// Client-to-server extras: where refusals are queued and how statements
/// are rewritten.
pub struct ToServer<'a> {
    /// `host:port` of the server, for errors.
    pub addr: &'a str,
    /// The session's rewriter; `None` or inactive means pure forwarding.
    pub rewriter: Option<&'a Rewriter>,
    /// Refusals in flight.
    pub rejections: &'a Rejections,
}

/// Server-to-client extras: shutdown signalling and whether the client is at a
/// message boundary (so pgshim may write a message of its own).
pub struct ToClient<'a> {
    /// Cancelled when pgshim starts shutting down.
    pub shutdown: &'a CancellationToken,
    /// How long a session may take to reach a safe point after shutdown starts.
    pub drain_timeout: std::time::Duration,
    /// False while a write to the client is in progress or a message is partly sent.
    pub client_at_boundary: &'a AtomicBool,
    /// `host:port` of the server, for errors.
    pub upstream: &'a str,
    /// Refusals in flight, whose stand-in errors are replaced.
    pub rejections: &'a Rejections,
}

// === impl Pump ===

impl Pump<'_> {
    /// Forwards client messages to the server until the client terminates.
    ///
    /// # Errors
    /// [`Error::ClientFrame`] for bytes that cannot be framed,
    /// [`Error::ClientIo`] and [`Error::UpstreamLost`] for broken connections.
    pub async fn client_to_server(mut self, state: &State, up: ToServer<'_>) -> Result<End, Error> {
        let rewriter = up.rewriter.filter(|r| r.active());
        let whole = |tag: u8| rewriter.is_some() && (tag == QUERY_TAG || tag == PARSE_TAG);
        loop {
            let mut off = 0;
            let mut terminated = false;
            while let Some(frame) = self
                .framer
                .next(&self.buf[off..], whole)
                .map_err(Error::ClientFrame)?
            {
                match frame {
                    Frame::Raw { tag, len } => {
                        if let Some(tag) = tag {
                            state.on_frontend(tag);
                            terminated |= tag == TERMINATE_TAG;
                        }
                        off += len;
                    }
                    Frame::Whole(h) => {
                        let msg = &self.buf[off..off + h.total_len];
                        let replacement =
                            rewriter.and_then(|r| r.message(msg, state, up.rejections));
                        state.on_frontend(h.tag);
                        let Some(replacement) = replacement else {
                            off += h.total_len;
                            continue;
                        };
                        self.forward(off).await.map_err(|e| lost(up.addr, &e))?;
                        self.buf.advance(h.total_len);
                        self.to
                            .write_all(&replacement)
                            .await
                            .map_err(|e| lost(up.addr, &e))?;
                        state.add_from_client(off + replacement.len());
                        off = 0;
                    }
                }
            }
            self.forward(off).await.map_err(|e| lost(up.addr, &e))?;
            state.add_from_client(off);
            if terminated {
                return Ok(End::ClientTerminated);
            }
            self.buf
                .reserve(READ_CHUNK.max(self.framer.missing(self.buf)));
            if self
                .from
                .read_buf(self.buf)
                .await
                .map_err(Error::ClientIo)?
                == 0
            {
                return Ok(End::ClientClosed);
            }
        }
    }

    /// Forwards server messages to the client, tracking ReadyForQuery, hiding
    /// channel binding during authentication, and handling shutdown.
    ///
    /// # Errors
    /// [`Error::UpstreamLost`] when the server goes away unexpectedly,
    /// [`Error::ClientIo`] when the client does.
    pub async fn server_to_client(
        mut self,
        state: &State,
        down: ToClient<'_>,
    ) -> Result<End, Error> {
        let mut last_tag = 0u8;
        let mut draining = false;
        // Created once: registering a fresh waiter or timer per read would
        // take a lock on every round trip.
        let shutdown = down.shutdown.cancelled();
        let drain_timer = tokio::time::sleep(down.drain_timeout);
        tokio::pin!(shutdown, drain_timer);
        loop {
            self.scan_server(state, &down, &mut last_tag).await?;
            if draining && self.framer.at_boundary() && state.phase() != Phase::Busy {
                return Ok(End::Shutdown);
            }
            self.buf
                .reserve(READ_CHUNK.max(self.framer.missing(self.buf)));
            tokio::select! {
                read = self.from.read_buf(self.buf) => match read {
                    Ok(0) if last_tag == ERROR_RESPONSE_TAG => return Ok(End::ServerClosedAfterError),
                    Ok(0) => return Err(lost(down.upstream, &"server closed the connection unexpectedly")),
                    Ok(_) => {}
                    Err(e) => return Err(lost(down.upstream, &e)),
                },
                _ = &mut shutdown, if !draining => {
                    draining = true;
                    drain_timer.as_mut().reset(Instant::now() + down.drain_timeout);
                }
                _ = &mut drain_timer, if draining => return Ok(End::Shutdown),
            }
        }
    }

    /// Forwards every complete server message in the buffer.
    async fn scan_server(
        &mut self,
        state: &State,
        down: &ToClient<'_>,
        last_tag: &mut u8,
    ) -> Result<(), Error> {
        let authenticated = state.authenticated();
        let rejections = down.rejections;
        let whole = |tag: u8| match tag {
            READY_FOR_QUERY_TAG => true,
            AUTHENTICATION_TAG => !authenticated,
            ERROR_RESPONSE_TAG => rejections.any(),
            _ => false,
        };
        let mut off = 0;
        while let Some(frame) = self
            .framer
            .next(&self.buf[off..], whole)
            .map_err(|e| lost(down.upstream, &e))?
        {
            let h = match frame {
                Frame::Raw { tag, len } => {
                    if let Some(tag) = tag {
                        *last_tag = tag;
                    }
                    off += len;
                    continue;
                }
                Frame::Whole(h) => h,
            };
            *last_tag = h.tag;
            let msg = &self.buf[off..off + h.total_len];
            let replacement = match h.tag {
                READY_FOR_QUERY_TAG => {
                    state.on_ready_for_query(msg.get(5).copied());
                    if rejections.any() {
                        rejections.expire(state.readies());
                    }
                    None
                }
                ERROR_RESPONSE_TAG => rejections.replace(msg),
                _ => strip_channel_binding(msg).map(BytesMut::freeze),
            };
            let Some(replacement) = replacement else {
                off += h.total_len;
                continue;
            };
            self.send_to_client(off, down, state).await?;
            self.buf.advance(h.total_len);
            off = 0;
            self.to
                .write_all(&replacement)
                .await
                .map_err(Error::ClientIo)?;
        }
        self.send_to_client(off, down, state).await
    }

    async fn send_to_client(
        &mut self,
        len: usize,
        down: &ToClient<'_>,
        state: &State,
    ) -> Result<(), Error> {
        if len == 0 {
            return Ok(());
        }
        down.client_at_boundary.store(false, Relaxed);
        self.forward(len).await.map_err(Error::ClientIo)?;
        down.client_at_boundary
            .store(self.framer.at_boundary(), Relaxed);
        state.add_from_server(len);
        Ok(())
    }

    /// Writes the first `len` buffered bytes and drops them from the buffer.
    async fn forward(&mut self, len: usize) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.to.write_all(&self.buf[..len]).await?;
        self.to.flush().await?;
        self.buf.advance(len);
        Ok(())
    }
}

fn lost(upstream: &str, cause: &dyn std::fmt::Display) -> Error {
    Error::UpstreamLost {
        addr: upstream.to_owned(),
        cause: cause.to_string(),
    }
}
