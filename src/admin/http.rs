//! The admin listener: `GET /metrics`, `GET /rules`, `POST /reload`,
//! `GET /healthz`. A deliberately small HTTP/1.1 server (one request per
//! connection), so the admin port pulls in no web framework.
//!
//! `/rules` says where the rules in force came from: `version` counts this
//! instance's reloads, while `table_version` is the `pgshim.rules` version in
//! force in database mode, the one `pgshim flip` waits for in the registry.
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::RulesSource;
use crate::metrics::handle;
use crate::reload::Reloader;
use crate::runtime::Context;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and ignored).
const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin handlers need.
pub struct Admin {
    /// The running proxy.
    pub ctx: Arc<Context>,
    /// Reloads the config file; `None` when pgshim runs without one.
    pub reloader: Option<Arc<Reloader>>,
    /// Bearer token POST requests must present.
    pub token: Option<String>,
}

/// A response: status, content type, body.
struct Response(u16, &'static str, String);

/// Serves admin requests on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            if let Err(e) =
                tokio::time::timeout(REQUEST_TIMEOUT, handle_connection(stream, &admin)).await
            {
                tracing::debug!(client = %peer, error = %e, "admin request timed out");
            }
        });
    }
}

async fn handle_connection(mut stream: TcpStream, admin: &Admin) {
    let response = match read_request(&mut stream).await {
        Ok(request) => route(admin, &request).await,
        Err(message) => Response(400, "text/plain", format!("{message}\n")),
    };
    let Response(status, content_type, body) = response;
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The parts of a request the routes use.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request was complete".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let (mut authorization, mut length) = (None, 0usize);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_owned()),
            "content-length" => {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| "invalid Content-Length".to_string())?
            }
            _ => {}
        }
    }
    let mut remaining = length
        .min(MAX_BODY)
        .saturating_sub(buf.len() - head_end - 4);
    let mut sink = [0u8; 2048];
    while remaining > 0 {
        let n = stream.read(&mut sink).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n);
    }
    let path = path.split('?').next().unwrap_or_default().to_owned();
    Ok(Request {
        method: method.to_owned(),
        path,
        authorization,
    })
}

async fn route(admin: &Admin, request: &Request) -> Response {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => Response(200, "text/plain; version=0.0.4", handle().render()),
        ("GET", "/rules") => Response(200, "application/json", rules_json(admin)),
        ("GET", "/healthz") => healthz(&admin.ctx).await,
        ("POST", "/reload") => reload(admin, request).await,
        (_, "/metrics" | "/rules" | "/healthz" | "/reload") => {
            Response(405, "text/plain", "method not allowed\n".into())
        }
        _ => Response(
            404,
            "text/plain",
            "not found: try /metrics, /rules, /healthz or POST /reload\n".into(),
        ),
    }
}

fn rules_json(admin: &Admin) -> String {
    let version = admin.ctx.rules.current();
    let loaded_at = version
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let rules: Vec<_> = version
        .rules
        .rules()
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "database": r.database,
                "table": format!("{}.{}", r.schema, r.table),
                "old": r.old,
                "new": r.new,
                "phase": r.phase.name(),
                "force": r.force,
                "usage": usage_json(&r.id),
            })
        })
        .collect();
    let configured = match version.settings.config.rules.source {
        RulesSource::File => "file",
        RulesSource::Database => "database",
    };
    // In database mode the file's rules serve until pgshim.rules could be read.
    let table_version = admin
        .reloader
        .as_ref()
        .and_then(|r| r.fleet_state())
        .map(|f| f.db_rules_version())
        .filter(|v| *v != 0);
    let body = serde_json::json!({
        "version": version.number,
        "source": if table_version.is_some() { "database" } else { "file" },
        "configured_source": configured,
        "table_version": table_version,
        "loaded_at": loaded_at,
        "rules": rules,
        "databases_held": version.databases_held(),
        "last_reload_error": admin.reloader.as_ref().and_then(|r| r.last_error()).map(|e| e.to_string()),
    });
    format!("{body}\n")
}

