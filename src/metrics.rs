//! The Prometheus metric families pgshim exports, and cheap handles to them.
//!
//! Handles are looked up once and kept, so updating a metric on the forwarding
//! path is one relaxed atomic add, with no registry lookup or allocation.
use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of `pgshim_rewrite_duration_seconds`: 1 µs to 50 ms.
const REWRITE_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2];

/// Handles to every metric family with fixed labels.
pub struct Metrics {
    /// `pgshim_client_connections`: clients connected now.
    pub connections: Gauge,
    /// `pgshim_client_connections_total`: clients accepted.
    pub connections_total: Counter,
    /// `pgshim_client_connections_rejected_total{reason="max_connections"}`.
    pub rejected_max_connections: Counter,
    /// `pgshim_client_connections_rejected_total{reason="shutdown"}`.
    pub rejected_shutdown: Counter,
    /// `pgshim_upstream_connect_failures_total`.
    pub upstream_connect_failures: Counter,
    /// `pgshim_statements_total{outcome}`, by [`StatementOutcome::index`].
    statements: [Counter; 4],
    /// `pgshim_rewrite_cache_hits_total`.
    pub cache_hits: Counter,
    /// `pgshim_rewrite_cache_misses_total`.
    pub cache_misses: Counter,
    /// `pgshim_rewrite_cache_size`: entries across databases.
    pub cache_size: Gauge,
    /// `pgshim_rewrite_duration_seconds`: time to rewrite one statement text.
    pub rewrite_duration: Histogram,
    /// `pgshim_statements_reprepared_total`: prepared statements re-prepared after a rules change.
    pub reprepared: Counter,
    /// `pgshim_reloads_total{result="ok"}`.
    pub reloads_ok: Counter,
    /// `pgshim_reloads_total{result="failed"}`.
    pub reloads_failed: Counter,
    /// `pgshim_rules_version`.
    pub rules_version: Gauge,
    /// `pgshim_bytes_forwarded_total{direction="client_to_server"}`.
    pub bytes_from_client: Counter,
    /// `pgshim_bytes_forwarded_total{direction="server_to_client"}`.
    pub bytes_from_server: Counter,
    /// `pgshim_protocol_errors_total{side="client"}`.
    pub protocol_errors_client: Counter,
    /// `pgshim_protocol_errors_total{side="server"}`.
    pub protocol_errors_server: Counter,
}

/// The process-wide metrics: the Prometheus recorder is installed on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let _ = handle();
        Metrics::register()
    })
}

/// The Prometheus handle that renders `/metrics`.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("pgshim_rewrite_duration_seconds".into()),
                REWRITE_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed (a test harness): then
        // this handle renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts `n` rewrites of statements touching `rule` in `phase`.
pub fn rewrite_by_rule(rule: &str, phase: &'static str, n: u64) {
    counter!("pgshim_rewrites_total", "rule" => rule.to_owned(), "phase" => phase).increment(n);
}

/// How a statement text left pgshim: the `outcome` label of
/// `pgshim_statements_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementOutcome {
    /// Forwarded as the client wrote it.
    PassedThrough,
    /// Forwarded rewritten.
    Rewritten,
    /// Refused with an error.
    Refused,
    /// Forwarded unrewritten because `on_unrewritable = "pass"`.
    Unrewritten,
}

// === impl StatementOutcome ===

impl StatementOutcome {
    /// Every outcome, in [`StatementOutcome::index`] order.
    pub const ALL: [StatementOutcome; 4] = [
        StatementOutcome::PassedThrough,
        StatementOutcome::Rewritten,
        StatementOutcome::Refused,
        StatementOutcome::Unrewritten,
    ];

    /// Position in arrays indexed by outcome.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StatementOutcome::PassedThrough => "passed_through",
            StatementOutcome::Rewritten => "rewritten",
            StatementOutcome::Refused => "rejected",
            StatementOutcome::Unrewritten => "unrewritten",
        }
    }
}

/// The handles counting statements that used `shape` (`old`, `new`, `star`) of `rule`,
/// and holding when the last one was seen; looked up once per rule and kept.
pub fn column_usage(rule: &str, shape: &'static str) -> (Counter, Gauge) {
    let _ = metrics();
    (
        counter!("pgshim_column_usage_total", "rule" => rule.to_owned(), "shape" => shape),
        gauge!("pgshim_column_usage_last_seen_seconds", "rule" => rule.to_owned(), "shape" => shape),
    )
}

