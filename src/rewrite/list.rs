//! Editing comma-separated lists in place: column lists, `VALUES` rows, `SET` lists.
//!
//! Kept items are not touched at all; replaced items get new text; removed items disappear
//! together with one neighbouring comma; new items are appended after the last item.

use super::edits::Edits;
use super::Refuse;

/// What to do with one list item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemEdit {
    Keep,
    Replace(String),
    Remove,
}

/// Apply `edits` (one per item of `items`, byte ranges) and append `appended`.
///
/// # Errors
/// When the list would become empty, or edits overlap.
pub(crate) fn edit_list(
    all: &mut Edits,
    src: &str,
    items: &[(usize, usize)],
    edits: &[ItemEdit],
    appended: &[String],
) -> Result<(), Refuse> {
    let (Some(&(first_start, _)), Some(&(_, last_end))) = (items.first(), items.last()) else {
        return Err(Refuse::new("empty list"));
    };
    let Some(kept) = edits.iter().position(|e| *e != ItemEdit::Remove) else {
        if appended.is_empty() {
            return Err(Refuse::new("rewrite would leave an empty list"));
        }
        all.take_rendered(src, first_start, last_end)?;
        return all.replace(first_start, last_end, appended.join(", "));
    };
    for (i, edit) in edits.iter().enumerate() {
        let (start, end) = items[i];
        match edit {
            ItemEdit::Keep => {}
            ItemEdit::Replace(text) => {
                all.take_rendered(src, start, end)?;
                all.replace(start, end, text.clone())?;
            }
            ItemEdit::Remove => {
                let (s, e) = if i < kept {
                    (start, items[i + 1].0)
                } else {
                    (items[i - 1].1, end)
                };
                all.take_rendered(src, s, e)?;
                all.replace(s, e, "")?;
            }
        }
    }
    if !appended.is_empty() {
        all.insert(last_end, format!(", {}", appended.join(", ")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, items: &[(usize, usize)], edits: &[ItemEdit], appended: &[&str]) -> String {
        let mut all = Edits::default();
        let appended: Vec<String> = appended.iter().map(|s| (*s).to_owned()).collect();
        edit_list(&mut all, src, items, edits, &appended).unwrap();
        all.apply(src).unwrap()
    }

    const SRC: &str = "(a, b, c)";
    const ITEMS: [(usize, usize); 3] = [(1, 2), (4, 5), (7, 8)];

    #[test]
    fn remove_first_middle_last() {
        use ItemEdit::*;
        assert_eq!(run(SRC, &ITEMS, &[Remove, Keep, Keep], &[]), "(b, c)");
        assert_eq!(run(SRC, &ITEMS, &[Keep, Remove, Keep], &[]), "(a, c)");
        assert_eq!(run(SRC, &ITEMS, &[Keep, Keep, Remove], &[]), "(a, b)");
        assert_eq!(run(SRC, &ITEMS, &[Remove, Remove, Keep], &[]), "(c)");
        assert_eq!(run(SRC, &ITEMS, &[Keep, Remove, Remove], &["x"]), "(a, x)");
    }

    #[test]
    fn replace_and_append() {
        use ItemEdit::*;
        assert_eq!(
            run(SRC, &ITEMS, &[Keep, Replace("x, y".into()), Keep], &["z"]),
            "(a, x, y, c, z)"
        );
        assert_eq!(run(SRC, &ITEMS, &[Remove, Remove, Remove], &["z"]), "(z)");
    }
}
