//! Every `keel sessions` subcommand works offline, on a database file no
//! server holds: tables by default, `--json` that parses back to what the
//! server stored, JSON lines from `export`, the hashed `key` of a listing
//! working in `show` and `rm`, sweeps in bounded batches that stay quiet when
//! piped, and expiry judged as the server that wrote the file judged it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{Dir, Server, demo_sessions, keys, offline, populate};

#[test]
fn every_subcommand_works_offline_on_a_file_a_server_wrote() {
    let dir = Dir::new();
    let server = Server::start(&dir, &[]);
    demo_sessions(&server, 3, "ada");
    server.stop();
    let db = dir.db();

    // list --json: three counters and the logged-in session.
    let listing = offline(&db, &["list", "--json"]).json();
    let sessions = listing.as_array().unwrap();
    assert_eq!(sessions.len(), 4, "{listing:#}");
    for session in sessions {
        assert_eq!(session["key"].as_str().unwrap().len(), 64);
        assert_eq!(session["expired"], false);
        assert!(session.get("data").is_none(), "listings carry no data");
    }
    let ada: Vec<&serde_json::Value> = sessions
        .iter()
        .filter(|s| s["principal"] == "ada")
        .collect();
    assert_eq!(ada.len(), 1);

    // The table lists the same keys.
    let table = offline(&db, &["list"]).ok();
    assert!(table.starts_with("KEY"), "{table}");
    for key in keys(&listing) {
        assert!(table.contains(&key), "{table}");
    }

    // show KEY (JSON and text): the stored counts, decoded without app types.
    let mut counts = BTreeSet::new();
    for key in keys(&listing) {
        let shown = offline(&db, &["show", &key, "--json"]).json();
        assert_eq!(shown["key"], key.as_str());
        if let Some(count) = shown["data"]["keel.demo"]["count"].as_u64() {
            counts.insert(count);
        }
        let text = offline(&db, &["show", &key]).ok();
        assert!(
            text.contains(&key) && text.contains("last access"),
            "{text}"
        );
    }
    // Three clients counted 1, 2 and 3; the logged-in one counted 1.
    assert_eq!(counts, BTreeSet::from([1, 2, 3]));

    // export: one JSON object per line, each with its data.
    let export = offline(&db, &["export"]).ok();
    let lines: Vec<serde_json::Value> = export
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let exported: Vec<String> = lines
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported, keys(&listing), "export is in key order");
    assert!(lines.iter().all(|l| l["data"].is_object()));

    // stats --json and text.
    let stats = offline(&db, &["stats", "--json"]).json();
    assert_eq!(stats["sessions"], 4);
    assert_eq!(stats["live"], 4);
    assert_eq!(stats["expired"], 0);
    assert!(stats["value_bytes"].as_u64().unwrap() > 0);
    assert!(stats["file_bytes"].as_u64().unwrap() > 0);
    assert!(stats["age_seconds"]["p99"].is_u64());
    assert!(stats["idle_seconds"]["max"].is_u64());
    assert!(stats["server"].is_null(), "no server counters offline");
    let text = offline(&db, &["stats"]).ok();
    assert!(text.contains("4 (4 live, 0 expired"), "{text}");

    // revoke-principal: only ada's session goes.
    let revoked = offline(&db, &["revoke-principal", "ada", "--json"]).json();
    assert_eq!(
        revoked,
        serde_json::json!({"principal": "ada", "removed": 1})
    );
    let text = offline(&db, &["revoke-principal", "ada"]).ok();
    assert!(text.contains("removed 0 sessions"), "{text}");

    // rm KEY: the session goes; a second rm fails naming it.
    let victim = first_key(&db);
    let removed = offline(&db, &["rm", &victim, "--json"]).json();
    assert_eq!(removed["removed"], 1);
    let again = offline(&db, &["rm", &victim]).fails();
    assert!(again.contains(&format!("no session {victim}")), "{again}");
    let missing = offline(&db, &["show", &victim]).fails();
    assert!(missing.contains("no session"), "{missing}");
    assert_eq!(
        offline(&db, &["list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // sweep: nothing has expired.
    let swept = offline(&db, &["sweep", "--json"]).json();
    assert_eq!(swept["removed"], 0);
    assert_eq!(swept["more"], false);
    let text = offline(&db, &["sweep"]).ok();
    assert!(text.starts_with("swept 0 expired sessions"), "{text}");
}

fn first_key(db: &std::path::Path) -> String {
    keys(&offline(db, &["list", "--json"]).json())
        .into_iter()
        .next()
        .unwrap()
}

#[test]
fn an_offline_sweep_removes_only_expired_sessions_in_bounded_batches_quietly_when_piped() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 50, 20, &[]);
    let before = offline(&db, &["stats", "--json"]).json();
    assert_eq!(
        (before["sessions"].as_u64(), before["expired"].as_u64()),
        (Some(50), Some(20))
    );

    let run = offline(&db, &["sweep", "--batch", "7", "--json"]);
    assert!(
        run.stderr.is_empty(),
        "no progress when piped: {:?}",
        run.stderr
    );
    let swept = run.json();
    assert_eq!(swept["removed"], 20);
    assert_eq!(swept["batches"], 3, "batches of at most 7: {swept}");
    assert_eq!(swept["more"], false);

    let after = offline(&db, &["stats", "--json"]).json();
    assert_eq!(
        (after["sessions"].as_u64(), after["expired"].as_u64()),
        (Some(30), Some(0))
    );
    assert!(
        offline(&db, &["list", "--all", "--json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["expired"] == false)
    );
}

#[test]
fn listings_page_with_after_and_limit_and_cover_every_session_once() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 25, 0, &[]);
    let all = keys(&offline(&db, &["list", "--all", "--json"]).json());
    assert_eq!(all.len(), 25);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "listed in key order");

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["list", "--limit", "10", "--json"];
        if let Some(after) = &after {
            args.extend_from_slice(&["--after", after]);
        }
        let run = offline(&db, &args);
        let hint = run.stderr.clone();
        let page = keys(&run.json());
        if page.len() == 10 && paged.len() + 10 < 25 {
            assert!(
                hint.contains("--after"),
                "a full page says how to go on: {hint:?}"
            );
        }
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // The default limit is large enough for all of them.
    assert_eq!(keys(&offline(&db, &["list", "--json"]).json()), all);
}

