//! The seeded workload: statements an application of either shape sends,
//! drawn from templates by a small deterministic PRNG, so a seed replays the
//! exact same run.
//!
//! Values written to mapped columns come from round-trip-safe domains (see
//! [`super::schema`]); everything else (joins, subqueries, CTEs, aggregates,
//! windows, DISTINCT, set operations, every write form, COPY, parameters) is
//! as varied as the templates allow.
use super::schema::{Kind, Shape, KINDS};

/// splitmix64: tiny, seedable, and good enough to pick templates.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `pct` percent of the time.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(Option<i32>),
    Text(Option<String>),
}

/// What running a statement does, for the comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Rows come back; nothing is written.
    Read,
    /// Writes the table of this rule kind.
    Write(Kind),
    /// `COPY … FROM STDIN` into the table of this kind, with this data.
    CopyIn(Kind, String),
    /// `COPY … TO STDOUT`.
    CopyOut,
}

/// One generated statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: String,
    pub params: Vec<Param>,
    pub op: Op,
    /// The rows come in a defined order (a total `ORDER BY`).
    pub ordered: bool,
    /// Run with the extended protocol (always when there are parameters).
    pub extended: bool,
    /// Several statements in one text: the simple protocol only.
    pub simple_only: bool,
    /// Which template made it, for the report.
    pub template: &'static str,
}

const NAMES: &[&str] = &[
    "Ann Lee",
    "Bob Ray",
    "O'Hara Di",
    "Eve Park",
    "Zed",
    "Jo Kim",
];
const FIRST: &[&str] = &["Ann", "Bob", "Cy", "Di", "Eve"];
const LAST: &[&str] = &["Lee", "Ray", "Fox", "Kim"];
const STATUS: &[&str] = &["pending", "paid", "failed"];

