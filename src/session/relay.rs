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

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::net::{Reader, Writer};
use crate::protocol::backend::strip_channel_binding;
use crate::protocol::{
    Frame, Framer, Header, AUTHENTICATION_TAG, ERROR_RESPONSE_TAG, MAX_AUTH_MESSAGE_LEN,
    PASSWORD_TAG, QUERY_TAG, READY_FOR_QUERY_TAG, TERMINATE_TAG,
};

use super::context::{Context, Settings};
use super::reject::Rejections;
use super::rewrite::{Rewriter, Shared};
use super::state::{Phase, State};
use super::statements::{Hidden, CLOSE_COMPLETE_TAG, COMMAND_COMPLETE_TAG, PARSE_COMPLETE_TAG};
use crate::admin::metrics::metrics;

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

/// Client-to-server extras: the session's rules and what it shares with the
/// server direction.
pub struct ToServer<'a> {
    /// `host:port` of the server, for errors.
    pub addr: &'a str,
    /// Where new rules come from.
    pub ctx: &'a Context,
    /// The session's settings (pgshim's login, to read catalogs).
    pub settings: &'a Settings,
    /// The database the session is in.
    pub database: &'a str,
    /// Refusals in flight.
    pub rejections: &'a Rejections,
    /// Replies to pgshim's own re-prepares.
    pub hidden: &'a Hidden,
    /// Who the client is, for the old-name usage report.
    pub client: &'a crate::usage::Client,
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
    /// Replies to pgshim's own re-prepares, swallowed.
    pub hidden: &'a Hidden,
}

// === impl Pump ===

