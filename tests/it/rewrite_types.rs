//! Values pgshim computes for a column carry that column's type: a statement
//! is described the same in every phase, whatever type the transform returns.
use tokio_postgres::types::Type;

use crate::support::rules::Db;

const SETUP: &str = "
CREATE TABLE items (id int PRIMARY KEY, qty integer, amount smallint);
INSERT INTO items VALUES (1, 7, 7);";

fn rule(phase: &str) -> String {
    // `qty + 0` is integer; the new column is smallint.
    format!(
        r#"[[rule]]
id = "items-amount"
table = "items"
old = "qty"
new = "amount"
phase = "{phase}"
[rule.to_new]
amount = "qty + 0"
[rule.to_old]
qty = "amount + 0"
"#
    )
}

#[tokio::test]
async fn computed_values_describe_as_their_column_in_every_phase() {
    let db = Db::create("types", SETUP).await;
    for phase in ["expand", "migrate", "contract"] {
        let proxy = db.proxy(&rule(phase)).start().await;
        let client = db.through(&proxy).await;
        let statement = client
            .prepare("SELECT amount, qty FROM items WHERE id = $1")
            .await
            .unwrap();
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        assert_eq!(types, vec![Type::INT2, Type::INT4], "{phase}");
        let row = client.query_one(&statement, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i16>(0), 7, "{phase}");
        assert_eq!(row.get::<_, i32>(1), 7, "{phase}");
    }
}

#[tokio::test]
async fn a_transform_its_column_cannot_hold_refuses_the_rule() {
    let db = Db::create("types_bad", SETUP).await;
    // `qty::text` is text; `amount` is smallint, and text is not assignable to it.
    let bad = rule("expand").replace("amount = \"qty + 0\"", "amount = \"qty::text\"");
    let config = crate::support::ops::ops_config(&db.scope(&bad));
    let run = crate::support::ops::run(&config, &["serve"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("rule items-amount")
            && run.stderr.contains("column amount")
            && run.stderr.contains("does not fit"),
        "{}",
        run.stderr
    );
}
