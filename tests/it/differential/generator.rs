//! The seeded workload: statements an application of either shape sends,
//! drawn from templates by a small deterministic PRNG, so a seed replays the
//! exact same run.
//!
//! Values written to mapped columns come from round-trip-safe domains (see
//! [`super::schema`]); everything else (joins, subqueries, CTEs, aggregates,
//! windows, DISTINCT, set operations, every write form, COPY, parameters) is
//! as varied as the templates allow.
mod reads;
mod writes;

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
