//! A million mutated client messages through a running pgshim: real client
//! traffic (captured by `fuzz/capture_seeds.py` from psycopg, asyncpg, psql
//! and pgbench) cut into batches, with bytes, lengths, tags and whole
//! messages mutated by a seeded PRNG, sent over several connections while a
//! healthy session keeps querying.
//!
//! Every batch ends with a valid Sync and a marker query; the marker must come
//! back within 5 s, or the connection must have been closed after a FATAL
//! error (or a Terminate in the batch): a closed connection is fine, a hang is
//! not. pgshim must survive it all without growing.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::support::pg::TRUST_USER;
use crate::support::proxy::Proxy;
use crate::support::rules::Db;
use crate::support::wire::{self, fields, message, query, startup};
use crate::support::within;

/// Bytes client programs sent, as checked in for the fuzz targets: a 4-byte
/// fuzz control prefix, the startup packets, then regular messages.
const CAPTURED: &[&[u8]] = &[
    include_bytes!("../../fuzz/seeds/frontend_framer/psycopg-1"),
    include_bytes!("../../fuzz/seeds/frontend_framer/psycopg-2"),
    include_bytes!("../../fuzz/seeds/frontend_framer/asyncpg-1"),
    include_bytes!("../../fuzz/seeds/frontend_framer/psql-1"),
    include_bytes!("../../fuzz/seeds/frontend_framer/psql-3"),
    include_bytes!("../../fuzz/seeds/frontend_framer/pgbench-prepared-2"),
    include_bytes!("../../fuzz/seeds/frontend_framer/pgbench-extended-2"),
];
const CONTROL_LEN: usize = 4;

/// The tables the captured clients used, in a database of the test's own;
/// short timeouts so no mutated statement or lock wait outlasts a batch.
const SETUP: &str = "
CREATE TABLE users (id serial PRIMARY KEY, name text, full_name text, email text);
CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text, status_code int);
CREATE SCHEMA app;
CREATE TABLE app.people (id serial PRIMARY KEY, name text, first_name text, last_name text);
INSERT INTO users (name, email) SELECT 'user ' || i, 'u' || i || '@example.com' FROM generate_series(1, 20) i;
INSERT INTO orders (user_id, status) SELECT i, 'pending' FROM generate_series(1, 20) i;
CREATE TABLE probe (id int PRIMARY KEY, name text, full_name text);
INSERT INTO probe VALUES (1, 'probe 1', 'probe 1');
";

/// A rule on the table the traffic uses most, so its statements are
/// rewritten, and one on a table only the healthy session reads.
const RULES: &str = r#"
[[rule]]
table = "users"
old = "name"
new = "full_name"
phase = "expand"

[[rule]]
table = "probe"
old = "name"
new = "full_name"
phase = "expand"
"#;

/// Messages sent (mutated batches only, not the trailing Sync and marker).
const TOTAL_MESSAGES: u64 = 1_000_000;
/// Connections sending at once.
const CONNECTIONS: u64 = 4;
/// `[limits] max_message_bytes`: announced lengths above it are refused
/// before any body arrives, so they can be sent without a body.
const MAX_MESSAGE_BYTES: i32 = 65_536;
/// Allowed RSS growth of the test process (pgshim runs in it).
const MAX_GROWTH_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_mutated_messages() {
    let db = Db::create("fuzz_traffic", SETUP).await;
    db.direct()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET lock_timeout = '200ms'; \
             ALTER DATABASE {} SET statement_timeout = '2s'",
            db.name, db.name
        ))
        .await
        .expect("database settings");
    let templates = templates();
    let proxy = db
        .proxy(RULES)
        .limit("max_message_bytes", MAX_MESSAGE_BYTES)
        .start()
        .await;
    let healthy = db.through(&proxy).await;
    let rss_before = rss_kib();
    let started = Instant::now();

    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let querying = tokio::spawn(keep_querying(healthy, Arc::clone(&done)));
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|seed| {
            let fuzzer = Fuzzer {
                addr: proxy.addr,
                startup: startup(
                    (3, 0),
                    &[
                        ("user", TRUST_USER),
                        ("database", &db.name),
                        ("application_name", "fuzz_traffic"),
                    ],
                ),
                templates: Arc::clone(&templates),
                rng: Rng::new(seed + 1),
                sent: Arc::clone(&sent),
            };
            tokio::spawn(fuzzer.run())
        })
        .collect();
    let mut stats = Stats::default();
    for sender in senders {
        stats.add(&sender.await.expect("fuzzing connection panicked"));
    }
    done.store(true, Ordering::Relaxed);
    let healthy_queries = querying.await.expect("healthy session panicked");
    let elapsed = started.elapsed();
    let rss_after = settled_rss_kib().await;

    eprintln!(
        "fuzz_traffic: {} messages in {} batches over {} connections ({} closed by the server side, \
         {} startup probes) in {elapsed:.1?}; healthy session ran {healthy_queries} queries; \
         RSS {rss_before} -> {rss_after} KiB",
        sent.load(Ordering::Relaxed),
        stats.batches,
        stats.connections,
        stats.closed,
        stats.probes,
    );
    assert!(sent.load(Ordering::Relaxed) >= TOTAL_MESSAGES);
    assert!(
        healthy_queries >= 10,
        "the healthy session ran only {healthy_queries} queries"
    );
    assert!(
        stats.batches > stats.closed * 4,
        "most batches should leave the session usable: {stats:?}"
    );
    assert!(
        rss_after < rss_before + MAX_GROWTH_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    proxy.assert_serves_others().await;
    stop(proxy).await;
}

