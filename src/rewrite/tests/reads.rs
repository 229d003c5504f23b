//! Reads: select lists, predicates, `*`, aliases, scopes.

use super::support::*;

const MIGRATE_NAME: &str =
    "(CASE WHEN users.full_name IS NULL THEN users.name ELSE users.full_name END)";

#[test]
fn plain_column_is_untouched_where_it_is_the_phase_value() {
    assert_eq!(
        rw("expand", "SELECT name FROM users"),
        "SELECT name FROM users"
    );
    assert_eq!(
        rw("contract", "SELECT full_name FROM users"),
        "SELECT full_name FROM users"
    );
}

#[test]
fn old_shape_select_in_each_phase_keeps_its_label() {
    assert_eq!(
        rw("migrate", "SELECT name FROM users"),
        format!("SELECT {MIGRATE_NAME} AS name FROM users")
    );
    assert_eq!(
        rw("contract", "SELECT name FROM users"),
        "SELECT users.full_name AS name FROM users"
    );
}

#[test]
fn new_shape_select_in_each_phase_keeps_its_label() {
    assert_eq!(
        rw("expand", "SELECT full_name FROM users"),
        "SELECT users.name AS full_name FROM users"
    );
    assert_eq!(
        rw("migrate", "SELECT full_name FROM users"),
        format!("SELECT {MIGRATE_NAME} AS full_name FROM users")
    );
}

#[test]
fn explicit_alias_is_kept_and_not_doubled() {
    assert_eq!(
        rw("contract", "SELECT u.name AS n FROM users u"),
        "SELECT u.full_name AS n FROM users u"
    );
}

#[test]
fn where_order_by_and_group_by_are_rewritten() {
    assert_eq!(
        rw("contract", "SELECT u.name, count(*) FROM users u GROUP BY u.name HAVING count(*) > 0 ORDER BY u.name"),
        "SELECT u.full_name AS name, count(*) FROM users u GROUP BY u.full_name HAVING count(*) > 0 ORDER BY u.full_name"
    );
    assert_eq!(
        rw("contract", "SELECT id FROM users WHERE name = $1"),
        "SELECT id FROM users WHERE users.full_name = $1"
    );
}

#[test]
fn order_by_output_label_is_left_alone() {
    assert_eq!(
        rw(
            "contract",
            "SELECT full_name AS name FROM users ORDER BY name"
        ),
        "SELECT full_name AS name FROM users ORDER BY name"
    );
    assert_eq!(
        rw(
            "contract",
            "SELECT name FROM users UNION SELECT full_name FROM users ORDER BY name"
        ),
        "SELECT users.full_name AS name FROM users UNION SELECT full_name FROM users ORDER BY name"
    );
}

#[test]
fn star_expands_from_catalog_in_order() {
    assert_eq!(
        rw("expand", "SELECT * FROM users"),
        "SELECT users.id, users.name, users.name AS full_name, users.email FROM users"
    );
    assert_eq!(
        rw_with("contract", "SELECT * FROM users", &contracted_catalog()),
        "SELECT users.id, users.full_name, users.email FROM users"
    );
}

#[test]
fn qualified_star_and_join_keep_other_tables() {
    assert_eq!(
        rw("contract", "SELECT u.*, x.* FROM users u JOIN other x ON x.id = u.id"),
        "SELECT u.id, u.full_name AS name, u.full_name, u.email, x.* FROM users u JOIN other x ON x.id = u.id"
    );
    assert_eq!(
        rw("contract", "SELECT * FROM users u JOIN other x ON x.id = u.id"),
        "SELECT u.id, u.full_name AS name, u.full_name, u.email, x.* FROM users u JOIN other x ON x.id = u.id"
    );
}

#[test]
fn type_change_rule_reads_through_transform() {
    assert_eq!(
        rw("contract", "select status::text from orders"),
        "select (CASE orders.status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END)::text AS status from orders"
    );
    assert_eq!(
        rw("expand", "SELECT o.status_code FROM orders o"),
        "SELECT (CASE o.status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END) AS status_code FROM orders o"
    );
}

#[test]
fn split_rule_in_migrate_checks_all_new_columns() {
    assert_eq!(
        rw("migrate", "SELECT first_name FROM app.people"),
        "SELECT (CASE WHEN people.first_name IS NULL AND people.last_name IS NULL THEN (split_part(people.name, ' ', 1)) ELSE people.first_name END) AS first_name FROM app.people"
    );
    assert_eq!(
        rw("contract", "SELECT p.name FROM app.people p"),
        "SELECT (concat_ws(' ', p.first_name, p.last_name)) AS name FROM app.people p"
    );
}

