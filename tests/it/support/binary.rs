//! The `pgshim` binary as a child process, for what only a process has:
//! signals, exit status, logs, the configuration file.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::pg::{free_port, run_dir};
use super::proxy::ProxyBuilder;
use super::{unique_name, within};

/// A `pgshim serve` process and its address.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its listening port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Binary {
    /// Starts `pgshim serve --config <file> <extra>` with the configuration
    /// `settings` describes, listening on a free port, and waits until it accepts.
    pub async fn start(settings: ProxyBuilder, extra: &[&str]) -> Binary {
        Binary::start_under(&[], settings, extra).await
    }

    /// As [`Binary::start`], run through `wrapper` (a command that execs its
    /// arguments, such as `prlimit --as=N`); empty for none.
    pub async fn start_under(wrapper: &[&str], settings: ProxyBuilder, extra: &[&str]) -> Binary {
        let port = free_port();
        let name = unique_name("pgshim");
        let config = run_dir().join(format!("{name}.toml"));
        let log = run_dir().join(format!("{name}.log"));
        let text = settings.toml(&format!("127.0.0.1:{port}"));
        std::fs::write(&config, text).unwrap();
        let log_file = std::fs::File::create(&log).unwrap();
        let pgshim = env!("CARGO_BIN_EXE_pgshim");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pgshim);
                c
            }
            None => Command::new(pgshim),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("start the pgshim binary");
        let mut binary = Binary { child, port, log };
        let ready = async {
            loop {
                if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return;
                }
                if let Some(status) = binary.child.try_wait().unwrap() {
                    panic!(
                        "pgshim exited at startup ({status}):\n{}",
                        binary.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        within(30, "pgshim binary listening", ready).await;
        binary
    }

    /// Everything the process logged (stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends signal `name` (`TERM`, `INT`) with `kill`.
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Waits (up to 30 s) for the process to exit.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let log = self.log.clone();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "pgshim did not exit:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    }
}

/// Sends signal `name` (`HUP`, `TERM`, `INT`) to `child` with `kill`.
pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("pgshim is running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}
