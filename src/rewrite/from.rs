//! Scope building: the relations of a `FROM` clause, as column references will see them.
//!
//! Non-lateral derived tables are walked before their scope exists (they cannot see their
//! siblings); `ON` clauses, `LATERAL` subqueries and table functions are walked once it is
//! pushed.

use sqlparser::ast::{
    Ident, JoinConstraint, JoinOperator, ObjectName, TableFactor, TableWithJoins,
};

use super::ctx::{name_parts, Ctx, Deferred};
use super::ident::normalize;
use super::scope::{Rel, RelKind, Scope};
use super::Refuse;

/// Which sides of a join may be NULL-extended: (the relations joined so far, the new one).
fn outer_sides(op: &JoinOperator) -> (bool, bool) {
    use JoinOperator::*;
    match op {
        Left(_) | LeftOuter(_) => (false, true),
        Right(_) | RightOuter(_) => (true, false),
        FullOuter(_) => (true, true),
        _ => (false, false),
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    use JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | FullOuter(c)
        | CrossJoin(c) | Semi(c) | LeftSemi(c) | RightSemi(c) | Anti(c) | LeftAnti(c)
        | RightAnti(c) | StraightJoin(c) => Some(c),
        _ => None,
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// `(schema, table)` when `name` denotes a mapped table (not a CTE).
    pub fn mapped_table(&self, name: &ObjectName) -> Option<(String, String)> {
        let parts: Vec<String> = name_parts(name)?.into_iter().map(normalize).collect();
        let (schema, table) = match parts.as_slice() {
            [t] if self.ctes.iter().any(|(c, _)| c == t) => return None,
            [t] => (self.search_path.resolve(t, self.catalog)?, t.clone()),
            [.., s, t] => (s.clone(), t.clone()),
            [] => return None,
        };
        self.rules
            .maps_table(&schema, &table)
            .then_some((schema, table))
    }

    /// The columns of an unmapped table the catalog holds (tables in the schemas of mapped
    /// tables), so unqualified names inside a subquery over it resolve as Postgres does.
    fn catalog_columns(&self, parts: &[String]) -> Option<Vec<String>> {
        let (schema, table) = match parts {
            [t] => (self.search_path.resolve(t, self.catalog)?, t.as_str()),
            [.., s, t] => (s.clone(), t.as_str()),
            [] => return None,
        };
        let info = self.catalog.table(&schema, table)?;
        Some(info.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// A relation entry for a table named in `FROM`, `UPDATE`, `INSERT INTO`...
    pub fn table_rel(&self, name: &ObjectName, alias: Option<&Ident>) -> Rel {
        let parts: Vec<String> = name_parts(name)
            .unwrap_or_default()
            .into_iter()
            .map(normalize)
            .collect();
        let refname = alias.map(normalize).or_else(|| parts.last().cloned());
        let full_name = match (alias, parts.as_slice()) {
            (None, [t]) => Some((
                self.search_path
                    .resolve(t, self.catalog)
                    .unwrap_or_else(|| "public".to_owned()),
                t.clone(),
            )),
            (None, [.., s, t]) => Some((s.clone(), t.clone())),
            _ => None,
        };
        let cte = match parts.as_slice() {
            [t] => self
                .ctes
                .iter()
                .rev()
                .find(|(c, _)| c == t)
                .map(|(_, cols)| cols.clone()),
            _ => None,
        };
        let kind = match (cte, self.mapped_table(name)) {
            (Some(columns), _) => RelKind::Other { columns },
            (None, Some((schema, table))) => RelKind::Mapped { schema, table },
            (None, None) => RelKind::Other {
                columns: self.catalog_columns(&parts),
            },
        };
        Rel {
            refname,
            full_name,
            kind,
            qualified_only: false,
            nullable: false,
        }
    }

    /// Build and push the scope of a `FROM` list; returns what must be walked inside it.
    pub fn push_scope<'q>(
        &mut self,
        from: &'q [TableWithJoins],
    ) -> Result<Vec<Deferred<'q>>, Refuse> {
        let mut scope = Scope::default();
        let mut deferred = Vec::new();
        for twj in from {
            self.add_joined(twj, &mut scope, &mut deferred)?;
        }
        self.scopes.push(scope);
        Ok(deferred)
    }

    /// Push a scope holding exactly `rels`.
    pub fn push_rels(&mut self, rels: Vec<Rel>) {
        self.scopes.push(Scope {
            rels,
            merged_columns: false,
        });
    }

    pub fn walk_deferred(&mut self, deferred: Vec<Deferred<'_>>) -> Result<(), Refuse> {
        for d in deferred {
            match d {
                Deferred::Expr(e) => self.walk_expr(e)?,
                Deferred::Query(q) => {
                    self.walk_query(q)?;
                }
                Deferred::Factor(f) => self.walk_node(f)?,
            }
        }
        Ok(())
    }

    fn add_joined<'q>(
        &mut self,
        twj: &'q TableWithJoins,
        scope: &mut Scope,
        deferred: &mut Vec<Deferred<'q>>,
    ) -> Result<(), Refuse> {
        let first = scope.rels.len();
        self.add_factor(&twj.relation, scope, deferred)?;
        for join in &twj.joins {
            let left = scope.rels.len();
            self.add_factor(&join.relation, scope, deferred)?;
            let (left_nullable, right_nullable) = outer_sides(&join.join_operator);
            if left_nullable {
                scope.rels[first..left]
                    .iter_mut()
                    .for_each(|r| r.nullable = true);
            }
            if right_nullable {
                scope.rels[left..]
                    .iter_mut()
                    .for_each(|r| r.nullable = true);
            }
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::On(e)) => deferred.push(Deferred::Expr(e)),
                Some(JoinConstraint::Using(_)) | Some(JoinConstraint::Natural) => {
                    scope.merged_columns = true;
                    let mapped = scope.rels.iter().find_map(|r| match &r.kind {
                        RelKind::Mapped { schema, table } => {
                            self.rules.on_table(schema, table).next()
                        }
                        RelKind::Other { .. } => None,
                    });
                    if let Some(rule) = mapped {
                        return Err(Refuse::rule(
                            rule,
                            "USING or NATURAL join with a mapped table; use ON",
                        ));
                    }
                }
                Some(JoinConstraint::None) => {}
                None => return Err(Refuse::new("unsupported join kind")),
            }
        }
        Ok(())
    }

    fn add_factor<'q>(
        &mut self,
        factor: &'q TableFactor,
        scope: &mut Scope,
        deferred: &mut Vec<Deferred<'q>>,
    ) -> Result<(), Refuse> {
        let alias_of =
            |a: &Option<sqlparser::ast::TableAlias>| a.as_ref().map(|a| normalize(&a.name));
        let alias_columns = |a: &Option<sqlparser::ast::TableAlias>| {
            a.as_ref()
                .filter(|a| !a.columns.is_empty())
                .map(|a| a.columns.iter().map(|c| normalize(&c.name)).collect())
        };
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } => {
                let rel = self.table_rel(name, alias.as_ref().map(|a| &a.name));
                if let (RelKind::Mapped { schema, table }, Some(a)) = (&rel.kind, alias) {
                    if !a.columns.is_empty() {
                        let rule = self.rules.on_table(schema, table).next();
                        return Err(rule.map_or_else(
                            || Refuse::new("column aliases on a mapped table"),
                            |r| Refuse::rule(r, "column aliases on a mapped table"),
                        ));
                    }
                }
                scope.rels.push(rel);
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let labels = if *lateral {
                    deferred.push(Deferred::Query(subquery));
                    None
                } else {
                    self.walk_query(subquery)?
                };
                let columns = alias_columns(alias).or(labels);
                scope.rels.push(Rel {
                    refname: alias_of(alias),
                    full_name: None,
                    kind: RelKind::Other { columns },
                    qualified_only: false,
                    nullable: false,
                });
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => {
                self.add_joined(table_with_joins, scope, deferred)?;
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let mut inner = Scope::default();
                self.add_joined(table_with_joins, &mut inner, deferred)?;
                if inner
                    .rels
                    .iter()
                    .any(|r| matches!(r.kind, RelKind::Mapped { .. }))
                {
                    return Err(Refuse::new("aliased join over a mapped table"));
                }
                scope.rels.push(Rel {
                    refname: alias_of(alias),
                    full_name: None,
                    kind: RelKind::Other { columns: None },
                    qualified_only: false,
                    nullable: false,
                });
            }
            TableFactor::Table { name, alias, .. } | TableFactor::Function { name, alias, .. } => {
                deferred.push(Deferred::Factor(factor));
                let fallback = name.0.last().and_then(|p| p.as_ident()).map(normalize);
                let refname = alias_of(alias).or(fallback);
                scope.rels.push(Rel {
                    refname,
                    full_name: None,
                    kind: RelKind::Other {
                        columns: alias_columns(alias),
                    },
                    qualified_only: false,
                    nullable: false,
                });
            }
            TableFactor::TableFunction { alias, .. } | TableFactor::UNNEST { alias, .. } => {
                deferred.push(Deferred::Factor(factor));
                scope.rels.push(Rel {
                    refname: alias_of(alias),
                    full_name: None,
                    kind: RelKind::Other {
                        columns: alias_columns(alias),
                    },
                    qualified_only: false,
                    nullable: false,
                });
            }
            other => {
                self.refuse_if_mapped(other, "this FROM item")?;
                deferred.push(Deferred::Factor(factor));
                scope.rels.push(Rel {
                    refname: None,
                    full_name: None,
                    kind: RelKind::Other { columns: None },
                    qualified_only: false,
                    nullable: false,
                });
            }
        }
        Ok(())
    }
}
