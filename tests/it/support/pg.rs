//! One throwaway PostgreSQL cluster per test run, shared by every test.
//!
//! The server binaries are looked up on `PATH` (skipping wrapper scripts),
//! through `pg_config --bindir`, then in `/usr/lib/postgresql/<version>/bin`
//! (highest version). The cluster lives in a fresh `/tmp/pgshim-it-*`
//! directory, listens on a free port on 127.0.0.1 and on a Unix socket in that
//! directory, and has TLS on with the test CA's `localhost` certificate. As
//! root, `initdb` and `pg_ctl` run as the `postgres` user through `runuser`.
//!
//! A detached watchdog shell stops the cluster (SIGQUIT to the postmaster) and
//! removes the directory once the test process has exited, however it exits.
//! Set `PGSHIM_IT_KEEP=1` to keep the directory (and its `postgres.log`).
//!
//! Roles: `scram_user` (SCRAM-SHA-256 password), `md5_user` (md5 password),
//! `trust_user` (no password), and the superuser `postgres` (trust), each only
//! allowed in by the matching `pg_hba.conf` line. Database [`DB`] lets everyone
//! create tables in `public`. `wal_level = logical` so COPY BOTH can be tested
//! with a logical replication stream.
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::Client;

/// The database tests use unless they need their own.
pub const DB: &str = "pgshim_test";
/// The superuser; trusted from 127.0.0.1 and the Unix socket.
pub const SUPERUSER: &str = "postgres";
/// Role authenticated with SCRAM-SHA-256.
pub const SCRAM_USER: &str = "scram_user";
/// `SCRAM_USER`'s password.
pub const SCRAM_PASSWORD: &str = "scram-secret";
/// Role authenticated with md5.
pub const MD5_USER: &str = "md5_user";
/// `MD5_USER`'s password.
pub const MD5_PASSWORD: &str = "md5-secret";
/// Role let in without a password.
pub const TRUST_USER: &str = "trust_user";

const INSTALL_HINT: &str =
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, \
     through `pg_config --bindir`, or in /usr/lib/postgresql/<version>/bin; \
     install them with: sudo apt-get install -y postgresql";

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory holding `initdb`, `pg_ctl`, `postgres` (and usually `psql`, `pgbench`).
    pub bindir: PathBuf,
}

/// The run's private directory (`/tmp/pgshim-it-*`), created on first use
/// together with the watchdog that cleans it up after the run.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("pgshim-it-")
            .tempdir_in("/tmp")
            .expect("create run directory under /tmp")
            .keep();
        spawn_watchdog(&dir);
        dir
    })
}

/// The shared cluster, started on first use. Panics (never skips) when it
/// cannot be started, with the install command when binaries are missing.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
    }
}

// === impl Cluster ===

impl Cluster {
    /// A connection config for `user` straight to the cluster (no pgshim).
    pub fn direct(&self, user: &str, password: Option<&str>) -> tokio_postgres::Config {
        client_config("127.0.0.1", self.port, user, password)
    }

    /// A superuser session straight to the cluster.
    pub async fn admin(&self) -> Client {
        super::connect(&self.direct(SUPERUSER, None))
            .await
            .expect("superuser connection straight to the cluster")
    }

    /// Creates a fresh database owned by `owner` and returns its name.
    pub async fn create_database(&self, prefix: &str, owner: &str) -> String {
        let name = super::unique_name(prefix);
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .await
            .expect("CREATE DATABASE");
        name
    }

    /// Path of a client program (`psql`, `pgbench`): from the server's
    /// directory when it is there, else from `PATH`.
    pub fn tool(&self, name: &str) -> PathBuf {
        let local = self.bindir.join(name);
        if local.is_file() {
            return local;
        }
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file());
        on_path.unwrap_or_else(|| {
            panic!("`{name}` not found; install it with: sudo apt-get install -y postgresql")
        })
    }
}

/// A tokio-postgres config for `host:port`, database [`DB`], no TLS.
pub fn client_config(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(user)
        .dbname(DB)
        .application_name("pgshim-it")
        .ssl_mode(tokio_postgres::config::SslMode::Disable)
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        cfg.password(p);
    }
    cfg
}

fn start() -> Result<Cluster, String> {
    let bindir = find_bindir().ok_or_else(|| INSTALL_HINT.to_string())?;
    let root = run_dir();
    let data = root.join("data");
    let sock = root.join("sock");
    fs::create_dir_all(&sock).map_err(|e| format!("create {}: {e}", sock.display()))?;
    let as_root = is_root();
    if as_root {
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(root))?;
    }
    run(pg_command(&bindir.join("initdb"), as_root)
        .arg("-D")
        .arg(&data)
        .args(["-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"])
        .arg("--locale=C"))?;
    configure(&data, &sock, as_root)?;
    let port = start_server(&bindir, &data, root, as_root)?;
    let cluster = Cluster { port, bindir };
    create_roles(&cluster)?;
    Ok(cluster)
}

