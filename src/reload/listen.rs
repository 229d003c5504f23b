//! With `[rules] source = "database"`, keeps this instance's rules in step
//! with `pgshim.rules` ([`crate::fleet::rules`]).
//!
//! A connection of its own LISTENs on `pgshim_rules`; each notification runs
//! a reload, which reads the table and validates and applies it exactly as a
//! file reload does. A notification sent while the connection was down is
//! lost, so the version counter is also read at every (re)connect and every
//! [`CHECK_INTERVAL`]: a version other than the one in force reloads too.
//! Serving never waits on this task; when Postgres is unreachable the rules in
//! force stay, and each distinct failure is logged once.
use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::Reloader;
use crate::config::RulesSource;
use crate::fleet::rules;
use crate::fleet::Shared;
use crate::runtime::Context;
use crate::settings::Settings;

/// How often the version counter is compared with the version in force.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often the version check retries a version whose reload was refused.
const RETRY_REFUSED: Duration = Duration::from_secs(30);
/// Longest a version check may take before the connection is given up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`: listens while `[rules] source = "database"`, idles otherwise.
pub async fn run(
    reloader: Arc<Reloader>,
    ctx: Arc<Context>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut failure: Option<String> = None;
    loop {
        let settings = ctx.settings();
        if settings.config.rules.source == RulesSource::Database {
            let outcome = match connect(&settings).await {
                Ok((client, notes)) => {
                    if failure.take().is_some() {
                        tracing::info!("listening for rule changes again (pgshim.rules)");
                    }
                    follow(&reloader, &ctx, &shared, &client, notes, &stop).await
                }
                Err(reason) => Err(reason),
            };
            if let Err(reason) = outcome {
                if failure.as_ref() != Some(&reason) {
                    tracing::warn!(reason = %reason, "cannot follow pgshim.rules; the rules in force stay, retrying");
                    failure = Some(reason);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

/// Reloads on every notification and on a version change until the
/// connection fails (`Err`), the source turns to file or `stop` (`Ok`).
async fn follow(
    reloader: &Reloader,
    ctx: &Context,
    shared: &Shared,
    client: &Client,
    mut notes: mpsc::UnboundedReceiver<()>,
    stop: &CancellationToken,
) -> Result<(), String> {
    // The version whose reload the check saw refused, and when: retried only
    // now and then (each refusal is logged), while notifications always reload.
    let mut refused: Option<(u64, Instant)> = None;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            note = notes.recv() => {
                if note.is_none() {
                    return Err("the listening connection closed".into());
                }
                // One reload reads the latest rules for every notification queued so far.
                while notes.try_recv().is_ok() {}
                let _ = reloader.reload("pgshim.rules notification").await;
            }
            _ = tick.tick() => {
                if ctx.settings().config.rules.source != RulesSource::Database {
                    return Ok(());
                }
                let version = tokio::time::timeout(QUERY_TIMEOUT, rules::version(client))
                    .await
                    .map_err(|_| "reading the rules version timed out".to_owned())?
                    .map_err(|e| format!("reading the rules version: {}", crate::fleet::pg_error(&e)))?;
                let due = match refused {
                    Some((v, at)) => v != version || at.elapsed() >= RETRY_REFUSED,
                    None => true,
                };
                if version != 0 && version != shared.db_rules_version() && due {
                    refused = match reloader.reload("pgshim.rules version check").await {
                        Ok(_) => None,
                        Err(_) => Some((version, Instant::now())),
                    };
                }
            }
        }
    }
}

/// A connection to the control database that LISTENs, and a channel that
/// receives one message per notification and closes with the connection.
async fn connect(settings: &Settings) -> Result<(Client, mpsc::UnboundedReceiver<()>), String> {
    let cfg = &settings.config.upstream;
    let database = &settings.config.fleet.database;
    let user = cfg
        .user
        .as_deref()
        .ok_or("[upstream] user is not set, so pgshim cannot read pgshim.rules")?;
    let mut pg = tokio_postgres::Config::new();
    pg.user(user)
        .dbname(database)
        .application_name("pgshim rules listener")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(var) = &cfg.password_env {
        let password = std::env::var(var)
            .map_err(|_| format!("[upstream] password_env names {var}, which is not set"))?;
        pg.password(password);
    }
    let stream = tokio::time::timeout(cfg.connect_timeout(), settings.upstream.connect())
        .await
        .map_err(|_| format!("connecting to database {database} timed out"))?
        .map_err(|e| format!("connecting to database {database}: {e}"))?;
    let (client, mut connection) = pg
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| format!("logging in to database {database}: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Driving the connection through its message stream is what delivers notifications.
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "rules listener connection closed");
                    return;
                }
            }
        }
    });
    tokio::time::timeout(
        QUERY_TIMEOUT,
        client.batch_execute(&format!("LISTEN {}", rules::CHANNEL)),
    )
    .await
    .map_err(|_| "LISTEN timed out".to_owned())?
    .map_err(|e| format!("LISTEN {} in database {database}: {e}", rules::CHANNEL))?;
    Ok((client, rx))
}
