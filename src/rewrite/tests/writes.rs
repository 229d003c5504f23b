//! Writes: dual-write per phase, exactly-once evaluation, RETURNING, ON CONFLICT.

use super::support::*;
use crate::rewrite::rewrite;

#[test]
fn insert_old_shape_mirrors_literals_and_params_inline() {
    let sql = "INSERT INTO users (id, name) VALUES (1, 'Ann'), (2, $1)";
    let both = "INSERT INTO users (id, name, full_name) VALUES (1, 'Ann', 'Ann'), (2, $1, $1)";
    assert_eq!(rw("expand", sql), both);
    assert_eq!(rw("migrate", sql), both);
    assert_eq!(
        rw_dropped(sql),
        "INSERT INTO users (id, full_name) VALUES (1, 'Ann'), (2, $1)"
    );
}

#[test]
fn insert_new_shape_mirrors_back_and_is_untouched_in_contract() {
    let sql = "INSERT INTO users (full_name, email) VALUES ('A', 'a@x')";
    assert_eq!(
        rw("expand", sql),
        "INSERT INTO users (full_name, email, name) VALUES ('A', 'a@x', 'A')"
    );
    assert_eq!(rw_dropped(sql), sql);
}

#[test]
fn insert_volatile_value_is_evaluated_once_through_a_derived_table() {
    assert_eq!(
        rw("expand", "INSERT INTO users (name) VALUES (gen_random_uuid()::text)"),
        "INSERT INTO users (name, full_name) SELECT pgshim_v.c1, pgshim_v.c1 FROM (VALUES ((gen_random_uuid()::text)::character varying)) pgshim_v(c1)"
    );
    // In contract a rename just moves the value: still evaluated once.
    assert_eq!(
        rw_dropped("INSERT INTO users (name) VALUES (gen_random_uuid()::text)"),
        "INSERT INTO users (full_name) VALUES (gen_random_uuid()::text)"
    );
}

#[test]
fn insert_volatile_with_on_conflict_and_returning() {
    assert_eq!(
        rw("migrate", "INSERT INTO users (id, name) VALUES (1, now()::text) ON CONFLICT (id) DO NOTHING RETURNING id"),
        "INSERT INTO users (id, name, full_name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c2 FROM (VALUES ((1)::integer, (now()::text)::character varying)) pgshim_v(c1, c2) ON CONFLICT (id) DO NOTHING RETURNING id"
    );
}

#[test]
fn insert_without_column_list_uses_catalog_order() {
    assert_eq!(
        rw("expand", "INSERT INTO users VALUES (DEFAULT, 'x')"),
        "INSERT INTO users (id, name, full_name) VALUES (DEFAULT, 'x', 'x')"
    );
}

#[test]
fn insert_default_for_mirrored_column_without_default_mirrors_null() {
    assert_eq!(
        rw("expand", "INSERT INTO orders (status) VALUES (DEFAULT)"),
        "INSERT INTO orders (status, status_code) VALUES (DEFAULT, (CASE CAST(NULL AS text) WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END))"
    );
}

#[test]
fn insert_select_is_wrapped_and_cast() {
    assert_eq!(
        rw("expand", "INSERT INTO users (id, name) SELECT id + 10, name FROM users WHERE id = 1"),
        "INSERT INTO users (id, name, full_name) SELECT (pgshim_v.c1)::integer, (pgshim_v.c2)::character varying, (pgshim_v.c2)::character varying FROM (SELECT id + 10, name FROM users WHERE id = 1) pgshim_v(c1, c2)"
    );
    assert_eq!(
        rw_dropped("INSERT INTO users (id, name) SELECT id, name FROM users"),
        "INSERT INTO users (id, full_name) SELECT id, users.full_name AS name FROM users"
    );
}

#[test]
fn insert_type_change_and_split() {
    assert_eq!(
        rw("expand", "INSERT INTO orders (status) VALUES ('paid')"),
        "INSERT INTO orders (status, status_code) VALUES ('paid', (CASE ('paid')::text WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END))"
    );
    assert_eq!(
        rw("contract", "INSERT INTO app.people (name) VALUES ('Ann Lee')"),
        "INSERT INTO app.people (name, first_name, last_name) VALUES ('Ann Lee', (split_part(('Ann Lee')::text, ' ', 1)), (split_part(('Ann Lee')::text, ' ', 2)))"
    );
    assert_eq!(
        rw("expand", "INSERT INTO app.people (first_name) VALUES ('Ann')"),
        "INSERT INTO app.people (first_name, name) VALUES ('Ann', (concat_ws(' ', ('Ann')::text, NULL)))"
    );
}