/// Sets the phase gauge of `rule`: 0 expand, 1 migrate, 2 contract.
pub fn rule_phase(rule: &str, phase: f64) {
    gauge!("pgshim_rule_phase", "rule" => rule.to_owned()).set(phase);
}

// === impl Metrics ===

impl Metrics {
    /// `pgshim_statements_total{outcome}`.
    pub fn statements(&self, outcome: StatementOutcome) -> &Counter {
        &self.statements[outcome.index()]
    }

    fn register() -> Metrics {
        describe();
        let statements =
            |outcome: &'static str| counter!("pgshim_statements_total", "outcome" => outcome);
        let rejected = |reason: &'static str| counter!("pgshim_client_connections_rejected_total", "reason" => reason);
        let reloads = |result: &'static str| counter!("pgshim_reloads_total", "result" => result);
        let bytes = |direction: &'static str| counter!("pgshim_bytes_forwarded_total", "direction" => direction);
        let protocol =
            |side: &'static str| counter!("pgshim_protocol_errors_total", "side" => side);
        Metrics {
            connections: gauge!("pgshim_client_connections"),
            connections_total: counter!("pgshim_client_connections_total"),
            rejected_max_connections: rejected("max_connections"),
            rejected_shutdown: rejected("shutdown"),
            upstream_connect_failures: counter!("pgshim_upstream_connect_failures_total"),
            statements: StatementOutcome::ALL.map(|o| statements(o.label())),
            cache_hits: counter!("pgshim_rewrite_cache_hits_total"),
            cache_misses: counter!("pgshim_rewrite_cache_misses_total"),
            cache_size: gauge!("pgshim_rewrite_cache_size"),
            rewrite_duration: histogram!("pgshim_rewrite_duration_seconds"),
            reprepared: counter!("pgshim_statements_reprepared_total"),
            reloads_ok: reloads("ok"),
            reloads_failed: reloads("failed"),
            rules_version: gauge!("pgshim_rules_version"),
            bytes_from_client: bytes("client_to_server"),
            bytes_from_server: bytes("server_to_client"),
            protocol_errors_client: protocol("client"),
            protocol_errors_server: protocol("server"),
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("pgshim_client_connections", "Client connections open now");
    describe_counter!(
        "pgshim_client_connections_total",
        "Client connections accepted"
    );
    describe_counter!(
        "pgshim_client_connections_rejected_total",
        "Client connections refused, by reason"
    );
    describe_counter!(
        "pgshim_upstream_connect_failures_total",
        "Failed connections to the upstream server"
    );
    describe_counter!(
        "pgshim_statements_total",
        "Statements (Query and Parse messages) by outcome"
    );
    describe_counter!(
        "pgshim_rewrites_total",
        "Statements rewritten, by rule and phase"
    );
    describe_counter!(
        "pgshim_rewrite_cache_hits_total",
        "Rewrites served from the cache"
    );
    describe_counter!("pgshim_rewrite_cache_misses_total", "Rewrites computed");
    describe_gauge!("pgshim_rewrite_cache_size", "Entries in the rewrite caches");
    describe_histogram!(
        "pgshim_rewrite_duration_seconds",
        Unit::Seconds,
        "Time to rewrite one statement text"
    );
    describe_counter!(
        "pgshim_statements_reprepared_total",
        "Prepared statements prepared again after a rules change"
    );
    describe_counter!("pgshim_reloads_total", "Config reloads by result");
    describe_gauge!("pgshim_rules_version", "Version of the rules in force");
    describe_counter!(
        "pgshim_column_usage_total",
        "Statements that named a rule's old columns, its new columns, or read or wrote them through * (shape old, new, star), by rule"
    );
    describe_gauge!(
        "pgshim_column_usage_last_seen_seconds",
        Unit::Seconds,
        "When a statement last used each shape of a rule (Unix time)"
    );
    describe_gauge!(
        "pgshim_rule_phase",
        "Phase of each rule: 0 expand, 1 migrate, 2 contract"
    );
    describe_counter!(
        "pgshim_bytes_forwarded_total",
        Unit::Bytes,
        "Bytes forwarded, by direction"
    );
    describe_counter!(
        "pgshim_protocol_errors_total",
        "Protocol violations, by the side that committed them"
    );
}
