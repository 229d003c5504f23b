//! Integration tests against a real Postgres (see support/).
