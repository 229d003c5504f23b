//! The phase matrix against real Postgres through pgshim: every phase × an
//! old-shape and a new-shape client × statement forms × simple and extended
//! protocol, for a rename, a type change and a split rule, checking what the
//! client sees (rows, row count, labels, parameter count) and the physical
//! columns read over a direct connection.
//!
//! Each fixture seeds two rows before every case: row 1 was written before the
//! rule existed (its new columns are NULL: not migrated), row 2 has migrated
//! but its old columns hold a stale value, so every read shows which side it
//! came from. Expected rows are `a|b|∅` strings with placeholders:
//! `{var}` (the fixture's value for this phase and shape), `{A//B}` (A for the
//! old-shape client, B for the new one), and in physical rows `W(o,n,keep)`:
//! a dual write (`o|n` in every phase while the old columns exist, and `n` once
//! they are dropped; `keep` is what the old columns held before the write).
use crate::support::rules::{extended_rows, simple_rows, Db, NULL};

/// An expected row that expands to this is not expected at all.
const NO_ROW: &str = "<no row>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Expand,
    Migrate,
    Contract,
    /// Contract with the old columns dropped.
    Dropped,
}

impl Phase {
    fn config(self) -> &'static str {
        match self {
            Phase::Expand => "expand",
            Phase::Migrate => "migrate",
            Phase::Contract | Phase::Dropped => "contract",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Old,
    New,
}

/// One statement and what it must do.
struct Case {
    sql: &'static str,
    /// Rows the client receives.
    rows: &'static [&'static str],
    /// CommandComplete's count when it is not `rows.len()`.
    affected: Option<u64>,
    /// Physical rows afterwards; empty means the seed rows, unchanged.
    after: &'static [&'static str],
}

const fn read(sql: &'static str, rows: &'static [&'static str]) -> Case {
    Case {
        sql,
        rows,
        affected: None,
        after: &[],
    }
}

const fn write(
    sql: &'static str,
    rows: &'static [&'static str],
    affected: Option<u64>,
    after: &'static [&'static str],
) -> Case {
    Case {
        sql,
        rows,
        affected,
        after,
    }
}

