//! The forwarding loop: two directions in one task, each framing messages by
//! header and forwarding raw bytes in batches, asking the session core what
//! to do with the messages it wants to see.
//!
//! The directions run concurrently (not turn by turn) so that a client that
//! pipelines without reading, or a server that streams while the client still
//! sends COPY data, cannot deadlock through pgshim. Both run in one task, so
//! the lock around the core is never contended; it is taken per batch and
//! never held across an await. Each direction owns one buffer that is reused
//! for the whole session: a read, a scan of the headers, one write of
//! everything complete, `advance`. Nothing is allocated per message;
//! backpressure is the socket's, since nothing is read while a write is
//! pending.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::SessionError;
use crate::metrics::{self, metrics};
use crate::net::error::UpstreamCause;
use crate::net::{Reader, Writer};
use crate::protocol::{
    Frame, Framer, Header, ERROR_RESPONSE_TAG, MAX_AUTH_MESSAGE_LEN, TERMINATE_TAG,
};

use super::core::{Activity, AuthStep, Core, SessionRules, StatementOutcome, ToClient, ToServer};
use crate::runtime::Context;

/// Minimum free space before each read.
const READ_CHUNK: usize = 16 * 1024;

/// How long a client message waits for pgshim's check of a re-prepared
/// statement. The answer normally takes one round trip; a client that
/// pipelines megabytes without reading its replies can hold it up, and then
/// the message goes on unchecked rather than stalling the session.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a direction stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
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

/// What the two directions of one session share.
#[derive(Default)]
pub(crate) struct Link {
    core: Mutex<Core>,
    /// Woken when the first ReadyForQuery arrives: the client direction holds
    /// everything but authentication messages until then.
    authenticated: Notify,
    /// Woken by the server direction after each batch while the client
    /// direction waits for the server (see [`Link::wait_for`]).
    progress: Notify,
    /// True while the client direction waits in [`Link::wait_for`].
    waiting: AtomicBool,
    /// False while a write to the client is in progress or a message is
    /// partly sent, so pgshim must not write a message of its own.
    client_at_boundary: AtomicBool,
    /// Bytes forwarded from client to server (written by that direction only).
    from_client: AtomicU64,
    /// Bytes forwarded from server to client (written by that direction only).
    from_server: AtomicU64,
}

// === impl Link ===

impl Link {
    /// A session that has not authenticated yet, whose startup packet of
    /// `packet_len` bytes was forwarded.
    pub(crate) fn new(packet_len: usize) -> Link {
        let link = Link::default();
        link.client_at_boundary.store(true, Relaxed);
        link.from_client.store(packet_len as u64, Relaxed);
        link
    }

    /// The session core. The guard must not be held across an await (the
    /// compiler enforces it: the guard is not `Send`).
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes forwarded from the client and from the server.
    pub(crate) fn traffic(&self) -> (u64, u64) {
        (
            self.from_client.load(Relaxed),
            self.from_server.load(Relaxed),
        )
    }

    /// True when no message to the client is partly written.
    pub(crate) fn client_at_boundary(&self) -> bool {
        self.client_at_boundary.load(Relaxed)
    }

    /// Completes once the first ReadyForQuery has been seen.
    pub(crate) async fn wait_authenticated(&self) {
        if !self.core().authenticated() {
            self.authenticated.notified().await;
        }
    }

    /// Completes once `ready` holds for the core, or after `timeout`.
    ///
    /// # Returns
    /// False when it gave up waiting.
    async fn wait_for(&self, timeout: Duration, ready: impl Fn(&Core) -> bool) -> bool {
        self.waiting.store(true, Relaxed);
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let notified = self.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if ready(&self.core()) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        self.waiting.store(false, Relaxed);
        waited.is_ok()
    }

