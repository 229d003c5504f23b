//! Edits to the original text, and splicing them in.
//!
//! The rewriter never regenerates a statement: it records replacements of byte ranges and
//! applies them at the end, so comments, spacing, literals and casts stay as the client sent
//! them. A larger construct that must carry an already-edited part (a `VALUES` item whose
//! column references were rewritten) takes that part's rendered text with
//! [`Edits::take_rendered`], which folds the inner edits into the outer one.

use super::Refuse;

#[derive(Debug, Clone)]
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// Pending edits against one text.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    list: Vec<Edit>,
}

fn conflicts(a: &Edit, start: usize, end: usize) -> bool {
    let overlap = a.start.max(start) < a.end.min(end);
    let insert_inside = |p: usize, s: usize, e: usize| s < p && p < e;
    overlap
        || (start == end && insert_inside(start, a.start, a.end))
        || (a.start == a.end && insert_inside(a.start, start, end))
}

// === impl Edits ===

impl Edits {
    /// Whether nothing was edited.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Replace bytes `start..end` with `text` (an insertion when `start == end`).
    ///
    /// # Errors
    /// When the range overlaps an earlier edit: two rewrites disagree about the text.
    pub fn replace(
        &mut self,
        start: usize,
        end: usize,
        text: impl Into<String>,
    ) -> Result<(), Refuse> {
        if self.list.iter().any(|e| conflicts(e, start, end)) {
            return Err(Refuse::new("overlapping rewrites"));
        }
        self.list.push(Edit {
            start,
            end,
            text: text.into(),
        });
        Ok(())
    }

    /// Insert `text` at byte `at`, after any insertion already there.
    ///
    /// # Errors
    /// As [`Edits::replace`].
    pub fn insert(&mut self, at: usize, text: impl Into<String>) -> Result<(), Refuse> {
        self.replace(at, at, text)
    }

    /// The text of `src[start..end]` with the edits inside it applied; those edits are
    /// removed, so the caller can replace the whole range.
    ///
    /// # Errors
    /// When an edit straddles the range boundary.
    pub fn take_rendered(&mut self, src: &str, start: usize, end: usize) -> Result<String, Refuse> {
        let inside = |e: &Edit| {
            e.start >= start
                && e.end <= end
                && !(e.start == e.end && (e.start == start || e.start == end))
        };
        let (taken, kept): (Vec<Edit>, Vec<Edit>) = self.list.drain(..).partition(inside);
        self.list = kept;
        if self.list.iter().any(|e| conflicts(e, start, end)) {
            return Err(Refuse::new("overlapping rewrites"));
        }
        splice(src, start, end, taken)
    }

    /// The text of `src[start..end]` with the edits inside it applied, leaving them in place.
    ///
    /// # Errors
    /// When an edit does not fall on character boundaries.
    pub fn peek_rendered(&self, src: &str, start: usize, end: usize) -> Result<String, Refuse> {
        let inside: Vec<Edit> = self
            .list
            .iter()
            .filter(|e| {
                e.start >= start
                    && e.end <= end
                    && !(e.start == e.end && (e.start == start || e.start == end))
            })
            .cloned()
            .collect();
        splice(src, start, end, inside)
    }

    /// Apply all edits to `src`.
    ///
    /// # Errors
    /// When an edit does not fall on character boundaries (a bug, reported not panicked).
    pub fn apply(self, src: &str) -> Result<String, Refuse> {
        splice(src, 0, src.len(), self.list)
    }
}

fn splice(src: &str, start: usize, end: usize, mut edits: Vec<Edit>) -> Result<String, Refuse> {
    // Stable sort: insertions at one point stay in the order they were recorded, and come
    // before a replacement starting at the same point.
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(end.saturating_sub(start) + 64);
    let mut at = start;
    for e in edits {
        let piece = src
            .get(at..e.start)
            .ok_or_else(|| Refuse::new("edit outside character boundaries"))?;
        out.push_str(piece);
        out.push_str(&e.text);
        at = e.end;
    }
    out.push_str(
        src.get(at..end)
            .ok_or_else(|| Refuse::new("edit outside character boundaries"))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertions_keep_their_order_and_precede_replacements() {
        let mut e = Edits::default();
        e.insert(2, "<").unwrap();
        e.replace(2, 4, "XY").unwrap();
        e.insert(2, "[").unwrap();
        assert_eq!(e.apply("abcdef").unwrap(), "ab<[XYef");
    }

    #[test]
    fn overlapping_replacements_are_refused() {
        let mut e = Edits::default();
        e.replace(1, 4, "x").unwrap();
        assert!(e.replace(3, 5, "y").is_err());
        assert!(e.insert(2, "y").is_err());
        assert!(e.insert(4, "y").is_ok());
    }

    #[test]
    fn take_rendered_folds_inner_edits() {
        let mut e = Edits::default();
        e.replace(1, 2, "B").unwrap();
        e.insert(0, "<").unwrap();
        let inner = e.take_rendered("abcd", 0, 3).unwrap();
        assert_eq!(inner, "aBc");
        e.replace(0, 3, format!("({inner})")).unwrap();
        assert_eq!(e.apply("abcd").unwrap(), "<(aBc)d");
    }
}
