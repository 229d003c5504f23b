//! The one multi-column assignment of an `UPDATE` (or `ON CONFLICT DO UPDATE`) that
//! evaluates once per row every value a `SET` list must not repeat, and the sub-select of
//! a tuple assignment, and sets every column computed from them:
//! `(a, b, mirror) = (SELECT g.c1, s.c1, f(g.c1, s.c1) FROM (SELECT <expr>, t.ctid)
//! g(c1, pgshim_ctid) LEFT JOIN (<sub-select>) s(c1) ON true WHERE g.pgshim_ctid IS NOT NULL)`.
//!
//! The `ctid` correlation keeps Postgres from hoisting the evaluation into an init plan
//! that would run once per statement (see the `update` module); the `LEFT JOIN` keeps
//! the one row a sub-select that finds nothing gives (every target NULL), as Postgres does.

use super::ident::quote;
use super::rules::Rule;
use super::transform::Piece;
use super::write::{mirror_slot, render, Out, Placement, SlotText};
use super::Refuse;

/// One column a `SET` list assigns, and its value.
pub(crate) struct Slot {
    pub column: String,
    /// Index of the assignment it came from.
    pub assignment: usize,
    pub text: SlotText,
}

/// `SET (a, b) = (SELECT …)` on a mapped table: the sub-select's text (read
/// rewrites applied) and the slots of its targets, which read `alias.cN`.
pub(crate) struct SubSelect {
    pub text: String,
    pub alias: String,
    pub slots: Vec<usize>,
}

/// The one multi-column assignment of an `UPDATE` that evaluates, once per
/// row, every value that must not be repeated (`once`) and the sub-select
/// source of a tuple assignment, and sets every column computed from them.
pub(crate) struct Group<'a> {
    pub once: Vec<usize>,
    pub sub_select: Option<&'a SubSelect>,
    pub alias: &'a str,
    pub qual: &'a str,
    pub rule: Option<&'a Rule>,
}

impl Group<'_> {
    /// Moves every output that uses a grouped slot into the group and renders it.
    ///
    /// # Returns
    /// The slot whose assignment item carries the group, and the group's text.
    pub fn text(
        &self,
        plan: &mut super::write::WritePlan,
        slots: &[Slot],
    ) -> Result<(usize, String), Refuse> {
        let mut members_of: Vec<usize> = self.once.clone();
        if let Some(sub) = self.sub_select {
            members_of.extend(&sub.slots);
        }
        // A value that must be evaluated once and feeds a grouped output joins the group.
        loop {
            let before = members_of.len();
            let outputs = grouped_outputs(plan, &members_of);
            for o in &outputs {
                for p in &o.value {
                    if let Piece::Slot(m) = p {
                        let s = &slots[*m];
                        if !(members_of.contains(m) || s.text.repeatable || s.text.default) {
                            members_of.push(*m);
                            self.once_ok(slots, *m)?;
                        }
                    }
                }
            }
            if members_of.len() == before {
                break;
            }
        }
        let evaluated: Vec<usize> = members_of
            .iter()
            .copied()
            .filter(|m| !self.sub_select.is_some_and(|s| s.slots.contains(m)))
            .collect();
        let uses_group = |o: &Out| {
            o.value
                .iter()
                .any(|p| matches!(p, Piece::Slot(m) if members_of.contains(m)))
        };
        let mut members: Vec<Out> = Vec::new();
        for &n in &members_of {
            if plan.placements[n] == Placement::Keep {
                members.push(Out {
                    column: slots[n].column.clone(),
                    value: vec![Piece::Slot(n)],
                });
                plan.placements[n] = Placement::Replace(Vec::new());
            }
        }
        for p in plan.placements.iter_mut() {
            if let Placement::Replace(outs) = p {
                members.extend(outs.iter().filter(|o| uses_group(o)).cloned());
                outs.retain(|o| !uses_group(o));
            }
        }
        members.extend(plan.appended.iter().filter(|o| uses_group(o)).cloned());
        plan.appended.retain(|o| !uses_group(o));
        let alias = self.alias;
        let mut slot = |m: usize, alone: bool| -> Result<String, Refuse> {
            if let Some(i) = evaluated.iter().position(|&e| e == m) {
                return Ok(format!("{alias}.c{}", i + 1));
            }
            let s = slots.get(m).ok_or_else(|| Refuse::new("slot"))?;
            mirror_slot(&s.text, alone, self.rule)
        };
        let columns: Vec<String> = members
            .iter()
            .map(|o| quote(&o.column).into_owned())
            .collect();
        let values = members
            .iter()
            .map(|o| render(&o.value, &mut slot))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sources = Vec::new();
        let mut names = Vec::new();
        for (i, &m) in evaluated.iter().enumerate() {
            let s = &slots[m].text;
            sources.push(match &s.cast {
                Some(ty) => format!("({})::{ty}", s.text),
                None => s.text.clone(),
            });
            names.push(format!("c{}", i + 1));
        }
        sources.push(format!("{}.ctid", self.qual));
        names.push("pgshim_ctid".into());
        let mut from = format!(
            "(SELECT {}) {alias}({})",
            sources.join(", "),
            names.join(", ")
        );
        if let Some(sub) = self.sub_select {
            let width = sub.slots.len();
            let cols: Vec<String> = (1..=width).map(|i| format!("c{i}")).collect();
            from += &format!(
                " LEFT JOIN {} {}({}) ON true",
                sub.text,
                sub.alias,
                cols.join(", ")
            );
        }
        let anchor = members_of
            .iter()
            .copied()
            .min()
            .ok_or_else(|| Refuse::new("empty group"))?;
        Ok((
            anchor,
            format!(
                "({}) = (SELECT {} FROM {from} WHERE {alias}.pgshim_ctid IS NOT NULL)",
                columns.join(", "),
                values.join(", ")
            ),
        ))
    }

    /// A value that must be evaluated once can join the group unless it is
    /// one of several values of a tuple assignment.
    fn once_ok(&self, slots: &[Slot], m: usize) -> Result<(), Refuse> {
        let in_tuple = slots
            .iter()
            .filter(|s| s.assignment == slots[m].assignment)
            .count()
            > 1;
        if in_tuple {
            let reason = "a value in SET (...) = (...) that must be evaluated once; use separate assignments";
            return Err(self
                .rule
                .map_or_else(|| Refuse::new(reason), |r| Refuse::rule(r, reason)));
        }
        Ok(())
    }
}

/// Every output of `plan` that uses one of `group`'s slots.
fn grouped_outputs(plan: &super::write::WritePlan, group: &[usize]) -> Vec<Out> {
    let uses = |o: &&Out| {
        o.value
            .iter()
            .any(|p| matches!(p, Piece::Slot(m) if group.contains(m)))
    };
    let mut out: Vec<Out> = Vec::new();
    for p in &plan.placements {
        if let Placement::Replace(outs) = p {
            out.extend(outs.iter().filter(uses).cloned());
        }
    }
    out.extend(plan.appended.iter().filter(uses).cloned());
    out
}