#[test]
fn insert_returning_reads_phase_values() {
    assert_eq!(
        rw("contract", "INSERT INTO users (full_name) VALUES ('A') RETURNING *"),
        "INSERT INTO users (full_name, name) VALUES ('A', 'A') RETURNING users.id, users.full_name AS name, users.full_name, users.email"
    );
    assert_eq!(
        rw_dropped("INSERT INTO users AS u (name) VALUES ('A') RETURNING u.name"),
        "INSERT INTO users AS u (full_name) VALUES ('A') RETURNING u.full_name AS name"
    );
}

#[test]
fn on_conflict_do_update_mirrors_excluded() {
    let sql = "INSERT INTO users AS u (id, name) VALUES (1, 'A') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name";
    assert_eq!(
        rw("expand", sql),
        "INSERT INTO users AS u (id, name, full_name) VALUES (1, 'A', 'A') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, full_name = EXCLUDED.name"
    );
    assert_eq!(
        rw_dropped(sql),
        "INSERT INTO users AS u (id, full_name) VALUES (1, 'A') ON CONFLICT (id) DO UPDATE SET full_name = excluded.full_name"
    );
}

#[test]
fn on_conflict_target_on_renamed_column_in_contract() {
    assert_eq!(
        rw_dropped("INSERT INTO users (name) VALUES ('A') ON CONFLICT (name) DO NOTHING"),
        "INSERT INTO users (full_name) VALUES ('A') ON CONFLICT (full_name) DO NOTHING"
    );
}

#[test]
fn update_old_shape_per_phase() {
    let sql = "UPDATE users SET name = 'Bob' WHERE id = 1";
    assert_eq!(
        rw("expand", sql),
        "UPDATE users SET name = 'Bob', full_name = 'Bob' WHERE id = 1"
    );
    assert_eq!(
        rw("migrate", sql),
        "UPDATE users SET name = 'Bob', full_name = 'Bob' WHERE id = 1"
    );
    assert_eq!(
        rw_dropped(sql),
        "UPDATE users SET full_name = 'Bob' WHERE id = 1"
    );
}

#[test]
fn update_volatile_value_is_evaluated_once_per_row() {
    assert_eq!(
        rw("expand", "UPDATE users SET name = random()::text WHERE id = 1"),
        "UPDATE users SET (name, full_name) = (SELECT pgshim_s1.c1, pgshim_s1.c1 FROM (SELECT (random()::text)::character varying, users.ctid) pgshim_s1(c1, pgshim_ctid) WHERE pgshim_s1.pgshim_ctid IS NOT NULL) WHERE id = 1"
    );
}

#[test]
fn update_reads_on_right_hand_side_and_returning() {
    assert_eq!(
        rw_dropped("UPDATE users u SET full_name = upper(u.name), email = 'e' RETURNING name"),
        "UPDATE users u SET full_name = upper(u.full_name), email = 'e' RETURNING u.full_name AS name"
    );
}

#[test]
fn update_tuple_assignment() {
    assert_eq!(
        rw("expand", "UPDATE users SET (name, email) = ('x', 'y')"),
        "UPDATE users SET (name, email) = ('x', 'y'), full_name = 'x'"
    );
    assert_eq!(
        rw_dropped("UPDATE users SET (name, email) = ('x', 'y')"),
        "UPDATE users SET full_name = 'x', email = 'y'"
    );
}

#[test]
fn update_partial_split_uses_current_phase_values() {
    assert_eq!(
        rw("expand", "UPDATE app.people SET first_name = 'Z'"),
        "UPDATE app.people SET first_name = 'Z', name = (concat_ws(' ', ('Z')::text, (split_part(people.name, ' ', 2)))), last_name = (split_part(people.name, ' ', 2))"
    );
    assert_eq!(
        rw_dropped("UPDATE app.people SET first_name = 'Z'"),
        "UPDATE app.people SET first_name = 'Z'"
    );
}

