//! SQL rewriting for expand/contract column migrations: `&str` in, rewritten `String` out.
//!
//! Pure and I/O-free, so it can be unit-tested and fuzzed on its own. The proxy calls
//! [`mentions_mapped_table`] on every statement text, and [`rewrite`] (or the cache's
//! [`RewriteCache::get_or_rewrite`]) only for texts that pass it.
//!
//! # Layout
//! - `config`: the raw TOML shape of a `[[rule]]`.
//! - `rules`: validated rules, phases, the catalog check.
//! - `catalog`: physical table shapes read at startup.
//! - `prefilter`: the allocation-free byte check.
//! - `source`, `edits`, `ident`: tokens with byte offsets, splicing edits into the
//!   original text, identifier normalisation.
//! - `transform`, `phase`: rule transforms as templates; the value a column reads as in
//!   each phase.
//! - `scope`, `from`, `read`, `items`: name resolution, scopes of `FROM` clauses, the
//!   statement walk rewriting reads, select lists (`*`, labels).
//! - `write`, `list`, `insert`, `update`, `group`, `copy`: dual-write planning and its
//!   rendering.
//! - `fingerprint`, `cache`: the bounded, literal-insensitive rewrite cache.
//!
//! # How a rewrite works
//! The text is tokenised once and parsed with sqlparser's Postgres dialect. A walk over the
//! AST resolves every column reference the way Postgres would (scopes per `SELECT`, CTE
//! names shadowing tables, aliases hiding table names, case folding) and records edits at
//! byte ranges of the original text. Only those ranges change: comments, layout, literals
//! and `$n` placeholders are left as sent.

mod cache;
mod catalog;
mod copy;
mod ctx;
mod depth;
mod edits;
mod fingerprint;
mod from;
mod function;
mod group;
mod ident;
mod insert;
mod items;
mod list;
mod phase;
mod plpgsql;
mod predicate;
mod prefilter;
mod read;
mod rule_config;
mod rules;
mod scope;
mod search_path;
mod source;
mod sql_prepare;
mod transform;
mod update;
mod usage;
mod usage_walk;
mod write;

#[cfg(test)]
pub(crate) mod tests;

pub use cache::{CacheStats, Classified, Lookup, RewriteCache};
pub use catalog::{Catalog, ColumnInfo, TableInfo};
pub use prefilter::mentions_mapped_table;
pub use rule_config::{OneOrMany, RuleConfig};
pub use rules::{Phase, Rule, RuleError, RuleSet, TransformProbe};
pub use search_path::SearchPath;
pub use sql_prepare::{prepared_statement_name, starts_with_prepare};
pub use usage::{RuleUsage, Shape, Usage};

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use ctx::Ctx;
use edits::Edits;
use source::Source;
use usage::UsageSet;

/// What [`rewrite`] did with a statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward the text as it is.
    Unchanged,
    /// Forward this text instead.
    Rewritten(String),
}

/// Why a statement that mentions a mapped table is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// pgshim cannot rewrite this form safely for the rule's phase.
    Unrewritable,
    /// The statement is nested deeper, or is longer, than pgshim builds syntax trees for.
    TooDeep,
    /// pgshim's parser does not accept the statement. Postgres may reject it
    /// too (a typo), and then its own error is the one to show.
    Unparsed,
}

/// A statement mentions a mapped table but cannot be rewritten safely.
///
/// The proxy answers it with SQLSTATE `0A000` and
/// `pgshim: cannot rewrite statement (rule <id>): <reason>`, or
/// `pgshim: statement too deep to rewrite (rule <id>): <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteError {
    /// The rule whose table or column the statement touches.
    pub rule_id: String,
    /// What could not be rewritten.
    pub reason: String,
    /// Which kind of refusal this is.
    pub kind: RefusalKind,
}

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rule, reason) = (&self.rule_id, &self.reason);
        match self.kind {
            RefusalKind::Unrewritable | RefusalKind::Unparsed => {
                write!(f, "cannot rewrite statement (rule {rule}): {reason}")
            }
            RefusalKind::TooDeep => {
                write!(f, "statement too deep to rewrite (rule {rule}): {reason}")
            }
        }
    }
}

