//! Helpers of the admin tests: run `keel` (the binary Cargo built for these
//! tests, `CARGO_BIN_EXE_keel`), start a real `keel serve` on a loopback
//! port, and talk HTTP to it.

#![allow(dead_code)]

pub(crate) mod shared;

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The admin token every test server uses.
pub(crate) const TOKEN: &str = "test-admin-token-4f1c9a";

/// What a finished `keel` run printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) success: bool,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Assert success and return stdout.
    pub(crate) fn ok(self) -> String {
        assert!(self.success, "keel failed: {self:#?}");
        self.stdout
    }

    /// Assert success and parse stdout as JSON.
    pub(crate) fn json(self) -> serde_json::Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
    }

    /// Assert failure and return stderr.
    pub(crate) fn fails(self) -> String {
        assert!(!self.success, "keel should have failed: {self:#?}");
        self.stderr
    }

    /// Everything printed.
    pub(crate) fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `keel ARGS` to completion (stdin closed, output captured, so stderr
/// is not a terminal).
pub(crate) fn keel(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Run::from(output)
}

/// `keel sessions ARGS... --db DB`.
pub(crate) fn offline(db: &Path, args: &[&str]) -> Run {
    let mut all: Vec<&str> = vec!["sessions"];
    all.extend_from_slice(args);
    let db = db.to_str().unwrap();
    all.extend_from_slice(&["--db", db]);
    keel(&all)
}

/// Fill `db` with `count` generated sessions, `expired` of them expired
/// (under the default expiry policy unless `extra` says otherwise).
pub(crate) fn populate(db: &Path, count: u64, expired: u64, extra: &[&str]) {
    let count = count.to_string();
    let expired = expired.to_string();
    let mut args = vec!["populate", "--count", &count, "--expired", &expired];
    args.extend_from_slice(extra);
    offline(db, &args).ok();
}

/// A fresh temporary directory with the admin token file in it.
pub(crate) struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub(crate) fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        Dir { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.dir.path().join("keel.redb")
    }

    pub(crate) fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
}

/// A running `keel serve` on 127.0.0.1 (port chosen by the OS), killed on
/// drop. Its stderr goes to a file, read by [`Server::logs`].
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    token_file: PathBuf,
    log: PathBuf,
}

impl Server {
    /// `keel serve --db DIR/keel.redb --admin-token-file DIR/token ARGS`.
    pub(crate) fn start(dir: &Dir, args: &[&str]) -> Server {
        let db = dir.db();
        let token = dir.token_file();
        let mut all = vec![
            "--db",
            db.to_str().unwrap(),
            "--admin-token-file",
            token.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start_with(dir, &all)
    }

    /// `keel serve --addr 127.0.0.1:0 ARGS`.
    pub(crate) fn start_with(dir: &Dir, args: &[&str]) -> Server {
        Server::start_logging(dir, args, "info")
    }

    /// [`start_with`](Server::start_with), logging at `rust_log`
    /// (`RUST_LOG`).
    pub(crate) fn start_logging(dir: &Dir, args: &[&str], rust_log: &str) -> Server {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.path().join(format!("server-{n}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "unexpected first line {line:?}; stderr: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            url: addr.to_owned(),
            child,
            token_file: dir.token_file(),
            log,
        }
    }

    /// `keel sessions ARGS... --url URL --token-file TOKEN`.
    pub(crate) fn online(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = vec!["sessions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--url",
            &self.url,
            "--token-file",
            self.token_file.to_str().unwrap(),
        ]);
        keel(&all)
    }

    /// An HTTP request to the server.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        cookie: Option<&str>,
    ) -> Response {
        request(method, &format!("{}{path}", self.url), auth, cookie)
    }

    /// An admin API request with the right token.
    pub(crate) fn admin(&self, method: &str, path: &str) -> Response {
        self.request(method, path, Some(&format!("Bearer {TOKEN}")), None)
    }

    /// Kill the server at once (SIGKILL) and wait for it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the server logged so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (10 s at most) for a clean exit; returns the logs.
    pub(crate) fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "keel serve exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.logs()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `keel_session` cookie value the response sets, if any.
    pub(crate) fn session_cookie(&self) -> Option<String> {
        let set = self.header("set-cookie")?;
        let pair = set.split(';').next()?;
        let (name, value) = pair.split_once('=')?;
        assert_eq!(name, "keel_session");
        Some(value.to_owned())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One HTTP request with optional `Authorization` and session cookie.
pub(crate) fn request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    cookie: Option<&str>,
) -> Response {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    );
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    if let Some(auth) = auth {
        builder = builder.header("Authorization", auth);
    }
    if let Some(cookie) = cookie {
        builder = builder.header("Cookie", format!("keel_session={cookie}"));
    }
    let request = builder.body(()).unwrap();
    let mut response = agent.run(request).unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.body_mut().read_to_string().unwrap();
    Response {
        status,
        headers,
        body,
    }
}

/// One request with a session cookie: `(status, body)`, or `None` if the
/// server could not be reached or the connection broke.
pub(crate) fn try_request(method: &str, url: &str, cookie: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    );
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Cookie", format!("keel_session={cookie}"))
        .body(())
        .ok()?;
    let mut response = agent.run(request).ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// Make demo sessions: `clients` clients that each increment their count
/// `1..=clients` times, and one client logged in as `principal`. Returns
/// every cookie value the server handed out.
pub(crate) fn demo_sessions(server: &Server, clients: usize, principal: &str) -> Vec<String> {
    let mut cookies = Vec::new();
    for client in 0..clients {
        let first = server.request("POST", "/api/count", None, None);
        assert_eq!(first.status, 200, "{first:?}");
        let cookie = first.session_cookie().unwrap();
        for _ in 0..client {
            let again = server.request("POST", "/api/count", None, Some(&cookie));
            assert_eq!(again.status, 200);
        }
        cookies.push(cookie);
    }
    let anonymous = server.request("POST", "/api/count", None, None);
    let before_login = anonymous.session_cookie().unwrap();
    let login = server.request(
        "POST",
        &format!("/api/login?user={principal}"),
        None,
        Some(&before_login),
    );
    assert_eq!(login.status, 200, "{login:?}");
    cookies.push(before_login);
    cookies.push(login.session_cookie().unwrap());
    cookies
}

/// The keys of a `--json` listing.
pub(crate) fn keys(listing: &serde_json::Value) -> Vec<String> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until `done` holds (checking every 50 ms), at most `limit`.
pub(crate) fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
