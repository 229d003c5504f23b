//! Error positions in the client's text, not pgshim's rewrite.
//!
//! Postgres reports where in the statement an error is (`P`, in characters
//! from 1), and psql, pgjdbc and others show the client's own text at that
//! place. For a statement pgshim rewrote, the position counts in the rewrite.
//! The rewrite is the client's text with some ranges replaced, so the two
//! texts are aligned (a shortest edit script over characters) and the
//! position is carried back: a character the client wrote maps to itself,
//! one pgshim wrote maps to the start of the text it replaced.
//!
//! Errors are few, so this runs only for an error with a position, against
//! the texts kept for the statements of the pipelines in flight.
use std::collections::VecDeque;

use bytes::Bytes;

/// Beyond this many differing characters the alignment stops refining: the
/// part between the common prefix and suffix maps to its start.
const MAX_EDITS: usize = 512;

/// Which client message a kept text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The pipeline's simple Query.
    Query,
    /// The n-th Parse of the pipeline (from 0).
    Parse(u32),
}

/// A statement pgshim rewrote, kept until its pipeline ends.
#[derive(Debug)]
struct Kept {
    pipeline: u64,
    sent: Sent,
    original: Bytes,
    rewritten: Bytes,
}

/// The rewritten statements of the pipelines in flight, and how far each
/// pipeline's Parses got.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    kept: VecDeque<Kept>,
    /// Pipeline and number of the client's Parses sent in it.
    parses_sent: (u64, u32),
    /// Pipeline and number of the client's Parses answered in it.
    parses_done: (u64, u32),
}

// === impl Positions ===

impl Positions {
    /// Notes a client Parse sent in `pipeline`; with `rewritten`, pgshim sent
    /// that text for `original`.
    pub(crate) fn parse_sent(&mut self, pipeline: u64, rewrite: Option<(&[u8], &[u8])>) {
        let n = bump(&mut self.parses_sent, pipeline);
        if let Some((original, rewritten)) = rewrite {
            self.keep(pipeline, Sent::Parse(n), original, rewritten);
        }
    }

    /// Notes a simple Query of `pipeline` sent as `rewritten`.
    pub(crate) fn query_sent(&mut self, pipeline: u64, original: &[u8], rewritten: &[u8]) {
        self.keep(pipeline, Sent::Query, original, rewritten);
    }

    /// Notes a ParseComplete for the client in `pipeline`.
    pub(crate) fn parse_done(&mut self, pipeline: u64) {
        bump(&mut self.parses_done, pipeline);
    }

    fn keep(&mut self, pipeline: u64, sent: Sent, original: &[u8], rewritten: &[u8]) {
        self.kept.push_back(Kept {
            pipeline,
            sent,
            original: Bytes::copy_from_slice(original),
            rewritten: Bytes::copy_from_slice(rewritten),
        });
    }

