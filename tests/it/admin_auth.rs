//! The admin API's bearer token: the scheme name matches in any case (RFC
//! 7235), and only the exact token is accepted.
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::proxy::proxy;
use crate::support::reloadable::AdminBinary;
use crate::support::within;

/// `POST /reload` with `Authorization: <authorization>`; the status.
async fn post_reload(addr: SocketAddr, authorization: &str) -> u16 {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to admin");
        let request = format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
    };
    within(60, "POST /reload", run).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_in_any_case_with_the_exact_token() {
    let pgshim = AdminBinary::start(proxy(), "", Some("t0ken-value")).await;
    let addr = pgshim.admin.addr;
    for ok in [
        "Bearer t0ken-value",
        "bearer t0ken-value",
        "BEARER t0ken-value",
        "bEaReR   t0ken-value",
    ] {
        assert_eq!(post_reload(addr, ok).await, 200, "{ok:?}");
    }
    for refused in [
        "Bearer t0ken-valu",
        "Bearer t0ken-value2",
        "Bearer T0KEN-VALUE",
        "Basic t0ken-value",
        "Bearert0ken-value",
        "Bearer",
    ] {
        assert_eq!(post_reload(addr, refused).await, 401, "{refused:?}");
    }
}