impl Pump<'_> {
    /// Forwards client messages to the server until the client terminates.
    ///
    /// # Errors
    /// [`Error::ClientFrame`] for bytes that cannot be framed,
    /// [`Error::ClientIo`] and [`Error::UpstreamLost`] for broken connections.
    pub async fn client_to_server(mut self, state: &State, up: ToServer<'_>) -> Result<End, Error> {
        if let Authenticated::ClientLeft(end) = self.relay_authentication(state, up.addr).await? {
            return Ok(end);
        }
        // Only now, with the login accepted by Postgres, may the client's
        // database name reach the rules, the catalog and the caches.
        let ToServer {
            addr,
            ctx,
            settings,
            database,
            rejections,
            hidden,
            client,
        } = up;
        let rewriter = &mut Rewriter::new(ctx, settings, database).await;
        let shared = Shared {
            state,
            rejections,
            hidden,
            client,
        };
        loop {
            if let Some(queries) = rewriter.refresh(ctx, settings, &shared).await {
                self.write_flushed(&queries)
                    .await
                    .map_err(|e| lost(addr, &e))?;
            }
            let (mut off, mut statements, mut terminated) = (0, 0u64, false);
            while let Some(frame) = self
                .framer
                .next(&self.buf[off..], |t| rewriter.wants_whole(t))
                .map_err(Error::ClientFrame)?
            {
                match frame {
                    Frame::Raw { tag, len } => {
                        if let Some(tag) = tag {
                            rewriter.note_forwarded(state.next_request(), tag);
                            state.on_frontend(tag);
                            statements += u64::from(tag == QUERY_TAG);
                            terminated |= tag == TERMINATE_TAG;
                        }
                        off += len;
                    }
                    Frame::Whole(h) => {
                        let replacement =
                            rewriter.message(&self.buf[off..off + h.total_len], &shared);
                        state.on_frontend(h.tag);
                        let Some(replacement) = replacement else {
                            off += h.total_len;
                            continue;
                        };
                        self.forward(off).await.map_err(|e| lost(addr, &e))?;
                        self.buf.advance(h.total_len);
                        self.write_flushed(&replacement)
                            .await
                            .map_err(|e| lost(addr, &e))?;
                        state.add_from_client(off + replacement.len());
                        metrics()
                            .bytes_from_client
                            .increment((off + replacement.len()) as u64);
                        off = 0;
                    }
                }
            }
            self.forward(off).await.map_err(|e| lost(addr, &e))?;
            state.add_from_client(off);
            if off > 0 {
                metrics().bytes_from_client.increment(off as u64);
            }
            if statements > 0 {
                metrics().statements_passed.increment(statements);
            }
            if terminated {
                return Ok(End::ClientTerminated);
            }
            if self.read_more().await? == 0 {
                return Ok(End::ClientClosed);
            }
        }
    }

    /// Relays the client's side of authentication: authentication responses
    /// (at most [`MAX_AUTH_MESSAGE_LEN`] bytes each, as Postgres caps them) go
    /// to the server as they are. Any other message waits, unread past, until
    /// Postgres has accepted the login and sent its first ReadyForQuery, as
    /// Postgres itself reads nothing else before then: so no statement is
    /// forwarded unrewritten, and nothing reaches the rules before the login
    /// is accepted.
    ///
    /// # Errors
    /// [`Error::ClientFrame`] for an invalid or oversized message,
    /// [`Error::ClientIo`] and [`Error::UpstreamLost`] for broken connections.
    async fn relay_authentication(
        &mut self,
        state: &State,
        addr: &str,
    ) -> Result<Authenticated, Error> {
        loop {
            let mut off = 0;
            let mut waiting = false;
            while let Some(h) =
                Header::parse(&self.buf[off..], MAX_AUTH_MESSAGE_LEN).map_err(Error::ClientFrame)?
            {
                if h.tag != PASSWORD_TAG && h.tag != TERMINATE_TAG {
                    waiting = true;
                    break;
                }
                if self.buf.len() - off < h.total_len {
                    break;
                }
                state.on_frontend(h.tag);
                off += h.total_len;
                if h.tag == TERMINATE_TAG {
                    self.forward(off).await.map_err(|e| lost(addr, &e))?;
                    return Ok(Authenticated::ClientLeft(End::ClientTerminated));
                }
            }
            self.forward(off).await.map_err(|e| lost(addr, &e))?;
            state.add_from_client(off);
            if waiting || state.authenticated() {
                state.wait_authenticated().await;
                return Ok(Authenticated::Yes);
            }
            // Waking on either: the client's next message, or the end of
            // authentication (a trust login needs nothing from the client).
            tokio::select! {
                read = self.read_more() => if read? == 0 {
                    return Ok(Authenticated::ClientLeft(End::ClientClosed));
                },
                _ = state.wait_authenticated() => return Ok(Authenticated::Yes),
            }
        }
    }

    /// Reads more client bytes, growing the buffer only as bytes arrive.
    async fn read_more(&mut self) -> Result<usize, Error> {
        reserve_for_read(self.buf, self.framer);
        self.from.read_buf(self.buf).await.map_err(Error::ClientIo)
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
            reserve_for_read(self.buf, self.framer);
            tokio::select! {
                read = self.from.read_buf(self.buf) => match read {
                    // After an ErrorResponse (a FATAL such as pg_terminate_backend's)
                    // the end is the server's, even when it comes as a reset.
                    Ok(0) | Err(_) if last_tag == ERROR_RESPONSE_TAG => return Ok(End::ServerClosedAfterError),
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
        let (rejections, hidden) = (down.rejections, down.hidden);
        let whole = |tag: u8| match tag {
            READY_FOR_QUERY_TAG => true,
            AUTHENTICATION_TAG => !authenticated,
            ERROR_RESPONSE_TAG => rejections.any() || hidden.queries_pending(),
            COMMAND_COMPLETE_TAG => hidden.queries_pending(),
            PARSE_COMPLETE_TAG | CLOSE_COMPLETE_TAG => hidden.any(),
            _ => false,
        };
        let mut off = 0;
        while let Some(frame) = self.framer.next(&self.buf[off..], whole).map_err(|e| {
            metrics().protocol_errors_server.increment(1);
            lost(down.upstream, &e)
        })? {
            let h = match frame {
                Frame::Raw { tag, len } => {
                    if let Some(tag) = tag {
                        *last_tag = tag;
                        if tag == PARSE_COMPLETE_TAG || tag == CLOSE_COMPLETE_TAG {
                            hidden.on_reply(state.readies() + 1, tag);
                        }
                    }
                    off += len;
                    continue;
                }
                Frame::Whole(h) => h,
            };
            *last_tag = h.tag;
            let msg = &self.buf[off..off + h.total_len];
            let replacement = if hidden.queries_pending() && is_query_reply(h.tag) {
                // A reply to pgshim's own re-PREPARE: never the client's.
                if h.tag == READY_FOR_QUERY_TAG {
                    hidden.query_done();
                } else if h.tag == ERROR_RESPONSE_TAG {
                    tracing::warn!(error = %String::from_utf8_lossy(msg), "re-preparing a SQL prepared statement under new rules failed");
                }
                Some(Bytes::new())
            } else {
                match h.tag {
                    READY_FOR_QUERY_TAG => {
                        let pipeline = state.readies() + 1;
                        state.on_ready_for_query(msg.get(5).copied());
                        if rejections.any() {
                            rejections.expire(state.readies());
                        }
                        hidden.end_pipeline(pipeline);
                        None
                    }
                    ERROR_RESPONSE_TAG => rejections.replace(msg),
                    PARSE_COMPLETE_TAG | CLOSE_COMPLETE_TAG => {
                        hidden.on_reply(state.readies() + 1, h.tag).then(Bytes::new)
                    }
                    _ => strip_channel_binding(msg).map(BytesMut::freeze),
                }
            };
            let Some(replacement) = replacement else {
                off += h.total_len;
                continue;
            };
            self.send_to_client(off, down, state).await?;
            self.buf.advance(h.total_len);
            off = 0;
            self.write_flushed(&replacement)
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
        metrics().bytes_from_server.increment(len as u64);
        Ok(())
    }

    /// Writes bytes pgshim made itself (a rewritten or replacement message).
    async fn write_flushed(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.to.write_all(bytes).await?;
        self.to.flush().await
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

/// Whether the client direction went on past authentication.
enum Authenticated {
    /// Postgres accepted the login and is ready for queries.
    Yes,
    /// The client ended the session first.
    ClientLeft(End),
}

/// Makes room for the next read. A message held whole grows the buffer at
/// most by what is already buffered, so memory follows the bytes received,
/// never the length a header announces.
fn reserve_for_read(buf: &mut BytesMut, framer: &Framer) {
    let missing = framer.missing(buf).min(buf.len().max(READ_CHUNK));
    buf.reserve(READ_CHUNK.max(missing));
}

/// Replies a simple query can produce that pgshim swallows for its own.
fn is_query_reply(tag: u8) -> bool {
    matches!(
        tag,
        COMMAND_COMPLETE_TAG | ERROR_RESPONSE_TAG | READY_FOR_QUERY_TAG
    )
}

fn lost(upstream: &str, cause: &dyn std::fmt::Display) -> Error {
    Error::UpstreamLost {
        addr: upstream.to_owned(),
        cause: cause.to_string(),
    }
}