    /// Whether an error in `pipeline` may need its position carried back.
    pub(crate) fn any(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Where `position` (in characters from 1) of an error in `pipeline` is
    /// in the client's text, when the error is about a statement pgshim
    /// rewrote: the pipeline's Query, or the Parse after the ones answered.
    pub(crate) fn original(&self, pipeline: u64, position: usize) -> Option<usize> {
        let done = match self.parses_done {
            (p, n) if p == pipeline => n,
            _ => 0,
        };
        let kept = self.kept.iter().find(|k| {
            k.pipeline == pipeline && (k.sent == Sent::Query || k.sent == Sent::Parse(done))
        })?;
        let original = std::str::from_utf8(&kept.original).ok()?;
        let rewritten = std::str::from_utf8(&kept.rewritten).ok()?;
        Some(original_position(original, rewritten, position))
    }

    /// The pipeline ended.
    pub(crate) fn end_pipeline(&mut self, pipeline: u64) {
        self.kept.retain(|k| k.pipeline > pipeline);
    }
}

/// Adds one to the count of `pipeline` in `counter`, starting it afresh for
/// a new pipeline.
///
/// # Returns
/// The count before.
fn bump(counter: &mut (u64, u32), pipeline: u64) -> u32 {
    if counter.0 != pipeline {
        *counter = (pipeline, 0);
    }
    counter.1 += 1;
    counter.1 - 1
}

/// Where character `position` (from 1) of `rewritten` came from in
/// `original` (from 1).
pub(crate) fn original_position(original: &str, rewritten: &str, position: usize) -> usize {
    let a: Vec<char> = original.chars().collect();
    let b: Vec<char> = rewritten.chars().collect();
    let at = position.saturating_sub(1).min(b.len());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if at < prefix {
        return at + 1;
    }
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    if at >= b.len() - suffix {
        return at + 1 + a.len() - b.len();
    }
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    prefix + 1 + middle_position(a_mid, b_mid, at - prefix).unwrap_or(0)
}

/// [`original_position`] inside the differing middle parts: follows a
/// shortest edit script (Myers' greedy algorithm) from `a` to `b`. `None`
/// when they differ in more than [`MAX_EDITS`] characters.
fn middle_position(a: &[char], b: &[char], at: usize) -> Option<usize> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let max = (a.len() + b.len()).min(MAX_EDITS) as isize;
    let offset = max + 1;
    let mut v = vec![0isize; 2 * offset as usize + 1];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut end = None;
    'outer: for d in 0..=max {
        trace.push(v.clone());
        for k in (-d..=d).step_by(2) {
            let i = (k + offset) as usize;
            let mut x = if k == -d || (k != d && v[i - 1] < v[i + 1]) {
                v[i + 1]
            } else {
                v[i - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[i] = x;
            if x >= n && y >= m {
                end = Some(d);
                break 'outer;
            }
        }
    }
    let end = end?;
    // Walk back, recording for each character of `b` its place in `a`.
    let mut from = vec![0usize; b.len()];
    let (mut x, mut y) = (n, m);
    for d in (1..=end).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let i = (k + offset) as usize;
        let down = k == -d || (k != d && v[i - 1] < v[i + 1]);
        let prev_k = if down { k + 1 } else { k - 1 };
        let prev_x = v[(prev_k + offset) as usize];
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            from[y as usize] = x as usize;
        }
        if down {
            // An inserted character of `b`: it stands where `a` is now.
            y -= 1;
            from[y as usize] = x as usize;
        }
        x = prev_x;
        y = prev_y;
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        from[y as usize] = x as usize;
    }
    from.get(at).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The character of `rewritten` at `needle`'s `nth` occurrence, mapped back.
    fn back(original: &str, rewritten: &str, needle: &str, nth: usize) -> usize {
        let at = rewritten.match_indices(needle).nth(nth).unwrap().0;
        original_position(original, rewritten, rewritten[..at].chars().count() + 1)
    }

    #[test]
    fn kept_characters_map_to_themselves() {
        let o = "SELECT id FROM users WHERE email = 5 AND id > 'x'";
        let r = "SELECT id FROM users WHERE (email_address = 5 OR (email_address IS NULL AND email = 5)) AND id > 'x'";
        // Before and after the rewritten predicate: exact.
        assert_eq!(back(o, r, "id >", 0), o.find("id >").unwrap() + 1);
        assert_eq!(back(o, r, "users", 0), o.find("users").unwrap() + 1);
        // Inside it: within the predicate the client wrote.
        let p = back(o, r, "= 5", 0);
        let predicate = o.find("email").unwrap() + 1;
        assert!(
            (predicate..=predicate + "email = 5".len()).contains(&p),
            "{p}"
        );
    }

    #[test]
    fn characters_pgshim_wrote_map_to_what_they_replace() {
        let o = "UPDATE users SET name = 'x' WHERE id = 1";
        let r = "UPDATE users SET name = 'x', full_name = 'x' WHERE id = 1";
        assert_eq!(back(o, r, "full_name", 0), o.find(" WHERE").unwrap() + 1);
        assert_eq!(back(o, r, "WHERE", 0), o.find("WHERE").unwrap() + 1);
    }

    #[test]
    fn multibyte_text_counts_characters() {
        let o = "SELECT 'é' , name FROM users WHERE name = 1";
        let r = "SELECT 'é' , full_name AS name FROM users WHERE full_name = 1";
        assert_eq!(
            back(o, r, "FROM", 0),
            o[..o.find("FROM").unwrap()].chars().count() + 1
        );
        assert_eq!(
            back(o, r, "= 1", 0),
            o[..o.find("= 1").unwrap()].chars().count() + 1
        );
    }

    #[test]
    fn far_apart_texts_and_out_of_range_positions_do_not_panic() {
        let o = "x".repeat(2000);
        let r = "y".repeat(3000);
        assert_eq!(original_position(&o, &r, 1500), 1);
        assert_eq!(original_position("ab", "abc", 99), 3);
        assert_eq!(original_position("", "", 0), 1);
    }

    #[test]
    fn the_failing_statement_of_a_pipeline_is_found() {
        let mut p = Positions::default();
        p.parse_sent(4, None);
        p.parse_sent(4, Some((b"SELECT name", b"SELECT full_name AS name")));
        // The first Parse failed: not a statement pgshim rewrote.
        assert_eq!(p.original(4, 8), None);
        p.parse_done(4);
        assert_eq!(p.original(4, 8), Some(8));
        p.end_pipeline(4);
        assert!(!p.any());
    }
}
