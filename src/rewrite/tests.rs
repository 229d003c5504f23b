//! End-to-end rewrite tests: exact output text per phase and statement form.

mod deep;
mod negative;
mod reads;
pub(crate) mod support;
mod writes;

/// Which statements count as schema changes, by their leading keywords, not
/// by words anywhere in the text.
#[test]
fn schema_change_statements() {
    use super::{changes_table_columns, schema_changes_only};
    for sql in [
        "ALTER TABLE users ADD COLUMN c int",
        "create temp table users (id int)",
        "CREATE UNLOGGED TABLE t (id int); SELECT 1",
        "/* note */ DROP TABLE users",
    ] {
        assert!(changes_table_columns(sql), "{sql}");
    }
    for sql in [
        "CREATE INDEX ON users (name)",
        "UPDATE users SET note = 'alter table users'",
        "SELECT 1 AS create",
        "ALTER INDEX i RENAME TO j",
        "'unterminated",
    ] {
        assert!(!changes_table_columns(sql), "{sql}");
    }
    assert!(schema_changes_only(
        "CREATE TABLE users (id int); COMMENT ON TABLE users IS 'x'"
    ));
    assert!(!schema_changes_only(
        "ALTER TABLE users ADD c int; SELECT * FROM users"
    ));
    assert!(!schema_changes_only(""));
}
