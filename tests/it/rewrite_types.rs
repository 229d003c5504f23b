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
