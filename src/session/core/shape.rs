//! The result shape a client was shown for each prepared statement, and the
//! check that a statement prepared again under new rules still has it.
//!
//! Postgres refuses to run a cached plan whose result columns changed
//! (`0A000 cached plan must not change result type`), and drivers that cache
//! row descriptions (asyncpg, pgx, pgjdbc, Npgsql) prepare the statement again
//! when they see that error. pgshim's own re-prepare after a rules change must
//! keep that promise: if the client described the statement, pgshim describes
//! the new one before letting the client's Bind through, and fails the Bind
//! the way Postgres would when the columns differ.
use std::collections::VecDeque;

use bytes::Bytes;

use crate::protocol::backend::{NO_DATA_TAG, PARAMETER_DESCRIPTION_TAG, ROW_DESCRIPTION_TAG};
use crate::protocol::header::HEADER_LEN;
use crate::protocol::{ERROR_RESPONSE_TAG, READY_FOR_QUERY_TAG};

/// The client's Describe messages waiting for their replies.
///
/// A Describe of a statement is answered by a ParameterDescription and then a
/// RowDescription or NoData, a Describe of a portal by the second only, in the
/// order sent; that is the shape the client was shown. A portal's shape is
/// its statement's (pgjdbc describes portals, not statements), so the
/// statement each portal was bound to is remembered while its shape is
/// unknown.
#[derive(Debug, Default)]
pub(crate) struct Describes {
    waiting: VecDeque<(u64, Described)>,
    /// The statement whose ParameterDescription just arrived.
    answering: Option<Bytes>,
    /// Portal -> the named statement it was bound to, for statements whose
    /// shape pgshim does not know yet; a few at most (drivers bind the
    /// unnamed portal).
    portals: Vec<(Bytes, Bytes)>,
}

/// What a Describe asked about.
#[derive(Debug)]
enum Described {
    /// A statement, by name.
    Statement(Bytes),
    /// A portal, bound to this statement when its shape is wanted. Every
    /// portal Describe is noted, since the replies are placed by order.
    Portal(Option<Bytes>),
}

/// Portals remembered at most.
const MAX_PORTALS: usize = 8;

// === impl Describes ===

impl Describes {
    /// Notes a Describe of statement `name` sent in pipeline `pipeline`.
    pub(crate) fn expect(&mut self, pipeline: u64, name: Bytes) {
        self.waiting
            .push_back((pipeline, Described::Statement(name)));
    }

    /// Notes a Describe of portal `portal` sent in pipeline `pipeline`; its
    /// answer counts when the portal is bound to a statement whose shape is
    /// wanted (see [`Describes::bound`]).
    pub(crate) fn expect_portal(&mut self, pipeline: u64, portal: &[u8]) {
        let statement = self
            .portals
            .iter()
            .find(|(p, _)| p == portal)
            .map(|(_, s)| s.clone());
        self.waiting
            .push_back((pipeline, Described::Portal(statement)));
    }

    /// Notes a Bind of `portal` to `statement`, whose shape is wanted when
    /// `wanted`.
    pub(crate) fn bound(&mut self, portal: &[u8], statement: &[u8], wanted: bool) {
        self.portals.retain(|(p, _)| p != portal);
        if wanted && self.portals.len() < MAX_PORTALS {
            let entry = (
                Bytes::copy_from_slice(portal),
                Bytes::copy_from_slice(statement),
            );
            self.portals.push(entry);
        }
    }

    /// True while replies to a Describe are due.
    pub(crate) fn any(&self) -> bool {
        !self.waiting.is_empty() || self.answering.is_some()
    }

    /// Notes a ParameterDescription, RowDescription or NoData in pipeline
    /// `pipeline`.
    ///
    /// # Returns
    /// The statement and the description it was shown, when `msg` completes
    /// the answer to one of the client's Describes.
    pub(crate) fn on_server(&mut self, pipeline: u64, msg: &[u8]) -> Option<(Bytes, Bytes)> {
        match msg.first()? {
            &PARAMETER_DESCRIPTION_TAG => {
                let at = self
                    .waiting
                    .iter()
                    .position(|(p, d)| *p == pipeline && matches!(d, Described::Statement(_)))?;
                // Earlier entries of this pipeline were skipped by an error.
                let (_, Described::Statement(name)) = self.waiting.drain(..=at).next_back()? else {
                    return None;
                };
                self.answering = Some(name);
                None
            }
            &ROW_DESCRIPTION_TAG | &NO_DATA_TAG => {
                if let Some(name) = self.answering.take() {
                    return Some((name, Bytes::copy_from_slice(msg)));
                }
                match self.waiting.front() {
                    Some((p, Described::Portal(_))) if *p == pipeline => {}
                    _ => return None,
                }
                let (_, Described::Portal(Some(statement))) = self.waiting.pop_front()? else {
                    return None;
                };
                self.portals.retain(|(_, s)| *s != statement);
                Some((statement, Bytes::copy_from_slice(msg)))
            }
            _ => None,
        }
    }

