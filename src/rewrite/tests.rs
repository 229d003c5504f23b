//! End-to-end rewrite tests: exact output text per phase and statement form.

mod deep;
mod negative;
mod reads;
pub(crate) mod support;
mod writes;