/// Statements that used each shape of `rule` since start, with ages in seconds, and the
/// clients that used the old names.
fn usage_json(rule: &str) -> serde_json::Value {
    let board = crate::usage::board();
    let report = board.rule(rule);
    let now = crate::fleet::unix_ms(std::time::SystemTime::now());
    let ago = |ms: u64| now.saturating_sub(ms) / 1000;
    let shape = |c: &crate::usage::ShapeCount| {
        serde_json::json!({
            "statements": c.statements,
            "last_seen_ms": c.last_seen_ms,
            "last_seen_secs_ago": c.last_seen_ms.map(ago),
        })
    };
    let clients: Vec<_> = report
        .old_clients
        .iter()
        .map(|s| {
            serde_json::json!({
                "application_name": s.application_name,
                "client_addr": s.client_addr,
                "last_seen_ms": s.last_seen_ms,
                "last_seen_secs_ago": ago(s.last_seen_ms),
            })
        })
        .collect();
    serde_json::json!({
        "since_ms": board.since_ms(),
        "old": shape(&report.old),
        "new": shape(&report.new),
        "star": shape(&report.star),
        "old_clients": clients,
    })
}

/// 200 `ok` when Postgres accepts connections and every rule is active;
/// otherwise 503 with one line per thing pgshim is waiting for.
async fn healthz(ctx: &Context) -> Response {
    let settings = ctx.settings();
    let upstream = &settings.config.upstream;
    let connect = TcpStream::connect((upstream.host.as_str(), upstream.port));
    let mut waiting = match tokio::time::timeout(upstream.connect_timeout(), connect).await {
        Ok(Ok(_)) => String::new(),
        Ok(Err(e)) => format!("upstream {} unreachable: {e}\n", settings.upstream.addr()),
        Err(_) => format!(
            "upstream {} unreachable: timed out\n",
            settings.upstream.addr()
        ),
    };
    for (database, why) in ctx.rules.current().pending() {
        waiting += &format!("waiting for the catalog check of database {database:?}: {why}\n");
    }
    if waiting.is_empty() {
        Response(200, "text/plain", "ok\n".into())
    } else {
        Response(503, "text/plain", waiting)
    }
}

async fn reload(admin: &Admin, request: &Request) -> Response {
    if let Some(token) = &admin.token {
        let presented = request.authorization.as_deref().and_then(bearer_token);
        if !presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes())) {
            return Response(
                401,
                "application/json",
                "{\"ok\":false,\"error\":\"missing or wrong bearer token\"}\n".into(),
            );
        }
    }
    let Some(reloader) = &admin.reloader else {
        return Response(
            409,
            "application/json",
            "{\"ok\":false,\"error\":\"pgshim was started without a config file to reload\"}\n"
                .into(),
        );
    };
    match reloader.reload("http").await {
        Ok(done) => {
            let body = serde_json::json!({ "ok": true, "version": done.version, "restart_needed": done.restart_needed });
            Response(200, "application/json", format!("{body}\n"))
        }
        Err(e) => {
            let body = serde_json::json!({ "ok": false, "error": e.to_string() });
            Response(422, "application/json", format!("{body}\n"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme name is
/// case-insensitive (RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares a presented secret with the expected one in time that depends
/// only on their lengths, so the response time leaks no matching prefix.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let longest = presented.len().max(expected.len());
    let mut diff = u8::from(presented.len() != expected.len());
    for i in 0..longest {
        let a = presented.get(i).copied().unwrap_or(0);
        let b = expected.get(i).copied().unwrap_or(0);
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR\tabc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not_bearer() {
        for value in ["Basic abc", "Bearerabc", "Bearer", "Bearer   ", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn same_secret_needs_equal_bytes_and_length() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3cret!", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
        assert!(!same_secret(b"s3cret\0", b"s3cret"));
    }
}