    /// Sends pgshim's query for the session's search path when it is due,
    /// and waits for its answer, so the next statement is rewritten with it;
    /// then, when the path changed, prepares SQL-level prepared statements
    /// again for it.
    async fn read_search_path(&self, pump: &mut Pump<'_>, addr: &str) -> Result<(), SessionError> {
        let Some(probe) = self.core().probe_now() else {
            return Ok(());
        };
        pump.write_flushed(&probe)
            .await
            .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
        if !self.wait_for(CHECK_TIMEOUT, Core::probed).await {
            tracing::warn!("no answer to pgshim's query of the session's search_path within 5 s; statements go on with the path known before");
        }
        let reprepare = self.core().take_path_reprepare();
        if let Some(queries) = reprepare {
            pump.write_flushed(&queries)
                .await
                .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
        }
        Ok(())
    }
}

/// One direction: where bytes come from, where they go, and how they are framed.
pub(crate) struct Pump<'a> {
    /// The side read from.
    pub from: &'a mut Reader,
    /// The side written to.
    pub to: &'a mut Writer,
    /// Bytes read and not yet forwarded.
    pub buf: &'a mut BytesMut,
    /// Framing state.
    pub framer: &'a mut Framer,
}

/// Client-to-server extras: where the session's rules come from.
pub(crate) struct ToServerSide<'a> {
    /// `host:port` of the server, for errors.
    pub addr: &'a str,
    /// Where new rules come from.
    pub ctx: &'a Context,
    /// The database the session is in.
    pub database: &'a str,
    /// Who the client is, for the old-name usage board.
    pub client: &'a crate::usage::Client,
}

/// Server-to-client extras: shutdown signalling, and where DDL that has run
/// is announced.
pub(crate) struct ToClientSide<'a> {
    /// Cancelled when pgshim starts shutting down.
    pub shutdown: &'a CancellationToken,
    /// The rules whose catalog DDL through this session changes.
    pub rules: &'a crate::active::LiveRules,
    /// The database the session is in.
    pub database: &'a str,
    /// How long a session may take to reach a safe point after shutdown starts.
    pub drain_timeout: Duration,
    /// `host:port` of the server, for errors.
    pub upstream: &'a str,
}

/// What a scan under the lock found: a message to replace, a point to
/// wait at, or the end of what is buffered.
enum Found<T> {
    /// Everything complete before `off` can be forwarded as it is.
    End,
    /// Everything before `off` is forwarded; then the session waits for the
    /// server before going on (see [`Core::take_settle`]).
    Settle,
    /// The message of `len` bytes at `off` is replaced by `action`, then the
    /// session waits for the server if `settle`.
    Replace { len: usize, action: T, settle: bool },
}

// === impl Pump ===

