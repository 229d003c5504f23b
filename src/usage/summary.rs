//! One rule's usage over the live instances of a fleet, as `pgshim status` shows it.
//!
//! Each instance reports times on its own clock; ages are taken against the time of its
//! report and the age of its registry row (measured with the database's clock), so hosts
//! with skewed clocks still give the right "3 min ago".
use super::{Report, ShapeCount, SAMPLE_SIZE};

/// One instance's report as read from the registry.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// What the instance wrote.
    pub report: &'a Report,
    /// How old its registry row is, in ms (database clock).
    pub age_ms: i64,
    /// When the instance started, as the registry shows it.
    pub started_at: &'a str,
}

/// One shape's statements over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Total {
    /// Statements, summed over the instances.
    pub statements: u64,
    /// Seconds since the most recent one, on any instance.
    pub last_seen_secs_ago: Option<u64>,
}

/// A client that used the old names, over the fleet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientSeen {
    /// Its `application_name` (empty when it gave none).
    pub application_name: String,
    /// Its address.
    pub client_addr: String,
    /// Seconds since it last used the old names.
    pub last_seen_secs_ago: u64,
}

/// One rule's usage over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Live instances that reported usage for the rule.
    pub instances: usize,
    /// Statements naming old columns.
    pub old: Total,
    /// Statements naming new columns.
    pub new: Total,
    /// Statements using every column through `*`.
    pub star: Total,
    /// The most recent distinct clients that used the old names, newest first.
    pub old_clients: Vec<ClientSeen>,
    /// Since when the counts run: the start of the earliest instance reporting.
    pub counting_since: Option<String>,
}

/// Sums `rule`'s usage over `instances` (pass only live ones).
pub fn summarize<'a>(rule: &str, instances: impl IntoIterator<Item = Reported<'a>>) -> Summary {
    let mut out = Summary::default();
    let mut earliest: Option<u64> = None;
    for i in instances {
        let Some(r) = i.report.rules.get(rule) else {
            continue;
        };
        out.instances += 1;
        if earliest.is_none_or(|e| i.report.since_ms < e) {
            earliest = Some(i.report.since_ms);
            out.counting_since = Some(i.started_at.to_owned());
        }
        let ago = |ms: u64| -> u64 {
            let age = u64::try_from(i.age_ms).unwrap_or(0);
            (i.report.at_ms.saturating_sub(ms) + age) / 1000
        };
        add(&mut out.old, &r.old, ago);
        add(&mut out.new, &r.new, ago);
        add(&mut out.star, &r.star, ago);
        for seen in &r.old_clients {
            let secs = ago(seen.last_seen_ms);
            let same = |c: &&mut ClientSeen| {
                c.application_name == seen.application_name && c.client_addr == seen.client_addr
            };
            match out.old_clients.iter_mut().find(same) {
                Some(c) => c.last_seen_secs_ago = c.last_seen_secs_ago.min(secs),
                None => out.old_clients.push(ClientSeen {
                    application_name: seen.application_name.clone(),
                    client_addr: seen.client_addr.clone(),
                    last_seen_secs_ago: secs,
                }),
            }
        }
    }
    out.old_clients.sort_by_key(|c| c.last_seen_secs_ago);
    out.old_clients.truncate(SAMPLE_SIZE);
    out
}

fn add(total: &mut Total, count: &ShapeCount, ago: impl Fn(u64) -> u64) {
    total.statements += count.statements;
    if let Some(last) = count.last_seen_ms {
        let secs = ago(last);
        total.last_seen_secs_ago = Some(total.last_seen_secs_ago.map_or(secs, |t| t.min(secs)));
    }
}

/// `3 min`, `2 h`: a short age.
pub fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

// === impl Summary ===

impl Summary {
    /// The status line: who last used the old names and when, or since when nobody has,
    /// then the counts per shape.
    pub fn line(&self) -> String {
        if self.instances == 0 {
            return "no live instance reports usage of this rule".into();
        }
        let lead = match (self.old.last_seen_secs_ago, self.old_clients.first()) {
            (Some(secs), Some(c)) => {
                let others = match self.old_clients.len() - 1 {
                    0 => String::new(),
                    n => format!(" and {n} other client{}", if n == 1 { "" } else { "s" }),
                };
                format!(
                    "old names last used {} ago by {}{others}",
                    ago(secs),
                    client(c)
                )
            }
            (Some(secs), None) => format!("old names last used {} ago", ago(secs)),
            (None, _) => format!(
                "old names not used since {}",
                self.counting_since
                    .as_deref()
                    .unwrap_or("the instances started")
            ),
        };
        format!(
            "{lead}; statements since start: {} with old names, {} with new names, {} with *",
            self.old.statements, self.new.statements, self.star.statements
        )
    }
}

/// `billing-v1 (10.0.0.7)`.
fn client(c: &ClientSeen) -> String {
    let name = if c.application_name.is_empty() {
        "a client without application_name"
    } else {
        &c.application_name
    };
    format!("{name} ({})", c.client_addr)
}
