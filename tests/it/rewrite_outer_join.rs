//! A column of a row an outer join did not find is NULL, whatever a rule's
//! transform computes from NULLs (`concat_ws` gives `''`).
use crate::support::rules::{simple_rows, Db, NULL};

const SETUP: &str = "
CREATE TABLE people (id int PRIMARY KEY, name text, first_name text, last_name text);
INSERT INTO people VALUES (1, 'Ann Lee', 'Ann', 'Lee');";

fn rule(phase: &str) -> String {
    format!(
        r#"[[rule]]
id = "people-split"
table = "people"
old = "name"
new = ["first_name", "last_name"]
phase = "{phase}"
[rule.to_new]
first_name = "split_part(name, ' ', 1)"
last_name = "split_part(name, ' ', 2)"
[rule.to_old]
name = "concat_ws(' ', first_name, last_name)"
"#
    )
}

#[tokio::test]
async fn outer_joins_read_null_for_missing_rows_in_every_phase() {
    let db = Db::create("outer", SETUP).await;
    for phase in ["expand", "migrate", "contract"] {
        let proxy = db.proxy(&rule(phase)).start().await;
        let client = db.through(&proxy).await;
        for sql in [
            "SELECT a.id, b.name, b.first_name FROM people a LEFT JOIN people b ON b.id = a.id + 1",
            "SELECT b.id, a.name, a.last_name FROM people a RIGHT JOIN people b ON a.id = b.id + 1",
        ] {
            let rows = simple_rows(&client, sql).await.unwrap().0;
            assert_eq!(rows, vec![format!("1|{NULL}|{NULL}")], "{phase}: {sql}");
            let rows = client.query(sql, &[]).await.unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].get::<_, Option<String>>(1), None, "{phase}: {sql}");
            assert_eq!(rows[0].get::<_, Option<String>>(2), None, "{phase}: {sql}");
        }
        let rows = simple_rows(
            &client,
            "SELECT a.name, b.name FROM people a LEFT JOIN people b ON b.id = a.id",
        )
        .await
        .unwrap()
        .0;
        assert_eq!(rows, vec!["Ann Lee|Ann Lee".to_owned()], "{phase}");
    }
}