#[test]
fn export_to_a_file_writes_one_session_per_line_with_its_data() {
    let dir = Dir::new();
    let db = dir.db();
    populate(&db, 1200, 0, &[]);
    let out = dir.path().join("export.jsonl");
    let run = offline(&db, &["export", "--output", out.to_str().unwrap()]);
    assert!(run.stderr.is_empty(), "quiet when not on a terminal");
    assert!(run.ok().is_empty(), "nothing on stdout with --output");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1200, "more than two pages of 500");
    let unique: BTreeSet<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 1200);
    assert!(
        lines
            .iter()
            .all(|l| l["data"]["keel.demo"]["count"].is_u64())
    );
}

#[test]
fn offline_commands_judge_expiry_as_the_server_that_wrote_the_file() {
    let dir = Dir::new();
    let db = dir.db();
    // Last accessed 170 s ago: expired under timeout 100 + resolution 10,
    // live under the defaults (3600 + 600).
    populate(&db, 10, 4, &["--timeout", "100", "--resolution", "10"]);
    let defaults = offline(&db, &["stats", "--json"]).json();
    assert_eq!(defaults["expired"], 0);
    assert_eq!(defaults["expiry"]["timeout"], 3600);
    let flags = offline(
        &db,
        &["stats", "--json", "--timeout", "100", "--resolution", "10"],
    )
    .json();
    assert_eq!(flags["expired"], 4);

    // A server run with that policy records it in the file.
    let server = Server::start(
        &dir,
        &[
            "--timeout",
            "100",
            "--resolution",
            "10",
            "--sweep-interval",
            "0",
        ],
    );
    server.stop();
    let recorded = offline(&db, &["stats", "--json"]).json();
    assert_eq!(recorded["expiry"]["timeout"], 100);
    assert_eq!(recorded["expired"], 4);
    let swept = offline(&db, &["sweep", "--json"]).json();
    assert_eq!(swept["removed"], 4);
}
