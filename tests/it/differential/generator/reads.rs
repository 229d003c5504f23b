//! Read templates: joins, subqueries, CTEs, aggregates, windows, DISTINCT,
//! set operations, COPY TO and parameters, over one mapped table.
use super::{Gen, Op, Param, Stmt};
use crate::differential::schema::{Kind, Shape};

impl Gen {
    pub(super) fn read(&mut self, kind: Kind, shape: Shape) -> Stmt {
        let t = kind.table();
        let (name, other) = (t.name, t.other);
        let m = Self::select_list(kind, shape, "");
        let n = 1 + self.rng.below(35);
        let read =
            |sql: String, ordered: bool, template| Self::stmt(sql, Op::Read, ordered, template);
        match self.rng.below(30) {
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
            28 => read(
                // Postgres's own error, which pgshim must pass on.
                format!("SELECT id, {m} FROM {name} WHERE id <= {n} AND 1 / (id - id) = 1"),
                true,
                "division by zero",
            ),
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
}
