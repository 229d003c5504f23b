//! A cancel is acknowledged only once it is delivered: pgshim closes the
//! client's cancel connection after the server has closed its side of the
//! forwarded one, as Postgres itself closes only after signalling the
//! backend. Checked through a forwarder that is slow to pass cancel
//! connections on, so an early close would show.
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cancel_tls::until_running;
use crate::support::pg::{cluster, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{
    backend_pid, cancel_request, expect_silent_close, fields, login, query, read_until, send,
    trust_startup,
};
use crate::support::within;

/// How long the forwarder waits before passing a cancel connection on.
const CANCEL_DELAY: Duration = Duration::from_secs(1);

/// A TCP forwarder to the test cluster that holds each CancelRequest for
/// [`CANCEL_DELAY`] before connecting, and counts the cancels the server
/// has processed (closed its side after reading).
struct SlowCancels {
    port: u16,
    processed: Arc<AtomicUsize>,
}

impl SlowCancels {
    async fn start() -> SlowCancels {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let processed = Arc::new(AtomicUsize::new(0));
        let count = processed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pass_on(client, count.clone()));
            }
        });
        SlowCancels { port, processed }
    }
}

async fn pass_on(mut client: TcpStream, processed: Arc<AtomicUsize>) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    client.read_exact(&mut head).await?;
    let is_cancel = head[4..] == 80_877_102i32.to_be_bytes();
    if is_cancel {
        tokio::time::sleep(CANCEL_DELAY).await;
    }
    let mut server = TcpStream::connect(("127.0.0.1", cluster().port)).await?;
    server.write_all(&head).await?;
    if !is_cancel {
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    let mut key = [0u8; 8];
    client.read_exact(&mut key).await?;
    server.write_all(&key).await?;
    let mut sink = Vec::new();
    server.read_to_end(&mut sink).await?;
    processed.fetch_add(1, SeqCst);
    Ok(())
}

#[tokio::test]
async fn cancel_connection_closes_only_after_the_server_processed_it() {
    let upstream = SlowCancels::start().await;
    // Plaintext upstream, so the forwarder can tell a CancelRequest apart.
    let proxy = proxy()
        .upstream("127.0.0.1", upstream.port)
        .upstream_tls("disable", None)
        .start()
        .await;
    let (mut session, login_msgs) =
        login(proxy.addr, &trust_startup(TRUST_USER, "cancel_order")).await;
    let sql = "SELECT pg_sleep(30)";
    send(&mut session, &query(sql)).await;
    until_running(backend_pid(&login_msgs), sql).await;

    let mut cancel = TcpStream::connect(proxy.addr).await.unwrap();
    send(&mut cancel, &cancel_request(&login_msgs)).await;
    within(20, "pgshim closes the cancel connection", async {
        expect_silent_close(&mut cancel).await
    })
    .await;
    assert_eq!(
        upstream.processed.load(SeqCst),
        1,
        "the client's cancel connection closed before the server had the cancel"
    );

    // The cancel hit the statement it was meant for, not the next one.
    let got = read_until(&mut session, |m| m.tag == b'Z').await;
    assert!(
        got.iter()
            .any(|m| m.tag == b'E' && fields(&m.body)[&b'C'] == "57014"),
        "the sleep should have been cancelled: {got:?}"
    );
    send(&mut session, &query("SELECT 'next'")).await;
    let got = read_until(&mut session, |m| m.tag == b'Z').await;
    assert!(
        got.iter().all(|m| m.tag != b'E'),
        "the next statement must run: {got:?}"
    );
}
