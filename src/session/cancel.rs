//! CancelRequest forwarding.
//!
//! The packet goes to the server exactly as received, so a cancel works even
//! when it reaches a different pgshim instance than the session it targets
//! (behind a load balancer), and with protocol 3.2's longer keys.
//!
//! Postgres closes a cancel connection only once it has signalled the
//! backend, and clients rely on that: one that runs its next statement as
//! soon as the close arrives must not see that statement cancelled instead.
//! So the client's connection stays open until the server has closed its
//! side of the forwarded one (or a bounded wait has passed).
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::upstream::Upstream;
use crate::net::Stream;

/// How long to wait for the server to close the cancel connection once the
/// request is written; connecting is bounded by `[upstream] connect_timeout_ms`.
const CANCEL_LINGER: Duration = Duration::from_secs(5);

/// How long closing either connection (TLS close_notify) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What became of a forwarded cancel, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Written, and the server closed its side: it has acted on it.
    Processed,
    /// Written, but the server kept the connection open past the linger.
    Written,
}

/// Sends `packet` to the server over a new connection (same TLS policy as
/// sessions), waits for the server to close it, then closes `client`
/// cleanly. Errors are logged, as the client gets no reply to a cancel
/// either way.
pub async fn forward(upstream: &Upstream, mut client: Stream, packet: Bytes) {
    match deliver(upstream, &packet).await {
        Ok(delivery) => {
            tracing::debug!(
                upstream = upstream.addr(),
                ?delivery,
                "cancel request forwarded"
            )
        }
        Err(error) => {
            tracing::warn!(upstream = upstream.addr(), error = %error, "cancel request not forwarded")
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await;
}

async fn deliver(upstream: &Upstream, packet: &[u8]) -> Result<Delivery, String> {
    let mut server = upstream.connect().await.map_err(|e| e.to_string())?;
    server.write_all(packet).await.map_err(|e| e.to_string())?;
    server.flush().await.map_err(|e| e.to_string())?;
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(CANCEL_LINGER, async {
        // The server sends nothing; anything it does send is skipped.
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, server.shutdown()).await;
    Ok(match closed {
        Ok(()) => Delivery::Processed,
        Err(_) => Delivery::Written,
    })
}
