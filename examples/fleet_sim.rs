//! A simulated fleet for `bench/fleet.sh`: many lightweight pgshim instances
//! in one process, so flip convergence and the registry's load on Postgres can
//! be measured at a fleet size one machine cannot run as real proxies.
//!
//! Each simulated instance does what `pgshim serve` does for the fleet, with
//! pgshim's own code for every statement: it holds one connection, LISTENs on
//! the rules channel, and on a notification reads `pgshim.rules`
//! (`fleet::rules::read`), validates it (`Stored::rule_set`), reads the
//! registry for the fleet phase guard when a phase changes
//! (`fleet::registry::read`, `fleet::spread::decide`) and acknowledges by
//! writing its registry row (`fleet::registry::beat`) with the table's
//! version and phases. Between notifications it beats every `[fleet]
//! heartbeat_ms` and checks the table's version every two seconds, as the
//! heartbeat and the rules listener do. What it does not do: serve clients,
//! open the fresh connections a real reload opens, or check the catalog.
//!
//! Usage: `fleet_sim CONFIG INSTANCES [PREFIX]`, CONFIG being a pgshim config
//! file with `[upstream] user` set. It prints `ready` once every instance has
//! beaten, then one `acked version=V instances=N first_note_ms=.. last_ack_ms=..`
//! line per rules version all instances acknowledged, and runs until SIGTERM
//! or SIGINT, when every instance deregisters.
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pgshim::config::{Config, FleetConfig};
use pgshim::fleet::registry::{self, Beat, Phases};
use pgshim::fleet::{next_phases, rules, spread, unix_ms};
use pgshim::rewrite::Phase;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

/// How often the version counter is read, as the rules listener does.
const VERSION_CHECK: Duration = Duration::from_secs(2);

/// A usage report of the size a busy instance writes.
const USAGE: &str = r#"{"rules":{"sim":{"old":{"statements":120},"new":{"statements":4410},"star":{"statements":3}}}}"#;

/// Per rules version: acknowledgements, first notification and last acknowledgement (Unix ms).
#[derive(Default)]
struct Acks {
    instances: usize,
    by_version: BTreeMap<u64, (usize, u64, u64)>,
    notes: BTreeMap<u64, u64>,
}

// === impl Acks ===

impl Acks {
    fn noted(&mut self, version: u64, at: u64) {
        self.notes.entry(version).or_insert(at);
    }

    fn acked(&mut self, version: u64, at: u64) {
        let entry = self.by_version.entry(version).or_insert((0, at, at));
        entry.0 += 1;
        entry.2 = at;
        if entry.0 == self.instances {
            let first_note = self.notes.get(&version).copied().unwrap_or(entry.1);
            println!(
                "acked version={version} instances={} first_note_ms={first_note} last_ack_ms={at}",
                entry.0
            );
        }
    }
}

/// One simulated instance's state.
struct Sim {
    id: String,
    client: Client,
    fleet: FleetConfig,
    started_at: SystemTime,
    version: u64,
    in_force: Vec<(String, Phase)>,
    phases: Phases,
}

// === impl Sim ===

impl Sim {
    async fn beat(&mut self) -> Result<(), tokio_postgres::Error> {
        self.phases = next_phases(&self.phases, &self.in_force, unix_ms(SystemTime::now()));
        let beat = Beat {
            instance_id: &self.id,
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            rules_version: self.version,
            config_checksum: "simulated",
            phases: &self.phases,
            sessions: 8,
            last_reload_error: None,
            usage: Some(USAGE),
        };
        registry::beat(&self.client, &beat, self.fleet.forget_after_ms).await
    }