fn configure(data: &Path, sock: &Path, as_root: bool) -> Result<(), String> {
    let certs = super::certs::certs();
    let (crt, key) = (data.join("server.crt"), data.join("server.key"));
    fs::copy(&certs.pg_cert, &crt).map_err(|e| format!("copy server.crt: {e}"))?;
    fs::copy(&certs.pg_key, &key).map_err(|e| format!("copy server.key: {e}"))?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod server.key: {e}"))?;
    if as_root {
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(&crt)
            .arg(&key))?;
    }
    let conf = format!(
        "\n# pgshim integration tests\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         max_connections = 200\n\
         ssl = on\n\
         ssl_cert_file = 'server.crt'\n\
         ssl_key_file = 'server.key'\n\
         password_encryption = 'scram-sha-256'\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = '64MB'\n\
         wal_level = logical\n\
         log_min_messages = warning\n",
        sock.display()
    );
    fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| format!("write postgresql.conf: {e}"))?;
    let hba = "# pgshim integration tests: one role per authentication method\n\
               local all all trust\n\
               host all trust_user 127.0.0.1/32 trust\n\
               host all md5_user 127.0.0.1/32 md5\n\
               host all scram_user 127.0.0.1/32 scram-sha-256\n\
               host all postgres 127.0.0.1/32 trust\n";
    fs::write(data.join("pg_hba.conf"), hba).map_err(|e| format!("write pg_hba.conf: {e}"))
}

fn start_server(bindir: &Path, data: &Path, root: &Path, as_root: bool) -> Result<u16, String> {
    let log = root.join("postgres.log");
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let started = run(pg_command(&bindir.join("pg_ctl"), as_root)
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .arg("start"));
        match started {
            Ok(()) => return Ok(port),
            Err(e) => {
                let log_text = fs::read_to_string(&log).unwrap_or_default();
                if !log_text.contains("could not bind") && !log_text.contains("in use") {
                    return Err(format!("{e}\npostgres.log:\n{log_text}"));
                }
                last = e;
            }
        }
    }
    Err(format!("no free port after 5 attempts: {last}"))
}

fn create_roles(cluster: &Cluster) -> Result<(), String> {
    let config = cluster.direct(SUPERUSER, None);
    let setup = async move {
        let mut postgres = config.clone();
        postgres.dbname("postgres");
        let admin = super::connect(&postgres).await?;
        admin
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE {SCRAM_USER} LOGIN CREATEDB PASSWORD '{SCRAM_PASSWORD}';
                 SET password_encryption = 'md5';
                 CREATE ROLE {MD5_USER} LOGIN CREATEDB PASSWORD '{MD5_PASSWORD}';
                 CREATE ROLE {TRUST_USER} LOGIN CREATEDB;"
            ))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {DB}"))
            .await?;
        let db = super::connect(&config).await?;
        db.batch_execute("GRANT ALL ON SCHEMA public TO PUBLIC")
            .await
    };
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for cluster setup")
            .block_on(setup)
            .map_err(|e| format!("creating roles and database: {e:?}"))
    })
    .join()
    .map_err(|_| "cluster setup thread panicked".to_string())?
}

/// The first directory that holds real (non-wrapper) server binaries.
fn find_bindir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Ok(real) = fs::canonicalize(dir.join("initdb")) {
                candidates.extend(real.parent().map(Path::to_path_buf));
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates.into_iter().find(|dir| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| is_binary(&dir.join(b)))
    })
}

/// True for an executable file that is not a `#!` wrapper script.
fn is_binary(path: &Path) -> bool {
    match fs::read(path) {
        Ok(bytes) => bytes.len() > 4 && !bytes.starts_with(b"#!"),
        Err(_) => false,
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program`, run as the `postgres` user when we are root.
fn pg_command(program: &Path, as_root: bool) -> Command {
    let mut cmd = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    // Postgres tools complain when they cannot read the current directory.
    cmd.current_dir(run_dir());
    cmd
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Stops the cluster and removes `dir` once this process has exited.
fn spawn_watchdog(dir: &Path) {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        pidfile="$2/data/postmaster.pid"
        if [ -f "$pidfile" ]; then
            kill -QUIT "$(head -n 1 "$pidfile")" 2>/dev/null
            i=0
            while [ -f "$pidfile" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        fi
        [ -n "$3" ] || rm -rf "$2"
    "#;
    let keep = std::env::var("PGSHIM_IT_KEEP").unwrap_or_default();
    let args = |cmd: &mut Command| {
        cmd.args(["sh", "-c", SCRIPT, "pgshim-it-watchdog"])
            .arg(std::process::id().to_string())
            .arg(dir)
            .arg(&keep)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    // setsid keeps the watchdog alive when Ctrl-C hits the test's process group.
    let mut detached = Command::new("setsid");
    args(&mut detached);
    if detached.spawn().is_err() {
        let mut plain = Command::new("env");
        args(&mut plain);
        let _ = plain.spawn();
    }
}

/// Server backends whose `application_name` is `app`.
pub async fn backends_named(app: &str) -> i64 {
    cluster()
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}