#[test]
fn update_from_and_delete_using() {
    assert_eq!(
        rw("contract", "UPDATE orders o SET status = 'paid' FROM users u WHERE u.id = o.user_id AND u.name = 'A'"),
        "UPDATE orders o SET status = 'paid', status_code = (CASE ('paid')::text WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END) FROM users u WHERE u.id = o.user_id AND u.full_name = 'A'"
    );
    assert_eq!(
        rw_dropped("DELETE FROM users u USING orders o WHERE o.user_id = u.id AND u.name = 'x' RETURNING u.name"),
        "DELETE FROM users u USING orders o WHERE o.user_id = u.id AND u.full_name = 'x' RETURNING u.full_name AS name"
    );
}

#[test]
fn data_modifying_cte() {
    assert_eq!(
        rw_dropped("WITH x AS (UPDATE users SET name = 'q' RETURNING name) SELECT * FROM x"),
        "WITH x AS (UPDATE users SET full_name = 'q' RETURNING users.full_name AS name) SELECT * FROM x"
    );
    assert_eq!(
        rw("expand", "WITH x AS (INSERT INTO users (name) VALUES ('q') RETURNING id) SELECT id FROM x"),
        "WITH x AS (INSERT INTO users (name, full_name) VALUES ('q', 'q') RETURNING id) SELECT id FROM x"
    );
}

#[test]
fn copy_from_renames_in_contract_and_passes_full_shape() {
    assert_eq!(
        rw_dropped("COPY users (id, name) FROM STDIN"),
        "COPY users (id, full_name) FROM STDIN"
    );
    let both = "COPY users (id, name, full_name) FROM STDIN";
    assert_eq!(rw("expand", both), both);
}

#[test]
fn comments_and_layout_around_edits_survive() {
    assert_eq!(
        rw(
            "expand",
            "INSERT INTO users (id, /* who */ name)\n  VALUES (1, 'A' /* x */) -- done"
        ),
        "INSERT INTO users (id, /* who */ name, full_name)\n  VALUES (1, 'A', 'A' /* x */) -- done"
    );
}

#[test]
fn on_conflict_unqualified_reference_is_the_target_row() {
    assert_eq!(
        rw_dropped("INSERT INTO users AS u (id, full_name) VALUES (1, 'A') ON CONFLICT (id) DO UPDATE SET email = name WHERE name <> 'x'"),
        "INSERT INTO users AS u (id, full_name) VALUES (1, 'A') ON CONFLICT (id) DO UPDATE SET email = u.full_name WHERE u.full_name <> 'x'"
    );
}

#[test]
fn on_conflict_volatile_update_is_evaluated_once() {
    assert_eq!(
        rw("expand", "INSERT INTO users (id, name) VALUES (1, 'A') ON CONFLICT (id) DO UPDATE SET name = random()::text"),
        "INSERT INTO users (id, name, full_name) VALUES (1, 'A', 'A') ON CONFLICT (id) DO UPDATE SET (name, full_name) = (SELECT pgshim_s1.c1, pgshim_s1.c1 FROM (SELECT (random()::text)::character varying, users.ctid) pgshim_s1(c1, pgshim_ctid) WHERE pgshim_s1.pgshim_ctid IS NOT NULL)"
    );
}

#[test]
fn all_default_column_leaves_the_derived_table() {
    assert_eq!(
        rw("expand", "INSERT INTO users (id, name, email) VALUES (DEFAULT, md5('x'), DEFAULT)"),
        "INSERT INTO users (name, full_name) SELECT pgshim_v.c1, pgshim_v.c1 FROM (VALUES ((md5('x'))::character varying)) pgshim_v(c1)"
    );
    // The unit catalog knows `id` has a default but not its expression.
    assert!(refused(
        "expand",
        "INSERT INTO users (id, name) VALUES (DEFAULT, md5('x')), (7, md5('y'))"
    )
    .contains("cannot write out"));
}

