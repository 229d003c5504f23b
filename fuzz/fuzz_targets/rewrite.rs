//! The rewriter on arbitrary statement text, against a fixed rule set (a
//! rename, a type change and a split) in each phase. A rewritten statement
//! must parse again and keep every `$n` parameter of the original, and the
//! rewrite cache (which splices literals into a cached template) must
//! rewrite exactly as a direct rewrite does.
#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pgshim::rewrite::{
    rewrite_in, Catalog, ColumnInfo, OneOrMany, Outcome, RewriteCache, RuleConfig, RuleSet,
    SearchPath, TableInfo,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

struct Fixture {
    catalog: Catalog,
    phases: Vec<RuleSet>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    catalog: catalog(),
    phases: ["expand", "migrate", "contract"].map(rules).into(),
});

/// pgshim rewrites on tokio worker threads, whose stacks are 2 MiB by
/// default: a statement must not exhaust a stack of that size.
const WORKER_STACK: usize = 2 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let sql = sql.to_owned();
    let worker = std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || check(&sql));
    match worker.map(std::thread::JoinHandle::join) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => panic!("cannot start a worker thread: {e}"),
    }
});

fn check(sql: &str) {
    let fixture = &*FIXTURE;
    // The fixture's tables are in `public`; a session whose path leaves it out
    // sees them only after a `SET search_path` in the text itself.
    let elsewhere = SearchPath::new(vec!["elsewhere".into()], Vec::new());
    for (version, rules) in fixture.phases.iter().enumerate() {
        for path in [SearchPath::public(), &elsewhere] {
            let direct = rewrite_in(sql, rules, &fixture.catalog, path).map(|(o, _)| o);
            if let Ok(Outcome::Rewritten(out)) = &direct {
                check_rewritten(sql, out);
            }
            // A fresh cache misses, then hits with the literals spliced back in.
            let cache = RewriteCache::new(4);
            for _ in 0..2 {
                let cached = cache
                    .lookup_in(sql, version as u64, rules, &fixture.catalog, path)
                    .0
                    .map(|(o, _)| o);
                // The cache answers exactly as a direct rewrite: the same text,
                // refused when it is refused (a refusal passed as unchanged would
                // forward a statement unrewritten).
                assert_eq!(
                    direct.as_ref().ok(),
                    cached.as_ref().ok(),
                    "cache and direct rewrite differ for {sql:?}"
                );
                assert_eq!(
                    direct.is_err(),
                    cached.is_err(),
                    "cache and direct rewrite differ for {sql:?}: {direct:?} against {cached:?}"
                );
            }
        }
    }
}

fn check_rewritten(sql: &str, out: &str) {
    // A text of several statements is rewritten statement by statement when
    // the whole does not parse: statements that name no mapped table are left
    // for Postgres to accept or reject, so only a text that parsed must parse
    // again.
    let input_parses = Parser::parse_sql(&PostgreSqlDialect {}, sql).is_ok();
    if let (true, Err(e)) = (input_parses, Parser::parse_sql(&PostgreSqlDialect {}, out)) {
        panic!("rewritten text does not parse: {e}\ninput: {sql}\noutput: {out}");
    }
    let before = parameters(sql);
    let after = parameters(out);
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "parameters {lost:?} lost\ninput: {sql}\noutput: {out}"
    );
}

/// The `$n` parameters a text uses.
fn parameters(sql: &str) -> BTreeSet<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .unwrap_or_default();
    tokens
        .into_iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) if p.len() > 1 && p[1..].bytes().all(|b| b.is_ascii_digit()) => {
                Some(p)
            }
            _ => None,
        })
        .collect()
}

fn col(name: &str, type_sql: &str, has_default: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        type_sql: type_sql.into(),
        not_null: false,
        has_default,
    }
}

fn table(schema: &str, name: &str, columns: Vec<ColumnInfo>) -> TableInfo {
    TableInfo {
        schema: schema.into(),
        name: name.into(),
        columns,
    }
}

/// The expand/migrate shape: old and new columns side by side.
fn catalog() -> Catalog {
    Catalog::new(vec![
        table(
            "public",
            "users",
            vec![
                col("id", "integer", true),
                col("name", "character varying(50)", false),
                col("full_name", "text", false),
                col("email", "text", false),
            ],
        ),
        table(
            "public",
            "orders",
            vec![
                col("id", "integer", true),
                col("user_id", "integer", false),
                col("status", "text", false),
                col("status_code", "integer", false),
            ],
        ),
        table(
            "app",
            "people",
            vec![
                col("id", "integer", true),
                col("name", "text", false),
                col("first_name", "text", false),
                col("last_name", "text", false),
            ],
        ),
    ])
}

fn rule(table: &str, old: OneOrMany, new: OneOrMany, phase: &str) -> RuleConfig {
    RuleConfig {
        id: None,
        database: None,
        table: table.into(),
        old,
        new,
        phase: phase.into(),
        to_new: Default::default(),
        to_old: Default::default(),
        force: false,
    }
}

fn one(s: &str) -> OneOrMany {
    OneOrMany::One(s.into())
}

/// users.name -> full_name (rename), orders.status -> status_code (type
/// change), app.people.name -> first_name, last_name (split).
fn rules(phase: &str) -> RuleSet {
    let mut status = rule("orders", one("status"), one("status_code"), phase);
    status.to_new.insert(
        "status_code".into(),
        "CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END".into(),
    );
    status.to_old.insert(
        "status".into(),
        "CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END".into(),
    );
    let mut split = rule(
        "app.people",
        one("name"),
        OneOrMany::Many(vec!["first_name".into(), "last_name".into()]),
        phase,
    );
    split
        .to_new
        .insert("first_name".into(), "split_part(name, ' ', 1)".into());
    split
        .to_new
        .insert("last_name".into(), "split_part(name, ' ', 2)".into());
    split.to_old.insert(
        "name".into(),
        "concat_ws(' ', first_name, last_name)".into(),
    );
    let configs = [
        rule("users", one("name"), one("full_name"), phase),
        status,
        split,
    ];
    match RuleSet::from_configs(&configs) {
        Ok(rules) => rules,
        Err(e) => panic!("fixture rules rejected: {e}"),
    }
}
