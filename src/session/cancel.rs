//! CancelRequest forwarding.
//!
//! The packet goes to the server exactly as received, so a cancel works even
//! when it reaches a different pgshim instance than the session it targets
//! (behind a load balancer), and with protocol 3.2's longer keys.
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::upstream::Upstream;

/// How long to wait for the server to close the cancel connection.
const CANCEL_LINGER: Duration = Duration::from_secs(5);

/// Sends `packet` to the server over a new connection (same TLS policy as
/// sessions) and waits for the server to close it. Errors are logged, as the
/// client gets no reply to a cancel either way.
pub async fn forward(upstream: &Upstream, packet: Bytes) {
    let mut server = match upstream.connect().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cancel request not forwarded");
            return;
        }
    };
    if let Err(e) = server.write_all(&packet).await {
        tracing::warn!(error = %e, upstream = upstream.addr(), "cancel request not forwarded");
        return;
    }
    let _ = server.flush().await;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(CANCEL_LINGER, server.read(&mut sink)).await;
    tracing::debug!(upstream = upstream.addr(), "cancel request forwarded");
}