#[test]
fn default_next_to_a_value_evaluated_once_is_written_out() {
    let mut catalog = super::support::catalog();
    catalog.set_default("public", "users", "id", "nextval('users_id_seq'::regclass)");
    assert_eq!(
        rw_with(
            "expand",
            "INSERT INTO users (id, name, email) VALUES (DEFAULT, md5('x'), DEFAULT), (7, md5('y'), 'e')",
            &catalog
        ),
        "INSERT INTO users (id, name, email, full_name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c3, pgshim_v.c2 FROM (VALUES (CAST((nextval('users_id_seq'::regclass)) AS integer), (md5('x'))::character varying, CAST(NULL AS text)), ((7)::integer, (md5('y'))::character varying, ('e')::text)) pgshim_v(c1, c2, c3)"
    );
}

#[test]
fn migrate_partial_update_materialises_current_phase_values() {
    assert_eq!(
        rw("migrate", "UPDATE app.people SET first_name = 'Z'"),
        "UPDATE app.people SET first_name = 'Z', name = (concat_ws(' ', ('Z')::text, (CASE WHEN people.first_name IS NULL AND people.last_name IS NULL THEN (split_part(people.name, ' ', 2)) ELSE people.last_name END))), last_name = (CASE WHEN people.first_name IS NULL AND people.last_name IS NULL THEN (split_part(people.name, ' ', 2)) ELSE people.last_name END)"
    );
}

#[test]
fn contract_old_shape_insert_with_dropped_old_column() {
    assert_eq!(
        rw_with(
            "contract",
            "INSERT INTO users (name) VALUES ($1) RETURNING name",
            &contracted_catalog()
        ),
        "INSERT INTO users (full_name) VALUES ($1) RETURNING users.full_name AS name"
    );
}

/// The unit catalog with `users.full_name DEFAULT ...` and, if `name_default`, `users.name`
/// with a default too.
fn catalog_with_defaults(name_default: bool) -> crate::rewrite::Catalog {
    users_catalog(&[
        ("id", true),
        ("name", name_default),
        ("full_name", true),
        ("email", false),
    ])
}

/// `public.users` with text columns `(name, has_default)`.
fn users_catalog(columns: &[(&str, bool)]) -> crate::rewrite::Catalog {
    use crate::rewrite::{Catalog, ColumnInfo, TableInfo};
    Catalog::new(vec![TableInfo {
        schema: "public".into(),
        name: "users".into(),
        columns: columns
            .iter()
            .map(|(name, has_default)| ColumnInfo {
                name: (*name).into(),
                type_sql: "text".into(),
                not_null: false,
                has_default: *has_default,
            })
            .collect(),
    }])
}

#[test]
fn default_mirrors_the_written_columns_default_not_the_mirrors_own() {
    let cat = catalog_with_defaults(false);
    assert_eq!(
        rw_with(
            "expand",
            "UPDATE users SET name = DEFAULT WHERE id = 1",
            &cat
        ),
        "UPDATE users SET name = DEFAULT, full_name = CAST(NULL AS text) WHERE id = 1"
    );
    assert_eq!(
        rw_with(
            "migrate",
            "INSERT INTO users (id, name) VALUES (1, DEFAULT)",
            &cat
        ),
        "INSERT INTO users (id, name, full_name) VALUES (1, DEFAULT, CAST(NULL AS text))"
    );
    assert_eq!(
        rw_with(
            "expand",
            "INSERT INTO users (id, name) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = DEFAULT",
            &cat
        ),
        "INSERT INTO users (id, name, full_name) VALUES (1, 'x', 'x') ON CONFLICT (id) DO UPDATE SET name = DEFAULT, full_name = CAST(NULL AS text)"
    );
}

