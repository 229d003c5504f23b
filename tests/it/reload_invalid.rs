//! Refused reloads: a config file that does not parse, has an
//! unknown key, holds an invalid rule or one the schema cannot serve changes
//! nothing (the old rules stay, the version does not move), `POST /reload`
//! answers 422 with the reason and the failure counter goes up; settings that
//! only apply on restart are reported while the rest applies; and the phase
//! guard refuses a jump between expand and contract unless the rule forces it.
use crate::reload_triggers::{fixture, rule, view, EXPAND_VIEW, MIGRATE_VIEW};
use crate::support::certs::certs;
use crate::support::proxy::proxy;
use crate::support::reloadable::Reloadable;

/// Failed reloads counted so far (process-wide: compare before and after).
async fn failed_reloads(proxy: &Reloadable) -> f64 {
    proxy
        .admin
        .metrics()
        .await
        .get("pgshim_reloads_total", &[("result", "failed")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_old_rules_and_answers_422() {
    let db = fixture("reload_invalid").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let client = proxy.connect(&db.name).await;
    let version = proxy.admin.version().await;
    let good = proxy.text(&rule(&db, &id, "migrate"));

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "bad TOML",
            good.replace("phase = \"migrate\"", "phase = \"migrate"),
            vec![proxy.path.to_str().unwrap(), "line"],
        ),
        (
            "unknown key",
            format!("colour = \"blue\"\n{good}"),
            vec![proxy.path.to_str().unwrap(), "colour"],
        ),
        (
            "unknown phase",
            good.replace("phase = \"migrate\"", "phase = \"sideways\""),
            vec!["sideways"],
        ),
        (
            "transform that does not parse",
            format!("{}[rule.to_new]\nb = \"a +\"\n", good),
            vec![id.as_str()],
        ),
        (
            "column missing from the schema (catalog check)",
            good.replace("new = \"b\"", "new = \"zz\""),
            vec!["zz"],
        ),
    ];
    for (what, text, reason) in cases {
        let failed = failed_reloads(&proxy).await;
        proxy.replace_text(&text);
        let (status, body) = proxy.admin.post_reload().await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["ok"], false, "{what}: {body}");
        let error = body["error"].as_str().expect("error message");
        for needle in reason {
            assert!(
                error.contains(needle),
                "{what}: {needle:?} not in {error:?}"
            );
        }
        assert!(
            failed_reloads(&proxy).await > failed,
            "{what}: pgshim_reloads_total{{result=\"failed\"}} did not go up"
        );
        assert_eq!(proxy.admin.version().await, version, "{what}");
        assert_eq!(proxy.admin.phase(&id).await, "expand", "{what}");
        assert_eq!(view(&client).await, EXPAND_VIEW, "{what}");
        assert_eq!(
            view(&proxy.connect(&db.name).await).await,
            EXPAND_VIEW,
            "{what}: a new session"
        );
    }

    // Fixing the file reloads it.
    proxy.replace_text(&good);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(view(&client).await, MIGRATE_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_only_settings_are_reported_and_the_rest_applies() {
    let db = fixture("reload_restart").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let client = proxy.connect(&db.name).await;

    let c = certs();
    let admin_line = format!("listen = \"{}\"", proxy.admin.addr);
    let text = proxy
        .text(&rule(&db, &id, "migrate"))
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
        .replace(&admin_line, "listen = \"127.0.0.1:2\"")
        + &format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequired = false\n",
            c.proxy_cert.display(),
            c.proxy_key.display()
        );
    proxy.replace_text(&text);
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    let mut restart: Vec<String> = body["restart_needed"]
        .as_array()
        .expect("restart_needed list")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    restart.sort();
    assert_eq!(restart, ["[admin]", "[tls]", "listen"], "{body}");

    // The rules changed anyway, and the old listeners still serve.
    assert_eq!(view(&client).await, MIGRATE_VIEW);
    assert_eq!(view(&proxy.connect(&db.name).await).await, MIGRATE_VIEW);
    assert_eq!(proxy.admin.phase(&id).await, "migrate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_guard_refuses_expand_to_contract_unless_forced() {
    let db = fixture("reload_guard").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), &rule(&db, &id, "expand")).await;
    let client = proxy.connect(&db.name).await;
    let version = proxy.admin.version().await;
    let reload = |rules: String| {
        let proxy = &proxy;
        async move {
            proxy.replace_rules(&rules);
            proxy.admin.post_reload().await
        }
    };

    let (status, body) = reload(rule(&db, &id, "contract")).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().expect("error message");
    assert!(error.contains(&id) && error.contains("force"), "{error}");
    assert_eq!(proxy.admin.version().await, version);
    assert_eq!(proxy.admin.phase(&id).await, "expand");
    assert_eq!(view(&client).await, EXPAND_VIEW);

    let forced = rule(&db, &id, "contract") + "force = true\n";
    let (status, body) = reload(forced).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.admin.phase(&id).await, "contract");
    // Contract reads the new column for both shapes.
    assert_eq!(view(&client).await, MIGRATE_VIEW);

    let (status, body) = reload(rule(&db, &id, "expand")).await;
    assert_eq!(status, 422, "contract -> expand: {body}");
    assert_eq!(proxy.admin.phase(&id).await, "contract");

    let (status, body) = reload(rule(&db, &id, "migrate")).await;
    assert_eq!(status, 200, "contract -> migrate: {body}");
    let (status, body) = reload(rule(&db, &id, "expand")).await;
    assert_eq!(status, 200, "migrate -> expand: {body}");
    assert_eq!(view(&client).await, EXPAND_VIEW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_can_be_added_and_removed() {
    let db = fixture("reload_add").await;
    let id = format!("{}-ab", db.name);
    let proxy = Reloadable::start(proxy(), "").await;
    let client = proxy.connect(&db.name).await;
    // No rule: the columns are read as they are.
    assert_eq!(view(&client).await, "old|new");

    // A rule may arrive in any phase, including contract.
    proxy.replace_rules(&rule(&db, &id, "contract"));
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(view(&client).await, MIGRATE_VIEW);
    assert_eq!(proxy.admin.phase(&id).await, "contract");

    proxy.replace_rules("");
    let (status, body) = proxy.admin.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(view(&client).await, "old|new");
    let rules = proxy.admin.rules().await;
    assert_eq!(rules["rules"], serde_json::json!([]), "{rules}");
}
