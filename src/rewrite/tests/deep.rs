//! Deep and long statements: refused as too deep, never a stack overflow, on a thread with
//! a small stack like a tokio worker's.

use super::support::{catalog, rules};
use crate::rewrite::{rewrite, Outcome, RefusalKind};

/// Runs the rewrite of `sql` in migrate on a thread with a 1 MiB stack.
fn on_small_stack(sql: String) -> Result<Outcome, crate::rewrite::RewriteError> {
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || rewrite(&sql, &rules("migrate"), &catalog()))
        .unwrap()
        .join()
        .unwrap()
}

fn chain(op: &str, term: &str, n: usize) -> String {
    let terms = vec![term; n];
    format!("SELECT name FROM users WHERE {}", terms.join(op))
}

#[test]
fn chains_below_the_bound_are_rewritten_on_a_small_stack() {
    for (op, term) in [("+", "id"), (" AND ", "name = 'a'"), ("||", "name")] {
        let out = on_small_stack(chain(op, term, 600)).unwrap();
        assert!(matches!(out, Outcome::Rewritten(_)), "{op}");
    }
    let nested = format!(
        "SELECT name FROM users WHERE id = {}1{}",
        "(SELECT ".repeat(50),
        ")".repeat(50)
    );
    assert!(matches!(on_small_stack(nested), Ok(Outcome::Rewritten(_))));
}

#[test]
fn every_deep_form_is_refused_as_too_deep() {
    let n = 35_000;
    let deep = [
        chain("+", "1", n),
        chain(" AND ", "true", n),
        chain(" OR ", "name = 'a'", n),
        chain("||", "'a'", n),
        chain("::", "text", n),
        format!(
            "SELECT name FROM users {}",
            " UNION SELECT name FROM users".repeat(n)
        ),
        format!(
            "SELECT name FROM users WHERE id = {}1{}",
            "(".repeat(n),
            ")".repeat(n)
        ),
        format!(
            "SELECT name FROM users WHERE id = {} 1 {}",
            "CASE WHEN true THEN ".repeat(n),
            "END ".repeat(n)
        ),
        format!(
            "SELECT name FROM users WHERE id = {}1{}",
            "(SELECT ".repeat(n),
            ")".repeat(n)
        ),
        format!("SELECT name FROM users WHERE {}true", "NOT ".repeat(n)),
        format!("SELECT name FROM users WHERE id = {}1", "- ".repeat(n)),
        format!("/* users */ SELECT {}", vec!["1"; n].join("+")),
    ];
    for sql in deep {
        let e = on_small_stack(sql.clone()).unwrap_err();
        assert_eq!(e.kind, RefusalKind::TooDeep, "{}: {e}", &sql[..60]);
        assert!(e.to_string().starts_with("statement too deep to rewrite"));
    }
}

#[test]
fn a_million_terms_are_refused_quickly() {
    let sql = chain("+", "1", 1_000_000);
    let e = on_small_stack(sql).unwrap_err();
    assert_eq!(e.kind, RefusalKind::TooDeep);
}

#[test]
fn long_in_lists_are_rewritten() {
    let list: Vec<String> = (0..50_000).map(|i| i.to_string()).collect();
    let sql = format!("SELECT name FROM users WHERE id IN ({})", list.join(", "));
    assert!(matches!(on_small_stack(sql), Ok(Outcome::Rewritten(_))));
}

#[test]
fn the_deepest_accepted_statement_fits_the_stack() {
    let sql = format!(
        "SELECT name FROM users WHERE id = {}{}{}",
        "(SELECT ".repeat(63),
        vec!["id"; 1850].join("+"),
        ")".repeat(63)
    );
    assert!(matches!(on_small_stack(sql), Ok(Outcome::Rewritten(_))));
}
