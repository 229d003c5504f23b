//! COPY through pgshim with tokio-postgres: FROM STDIN and TO STDOUT, large
//! enough to span many reads, and a COPY that fails half-way; COPY BOTH over
//! raw protocol with a logical replication stream.
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;

use crate::support::pg::{cluster, DB, SUPERUSER, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::wire::{login, message, query, read_until, send, startup, Message};
use crate::support::{unique_name, within};

const ROWS: usize = 200_000;

fn row(i: usize) -> String {
    format!("{i}\tname number {i}\t{}\n", "x".repeat(i % 50))
}

#[tokio::test]
async fn copy_in_then_copy_out_round_trip() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE c (id int PRIMARY KEY, name text, pad text)")
        .await
        .unwrap();

    let sink = client
        .copy_in::<_, Bytes>("COPY c FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut expected = String::new();
    let mut chunk = String::new();
    for i in 0..ROWS {
        let line = row(i);
        expected.push_str(&line);
        chunk.push_str(&line);
        // Chunks that cut rows in half: COPY data is a byte stream.
        if chunk.len() > 10_000 {
            let rest = chunk.split_off(chunk.len() - 7);
            sink.send(Bytes::from(std::mem::replace(&mut chunk, rest)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    let copied = within(60, "COPY FROM STDIN", sink.finish()).await.unwrap();
    assert_eq!(copied, ROWS as u64);

    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> =
        within(60, "COPY TO STDOUT", stream.map(|c| c.unwrap()).collect()).await;
    let out: Vec<u8> = chunks.concat();
    assert_eq!(out.len(), expected.len());
    assert!(
        out == expected.as_bytes(),
        "COPY TO STDOUT differs from what went in"
    );
}

#[tokio::test]
async fn failed_copy_in_reports_the_error_and_the_session_goes_on() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE c (id int)")
        .await
        .unwrap();
    let sink = client
        .copy_in::<_, Bytes>("COPY c FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..1000 {
        data.push_str(&format!("{i}\n"));
    }
    data.push_str("not a number\n");
    // The server may reject the data as soon as it sees it, so an error can
    // surface at any send or at finish.
    let result = async {
        sink.send(Bytes::from(data)).await?;
        sink.send(Bytes::from("1\n".repeat(1000))).await?;
        sink.finish().await
    };
    let err = within(30, "failing COPY", result).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_TEXT_REPRESENTATION),
        "{err}"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the failed COPY inserted nothing");
}

#[tokio::test]
async fn copy_out_of_a_query_with_many_chunks() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let stream = client
        .copy_out("COPY (SELECT g, repeat('y', 100) FROM generate_series(1, 50000) g) TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    let chunks: Vec<Bytes> =
        within(60, "COPY TO STDOUT", stream.map(|c| c.unwrap()).collect()).await;
    let text = String::from_utf8(chunks.concat()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50_000);
    assert_eq!(lines[49_999], format!("50000,{}", "y".repeat(100)));
}

/// An XLogData payload (after `w`, start LSN, end LSN, send time), if `m` is one.
fn xlog_data(m: &Message) -> Option<(u64, &[u8])> {
    (m.tag == b'd' && m.body.first() == Some(&b'w')).then(|| {
        let end = u64::from_be_bytes(m.body[9..17].try_into().unwrap());
        (end, &m.body[25..])
    })
}

#[tokio::test]
async fn copy_both_logical_replication_stream() {
    let proxy = proxy().start().await;
    let admin = cluster().admin().await;
    let table = unique_name("repl");
    admin
        .batch_execute(&format!("CREATE TABLE {table} (id int)"))
        .await
        .unwrap();
    let slot = unique_name("slot");
    let (mut s, _) = login(
        proxy.addr,
        &startup(
            (3, 0),
            &[
                ("user", SUPERUSER),
                ("database", DB),
                ("replication", "database"),
            ],
        ),
    )
    .await;
    send(
        &mut s,
        &query(&format!(
            "CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL test_decoding"
        )),
    )
    .await;
    let got = read_until(&mut s, |m| m.tag == b'Z').await;
    assert!(got.iter().all(|m| m.tag != b'E'), "{got:?}");

    send(
        &mut s,
        &query(&format!("START_REPLICATION SLOT {slot} LOGICAL 0/0")),
    )
    .await;
    let got = read_until(&mut s, |m| m.tag == b'W' || m.tag == b'E').await;
    assert_eq!(got.last().unwrap().tag, b'W', "CopyBothResponse: {got:?}");

    admin
        .batch_execute(&format!("INSERT INTO {table} VALUES (42)"))
        .await
        .unwrap();
    let wanted = format!("table public.{table}: INSERT: id[integer]:42");
    let mut last_lsn = 0;
    read_until(&mut s, |m| match xlog_data(m) {
        Some((end, payload)) => {
            last_lsn = end;
            String::from_utf8_lossy(payload).contains(&wanted)
        }
        None => false,
    })
    .await;

    // Client-to-server CopyData: a standby status update.
    let mut status = vec![b'r'];
    for _ in 0..3 {
        status.extend_from_slice(&last_lsn.to_be_bytes());
    }
    status.extend_from_slice(&0i64.to_be_bytes());
    status.push(0);
    let mut bytes = message(b'd', &status);
    bytes.extend(message(b'c', &[]));
    send(&mut s, &bytes).await;
    let got = read_until(&mut s, |m| m.tag == b'Z' || m.tag == b'E').await;
    assert_eq!(got.last().unwrap().tag, b'Z', "{got:?}");
    assert!(
        got.iter().any(|m| m.tag == b'c'),
        "server's CopyDone: {got:?}"
    );

    // Back to normal commands on the same connection.
    send(&mut s, &query("IDENTIFY_SYSTEM")).await;
    let got = read_until(&mut s, |m| m.tag == b'Z' || m.tag == b'E').await;
    assert_eq!(got.last().unwrap().tag, b'Z', "{got:?}");
    drop(s);
    admin
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
