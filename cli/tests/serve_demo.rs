//! `keel serve` keeps the demo contract of docs/design.md: every route answers as
//! specified over real HTTP on loopback, concurrent increments of one client
//! are never lost, data survives a restart, sessions expire, and a bad
//! database file is refused untouched. The HTML page's forms carry the
//! session's CSRF token and are refused without it, while the JSON API works
//! without one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "keel-serve-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `keel serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    fn request(&self, method: &str, path: &str, cookie: Option<&str>) -> Response {
        request(&self.addr, method, path, cookie)
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session cookie the response sets: Some(value) ("" when expired).
    fn session_cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        let pair = set.split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        assert_eq!(name, "keel_session");
        Some(value.to_owned())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
fn request(addr: &str, method: &str, path: &str, cookie: Option<&str>) -> Response {
    request_with(addr, method, path, cookie, &[], "")
}

/// [`request`] with extra headers and a body.
fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: keel_session={c}\r\n"))
        .unwrap_or_default();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let length = body.len();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// POST a urlencoded form `body` to `path`.
fn post_form(server: &Server, path: &str, cookie: Option<&str>, body: &str) -> Response {
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    request_with(&server.addr, "POST", path, cookie, &[form], body)
}

/// The CSRF token of every form of the page: all forms carry the same one.
fn page_token(page: &Response) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let tokens: Vec<&str> = page
        .body
        .match_indices(marker)
        .map(|(at, _)| {
            let rest = &page.body[at + marker.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert!(!tokens.is_empty(), "no form with a token: {}", page.body);
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_eq!(tokens[0].len(), 43, "{tokens:?}");
    tokens[0].to_owned()
}

/// Assert the 403 of the CSRF check, and that it set no cookie.
fn assert_csrf_refused(r: &Response) {
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], "csrf_token_mismatch");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("reload the page"),
        "{}",
        r.body
    );
    assert_eq!(r.session_cookie(), None);
}

fn db_arg(dir: &TempDir) -> String {
    dir.path().join("keel.redb").display().to_string()
}

#[test]
fn every_route_of_the_demo_answers_as_the_contract_says() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir)]);

    // A new client reading gets 0 and no cookie.
    let r = server.request("GET", "/api/count", None);
    assert_eq!((r.status, r.json()["count"].as_u64()), (200, Some(0)));
    assert_eq!(r.session_cookie(), None);

    // The first write creates the session and sets a secure-by-default cookie.
    let r = server.request("POST", "/api/count", None);
    assert_eq!((r.status, r.json()["count"].as_u64()), (200, Some(1)));
    let id = r.session_cookie().expect("cookie set on first write");
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );

    // The HTML page increments and renders the count through the template.
    let r = server.request("GET", "/", Some(&id));
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains(r#"<strong id="count">2</strong>"#),
        "{}",
        r.body
    );
    assert_eq!(
        r.session_cookie(),
        None,
        "an existing session needs no new cookie"
    );

    // The rejected commit: 500 naming the key; the increment is not kept.
    let r = server.request("POST", "/api/oops", Some(&id));
    assert_eq!(r.status, 500);
    let json = r.json();
    assert_eq!(json["key"], "oops");
    let error = json["error"].as_str().unwrap();
    assert!(error.contains("cannot be serialized"), "{error}");
    assert!(
        !r.body.contains("keel-store/"),
        "no internal name: {}",
        r.body
    );
    assert!(json["request_id"].is_string(), "{}", r.body);
    let r = server.request("GET", "/api/count", Some(&id));
    assert_eq!(r.json()["count"], 2);

    // A user name too long to revoke through the admin API's URL, or
    // empty, is refused with 400 and changes nothing.
    let long = "a".repeat(201);
    for user in [long.as_str(), ""] {
        let r = server.request("POST", &format!("/api/login?user={user}"), Some(&id));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("1 to 200 bytes")
        );
        assert_eq!(r.session_cookie(), None, "the id was not cycled");
    }
    let r = server.request(
        "POST",
        &format!("/api/login?user={}", "a".repeat(200)),
        Some(&id),
    );
    assert_eq!(r.status, 200, "200 bytes are accepted");
    let id = r.session_cookie().expect("a new id");

    // Login cycles the id: the data follows, the old id is dead.
    let r = server.request("POST", "/api/login?user=alice", Some(&id));
    assert_eq!(r.status, 200);
    let new_id = r.session_cookie().expect("a new id");
    assert_ne!(new_id, id);
    assert_eq!(
        server.request("GET", "/api/count", Some(&new_id)).json()["count"],
        2
    );
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        0
    );

    // Logout invalidates: cookie expired, data gone.
    let r = server.request("POST", "/api/logout", Some(&new_id));
    assert_eq!(r.status, 200);
    assert_eq!(r.session_cookie().as_deref(), Some(""));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        server.request("GET", "/api/count", Some(&new_id)).json()["count"],
        0
    );

    // A dead (validly signed) id is not reused: the next write mints a new one.
    let r = server.request("POST", "/api/count", Some(&new_id));
    let fresh = r.session_cookie().expect("a fresh id");
    assert_ne!(fresh, new_id);
    assert_eq!(r.json()["count"], 1);

    // A forged cookie is ignored.
    let r = server.request("GET", "/api/count", Some("forged-id"));
    assert_eq!(r.json()["count"], 0);
}

