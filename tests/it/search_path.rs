//! Unqualified names resolve through the session's real search path: startup
//! `options`, database defaults, `SET`, `SET LOCAL`, `set_config()`, a `SET`
//! earlier in the same text or the same extended-protocol pipeline; a
//! temporary table that shadows a mapped table is not mapped.
use crate::support::connect;
use crate::support::pg::TRUST_USER;
use crate::support::rules::{simple_rows, Db};
use crate::support::wire::{
    bind_execute, cstr, login, message, parse, replies, send, startup, sync,
};
use crate::support::within;

/// A mapped `app.users` and an unmapped `public.users` of another shape.
const SETUP: &str = "CREATE SCHEMA app;
CREATE TABLE app.users (id serial PRIMARY KEY, name text, full_name text, email text);
CREATE TABLE public.users (id serial PRIMARY KEY, label text);";

const RULE: &str = "[[rule]]\nid = \"app-users\"\ntable = \"app.users\"\nold = \"name\"\nnew = \"full_name\"\nphase = \"expand\"\n";

/// Both shapes of the row with `email`, read directly.
async fn stored(db: &Db, email: &str) -> Vec<String> {
    db.physical(&format!(
        "SELECT name, full_name FROM app.users WHERE email = '{email}'"
    ))
    .await
}

#[tokio::test]
async fn set_search_path_in_every_form_reaches_the_mapped_table() {
    let db = Db::create("sp_set", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    // On the default path, `users` is public.users: not mapped, untouched.
    simple_rows(&client, "INSERT INTO users (label) VALUES ('p')")
        .await
        .unwrap();
    assert_eq!(db.physical("SELECT label FROM public.users").await, ["p"]);

    client
        .batch_execute("SET search_path TO app")
        .await
        .unwrap();
    simple_rows(
        &client,
        "INSERT INTO users (email, full_name) VALUES ('set@x', 'Set New')",
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, "set@x").await, ["Set New|Set New"]);
    // Extended protocol too.
    client
        .execute(
            "INSERT INTO users (email, name) VALUES ($1, $2)",
            &[&"ext@x", &"Ext Old"],
        )
        .await
        .unwrap();
    assert_eq!(stored(&db, "ext@x").await, ["Ext Old|Ext Old"]);

    client.batch_execute("RESET search_path").await.unwrap();
    simple_rows(&client, "INSERT INTO users (label) VALUES ('q')")
        .await
        .unwrap();

    // SET LOCAL lasts until the end of the transaction.
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SET LOCAL search_path TO app")
        .await
        .unwrap();
    simple_rows(
        &client,
        "INSERT INTO users (email, full_name) VALUES ('local@x', 'Lo Cal')",
    )
    .await
    .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(stored(&db, "local@x").await, ["Lo Cal|Lo Cal"]);
    simple_rows(&client, "INSERT INTO users (label) VALUES ('r')")
        .await
        .unwrap();
    assert_eq!(
        db.physical("SELECT label FROM public.users ORDER BY label")
            .await,
        ["p", "q", "r"]
    );

    // set_config(), then a SET earlier in the same text.
    simple_rows(&client, "SELECT set_config('search_path', 'app', false)")
        .await
        .unwrap();
    simple_rows(
        &client,
        "INSERT INTO users (email, full_name) VALUES ('cfg@x', 'Con Fig')",
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, "cfg@x").await, ["Con Fig|Con Fig"]);
    client.batch_execute("RESET search_path").await.unwrap();
    simple_rows(
        &client,
        "SET search_path TO app; INSERT INTO users (email, full_name) VALUES ('same@x', 'Same Text')",
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, "same@x").await, ["Same Text|Same Text"]);
}

#[tokio::test]
async fn startup_options_and_database_defaults_count() {
    let db = Db::create("sp_start", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let mut cfg = proxy.config(TRUST_USER, None);
    cfg.dbname(&db.name).options("-c search_path=app");
    let client = within(20, "connect", connect(&cfg)).await.unwrap();
    client
        .execute(
            "INSERT INTO users (email, full_name) VALUES ($1, $2)",
            &[&"opt@x", &"Op Tion"],
        )
        .await
        .unwrap();
    assert_eq!(stored(&db, "opt@x").await, ["Op Tion|Op Tion"]);

    db.direct()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET search_path = app",
            db.name
        ))
        .await
        .unwrap();
    let client = db.through(&proxy).await;
    simple_rows(
        &client,
        "INSERT INTO users (email, name) VALUES ('dflt@x', 'De Fault')",
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, "dflt@x").await, ["De Fault|De Fault"]);
}

