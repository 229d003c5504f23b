//! The state one rewrite carries through the walk of a statement: the text
//! and rules, the edits made so far, the scopes of relations in force, CTE
//! names, and how unqualified names resolve. The walking modules (`read`,
//! `from`, `items`, `insert`, `update`, `copy`, `function`, `predicate`)
//! all extend [`Ctx`]; none of them owns it.
use sqlparser::ast::{Expr, Ident, ObjectName, ObjectNamePart, Query, TableFactor};

use super::catalog::Catalog;
use super::edits::Edits;
use super::rules::RuleSet;
use super::scope::Scope;
use super::source::Source;

/// Output column labels of a query, when known.
pub(crate) type Labels = Option<Vec<String>>;

/// State of one rewrite.
pub(crate) struct Ctx<'a> {
    pub src: &'a Source<'a>,
    pub rules: &'a RuleSet,
    pub catalog: &'a Catalog,
    pub edits: Edits,
    pub scopes: Vec<Scope>,
    /// CTE names visible at this point, innermost last, with their columns when known.
    pub(crate) ctes: Vec<(String, Labels)>,
    /// Counter for generated relation names (`pgshim_s1`, ...).
    pub generated: usize,
    /// The shapes of the rules' columns the statement names.
    pub(crate) usage: super::usage::UsageSet,
    /// How unqualified table names resolve.
    pub(crate) search_path: super::SearchPath,
    /// While a `WHERE` is walked: what the mapped columns its query orders by
    /// read as in migrate (see [`super::predicate`]).
    pub(crate) ordered: Vec<String>,
    /// Columns an `INSERT` leaves to their defaults but a mirror needs, added
    /// to the text as `DEFAULT`: when any are, the statement is rewritten
    /// again from the text with them (see [`super::insert`]).
    pub(crate) implied: Edits,
}

/// Parts of a `FROM` clause that must be walked once its scope is pushed.
pub(crate) enum Deferred<'q> {
    Expr(&'q Expr),
    Query(&'q Query),
    Factor(&'q TableFactor),
}

/// Where a list of select items sits, which decides what ends it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemsKind {
    Select,
    Returning,
}

/// Identifier parts of an object name; `None` for dialect-specific function parts.
pub(crate) fn name_parts(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i),
            _ => None,
        })
        .collect()
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    pub fn new(
        src: &'a Source<'a>,
        rules: &'a RuleSet,
        catalog: &'a Catalog,
        search_path: super::SearchPath,
    ) -> Ctx<'a> {
        Ctx {
            search_path,
            src,
            rules,
            catalog,
            edits: Edits::default(),
            scopes: Vec::new(),
            ctes: Vec::new(),
            generated: 0,
            usage: Default::default(),
            ordered: Vec::new(),
            implied: Edits::default(),
        }
    }

    pub fn into_edits(self) -> Edits {
        self.edits
    }
}
