//! A differential test: a seeded workload from old-shape and new-shape
//! clients through pgshim, for a rename, a type change and a split, through
//! expand, a backfill, migrate, contract and back to migrate (each step a hot
//! reload, with statements prepared at the start kept across every flip),
//! compared statement by statement with an independent reference.
//!
//! The reference is a second database holding the same tables where both
//! shapes always exist and a trigger keeps them equal ([`schema`]): the same
//! statement text runs there natively, in a transaction that is rolled back
//! when pgshim refused the statement. Compared: labels, result and parameter
//! types, rows, row counts, SQLSTATE, and after every write the rows stored
//! behind pgshim (read directly) against the reference's. Because the
//! reference answers alike in every phase, each session's phase is probed
//! too, on a table whose rows read differently in each phase.
//!
//! A refusal (`0A000` from pgshim itself) is counted by reason; one of a
//! statement the reference ran is a mismatch unless the README lists it as a
//! known limit ([`KNOWN_LIMITS`]). Any mismatch fails the test with the seed
//! to replay it: `PGSHIM_DIFF_SEED=<seed> cargo test --test it differential`
//! (`PGSHIM_DIFF_STATEMENTS` sets the statements per stage,
//! `PGSHIM_DIFF_TRACE=1` prints every statement and outcome).
mod generator;
mod outcome;
mod raw;
mod schema;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use tokio_postgres::{Client, Statement};

use crate::support::ops::{ops_config, run};
use crate::support::pg::cluster;
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;
use crate::support::rules::Db;
pub use crate::support::rules::NULL;

use generator::{Gen, Op, Stmt};
use outcome::{execute, table_rows, Outcome};
use raw::Raw;
use schema::{row_diff, rules, Kind, Shape, KINDS};

/// The seed CI runs with.
const DEFAULT_SEED: u64 = 20_251_201;
/// Statements per stage by default.
const DEFAULT_PER_PHASE: usize = 2_700;
/// The stages of the run and the phase of every rule in each: a step back from
/// contract to migrate must read exactly what contract wrote.
const STAGES: [(&str, &str); 4] = [
    ("expand", "expand"),
    ("migrate", "migrate"),
    ("contract", "contract"),
    ("back to migrate", "migrate"),
];
/// Mismatches shown in the failure message.
const SHOWN: usize = 25;
/// Every this many statements a session's phase is probed (and at the start
/// of every stage).
const PROBE_EVERY: usize = 16;
/// Refusals the README lists as known limits, by the start of their reason:
/// only these may refuse a statement the reference runs.
const KNOWN_LIMITS: &[&str] = &["COPY FROM writing mapped columns cannot be dual-written"];

/// One application connection: to pgshim, and its twin to the reference.
struct App {
    shape: Shape,
    shim: Client,
    reference: Client,
    /// Raw twins for simple queries whose command tags are compared.
    shim_raw: Raw,
    reference_raw: Raw,
    /// Prepared once on both sides, run across every flip.
    prepared: Vec<(Statement, Statement, Kind, bool, String)>,
}

impl App {
    /// Runs transaction control on the reference connection a statement uses.
    async fn run_reference(&self, raw: bool, sql: &str) {
        if raw {
            if let Outcome::Err(code, msg) = self.reference_raw.simple(sql).await {
                panic!("{sql} on the reference: {code} {msg}");
            }
        } else {
            run_simple(&self.reference, sql).await;
        }
    }
}