#[tokio::test]
async fn a_temporary_table_shadows_the_mapped_one() {
    let db = Db::create("sp_temp", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    client
        .batch_execute("SET search_path TO app")
        .await
        .unwrap();
    client
        .batch_execute("CREATE TEMP TABLE users (id int, full_name text)")
        .await
        .unwrap();
    // Goes to the temporary table as written (it has no `name` to mirror into).
    simple_rows(
        &client,
        "INSERT INTO users (id, full_name) VALUES (1, 'Tmp')",
    )
    .await
    .unwrap();
    assert_eq!(
        simple_rows(&client, "SELECT full_name FROM users")
            .await
            .unwrap()
            .0,
        ["Tmp"]
    );
    assert!(db.physical("SELECT * FROM app.users").await.is_empty());
    client
        .batch_execute("DROP TABLE pg_temp.users")
        .await
        .unwrap();
    simple_rows(
        &client,
        "INSERT INTO users (email, full_name) VALUES ('back@x', 'Ba Ck')",
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, "back@x").await, ["Ba Ck|Ba Ck"]);
}

/// A mapped `app.users` and an unmapped `public.users` with the old column
/// names but not the new one, so a statement rewritten for the wrong one
/// fails or writes one shape only.
const SAME_NAMES: &str = "CREATE SCHEMA app;
CREATE TABLE app.users (id serial PRIMARY KEY, name text, full_name text, email text);
CREATE TABLE public.users (id serial PRIMARY KEY, name text, email text);";

#[tokio::test]
async fn a_prepared_statement_is_rewritten_for_the_path_it_runs_under() {
    let db = Db::create("sp_prepared", SAME_NAMES).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let insert = "INSERT INTO users (email, name) VALUES ($1, $2)";
    // Prepared while `users` is public.users (not mapped), run after the
    // path moved to app: Postgres analyses it again for app.users, so both
    // shapes must be written.
    let on_public = client.prepare(insert).await.unwrap();
    client
        .batch_execute("SET search_path TO app")
        .await
        .unwrap();
    client
        .execute(&on_public, &[&"moved@x", &"Mo Ved"])
        .await
        .unwrap();
    assert_eq!(stored(&db, "moved@x").await, ["Mo Ved|Mo Ved"]);
    // And the other way: prepared for app.users (rewritten), run on
    // public.users, which has no full_name.
    let on_app = client.prepare(insert).await.unwrap();
    client.batch_execute("RESET search_path").await.unwrap();
    client
        .execute(&on_app, &[&"back@x", &"Ba Ck"])
        .await
        .unwrap();
    assert_eq!(
        db.physical("SELECT name FROM public.users WHERE email = 'back@x'")
            .await,
        ["Ba Ck"]
    );
    // Both statements keep following the path.
    client
        .batch_execute("SET search_path TO app")
        .await
        .unwrap();
    client
        .execute(&on_app, &[&"again@x", &"Aga In"])
        .await
        .unwrap();
    assert_eq!(stored(&db, "again@x").await, ["Aga In|Aga In"]);
}

#[tokio::test]
async fn statements_pipelined_behind_an_extended_protocol_set_use_its_path() {
    let db = Db::create("sp_pipelined", SAME_NAMES).await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    let set = client.prepare("SET search_path TO app").await.unwrap();
    let insert = client
        .prepare("INSERT INTO users (email, name) VALUES ($1, $2)")
        .await
        .unwrap();
    // Bind, Execute and Sync of each, written together: the INSERT's arrive
    // before the SET has run, prepared for public.users.
    let (set, insert) = within(20, "pipelined SET and INSERT", async {
        tokio::join!(
            client.execute(&set, &[]),
            client.execute(&insert, &[&"pipe@x", &"Pi Pe"]),
        )
    })
    .await;
    set.unwrap();
    insert.unwrap();
    assert_eq!(stored(&db, "pipe@x").await, ["Pi Pe|Pi Pe"]);
    assert!(db
        .physical("SELECT name FROM public.users")
        .await
        .is_empty());
}

/// Parse, Bind and Execute of each of `statements` and one Sync, in one
/// write; the replies up to ReadyForQuery.
async fn one_pipeline(s: &mut tokio::net::TcpStream, statements: &[&str]) -> Vec<String> {
    let mut batch = Vec::new();
    for sql in statements {
        batch.extend(parse(sql));
        batch.extend(bind_execute());
    }
    batch.extend(sync());
    send(s, &batch).await;
    within(20, "the pipeline's replies", replies(s, 1)).await
}