    /// A Bind went by unread: which statement each portal is bound to is
    /// no longer known.
    pub(crate) fn forget_portals(&mut self) {
        self.portals.clear();
    }

    /// The pipeline ended: Describes it did not answer never will be.
    pub(crate) fn end_pipeline(&mut self, pipeline: u64) {
        self.waiting.retain(|(p, _)| *p > pipeline);
        self.answering = None;
    }
}

/// What the check of a re-prepared statement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No answer yet.
    Pending,
    /// The new statement has the shape the client was shown.
    Same,
    /// The shape differs: the client's Bind fails.
    Changed,
    /// Postgres skipped the re-prepare (an error earlier in the pipeline, or
    /// in the re-prepare itself): the client's Bind is skipped as well.
    Skipped,
}

/// Where the replies to pgshim's hidden Describe stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the hidden ParseComplete.
    Parsing,
    /// Parsed; the ParameterDescription is next.
    Parsed,
    /// The RowDescription or NoData is next.
    Described,
    /// Done.
    Done,
}

/// One re-prepared statement whose new description is being checked.
#[derive(Debug)]
pub(crate) struct ShapeCheck {
    pipeline: u64,
    /// Position of the hidden Parse among the Parses of the pipeline.
    parse: u32,
    name: Bytes,
    /// The RowDescription or NoData the client was shown.
    shown: Bytes,
    /// The client's Bind, held until the verdict; `None` once it went on
    /// unchecked (no verdict in time), while the hidden replies are still due.
    held: Option<Bytes>,
    step: Step,
    verdict: Verdict,
}

// === impl ShapeCheck ===

impl ShapeCheck {
    /// A check of statement `name`, re-prepared in pipeline `pipeline` by
    /// its `parse`-th Parse.
    pub(crate) fn new(
        pipeline: u64,
        parse: u32,
        name: Bytes,
        shown: Bytes,
        held: Bytes,
    ) -> ShapeCheck {
        ShapeCheck {
            pipeline,
            parse,
            name,
            shown,
            held: Some(held),
            step: Step::Parsing,
            verdict: Verdict::Pending,
        }
    }

    /// True once the verdict is known.
    pub(crate) fn ready(&self) -> bool {
        self.verdict != Verdict::Pending
    }

    /// True while the hidden Describe's replies are due.
    pub(crate) fn describing(&self) -> bool {
        matches!(self.step, Step::Parsed | Step::Described)
    }

    /// A hidden Parse completed: the `parse`-th of pipeline `pipeline`.
    pub(crate) fn parsed(&mut self, pipeline: u64, parse: u32) {
        if pipeline == self.pipeline && parse == self.parse && self.step == Step::Parsing {
            self.step = Step::Parsed;
        }
    }

    /// Looks at a whole server message in pipeline `pipeline`.
    ///
    /// # Returns
    /// True when it answers the hidden Describe and must be swallowed.
    pub(crate) fn on_server(&mut self, pipeline: u64, msg: &[u8]) -> bool {
        if pipeline != self.pipeline || self.step == Step::Done {
            return false;
        }
        match (self.step, msg.first()) {
            (Step::Parsed, Some(&PARAMETER_DESCRIPTION_TAG)) => {
                self.step = Step::Described;
                true
            }
            (Step::Described, Some(&ROW_DESCRIPTION_TAG | &NO_DATA_TAG)) => {
                self.step = Step::Done;
                self.verdict = if same_shape(&self.shown, msg) {
                    Verdict::Same
                } else {
                    Verdict::Changed
                };
                true
            }
            (_, Some(&ERROR_RESPONSE_TAG | &READY_FOR_QUERY_TAG)) => {
                self.step = Step::Done;
                self.verdict = Verdict::Skipped;
                false
            }
            _ => false,
        }
    }

    /// The pipeline ended before the verdict.
    pub(crate) fn end_pipeline(&mut self, pipeline: u64) {
        if pipeline >= self.pipeline && !self.ready() {
            self.step = Step::Done;
            self.verdict = Verdict::Skipped;
        }
    }

    /// Takes the statement, the held message and the verdict.
    pub(crate) fn take(&mut self) -> (Bytes, Option<Bytes>, Verdict) {
        (self.name.clone(), self.held.take(), self.verdict)
    }

    /// True when the check has nothing left to do: the held message went on
    /// and no hidden reply is still due.
    pub(crate) fn finished(&self) -> bool {
        self.held.is_none() && self.ready()
    }
}

