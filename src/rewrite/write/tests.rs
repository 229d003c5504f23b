use super::*;
use crate::rewrite::tests::support::rules;

fn cols(names: &[&str]) -> Vec<SetCol> {
    names
        .iter()
        .enumerate()
        .map(|(slot, n)| SetCol {
            name: (*n).into(),
            slot,
        })
        .collect()
}

fn text(t: &str) -> Piece {
    Piece::Text(t.into())
}

#[test]
fn unmapped_columns_need_nothing() {
    let plan = plan(
        &rules("expand"),
        &Catalog::default(),
        "public",
        "users",
        &cols(&["id", "email"]),
        Current::Null,
    );
    assert!(plan.is_noop());
}

#[test]
fn expand_old_write_appends_new_mirror() {
    let plan = plan(
        &rules("expand"),
        &Catalog::default(),
        "public",
        "users",
        &cols(&["id", "name"]),
        Current::Null,
    );
    assert_eq!(plan.placements, [Placement::Keep, Placement::Keep]);
    assert_eq!(
        plan.appended,
        [Out {
            column: "full_name".into(),
            value: vec![Piece::Slot(1)]
        }]
    );
    assert_eq!(plan.slot_uses(2), [1, 2]);
}

#[test]
fn both_shapes_set_explicitly_are_never_overwritten() {
    let plan = plan(
        &rules("migrate"),
        &Catalog::default(),
        "public",
        "users",
        &cols(&["name", "full_name"]),
        Current::Row("u"),
    );
    assert!(plan.is_noop());
}

#[test]
fn contract_old_write_replaces_in_place() {
    let plan = plan(
        &rules("contract"),
        &Catalog::default(),
        "app",
        "people",
        &cols(&["name"]),
        Current::Null,
    );
    let Placement::Replace(outs) = &plan.placements[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        outs.iter().map(|o| o.column.as_str()).collect::<Vec<_>>(),
        ["first_name", "last_name"]
    );
    assert_eq!(
        outs[0].value,
        [
            text("("),
            text("split_part("),
            Piece::Slot(0),
            text(", ' ', 1)"),
            text(")")
        ]
    );
}

#[test]
fn update_partial_new_write_uses_current_values() {
    let plan = plan(
        &rules("expand"),
        &Catalog::default(),
        "app",
        "people",
        &cols(&["last_name"]),
        Current::Row("p"),
    );
    let columns: Vec<&str> = plan.appended.iter().map(|o| o.column.as_str()).collect();
    assert_eq!(columns, ["name", "first_name"]);
}

#[test]
fn repeatable_expressions() {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    let expr = |s: &str| {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(s)
            .unwrap()
            .parse_expr()
            .unwrap()
    };
    for s in ["1", "'a'::text", "$1", "-2", "a || 'b'", "t.a", "(x)"] {
        assert!(repeatable(&expr(s)), "{s}");
    }
    for s in ["random()", "now()::text", "(SELECT 1)", "nextval('s')"] {
        assert!(!repeatable(&expr(s)), "{s}");
    }
}
