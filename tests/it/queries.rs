//! Ordinary query traffic through pgshim with tokio-postgres: simple and
//! extended protocol, named statements and portals, pipelining, large results,
//! errors and transaction state, all answered as on a direct connection.
use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use crate::support::pg::{SCRAM_PASSWORD, SCRAM_USER, TRUST_USER};
use crate::support::proxy::proxy;
use crate::support::within;

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_query_with_several_statements() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let out = within(
        20,
        "simple query",
        client.simple_query(
            "CREATE TEMPORARY TABLE t (id int, name text);
             INSERT INTO t VALUES (1, 'one'), (2, NULL);
             SELECT id, name FROM t ORDER BY id;
             SELECT 'x' AS a, 'y' AS b",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        simple_rows(&out),
        vec![
            vec![Some("1".into()), Some("one".into())],
            vec![Some("2".into()), None],
            vec![Some("x".into()), Some("y".into())],
        ]
    );
    let inserted = out.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) if *n == 2 => Some(*n),
        _ => None,
    });
    assert_eq!(inserted, Some(2), "INSERT's CommandComplete row count");
}

#[tokio::test]
async fn extended_query_with_parameters_of_several_types() {
    let proxy = proxy().start().await;
    let client = proxy
        .connect(SCRAM_USER, Some(SCRAM_PASSWORD))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT $1::int4 + $2::int4, $3::text || '!', $4::bool, $5::float8 * 2, $6::bytea",
            &[&40i32, &2i32, &"hi", &true, &1.25f64, &vec![0u8, 1, 255]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "hi!");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, f64>(3), 2.5);
    assert_eq!(row.get::<_, Vec<u8>>(4), vec![0u8, 1, 255]);
    let none: Option<i32> = client
        .query_one("SELECT $1::int4", &[&None::<i32>])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, None);
}

#[tokio::test]
async fn named_statements_are_reused_and_interleaved() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO kv VALUES ($1, $2)")
        .await
        .unwrap();
    let select = client
        .prepare("SELECT v FROM kv WHERE k = $1")
        .await
        .unwrap();
    // Both live on the server as named prepared statements.
    // (simple_query: not itself a prepared statement.)
    let named = client
        .simple_query("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%kv%'")
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&named),
        vec![vec![Some("2".to_string())]],
        "two named statements on the server"
    );
    for k in 0..50i32 {
        client
            .execute(&insert, &[&k, &format!("v{k}")])
            .await
            .unwrap();
        let v: String = client.query_one(&select, &[&k]).await.unwrap().get(0);
        assert_eq!(v, format!("v{k}"));
    }
    let dup = client
        .execute(&insert, &[&1i32, &"again"])
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(&SqlState::UNIQUE_VIOLATION));
    // The statements survive the error.
    let v: String = client.query_one(&select, &[&1i32]).await.unwrap().get(0);
    assert_eq!(v, "v1");
}

#[tokio::test]
async fn named_portal_fetched_in_batches() {
    let proxy = proxy().start().await;
    let mut client = proxy.connect(TRUST_USER, None).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let stmt = tx
        .prepare("SELECT g FROM generate_series(1, $1::int) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[&25i32]).await.unwrap();
    let mut got = Vec::new();
    loop {
        let batch = tx.query_portal(&portal, 10).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 10);
        got.extend(batch.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(got, (1..=25).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn pipelined_queries_answered_in_order() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let stmt = client.prepare("SELECT $1::int * 10").await.unwrap();
    // tokio-postgres writes all of these before reading any answer.
    let futures = (0..200i32).map(|i| {
        let (client, stmt) = (&client, &stmt);
        async move { client.query_one(stmt, &[&i]).await }
    });
    let rows = within(30, "pipelined queries", try_join_all(futures))
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, (0..200).map(|i| i * 10).collect::<Vec<_>>());
}

#[tokio::test]
async fn large_results_stream_through() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    // Many small rows.
    let rows = client
        .query(
            "SELECT g, md5(g::text) FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[99_999].get::<_, i32>(0), 100_000);
    // A few rows far larger than any read buffer.
    let rows = client
        .query(
            "SELECT repeat(chr(65 + g), 3000000) FROM generate_series(0, 3) g",
            &[],
        )
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let s: &str = row.get(0);
        assert_eq!(s.len(), 3_000_000);
        assert!(s.bytes().all(|b| b == b'A' + i as u8));
    }
}

#[tokio::test]
async fn errors_are_relayed_and_the_session_goes_on() {
    let proxy = proxy().start().await;
    let client = proxy.connect(TRUST_USER, None).await.unwrap();
    let err = client.simple_query("SELEKT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR));
    let err = client.query("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = client
        .prepare("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let row = client.query_one("SELECT 'still here'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "still here");
}

#[tokio::test]
async fn transaction_state_follows_the_server() {
    let proxy = proxy().start().await;
    let mut client = proxy.connect(TRUST_USER, None).await.unwrap();
    client
        .batch_execute("CREATE TEMPORARY TABLE t (id int)")
        .await
        .unwrap();

    // Rolled back: nothing kept.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.rollback().await.unwrap();

    // Failed transaction: later statements refused until ROLLBACK.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let err = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();

    // Committed, with a savepoint rolled back inside.
    let mut tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    let sp = tx.savepoint("sp").await.unwrap();
    sp.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
    sp.rollback().await.unwrap();
    tx.commit().await.unwrap();

    let ids: Vec<i32> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![3]);
}
