//! Write templates: INSERT with VALUES, SELECT, DEFAULT, ON CONFLICT and
//! RETURNING, UPDATE (also FROM and from a sub-select), DELETE (also USING),
//! COPY FROM, writable CTEs and transactions.
use super::{Gen, Op, Param, Stmt};
use crate::differential::schema::{Kind, Shape};

impl Gen {
    pub(super) fn write(&mut self, kind: Kind, shape: Shape) -> Stmt {
        let t = kind.table();
        let name = t.name;
        let write = |sql: String, template| Self::stmt(sql, Op::Write(kind), false, template);
        match self.rng.below(23) {
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
            20 => {
                // Django's bulk upsert: one array per column.
                let rows = 1 + self.rng.below(3);
                let mut ids = Vec::new();
                let mut columns: Vec<Vec<String>> = vec![Vec::new(); kind.cols(shape).len()];
                let mut others = Vec::new();
                for _ in 0..rows {
                    ids.push(if self.rng.chance(50) {
                        self.some_id()
                    } else {
                        self.fresh_id()
                    });
                    let v = self.fresh_literals(kind, shape);
                    for (c, l) in columns.iter_mut().zip(v) {
                        c.push(if l.starts_with("NULL") {
                            "NULL".into()
                        } else {
                            l
                        });
                    }
                    others.push(self.other_literal(kind));
                }
                ids.sort_unstable();
                ids.dedup();
                let n = ids.len();
                let ty = |c: &str| {
                    if c == "status_code" || c == "amount" {
                        "int"
                    } else {
                        "text"
                    }
                };
                let mut arrays = vec![format!(
                    "ARRAY[{}]::int[]",
                    ids.iter()
                        .map(i32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )];
                for (c, vals) in kind.cols(shape).iter().zip(&columns) {
                    arrays.push(format!("ARRAY[{}]::{}[]", vals[..n].join(", "), ty(c)));
                }
                arrays.push(format!(
                    "ARRAY[{}]::{}[]",
                    others[..n].join(", "),
                    ty(t.other)
                ));
                let sets: Vec<String> = kind
                    .cols(shape)
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect();
                write(
                    format!(
                        "INSERT INTO {} SELECT * FROM UNNEST({}) ON CONFLICT (id) DO UPDATE SET {}",
                        Self::insert_cols(kind, shape),
                        arrays.join(", "),
                        sets.join(", ")
                    ),
                    "unnest upsert",
                )
            }
            21 => {
                // Usually a duplicate key: Postgres's 23505 must come back as it is.
                let id = self.some_id();
                let values = self.row_values(kind, shape, id);
                let ret = self.returning(kind, shape, "");
                write(
                    format!(
                        "INSERT INTO {} VALUES {values}{ret}",
                        Self::insert_cols(kind, shape)
                    ),
                    "insert existing id",
                )
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
}
