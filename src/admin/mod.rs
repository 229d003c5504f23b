//! What operators talk to: the admin HTTP listener (health, rules, reload,
//! metrics rendered from [`crate::metrics`]).
pub mod http;