#[tokio::test]
async fn statements_in_the_same_pipeline_as_an_extended_protocol_set_use_its_path() {
    let db = Db::create("sp_same_sync", SAME_NAMES).await;
    let proxy = db.proxy(RULE).start().await;
    let (mut s, _) = login(
        proxy.addr,
        &startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]),
    )
    .await;
    // SET and INSERT in one pipeline with one Sync, as a driver's batch sends
    // them: the INSERT arrives before the SET has run.
    let got = one_pipeline(
        &mut s,
        &[
            "SET search_path TO app",
            "INSERT INTO users (email, name) VALUES ('same-sync@x', 'Same Sync')",
        ],
    )
    .await;
    assert_eq!(got, ["1", "2", "C", "1", "2", "C", "Z"], "{got:?}");
    assert_eq!(stored(&db, "same-sync@x").await, ["Same Sync|Same Sync"]);
    // A statement failing behind a SET ends its pipeline: nothing after it
    // runs, and the rollback undoes the SET. The path read behind the Sync
    // is the one that holds again.
    let got = one_pipeline(
        &mut s,
        &[
            "SET search_path TO public",
            "SELECT 1/0",
            "INSERT INTO users (email, name) VALUES ('never@x', 'Nev Er')",
        ],
    )
    .await;
    assert_eq!(got[..3], ["1", "2", "C"], "{got:?}");
    assert_eq!(got[got.len() - 2..], ["E22012", "Z"], "{got:?}");
    assert!(stored(&db, "never@x").await.is_empty());
    // Pipelined on its own afterwards, the INSERT resolves by the path that holds.
    let got = one_pipeline(
        &mut s,
        &["INSERT INTO users (email, name) VALUES ('after@x', 'Af Ter')"],
    )
    .await;
    assert_eq!(got, ["1", "2", "C", "Z"], "{got:?}");
    assert_eq!(stored(&db, "after@x").await, ["Af Ter|Af Ter"]);
}

/// pgshim's own reading of the search path does not drop the client's
/// unnamed statement: asyncpg parses one, runs a named statement that calls
/// `set_config` (a reason to read the path again), then binds the unnamed
/// one in a later round trip.
#[tokio::test]
async fn the_clients_unnamed_statement_outlives_a_read_of_the_path() {
    let db = Db::create("sp_unnamed", SETUP).await;
    let proxy = db.proxy(RULE).start().await;
    let (mut s, _) = login(
        proxy.addr,
        &startup((3, 0), &[("user", TRUST_USER), ("database", &db.name)]),
    )
    .await;
    send(&mut s, &[parse("SELECT 42"), sync()].concat()).await;
    assert_eq!(within(20, "Parse", replies(&mut s, 1)).await, ["1", "Z"]);
    let mut named = cstr("jit_off");
    named.extend(cstr("SELECT set_config('jit', 'off', false)"));
    named.extend(0i16.to_be_bytes());
    let mut bind = cstr("");
    bind.extend(cstr("jit_off"));
    bind.extend([0u8; 6]);
    let mut execute = cstr("");
    execute.extend(0i32.to_be_bytes());
    let batch = [
        message(b'P', &named),
        message(b'B', &bind),
        message(b'E', &execute),
        sync(),
    ];
    send(&mut s, &batch.concat()).await;
    assert_eq!(
        within(20, "set_config", replies(&mut s, 1)).await,
        ["1", "2", "Doff", "C", "Z"]
    );
    send(&mut s, &[bind_execute(), sync()].concat()).await;
    assert_eq!(
        within(20, "the unnamed statement", replies(&mut s, 1)).await,
        ["2", "D42", "C", "Z"]
    );
}

/// pgshim's own statements on a session are closed even when they fail: an
/// SQL `PREPARE` whose table the new path does not reach is prepared again
/// by pgshim (and fails), and nothing of pgshim's is left in the session's
/// prepared statements; once the path reaches the table again, it runs.
#[tokio::test]
async fn a_failed_reprepare_leaves_nothing_of_pgshims_behind() {
    let db = Db::create(
        "sp_reprepare_fail",
        &format!(
            "{SETUP} CREATE SCHEMA s1; CREATE TABLE s1.t (x int); INSERT INTO s1.t VALUES (1);"
        ),
    )
    .await;
    let proxy = db.proxy(RULE).start().await;
    let client = db.through(&proxy).await;
    for sql in [
        "SET search_path = s1, public",
        "PREPARE p AS SELECT x FROM t",
        "SET search_path = public",
        "SELECT 1",
    ] {
        simple_rows(&client, sql).await.unwrap();
    }
    let leftovers =
        |rows: Vec<String>| rows.into_iter().filter(|r| r.starts_with("pgshim")).count();
    let named = simple_rows(&client, "SELECT name FROM pg_prepared_statements")
        .await
        .unwrap()
        .0;
    assert_eq!(leftovers(named), 0);
    simple_rows(&client, "SET search_path = s1, public")
        .await
        .unwrap();
    let named = simple_rows(&client, "SELECT name FROM pg_prepared_statements")
        .await
        .unwrap()
        .0;
    assert_eq!(named, ["p"]);
    assert_eq!(simple_rows(&client, "EXECUTE p").await.unwrap().0, ["1"]);
}