/// What the run counted.
#[derive(Default)]
struct Report {
    statements: usize,
    by_phase: BTreeMap<String, usize>,
    refusals: BTreeMap<String, usize>,
    /// Refusals of statements the reference ran without error.
    refused_accepted: BTreeMap<String, usize>,
    refused_templates: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
    /// `(table, id)` of rows `COPY … FROM` wrote in contract: new columns only.
    copied: HashSet<(&'static str, String)>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_workload_matches_the_reference() {
    let seed = env_or("PGSHIM_DIFF_SEED", DEFAULT_SEED);
    let per_phase = env_or("PGSHIM_DIFF_STATEMENTS", DEFAULT_PER_PHASE);
    let started = Instant::now();
    println!("differential: seed {seed}, {per_phase} statements per phase");

    let db = Db::create(
        "diff",
        &format!(
            "{}{}{}",
            schema::TABLES,
            schema::SEED_OLD_ONLY,
            schema::PROBE
        ),
    )
    .await;
    let reference = Db::create(
        "diff_ref",
        &format!(
            "{}{}{}",
            schema::TABLES,
            schema::REFERENCE_SYNC,
            schema::SEED_OLD_ONLY
        ),
    )
    .await;
    let shim = Reloadable::start(proxy(), &db.scope(&rules("expand"))).await;
    let direct = db.direct().await;
    let truth = reference.direct().await;
    let mut apps = Vec::new();
    for shape in [Shape::Old, Shape::New] {
        apps.push(connect(&shim, &db, &reference, shape).await);
    }

    let mut gen = Gen::new(seed);
    let mut report = Report::default();
    for (stage, phase) in STAGES {
        if stage == "migrate" || stage == "contract" {
            backfill(&db).await;
        }
        if stage != "expand" {
            flip(&shim, &db, phase).await;
        }
        if stage == "migrate" {
            // Rows that have not migrated in migrate read their old columns.
            for sql in [&direct, &truth] {
                run_simple(sql, schema::UNMIGRATED).await;
            }
        }
        let ctx = Ctx {
            seed,
            phase,
            direct: &direct,
            truth: &truth,
        };
        for kind in KINDS {
            ctx.check_state(kind, &format!("start of {stage}"), &mut report)
                .await;
        }
        let mut version = 0;
        for i in 0..per_phase {
            let app = &apps[gen.rng.below(apps.len())];
            if i < apps.len() || i % PROBE_EVERY == 0 {
                let app = if i < apps.len() { &apps[i] } else { app };
                ctx.probe(app, i, &mut report).await;
            }
            ctx.step(&mut gen, app, i, &mut report).await;
            if std::env::var("PGSHIM_DIFF_TRACE").is_ok() {
                let v = shim.admin.version().await;
                if v != version {
                    println!("rules version {v}");
                    version = v;
                }
            }
        }
        *report.by_phase.entry(stage.to_owned()).or_default() += per_phase;
    }
    drop(apps);
    let _ = shim.stop().await;

    let summary = report.summary(seed, started.elapsed().as_secs_f64());
    println!("{summary}");
    assert!(
        report.mismatches.is_empty(),
        "{summary}\n{}\nreplay: PGSHIM_DIFF_SEED={seed} cargo test --test it differential",
        report
            .mismatches
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn connect(shim: &Reloadable, db: &Db, reference: &Db, shape: Shape) -> App {
    let shim_client = shim.connect(&db.name).await;
    let ref_client = reference.direct().await;
    let mut prepared = Vec::new();
    for (sql, kind, write) in Gen::prepared_texts(shape) {
        let a = shim_client
            .prepare(&sql)
            .await
            .unwrap_or_else(|e| panic!("prepare through pgshim {sql}: {e:?}"));
        let b = ref_client
            .prepare(&sql)
            .await
            .unwrap_or_else(|e| panic!("prepare on the reference {sql}: {e:?}"));
        prepared.push((a, b, kind, write, sql));
    }
    let ref_addr = format!("127.0.0.1:{}", cluster().port)
        .parse()
        .expect("reference address");
    App {
        shape,
        shim: shim_client,
        reference: ref_client,
        shim_raw: Raw::connect(shim.addr, &db.name).await,
        reference_raw: Raw::connect(ref_addr, &reference.name).await,
        prepared,
    }
}

/// Fills the new columns of every rule with `pgshim backfill`, from the first key
/// (`--restart`): a second run must also fill rows below the first run's last key.
async fn backfill(db: &Db) {
    let config = ops_config(&db.scope(&rules("expand")));
    for kind in KINDS {
        let id = kind.table().rule;
        let done = run(&config, &["backfill", id, "--restart"]).await;
        assert!(done.status.success(), "backfill {id}: {done:?}");
    }
}

/// Puts every rule in `phase` by a hot reload.
async fn flip(shim: &Reloadable, db: &Db, phase: &str) {
    shim.replace_rules(&db.scope(&rules(phase)));
    let (status, body) = shim.admin.post_reload().await;
    assert_eq!(status, 200, "flip to {phase}: {body}");
}

/// The fixed parts of one phase.
struct Ctx<'a> {
    seed: u64,
    phase: &'static str,
    direct: &'a Client,
    truth: &'a Client,
}

impl Ctx<'_> {
    async fn step(&self, gen: &mut Gen, app: &App, i: usize, report: &mut Report) {
        report.statements += 1;
        let (stmt, prepared) = if gen.rng.chance(8) {
            let (a, b, kind, write, sql) = &app.prepared[gen.rng.below(app.prepared.len())];
            let stmt = Stmt {
                sql: sql.clone(),
                params: gen.prepared_params(*kind, app.shape, *write),
                op: if *write { Op::Write(*kind) } else { Op::Read },
                ordered: true,
                extended: true,
                simple_only: false,
                template: "prepared across flips",
            };
            (stmt, Some((a, b)))
        } else {
            (gen.statement(app.shape), None)
        };
        let writes = match stmt.op {
            Op::Write(kind) | Op::CopyIn(kind, _) => Some(kind),
            _ => None,
        };
        // Half the simple-protocol statements go over raw connections, whose
        // answers include the exact command tags.
        let raw = !stmt.extended
            && prepared.is_none()
            && !matches!(stmt.op, Op::CopyIn(..) | Op::CopyOut)
            && gen.rng.chance(50);
        let got = if raw {
            app.shim_raw.simple(&stmt.sql).await
        } else {
            execute(&app.shim, &stmt, prepared.map(|p| p.0)).await
        };
        if writes.is_some() {
            app.run_reference(raw, "BEGIN").await;
        }
        let want = if raw {
            app.reference_raw.simple(&stmt.sql).await
        } else {
            execute(&app.reference, &stmt, prepared.map(|p| p.1)).await
        };
        if stmt.simple_only && !(got.is_ok() && want.is_ok()) {
            // A transaction text that failed leaves its block open and aborted.
            if raw {
                app.shim_raw.simple("ROLLBACK").await;
            } else {
                run_simple(&app.shim, "ROLLBACK").await;
            }
            app.run_reference(raw, "ROLLBACK").await;
        }
        let refusal = got.refusal();
        if std::env::var("PGSHIM_DIFF_TRACE").is_ok() {
            let short = |o: &outcome::Outcome| match o {
                outcome::Outcome::Ok(a) => format!("ok {}", a.count),
                outcome::Outcome::Err(c, m) => format!("{c} {m}"),
            };
            println!(
                "{} #{i} {:?} ext={} {} => {} / {}",
                self.phase,
                app.shape,
                stmt.extended,
                stmt.sql,
                short(&got),
                short(&want)
            );
        }
        if writes.is_some() {
            let end = if refusal.is_none() && want.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            app.run_reference(raw, end).await;
        }
        let at = || {
            format!(
                "seed {} {} #{i} {:?} shape, {} [{}]: {}{}",
                self.seed,
                self.phase,
                app.shape,
                if stmt.extended { "extended" } else { "simple" },
                stmt.template,
                stmt.sql,
                if stmt.params.is_empty() {
                    String::new()
                } else {
                    format!(" with {:?}", stmt.params)
                }
            )
        };
        if let Some(reason) = refusal {
            if want.is_ok() && !KNOWN_LIMITS.iter().any(|k| reason.starts_with(k)) {
                report.mismatches.push(format!(
                    "{}\n   refused by pgshim ({reason}), run by the reference: {want:?}",
                    at()
                ));
            }
            if want.is_ok() {
                *report.refused_accepted.entry(reason.clone()).or_default() += 1;
                *report.refused_templates.entry(stmt.template).or_default() += 1;
            }
            *report.refusals.entry(reason).or_default() += 1;
            return;
        }
        if got.comparable(stmt.ordered) != want.comparable(stmt.ordered) {
            report.mismatches.push(format!(
                "{}\n   pgshim:    {got:?}\n   reference: {want:?}",
                at()
            ));
        }
        if let (Op::CopyIn(kind, data), true, "contract") = (&stmt.op, got.is_ok(), self.phase) {
            let table = kind.table().name;
            for line in data.lines() {
                let id = line.split('\t').next().unwrap_or_default();
                report.copied.insert((table, id.to_owned()));
            }
        }
        if let (Some(kind), true) = (writes, got.is_ok()) {
            self.check_state(kind, &at(), report).await;
        }
    }

    /// Checks that `app`'s session serves the rules of this stage.
    async fn probe(&self, app: &App, i: usize, report: &mut Report) {
        let sql = "SELECT a FROM phase_probe ORDER BY id";
        let tokio = match app.shim.simple_query(sql).await {
            Ok(messages) => messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or(NULL).to_owned())
                    }
                    _ => None,
                })
                .collect(),
            Err(e) => vec![format!("error {e:?}")],
        };
        let raw = match app.shim_raw.simple(sql).await {
            Outcome::Ok(answer) => answer.rows,
            Outcome::Err(code, msg) => vec![format!("error {code} {msg}")],
        };
        let want = schema::probe_expected(self.phase);
        for (connection, got) in [("", tokio), (" (raw connection)", raw)] {
            if got != want {
                report.mismatches.push(format!(
                    "seed {} {} before #{i} {:?} shape{connection}: the session serves other rules than {}: probe read {got:?}, want {want:?}",
                    self.seed, self.phase, app.shape, self.phase
                ));
            }
        }
    }

    /// Compares the rows stored behind pgshim with the reference's, and on
    /// a difference records it and copies the reference's rows over, so one
    /// divergence is reported once.
    async fn check_state(&self, kind: Kind, at: &str, report: &mut Report) {
        let table = kind.table();
        let physical = table_rows(self.direct, table.name).await;
        let reference = table_rows(self.truth, table.name).await;
        let ids = |rows: &[Vec<String>]| rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>();
        let diff = if ids(&physical) != ids(&reference) {
            Some(format!(
                "row ids differ: {:?} vs {:?}",
                ids(&physical),
                ids(&reference)
            ))
        } else {
            physical.iter().zip(&reference).find_map(|(p, r)| {
                let copied = report.copied.contains(&(table.name, p[0].clone()));
                row_diff(&table, self.phase, !copied, p, r)
                    .map(|why| format!("{why}: stored {} / reference {}", p.join("|"), r.join("|")))
            })
        };
        if let Some(diff) = diff {
            report
                .mismatches
                .push(format!("{at}\n   stored state of {}: {diff}", table.name));
            self.resync(table.name).await;
        }
    }

    async fn resync(&self, table: &str) {
        use futures_util::{SinkExt, TryStreamExt};
        let out = self
            .truth
            .copy_out(&format!("COPY {table} TO STDOUT"))
            .await
            .expect("copy out of the reference");
        let chunks: Vec<bytes::Bytes> = out.try_collect().await.expect("reference rows");
        run_simple(self.direct, &format!("DELETE FROM {table}")).await;
        let sink = self
            .direct
            .copy_in::<_, bytes::Bytes>(&format!("COPY {table} FROM STDIN"))
            .await
            .expect("copy into the shim's database");
        let mut sink = std::pin::pin!(sink);
        sink.send(bytes::Bytes::from(chunks.concat()))
            .await
            .expect("send rows");
        sink.as_mut().finish().await.expect("finish copy");
    }
}

async fn run_simple(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

impl Report {
    fn summary(&self, seed: u64, secs: f64) -> String {
        let refused: usize = self.refusals.values().sum();
        let mut out = format!(
            "differential summary: seed {seed}, {} statements ({:?}) in {secs:.1} s, {refused} refused, {} mismatches",
            self.statements,
            self.by_phase,
            self.mismatches.len()
        );
        for (reason, n) in &self.refusals {
            let accepted = self.refused_accepted.get(reason).copied().unwrap_or(0);
            out += &format!("\n  refused {n:>5} ({accepted} the reference ran): {reason}");
        }
        for (template, n) in &self.refused_templates {
            out += &format!("\n  refused where the reference ran, template {template}: {n}");
        }
        out
    }
}

#[test]
fn the_generator_is_deterministic() {
    let texts = |seed| {
        let mut gen = Gen::new(seed);
        (0..200)
            .map(|i| {
                gen.statement(if i % 2 == 0 { Shape::Old } else { Shape::New })
                    .sql
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(7), texts(7));
    assert_ne!(texts(7), texts(8));
}