#[test]
fn thirty_two_concurrent_increments_of_one_client_are_all_kept() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir)]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    let addr = server.addr.clone();
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (addr, id) = (addr.clone(), id.clone());
            std::thread::spawn(move || request(&addr, "POST", "/api/count", Some(&id)).status)
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&status| status == 200)
        .count();
    assert_eq!(ok, 32, "every increment succeeded");
    let count = server.request("GET", "/api/count", Some(&id)).json()["count"].clone();
    assert_eq!(count, 33, "1 + 32: the count equals the number of 200s");
}

#[test]
fn data_survives_a_graceful_restart() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir)]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    server.request("POST", "/api/count", Some(&id));
    server.request("POST", "/api/count", Some(&id));
    let status = server.stop();
    assert!(status.success(), "SIGTERM shuts down cleanly: {status}");

    let server = Server::start(&["--db", &db_arg(&dir)]);
    let r = server.request("GET", "/api/count", Some(&id));
    assert_eq!(
        r.json()["count"],
        3,
        "the id and the data survived the restart"
    );
}

#[test]
fn data_survives_a_kill() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir)]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    server.request("POST", "/api/count", Some(&id));
    drop(server); // SIGKILL: every acknowledged commit was durable

    let server = Server::start(&["--db", &db_arg(&dir)]);
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        2
    );
}

#[test]
fn sessions_expire_after_timeout_plus_resolution() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir), "--timeout", "1", "--resolution", "1"]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        1
    );
    // Expired once now > L + timeout + resolution, i.e. at L + 3 at the latest.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        0
    );
    let r = server.request("POST", "/api/count", Some(&id));
    assert_eq!(r.json()["count"], 1);
    assert_ne!(r.session_cookie().expect("a new id"), id);
}

#[test]
fn the_memory_container_serves_the_same_api() {
    let server = Server::start(&["--memory"]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    assert_eq!(
        server.request("POST", "/api/count", Some(&id)).json()["count"],
        2
    );
    assert_eq!(server.request("POST", "/api/oops", Some(&id)).status, 500);
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        2
    );
}

#[test]
fn zope_format_ids_are_54_characters_signed_with_the_secret_file() {
    let dir = TempDir::new();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "zope-peer-bench-secret\n").unwrap();
    let server = Server::start(&[
        "--memory",
        "--id-format",
        "zope",
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    let id = server
        .request("POST", "/api/count", None)
        .session_cookie()
        .unwrap();
    assert_eq!(id.len(), 54);
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        1
    );
    // Keel's id verifies under zope's algorithm with the same secret (the
    // format itself is checked against the spec's vectors in keel-session).
    use keel_session::IdFormat;
    assert!(keel_session::ZopeIdFormat::new("zope-peer-bench-secret").verify(&id));
    assert!(!keel_session::ZopeIdFormat::new("another-secret").verify(&id));
}

#[test]
fn a_foreign_file_is_refused_by_name_and_left_untouched() {
    let dir = TempDir::new();
    let path = dir.path().join("not-a-db.redb");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--db",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not-a-db.redb"), "{stderr}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was not modified"
    );
}

#[test]
fn a_database_held_by_a_running_server_is_refused_with_a_hint() {
    let dir = TempDir::new();
    let _server = Server::start(&["--db", &db_arg(&dir)]);
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db", &db_arg(&dir)])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("keel.redb") && stderr.contains("--url"),
        "{stderr}"
    );
}

