//! Memory follows the bytes a client actually sends, never the length a
//! header announces: under an address-space limit, several connections
//! announcing a gigabyte each leave pgshim serving, with flat memory.
use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::binary::Binary;
use crate::support::pg::TRUST_USER;
use crate::support::rules::Db;
use crate::support::wire::{login, send, startup};

const RULE: &str = r#"
[[rule]]
table = "users"
old = "name"
new = "full_name"
phase = "expand"
"#;

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn gigabyte_headers_under_an_address_space_limit() {
    let db = Db::create(
        "mem",
        "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text);",
    )
    .await;
    let binary =
        Binary::start_under(&["prlimit", "--as=1500000000", "--"], db.proxy(RULE), &[]).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], binary.port));
    let pid = binary.child.id().unwrap();
    let before = rss_kib(pid);
    let mut held = Vec::new();
    for tag in [b'Q', b'P', b'Q', b'P', b'd'] {
        let (mut s, _) = login(
            addr,
            &startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]),
        )
        .await;
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&1_000_000_000i32.to_be_bytes());
        bytes.extend_from_slice(&[b'x'; 4096]);
        send(&mut s, &bytes).await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        binary.child.id().is_some(),
        "pgshim exited:\n{}",
        binary.log_text()
    );
    let client = {
        let mut cfg = crate::support::pg::client_config("127.0.0.1", binary.port, TRUST_USER, None);
        cfg.dbname(&db.name);
        crate::support::connect(&cfg)
            .await
            .expect("pgshim still serves")
    };
    client.simple_query("SELECT name FROM users").await.unwrap();
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(held);
    let _ = TcpStream::connect(addr).await;
}
