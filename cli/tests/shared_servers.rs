//! Several `keel serve` on one shared database (PostgreSQL, Redis) share
//! sessions with every guarantee they have alone: a cookie from one works on
//! the other; 32 concurrent increments of one client split across two
//! servers give exactly 32; revoking a principal on one ends its sessions on
//! the other; kill -9 of one during a burst loses no acknowledged write;
//! cutting the link to the database gives quick 503s and recovery without a
//! restart; a slow database never stalls requests that do not need it (no
//! worker blocks on a round trip); an unreachable database at start is a
//! clear error; `keel sessions --db URL` works while servers run. Every test
//! runs on each backend (the macro at the bottom).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use common::{
    Dir, Server,
    shared::{Proxy, SharedDb, TestClusterPrefix, TestDatabase, TestPrefix},
};

/// `keel serve --db URL --admin-token-file DIR/token ARGS`.
fn serve(dir: &Dir, url: &str, args: &[&str]) -> Server {
    let token = dir.token_file();
    let mut all = vec!["--db", url, "--admin-token-file", token.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start_with(dir, &all)
}

/// Two servers on a fresh database (the database and the directory live as
/// long as the caller keeps them).
fn two_servers<D: SharedDb>() -> (D, Dir, Server, Server) {
    let db = D::new();
    let dir = Dir::new();
    let a = serve(&dir, &db.url(None), &[]);
    let b = serve(&dir, &db.url(None), &[]);
    (db, dir, a, b)
}

fn count(server: &Server, cookie: &str) -> u64 {
    let answer = server.request("GET", "/api/count", None, Some(cookie));
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["count"].as_u64().unwrap()
}

fn two_servers_share_cookies_and_lose_no_concurrent_increment<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let (_db, _dir, a, b) = two_servers::<D>();

    let first = a.request("POST", "/api/count", None, None);
    assert_eq!(first.status, 200, "{first:?}");
    let cookie = first.session_cookie().unwrap();
    assert_eq!(count(&b, &cookie), 1, "B reads A's session with A's cookie");

    let servers = Arc::new([a, b]);
    let start = Arc::new(Barrier::new(32));
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let (servers, start, cookie) =
                (Arc::clone(&servers), Arc::clone(&start), cookie.clone());
            thread::spawn(move || {
                start.wait();
                servers[i % 2]
                    .request("POST", "/api/count", None, Some(&cookie))
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(count(&servers[0], &cookie), 33);
    assert_eq!(count(&servers[1], &cookie), 33);
}

fn revoking_a_principal_on_one_server_ends_its_sessions_on_the_other<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let (_db, _dir, a, b) = two_servers::<D>();
    let anonymous = a
        .request("POST", "/api/count", None, None)
        .session_cookie()
        .unwrap();
    let login = a.request("POST", "/api/login?user=alice", None, Some(&anonymous));
    assert_eq!(login.status, 200, "{login:?}");
    let cookie = login.session_cookie().unwrap();
    assert_eq!(count(&a, &cookie), 1);

    let revoked = b.admin("DELETE", "/admin/principals/alice/sessions");
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.json()["removed"], 1);
    assert_eq!(count(&a, &cookie), 0, "the session is gone on A too");
    let next = a.request("POST", "/api/count", None, Some(&cookie));
    assert_eq!(
        next.json()["count"],
        1,
        "a revoked session is not resurrected"
    );
    assert_ne!(next.session_cookie(), Some(cookie), "a new id is minted");
}

