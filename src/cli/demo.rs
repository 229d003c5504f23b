//! `pgshim demo`: a throwaway Postgres with a `users` table mid-migration (`name` being
//! renamed to `full_name`, phase expand), pgshim in front of it, and queries to try in
//! both shapes. Ctrl-C stops both and deletes the cluster.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;

use crate::config::Config;

/// `pgshim demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Port pgshim listens on (127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 6432)]
    pub port: u16,
}

const SETUP_SQL: &str = "\
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, email text);
INSERT INTO users (name, email) VALUES
  ('Ada Lovelace', 'ada@example.com'), ('Alan Turing', 'alan@example.com'),
  ('Grace Hopper', 'grace@example.com'), ('Edsger Dijkstra', 'edsger@example.com');
-- the expand step's DDL (what `pgshim plan --phase expand` prints):
ALTER TABLE users ADD COLUMN full_name text;";

/// A throwaway cluster: stopped and deleted on drop, however the demo ends.
struct Cluster {
    bindir: PathBuf,
    dir: PathBuf,
    as_root: bool,
    started: bool,
}

/// Runs the demo until Ctrl-C.
///
/// # Errors
/// No Postgres binaries, a cluster that does not start, or a port in use.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let bindir = find_bindir().context(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH, through `pg_config --bindir` or in /usr/lib/postgresql/*/bin: install them, e.g. `sudo apt-get install -y postgresql`",
    )?;
    let mut cluster = Cluster::create(bindir)?;
    let pg_port = free_port()?;
    cluster.start(pg_port)?;
    super::common::runtime()?.block_on(serve(&cluster, pg_port, args.port))
}

async fn serve(cluster: &Cluster, pg_port: u16, port: u16) -> anyhow::Result<()> {
    setup_database(pg_port).await?;
    let config = Config::from_toml(&demo_toml(pg_port), Path::new("demo.toml"))?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port}: pass --port 0 for a free port")
        })?;
    let addr = listener.local_addr()?;
    print_intro(addr.port(), pg_port, &cluster.dir);
    let stop = super::common::stop_on_signal();
    crate::server::serve(
        listener,
        Arc::new(config),
        async move { stop.cancelled().await },
    )
    .await?;
    println!("pgshim stopped; removing the demo cluster");
    Ok(())
}

fn demo_toml(pg_port: u16) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[upstream]\nhost = \"127.0.0.1\"\nport = {pg_port}\ntls = \"disable\"\nuser = \"postgres\"\n\n\
         [[rule]]\nid = \"users-full-name\"\ndatabase = \"demo\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"expand\"\n"
    )
}

async fn setup_database(pg_port: u16) -> anyhow::Result<()> {
    let connect = |db: &str| {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(pg_port)
            .user("postgres")
            .dbname(db);
        c
    };
    let (admin, conn) = connect("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the demo cluster")?;
    tokio::spawn(conn);
    admin
        .batch_execute("CREATE DATABASE demo")
        .await
        .context("creating database demo")?;
    let (demo, conn) = connect("demo")
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to database demo")?;
    tokio::spawn(conn);
    demo.batch_execute(SETUP_SQL)
        .await
        .context("creating the users table")?;
    Ok(())
}

fn print_intro(port: u16, pg_port: u16, dir: &Path) {
    println!(
        "pgshim demo: Postgres on 127.0.0.1:{pg_port} (data in {}), pgshim on 127.0.0.1:{port}\n\
         rule users-full-name: users.name -> users.full_name, phase expand\n\n\
         connect through pgshim:\n    psql \"host=127.0.0.1 port={port} user=postgres dbname=demo\"\n\n\
         then try, in the old shape and in the new one:\n\
         \x20   SELECT id, name FROM users ORDER BY id;                   -- old shape\n\
         \x20   SELECT id, full_name FROM users ORDER BY id;              -- new shape, computed for old rows\n\
         \x20   INSERT INTO users (name, email) VALUES ('Barbara Liskov', 'barbara@example.com');\n\
         \x20   UPDATE users SET full_name = 'Grace B. Hopper' WHERE id = 3;  -- a new-shape write\n\
         \x20   SELECT * FROM users ORDER BY id;                          -- both shapes agree\n\n\
         and straight to Postgres, to see the physical columns:\n    psql \"host=127.0.0.1 port={pg_port} user=postgres dbname=demo\" -c 'TABLE users'\n\n\
         Ctrl-C stops pgshim and deletes the cluster.",
        dir.display()
    );
}

// === impl Cluster ===

impl Cluster {
    fn create(bindir: PathBuf) -> anyhow::Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("pgshim-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let as_root = is_root();
        let cluster = Cluster {
            bindir,
            dir,
            as_root,
            started: false,
        };
        if as_root {
            check(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(&cluster.dir),
            )?;
        }
        check(
            cluster
                .pg(&cluster.bindir.join("initdb"))
                .arg("-D")
                .arg(cluster.dir.join("data"))
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]),
        )?;
        Ok(cluster)
    }

    fn start(&mut self, port: u16) -> anyhow::Result<()> {
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.dir.display()
        );
        check(
            self.pg(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
        )?;
        self.started = true;
        Ok(())
    }

    /// `program`, as the `postgres` user when we are root (initdb refuses root).
    fn pg(&self, program: &Path) -> Command {
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.dir);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            let stop = self
                .pg(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Err(e) = stop {
                eprintln!(
                    "pgshim demo: cannot stop the demo cluster in {}: {e}",
                    self.dir.display()
                );
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("pgshim demo: cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The first directory with real `initdb` and `pg_ctl`: PATH (wrappers resolved),
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bindir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Ok(real) = std::fs::canonicalize(dir.join("initdb")) {
                candidates.extend(real.parent().map(Path::to_path_buf));
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates.into_iter().find(|d| {
        ["initdb", "pg_ctl"].iter().all(|b| {
            std::fs::read(d.join(b)).is_ok_and(|bytes| bytes.len() > 4 && !bytes.starts_with(b"#!"))
        })
    })
}