#[test]
fn subqueries_ctes_and_lateral() {
    assert_eq!(
        rw(
            "contract",
            "WITH c AS (SELECT name FROM users) SELECT name FROM c"
        ),
        "WITH c AS (SELECT users.full_name AS name FROM users) SELECT name FROM c"
    );
    assert_eq!(
        rw("contract", "SELECT id FROM users WHERE name IN (SELECT name FROM users WHERE id > 1)"),
        "SELECT id FROM users WHERE users.full_name IN (SELECT users.full_name AS name FROM users WHERE id > 1)"
    );
    assert_eq!(
        rw(
            "contract",
            "SELECT l.x FROM users u, LATERAL (SELECT u.name AS x) l"
        ),
        "SELECT l.x FROM users u, LATERAL (SELECT u.full_name AS x) l"
    );
    assert_eq!(
        rw(
            "contract",
            "SELECT (SELECT max(u2.name) FROM users u2 WHERE u2.id = u.id) FROM users u"
        ),
        "SELECT (SELECT max(u2.full_name) FROM users u2 WHERE u2.id = u.id) FROM users u"
    );
}

#[test]
fn cte_shadowing_a_mapped_table_is_not_rewritten() {
    let sql = "WITH users AS (SELECT 1 AS name) SELECT name FROM users";
    assert_eq!(rw("contract", sql), sql);
}

#[test]
fn other_tables_literals_comments_and_lookalikes_are_untouched() {
    for sql in [
        "SELECT name FROM orders",
        "SELECT x.name FROM other.users x",
        "SELECT nameX, users.namex FROM users",
        "SELECT 'name' FROM users -- name",
        "SELECT \"Name\" FROM users",
        "SELECT 1 FROM superusers WHERE name = 'x'",
    ] {
        assert_eq!(rw("contract", sql), sql);
    }
    assert_eq!(
        rw(
            "contract",
            "SELECT 'name', name /* name */ FROM users -- name"
        ),
        "SELECT 'name', users.full_name AS name /* name */ FROM users -- name"
    );
}

#[test]
fn quoting_case_folding_and_schema_qualification() {
    assert_eq!(
        rw("contract", "SELECT NAME FROM PUBLIC.USERS"),
        "SELECT users.full_name AS name FROM PUBLIC.USERS"
    );
    assert_eq!(
        rw(
            "contract",
            "SELECT \"name\", \"U\".name FROM users AS \"U\""
        ),
        "SELECT \"U\".full_name AS name, \"U\".full_name AS name FROM users AS \"U\""
    );
    assert_eq!(
        rw("contract", "SELECT public.users.name FROM public.users"),
        "SELECT users.full_name AS name FROM public.users"
    );
    let quoted_table = "SELECT name FROM \"Users\"";
    assert_eq!(rw("contract", quoted_table), quoted_table);
}

#[test]
fn multibyte_text_keeps_offsets() {
    assert_eq!(
        rw(
            "contract",
            "SELECT 'é€' AS e, name FROM users WHERE name <> 'ü'"
        ),
        "SELECT 'é€' AS e, users.full_name AS name FROM users WHERE users.full_name <> 'ü'"
    );
}

#[test]
fn several_statements_in_one_message() {
    assert_eq!(
        rw("contract", "SELECT 1; SELECT name FROM users;\nSELECT 2"),
        "SELECT 1; SELECT users.full_name AS name FROM users;\nSELECT 2"
    );
}

#[test]
fn window_distinct_on_aggregate_order_and_explain() {
    assert_eq!(
        rw(
            "contract",
            "SELECT DISTINCT ON (name) name FROM users ORDER BY name"
        ),
        "SELECT DISTINCT ON (users.full_name) users.full_name AS name FROM users ORDER BY name"
    );
    assert_eq!(
        rw("contract", "SELECT string_agg(name, ',' ORDER BY name) OVER (PARTITION BY name) FROM users"),
        "SELECT string_agg(users.full_name, ',' ORDER BY users.full_name) OVER (PARTITION BY users.full_name) FROM users"
    );
    assert_eq!(
        rw("contract", "EXPLAIN SELECT name FROM users"),
        "EXPLAIN SELECT users.full_name AS name FROM users"
    );
}