fn kill_9_of_one_server_during_a_burst_loses_no_acknowledged_write<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let (_db, _dir, mut a, b) = two_servers::<D>();
    let cookies: Vec<String> = (0..8)
        .map(|_| {
            a.request("POST", "/api/count", None, None)
                .session_cookie()
                .unwrap()
        })
        .collect();
    let url = a.url.clone();
    let workers: Vec<_> = cookies
        .iter()
        .cloned()
        .map(|cookie| {
            let url = url.clone();
            thread::spawn(move || {
                // The highest count A acknowledged for this client.
                let mut acknowledged = 1;
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    match common::try_request("POST", &format!("{url}/api/count"), &cookie) {
                        Some((200, body)) => {
                            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                            acknowledged = json["count"].as_u64().unwrap();
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    a.kill();
    let acknowledged: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(
        acknowledged.iter().any(|n| *n > 1),
        "the burst did run: {acknowledged:?}"
    );
    for (cookie, acked) in cookies.iter().zip(&acknowledged) {
        let stored = count(&b, cookie);
        // Every acknowledged increment is kept; one in flight at the kill
        // may have committed without its answer.
        assert!(
            stored == *acked || stored == acked + 1,
            "stored {stored}, acknowledged {acked}"
        );
    }
}

fn a_cut_link_gives_quick_503s_and_the_server_recovers_by_itself<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let db = D::new();
    let dir = Dir::new();
    let proxy = Proxy::start(D::ADDRESS);
    let a = serve(&dir, &db.url(Some(&proxy)), &[]);
    let cookie = a
        .request("POST", "/api/count", None, None)
        .session_cookie()
        .unwrap();
    assert_eq!(count(&a, &cookie), 1);

    proxy.cut();
    for method in ["GET", "POST"] {
        let started = Instant::now();
        let url = format!("{}/api/count", a.url);
        let answer = common::try_request(method, &url, &cookie)
            .unwrap_or_else(|| panic!("{method}: no answer in 60 s; {}", a.logs()));
        assert_eq!(answer.0, 503, "{method}: {answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{method} took {:?}",
            started.elapsed()
        );
    }
    // A request that needs no session still works.
    assert_eq!(a.request("GET", "/api/count", None, None).status, 200);

    proxy.restore();
    assert!(
        common::eventually(Duration::from_secs(30), || {
            a.request("POST", "/api/count", None, Some(&cookie)).status == 200
        }),
        "no recovery: {}",
        a.logs()
    );
    assert_eq!(count(&a, &cookie), 2, "only the acknowledged increments");
}

fn a_slow_database_never_stalls_requests_that_do_not_need_it<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let db = D::new();
    let dir = Dir::new();
    let proxy = Proxy::start(D::ADDRESS);
    let a = serve(&dir, &db.url(Some(&proxy)), &[]);
    let cookies: Vec<String> = (0..8)
        .map(|_| {
            a.request("POST", "/api/count", None, None)
                .session_cookie()
                .unwrap()
        })
        .collect();
    // Redis multiplexes every request on one connection: its chunks queue
    // behind each other in the proxy, so the delay is shorter there.
    let delay = Duration::from_millis(if D::NAME == "Redis" { 400 } else { 1500 });
    proxy.set_delay(delay);
    let url = a.url.clone();
    let slow: Vec<_> = cookies
        .into_iter()
        .map(|cookie| {
            let url = url.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let answer = common::try_request("POST", &format!("{url}/api/count"), &cookie);
                (answer.map(|(status, _)| status), started.elapsed())
            })
        })
        .collect();
    // Eight requests now wait on the database, more than the server's worker
    // threads: a request without a session must not wait behind them.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let fast = a.request("GET", "/api/count", None, None);
    let fast_took = started.elapsed();
    assert_eq!(fast.status, 200);
    let results: Vec<_> = slow.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(
        results
            .iter()
            .all(|(status, took)| *status == Some(200) && *took >= delay),
        "the slow requests did wait on {}: {results:?}",
        D::NAME
    );
    assert!(
        fast_took < delay / 3,
        "a request without a session waited {fast_took:?} behind requests waiting on {}",
        D::NAME
    );
}

fn an_unreachable_database_at_start_is_a_clear_error_within_30_s<D: SharedDb>() {
    let started = Instant::now();
    let (url, named) = D::UNREACHABLE;
    let run = common::keel(&["serve", "--db", url, "--addr", "127.0.0.1:0"]);
    let stderr = run.fails();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for name in named {
        assert!(stderr.contains(name), "names {name}: {stderr}");
    }
}

fn keel_sessions_manages_the_database_while_servers_run<D: SharedDb>() {
    if D::skip() {
        return;
    }
    let (db, _dir, a, b) = two_servers::<D>();
    let url = db.url(None);
    let admin = |args: &[&str]| {
        let mut all = vec!["sessions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--db", &url]);
        common::keel(&all)
    };
    let cookies = common::demo_sessions(&a, 3, "ada");
    // The three counters, the logged-in session (its pre-login id is gone).
    let listing = admin(&["list", "--json"]).json();
    let keys = common::keys(&listing);
    assert_eq!(keys.len(), 4, "{listing:#}");
    let stats = admin(&["stats", "--json"]).json();
    assert_eq!(
        (stats["sessions"].as_u64(), stats["live"].as_u64()),
        (Some(4), Some(4))
    );
    let mut counts: Vec<u64> = keys
        .iter()
        .filter_map(|key| {
            admin(&["show", key, "--json"]).json()["data"]["keel.demo"]["count"].as_u64()
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2, 3]);

    // Revoked offline while both servers run: gone on both.
    let revoked = admin(&["revoke-principal", "ada", "--json"]).json();
    assert_eq!(revoked["removed"], 1);
    let logged_in = cookies.last().unwrap();
    assert_eq!(count(&a, logged_in), 0);
    assert_eq!(count(&b, logged_in), 0);
    let first = &cookies[0];
    assert_eq!(count(&b, first), 1);
    assert_eq!(
        admin(&["list", "--json"]).json().as_array().unwrap().len(),
        3
    );

    // The URL's password never shows in what the command prints.
    let with_password = D::UNREACHABLE.0.replacen("://", "://keel:s3cret-pw@", 1);
    let with_password =
        with_password.replacen("keel:s3cret-pw@postgres@", "postgres:s3cret-pw@", 1);
    let wrong = common::keel(&["sessions", "list", "--db", &with_password]);
    let printed = wrong.all();
    assert!(!wrong.success);
    assert!(printed.contains("127.0.0.1:1"), "{printed}");
    assert!(!printed.contains("s3cret-pw"), "{printed}");
}

