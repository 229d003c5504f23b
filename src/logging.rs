//! Log setup: human-readable lines by default, JSON with `--log-format json`.
//! The level comes from `PGSHIM_LOG` (e.g. `debug`, `pgshim=trace`), default `info`.
//!
//! Logs go to stderr and a broken log sink (a closed pipe, a full disk) is
//! survived silently: a proxy must keep serving when `tee` exits.
use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat) {
    let directives = std::env::var("PGSHIM_LOG").unwrap_or_else(|_| "info".into());
    // sqlparser logs every token at debug; keep it quiet unless asked for by name.
    let directives = if directives.contains("sqlparser") {
        directives
    } else {
        format!("{directives},sqlparser=warn")
    };
    let filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,sqlparser=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(Stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Stderr that reports every write as done: a log line that cannot be
/// written is dropped, never an error (the formatter would print it to the
/// same broken stderr, and `eprint!` panics).
#[derive(Debug, Clone, Copy)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}