/// The healthy session: a statement with a parameter and one pgshim
/// rewrites, each answered within 5 s, until the fuzzing is done.
///
/// # Returns
/// How many rounds ran.
async fn keep_querying(client: tokio_postgres::Client, done: Arc<AtomicBool>) -> u64 {
    let mut rounds = 0u64;
    while !done.load(Ordering::Relaxed) {
        let n = (rounds % 1000) as i32;
        let row = within(
            5,
            "healthy query",
            client.query_one("SELECT $1::int + 1", &[&n]),
        )
        .await
        .expect("healthy query");
        assert_eq!(row.get::<_, i32>(0), n + 1);
        let row = within(
            5,
            "healthy rewritten query",
            client.query_one("SELECT name FROM probe WHERE id = 1", &[]),
        )
        .await
        .expect("healthy rewritten query");
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("probe 1"));
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rounds
}

async fn stop(proxy: Proxy) {
    within(30, "pgshim stops", proxy.stop())
        .await
        .expect("pgshim serve returned an error");
}

/// The regular messages of each capture worth replaying: the frontend
/// messages of the extended and simple protocols, without Terminate,
/// authentication responses, and statements that would change the session's
/// mode (COPY, LISTEN) or sleep.
fn templates() -> Arc<Vec<Vec<Vec<u8>>>> {
    let sequences: Vec<Vec<Vec<u8>>> = CAPTURED
        .iter()
        .map(|capture| {
            regular_messages(&capture[CONTROL_LEN..])
                .into_iter()
                .filter(|m| b"PBDESCHQ".contains(&m[0]) && !unwanted(m))
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    let count: usize = sequences.iter().map(Vec::len).sum();
    assert!(count >= 50, "too few captured messages: {count}");
    Arc::new(sequences)
}

fn regular_messages(mut stream: &[u8]) -> Vec<Vec<u8>> {
    // Startup-phase packets: SSLRequest, GSSENCRequest, then StartupMessage.
    while stream.len() >= 8 {
        let len = i32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
        let code = u32::from_be_bytes([stream[4], stream[5], stream[6], stream[7]]);
        stream = &stream[len.min(stream.len())..];
        if code >> 16 == 3 {
            break;
        }
    }
    let mut out = Vec::new();
    while stream.len() >= 5 {
        let len = i32::from_be_bytes([stream[1], stream[2], stream[3], stream[4]]) as usize + 1;
        if len > stream.len() {
            break;
        }
        out.push(stream[..len].to_vec());
        stream = &stream[len..];
    }
    out
}

fn unwanted(msg: &[u8]) -> bool {
    let text = String::from_utf8_lossy(msg).to_ascii_lowercase();
    ["copy", "listen", "notify", "sleep", "lock "]
        .iter()
        .any(|w| text.contains(w))
}

/// xorshift64*: deterministic, so a failure replays with the same seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// What one batch did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// The marker came back: the session goes on.
    Answered,
    /// The server side closed the connection after a FATAL error (or the
    /// batch's Terminate).
    Closed,
}

#[derive(Debug, Default)]
struct Stats {
    batches: u64,
    connections: u64,
    closed: u64,
    probes: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.batches += other.batches;
        self.connections += other.connections;
        self.closed += other.closed;
        self.probes += other.probes;
    }
}