#[test]
fn labels_through_casts_and_parentheses() {
    assert_eq!(
        rw("contract", "SELECT (name)::text, upper(name) FROM users"),
        "SELECT (users.full_name)::text AS name, upper(users.full_name) FROM users"
    );
}

#[test]
fn copy_to_becomes_a_query() {
    assert_eq!(
        rw(
            "contract",
            "COPY users (id, name) TO STDOUT WITH (FORMAT csv)"
        ),
        "COPY (SELECT users.id, users.full_name AS name FROM users) TO STDOUT WITH (FORMAT csv)"
    );
    assert_eq!(
        rw("contract", "COPY (SELECT name FROM users) TO STDOUT"),
        "COPY (SELECT users.full_name AS name FROM users) TO STDOUT"
    );
    assert_eq!(
        rw("expand", "COPY users (id, name) TO STDOUT"),
        "COPY users (id, name) TO STDOUT"
    );
}

#[test]
fn statements_without_mapped_tables_are_unchanged_without_parsing() {
    let rules = rules("contract");
    let catalog = catalog();
    assert_eq!(
        crate::rewrite::rewrite("SELEKT garbage (", &rules, &catalog),
        Ok(crate::rewrite::Outcome::Unchanged)
    );
}

#[test]
fn migrate_predicates_on_values_keep_plain_columns_for_indexes() {
    let cases = [
        (
            "SELECT id FROM users WHERE name = 'x'",
            "SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name = 'x') OR ((users.full_name IS NOT NULL) AND users.full_name = 'x'))",
        ),
        (
            "SELECT id FROM users u WHERE $1 < u.full_name",
            "SELECT id FROM users u WHERE ((u.full_name IS NULL AND $1 < u.name) OR ((u.full_name IS NOT NULL) AND $1 < u.full_name))",
        ),
        (
            "SELECT id FROM users WHERE name = $1::text",
            "SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name = $1::text) OR ((users.full_name IS NOT NULL) AND users.full_name = $1::text))",
        ),
        (
            "SELECT id FROM users WHERE full_name NOT IN ('a', $2)",
            "SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name NOT IN ('a', $2)) OR ((users.full_name IS NOT NULL) AND users.full_name NOT IN ('a', $2)))",
        ),
        (
            "SELECT id FROM users WHERE name IS NOT NULL",
            "SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name IS NOT NULL) OR ((users.full_name IS NOT NULL) AND users.full_name IS NOT NULL))",
        ),
        (
            "SELECT id FROM users WHERE name LIKE 'a%'",
            "SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name LIKE 'a%') OR ((users.full_name IS NOT NULL) AND users.full_name LIKE 'a%'))",
        ),
        (
            "SELECT id FROM app.people WHERE first_name BETWEEN 'a' AND 'b'",
            "SELECT id FROM app.people WHERE ((people.first_name IS NULL AND people.last_name IS NULL AND (split_part(people.name, ' ', 1)) BETWEEN 'a' AND 'b') OR ((people.first_name IS NOT NULL OR people.last_name IS NOT NULL) AND people.first_name BETWEEN 'a' AND 'b'))",
        ),
        (
            "SELECT o.id FROM orders o JOIN users u ON o.name = u.name",
            "SELECT o.id FROM orders o JOIN users u ON ((u.full_name IS NULL AND o.name = u.name) OR ((u.full_name IS NOT NULL) AND o.name = u.full_name))",
        ),
    ];
    for (sql, want) in cases {
        assert_eq!(rw("migrate", sql), want, "{sql}");
    }
}

#[test]
fn migrate_predicates_on_expressions_keep_the_case_form() {
    assert_eq!(
        rw("migrate", "SELECT id FROM users WHERE name = lower($1)"),
        "SELECT id FROM users WHERE (CASE WHEN users.full_name IS NULL THEN users.name ELSE users.full_name END) = lower($1)"
    );
    assert_eq!(
        rw("migrate", "SELECT id FROM users u WHERE u.name = u.full_name"),
        "SELECT id FROM users u WHERE (CASE WHEN u.full_name IS NULL THEN u.name ELSE u.full_name END) = (CASE WHEN u.full_name IS NULL THEN u.name ELSE u.full_name END)"
    );
}