/// Whether two RowDescription/NoData messages describe the same result:
/// the same number of columns with the same types and type modifiers, as
/// Postgres compares them when it revalidates a cached plan.
pub(crate) fn same_shape(a: &[u8], b: &[u8]) -> bool {
    match (columns(a), columns(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// Type OID and modifier of each column of a RowDescription; empty for NoData.
fn columns(msg: &[u8]) -> Option<Vec<(u32, i32)>> {
    if msg.first() == Some(&NO_DATA_TAG) {
        return Some(Vec::new());
    }
    if msg.first() != Some(&ROW_DESCRIPTION_TAG) {
        return None;
    }
    let body = msg.get(HEADER_LEN..)?;
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(usize::from(count).min(1600));
    for _ in 0..count {
        let name_end = memchr::memchr(0, rest)?;
        // name, NUL, table OID (4), column number (2), then type OID (4),
        // type length (2), type modifier (4), format (2).
        let field = rest.get(name_end + 1..name_end + 1 + 18)?;
        let type_oid = u32::from_be_bytes(field[6..10].try_into().ok()?);
        let typmod = i32::from_be_bytes(field[12..16].try_into().ok()?);
        out.push((type_oid, typmod));
        rest = &rest[name_end + 1 + 18..];
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A RowDescription with one column per `(name, type OID, modifier)`.
    pub(crate) fn row_description(columns: &[(&str, u32, i32)]) -> Vec<u8> {
        let mut body = (columns.len() as u16).to_be_bytes().to_vec();
        for (name, oid, typmod) in columns {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&16384u32.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&typmod.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes());
        }
        let mut msg = vec![ROW_DESCRIPTION_TAG];
        msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        msg.extend(body);
        msg
    }

    #[test]
    fn shapes_compare_types_not_names() {
        let a = row_description(&[("id", 23, -1), ("name", 25, -1)]);
        let renamed = row_description(&[("id", 23, -1), ("full_name", 25, -1)]);
        let wider = row_description(&[("id", 23, -1), ("name", 25, -1), ("x", 25, -1)]);
        let retyped = row_description(&[("id", 20, -1), ("name", 25, -1)]);
        assert!(same_shape(&a, &renamed));
        assert!(!same_shape(&a, &wider));
        assert!(!same_shape(&a, &retyped));
        assert!(!same_shape(&a, &[NO_DATA_TAG, 0, 0, 0, 4]));
        assert!(same_shape(
            &[NO_DATA_TAG, 0, 0, 0, 4],
            &[NO_DATA_TAG, 0, 0, 0, 4]
        ));
    }

    #[test]
    fn truncated_descriptions_do_not_panic() {
        let a = row_description(&[("id", 23, -1)]);
        for cut in 0..a.len() {
            let _ = same_shape(&a[..cut], &a);
        }
    }

    #[test]
    fn a_portal_describe_gives_its_statement_s_shape() {
        let mut d = Describes::default();
        d.bound(b"", b"S_1", true);
        d.bound(b"p2", b"S_2", false);
        d.expect(1, Bytes::from_static(b"S_3"));
        d.expect_portal(1, b"");
        d.expect_portal(1, b"p2");
        let t = [PARAMETER_DESCRIPTION_TAG, 0, 0, 0, 6, 0, 0];
        let rows = row_description(&[("id", 23, -1)]);
        assert_eq!(d.on_server(1, &t), None);
        assert_eq!(
            d.on_server(1, &rows).map(|(n, _)| n),
            Some(Bytes::from_static(b"S_3"))
        );
        assert_eq!(
            d.on_server(1, &rows).map(|(n, _)| n),
            Some(Bytes::from_static(b"S_1"))
        );
        // p2's statement is not wanted: its answer is nobody's.
        assert_eq!(d.on_server(1, &rows), None);
        assert!(!d.any());
        // An answer to a portal nobody wanted keeps its place in line.
        d.bound(b"", b"S_4", true);
        d.expect_portal(2, b"p9");
        d.expect_portal(2, b"");
        assert_eq!(d.on_server(2, &rows), None);
        assert_eq!(
            d.on_server(2, &rows).map(|(n, _)| n),
            Some(Bytes::from_static(b"S_4"))
        );
    }

    #[test]
    fn describe_replies_are_placed_by_parameter_description() {
        let mut d = Describes::default();
        d.expect(1, Bytes::from_static(b""));
        d.expect(1, Bytes::from_static(b"s1"));
        let t = [PARAMETER_DESCRIPTION_TAG, 0, 0, 0, 6, 0, 0];
        let rows = row_description(&[("id", 23, -1)]);
        assert_eq!(d.on_server(1, &t), None);
        assert_eq!(
            d.on_server(1, &rows).map(|(n, _)| n),
            Some(Bytes::from_static(b""))
        );
        assert_eq!(d.on_server(1, &t), None);
        assert_eq!(
            d.on_server(1, &rows),
            Some((Bytes::from_static(b"s1"), Bytes::from(rows.clone())))
        );
        assert!(!d.any());
    }
}
