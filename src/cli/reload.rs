//! `pgshim reload`: asks a running pgshim to reload its config file, through
//! `POST /reload` on its admin listener, and says in one line how it went
//! (pgshim's JSON answer as is with `--json`).
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;

/// How long to wait for the running pgshim to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `pgshim reload` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Print pgshim's JSON answer on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Sends the reload request.
///
/// # Errors
/// When the config has no `[admin]`, the admin listener cannot be reached, or
/// the reload is refused (the error carries pgshim's reason).
pub fn run(config_path: &Path, args: &Args) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let Some(admin) = &config.admin else {
        bail!("{} has no [admin] table: set [admin] listen so pgshim serves POST /reload, or send pgshim SIGHUP", config_path.display());
    };
    let token = match &admin.token_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("[admin] token_env names {var}, which is not set"))?,
        ),
        None => None,
    };
    let runtime = super::common::runtime()?;
    let (status, body) = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, post_reload(&admin.listen, token.as_deref()))
            .await
            .with_context(|| {
                format!(
                    "no answer from {} within {} s",
                    admin.listen,
                    TIMEOUT.as_secs()
                )
            })?
    })?;
    let answer: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    if args.json {
        println!("{}", body.trim_end());
    }
    if status != 200 {
        let reason = answer["error"].as_str().unwrap_or(body.trim());
        bail!(
            "pgshim at {} refused the reload (HTTP {status}): {reason}",
            admin.listen
        );
    }
    if !args.json {
        println!("{}", done_line(&answer, config_path));
    }
    Ok(())
}

/// The sentence for a successful reload.
fn done_line(answer: &serde_json::Value, config_path: &Path) -> String {
    let version = answer["version"]
        .as_u64()
        .map_or_else(|| "?".to_owned(), |v| v.to_string());
    let mut line = format!(
        "reloaded {}: rules version {version} in force",
        config_path.display()
    );
    let restart: Vec<&str> = answer["restart_needed"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    if !restart.is_empty() {
        line += &format!(
            "; restart pgshim for changes to {} to take effect",
            restart.join(", ")
        );
    }
    line
}

async fn post_reload(addr: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| {
        format!("cannot reach pgshim's admin listener at {addr}: is pgshim running?")
    })?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("unexpected answer from {addr}: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