#[test]
fn migrate_predicates_on_the_order_by_column_also_keep_the_case_form() {
    // The ORDER BY reads the CASE value, which only an index on it returns in
    // order: the WHERE keeps that form too, so the same index bounds the scan.
    assert_eq!(
        rw(
            "migrate",
            "SELECT id FROM users WHERE name > $1 ORDER BY name LIMIT 10"
        ),
        "SELECT id FROM users WHERE (((users.full_name IS NULL AND users.name > $1) OR ((users.full_name IS NOT NULL) AND users.full_name > $1)) AND (CASE WHEN users.full_name IS NULL THEN users.name ELSE users.full_name END) > $1) ORDER BY (CASE WHEN users.full_name IS NULL THEN users.name ELSE users.full_name END) LIMIT 10"
    );
    // Either name of the column, qualified or not; other columns, and a
    // label of the select list, are left as they were.
    assert_eq!(
        rw(
            "migrate",
            "SELECT u.id FROM users u WHERE full_name BETWEEN 'a' AND 'b' AND u.id > 3 ORDER BY u.name DESC"
        ),
        "SELECT u.id FROM users u WHERE (((u.full_name IS NULL AND u.name BETWEEN 'a' AND 'b') OR ((u.full_name IS NOT NULL) AND u.full_name BETWEEN 'a' AND 'b')) AND (CASE WHEN u.full_name IS NULL THEN u.name ELSE u.full_name END) BETWEEN 'a' AND 'b') AND u.id > 3 ORDER BY (CASE WHEN u.full_name IS NULL THEN u.name ELSE u.full_name END) DESC"
    );
    assert_eq!(
        rw(
            "migrate",
            "SELECT id AS name FROM users WHERE name = 'x' ORDER BY name"
        ),
        "SELECT id AS name FROM users WHERE ((users.full_name IS NULL AND users.name = 'x') OR ((users.full_name IS NOT NULL) AND users.full_name = 'x')) ORDER BY name"
    );
    // A subquery's WHERE follows its own ORDER BY, not the outer one's.
    assert_eq!(
        rw(
            "migrate",
            "SELECT id FROM users WHERE id IN (SELECT id FROM users WHERE name = 'x') ORDER BY name"
        ),
        "SELECT id FROM users WHERE id IN (SELECT id FROM users WHERE ((users.full_name IS NULL AND users.name = 'x') OR ((users.full_name IS NOT NULL) AND users.full_name = 'x'))) ORDER BY (CASE WHEN users.full_name IS NULL THEN users.name ELSE users.full_name END)"
    );
}

#[test]
fn predicates_outside_migrate_are_unchanged() {
    assert_eq!(
        rw("expand", "SELECT id FROM users WHERE name = $1"),
        "SELECT id FROM users WHERE name = $1"
    );
    assert_eq!(
        rw("contract", "SELECT id FROM users WHERE full_name = $1"),
        "SELECT id FROM users WHERE full_name = $1"
    );
}

#[test]
fn computed_values_of_a_missing_outer_join_row_are_null() {
    assert_eq!(
        rw(
            "contract",
            "SELECT a.id, b.name FROM app.people a LEFT JOIN app.people b ON b.id = a.id + 1"
        ),
        "SELECT a.id, (CASE WHEN b.ctid IS NULL THEN NULL ELSE (concat_ws(' ', b.first_name, b.last_name)) END) AS name FROM app.people a LEFT JOIN app.people b ON b.id = a.id + 1"
    );
    // The preserved side of the join, and bare columns, need no guard.
    assert_eq!(
        rw(
            "contract",
            "SELECT b.name FROM users a RIGHT JOIN app.people b ON true"
        ),
        "SELECT (concat_ws(' ', b.first_name, b.last_name)) AS name FROM users a RIGHT JOIN app.people b ON true"
    );
    assert_eq!(
        rw(
            "contract",
            "SELECT a.name FROM users a FULL JOIN users b ON a.id = b.id"
        ),
        "SELECT a.full_name AS name FROM users a FULL JOIN users b ON a.id = b.id"
    );
}

#[test]
fn computed_values_of_another_type_are_cast_to_the_column_type() {
    let mut cat = catalog();
    cat.mark_retyped("public", "orders", "status_code");
    assert_eq!(
        rw_with("expand", "SELECT status_code FROM orders", &cat),
        "SELECT CAST((CASE orders.status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END) AS integer) AS status_code FROM orders"
    );
    // The old column is not retyped: its computed value is left as the transform types it.
    assert_eq!(
        rw_with("contract", "SELECT status FROM orders", &cat),
        "SELECT (CASE orders.status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END) AS status FROM orders"
    );
}
