//! Exit codes, and the one place a failed command's error is printed, so each
//! error reaches the operator once, in the format they asked for.
use std::process::ExitCode;

use crate::ops::OpsError;

/// The command failed: config, connection or database trouble.
pub const EXIT_FAILED: u8 = 1;
/// The command line is wrong (clap uses the same code for parse errors).
pub const EXIT_USAGE: u8 = 2;
/// `verify` ran to the end and found rows not migrated or disagreeing.
pub const EXIT_NOT_CLEAN: u8 = 3;

/// `verify` finished and the shapes do not agree yet; not a failure of pgshim.
#[derive(Debug, thiserror::Error)]
#[error("verify of rule {rule} is not clean: {not_migrated} rows not migrated, {mismatched} rows disagree")]
pub struct NotClean {
    /// The rule's id.
    pub rule: String,
    /// Rows whose new columns are not filled yet.
    pub not_migrated: i64,
    /// Rows whose shapes disagree under the transforms.
    pub mismatched: i64,
}

/// Prints `error` once on stderr and picks the exit code.
pub fn report(error: &anyhow::Error, json: bool) -> ExitCode {
    let code = code(error);
    let message = message(error);
    if json {
        let value = serde_json::json!({ "level": "ERROR", "message": message, "exit_code": code });
        eprintln!("{value}");
    } else {
        eprintln!("pgshim: {message}");
    }
    ExitCode::from(code)
}

fn code(error: &anyhow::Error) -> u8 {
    if error.is::<NotClean>() {
        return EXIT_NOT_CLEAN;
    }
    match error.downcast_ref::<OpsError>() {
        Some(OpsError::UnknownRule { .. } | OpsError::NoDatabase { .. } | OpsError::Usage(_)) => {
            EXIT_USAGE
        }
        _ => EXIT_FAILED,
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text an
/// outer message already includes (many errors format their source themselves).
fn message(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(core(cause, &text)) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The part of a cause's text an outer message would quote: for a Postgres
/// error, the server's message rather than tokio-postgres's framing of it.
fn core<'a>(cause: &'a (dyn std::error::Error + 'static), text: &'a str) -> &'a str {
    cause
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .map_or(text, |db| db.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config file x.toml: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn cause_quoted_by_its_wrapper_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Quoting { source: io }).context("starting pgshim");
        assert_eq!(
            message(&e),
            "starting pgshim: cannot read config file x.toml: no such file"
        );
    }

    #[test]
    fn causes_not_quoted_are_kept() {
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(message(&e), "outer: inner");
    }

    #[test]
    fn not_clean_and_usage_have_their_own_codes() {
        let not_clean = anyhow::Error::new(NotClean {
            rule: "r".into(),
            not_migrated: 1,
            mismatched: 0,
        });
        assert_eq!(code(&not_clean), EXIT_NOT_CLEAN);
        let usage = anyhow::Error::new(OpsError::Usage("bad".into()));
        assert_eq!(code(&usage), EXIT_USAGE);
        assert_eq!(code(&anyhow::anyhow!("boom")), EXIT_FAILED);
    }
}
