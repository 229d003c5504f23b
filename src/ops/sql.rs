//! Small SQL-text helpers shared by the operations: identifier quoting and durations.
//!
//! Operations always quote identifiers: the text is generated, not read by people in
//! a hot path, and always quoting is correct for every name a catalog can hold.
use std::time::Duration;

/// `"name"`, with embedded quotes doubled: Postgres reads it back as exactly `name`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn table(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// A duration as a Postgres setting value in milliseconds, e.g. `'1500ms'`.
pub fn setting(d: Duration) -> String {
    format!("'{}ms'", d.as_millis())
}

/// Parses `500ms`, `2s`, `1m`, `1h` or a bare number of milliseconds.
///
/// # Errors
/// A message naming the text when it is not one of those forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 10s, 1m"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n.saturating_mul(1_000),
        "m" | "min" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

/// `1h02m03s`, `4m05s`, `12s`: a short human duration.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_doubles_embedded_quotes() {
        assert_eq!(ident("Odd\"Name"), "\"Odd\"\"Name\"");
        assert_eq!(table("public", "users"), "\"public\".\"users\"");
    }

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(7)), "7s");
        assert_eq!(human(Duration::from_secs(125)), "2m05s");
        assert_eq!(human(Duration::from_secs(3723)), "1h02m03s");
    }
}