impl std::error::Error for RewriteError {}

/// Internal refusal; the rule id is filled in where it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refuse {
    pub rule: Option<String>,
    pub reason: String,
    pub kind: RefusalKind,
}

// === impl Refuse ===

impl Refuse {
    pub(crate) fn new(reason: impl Into<String>) -> Refuse {
        Refuse {
            rule: None,
            reason: reason.into(),
            kind: RefusalKind::Unrewritable,
        }
    }

    /// The statement does not tokenize or parse.
    pub(crate) fn unparsed(reason: impl Into<String>) -> Refuse {
        Refuse {
            kind: RefusalKind::Unparsed,
            ..Refuse::new(reason)
        }
    }

    /// The statement is too deep or too long to build a tree for.
    pub(crate) fn too_deep(reason: impl Into<String>) -> Refuse {
        Refuse {
            kind: RefusalKind::TooDeep,
            ..Refuse::new(reason)
        }
    }

    /// The error for the client: the rule is the one named, or else the first
    /// rule `sql` mentions.
    fn into_error(self, sql: &str, rules: &RuleSet) -> RewriteError {
        RewriteError {
            rule_id: self
                .rule
                .unwrap_or_else(|| first_mentioned_rule(sql, rules)),
            reason: self.reason,
            kind: self.kind,
        }
    }

    pub(crate) fn rule(rule: &Rule, reason: impl Into<String>) -> Refuse {
        Refuse {
            rule: Some(rule.id.clone()),
            ..Refuse::new(reason)
        }
    }
}

/// Rewrite one statement text (possibly several `;`-separated statements, as in a simple
/// Query message).
///
/// # Errors
/// [`RewriteError`] when the text mentions a mapped table but cannot be parsed or safely
/// rewritten; it is never passed on unchanged in that case.
///
/// # Returns
/// [`Outcome::Unchanged`] when nothing needs rewriting (always for texts that fail the
/// prefilter), else the rewritten text.
pub fn rewrite(sql: &str, rules: &RuleSet, catalog: &Catalog) -> Result<Outcome, RewriteError> {
    rewrite_with_usage(sql, rules, catalog).map(|(outcome, _)| outcome)
}

/// As [`rewrite`], also saying which shape of each rule the text uses (old names, new
/// names, `*`), whether or not it needed a rewrite.
///
/// # Errors
/// As [`rewrite`].
pub fn rewrite_with_usage(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
) -> Result<(Outcome, Usage), RewriteError> {
    rewrite_in(sql, rules, catalog, SearchPath::public())
}

/// As [`rewrite_with_usage`], resolving unqualified table names through `path`,
/// the session's search path.
///
/// # Errors
/// As [`rewrite`].
pub fn rewrite_in(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
) -> Result<(Outcome, Usage), RewriteError> {
    if !mentions_mapped_table(sql.as_bytes(), rules) {
        return Ok((Outcome::Unchanged, Usage::default()));
    }
    let outcome = match parsed_with_usage(sql, rules, catalog, path) {
        Err(refuse) if refuse.kind != RefusalKind::TooDeep => {
            rewrite_each(sql, rules, catalog, path).unwrap_or(Err(refuse))
        }
        other => other,
    };
    outcome
        .map(|(outcome, usage)| (outcome, usage.freeze()))
        .map_err(|refuse| refuse.into_error(sql, rules))
}