/// A value for a mapped column, in the round-trip-safe domain of its rule.
#[derive(Debug, Clone, Copy)]
enum Value {
    Null,
    Name(&'static str),
    Status(usize),
    Split(&'static str, &'static str),
}

/// Turns templates into statements; holds the next free id.
pub struct Gen {
    pub rng: Rng,
    next_id: i32,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Rng::new(seed),
            next_id: 1000,
        }
    }

    fn fresh_id(&mut self) -> i32 {
        self.next_id += 1;
        self.next_id
    }

    /// An id that usually exists (seed rows, recent inserts).
    fn some_id(&mut self) -> i32 {
        if self.rng.chance(70) || self.next_id == 1000 {
            1 + self.rng.below(32) as i32
        } else {
            self.next_id - self.rng.below(20) as i32
        }
    }

    fn value(&mut self, kind: Kind) -> Value {
        match kind {
            Kind::Rename if self.rng.chance(10) => Value::Null,
            Kind::Rename => Value::Name(self.rng.pick(NAMES)),
            Kind::TypeChange if self.rng.chance(10) => Value::Null,
            Kind::TypeChange => Value::Status(self.rng.below(3)),
            Kind::Split => Value::Split(self.rng.pick(FIRST), self.rng.pick(LAST)),
        }
    }

    /// The SQL literals of `v` for the columns a `shape` client names; now
    /// and then an expression Postgres must evaluate (once per row).
    fn literals(&mut self, kind: Kind, v: Value, shape: Shape) -> Vec<String> {
        let wrap = self.rng.chance(20);
        let text = |s: &str| {
            if wrap {
                format!("trim({})", quote(&format!(" {s} ")))
            } else {
                quote(s)
            }
        };
        match (v, shape) {
            (Value::Null, Shape::New) if wrap => vec![match kind {
                Kind::TypeChange => "NULL::integer".into(),
                _ => "NULL::text".into(),
            }],
            (Value::Null, _) => vec!["NULL".into()],
            (Value::Name(s), _) => vec![text(s)],
            (Value::Status(i), Shape::Old) => vec![text(STATUS[i])],
            (Value::Status(i), Shape::New) if wrap => vec![format!("abs(-{})", i + 1)],
            (Value::Status(i), Shape::New) => vec![(i + 1).to_string()],
            (Value::Split(f, l), Shape::Old) => vec![text(&format!("{f} {l}"))],
            (Value::Split(f, l), Shape::New) => vec![text(f), text(l)],
        }
    }

    fn fresh_literals(&mut self, kind: Kind, shape: Shape) -> Vec<String> {
        let v = self.value(kind);
        self.literals(kind, v, shape)
    }

    /// `v` as parameters for the columns a `shape` client names.
    fn params(kind: Kind, v: Value, shape: Shape) -> Vec<Param> {
        match (v, shape) {
            (Value::Null, Shape::New) if kind == Kind::TypeChange => vec![Param::Int(None)],
            (Value::Null, _) => vec![Param::Text(None)],
            (Value::Name(s), _) => vec![Param::Text(Some(s.into()))],
            (Value::Status(i), Shape::Old) => vec![Param::Text(Some(STATUS[i].into()))],
            (Value::Status(i), Shape::New) => vec![Param::Int(Some(i as i32 + 1))],
            (Value::Split(f, l), Shape::Old) => vec![Param::Text(Some(format!("{f} {l}")))],
            (Value::Split(f, l), Shape::New) => {
                vec![Param::Text(Some(f.into())), Param::Text(Some(l.into()))]
            }
        }
    }

    fn other_literal(&mut self, kind: Kind) -> String {
        match kind {
            Kind::Rename => quote(&format!("m{}@x", self.rng.below(50))),
            Kind::TypeChange => self.rng.below(40).to_string(),
            Kind::Split => quote(self.rng.pick(&["Oslo", "Rome", "Lima", "Kyiv"])),
        }
    }

    /// A predicate on the mapped columns, qualified with `q` (`""` or `"t."`).
    fn predicate(&mut self, kind: Kind, shape: Shape, q: &str) -> String {
        let cols = kind.cols(shape);
        let c = format!("{q}{}", cols[self.rng.below(cols.len())]);
        let v = self.value(kind);
        let lits = self.literals(kind, v, shape);
        let lit = match (kind, shape, cols.len()) {
            (Kind::Split, Shape::New, _) => {
                if c.ends_with("first_name") {
                    lits[0].clone()
                } else {
                    lits[1].clone()
                }
            }
            _ => lits[0].clone(),
        };
        let lit = if lit == "NULL" || lit == "NULL::text" {
            match kind {
                Kind::TypeChange if shape == Shape::New => "2".into(),
                _ => "'Bob Ray'".into(),
            }
        } else {
            lit
        };
        match self.rng.below(9) {
            0 => format!("{c} = {lit}"),
            1 => format!("{c} <> {lit}"),
            2 => format!("{c} IS NULL"),
            3 => format!("{c} IS NOT NULL"),
            4 => {
                let more = self.fresh_literals(kind, shape)[0].clone();
                format!("{c} IN ({lit}, {more})")
            }
            5 => format!("NOT ({c} = {lit})"),
            6 => format!("({c} = {lit} OR {q}id < {})", self.rng.below(10)),
            7 if kind == Kind::TypeChange && shape == Shape::New => format!("{c} BETWEEN 1 AND 2"),
            7 => format!("{c} LIKE '%{}%'", self.rng.pick(&["a", "e", "o", "i"])),
            _ => format!("{c} >= {lit}"),
        }
    }

    fn select_list(kind: Kind, shape: Shape, q: &str) -> String {
        kind.cols(shape)
            .iter()
            .map(|c| format!("{q}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One mapped column of the shape, at random.
    fn one_col(&mut self, kind: Kind, shape: Shape) -> &'static str {
        let cols = kind.cols(shape);
        cols[self.rng.below(cols.len())]
    }

    /// `col = value` assignments that set the mapped columns (all of them,
    /// or for the split's new shape sometimes one).
    fn assignments(&mut self, kind: Kind, shape: Shape) -> Vec<String> {
        let cols = kind.cols(shape);
        let v = self.value(kind);
        let lits = self.literals(kind, v, shape);
        let all: Vec<String> = cols
            .iter()
            .zip(&lits)
            .map(|(c, l)| format!("{c} = {l}"))
            .collect();
        if all.len() > 1 && self.rng.chance(40) {
            let i = self.rng.below(all.len());
            return vec![all[i].clone()];
        }
        all
    }

    fn returning(&mut self, kind: Kind, shape: Shape, q: &str) -> String {
        match self.rng.below(4) {
            0 => format!(" RETURNING {q}id, {}", Self::select_list(kind, shape, q)),
            1 if q.is_empty() => " RETURNING *".into(),
            1 => format!(" RETURNING {q}*"),
            _ => String::new(),
        }
    }

    /// Mapped values may be DEFAULT, except for the split (a row with
    /// neither shape set reads differently per phase by design).
    fn row_values(&mut self, kind: Kind, shape: Shape, id: i32) -> String {
        let mut vals = self.fresh_literals(kind, shape);
        if kind != Kind::Split && self.rng.chance(10) {
            vals = vec!["DEFAULT".into()];
        }
        let other = if self.rng.chance(15) {
            "DEFAULT".into()
        } else {
            self.other_literal(kind)
        };
        format!("({id}, {}, {other})", vals.join(", "))
    }

    fn insert_cols(kind: Kind, shape: Shape) -> String {
        let t = kind.table();
        format!(
            "{} (id, {}, {})",
            t.name,
            kind.cols(shape).join(", "),
            t.other
        )
    }

    /// The next statement for a client of `shape`.
    pub fn statement(&mut self, shape: Shape) -> Stmt {
        let kind = self.rng.pick(&KINDS);
        let extended = self.rng.chance(50);
        let mut s = if self.rng.chance(55) {
            self.read(kind, shape)
        } else {
            self.write(kind, shape)
        };
        s.extended = s.extended
            || (extended && !s.simple_only && !matches!(s.op, Op::CopyIn(..) | Op::CopyOut));
        s
    }

    fn stmt(sql: String, op: Op, ordered: bool, template: &'static str) -> Stmt {
        Stmt {
            sql,
            params: Vec::new(),
            op,
            ordered,
            extended: false,
            simple_only: false,
            template,
        }
    }

    fn read(&mut self, kind: Kind, shape: Shape) -> Stmt {
        let t = kind.table();
        let (name, other) = (t.name, t.other);
        let m = Self::select_list(kind, shape, "");
        let n = 1 + self.rng.below(35);
        let read =
            |sql: String, ordered: bool, template| Self::stmt(sql, Op::Read, ordered, template);
        match self.rng.below(29) {
            0 => {
                let p = self.predicate(kind, shape, "");
                read(format!("SELECT id, {m}, {other} FROM {name} WHERE {p} ORDER BY id"), true, "select where")
            }
            1 => read(format!("SELECT * FROM {name} WHERE id <= {n} ORDER BY id"), true, "select star"),
            2 => {
                let tm = Self::select_list(kind, shape, "t.");
                let p = self.predicate(kind, shape, "t.");
                read(
                    format!("SELECT t.id, {tm}, o.note FROM {name} t JOIN orders o ON o.id = t.id AND {p} ORDER BY t.id"),
                    true,
                    "join",
                )
            }
            3 => {
                let bm = Self::select_list(kind, shape, "b.");
                let k = 1 + self.rng.below(3);
                read(
                    format!("SELECT a.id, {bm} FROM {name} a LEFT JOIN {name} b ON b.id = a.id + {k} WHERE a.id > {} ORDER BY a.id", 20 + n),
                    true,
                    "left join",
                )
            }
            4 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id FROM {name} WHERE {c} IN (SELECT {c} FROM {name} WHERE id < {n}) ORDER BY id"),
                    true,
                    "in subquery",
                )
            }
            5 => {
                let c = self.one_col(kind, shape);
                let p = self.predicate(kind, shape, "");
                read(
                    format!("SELECT (SELECT {c} FROM {name} WHERE id = {n}) AS x, EXISTS (SELECT 1 FROM {name} WHERE {p}) AS e"),
                    true,
                    "scalar subquery",
                )
            }
            6 => {
                let p = self.predicate(kind, shape, "");
                read(format!("SELECT x.* FROM (SELECT id, {m} FROM {name} WHERE {p}) x ORDER BY x.id"), true, "derived table")
            }
            7 => read(
                format!("SELECT id, {m} FROM {name} WHERE id IN (SELECT user_id FROM orders WHERE amount > {}) ORDER BY id", n % 17),
                true,
                "unmapped subquery",
            ),
            8 => {
                let p = self.predicate(kind, shape, "");
                read(format!("WITH w AS (SELECT id, {m} FROM {name} WHERE {p}) SELECT * FROM w ORDER BY id"), true, "cte")
            }
            9 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT {c}, count(*) AS n FROM {name} GROUP BY {c} HAVING count(*) > 0 ORDER BY 1 NULLS FIRST"),
                    true,
                    "group by",
                )
            }
            10 => {
                let c = self.one_col(kind, shape);
                let p = self.predicate(kind, shape, "");
                read(
                    format!("SELECT count(*), count({c}), max({c}), count(*) FILTER (WHERE {p}) FROM {name}"),
                    true,
                    "aggregate",
                )
            }
            11 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id, {c}, row_number() OVER (PARTITION BY {c} ORDER BY id) AS rn, lag({c}) OVER (ORDER BY id) FROM {name} ORDER BY id"),
                    true,
                    "window",
                )
            }
            12 => {
                let c = self.one_col(kind, shape);
                read(format!("SELECT DISTINCT {c} FROM {name} WHERE id < {n}"), false, "distinct")
            }
            13 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT DISTINCT ON ({c}) {c}, id FROM {name} ORDER BY {c}, id"),
                    true,
                    "distinct on",
                )
            }
            14 => {
                let p = self.predicate(kind, shape, "");
                let all = if self.rng.chance(50) { " ALL" } else { "" };
                read(
                    format!("SELECT id, {m} FROM {name} WHERE id < {n} UNION{all} SELECT id, {m} FROM {name} WHERE {p}"),
                    false,
                    "union",
                )
            }
            15 => {
                let c = self.one_col(kind, shape);
                Self::stmt(
                    format!("COPY (SELECT id, {c} FROM {name} WHERE id <= {n} ORDER BY id) TO STDOUT"),
                    Op::CopyOut,
                    true,
                    "copy query to",
                )
            }
            17 => {
                // Two rules in one statement.
                let u = Kind::Rename.cols(shape)[0];
                let st = Kind::TypeChange.cols(shape)[0];
                let p = self.predicate(Kind::TypeChange, shape, "p.");
                read(
                    format!("SELECT u.id, p.id, u.{u}, p.{st} FROM users u JOIN payments p ON p.user_id = u.id WHERE {p} ORDER BY u.id, p.id"),
                    true,
                    "two rules joined",
                )
            }
            18 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id, {m} FROM {name} ORDER BY {c} NULLS FIRST, id LIMIT {n} OFFSET 2"),
                    true,
                    "order by limit",
                )
            }
            19 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id, COALESCE({c}::text, '?') AS c, CASE WHEN {c} IS NULL THEN 0 ELSE length({c}::text) END FROM {name} WHERE id <= {n} ORDER BY id"),
                    true,
                    "expressions",
                )
            }
            21 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id FROM {name} WHERE {c} NOT IN (SELECT {c} FROM {name} WHERE id < {n} AND {c} IS NOT NULL) ORDER BY id"),
                    true,
                    "not in",
                )
            }
            22 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT count(DISTINCT {c}), min({c}::text), string_agg({c}::text, ',' ORDER BY id) FROM {name} WHERE id <= {n}"),
                    true,
                    "distinct aggregate",
                )
            }
            23 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT t.id, x.v FROM {name} t, LATERAL (SELECT t.{c} AS v) x WHERE t.id <= {n} ORDER BY t.id"),
                    true,
                    "lateral",
                )
            }
            24 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT {c} AS x, id FROM {name} WHERE id <= {n} ORDER BY x NULLS LAST, id"),
                    true,
                    "order by label",
                )
            }
            25 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT id, rank() OVER (ORDER BY {c} NULLS LAST, id) FROM {name} ORDER BY id"),
                    true,
                    "window order",
                )
            }
            26 => {
                let p = self.predicate(kind, shape, "");
                read(
                    format!("SELECT id, {m} FROM {name} WHERE {p} ORDER BY id FOR UPDATE"),
                    true,
                    "for update",
                )
            }
            27 => {
                let c = self.one_col(kind, shape);
                read(
                    format!("SELECT {c}, count(*) FROM {name} GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST"),
                    true,
                    "group by position",
                )
            }
            20 => {
                let p = self.predicate(kind, shape, "t.");
                read(
                    format!("SELECT t.id, (SELECT count(*) FROM orders o WHERE o.id = t.id AND {p}) AS n FROM {name} t ORDER BY t.id"),
                    true,
                    "select-list subquery",
                )
            }
            16 => {
                // The unqualified mapped column names no column of `orders`: it is the
                // outer row's.
                let p = self.predicate(kind, shape, "");
                read(
                    format!("SELECT t.id, {} FROM {name} t WHERE EXISTS (SELECT 1 FROM orders WHERE orders.id = t.id AND {p}) ORDER BY t.id", Self::select_list(kind, shape, "t.")),
                    true,
                    "correlated subquery",
                )
            }
            _ => {
                let v = self.value(kind);
                let c = kind.cols(shape)[0];
                let mut s = read(format!("SELECT id, {m} FROM {name} WHERE {c} = $1 OR id = $2 ORDER BY id"), true, "params");
                s.params = Self::params(kind, v, shape);
                s.params.truncate(1);
                s.params.push(Param::Int(Some(n as i32)));
                s.extended = true;
                s
            }
        }
    }

    fn write(&mut self, kind: Kind, shape: Shape) -> Stmt {
        let t = kind.table();
        let name = t.name;
        let write = |sql: String, template| Self::stmt(sql, Op::Write(kind), false, template);
        match self.rng.below(21) {
            0 | 1 => {
                let rows = 1 + self.rng.below(3);
                let values: Vec<String> = (0..rows)
                    .map(|_| {
                        let id = self.fresh_id();
                        self.row_values(kind, shape, id)
                    })
                    .collect();
                let ret = self.returning(kind, shape, "");
                write(
                    format!(
                        "INSERT INTO {} VALUES {}{ret}",
                        Self::insert_cols(kind, shape),
                        values.join(", ")
                    ),
                    "insert values",
                )
            }
            2 => {
                let (id, from) = (self.fresh_id(), self.some_id());
                let cols = kind.cols(shape).join(", ");
                let ret = self.returning(kind, shape, "");
                write(
                    format!(
                        "INSERT INTO {} SELECT {id}, {cols}, {} FROM {name} WHERE id = {from}{ret}",
                        Self::insert_cols(kind, shape),
                        t.other
                    ),
                    "insert select",
                )
            }
            3 | 4 => {
                let id = if self.rng.chance(70) {
                    self.some_id()
                } else {
                    self.fresh_id()
                };
                let values = self.row_values(kind, shape, id);
                let target = if self.rng.chance(30) {
                    format!("ON CONSTRAINT {name}_pkey")
                } else {
                    "(id)".into()
                };
                let action = if self.rng.chance(20) {
                    "DO NOTHING".to_owned()
                } else {
                    let mut sets: Vec<String> = kind
                        .cols(shape)
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}"))
                        .collect();
                    sets.push(format!("{0} = EXCLUDED.{0}", t.other));
                    format!("DO UPDATE SET {}", sets.join(", "))
                };
                let ret = self.returning(kind, shape, "");
                write(
                    format!(
                        "INSERT INTO {} VALUES {values} ON CONFLICT {target} {action}{ret}",
                        Self::insert_cols(kind, shape)
                    ),
                    "insert on conflict",
                )
            }
            5 | 6 => {
                let mut sets = self.assignments(kind, shape);
                if self.rng.chance(30) {
                    sets.push(format!("{} = {}", t.other, self.other_literal(kind)));
                }
                let filter = if self.rng.chance(60) {
                    format!("id = {}", self.some_id())
                } else {
                    format!(
                        "{} AND id % 5 = {}",
                        self.predicate(kind, shape, ""),
                        self.rng.below(5)
                    )
                };
                let ret = self.returning(kind, shape, "");
                write(
                    format!("UPDATE {name} SET {} WHERE {filter}{ret}", sets.join(", ")),
                    "update",
                )
            }
            7 => {
                let p = self.predicate(kind, shape, "");
                write(
                    format!(
                        "UPDATE {name} SET {0} = {1} WHERE {p} AND id = {2}",
                        t.other,
                        self.other_literal(kind),
                        self.some_id()
                    ),
                    "update other",
                )
            }
            8 => {
                let sets = self.assignments(kind, shape).join(", ");
                let ret = self.returning(kind, shape, "t.");
                write(
                    format!("UPDATE {name} t SET {sets} FROM orders o WHERE o.id = t.id AND o.amount = {}{ret}", self.rng.below(17)),
                    "update from",
                )
            }
            9 => {
                let cols = kind.cols(shape);
                let vals = self.fresh_literals(kind, shape).join(", ");
                write(
                    format!(
                        "UPDATE {name} SET ({}, {}) = (SELECT {vals}, {} FROM orders WHERE id = {}) WHERE id = {}",
                        cols.join(", "),
                        t.other,
                        self.other_literal(kind),
                        1 + self.rng.below(30),
                        self.some_id()
                    ),
                    "update row subquery",
                )
            }
            10 => {
                let ret = self.returning(kind, shape, "t.");
                if self.rng.chance(50) {
                    write(
                        format!("DELETE FROM {name} t USING orders o WHERE o.id + 1000 = t.id AND o.amount < {}{ret}", self.rng.below(17)),
                        "delete using",
                    )
                } else {
                    let p = self.predicate(kind, shape, "t.");
                    write(
                        format!("DELETE FROM {name} t WHERE t.id > 1000 AND {p}{ret}"),
                        "delete where",
                    )
                }
            }
            11 => {
                let rows = 1 + self.rng.below(3);
                // Both shapes' columns, the form COPY supports in every phase.
                let both = self.rng.chance(40);
                let shapes: &[Shape] = if both {
                    &[Shape::Old, Shape::New]
                } else {
                    std::slice::from_ref(&shape)
                };
                let mut data = String::new();
                for _ in 0..rows {
                    let id = self.fresh_id();
                    let v = self.value(kind);
                    let mut cells = vec![id.to_string()];
                    let values = shapes.iter().flat_map(|&sh| Self::params(kind, v, sh));
                    for p in values {
                        cells.push(match p {
                            Param::Int(Some(i)) => i.to_string(),
                            Param::Text(Some(s)) => s,
                            Param::Int(None) | Param::Text(None) => "\\N".into(),
                        });
                    }
                    cells.push(self.other_literal(kind).trim_matches('\'').to_owned());
                    data += &(cells.join("\t") + "\n");
                }
                let cols: Vec<&str> = shapes
                    .iter()
                    .flat_map(|&sh| kind.cols(sh).iter().copied())
                    .collect();
                Self::stmt(
                    format!(
                        "COPY {} (id, {}, {}) FROM STDIN",
                        t.name,
                        cols.join(", "),
                        t.other
                    ),
                    Op::CopyIn(kind, data),
                    false,
                    "copy from",
                )
            }
            13 => {
                let sets = self.assignments(kind, shape).join(", ");
                let m = Self::select_list(kind, shape, "");
                write(
                    format!("WITH w AS (UPDATE {name} SET {sets} WHERE id = {} RETURNING id, {m}) SELECT * FROM w", self.some_id()),
                    "writable cte",
                )
            }
            14 => {
                let id = self.fresh_id();
                let values = self.row_values(kind, shape, id);
                let m = Self::select_list(kind, shape, "");
                let mut s = write(
                    format!("INSERT INTO {} VALUES {values}; SELECT id, {m} FROM {name} WHERE id = {id}", Self::insert_cols(kind, shape)),
                    "two statements",
                );
                s.simple_only = true;
                s
            }
            16 => {
                let id = self.some_id();
                let values = self.row_values(kind, shape, id);
                let c = self.one_col(kind, shape);
                let sets: Vec<String> = kind
                    .cols(shape)
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                let ret = self.returning(kind, shape, "");
                write(
                    format!(
                        "INSERT INTO {} VALUES {values} ON CONFLICT (id) DO UPDATE SET {} WHERE {name}.{c} IS DISTINCT FROM EXCLUDED.{c}{ret}",
                        Self::insert_cols(kind, shape),
                        sets.join(", ")
                    ),
                    "on conflict where",
                )
            }
            17 => {
                let p = self.predicate(kind, shape, "");
                let (o, v) = (t.other, self.other_literal(kind));
                write(
                    format!("UPDATE {name} SET {o} = {v} WHERE id IN (SELECT id FROM {name} WHERE {p} AND id % 7 = {}) RETURNING id, {}", self.rng.below(7), Self::select_list(kind, shape, "")),
                    "update where subquery",
                )
            }
            18 if kind != Kind::Split => {
                let c = kind.cols(shape)[0];
                let filter = format!("id = {}", self.some_id());
                if self.rng.chance(50) {
                    write(
                        format!("UPDATE {name} SET {c} = DEFAULT WHERE {filter} RETURNING {c}"),
                        "update default",
                    )
                } else {
                    let id = self.fresh_id();
                    write(
                        format!("INSERT INTO {name} (id) VALUES ({id}) RETURNING *"),
                        "insert defaults",
                    )
                }
            }
            19 => {
                let c = self.one_col(kind, shape);
                write(
                    format!("DELETE FROM {name} WHERE id > 1000 AND id % 11 = {} RETURNING id, {c}::text AS t", self.rng.below(11)),
                    "delete returning expression",
                )
            }
            15 => {
                let first = self.assignments(kind, shape).join(", ");
                let second = self.assignments(kind, shape).join(", ");
                let (a, b) = (self.some_id(), self.some_id());
                let end = if self.rng.chance(20) {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                let mut s = write(
                    format!("BEGIN; UPDATE {name} SET {first} WHERE id = {a}; UPDATE {name} SET {second} WHERE id = {b}; {end}"),
                    "transaction",
                );
                s.simple_only = true;
                s
            }
            _ => {
                let v = self.value(kind);
                let cols = kind.cols(shape);
                let mut params = Self::params(kind, v, shape);
                let sets: Vec<String> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c} = ${}", i + 1))
                    .collect();
                let id = cols.len() + 1;
                params.push(Param::Int(Some(self.some_id())));
                let mut s = write(
                    format!("UPDATE {name} SET {} WHERE id = ${id}", sets.join(", ")),
                    "update params",
                );
                s.params = params;
                s.extended = true;
                s
            }
        }
    }

    /// Statements prepared once per client and run again and again, across
    /// every flip, with fresh parameters each time: `(text, op)`.
    pub fn prepared_texts(shape: Shape) -> Vec<(String, Kind, bool)> {
        let mut out = Vec::new();
        for kind in KINDS {
            let t = kind.table();
            let m = Self::select_list(kind, shape, "");
            let cols = kind.cols(shape);
            let placeholders: Vec<String> =
                (0..cols.len()).map(|i| format!("${}", i + 2)).collect();
            out.push((
                format!("SELECT id, {m}, {} FROM {} WHERE id = $1", t.other, t.name),
                kind,
                false,
            ));
            out.push((
                format!("SELECT * FROM {} WHERE id = $1", t.name),
                kind,
                false,
            ));
            out.push((
                format!(
                    "INSERT INTO {} (id, {}) VALUES ($1, {}) RETURNING {m}",
                    t.name,
                    cols.join(", "),
                    placeholders.join(", ")
                ),
                kind,
                true,
            ));
        }
        out
    }

    /// Parameters for [`Gen::prepared_texts`] entry `kind`/`write`.
    pub fn prepared_params(&mut self, kind: Kind, shape: Shape, write: bool) -> Vec<Param> {
        if write {
            let mut p = vec![Param::Int(Some(self.fresh_id()))];
            p.extend(Self::params(kind, self.value(kind), shape));
            p
        } else {
            vec![Param::Int(Some(self.some_id()))]
        }
    }
}