/// One sending connection (reconnecting whenever the server side closes it).
struct Fuzzer {
    addr: std::net::SocketAddr,
    startup: Vec<u8>,
    templates: Arc<Vec<Vec<Vec<u8>>>>,
    rng: Rng,
    sent: Arc<AtomicU64>,
}

// === impl Fuzzer ===

impl Fuzzer {
    async fn run(mut self) -> Stats {
        let mut stats = Stats::default();
        let mut conn = None;
        let mut batch = Vec::new();
        while self.sent.load(Ordering::Relaxed) < TOTAL_MESSAGES {
            let (reader, writer) = match conn.as_mut() {
                Some(c) => c,
                None => {
                    if stats.connections % 8 == 1 {
                        self.probe_startup().await;
                        stats.probes += 1;
                    }
                    stats.connections += 1;
                    conn.insert(self.login().await)
                }
            };
            let (messages, fatal) = self.batch(&mut batch);
            let marker = format!("fuzz-marker-{}", self.rng.next());
            batch.extend(message(b'S', &[]));
            batch.extend(query("ROLLBACK"));
            batch.extend(query(&format!("SELECT '{marker}'")));
            // A failed write is the server side closing mid-batch.
            let wrote = writer.write_all(&batch).await.is_ok();
            let outcome = within(5, "the Sync after a batch is answered", async {
                await_marker(reader, marker.as_bytes(), fatal).await
            })
            .await;
            assert!(
                wrote || outcome == Batch::Closed,
                "write failed but the connection answered"
            );
            self.sent.fetch_add(messages, Ordering::Relaxed);
            stats.batches += 1;
            if outcome == Batch::Closed {
                stats.closed += 1;
                conn = None;
            }
        }
        stats
    }