#[test]
fn default_of_a_column_with_a_default_feeding_a_mirror() {
    let mut cat = catalog_with_defaults(true);
    cat.set_default("public", "users", "name", "'anon'::text");
    // INSERT: written out once in the derived table, so both shapes get it.
    assert_eq!(
        rw_with(
            "expand",
            "INSERT INTO users (id, name) VALUES (1, DEFAULT)",
            &cat
        ),
        "INSERT INTO users (id, name, full_name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c2 FROM (VALUES ((1)::text, CAST(('anon'::text) AS text))) pgshim_v(c1, c2)"
    );
    // UPDATE: written out in the per-row group, evaluated once per row for both.
    assert_eq!(
        rw_with("expand", "UPDATE users SET name = DEFAULT", &cat),
        "UPDATE users SET (name, full_name) = (SELECT pgshim_s1.c1, pgshim_s1.c1 FROM (SELECT (CAST(('anon'::text) AS text))::text, users.ctid) pgshim_s1(c1, pgshim_ctid) WHERE pgshim_s1.pgshim_ctid IS NOT NULL)"
    );
    // A default pgshim cannot write out (identity, generated): refused, with what to do.
    let unknown = catalog_with_defaults(true);
    match rewrite(
        "UPDATE users SET name = DEFAULT",
        &rules("expand"),
        &unknown,
    ) {
        Err(e) => assert!(e
            .to_string()
            .contains("DEFAULT for a mapped column that has a default")),
        Ok(o) => panic!("rewritten: {o:?}"),
    }
}
#[test]
fn contract_writes_mirror_into_old_columns_while_they_exist() {
    assert_eq!(
        rw(
            "contract",
            "UPDATE users SET name = $1, full_name = $2 WHERE id = $3"
        ),
        "UPDATE users SET name = $1, full_name = $2 WHERE id = $3"
    );
    assert_eq!(
        rw("contract", "INSERT INTO users (full_name) VALUES ($1)"),
        "INSERT INTO users (full_name, name) VALUES ($1, $1)"
    );
    assert_eq!(
        rw_dropped("INSERT INTO users (full_name) VALUES ($1)"),
        "INSERT INTO users (full_name) VALUES ($1)"
    );
}

#[test]
fn update_tuple_from_a_sub_select_sets_the_mirrors_from_its_columns() {
    assert_eq!(
        rw("expand", "UPDATE app.people SET (first_name, last_name) = (SELECT 'Di', 'Ray' FROM users WHERE id = 25) WHERE id = 3"),
        "UPDATE app.people SET (first_name, last_name, name) = (SELECT pgshim_s1.c1, pgshim_s1.c2, (concat_ws(' ', (pgshim_s1.c1)::text, (pgshim_s1.c2)::text)) FROM (SELECT people.ctid) pgshim_s2(pgshim_ctid) LEFT JOIN (SELECT 'Di', 'Ray' FROM users WHERE id = 25) pgshim_s1(c1, c2) ON true WHERE pgshim_s2.pgshim_ctid IS NOT NULL) WHERE id = 3"
    );
    // The sub-select may read the row being updated; its mapped columns read as usual.
    assert_eq!(
        rw("contract", "UPDATE users SET (name, email) = (SELECT u2.name, 'x' FROM users u2 WHERE u2.id = users.id + 1) WHERE id = 3"),
        "UPDATE users SET (name, email, full_name) = (SELECT pgshim_s1.c1, pgshim_s1.c2, pgshim_s1.c1 FROM (SELECT users.ctid) pgshim_s2(pgshim_ctid) LEFT JOIN (SELECT u2.full_name AS name, 'x' FROM users u2 WHERE u2.id = users.id + 1) pgshim_s1(c1, c2) ON true WHERE pgshim_s2.pgshim_ctid IS NOT NULL) WHERE id = 3"
    );
}

#[test]
fn several_values_evaluated_once_feed_one_mirror_from_one_group() {
    assert_eq!(
        rw("migrate", "UPDATE app.people SET first_name = trim(' Di '), last_name = upper('x') WHERE id = 3"),
        "UPDATE app.people SET (first_name, last_name, name) = (SELECT pgshim_s1.c1, pgshim_s1.c2, (concat_ws(' ', pgshim_s1.c1, pgshim_s1.c2)) FROM (SELECT (trim(' Di '))::text, (upper('x'))::text, people.ctid) pgshim_s1(c1, c2, pgshim_ctid) WHERE pgshim_s1.pgshim_ctid IS NOT NULL) WHERE id = 3"
    );
}

/// `users` with a default on `name` only, as `plan --phase expand` leaves it.
fn catalog_with_old_default() -> crate::rewrite::Catalog {
    let mut cat = users_catalog(&[
        ("id", false),
        ("name", true),
        ("full_name", false),
        ("email", false),
    ]);
    cat.set_default("public", "users", "name", "'anon'::text");
    cat
}