#[test]
fn the_page_forms_carry_the_csrf_token_and_work_with_it() {
    let dir = TempDir::new();
    let server = Server::start(&["--db", &db_arg(&dir)]);

    // The first visit creates the session and its token, rendered into the
    // login and reset forms.
    let page = server.request("GET", "/", None);
    assert_eq!(page.status, 200);
    let id = page
        .session_cookie()
        .expect("the visit created the session");
    let token = page_token(&page);
    assert!(page.body.contains(r#"action="/login""#), "{}", page.body);
    assert!(page.body.contains(r#"action="/reset""#), "{}", page.body);
    let again = server.request("GET", "/", Some(&id));
    assert_eq!(page_token(&again), token, "one token per session");

    // Reset with the token: the count is forgotten, back to the page.
    let r = post_form(&server, "/reset", Some(&id), &format!("csrf_token={token}"));
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/")),
        "{}",
        r.body
    );
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        0
    );

    // Login with the token: a new id and a new token; the old token is dead.
    let r = post_form(
        &server,
        "/login",
        Some(&id),
        &format!("user=alice+smith&csrf_token={token}"),
    );
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/")),
        "{}",
        r.body
    );
    let new_id = r.session_cookie().expect("login cycles the id");
    assert_ne!(new_id, id);
    let page = server.request("GET", "/", Some(&new_id));
    assert!(
        page.body
            .contains(r#"<strong id="user">alice smith</strong>"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"action="/logout""#), "{}", page.body);
    let new_token = page_token(&page);
    assert_ne!(new_token, token, "the token changed at login");
    assert_csrf_refused(&post_form(
        &server,
        "/reset",
        Some(&new_id),
        &format!("csrf_token={token}"),
    ));

    // The header works as well as the form field; logout expires the cookie.
    let r = request_with(
        &server.addr,
        "POST",
        "/logout",
        Some(&new_id),
        &[("X-CSRF-Token", &new_token)],
        "",
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.session_cookie().as_deref(), Some(""));
}

#[test]
fn the_page_forms_refuse_a_missing_or_wrong_token_with_403() {
    let server = Server::start(&["--memory"]);
    let page = server.request("GET", "/", None);
    let id = page.session_cookie().unwrap();
    let token = page_token(&page);

    assert_csrf_refused(&post_form(&server, "/reset", Some(&id), ""));
    assert_csrf_refused(&post_form(
        &server,
        "/reset",
        Some(&id),
        "csrf_token=forged",
    ));
    assert_csrf_refused(&post_form(
        &server,
        "/login",
        Some(&id),
        "user=mallory&csrf_token=",
    ));
    assert_csrf_refused(&server.request("POST", "/logout", Some(&id)));
    // A cross-site form without the victim's cookie makes no session either.
    assert_csrf_refused(&post_form(
        &server,
        "/reset",
        None,
        &format!("csrf_token={token}"),
    ));

    // Nothing was done: the count is still 1 and nobody is logged in.
    assert_eq!(
        server.request("GET", "/api/count", Some(&id)).json()["count"],
        1
    );
    let page = server.request("GET", "/", Some(&id));
    assert!(!page.body.contains("Logged in as"), "{}", page.body);
    assert_eq!(page_token(&page), token);
}

#[test]
fn the_json_api_works_without_a_token_in_a_session_that_has_one() {
    let server = Server::start(&["--memory"]);
    let page = server.request("GET", "/", None);
    let id = page.session_cookie().unwrap();
    page_token(&page);

    let r = server.request("POST", "/api/count", Some(&id));
    assert_eq!((r.status, r.json()["count"].as_u64()), (200, Some(2)));
    let r = server.request("POST", "/api/login?user=bob", Some(&id));
    assert_eq!(r.status, 200, "{}", r.body);
    let new_id = r.session_cookie().expect("a new id");
    let r = server.request("POST", "/api/logout", Some(&new_id));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.session_cookie().as_deref(), Some(""));
}

/// `--cookie-lifetime SECS`: the cookie carries Max-Age and is re-sent with
/// each request that uses the session (sliding, as zope's cookieLifetime);
/// without it, a browser-session cookie (no Max-Age, no Expires).
#[test]
fn the_cookie_lifetime_is_settable_and_slides() {
    let server = Server::start(&["--memory", "--cookie-lifetime", "3600"]);
    let r = server.request("POST", "/api/count", None);
    let set = r.header("set-cookie").unwrap().to_owned();
    assert!(set.contains("Max-Age=3600"), "{set}");
    let id = r.session_cookie().unwrap();
    let again = server.request("GET", "/api/count", Some(&id));
    let set = again.header("set-cookie").expect("re-sent: sliding");
    assert!(set.contains("Max-Age=3600"), "{set}");

    let default = Server::start(&["--memory"]);
    let set = default
        .request("POST", "/api/count", None)
        .header("set-cookie")
        .unwrap()
        .to_owned();
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "{set}"
    );
}

/// The page tells a visitor what the session is: the count, when it was
/// created, when it expires if left idle; buttons for +1 and for a refused
/// commit (they call the JSON API), the login form, a link to /api/count.
#[test]
fn the_page_shows_the_session_and_what_a_visitor_can_do() {
    let server = Server::start(&["--memory", "--timeout", "3600", "--resolution", "60"]);
    let page = server.request("GET", "/", None);
    assert_eq!(page.status, 200);
    let body = &page.body;
    for expected in [
        r#"<strong id="count">1</strong>"#,
        r#"<dd id="created">20"#,
        r#"<dd id="expires">20"#,
        // 3600 + 60 + 1 s from now: 62 min, or 61 if a second ticked.
        "UTC (in 6",
        " min, unless you come back)",
        r#"<button id="plus""#,
        r#"<button id="oops""#,
        r#"action="/login""#,
        r#"<a href="/api/count">"#,
        r#"fetch(path, { method: "POST""#,
    ] {
        assert!(body.contains(expected), "{expected:?} not in {body}");
    }
}