    /// Reads and applies the table as a reload does; `true` when something changed.
    async fn reload(&mut self) -> Result<bool, String> {
        let Some(stored) = rules::read(&self.client)
            .await
            .map_err(|e| format!("reading pgshim.rules: {e}"))?
        else {
            return Ok(false);
        };
        if stored.version == self.version {
            return Ok(false);
        }
        let set = stored.rule_set().map_err(|e| e.to_string())?;
        let next: Vec<(String, Phase)> = set
            .rules()
            .iter()
            .map(|r| (r.id.clone(), r.phase))
            .collect();
        let changed: Vec<(String, Phase)> = next
            .iter()
            .filter(|n| !self.in_force.contains(n))
            .cloned()
            .collect();
        if !changed.is_empty() {
            let instances = registry::read(&self.client, &self.fleet)
                .await
                .map_err(|e| format!("reading the registry: {e}"))?;
            spread::decide(&self.id, &changed, &instances)?;
        }
        self.in_force = next;
        self.version = stored.version;
        Ok(true)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fleet_sim CONFIG INSTANCES [PREFIX]";
    let config_path = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let instances: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!(usage))?;
    let prefix = args.next().unwrap_or_else(|| "sim".into());
    let config = Arc::new(Config::load(std::path::Path::new(&config_path))?);
    let acks = Arc::new(Mutex::new(Acks {
        instances,
        ..Acks::default()
    }));
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..instances {
        let (config, acks, stop, ready) =
            (config.clone(), acks.clone(), stop.clone(), ready_tx.clone());
        let id = format!("{prefix}-{n:04}");
        // Instances started at different moments do not beat in step.
        let offset = config.fleet.heartbeat() * u32::try_from(n).unwrap_or(0)
            / u32::try_from(instances).unwrap_or(1);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run(&config, id.clone(), offset, &acks, &stop, ready).await {
                eprintln!("{id}: {e}");
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..instances {
        if ready_rx.recv().await.is_none() {
            anyhow::bail!("an instance failed before its first beat");
        }
    }
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn run(
    config: &Config,
    id: String,
    offset: Duration,
    acks: &Mutex<Acks>,
    stop: &CancellationToken,
    ready: mpsc::UnboundedSender<()>,
) -> anyhow::Result<()> {
    let (client, mut notes) = connect(config).await?;
    registry::ensure(&client).await?;
    registry::ensure_usage_column(&client).await?;
    let mut sim = Sim {
        id,
        client,
        fleet: config.fleet.clone(),
        started_at: SystemTime::now(),
        version: 0,
        in_force: Vec::new(),
        phases: Phases::new(),
    };
    sim.reload().await.map_err(anyhow::Error::msg)?;
    tokio::time::sleep(offset).await;
    sim.beat().await?;
    let _ = ready.send(());
    let mut beats = tokio::time::interval(config.fleet.heartbeat());
    let mut checks = tokio::time::interval(VERSION_CHECK);
    beats.tick().await;
    checks.tick().await;
    loop {
        let reload = tokio::select! {
            _ = stop.cancelled() => break,
            note = notes.recv() => {
                let Some(version) = note else { anyhow::bail!("the connection closed") };
                let now = unix_ms(SystemTime::now());
                lock(acks).noted(version, now);
                // One reload reads the latest rules for every notification queued so far.
                while notes.try_recv().is_ok() {}
                true
            }
            _ = checks.tick() => rules::version(&sim.client).await? != sim.version,
            _ = beats.tick() => {
                sim.beat().await?;
                false
            }
        };
        if reload {
            match sim.reload().await {
                Ok(true) => {
                    sim.beat().await?;
                    lock(acks).acked(sim.version, unix_ms(SystemTime::now()));
                }
                Ok(false) => {}
                Err(e) => eprintln!("{}: reload refused: {e}", sim.id),
            }
        }
    }
    registry::deregister(&sim.client, &sim.id).await?;
    Ok(())
}

fn lock(acks: &Mutex<Acks>) -> std::sync::MutexGuard<'_, Acks> {
    acks.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A LISTENing connection with `[upstream]`'s login to the control database,
/// and a channel that receives each notification's version.
async fn connect(config: &Config) -> anyhow::Result<(Client, mpsc::UnboundedReceiver<u64>)> {
    let up = &config.upstream;
    let user = up
        .user
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("[upstream] user is not set"))?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&up.host)
        .port(up.port)
        .user(user)
        .dbname(&config.fleet.database)
        .application_name("pgshim fleet_sim");
    if let Some(var) = &up.password_env {
        pg.password(std::env::var(var)?);
    }
    let (client, mut connection) = pg.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = message {
                if tx.send(n.payload().parse().unwrap_or(0)).is_err() {
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!(
            "SET application_name = 'pgshim fleet_sim'; SET client_min_messages = warning; LISTEN {}",
            rules::CHANNEL
        ))
        .await?;
    Ok((client, rx))
}
