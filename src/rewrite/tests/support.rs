//! Shared fixtures: three mapped tables (rename, type change, split) and an unmapped one.

use crate::rewrite::{
    rewrite, Catalog, ColumnInfo, OneOrMany, Outcome, RuleConfig, RuleSet, TableInfo,
};

fn col(name: &str, ty: &str, has_default: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        type_sql: ty.into(),
        not_null: false,
        has_default,
    }
}

/// Physical shape during expand/migrate (both shapes present).
pub fn catalog() -> Catalog {
    Catalog::new(vec![
        TableInfo {
            schema: "public".into(),
            name: "users".into(),
            columns: vec![
                col("id", "integer", true),
                col("name", "character varying(50)", false),
                col("full_name", "text", false),
                col("email", "text", false),
            ],
        },
        TableInfo {
            schema: "public".into(),
            name: "orders".into(),
            columns: vec![
                col("id", "integer", true),
                col("user_id", "integer", false),
                col("status", "text", false),
                col("status_code", "integer", false),
            ],
        },
        TableInfo {
            schema: "app".into(),
            name: "people".into(),
            columns: vec![
                col("id", "integer", true),
                col("name", "text", false),
                col("first_name", "text", false),
                col("last_name", "text", false),
            ],
        },
    ])
}

/// Physical shape after the old columns of `users` were dropped.
pub fn contracted_catalog() -> Catalog {
    Catalog::new(vec![TableInfo {
        schema: "public".into(),
        name: "users".into(),
        columns: vec![
            col("id", "integer", true),
            col("full_name", "text", false),
            col("email", "text", false),
        ],
    }])
}

/// Physical shape after every rule's old columns were dropped.
pub fn dropped_catalog() -> Catalog {
    let full = catalog();
    let mut tables = Vec::new();
    for (schema, table, old) in [
        ("public", "users", "name"),
        ("public", "orders", "status"),
        ("app", "people", "name"),
    ] {
        let mut info = full.table(schema, table).cloned().unwrap();
        info.columns.retain(|c| c.name != old);
        tables.push(info);
    }
    Catalog::new(tables)
}

/// The rewrite in contract after the old columns were dropped.
pub fn rw_dropped(sql: &str) -> String {
    rw_with("contract", sql, &dropped_catalog())
}

fn rule(
    table: &str,
    old: &[&str],
    new: &[&str],
    phase: &str,
    to_new: &[(&str, &str)],
    to_old: &[(&str, &str)],
) -> RuleConfig {
    let many = |v: &[&str]| match v {
        [one] => OneOrMany::One((*one).to_owned()),
        _ => OneOrMany::Many(v.iter().map(|s| (*s).to_owned()).collect()),
    };
    let map = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, t)| ((*k).to_owned(), (*t).to_owned()))
            .collect()
    };
    RuleConfig {
        id: None,
        database: None,
        table: table.into(),
        old: many(old),
        new: many(new),
        phase: phase.into(),
        to_new: map(to_new),
        to_old: map(to_old),
        force: false,
    }
}

/// users.name -> users.full_name (rename), orders.status -> status_code (type change),
/// app.people.name -> first_name, last_name (split), all in `phase`.
pub fn rules(phase: &str) -> RuleSet {
    RuleSet::from_configs(&[
        rule("users", &["name"], &["full_name"], phase, &[], &[]),
        rule(
            "orders",
            &["status"],
            &["status_code"],
            phase,
            &[(
                "status_code",
                "CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END",
            )],
            &[(
                "status",
                "CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END",
            )],
        ),
        rule(
            "app.people",
            &["name"],
            &["first_name", "last_name"],
            phase,
            &[
                ("first_name", "split_part(name, ' ', 1)"),
                ("last_name", "split_part(name, ' ', 2)"),
            ],
            &[("name", "concat_ws(' ', first_name, last_name)")],
        ),
    ])
    .unwrap()
}

/// The rewritten text (the input itself when unchanged); panics on refusal.
pub fn rw(phase: &str, sql: &str) -> String {
    rw_with(phase, sql, &catalog())
}

pub fn rw_with(phase: &str, sql: &str, catalog: &Catalog) -> String {
    match rewrite(sql, &rules(phase), catalog) {
        Ok(Outcome::Unchanged) => sql.to_owned(),
        Ok(Outcome::Rewritten(s)) => s,
        Err(e) => panic!("refused {sql:?}: {e}"),
    }
}

/// The refusal message; panics when the statement was rewritten.
pub fn refused(phase: &str, sql: &str) -> String {
    match rewrite(sql, &rules(phase), &catalog()) {
        Err(e) => e.to_string(),
        Ok(o) => panic!("expected refusal for {sql:?}, got {o:?}"),
    }
}