impl Pump<'_> {
    /// Forwards client messages to the server until the client terminates.
    ///
    /// # Errors
    /// [`SessionError::ClientFrame`] for bytes that cannot be framed,
    /// [`SessionError::ClientIo`] and [`SessionError::UpstreamLost`] for broken connections.
    pub(crate) async fn client_to_server(
        mut self,
        link: &Link,
        up: ToServerSide<'_>,
    ) -> Result<End, SessionError> {
        if let Authenticated::ClientLeft(end) = self.relay_authentication(link, up.addr).await? {
            return Ok(end);
        }
        // Only now, with the login accepted by Postgres, may the client's
        // database name reach the rules, the catalog and the caches.
        let version = up.ctx.rules.current();
        let db = version.for_database(up.database).await;
        let _ = link.core().take_rules(SessionRules::new(&version, db));
        drop(version);
        let addr = up.addr;
        loop {
            if let Some(queries) = refresh(link, &up).await {
                self.write_flushed(&queries)
                    .await
                    .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
            }
            link.read_search_path(&mut self, addr).await?;
            let (mut off, mut terminated) = (0, false);
            loop {
                let found = {
                    let mut core = link.core();
                    let mut found = Found::End;
                    while let Some(frame) = self
                        .framer
                        .next(&self.buf[off..], |t| core.client_wants_whole(t))
                        .map_err(SessionError::ClientFrame)?
                    {
                        match frame {
                            Frame::Raw { tag, len } => {
                                off += len;
                                if let Some(tag) = tag {
                                    core.client_passed(tag);
                                    terminated |= tag == TERMINATE_TAG;
                                    // The Sync behind a statement that may
                                    // change the search path (a whole Sync:
                                    // one with a body is left alone).
                                    if core.take_settle() && self.framer.at_boundary() {
                                        found = Found::Settle;
                                        break;
                                    }
                                }
                            }
                            Frame::Whole(h) => {
                                let action = core.client_message(&self.buf[off..off + h.total_len]);
                                let settle = core.take_settle();
                                match action {
                                    ToServer::Forward if !settle => off += h.total_len,
                                    ToServer::Forward => {
                                        off += h.total_len;
                                        found = Found::Settle;
                                        break;
                                    }
                                    action => {
                                        found = Found::Replace {
                                            len: h.total_len,
                                            action,
                                            settle,
                                        };
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    publish(&mut core, up.client);
                    found
                };
                let (len, action, settle) = match found {
                    Found::End => break,
                    Found::Settle => (0, ToServer::Forward, true),
                    Found::Replace {
                        len,
                        action,
                        settle,
                    } => (len, action, settle),
                };
                self.forward(off)
                    .await
                    .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
                self.buf.advance(len);
                let mut sent = off;
                off = 0;
                let mut action = action;
                loop {
                    match action {
                        ToServer::Forward => break,
                        ToServer::Send(bytes) => {
                            self.write_flushed(&bytes)
                                .await
                                .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
                            sent += bytes.len();
                            break;
                        }
                        ToServer::SendAndCheck(bytes) => {
                            self.write_flushed(&bytes)
                                .await
                                .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
                            sent += bytes.len();
                            if !link.wait_for(CHECK_TIMEOUT, Core::verdict_ready).await {
                                tracing::warn!("no answer to pgshim's check of a re-prepared statement within 5 s; the client's message goes on unchecked");
                            }
                            action = link.core().after_check();
                        }
                    }
                }
                self.count_from_client(link, sent);
                if settle {
                    // A statement that may change the search path: the ones
                    // behind it wait until it ran and the path is read again.
                    if link.wait_for(CHECK_TIMEOUT, Core::settled).await {
                        link.read_search_path(&mut self, addr).await?;
                    }
                }
            }
            self.forward(off)
                .await
                .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
            self.count_from_client(link, off);
            if terminated {
                return Ok(End::ClientTerminated);
            }
            if self.read_more().await? == 0 {
                return Ok(End::ClientClosed);
            }
        }
    }

    fn count_from_client(&self, link: &Link, n: usize) {
        if n > 0 {
            link.from_client.fetch_add(n as u64, Relaxed);
            metrics().bytes_from_client.increment(n as u64);
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
    /// [`SessionError::ClientFrame`] for an invalid or oversized message,
    /// [`SessionError::ClientIo`] and [`SessionError::UpstreamLost`] for broken connections.
    async fn relay_authentication(
        &mut self,
        link: &Link,
        addr: &str,
    ) -> Result<Authenticated, SessionError> {
        loop {
            let (mut off, mut waiting, mut terminated) = (0, false, false);
            {
                let mut core = link.core();
                while let Some(h) = Header::parse(&self.buf[off..], MAX_AUTH_MESSAGE_LEN)
                    .map_err(SessionError::ClientFrame)?
                {
                    let step = core.auth_step(h.tag);
                    if step == AuthStep::Hold {
                        waiting = true;
                        break;
                    }
                    if self.buf.len() - off < h.total_len {
                        break;
                    }
                    core.client_passed(h.tag);
                    off += h.total_len;
                    if step == AuthStep::Terminate {
                        terminated = true;
                        break;
                    }
                }
            }
            self.forward(off)
                .await
                .map_err(|e| lost(addr, UpstreamCause::Io(e)))?;
            self.count_from_client(link, off);
            if terminated {
                return Ok(Authenticated::ClientLeft(End::ClientTerminated));
            }
            if waiting || link.core().authenticated() {
                link.wait_authenticated().await;
                return Ok(Authenticated::Yes);
            }
            // Waking on either: the client's next message, or the end of
            // authentication (a trust login needs nothing from the client).
            tokio::select! {
                read = self.read_more() => if read? == 0 {
                    return Ok(Authenticated::ClientLeft(End::ClientClosed));
                },
                _ = link.wait_authenticated() => return Ok(Authenticated::Yes),
            }
        }
    }

    /// Reads more client bytes, growing the buffer only as bytes arrive.
    async fn read_more(&mut self) -> Result<usize, SessionError> {
        reserve_for_read(self.buf, self.framer);
        self.from
            .read_buf(self.buf)
            .await
            .map_err(SessionError::ClientIo)
    }

    /// Forwards server messages to the client, tracking ReadyForQuery, hiding
    /// channel binding during authentication, and handling shutdown.
    ///
    /// # Errors
    /// [`SessionError::UpstreamLost`] when the server goes away unexpectedly,
    /// [`SessionError::ClientIo`] when the client does.
    pub(crate) async fn server_to_client(
        mut self,
        link: &Link,
        down: ToClientSide<'_>,
    ) -> Result<End, SessionError> {
        let mut last_tag = 0u8;
        let mut draining = false;
        // Created once: registering a fresh waiter or timer per read would
        // take a lock on every round trip.
        let shutdown = down.shutdown.cancelled();
        let drain_timer = tokio::time::sleep(down.drain_timeout);
        tokio::pin!(shutdown, drain_timer);
        loop {
            self.scan_server(link, &down, &mut last_tag).await?;
            if draining && self.framer.at_boundary() && link.core().activity() != Activity::Busy {
                return Ok(End::Shutdown);
            }
            reserve_for_read(self.buf, self.framer);
            tokio::select! {
                read = self.from.read_buf(self.buf) => match read {
                    // After an ErrorResponse (a FATAL such as pg_terminate_backend's)
                    // the end is the server's, even when it comes as a reset.
                    Ok(0) | Err(_) if last_tag == ERROR_RESPONSE_TAG => return Ok(End::ServerClosedAfterError),
                    Ok(0) => return Err(lost(down.upstream, UpstreamCause::Closed)),
                    Ok(_) => {}
                    Err(e) => return Err(lost(down.upstream, UpstreamCause::Io(e))),
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
        link: &Link,
        down: &ToClientSide<'_>,
        last_tag: &mut u8,
    ) -> Result<(), SessionError> {
        let mut off = 0;
        loop {
            let (found, ddl_ran) = {
                let mut core = link.core();
                let authenticated = core.authenticated();
                let mut found = Found::End;
                while let Some(frame) = self
                    .framer
                    .next(&self.buf[off..], |t| core.server_wants_whole(t))
                    .map_err(|e| {
                        metrics().protocol_errors_server.increment(1);
                        lost(down.upstream, UpstreamCause::Frame(e))
                    })?
                {
                    match frame {
                        Frame::Raw { tag, len } => {
                            if let Some(tag) = tag {
                                *last_tag = tag;
                                core.server_passed(tag);
                            }
                            off += len;
                        }
                        Frame::Whole(h) => {
                            *last_tag = h.tag;
                            match core.server_message(&self.buf[off..off + h.total_len]) {
                                ToClient::Forward => off += h.total_len,
                                action => {
                                    found = Found::Replace {
                                        len: h.total_len,
                                        action,
                                        settle: false,
                                    };
                                    break;
                                }
                            }
                        }
                    }
                }
                if !authenticated && core.authenticated() {
                    // A stored permit: the client direction may start waiting later.
                    link.authenticated.notify_one();
                }
                if link.waiting.load(Relaxed) {
                    link.progress.notify_one();
                }
                // DDL on a mapped table has run (committed or rolled back):
                // announced before its ReadyForQuery reaches the client, so
                // whatever the client does next, on any session, reads the
                // catalog afresh.
                let ddl_ran = core.ddl_pending() && core.idle() && core.take_ddl_sent();
                // A mapped column reported missing: read afresh once, by the
                // first session to see it under the rules in force.
                let stale = core.take_catalog_suspect()
                    && core.rules_number() == Some(down.rules.current_number());
                (found, ddl_ran || stale)
            };
            if ddl_ran {
                down.rules.catalog_changed(down.database);
            }
            let Found::Replace { len, action, .. } = found else {
                break;
            };
            self.send_to_client(off, link).await?;
            self.buf.advance(len);
            off = 0;
            if let ToClient::Send(bytes) = action {
                self.write_flushed(&bytes)
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
        }
        self.send_to_client(off, link).await
    }

    async fn send_to_client(&mut self, len: usize, link: &Link) -> Result<(), SessionError> {
        if len == 0 {
            return Ok(());
        }
        link.client_at_boundary.store(false, Relaxed);
        self.forward(len).await.map_err(SessionError::ClientIo)?;
        link.client_at_boundary
            .store(self.framer.at_boundary(), Relaxed);
        link.from_server.fetch_add(len as u64, Relaxed);
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

/// Takes the rules in force when the session is idle and they changed, and
/// has the catalog read afresh after DDL on a mapped table.
///
/// # Returns
/// Simple queries to send first: SQL-level prepared statements prepared
/// again for a changed search path ([`Core::take_path_reprepare`]) or new
/// rules ([`Core::take_rules`]).
async fn refresh(link: &Link, up: &ToServerSide<'_>) -> Option<BytesMut> {
    let (ddl_sent, number, mut reprepare) = {
        let mut core = link.core();
        if !core.idle() {
            return None;
        }
        // SQL-level statements left for idle by a path change in a transaction.
        let reprepare = core.take_path_reprepare();
        (core.take_ddl_sent(), core.rules_number(), reprepare)
    };
    if ddl_sent {
        up.ctx.rules.catalog_changed(up.database);
    }
    if Some(up.ctx.rules.current_number()) == number {
        return reprepare;
    }
    let version = up.ctx.rules.current();
    let db = version.for_database(up.database).await;
    let queries = link.core().take_rules(SessionRules::new(&version, db));
    match (&mut reprepare, queries) {
        (Some(first), Some(more)) => first.extend_from_slice(&more),
        (None, queries) => reprepare = queries,
        (Some(_), None) => {}
    }
    reprepare
}

/// Publishes what the core counted: metrics, and old-name usage by `client`.
fn publish(core: &mut Core, client: &crate::usage::Client) {
    if core.tally.is_empty() {
        return;
    }
    let m = metrics();
    let tally = &core.tally;
    for outcome in StatementOutcome::ALL {
        let n = tally.statements[outcome.index()];
        if n > 0 {
            m.statements(outcome).increment(n);
        }
    }
    if tally.reprepared > 0 {
        m.reprepared.increment(tally.reprepared);
    }
    if tally.cache_hits > 0 {
        m.cache_hits.increment(tally.cache_hits);
    }
    if tally.cache_misses > 0 {
        m.cache_misses.increment(tally.cache_misses);
        m.cache_size.increment(tally.cache_size_change as f64);
    }
    for seconds in &tally.rewrite_seconds {
        m.rewrite_duration.record(*seconds);
    }
    if let Some(rules) = core.rules() {
        for (count, rule) in tally.by_rule.iter().zip(rules.rules().rules()) {
            if *count > 0 {
                metrics::rewrite_by_rule(&rule.id, rule.phase.name(), *count);
            }
        }
    }
    for usage in &tally.usage {
        crate::usage::board().record(usage, client);
    }
    core.tally.clear();
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

fn lost(upstream: &str, cause: UpstreamCause) -> SessionError {
    SessionError::UpstreamLost {
        addr: upstream.to_owned(),
        cause,
    }
}