#[test]
fn insert_leaving_a_mapped_column_to_its_default_mirrors_the_default() {
    let cat = catalog_with_old_default();
    let once = "SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c3, pgshim_v.c3 FROM (VALUES ((1)::text, ('e')::text, CAST(('anon'::text) AS text))) pgshim_v(c1, c2, c3)";
    for phase in ["expand", "migrate", "contract"] {
        assert_eq!(
            rw_with(phase, "INSERT INTO users (id, email) VALUES (1, 'e')", &cat),
            format!("INSERT INTO users (id, email, name, full_name) {once}"),
            "{phase}"
        );
    }
    // Several rows, RETURNING and parameters keep their places.
    assert_eq!(
        rw_with(
            "expand",
            "INSERT INTO users (id, email) VALUES ($1, $2), (3, 'x') RETURNING id",
            &cat
        ),
        "INSERT INTO users (id, email, name, full_name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c3, pgshim_v.c3 FROM (VALUES (($1)::text, ($2)::text, CAST(('anon'::text) AS text)), ((3)::text, ('x')::text, CAST(('anon'::text) AS text))) pgshim_v(c1, c2, c3) RETURNING id"
    );
    // A statement that sets the new shape computes the old from it: no default implied.
    assert_eq!(
        rw_with(
            "contract",
            "INSERT INTO users (id, full_name) VALUES (1, 'F')",
            &cat
        ),
        "INSERT INTO users (id, full_name, name) VALUES (1, 'F', 'F')"
    );
}

#[test]
fn insert_select_leaving_a_mapped_column_to_its_default_mirrors_the_default() {
    let cat = catalog_with_old_default();
    assert_eq!(
        rw_with("expand", "INSERT INTO users (id, email) SELECT 1, 'e' RETURNING id", &cat),
        "INSERT INTO users (id, email, name, full_name) SELECT (pgshim_v.c1)::text, (pgshim_v.c2)::text, (pgshim_v.c3)::text, (pgshim_v.c3)::text FROM (SELECT pgshim_d.*, CAST(('anon'::text) AS text) FROM (SELECT 1, 'e') AS pgshim_d) pgshim_v(c1, c2, c3) RETURNING id"
    );
}

#[test]
fn default_values_mirrors_the_default() {
    let cat = catalog_with_old_default();
    assert_eq!(
        rw_with("migrate", "INSERT INTO users DEFAULT VALUES RETURNING id", &cat),
        "INSERT INTO users (name, full_name) SELECT pgshim_v.c1, pgshim_v.c1 FROM (VALUES (CAST(('anon'::text) AS text))) pgshim_v(c1) RETURNING id"
    );
}

#[test]
fn both_shapes_defaulted_take_the_phase_source_of_truths_default() {
    let mut cat = catalog_with_defaults(true);
    cat.set_default("public", "users", "name", "'anon'::text");
    cat.set_default("public", "users", "full_name", "'nobody'::text");
    let sql = "INSERT INTO users (id) VALUES (1)";
    assert_eq!(
        rw_with("migrate", sql, &cat),
        "INSERT INTO users (id, name, full_name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c2 FROM (VALUES ((1)::text, CAST(('anon'::text) AS text))) pgshim_v(c1, c2)"
    );
    assert_eq!(
        rw_with("contract", sql, &cat),
        "INSERT INTO users (id, full_name, name) SELECT pgshim_v.c1, pgshim_v.c2, pgshim_v.c2 FROM (VALUES ((1)::text, CAST(('nobody'::text) AS text))) pgshim_v(c1, c2)"
    );
}

#[test]
fn default_for_a_dropped_old_column_takes_the_new_columns_own() {
    let cat = users_catalog(&[("id", false), ("full_name", true), ("email", false)]);
    assert_eq!(
        rw_with(
            "contract",
            "INSERT INTO users (id, name) VALUES (1, DEFAULT), (2, 'x')",
            &cat
        ),
        "INSERT INTO users (id, full_name) VALUES (1, DEFAULT), (2, 'x')"
    );
    assert_eq!(
        rw_with(
            "contract",
            "UPDATE users SET name = DEFAULT WHERE id = 1",
            &cat
        ),
        "UPDATE users SET full_name = DEFAULT WHERE id = 1"
    );
}
