//! End-to-end rewrite tests: exact output text per phase and statement form.

mod deep;
mod negative;
mod reads;
pub(crate) mod support;
mod writes;

/// Which statements count as schema changes, by their leading keywords, not
/// by words anywhere in the text; and which change a mapped table's columns.
#[test]
fn schema_change_statements() {
    use super::{changed_mapped_tables, schema_changes_only};
    let changes_mapped_columns = |sql: &str, rules| !changed_mapped_tables(sql, rules).is_empty();
    let rules = support::rules("expand");
    for sql in [
        "ALTER TABLE users ADD COLUMN c int",
        "alter table if exists only public.users add c int, alter d set default 1",
        "ALTER TABLE users DROP COLUMN c",
        "ALTER TABLE users RENAME COLUMN c TO d",
        "ALTER TABLE users ALTER COLUMN c TYPE bigint",
        "create temp table users (id int)",
        "CREATE UNLOGGED TABLE IF NOT EXISTS users (id int); SELECT 1",
        "/* note */ DROP TABLE accounts, users",
    ] {
        assert!(changes_mapped_columns(sql, &rules), "{sql}");
    }
    for sql in [
        "CREATE INDEX ON users (name)",
        "UPDATE users SET note = 'alter table users add c int'",
        "ALTER TABLE users ALTER COLUMN c SET DEFAULT 'x'",
        "ALTER TABLE users ADD CONSTRAINT k CHECK (c > 0), DROP CONSTRAINT j",
        "ALTER TABLE users_tmp ADD COLUMN c int",
        "CREATE TABLE xusers (id int)",
        "ALTER TABLE accounts ADD COLUMN note text DEFAULT 'users'",
        "ALTER TABLE other.users ADD COLUMN c int",
        "'unterminated",
    ] {
        assert!(!changes_mapped_columns(sql, &rules), "{sql}");
    }
    assert_eq!(
        changed_mapped_tables(
            "DROP TABLE accounts, users; ALTER TABLE orders DROP c",
            &rules
        ),
        ["users", "orders"]
    );
    assert!(schema_changes_only(
        "CREATE TABLE users (id int); COMMENT ON TABLE users IS 'x'"
    ));
    assert!(!schema_changes_only(
        "ALTER TABLE users ADD c int; SELECT * FROM users"
    ));
    assert!(!schema_changes_only(""));
}