    async fn login(&self) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
        let (stream, _) = wire::login(self.addr, &self.startup).await;
        stream.set_nodelay(true).expect("nodelay");
        let (r, w) = stream.into_split();
        (BufReader::with_capacity(64 * 1024, r), w)
    }

    /// A login with a mutated startup packet (its length kept): it must be
    /// answered or closed within 5 s.
    async fn probe_startup(&mut self) {
        let mut packet = self.startup.clone();
        for _ in 0..1 + self.rng.below(3) {
            let at = 4 + self.rng.below(packet.len() - 4);
            packet[at] = self.rng.next() as u8;
        }
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        if s.write_all(&packet).await.is_err() {
            return;
        }
        within(5, "a mutated startup packet is answered", async {
            while let Ok(Some(m)) = wire::read_message(&mut s).await {
                // ReadyForQuery, an error, or a password request that the
                // packet's user cannot answer: decided either way.
                if m.tag == b'Z' || m.tag == b'E' || (m.tag == b'R' && m.body != [0; 4]) {
                    break;
                }
            }
        })
        .await;
    }

    /// Fills `out` with a window of one capture, mutated.
    ///
    /// # Returns
    /// How many messages it holds, and whether one of them may end the
    /// connection (an invalid header or type, a Terminate).
    fn batch(&mut self, out: &mut Vec<u8>) -> (u64, bool) {
        out.clear();
        let templates = Arc::clone(&self.templates);
        let sequence = &templates[self.rng.below(templates.len())];
        let start = self.rng.below(sequence.len());
        let len = 16 + self.rng.below(48);
        let (mut count, mut fatal) = (0, false);
        for i in 0..len {
            let template = &sequence[(start + i) % sequence.len()];
            if self.rng.one_in(3000) {
                fatal = true;
                count += 1;
                self.fatal_mutation(template, out);
            } else if self.rng.one_in(3) {
                count += self.mutate(template, out);
            } else {
                count += 1;
                out.extend_from_slice(template);
            }
        }
        (count, fatal)
    }

    /// Appends `template` changed so that framing stays intact (the length
    /// field always matches the bytes sent).
    ///
    /// # Returns
    /// How many messages were appended.
    fn mutate(&mut self, template: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut tag = template[0];
        let mut body = template[5..].to_vec();
        match self.rng.below(9) {
            0 | 1 if !body.is_empty() => {
                for _ in 0..1 + self.rng.below(3) {
                    let at = self.rng.below(body.len());
                    body[at] ^= 1 << self.rng.below(8);
                }
            }
            2 if !body.is_empty() => {
                let at = self.rng.below(body.len());
                body[at] = [0, 0xff, 0x7f, 0x80, b'$', b'\''][self.rng.below(6)];
            }
            3 if body.len() >= 4 => {
                let at = self.rng.below(body.len() - 3);
                let value: i32 =
                    [0, -1, -2, i32::MAX, i32::MIN, 1 << 16, 0x7fff][self.rng.below(7)];
                if self.rng.one_in(2) {
                    body[at..at + 4].copy_from_slice(&value.to_be_bytes());
                } else {
                    body[at..at + 2].copy_from_slice(&(value as i16).to_be_bytes());
                }
            }
            4 => body.truncate(self.rng.below(body.len() + 1)),
            5 => body.extend((0..1 + self.rng.below(64)).map(|_| self.rng.next() as u8)),
            // Not FunctionCall: it calls any function by OID with binary
            // arguments, which fuzzes Postgres itself (and can crash a
            // backend), not pgshim, which only forwards it.
            6 => tag = b"PBDEHSCQdcf"[self.rng.below(11)],
            7 => {
                out.extend_from_slice(template);
                out.extend_from_slice(template);
                return 2;
            }
            _ => return 0,
        }
        out.push(tag);
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(&body);
        1
    }

    /// Appends `template` with an invalid length or an arbitrary type byte:
    /// pgshim or Postgres must end the connection with an error (or, for a
    /// Terminate, quietly) rather than wait.
    fn fatal_mutation(&mut self, template: &[u8], out: &mut Vec<u8>) {
        let mut msg = template.to_vec();
        match self.rng.below(3) {
            0 => {
                let bad: i32 = [-1, i32::MIN, 0, 3][self.rng.below(4)];
                msg[1..5].copy_from_slice(&bad.to_be_bytes());
            }
            1 => {
                let over = MAX_MESSAGE_BYTES + 1 + self.rng.below(i32::MAX as usize / 2) as i32;
                msg[1..5].copy_from_slice(&over.to_be_bytes());
            }
            _ => {
                msg[0] = loop {
                    let tag = self.rng.next() as u8;
                    if tag != b'F' {
                        break tag;
                    }
                }
            }
        }
        out.extend_from_slice(&msg);
    }
}

/// Reads until the marker query's row and ReadyForQuery.
///
/// # Panics
/// When the connection ends without a FATAL error and without the batch
/// having had a chance to end it.
async fn await_marker(reader: &mut BufReader<OwnedReadHalf>, marker: &[u8], fatal: bool) -> Batch {
    let mut seen_marker = false;
    let mut fatal_error = false;
    loop {
        match wire::read_message(reader).await {
            Ok(Some(m)) => match m.tag {
                b'D' if m.body.windows(marker.len()).any(|w| w == marker) => seen_marker = true,
                b'Z' if seen_marker => return Batch::Answered,
                b'E' => {
                    let f = fields(&m.body);
                    fatal_error |= f.get(&b'S').map(String::as_str) == Some("FATAL");
                }
                _ => {}
            },
            Ok(None) | Err(_) => {
                assert!(
                    fatal_error || fatal,
                    "connection closed without a FATAL error after a batch that kept framing"
                );
                return Batch::Closed;
            }
        }
    }
}

/// The lowest of a few samples of [`rss_kib`] over a second: other tests
/// share this process, and a buffer one of them holds for a moment must not
/// count as pgshim growing.
async fn settled_rss_kib() -> u64 {
    let mut lowest = rss_kib();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lowest = lowest.min(rss_kib());
    }
    lowest
}

/// The resident set size of this process (pgshim included), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
