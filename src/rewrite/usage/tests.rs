//! Which shapes a statement uses, per rule, in every statement form.

use crate::rewrite::tests::support::{catalog, rules};
use crate::rewrite::{rewrite_with_usage, RewriteCache, Shape, Usage};

const USERS: &str = "users.name";
const ORDERS: &str = "orders.status";
const PEOPLE: &str = "app.people.name";

fn used(phase: &str, sql: &str) -> Usage {
    match rewrite_with_usage(sql, &rules(phase), &catalog()) {
        Ok((_, usage)) => usage,
        Err(e) => panic!("refused {sql:?}: {e}"),
    }
}

/// `(rule, shape)` pairs, sorted.
fn pairs(phase: &str, sql: &str) -> Vec<(String, Shape)> {
    let mut v: Vec<(String, Shape)> = used(phase, sql)
        .iter()
        .map(|(r, s)| (r.to_owned(), s))
        .collect();
    v.sort();
    v
}

fn one(rule: &str, shape: Shape) -> Vec<(String, Shape)> {
    vec![(rule.to_owned(), shape)]
}

#[test]
fn old_and_new_names_in_a_select_list() {
    for phase in ["expand", "migrate", "contract"] {
        assert_eq!(
            pairs(phase, "SELECT name FROM users"),
            one(USERS, Shape::Old)
        );
        assert_eq!(
            pairs(phase, "SELECT full_name FROM users"),
            one(USERS, Shape::New)
        );
    }
}

#[test]
fn statements_left_unchanged_still_count() {
    // In expand the old names need no rewrite, in contract the new ones.
    assert_eq!(
        pairs("expand", "SELECT id FROM users WHERE name = $1"),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs("contract", "SELECT full_name FROM users"),
        one(USERS, Shape::New)
    );
}

#[test]
fn unmapped_columns_of_a_mapped_table_count_nothing() {
    assert!(used("migrate", "SELECT id, email FROM users").is_empty());
    assert!(used("migrate", "SELECT 1").is_empty());
}

#[test]
fn star_and_qualified_star_over_a_mapped_table() {
    assert_eq!(
        pairs("migrate", "SELECT * FROM users"),
        one(USERS, Shape::Star)
    );
    assert_eq!(
        pairs(
            "migrate",
            "SELECT u.* FROM users u JOIN accounts a ON a.id = u.id"
        ),
        one(USERS, Shape::Star)
    );
    // `*` over a derived table reads only what the inner query names.
    assert_eq!(
        pairs("migrate", "SELECT * FROM (SELECT full_name FROM users) s"),
        one(USERS, Shape::New)
    );
    // count(*) reads no column.
    assert!(used("migrate", "SELECT count(*) FROM users").is_empty());
}

#[test]
fn qualified_names_and_aliases_resolve_to_the_table() {
    assert_eq!(
        pairs("migrate", "SELECT u.name FROM users AS u"),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs("migrate", "SELECT public.users.full_name FROM public.users"),
        one(USERS, Shape::New)
    );
    // `name` here is the unmapped table's column: the alias hides `users`.
    assert!(used(
        "migrate",
        "SELECT a.name FROM users u JOIN accounts a ON a.id = u.id"
    )
    .is_empty());
}

#[test]
fn several_rules_and_both_shapes_in_one_statement() {
    let mut want = vec![
        (USERS.to_owned(), Shape::Old),
        (USERS.to_owned(), Shape::New),
        (ORDERS.to_owned(), Shape::New),
    ];
    want.sort();
    assert_eq!(
        pairs(
            "migrate",
            "SELECT u.name, u.full_name, o.status_code FROM users u JOIN orders o ON o.user_id = u.id"
        ),
        want
    );
}

