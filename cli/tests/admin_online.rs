//! The admin API of a running `keel serve` and every `keel sessions`
//! subcommand online (`--url`, `--token-file`): JSON that parses back, paging
//! with `after` and `limit`, a 401 for a missing or wrong token on every
//! route (and nothing changed by a refused request), 404 when the admin API
//! is disabled, Prometheus metrics, and expired sessions swept in bounded
//! batches by the background sweeper and on demand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Dir, Server, TOKEN, demo_sessions, eventually, keys, populate};

#[test]
fn every_subcommand_works_online_against_a_running_server() {
    let dir = Dir::new();
    let server = Server::start(&dir, &["--sweep-interval", "0"]);
    demo_sessions(&server, 3, "ada");

    let listing = server.online(&["list", "--json"]).json();
    let all = keys(&listing);
    assert_eq!(all.len(), 4, "{listing:#}");
    let table = server.online(&["list"]).ok();
    assert!(all.iter().all(|key| table.contains(key)), "{table}");

    let mut counts = BTreeSet::new();
    for key in &all {
        let shown = server.online(&["show", key, "--json"]).json();
        assert_eq!(shown["key"], key.as_str());
        if let Some(count) = shown["data"]["keel.demo"]["count"].as_u64() {
            counts.insert(count);
        }
    }
    assert_eq!(counts, BTreeSet::from([1, 2, 3]));
    let text = server.online(&["show", &all[0]]).ok();
    assert!(text.contains(&all[0]), "{text}");

    let export = server.online(&["export"]).ok();
    let exported: Vec<String> = export
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(line["data"].is_object());
            line["key"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(exported, all);

    let stats = server.online(&["stats", "--json"]).json();
    assert_eq!(stats["sessions"], 4);
    let transactions = &stats["server"]["transactions"];
    // 1 + 2 + 3 increments, one more and a login: at least 8 commits.
    assert!(transactions["commits"].as_u64().unwrap() >= 8, "{stats:#}");
    for counter in ["aborts", "conflicts", "retries", "failed_commits"] {
        assert!(transactions[counter].is_u64(), "{counter}: {stats:#}");
    }
    let text = server.online(&["stats"]).ok();
    assert!(
        text.contains("commits") && text.contains("server uptime"),
        "{text}"
    );

    let revoked = server.online(&["revoke-principal", "ada", "--json"]).json();
    assert_eq!(revoked["removed"], 1);

    let victim = keys(&server.online(&["list", "--json"]).json())[0].clone();
    assert_eq!(
        server.online(&["rm", &victim, "--json"]).json()["removed"],
        1
    );
    let again = server.online(&["rm", &victim]).fails();
    assert!(again.contains(&format!("no session {victim}")), "{again}");
    let missing = server.online(&["show", &victim]).fails();
    assert!(missing.contains("no session"), "{missing}");

    let swept = server.online(&["sweep", "--json"]).json();
    assert_eq!(
        (swept["removed"].as_u64(), swept["more"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(keys(&server.online(&["list", "--json"]).json()).len(), 2);
}

#[test]
fn the_admin_api_answers_json_pages_and_deletes_by_key() {
    let dir = Dir::new();
    populate(&dir.db(), 7, 0, &[]);
    let server = Server::start(&dir, &["--sweep-interval", "0"]);

    let first = server.admin("GET", "/admin/sessions?limit=3");
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let first = keys(&first.json());
    assert_eq!(first.len(), 3);
    let rest = keys(
        &server
            .admin("GET", &format!("/admin/sessions?after={}", first[2]))
            .json(),
    );
    assert_eq!(rest.len(), 4);
    let all = keys(&server.admin("GET", "/admin/sessions").json());
    assert_eq!([first, rest.clone()].concat(), all);

    let with_data = server
        .admin("GET", "/admin/sessions?limit=2&data=true")
        .json();
    assert!(with_data[0]["data"]["keel.demo"]["count"].is_u64());

    // A session without a principal (user-0's is revoked below).
    let key = &server
        .admin("GET", "/admin/sessions")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["principal"].is_null())
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = server.admin("GET", &format!("/admin/sessions/{key}"));
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["key"], key.as_str());
    let deleted = server.admin("DELETE", &format!("/admin/sessions/{key}"));
    assert_eq!(
        (deleted.status, deleted.json()["removed"].as_u64()),
        (200, Some(1))
    );
    let gone = server.admin("GET", &format!("/admin/sessions/{key}"));
    assert_eq!(
        (gone.status, gone.json()["code"].as_str()),
        (404, Some("no_such_session"))
    );
    let gone = server.admin("DELETE", &format!("/admin/sessions/{key}"));
    assert_eq!(gone.status, 404);

    let bad = server.admin("GET", "/admin/sessions/not-a-key");
    assert_eq!(
        (bad.status, bad.json()["code"].as_str()),
        (400, Some("bad_request"))
    );
    let bad = server.admin("GET", "/admin/sessions?after=zz");
    assert_eq!(bad.status, 400);

    // populate gives every tenth session a principal: session 0 is user-0's.
    let revoked = server.admin("DELETE", "/admin/principals/user-0/sessions");
    assert_eq!(revoked.status, 200);
    assert_eq!(
        revoked.json(),
        serde_json::json!({"principal": "user-0", "removed": 1})
    );
    let odd_name = server.admin("DELETE", "/admin/principals/a%20b%2Fc/sessions");
    assert_eq!(odd_name.json()["principal"], "a b/c");

    let swept = server.admin("POST", "/admin/sweep");
    assert_eq!(swept.status, 200);
    assert_eq!(swept.json()["removed"], 0);

    let stats = server.admin("GET", "/admin/stats").json();
    assert_eq!(stats["sessions"], 5);
    assert!(stats["server"]["uptime_seconds"].is_u64());

    let unknown = server.admin("GET", "/admin/nothing-here");
    assert_eq!(unknown.status, 404);
}

#[test]
fn every_admin_route_answers_401_to_a_missing_or_wrong_token_and_changes_nothing() {
    let dir = Dir::new();
    let server = Server::start(&dir, &["--sweep-interval", "0"]);
    demo_sessions(&server, 1, "ada");
    let key = keys(&server.admin("GET", "/admin/sessions").json())[0].clone();
    let routes = [
        ("GET", "/admin/sessions".to_owned()),
        ("GET", format!("/admin/sessions/{key}")),
        ("DELETE", format!("/admin/sessions/{key}")),
        ("DELETE", "/admin/principals/ada/sessions".to_owned()),
        ("POST", "/admin/sweep".to_owned()),
        ("GET", "/admin/stats".to_owned()),
    ];
    let wrong = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    let before = server.admin("GET", "/admin/sessions").json();

    // The CLI reports a refused token clearly (the first failure of ten).
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "not the token").unwrap();
    let refused = server.online(&["list"]).fails();
    assert!(
        refused.contains("401") && refused.contains("--token-file"),
        "{refused}"
    );
    let mut failures = 1;
    for (method, path) in &routes {
        for auth in &wrong {
            let response = server.request(method, path, auth.as_deref(), None);
            failures += 1;
            // After 10 failures from one address the refusal is 429 (see
            // admin_errors.rs); either way nothing is done.
            if failures > 10 {
                assert_eq!(response.status, 429, "{method} {path} with {auth:?}");
                assert_eq!(response.json()["code"], "too_many_failures");
                continue;
            }
            assert_eq!(response.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(response.json()["code"], "unauthorized");
            assert!(
                response
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
    }
    // The refused DELETEs deleted nothing.
    assert_eq!(server.admin("GET", "/admin/sessions").json(), before);
    for (method, path) in &routes {
        let right = server.admin(method, path);
        assert_eq!(right.status, 200, "{method} {path}: {right:?}");
    }
    assert!(!keys(&server.admin("GET", "/admin/sessions").json()).contains(&key));
}

#[test]
fn without_an_admin_token_file_the_admin_api_answers_404() {
    let dir = Dir::new();
    let db = dir.db();
    let server = Server::start_with(&dir, &["--db", db.to_str().unwrap()]);
    for (method, path) in [
        ("GET", "/admin/sessions"),
        ("GET", "/admin/stats"),
        ("POST", "/admin/sweep"),
        ("DELETE", "/admin/principals/ada/sessions"),
    ] {
        let response = server.request(method, path, Some(&format!("Bearer {TOKEN}")), None);
        assert_eq!(response.status, 404, "{method} {path}");
        assert_eq!(response.json()["code"], "admin_disabled");
    }
    let online = server.online(&["list"]).fails();
    assert!(online.contains("--admin-token-file"), "{online}");
    // The demo and the metrics still answer.
    assert_eq!(server.request("GET", "/api/count", None, None).status, 200);
    assert_eq!(server.request("GET", "/metrics", None, None).status, 200);
}

#[test]
fn metrics_are_served_in_the_prometheus_text_format_without_a_token() {
    let dir = Dir::new();
    let server = Server::start(&dir, &["--sweep-interval", "0"]);
    demo_sessions(&server, 2, "ada");
    assert_eq!(server.request("POST", "/api/oops", None, None).status, 500);
    assert_eq!(server.admin("GET", "/admin/stats").status, 200);

    let metrics = server.request("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.body;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    };
    for (name, kind) in [
        ("keel_commits_total", "counter"),
        ("keel_commit_failures_total", "counter"),
        ("keel_aborts_total", "counter"),
        ("keel_conflicts_total", "counter"),
        ("keel_retries_total", "counter"),
        ("keel_commit_duration_seconds", "histogram"),
        ("keel_sessions", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}")),
            "{name}:\n{text}"
        );
    }
    // 1 + 2 increments, one more and a login: 5 commits; /api/oops failed.
    assert!(value("keel_commits_total") >= 5.0, "{text}");
    assert!(value("keel_commit_failures_total") >= 1.0, "{text}");
    assert!(value("keel_commit_duration_seconds_count") >= 5.0, "{text}");
    assert!(value("keel_commit_duration_seconds_sum") > 0.0, "{text}");
    assert_eq!(value("keel_sessions"), 3.0, "refreshed by /admin/stats");
    assert!(!text.contains("key="), "no per-session labels");
}

#[test]
fn the_background_sweeper_removes_expired_sessions_and_logs_it() {
    let dir = Dir::new();
    populate(&dir.db(), 30, 12, &[]);
    let server = Server::start(&dir, &["--sweep-interval", "1", "--sweep-batch", "5"]);
    let swept = eventually(Duration::from_secs(10), || {
        let stats = server.admin("GET", "/admin/stats").json();
        stats["expired"] == 0 && stats["server"]["sweeper"]["removed"] == 12
    });
    assert!(swept, "{:#}", server.admin("GET", "/admin/stats").json());
    let stats = server.admin("GET", "/admin/stats").json();
    assert_eq!(stats["sessions"], 18);
    let metrics = server.request("GET", "/metrics", None, None).body;
    assert!(metrics.contains("keel_sweep_removed_total 12"), "{metrics}");
    assert!(metrics.contains("keel_sweep_batches_total"), "{metrics}");
    let logs = server.stop();
    assert!(
        logs.contains("swept expired sessions") && logs.contains("removed=12"),
        "{logs}"
    );
}

#[test]
fn an_online_sweep_goes_in_bounded_batches_while_the_server_answers() {
    let dir = Dir::new();
    populate(&dir.db(), 30, 12, &[]);
    let server = Server::start(&dir, &["--sweep-interval", "0"]);
    let run = server.online(&["sweep", "--batch", "5", "--json"]);
    assert!(
        run.stderr.is_empty(),
        "no progress when piped: {:?}",
        run.stderr
    );
    let swept = run.json();
    assert_eq!(swept["removed"], 12);
    assert_eq!(swept["batches"], 3, "5 + 5 + 2: {swept}");
    assert_eq!(server.request("GET", "/api/count", None, None).status, 200);
    let stats = server.admin("GET", "/admin/stats").json();
    assert_eq!(
        (stats["sessions"].as_u64(), stats["expired"].as_u64()),
        (Some(18), Some(0))
    );

    // The API's `max` bounds one call.
    let dir = Dir::new();
    populate(&dir.db(), 20, 20, &[]);
    let server = Server::start(&dir, &["--sweep-interval", "0"]);
    let partial = server.admin("POST", "/admin/sweep?batch=4&max=8").json();
    assert_eq!(
        (
            partial["removed"].as_u64(),
            partial["batches"].as_u64(),
            partial["more"].as_bool()
        ),
        (Some(8), Some(2), Some(true))
    );
}
