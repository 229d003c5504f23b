//! The fleet phase guard: a reload does not put a rule two steps from the
//! phase another live instance has in force; the instance keeps its rules and
//! says why in the reload answer and in `/rules`.
use crate::support::fleet::{converged, flip, named, ops_file, registry, row, FAST};
use crate::support::ops::run;
use crate::support::reloadable::{ab_rule, Reloadable};
use crate::support::rules::Db;
use crate::support::{eventually, unique_name};

#[tokio::test]
async fn contract_refused_while_another_instance_is_in_expand() {
    let db = Db::create(
        "fleet_guard",
        "CREATE TABLE t (id int PRIMARY KEY, a text, b text)",
    )
    .await;
    let rule = unique_name("fg");
    let rules = |phase: &str| format!("{FAST}{}", db.scope(&ab_rule(&rule, phase)));
    let ids = [unique_name("a"), unique_name("b"), unique_name("c")];
    let mut fleet = Vec::new();
    for id in &ids {
        fleet.push(Reloadable::start(named(id), &rules("expand")).await);
    }
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reg = registry(&db.name).await;
    converged(&reg, &all, &rule, "expand").await;
    flip(&fleet[0], &rules("migrate")).await;
    flip(&fleet[1], &rules("migrate")).await;
    converged(&reg, &all[..2], &rule, "migrate").await;

    fleet[0].replace_rules(&rules("contract"));
    let (status, body) = fleet[0].admin.post_reload().await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("instance {}", ids[2])) && error.contains("expand"),
        "names the instance two steps away: {error}"
    );
    assert_eq!(fleet[0].admin.phase(&rule).await, "migrate", "rules kept");
    let shown = fleet[0].admin.rules().await;
    assert!(
        shown["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains(&ids[2])),
        "{shown}"
    );
    eventually(20, "the refusal reaches the registry", || async {
        row(&reg, &ids[0])
            .await
            .and_then(|r| r.last_reload_error)
            .is_some_and(|e| e.contains(&ids[2]))
    })
    .await;
    let config = ops_file(FAST, &db.scope(&ab_rule(&rule, "migrate")));
    let text = run(&config, &["status"]).await;
    assert!(
        text.stdout.contains("last reload refused: rule"),
        "{}",
        text.stdout
    );

    flip(&fleet[2], &rules("migrate")).await;
    converged(&reg, &all, &rule, "migrate").await;
    flip(&fleet[0], &rules("contract")).await;
    assert_eq!(fleet[0].admin.phase(&rule).await, "contract");
    assert!(fleet[0].admin.rules().await["last_reload_error"].is_null());
    eventually(
        20,
        "a successful reload clears it in the registry",
        || async {
            row(&reg, &ids[0])
                .await
                .is_some_and(|r| r.last_reload_error.is_none())
        },
    )
    .await;
    for proxy in fleet {
        proxy.stop().await.unwrap();
    }
}