#[test]
fn subqueries_ctes_and_predicates() {
    assert_eq!(
        pairs(
            "migrate",
            "SELECT id FROM orders WHERE user_id IN (SELECT id FROM users WHERE name = 'x')"
        ),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs(
            "expand",
            "WITH n AS (SELECT full_name FROM users) SELECT * FROM n"
        ),
        one(USERS, Shape::New)
    );
    // A predicate rewritten whole in migrate (index-friendly form) still counts.
    assert_eq!(
        pairs("migrate", "SELECT id FROM users WHERE full_name = $1"),
        one(USERS, Shape::New)
    );
    assert_eq!(
        pairs("migrate", "SELECT id FROM users WHERE name = 'Ann'"),
        one(USERS, Shape::Old)
    );
}

#[test]
fn writes_name_their_target_columns() {
    assert_eq!(
        pairs("migrate", "INSERT INTO users (id, name) VALUES (1, 'Ann')"),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs(
            "expand",
            "INSERT INTO users (id, full_name) VALUES (1, 'Ann')"
        ),
        one(USERS, Shape::New)
    );
    assert_eq!(
        pairs("migrate", "UPDATE users SET name = 'B' WHERE id = 1"),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs("migrate", "UPDATE users SET full_name = 'B' WHERE id = 1"),
        one(USERS, Shape::New)
    );
    assert_eq!(
        pairs("contract", "DELETE FROM users WHERE name = 'B'"),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs(
            "migrate",
            "INSERT INTO app.people (id, first_name, last_name) VALUES (1, 'A', 'B') \
             ON CONFLICT (id) DO UPDATE SET first_name = EXCLUDED.first_name"
        ),
        one(PEOPLE, Shape::New)
    );
}

#[test]
fn returning_lists_count() {
    assert_eq!(
        pairs(
            "migrate",
            "UPDATE users SET email = 'e' WHERE id = 1 RETURNING name"
        ),
        one(USERS, Shape::Old)
    );
    assert_eq!(
        pairs("migrate", "DELETE FROM users WHERE id = 1 RETURNING *"),
        one(USERS, Shape::Star)
    );
    let mut want = vec![
        (USERS.to_owned(), Shape::New),
        (USERS.to_owned(), Shape::Star),
    ];
    want.sort();
    assert_eq!(
        pairs(
            "migrate",
            "INSERT INTO users (id, full_name) VALUES (1, 'A') RETURNING *"
        ),
        want
    );
}

#[test]
fn insert_and_copy_without_a_column_list_use_every_column() {
    assert_eq!(
        pairs("expand", "INSERT INTO users VALUES (1, 'A', 'A', 'e')"),
        one(USERS, Shape::Star)
    );
    assert_eq!(
        pairs("migrate", "COPY users TO STDOUT"),
        one(USERS, Shape::Star)
    );
    assert_eq!(
        pairs("contract", "COPY users (id, full_name) FROM STDIN"),
        one(USERS, Shape::New)
    );
}

#[test]
fn every_statement_of_a_simple_query_counts() {
    let mut want = vec![
        (USERS.to_owned(), Shape::Old),
        (ORDERS.to_owned(), Shape::New),
    ];
    want.sort();
    assert_eq!(
        pairs(
            "migrate",
            "SELECT name FROM users; SELECT status_code FROM orders"
        ),
        want
    );
}

#[test]
fn a_cache_hit_reports_what_the_first_rewrite_found() {
    let cache = RewriteCache::new(16);
    let (r, c) = (rules("migrate"), catalog());
    let first = cache.lookup_with_usage("SELECT name FROM users WHERE id = 1", 1, &r, &c);
    let second = cache.lookup_with_usage("SELECT name FROM users WHERE id = 2", 1, &r, &c);
    assert_eq!(second.1, crate::rewrite::Lookup::Hit);
    let usage = |out: crate::rewrite::Classified| out.unwrap().1;
    let (a, b) = (usage(first.0), usage(second.0));
    assert!(
        b.has(USERS, Shape::Old) && !b.has(USERS, Shape::New),
        "{b:?}"
    );
    assert_eq!(a, b);
}