/// A mapped table and its rule, in one phase.
struct Fixture {
    /// Creates the tables (with the old columns, in every phase).
    setup: &'static str,
    /// Extra setup for [`Phase::Dropped`].
    drop: &'static str,
    /// The rule, with `{phase}`.
    rule: &'static str,
    /// Run directly before each case: puts the seed rows back.
    reset: &'static str,
    reset_dropped: &'static str,
    /// Read directly after each case.
    physical: &'static str,
    /// Placeholder values for a phase and shape.
    vars: fn(Phase, Shape) -> Vec<(&'static str, String)>,
    cases: &'static [Case],
}

/// Runs every case of `fixture` in `phase`, for both shapes and protocols,
/// and panics listing every mismatch.
async fn run(name: &str, fixture: &Fixture, phase: Phase) {
    let mut setup = fixture.setup.to_owned();
    if phase == Phase::Dropped {
        setup += fixture.drop;
    }
    let db = Db::create(&format!("rw_{name}"), &setup).await;
    let proxy = db
        .proxy(&fixture.rule.replace("{phase}", phase.config()))
        .start()
        .await;
    let client = db.through(&proxy).await;
    let direct = db.direct().await;
    let reset = match phase {
        Phase::Dropped => fixture.reset_dropped,
        _ => fixture.reset,
    };
    let mut failures = Vec::new();
    for (i, case) in fixture.cases.iter().enumerate() {
        for shape in [Shape::Old, Shape::New] {
            let vars = (fixture.vars)(phase, shape);
            let sql = expand(case.sql, &vars, shape);
            let rows: Vec<String> = case
                .rows
                .iter()
                .map(|r| expand(r, &vars, shape))
                .filter(|r| r != NO_ROW)
                .collect();
            let after: Vec<String> = if case.after.is_empty() {
                vec![expand("{s1}", &vars, shape), expand("{s2}", &vars, shape)]
            } else {
                case.after
                    .iter()
                    .map(|r| dual_write(&expand(r, &vars, shape), phase))
                    .collect()
            };
            let affected = case.affected.unwrap_or(rows.len() as u64);
            let want = (rows, affected, after);
            let at = format!("{name} {phase:?} case {i} {shape:?}: {sql}");
            // Several statements in one message exist only in the simple protocol.
            let protocols: &[bool] = if sql.contains("; ") {
                &[false]
            } else {
                &[false, true]
            };
            for &extended in protocols {
                direct.batch_execute(reset).await.expect("reset");
                let got = if extended {
                    extended_rows(&client, &sql, &[])
                        .await
                        .map(|e| (e.rows, e.count, e.labels, e.params))
                } else {
                    simple_rows(&client, &sql)
                        .await
                        .map(|(r, n)| (r, n, Vec::new(), 0))
                };
                let (rows, count, labels, params) = match got {
                    Ok(got) => got,
                    Err(e) => {
                        failures.push(format!("{at} [extended={extended}]: error {e:?}"));
                        continue;
                    }
                };
                let physical = db.physical(fixture.physical).await;
                let got = (rows, count, physical);
                if got != want {
                    failures.push(format!(
                        "{at} [extended={extended}]:\n   got {got:?}\n  want {want:?}"
                    ));
                }
                if extended {
                    // Labels and parameter count as a direct connection
                    // describes the same text, where the schema allows it.
                    if let Ok(st) = direct.prepare(&sql).await {
                        let direct_labels = crate::support::rules::labels(&st);
                        if (labels.clone(), params) != (direct_labels.clone(), st.params().len()) {
                            failures.push(format!(
                                "{at}: labels/params {labels:?}/{params} != direct {direct_labels:?}/{}",
                                st.params().len()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Substitutes `{var}` then `{A//B}` choices.
fn expand(template: &str, vars: &[(&str, String)], shape: Shape) -> String {
    let mut out = template.to_owned();
    // Values may themselves contain placeholders (`{r1}` uses `{v1}`).
    for _ in 0..3 {
        for (k, v) in vars {
            out = out.replace(&format!("{{{k}}}"), v);
        }
    }
    let mut result = String::new();
    let mut rest = out.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let inner = &rest[open + 1..close];
        result += &rest[..open];
        match inner.split_once("//") {
            Some((old, new)) => result += if shape == Shape::Old { old } else { new },
            None => result += &rest[open..=close],
        }
        rest = &rest[close + 1..];
    }
    result + rest
}

/// Renders `W(o,n,keep)` for `phase`.
fn dual_write(row: &str, phase: Phase) -> String {
    let Some(start) = row.find("W(") else {
        return row.to_owned();
    };
    let end = start + row[start..].find(')').expect("W( without )");
    let parts: Vec<&str> = row[start + 2..end].split(',').collect();
    let [old, new, keep] = parts[..] else {
        panic!("W needs three parts: {row}");
    };
    // While the old columns exist, contract mirrors into them as migrate does.
    let _ = keep;
    let written = match phase {
        Phase::Expand | Phase::Migrate | Phase::Contract => format!("{old}|{new}"),
        Phase::Dropped => new.to_owned(),
    };
    format!("{}{written}{}", &row[..start], &row[end + 1..])
}

fn quoted(v: &str) -> String {
    if v == NULL {
        "NULL".into()
    } else if v.parse::<i64>().is_ok() {
        v.into()
    } else {
        format!("'{v}'")
    }
}

// === rename: users.name -> users.full_name ===

const RENAME: Fixture = Fixture {
    setup: "CREATE TABLE users (id int PRIMARY KEY, name text, full_name text, email text DEFAULT 'none@x');
            CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount int, name text);
            INSERT INTO orders VALUES (10, 2, 5, 'order-ten'), (11, 1, 7, 'order-eleven');",
    drop: "ALTER TABLE users DROP COLUMN name;",
    rule: r#"
[[rule]]
id = "users-full-name"
table = "users"
old = "name"
new = "full_name"
phase = "{phase}"
"#,
    reset: "DELETE FROM users; INSERT INTO users (id, name, full_name, email) VALUES (1, 'Ann Lee', NULL, 'a@x'), (2, 'stale', 'Bob Ray', 'b@x')",
    reset_dropped: "DELETE FROM users; INSERT INTO users (id, full_name, email) VALUES (1, NULL, 'a@x'), (2, 'Bob Ray', 'b@x')",
    physical: "SELECT * FROM users ORDER BY id",
    vars: rename_vars,
    cases: &[
        read("SELECT id, {c} FROM users ORDER BY id", &["1|{v1}", "2|{v2}"]),
        read("SELECT {c} FROM users WHERE {c} = {v2q}", &["{v2}"]),
        read("SELECT u.id, u.{c}, o.amount FROM users u JOIN orders o ON o.user_id = u.id AND u.{c} = {v2q} ORDER BY o.id", &["2|{v2}|5"]),
        read("SELECT o.name, u.{c} FROM orders o, users u WHERE o.user_id = u.id ORDER BY o.id", &["order-ten|{v2}", "order-eleven|{v1}"]),
        read("SELECT id FROM users ORDER BY {c} DESC NULLS LAST, id", &["2", "1"]),
        read("SELECT {c}, count(*) FROM users GROUP BY {c} HAVING count({c}) >= 0 ORDER BY 1 NULLS FIRST", &["{v1}|1", "{v2}|1"]),
        read("SELECT id FROM users WHERE {c} IN (SELECT {c} FROM users WHERE id = 2)", &["2"]),
        read("SELECT (SELECT {c} FROM users WHERE id = 2) AS x, EXISTS (SELECT 1 FROM users WHERE {c} = {v2q}) AS e", &["{v2}|t"]),
        read("WITH w AS (SELECT id, {c} FROM users) SELECT {c} FROM w WHERE id = 2", &["{v2}"]),
        read("SELECT * FROM users ORDER BY id", &["{r1}", "{r2}"]),
        read("SELECT u.* FROM users u WHERE u.id = 2", &["{r2}"]),
        read("SELECT upper({c}) FROM users WHERE id = 2 /* {c} in a comment */ AND '{c}' <> 'x'", &["{v2u}"]),
        read("SELECT DISTINCT ON ({c}) {c} FROM users WHERE id = 2", &["{v2}"]),
        read("SELECT \"{c}\" FROM \"users\" WHERE \"id\" = 2", &["{v2}"]),
        read("SELECT a.{c}, b.{c} FROM users a JOIN public.users b ON a.id = b.id AND a.id = 2", &["{v2}|{v2}"]),
        read("SELECT id, row_number() OVER (PARTITION BY {c} ORDER BY {c}) FROM users WHERE id = 2", &["2|1"]),
        read("SELECT {c} FROM users WHERE id = 2 UNION ALL SELECT name FROM orders WHERE id = 10", &["{v2}", "order-ten"]),
        read("SELECT x.* FROM (SELECT * FROM users) x WHERE x.id = 2", &["{r2}"]),
        read("SELECT public.users.{c} FROM public.users WHERE users.id = 2", &["{v2}"]),
        write("UPDATE users u SET {c} = 'Zed' FROM orders o WHERE o.user_id = u.id AND o.id = 10 RETURNING u.*", &["{rz}"], None,
              &["{s1}", "2|W(Zed,Zed,stale)|b@x"]),
        write("INSERT INTO users (id, \"{c}\") VALUES (3, 'Cy Doe') RETURNING *", &["{r3}"], None,
              &["{s1}", "{s2}", "3|W(Cy Doe,Cy Doe,∅)|none@x"]),
        // Writes.
        write("INSERT INTO users (id, {c}, email) VALUES (3, 'Cy Doe', 'c@x')", &[], Some(1),
              &["{s1}", "{s2}", "3|W(Cy Doe,Cy Doe,∅)|c@x"]),
        write("INSERT INTO users (id, {c}, email) VALUES (3, 'Cy Doe', DEFAULT), (4, 'Di Fox', 'd@x')", &[], Some(2),
              &["{s1}", "{s2}", "3|W(Cy Doe,Cy Doe,∅)|none@x", "4|W(Di Fox,Di Fox,∅)|d@x"]),
        write("INSERT INTO users (id, {c}) SELECT id + 10, {c} FROM users WHERE id = 2", &[], Some(1),
              &["{s1}", "{s2}", "12|W({v2},{v2},∅)|none@x"]),
        write("INSERT INTO users (id, {c}, email) VALUES (2, 'Zed', 'z@x') ON CONFLICT (id) DO UPDATE SET {c} = EXCLUDED.{c}, email = EXCLUDED.email RETURNING id, {c}",
              &["2|Zed"], None, &["{s1}", "2|W(Zed,Zed,stale)|z@x"]),
        write("INSERT INTO users (id, email) VALUES (5, 'e@x') RETURNING id, {c}, email", &["5|∅|e@x"], None,
              &["{s1}", "{s2}", "5|W(∅,∅,∅)|e@x"]),
        write("UPDATE users SET {c} = 'Zed' WHERE id = 1 RETURNING {c}", &["Zed"], None,
              &["1|W(Zed,Zed,Ann Lee)|a@x", "{s2}"]),
        write("UPDATE users SET ({c}, email) = ('Zed', 'z@x') WHERE id = 2", &[], Some(1),
              &["{s1}", "2|W(Zed,Zed,stale)|z@x"]),
        write("UPDATE users u SET {c} = o.name FROM orders o WHERE o.user_id = u.id AND o.id = 10 RETURNING u.id, u.{c}", &["2|order-ten"], None,
              &["{s1}", "2|W(order-ten,order-ten,stale)|b@x"]),
        write("UPDATE users SET {c} = {c} || '!' WHERE id = 2", &[], Some(1),
              &["{s1}", "2|W({v2}!,{v2}!,stale)|b@x"]),
        write("UPDATE users SET email = 'q@x' WHERE {c} = {v2q}", &[], Some(1),
              &["{s1}", "2|{k2}|q@x"]),
        write("DELETE FROM users u USING orders o WHERE o.user_id = u.id AND u.{c} = {v2q} RETURNING u.id, u.{c}", &["2|{v2}"], None,
              &["{s1}"]),
        write("WITH w AS (UPDATE users SET {c} = 'Zed' WHERE id = 2 RETURNING id, {c}) SELECT {c} FROM w", &["Zed"], None,
              &["{s1}", "2|W(Zed,Zed,stale)|b@x"]),
        write("INSERT INTO users (id, {c}) VALUES (3, 'Cy Doe'); SELECT {c} FROM users WHERE id = 3", &["Cy Doe"], Some(1),
              &["{s1}", "{s2}", "3|W(Cy Doe,Cy Doe,∅)|none@x"]),
    ],
};

fn rename_vars(phase: Phase, shape: Shape) -> Vec<(&'static str, String)> {
    let (v1, v2) = match phase {
        Phase::Expand => ("Ann Lee", "stale"),
        Phase::Migrate => ("Ann Lee", "Bob Ray"),
        Phase::Contract | Phase::Dropped => (NULL, "Bob Ray"),
    };
    let dropped = phase == Phase::Dropped;
    let (k1, k2) = if dropped {
        (NULL.to_owned(), "Bob Ray".to_owned())
    } else {
        (format!("Ann Lee|{NULL}"), "stale|Bob Ray".to_owned())
    };
    let star = |id: u8, v: &str, email: &str| {
        if dropped {
            format!("{id}|{v}|{email}")
        } else {
            format!("{id}|{v}|{v}|{email}")
        }
    };
    vec![
        (
            "c",
            if shape == Shape::Old {
                "name"
            } else {
                "full_name"
            }
            .to_owned(),
        ),
        ("v1", v1.to_owned()),
        ("v2", v2.to_owned()),
        ("v2q", quoted(v2)),
        ("v2u", v2.to_uppercase()),
        ("s1", format!("1|{k1}|a@x")),
        ("s2", format!("2|{k2}|b@x")),
        ("k2", k2),
        ("r1", star(1, v1, "a@x")),
        ("r2", star(2, v2, "b@x")),
        ("r3", star(3, "Cy Doe", "none@x")),
        ("rz", star(2, "Zed", "b@x")),
    ]
}

// === type change: payments.status text -> payments.status_code int ===

const TYPE_CHANGE: Fixture = Fixture {
    setup: "CREATE TABLE payments (id int PRIMARY KEY, status text, status_code int, note text);",
    drop: "ALTER TABLE payments DROP COLUMN status;",
    rule: r#"
[[rule]]
id = "payment-status"
table = "payments"
old = "status"
new = "status_code"
phase = "{phase}"
[rule.to_new]
status_code = "CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 WHEN 'failed' THEN 3 END"
[rule.to_old]
status = "CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' WHEN 3 THEN 'failed' END"
"#,
    reset: "DELETE FROM payments; INSERT INTO payments VALUES (1, 'paid', NULL, 'n1'), (2, 'failed', 1, 'n2')",
    reset_dropped: "DELETE FROM payments; INSERT INTO payments VALUES (1, NULL, 'n1'), (2, 1, 'n2')",
    physical: "SELECT * FROM payments ORDER BY id",
    vars: type_change_vars,
    cases: &[
        read("SELECT id, {c} FROM payments ORDER BY id", &["1|{v1}", "2|{v2}"]),
        read("SELECT id FROM payments WHERE {c} = {v2q}", &["2"]),
        read("SELECT * FROM payments WHERE id = 2", &["{r2}"]),
        read("SELECT p.{c} AS s FROM payments p WHERE p.id IN (SELECT id FROM payments WHERE {c} = {v2q})", &["{v2}"]),
        write("INSERT INTO payments (id, {c}, note) VALUES (3, {'paid'//2}, 'n3'), (4, {'pending'//1}, 'n4') RETURNING {c}",
              &["{paid//2}", "{pending//1}"], None,
              &["{s1}", "{s2}", "3|W(paid,2,∅)|n3", "4|W(pending,1,∅)|n4"]),
        write("UPDATE payments SET {c} = {'failed'//3} WHERE id = 1", &[], Some(1),
              &["1|W(failed,3,paid)|n1", "{s2}"]),
        write("INSERT INTO payments (id, {c}, note) VALUES (2, {'paid'//2}, 'up') ON CONFLICT (id) DO UPDATE SET {c} = EXCLUDED.{c}, note = EXCLUDED.note", &[], Some(1),
              &["{s1}", "2|W(paid,2,failed)|up"]),
    ],
};

fn type_change_vars(phase: Phase, shape: Shape) -> Vec<(&'static str, String)> {
    let old = shape == Shape::Old;
    let (v1, v2) = match (phase, old) {
        (Phase::Expand, true) => ("paid", "failed"),
        (Phase::Expand, false) => ("2", "3"),
        (Phase::Migrate, true) => ("paid", "pending"),
        (Phase::Migrate, false) => ("2", "1"),
        (_, true) => (NULL, "pending"),
        (_, false) => (NULL, "1"),
    };
    let dropped = phase == Phase::Dropped;
    let (s1, s2) = if dropped {
        (format!("1|{NULL}|n1"), "2|1|n2".to_owned())
    } else {
        (format!("1|paid|{NULL}|n1"), "2|failed|1|n2".to_owned())
    };
    // `SELECT *` reads both shapes' phase values.
    let both = |o: &str, n: &str| {
        if dropped {
            n.to_owned()
        } else {
            format!("{o}|{n}")
        }
    };
    let r2 = match phase {
        Phase::Expand => both("failed", "3"),
        _ => both("pending", "1"),
    };
    vec![
        ("c", if old { "status" } else { "status_code" }.to_owned()),
        ("v1", v1.to_owned()),
        ("v2", v2.to_owned()),
        ("v2q", quoted(v2)),
        ("s1", s1),
        ("s2", s2),
        ("r2", format!("2|{r2}|n2")),
    ]
}

// === split: app.people.name -> first_name, last_name ===

const SPLIT: Fixture = Fixture {
    setup: "CREATE SCHEMA app; GRANT ALL ON SCHEMA app TO PUBLIC;
            CREATE TABLE app.people (id int PRIMARY KEY, name text, first_name text, last_name text);",
    drop: "ALTER TABLE app.people DROP COLUMN name;",
    rule: r#"
[[rule]]
id = "people-split"
table = "app.people"
old = "name"
new = ["first_name", "last_name"]
phase = "{phase}"
[rule.to_new]
first_name = "split_part(name, ' ', 1)"
last_name = "split_part(name, ' ', 2)"
[rule.to_old]
name = "concat_ws(' ', first_name, last_name)"
"#,
    reset: "DELETE FROM app.people; INSERT INTO app.people VALUES (1, 'Ann Lee', NULL, NULL), (2, 'stale', 'Bob', 'Ray')",
    reset_dropped: "DELETE FROM app.people; INSERT INTO app.people VALUES (1, NULL, NULL), (2, 'Bob', 'Ray')",
    physical: "SELECT * FROM app.people ORDER BY id",
    vars: split_vars,
    cases: &[
        read("SELECT id, {name//first_name, last_name} FROM app.people ORDER BY id", &["1|{v1}", "2|{v2}"]),
        read("SELECT p.id FROM app.people AS p WHERE {p.name = 'Bob Ray'//p.last_name = 'Ray'}", &["{bob}"]),
        write("INSERT INTO app.people (id, {name//first_name, last_name}) VALUES (3, {'Cy Doe'//'Cy', 'Doe'})", &[], Some(1),
              &["{s1}", "{s2}", "3|W(Cy Doe,Cy|Doe,∅)"]),
        write("UPDATE app.people SET {name = 'Zed Ash'//first_name = 'Zed', last_name = 'Ash'} WHERE id = 2", &[], Some(1),
              &["{s1}", "2|W(Zed Ash,Zed|Ash,stale)"]),
        // A partial write: only one of the rule's new columns; the others are
        // computed from the row's current phase values.
        write("UPDATE app.people SET {name = 'Zed Ray'//first_name = 'Zed'} WHERE id = 2", &[], Some(1),
              &["{s1}", "2|{W(Zed Ray,Zed|Ray,stale)//W({zr},Zed|{last2},stale)}"]),
    ],
};

fn split_vars(phase: Phase, shape: Shape) -> Vec<(&'static str, String)> {
    let old = shape == Shape::Old;
    let (v1, v2) = match (phase, old) {
        (Phase::Expand, true) => ("Ann Lee", "stale"),
        (Phase::Expand, false) => ("Ann|Lee", "stale|"),
        (Phase::Migrate, true) => ("Ann Lee", "Bob Ray"),
        (Phase::Migrate, false) => ("Ann|Lee", "Bob|Ray"),
        (_, true) => ("", "Bob Ray"),
        (_, false) => ("∅|∅", "Bob|Ray"),
    };
    let dropped = phase == Phase::Dropped;
    let (s1, s2) = if dropped {
        ("1|∅|∅", "2|Bob|Ray")
    } else {
        ("1|Ann Lee|∅|∅", "2|stale|Bob|Ray")
    };
    vec![
        ("v1", v1.to_owned()),
        ("v2", v2.to_owned()),
        // Expand reads 'stale' for row 2: no row matches Bob Ray / Ray.
        (
            "bob",
            if phase == Phase::Expand { NO_ROW } else { "2" }.to_owned(),
        ),
        (
            "last2",
            if phase == Phase::Expand { "" } else { "Ray" }.to_owned(),
        ),
        (
            "zr",
            if phase == Phase::Expand {
                "Zed "
            } else {
                "Zed Ray"
            }
            .to_owned(),
        ),
        ("s1", s1.to_owned()),
        ("s2", s2.to_owned()),
    ]
}

macro_rules! matrix {
    ($($test:ident: $fixture:ident, $phase:ident;)*) => {$(
        #[tokio::test]
        async fn $test() {
            run(stringify!($test), &$fixture, Phase::$phase).await;
        }
    )*};
}

matrix! {
    rename_expand: RENAME, Expand;
    rename_migrate: RENAME, Migrate;
    rename_contract: RENAME, Contract;
    rename_contract_dropped: RENAME, Dropped;
    type_change_expand: TYPE_CHANGE, Expand;
    type_change_migrate: TYPE_CHANGE, Migrate;
    type_change_contract: TYPE_CHANGE, Contract;
    type_change_contract_dropped: TYPE_CHANGE, Dropped;
    split_expand: SPLIT, Expand;
    split_migrate: SPLIT, Migrate;
    split_contract: SPLIT, Contract;
    split_contract_dropped: SPLIT, Dropped;
}

#[test]
fn placeholders_expand() {
    let vars = vec![("c", "name".to_owned())];
    assert_eq!(expand("{c}|{a//b}", &vars, Shape::New), "name|b");
    assert_eq!(dual_write("3|W(x,y,∅)|e", Phase::Contract), "3|x|y|e");
    assert_eq!(dual_write("3|W(x,y,∅)|e", Phase::Dropped), "3|y|e");
}
