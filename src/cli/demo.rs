//! `pgshim demo`: a throwaway Postgres with a `users` table mid-migration (`name` being
//! renamed to `full_name`, phase expand), pgshim in front of it, and queries to try in
//! both shapes. Its config is a real file with `[admin]`, so the migration can be
//! carried on with the other subcommands. Ctrl-C, SIGTERM or closing the terminal
//! (SIGHUP) stops both and deletes the cluster.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::server::Server;

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
    // Before anything is printed: a terminal closed as soon as the intro shows
    // must stop the demo, not kill it before the cluster is removed.
    let stop = super::common::stop_on_signal_or_hangup();
    setup_database(pg_port).await?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port}: pass --port 0 for a free port")
        })?;
    let admin = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on 127.0.0.1 for the demo's admin API")?;
    let ports = Ports {
        pgshim: listener.local_addr()?.port(),
        postgres: pg_port,
        admin: admin.local_addr()?.port(),
    };
    let path = cluster.dir.join("proxy.toml");
    std::fs::write(&path, demo_toml(&ports))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let config = Config::load(&path)?;
    print_intro(&ports, &cluster.dir, &path);
    Server::new(Arc::new(config))
        .config_file(path)
        .admin(admin)
        .run(listener, async move { stop.cancelled().await })
        .await?;
    say("pgshim stopped; removing the demo cluster");
    Ok(())
}

/// Where the demo's pieces listen, all on 127.0.0.1.
struct Ports {
    pgshim: u16,
    postgres: u16,
    admin: u16,
}

fn demo_toml(ports: &Ports) -> String {
    format!(
        "# pgshim demo: edit `phase` and save; pgshim reloads the file.\n\
         listen = \"127.0.0.1:{}\"\n\n[upstream]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"disable\"\nuser = \"postgres\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n\n\
         [[rule]]\nid = \"users-full-name\"\ndatabase = \"demo\"\ntable = \"users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"expand\"\n",
        ports.pgshim, ports.postgres, ports.admin
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

fn print_intro(ports: &Ports, dir: &Path, config: &Path) {
    let (port, pg_port, admin) = (ports.pgshim, ports.postgres, ports.admin);
    let cfg = config.display();
    say(&format!(
        "pgshim demo: Postgres on 127.0.0.1:{pg_port} (data in {}), pgshim on 127.0.0.1:{port}\n\
         rule users-full-name: users.name -> users.full_name, phase expand\n\
         config: {cfg} (admin API on 127.0.0.1:{admin})\n\n\
         connect through pgshim:\n    psql \"host=127.0.0.1 port={port} user=postgres dbname=demo\"\n\n\
         then try, in the old shape and in the new one:\n\
         \x20   SELECT id, name FROM users ORDER BY id;                   -- old shape\n\
         \x20   SELECT id, full_name FROM users ORDER BY id;              -- new shape, computed for old rows\n\
         \x20   INSERT INTO users (name, email) VALUES ('Barbara Liskov', 'barbara@example.com');\n\
         \x20   UPDATE users SET full_name = 'Grace B. Hopper' WHERE id = 3;  -- a new-shape write\n\
         \x20   SELECT * FROM users ORDER BY id;                          -- both shapes agree\n\n\
         and straight to Postgres, to see the physical columns:\n    psql \"host=127.0.0.1 port={pg_port} user=postgres dbname=demo\" -c 'TABLE users'\n\n\
         carry the migration on, from another shell:\n\
         \x20   export PGSHIM_CONFIG={cfg}\n\
         \x20   pgshim status                              # where the rule stands, next step\n\
         \x20   pgshim backfill users-full-name            # fill full_name for old rows\n\
         \x20   sed -i 's/phase = \"expand\"/phase = \"migrate\"/' {cfg}   # flip the phase; pgshim reloads\n\
         \x20   pgshim reload                              # or reload explicitly\n\
         \x20   curl -s 127.0.0.1:{admin}/rules            # the rules in force\n\
         \x20   pgshim verify users-full-name              # exit 0: safe to contract\n\
         \x20   sed -i 's/phase = \"migrate\"/phase = \"contract\"/' {cfg}\n\
         \x20   pgshim plan users-full-name --phase contract --apply   # drops users.name\n\n\
         Ctrl-C (or closing this terminal) stops pgshim and deletes the cluster.",
        dir.display()
    ));
}

/// Prints a line on stdout; a closed terminal (the demo is stopping) is not an error.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
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
            let stopped = self
                .pg(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // Writes to a closed terminal fail; a panic in drop would abort.
            let failure = match stopped {
                Ok(status) if status.success() => None,
                Ok(status) => Some(format!("pg_ctl stop {status}")),
                Err(e) => Some(e.to_string()),
            };
            if let Some(failure) = failure {
                // Deleting the data directory under a running server would
                // leave a Postgres nobody can stop with pg_ctl.
                let _ = writeln!(
                    std::io::stderr(),
                    "pgshim demo: cannot stop the demo cluster in {} ({failure}); \
                     it is left in place: stop it with `pg_ctl -D {} stop` and delete the directory",
                    self.dir.display(),
                    self.dir.join("data").display()
                );
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            let _ = writeln!(
                std::io::stderr(),
                "pgshim demo: cannot remove {}: {e}",
                self.dir.display()
            );
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
