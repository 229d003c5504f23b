use super::*;
use crate::rewrite::catalog::{ColumnInfo, TableInfo};
use crate::rewrite::rule_config::OneOrMany;

fn cfg(table: &str, old: &[&str], new: &[&str], phase: &str) -> RuleConfig {
    let many = |v: &[&str]| match v {
        [one] => OneOrMany::One((*one).to_owned()),
        _ => OneOrMany::Many(v.iter().map(|s| (*s).to_owned()).collect()),
    };
    RuleConfig {
        id: None,
        database: None,
        table: table.into(),
        old: many(old),
        new: many(new),
        phase: phase.into(),
        to_new: Default::default(),
        to_old: Default::default(),
        force: false,
    }
}

fn problem(err: RuleError) -> String {
    err.to_string()
}

#[test]
fn rename_defaults_to_identity_and_default_id() {
    let set = RuleSet::from_configs(&[cfg("users", &["name"], &["full_name"], "expand")]).unwrap();
    let rule = &set.rules()[0];
    assert_eq!(rule.id, "users.name");
    assert_eq!(
        (rule.schema.as_str(), rule.table.as_str()),
        ("public", "users")
    );
    assert_eq!(rule.to_new[0].identity_column(), Some("name"));
    assert_eq!(rule.to_old[0].identity_column(), Some("full_name"));
}

#[test]
fn unknown_phase_names_the_rule() {
    let err =
        RuleSet::from_configs(&[cfg("users", &["name"], &["full_name"], "shrink")]).unwrap_err();
    assert_eq!(
        problem(err),
        "invalid rule users.name: unknown phase \"shrink\" (expected expand, migrate or contract)"
    );
}

#[test]
fn split_requires_transforms() {
    let err = RuleSet::from_configs(&[cfg(
        "users",
        &["name"],
        &["first_name", "last_name"],
        "expand",
    )])
    .unwrap_err();
    assert!(problem(err).contains("to_new.first_name is required"));
}

#[test]
fn transform_over_a_column_not_in_the_other_shape() {
    let mut c = cfg("users", &["name"], &["full_name"], "expand");
    c.to_new.insert("full_name".into(), "upper(nick)".into());
    let err = RuleSet::from_configs(&[c]).unwrap_err();
    assert_eq!(
        problem(err),
        "invalid rule users.name: to_new.full_name references nick, which is not an old column"
    );
}

#[test]
fn transform_that_does_not_parse() {
    let mut c = cfg("users", &["name"], &["full_name"], "expand");
    c.id = Some("r1".into());
    c.to_old.insert("name".into(), "full_name ||".into());
    let err = RuleSet::from_configs(&[c]).unwrap_err();
    assert!(problem(err).starts_with("invalid rule r1: to_old.name does not parse"));
}

#[test]
fn transform_for_a_column_that_is_not_mapped() {
    let mut c = cfg("users", &["name"], &["full_name"], "expand");
    c.to_new.insert("nick".into(), "name".into());
    assert!(
        problem(RuleSet::from_configs(&[c]).unwrap_err()).contains("to_new has an entry for nick")
    );
}

#[test]
fn overlapping_rules_are_rejected() {
    let a = cfg("users", &["name"], &["full_name"], "expand");
    let b = cfg("public.users", &["full_name"], &["display_name"], "expand");
    let err = RuleSet::from_configs(&[a, b]).unwrap_err();
    assert_eq!(
        problem(err),
        "rules users.name and public.users.full_name overlap: both map column full_name of public.users"
    );
}

#[test]
fn rules_on_different_databases_do_not_overlap() {
    let mut a = cfg("users", &["name"], &["full_name"], "expand");
    a.database = Some("a".into());
    let mut b = cfg("users", &["name"], &["full_name"], "contract");
    b.database = Some("b".into());
    b.id = Some("other".into());
    let set = RuleSet::from_configs(&[a, b]).unwrap();
    assert_eq!(set.for_database("a").rules()[0].phase, Phase::Expand);
    assert_eq!(set.for_database("b").rules()[0].phase, Phase::Contract);
    assert!(set.for_database("c").is_empty());
}

#[test]
fn duplicate_ids_and_self_overlap() {
    let mut a = cfg("users", &["name"], &["full_name"], "expand");
    a.id = Some("x".into());
    let mut b = cfg("orders", &["status"], &["code"], "expand");
    b.id = Some("x".into());
    assert!(problem(RuleSet::from_configs(&[a, b]).unwrap_err()).contains("duplicate rule id"));
    let c = cfg("users", &["name"], &["Name"], "expand");
    assert!(problem(RuleSet::from_configs(&[c]).unwrap_err()).contains("both old and new"));
}

fn table(cols: &[&str]) -> Catalog {
    Catalog::new(vec![TableInfo {
        schema: "public".into(),
        name: "users".into(),
        columns: cols
            .iter()
            .map(|c| ColumnInfo {
                name: (*c).into(),
                type_sql: "text".into(),
                not_null: false,
                has_default: false,
            })
            .collect(),
    }])
}

#[test]
fn catalog_check_per_phase() {
    let expand =
        RuleSet::from_configs(&[cfg("users", &["name"], &["full_name"], "expand")]).unwrap();
    let contract =
        RuleSet::from_configs(&[cfg("users", &["name"], &["full_name"], "contract")]).unwrap();
    assert!(expand
        .check_catalog(&table(&["id", "name", "full_name"]))
        .is_ok());
    assert_eq!(
        problem(expand.check_catalog(&table(&["id", "name"])).unwrap_err()),
        "rule users.name cannot run in phase expand: table public.users lacks column(s) full_name"
    );
    assert!(contract.check_catalog(&table(&["id", "full_name"])).is_ok());
    assert!(contract.check_catalog(&table(&["id", "name"])).is_err());
    assert_eq!(
        problem(expand.check_catalog(&Catalog::default()).unwrap_err()),
        "rule users.name: table public.users not found in the catalog"
    );
    assert_eq!(expand.tables(), [("public".to_owned(), "users".to_owned())]);
}
