//! Dual-write planning: which columns a write must set, and to what.
//!
//! Given the columns a statement sets (each with a *slot*, the value the client wrote), the
//! plan says, per set column, whether it stays, is replaced by other columns (contract:
//! old-shape columns become new ones) or goes away, and which mirror columns are appended.
//! Values are [`Piece`] lists so each statement kind can render slots its own way: inline
//! text, or a reference into a derived table that evaluates the client's expression once.

use sqlparser::ast::Expr;

use super::catalog::Catalog;
use super::phase::{column_ref, read_value, Row};
use super::rules::{Phase, Rule, RuleSet, Side};
use super::transform::Piece;
use super::Refuse;

/// A column the statement sets, and the slot holding its value.
#[derive(Debug, Clone)]
pub(crate) struct SetCol {
    pub name: String,
    pub slot: usize,
}

/// What an unset column of a rule holds before the write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Current<'q> {
    /// INSERT: nothing; mirrors see NULL and the column keeps its default.
    Null,
    /// UPDATE: the row named by this qualifier, read with phase semantics.
    Row(&'q str),
}

/// One column to set, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Out {
    pub column: String,
    pub value: Vec<Piece>,
}

/// What happens to one column the statement sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    Keep,
    Replace(Vec<Out>),
    Remove,
}

/// The write plan for one statement's column list.
#[derive(Debug, Clone, Default)]
pub(crate) struct WritePlan {
    pub placements: Vec<Placement>,
    pub appended: Vec<Out>,
}

#[derive(Debug, Clone)]
enum Final {
    Given(usize),
    /// The row's current value; `trivial` when assigning it would change nothing.
    Current {
        pieces: Vec<Piece>,
        trivial: bool,
    },
    Computed(Vec<Piece>),
}

impl Final {
    fn pieces(&self) -> Vec<Piece> {
        match self {
            Final::Given(slot) => vec![Piece::Slot(*slot)],
            Final::Current { pieces, .. } | Final::Computed(pieces) => pieces.clone(),
        }
    }
}

// === impl WritePlan ===

impl WritePlan {
    /// Whether the statement needs no change.
    pub fn is_noop(&self) -> bool {
        self.appended.is_empty() && self.placements.iter().all(|p| *p == Placement::Keep)
    }

    /// How many times each slot's value is used after the rewrite.
    pub fn slot_uses(&self, slots: usize) -> Vec<usize> {
        let mut uses = vec![0; slots];
        let mut count = |value: &[Piece]| {
            for p in value {
                if let Piece::Slot(s) = p {
                    if let Some(u) = uses.get_mut(*s) {
                        *u += 1;
                    }
                }
            }
        };
        for (slot, p) in self.placements.iter().enumerate() {
            match p {
                Placement::Keep => count(&[Piece::Slot(slot)]),
                Placement::Replace(outs) => outs.iter().for_each(|o| count(&o.value)),
                Placement::Remove => {}
            }
        }
        self.appended.iter().for_each(|o| count(&o.value));
        uses
    }
}

/// WritePlan a write of `cols` (slot `i` is `cols[i]`'s value) to `schema.table`.
///
/// In contract, while the catalog still has a rule's old columns, writes keep mirroring
/// into them as in migrate, so stepping back from contract to migrate reads exact values
/// (and every value the client sent, `$n` parameters included, is used and typed).
pub(crate) fn plan(
    rules: &RuleSet,
    catalog: &Catalog,
    schema: &str,
    table: &str,
    cols: &[SetCol],
    current: Current<'_>,
) -> WritePlan {
    let mut plan = WritePlan {
        placements: vec![Placement::Keep; cols.len()],
        appended: Vec::new(),
    };
    let info = catalog.table(schema, table);
    for rule in rules.on_table(schema, table) {
        let old_exists = info.is_some_and(|t| rule.old.iter().all(|c| t.column(c).is_some()));
        plan_rule(rule, old_exists, cols, current, &mut plan);
    }
    plan
}