/// Rewrites the statements of a multi-statement text one by one, parsing only those
/// that mention a mapped table, so a statement sqlparser cannot parse but that
/// touches no mapped table (`SELECT (f.response).* FROM f()`) does not refuse the
/// others.
///
/// # Returns
/// `None` when the text is one statement, or does not tokenize: the whole-text
/// answer stands.
fn rewrite_each(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
) -> Option<Result<(Outcome, UsageSet), Refuse>> {
    let (src, _) = Source::new(sql).ok()?;
    let ranges = src.statement_ranges();
    if ranges.len() < 2 {
        return None;
    }
    let mut edits = Edits::default();
    let mut usage = UsageSet::default();
    let mut path = path.clone();
    for (start, end) in ranges {
        let text = &sql[start..end];
        if !mentions_mapped_table(text.as_bytes(), rules) {
            if let Some(after) = search_path_after(text, &path) {
                path = after;
            }
            continue;
        }
        match parsed_with_usage(text, rules, catalog, &path) {
            Ok((Outcome::Unchanged, used)) => usage.merge(used),
            Ok((Outcome::Rewritten(new), used)) => {
                usage.merge(used);
                if let Err(e) = edits.replace(start, end, new) {
                    return Some(Err(e));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
    if edits.is_empty() {
        return Some(Ok((Outcome::Unchanged, usage)));
    }
    Some(
        edits
            .apply(sql)
            .map(|text| (Outcome::Rewritten(text), usage)),
    )
}

fn rewrite_parsed(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
) -> Result<Outcome, Refuse> {
    parsed_with_usage(sql, rules, catalog, path).map(|(outcome, _)| outcome)
}

/// The search path after `text`, starting from `path`, when its last statement
/// is a `SET search_path` naming its schemas (`None` for anything else:
/// `RESET`, `DEFAULT`, `set_config()`, other statements).
pub fn search_path_after(text: &str, path: &SearchPath) -> Option<SearchPath> {
    let bytes = text.as_bytes();
    let mentions = bytes
        .windows(b"search_path".len())
        .any(|w| w.eq_ignore_ascii_case(b"search_path"));
    if !mentions {
        return None;
    }
    with_parsed(text, |_, statements| {
        Ok(statements.iter().fold(None, |_, s| path.after(s)))
    })
    .ok()
    .flatten()
}

/// As [`rewrite_parsed`], with the shapes the text uses.
fn parsed_with_usage(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
) -> Result<(Outcome, UsageSet), Refuse> {
    parsed_once_more(sql, rules, catalog, path, true)
}

/// [`parsed_with_usage`]; `again`: whether defaults an `INSERT` leaves to a
/// mirror may be made explicit and the result rewritten (once: that text
/// names them all).
fn parsed_once_more(
    sql: &str,
    rules: &RuleSet,
    catalog: &Catalog,
    path: &SearchPath,
    again: bool,
) -> Result<(Outcome, UsageSet), Refuse> {
    with_parsed(sql, |src, statements| {
        let mut ctx = Ctx::new(src, rules, catalog, path.clone());
        for statement in statements {
            ctx.walk_statement(statement)?;
            // A `SET search_path` applies to the statements after it.
            if let Some(after) = ctx.search_path.after(statement) {
                ctx.search_path = after;
            }
        }
        let usage = ctx.take_usage();
        if !ctx.implied.is_empty() {
            if !again {
                return Err(Refuse::new("column defaults a mirror needs"));
            }
            // Defaults a mirror needs, made explicit: rewrite that text. Its
            // usage would count the added columns, which the client never named.
            let explicit = std::mem::take(&mut ctx.implied).apply(sql)?;
            let outcome = match parsed_once_more(&explicit, rules, catalog, path, false)?.0 {
                Outcome::Unchanged => explicit,
                Outcome::Rewritten(text) => text,
            };
            return Ok((Outcome::Rewritten(outcome), usage));
        }
        let edits: Edits = ctx.into_edits();
        if edits.is_empty() {
            return Ok((Outcome::Unchanged, usage));
        }
        Ok((Outcome::Rewritten(edits.apply(sql)?), usage))
    })
}

/// The first four keywords of each statement of `sql` (`None` for a token
/// that is not a keyword); `None` when the text does not tokenize.
fn statement_heads(sql: &str) -> Option<Vec<[Option<sqlparser::keywords::Keyword>; 4]>> {
    use sqlparser::tokenizer::Token;
    let (src, _) = Source::new(sql).ok()?;
    let heads = src
        .statement_ranges()
        .iter()
        .filter_map(|(start, _)| src.toks.iter().position(|t| t.start == *start))
        .map(|first| {
            std::array::from_fn(|k| match src.toks.get(first + k).map(|t| &t.token) {
                Some(Token::Word(w)) => Some(w.keyword),
                _ => None,
            })
        })
        .collect();
    Some(heads)
}

/// Whether every statement of `sql` changes the schema (`CREATE`, `ALTER`,
/// `DROP`, `COMMENT`): what may still run on a mapped table where its rules
/// cannot be used, since it is how the schema is made to serve them.
pub fn schema_changes_only(sql: &str) -> bool {
    use sqlparser::keywords::Keyword;
    statement_heads(sql).is_some_and(|heads| {
        !heads.is_empty()
            && heads.iter().all(|[first, ..]| {
                matches!(
                    first,
                    Some(Keyword::CREATE | Keyword::ALTER | Keyword::DROP | Keyword::COMMENT)
                )
            })
    })
}

/// The tables `rules` map (by name, as written) whose columns some statement
/// of `sql` changes: `CREATE … TABLE` or `DROP TABLE` naming one, or
/// `ALTER TABLE` on one that adds, drops, renames or retypes (not
/// `SET DEFAULT`, constraints).
pub fn changed_mapped_tables(sql: &str, rules: &RuleSet) -> Vec<String> {
    use sqlparser::keywords::Keyword as K;
    use sqlparser::tokenizer::Token;
    let Ok((src, _)) = Source::new(sql) else {
        return Vec::new();
    };
    let toks = &src.toks;
    let kw = |i: usize| match toks.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => Some(w.keyword),
        _ => None,
    };
    let name = |i: usize| match toks.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_some() => Some(w.value.clone()),
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    // The mapped table named at `i` (after TABLE and its IF [NOT] EXISTS /
    // ONLY), if it is one, and the index after the name.
    let mapped_at = |mut i: usize| -> (Option<String>, usize) {
        while matches!(kw(i), Some(K::IF | K::NOT | K::EXISTS | K::ONLY)) {
            i += 1;
        }
        if toks.get(i + 1).is_some_and(|t| t.token == Token::Period) {
            let mapped = match (name(i), name(i + 2)) {
                (Some(s), Some(t)) if rules.maps_table(&s, &t) => Some(t),
                _ => None,
            };
            return (mapped, i + 3);
        }
        (name(i).filter(|t| rules.maps_table_anywhere(t)), i + 1)
    };
    let alters_columns = |from: usize, to: usize| {
        let mut depth = 0usize;
        (from..to).any(|i| {
            match &toks[i].token {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth == 0
                && match kw(i) {
                    Some(K::ADD) => !matches!(
                        kw(i + 1),
                        Some(
                            K::CONSTRAINT
                                | K::PRIMARY
                                | K::UNIQUE
                                | K::CHECK
                                | K::FOREIGN
                                | K::EXCLUDE
                        )
                    ),
                    Some(K::DROP) => !matches!(
                        kw(i + 1),
                        Some(K::CONSTRAINT | K::DEFAULT | K::NOT | K::IDENTITY)
                    ),
                    Some(K::RENAME | K::TYPE) => true,
                    _ => false,
                }
        })
    };
    let mut changed = Vec::new();
    for &(start, end) in &src.statement_ranges() {
        let Some(first) = toks.iter().position(|t| t.start == start) else {
            continue;
        };
        let last = toks
            .iter()
            .rposition(|t| t.end <= end)
            .map_or(first, |l| l + 1);
        match kw(first) {
            Some(K::ALTER) if kw(first + 1) == Some(K::TABLE) => {
                let (mapped, after) = mapped_at(first + 2);
                changed.extend(mapped.filter(|_| alters_columns(after, last)));
            }
            Some(K::DROP) if kw(first + 1) == Some(K::TABLE) => {
                // DROP TABLE a, b: each of them.
                let mut i = first + 2;
                loop {
                    let (mapped, after) = mapped_at(i);
                    changed.extend(mapped);
                    if toks.get(after).is_none_or(|t| t.token != Token::Comma) {
                        break;
                    }
                    i = after + 1;
                }
            }
            Some(K::CREATE) => {
                let table = (1..=3).find(|&k| kw(first + k) == Some(K::TABLE));
                changed.extend(table.and_then(|k| mapped_at(first + k + 1).0));
            }
            _ => {}
        }
    }
    changed
}

/// Whether `sql` names a table some rule maps, as a relation anywhere in it (CTE names
/// that shadow a table count too: the answer errs towards yes).
///
/// # Errors
/// [`RewriteError`] when the text does not parse, or is too deep to parse.
pub fn names_mapped_table(sql: &str, rules: &RuleSet) -> Result<bool, RewriteError> {
    if !mentions_mapped_table(sql.as_bytes(), rules) {
        return Ok(false);
    }
    with_parsed(sql, |_, statements| {
        let mut found = false;
        for statement in statements {
            let _ = sqlparser::ast::visit_relations(statement, |name| {
                let parts: Option<Vec<String>> = ctx::name_parts(name)
                    .map(|parts| parts.into_iter().map(ident::normalize).collect());
                found = match parts.as_deref() {
                    Some([t]) => rules.maps_table_anywhere(t),
                    Some([.., schema, t]) => rules.maps_table(schema, t),
                    _ => false,
                };
                if found {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            });
            if found {
                break;
            }
        }
        Ok(found)
    })
    .map_err(|refuse| refuse.into_error(sql, rules))
}

/// Tokenizes and parses `sql` within the depth and size bounds, and runs `f` on the
/// statements; the tree is built, used and dropped on a stack sized for those bounds.
fn with_parsed<T>(
    sql: &str,
    f: impl FnOnce(&Source<'_>, &[sqlparser::ast::Statement]) -> Result<T, Refuse>,
) -> Result<T, Refuse> {
    if sql.len() > depth::MAX_TEXT_BYTES {
        return Err(Refuse::too_deep(format!(
            "the statement is {} bytes long; pgshim rewrites statements of up to {} bytes",
            sql.len(),
            depth::MAX_TEXT_BYTES
        )));
    }
    let (src, tokens) =
        Source::new(sql).map_err(|e| Refuse::unparsed(format!("does not tokenize: {e}")))?;
    depth::check(&tokens).map_err(|_| Refuse::too_deep(depth::TOO_DEEP))?;
    if src.has_unicode_identifier() {
        // sqlparser reads `U&"\0075sers"` as `U & "\0075sers"`: the name would go unseen.
        return Err(Refuse::unparsed(
            "names an identifier with Unicode escapes (U&\"…\"), which pgshim cannot read; write the name plainly",
        ));
    }
    depth::on_large_stack(|| {
        let statements = Parser::new(&PostgreSqlDialect {})
            .with_recursion_limit(depth::PARSER_RECURSION_LIMIT)
            .with_tokens_with_locations(tokens)
            .parse_statements()
            .map_err(|e| match e {
                ParserError::RecursionLimitExceeded => Refuse::too_deep(depth::TOO_DEEP),
                e => Refuse::unparsed(format!("does not parse: {e}")),
            })?;
        f(&src, &statements)
    })
}

/// The id of the rule whose table `sql` names first, for an error message.
pub fn first_mentioned_rule(sql: &str, rules: &RuleSet) -> String {
    let bytes = sql.as_bytes();
    rules
        .rules()
        .iter()
        .filter_map(|r| {
            prefilter::find_ignore_ascii_case(bytes, r.table.to_ascii_lowercase().as_bytes())
                .map(|at| (at, r))
        })
        .min_by_key(|(at, _)| *at)
        .map(|(_, r)| r.id.clone())
        .or_else(|| {
            // Named only through a Unicode-escaped identifier.
            let names: Vec<String> = prefilter::unicode_identifiers(bytes).flatten().collect();
            rules
                .rules()
                .iter()
                .find(|r| {
                    let table = r.table.to_ascii_lowercase();
                    names.iter().any(|n| {
                        prefilter::find_ignore_ascii_case(n.as_bytes(), table.as_bytes()).is_some()
                    })
                })
                .map(|r| r.id.clone())
        })
        .unwrap_or_else(|| "unknown".into())
}