macro_rules! on_every_shared_database {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $( #[test] fn $test() { super::$test::<super::TestDatabase>() } )*
        }
        mod redis {
            $( #[test] fn $test() { super::$test::<super::TestPrefix>() } )*
        }
    };
}

/// On the three-master Redis Cluster: every test that needs no proxy in
/// front of the database (a cluster client learns the nodes' addresses from
/// the cluster and would go around it).
mod redis_cluster {
    use super::TestClusterPrefix;

    macro_rules! on_the_cluster {
        ($($test:ident),* $(,)?) => {
            $( #[test] fn $test() { super::$test::<TestClusterPrefix>() } )*
        };
    }

    on_the_cluster!(
        two_servers_share_cookies_and_lose_no_concurrent_increment,
        revoking_a_principal_on_one_server_ends_its_sessions_on_the_other,
        kill_9_of_one_server_during_a_burst_loses_no_acknowledged_write,
        an_unreachable_database_at_start_is_a_clear_error_within_30_s,
        keel_sessions_manages_the_database_while_servers_run,
    );
}

on_every_shared_database!(
    two_servers_share_cookies_and_lose_no_concurrent_increment,
    revoking_a_principal_on_one_server_ends_its_sessions_on_the_other,
    kill_9_of_one_server_during_a_burst_loses_no_acknowledged_write,
    a_cut_link_gives_quick_503s_and_the_server_recovers_by_itself,
    a_slow_database_never_stalls_requests_that_do_not_need_it,
    an_unreachable_database_at_start_is_a_clear_error_within_30_s,
    keel_sessions_manages_the_database_while_servers_run,
);