fn plan_rule(
    rule: &Rule,
    old_exists: bool,
    cols: &[SetCol],
    current: Current<'_>,
    plan: &mut WritePlan,
) {
    let given = |name: &str| cols.iter().find(|c| c.name == name).map(|c| c.slot);
    let touched = rule.old.iter().chain(&rule.new).any(|c| given(c).is_some());
    if !touched {
        return;
    }
    let has_old = rule.old.iter().any(|c| given(c).is_some());
    let cur = |side: Side, i: usize, name: &str| match current {
        Current::Null => Final::Current {
            pieces: vec![Piece::Text("NULL".into())],
            trivial: true,
        },
        Current::Row(q) => match read_value(rule, side, i, &Row::plain(q)) {
            Some(text) => Final::Current {
                pieces: vec![Piece::Text(text)],
                trivial: false,
            },
            None => Final::Current {
                pieces: vec![Piece::Text(column_ref(q, name))],
                trivial: true,
            },
        },
    };
    let start = |side: Side| -> Vec<Final> {
        rule.side(side)
            .iter()
            .enumerate()
            .map(|(i, c)| given(c).map_or_else(|| cur(side, i, c), Final::Given))
            .collect()
    };
    let derive = |side: Side, from: &[Final], base: Vec<Final>| -> Vec<Final> {
        let other = match side {
            Side::Old => Side::New,
            Side::New => Side::Old,
        };
        base.into_iter()
            .enumerate()
            .map(|(i, f)| match (f, rule.transform(side, i)) {
                (Final::Given(s), _) => Final::Given(s),
                (_, Some(t)) => {
                    let mut out = Vec::new();
                    t.render(&mut out, &mut |c, out| {
                        if let Some(j) = rule.side(other).iter().position(|x| x == c) {
                            if let Some(f) = from.get(j) {
                                out.extend(f.pieces());
                            }
                        }
                    });
                    Final::Computed(out)
                }
                (f, None) => f,
            })
            .collect()
    };
    let (old, new) = if has_old {
        let old = start(Side::Old);
        let new = derive(Side::New, &old, start(Side::New));
        (old, new)
    } else {
        let new = start(Side::New);
        let old = derive(Side::Old, &new, start(Side::Old));
        (old, new)
    };
    let out = |name: &String, f: &Final| Out {
        column: name.clone(),
        value: f.pieces(),
    };
    let needs_write = |f: &Final| match f {
        Final::Given(_) => false,
        Final::Current { trivial, .. } => !trivial,
        Final::Computed(_) => true,
    };
    let writes_both = match rule.phase {
        Phase::Expand | Phase::Migrate => true,
        Phase::Contract => old_exists,
    };
    match writes_both {
        true => {
            for (name, f) in rule.old.iter().zip(&old).chain(rule.new.iter().zip(&new)) {
                if needs_write(f) {
                    plan.appended.push(out(name, f));
                }
            }
        }
        false => {
            let removed: Vec<usize> = rule.old.iter().filter_map(|c| given(c)).collect();
            for &slot in &removed {
                if let Some(p) = plan.placements.get_mut(slot) {
                    *p = Placement::Remove;
                }
            }
            let outs: Vec<Out> = rule
                .new
                .iter()
                .zip(&new)
                .filter(|(_, f)| matches!(f, Final::Computed(_)))
                .map(|(n, f)| out(n, f))
                .collect();
            match removed.first().and_then(|&s| plan.placements.get_mut(s)) {
                Some(p) if !outs.is_empty() => *p = Placement::Replace(outs),
                _ => plan.appended.extend(outs),
            }
        }
    }
}

/// Whether evaluating `expr` twice gives the same value and has no side effects, so a
/// mirror may repeat its text instead of reading a once-computed value.
pub(crate) fn repeatable(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_)
        | Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::TypedString(_) => true,
        Expr::Cast { expr, .. }
        | Expr::Nested(expr)
        | Expr::UnaryOp { expr, .. }
        | Expr::Collate { expr, .. }
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr) => repeatable(expr),
        Expr::BinaryOp { left, right, .. } => repeatable(left) && repeatable(right),
        _ => false,
    }
}

