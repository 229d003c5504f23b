//! Messages the server sends outside any request, LISTEN/NOTIFY above all,
//! reach an idle client through pgshim at once.
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use crate::support::pg::{SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::{proxy, Proxy};
use crate::support::within;

/// Connects through `proxy` and returns the client plus every asynchronous
/// message (notifications, notices) its connection receives.
async fn listening_client(proxy: &Proxy) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut connection) = proxy.config(TRUST_USER, None).connect(NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    (client, rx)
}

async fn next_notification(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> Notification {
    within(20, "notification through pgshim", async {
        loop {
            match rx.recv().await.expect("listener connection ended") {
                AsyncMessage::Notification(n) => return n,
                _ => continue,
            }
        }
    })
    .await
}

#[tokio::test]
async fn notification_reaches_an_idle_listener() {
    let proxy = proxy().start().await;
    let (listener, mut rx) = listening_client(&proxy).await;
    listener
        .batch_execute("LISTEN pgshim_it_channel")
        .await
        .unwrap();
    let notifier = proxy
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    let notifier_pid: i32 = notifier
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    notifier
        .batch_execute("NOTIFY pgshim_it_channel, 'first'")
        .await
        .unwrap();
    // The listener sends nothing: the notification must be forwarded as it arrives.
    let n = next_notification(&mut rx).await;
    assert_eq!(n.channel(), "pgshim_it_channel");
    assert_eq!(n.payload(), "first");
    assert_eq!(n.process_id(), notifier_pid);

    // Several in one transaction arrive together, in order, at COMMIT.
    notifier
        .batch_execute(
            "BEGIN;
             SELECT pg_notify('pgshim_it_channel', 'a');
             SELECT pg_notify('pgshim_it_channel', 'b');
             SELECT pg_notify('pgshim_it_channel', 'c');
             COMMIT;",
        )
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for _ in 0..3 {
        payloads.push(next_notification(&mut rx).await.payload().to_owned());
    }
    assert_eq!(payloads, ["a", "b", "c"]);

    // The listener's session is still healthy.
    listener.batch_execute("UNLISTEN *").await.unwrap();
}

#[tokio::test]
async fn notice_during_a_query_is_forwarded() {
    let proxy = proxy().start().await;
    let (client, mut rx) = listening_client(&proxy).await;
    client
        .batch_execute("DO $$ BEGIN RAISE WARNING 'careful: %', 42; END $$")
        .await
        .unwrap();
    let notice = within(20, "notice", async {
        loop {
            if let AsyncMessage::Notice(n) = rx.recv().await.expect("connection ended") {
                return n;
            }
        }
    })
    .await;
    assert_eq!(notice.message(), "careful: 42");
    assert_eq!(notice.severity(), "WARNING");
}
