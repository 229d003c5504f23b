//! Log setup: human-readable lines by default, JSON with `--log-format json`.
//! The level comes from `PGSHIM_LOG` (e.g. `debug`, `pgshim=trace`), default `info`.
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
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
