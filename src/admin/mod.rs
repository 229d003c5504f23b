//! What operators talk to: Prometheus metrics and the admin HTTP listener.
pub mod http;
pub mod metrics;