/// How a statement's value for one slot reads in generated SQL.
#[derive(Debug, Clone)]
pub(crate) struct SlotText {
    /// The client's expression, with read rewrites applied.
    pub text: String,
    pub repeatable: bool,
    /// The client wrote `DEFAULT`.
    pub default: bool,
    /// The column's type without typmod, when the catalog has the column.
    pub cast: Option<String>,
    /// The column has a default (so `DEFAULT` has a value a mirror cannot know).
    pub has_default: bool,
}

/// Render `value`, with slots as `slot(n, alone)` says (`alone`: the value is that slot).
///
/// # Errors
/// Whatever `slot` refuses.
pub(crate) fn render(
    value: &[Piece],
    slot: &mut dyn FnMut(usize, bool) -> Result<String, Refuse>,
) -> Result<String, Refuse> {
    let alone = value.len() == 1;
    let mut s = String::new();
    for p in value {
        match p {
            Piece::Text(t) => s.push_str(t),
            Piece::Slot(n) => s.push_str(&slot(*n, alone)?),
        }
    }
    Ok(s)
}

/// Inline rendering of a slot: its text as written when it stands alone, otherwise
/// parenthesised and cast to the column's type so it types as it would in the column.
///
/// # Errors
/// `DEFAULT` used to compute a mirror of a column that has a default.
pub(crate) fn inline_slot(
    slot: &SlotText,
    alone: bool,
    rule: Option<&Rule>,
) -> Result<String, Refuse> {
    if slot.default {
        if alone {
            return Ok("DEFAULT".into());
        }
        if slot.has_default {
            let reason = "DEFAULT for a mapped column that has a default; write the value";
            return Err(rule.map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
        }
        // Typed: a bare NULL inside a transform (`CASE NULL WHEN 1 …`) would be typed as
        // text and fail to compare.
        return Ok(match &slot.cast {
            Some(ty) => format!("CAST(NULL AS {ty})"),
            None => "NULL".into(),
        });
    }
    if alone {
        return Ok(slot.text.clone());
    }
    Ok(match &slot.cast {
        Some(ty) => format!("({})::{ty}", slot.text),
        None => format!("({})", slot.text),
    })
}

/// Column `name`'s default expression, cast to its type, as a value to
/// write in its place; `None` when it has no plain default (none, identity or
/// generated).
pub(crate) fn written_default(
    catalog: &Catalog,
    schema: &str,
    table: &str,
    name: &str,
) -> Option<String> {
    let expr = catalog.default_expr(schema, table, name)?;
    let value = format!("({expr})");
    let column = catalog.table(schema, table)?.column(name);
    Some(match column.map(|c| c.type_without_typmod()) {
        Some(ty) => format!("CAST({value} AS {ty})"),
        None => value,
    })
}

/// Whether `value` is computed from slots only, and every one of them is `DEFAULT`
/// (`is_default(n)`): a new column replacing dropped old ones then takes its own
/// default, which `plan --phase contract` carried over from the old columns.
pub(crate) fn from_defaults_only(value: &[Piece], is_default: impl Fn(usize) -> bool) -> bool {
    let mut slots = value.iter().filter_map(|p| match p {
        Piece::Slot(n) => Some(*n),
        Piece::Text(_) => None,
    });
    let first = slots.next();
    first.is_some() && first.into_iter().chain(slots).all(is_default)
}

/// [`inline_slot`] for a mirror column: a `DEFAULT` written for the client's column is
/// rendered as that column's default value (NULL when it has none) or refused, never as
/// `DEFAULT`, which would take the *mirror* column's own default and leave the two shapes
/// disagreeing.
///
/// # Errors
/// `DEFAULT` for a client column that has a default.
pub(crate) fn mirror_slot(
    slot: &SlotText,
    alone: bool,
    rule: Option<&Rule>,
) -> Result<String, Refuse> {
    inline_slot(slot, alone && !slot.default, rule)
}

#[cfg(test)]
mod tests;
