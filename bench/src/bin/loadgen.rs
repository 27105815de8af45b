//! `loadgen`: a closed-loop HTTP/1.1 load generator for the page counter
//! (`GET`/`POST /api/count`, answering `{"count": N}`).
//!
//! - `loadgen run`: N keep-alive connections (default 64), each with its own
//!   session cookie (obtained by one `POST` on that connection, or taken from
//!   a `--state` file of an earlier phase), each issuing one request at a time
//!   for a warm-up and then a measured window (or a fixed count). Reports
//!   req/s, p50/p90/p99/max latency, errors, a status histogram, and the CPU
//!   time of the load generator and (with `--server-pid`) of the server over
//!   the measured window. Checks every answer (a `POST` must answer the
//!   previous count + 1, a `GET` the current count) and, at the end, that
//!   each connection's stored count equals the number of successful `POST`s
//!   it made: the no-lost-update check. With `--pg-user postgres` it also
//!   reports the CPU of the PostgreSQL server (see "PostgreSQL's CPU" below),
//!   with `--db-pid PID` that of a database server that is one process (a
//!   `redis-server`: utime + stime of all its threads), and both CPUs, the
//!   app's and the database's, as CPU-microseconds per request.
//! - `loadgen race`: one session, then `--clients` (32) connections fire one
//!   `POST` each with that cookie at the same moment; reports how many were
//!   answered 200 and `lost` = clients - (final count - initial count): the
//!   increments that vanished (a read-modify-write store without concurrency
//!   control keeps only the last writer's).
//! - `loadgen verify`: after a server restart, checks that every session in
//!   the `--state` file still has its acknowledged count (every acknowledged
//!   write durable).
//! - `loadgen table`: turns the result lines that `run`, `verify` and `race`
//!   appended to a results file into the comparison table (medians over
//!   rounds, ratios).
//!
//! NOTE: one thread (a current-thread tokio runtime) drives all connections
//! with hyper's HTTP/1 client, so the generator takes at most one core and
//! reports how much of it it used: when that nears 100% the generator, not
//! the server, is the limit.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::SendRequest,
    header::{CONTENT_LENGTH, COOKIE, HOST, SET_COOKIE},
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load generator for the page-counter benchmark.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one load phase (POST or GET) against a server.
    Run(RunArgs),
    /// Check that every session of a state file still has its count.
    Verify(VerifyArgs),
    /// Fire concurrent increments of one session; count lost updates.
    Race(RaceArgs),
    /// Print the comparison table from a results file.
    Table(TableArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum Phase {
    /// `POST /api/count`: increment (a durable write on Keel).
    Post,
    /// `GET /api/count`: read only.
    Get,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Base URL of the server, `http://HOST:PORT`.
    #[arg(long)]
    url: String,
    /// Path of the counter.
    #[arg(long, default_value = "/api/count")]
    path: String,
    /// File of `cookie<TAB>count` lines, one per connection.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Label of the system under test (for the results file).
    #[arg(long, default_value = "")]
    system: String,
    /// Round number (for the results file).
    #[arg(long, default_value_t = 0)]
    round: u32,
    /// Append one JSON result line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Which request every connection repeats.
    #[arg(long, value_enum, default_value_t = Phase::Post)]
    method: Phase,
    /// Concurrent keep-alive connections, one session each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Instead of a duration: measured requests per connection (no warm-up).
    #[arg(long)]
    requests: Option<u64>,
    /// Ignore an existing state file: get a new cookie on every connection.
    #[arg(long)]
    fresh: bool,
    /// Pid of the server, to report its CPU use over the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also report the CPU of the PostgreSQL server: every process named
    /// `postgres` owned by this user (postmaster, backends, background
    /// processes), plus the postmaster's reaped children.
    #[arg(long)]
    pg_user: Option<String>,
    /// The app's PostgreSQL database: its backends are counted, and client
    /// backends of other databases are reported as interference.
    #[arg(long, requires = "pg_user")]
    pg_db: Option<String>,
    /// Also report the CPU of this database server process (a
    /// `redis-server`: utime + stime of all its threads) as the database's.
    #[arg(long, conflicts_with = "pg_user")]
    db_pid: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct RaceArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent increments of the one session, one connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Exit 2 if any increment was lost or refused (not for a yardstick
    /// known to lose them).
    #[arg(long)]
    expect_no_loss: bool,
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, clap::Args)]
struct TableArgs {
    /// The results file (`RESULT` JSON lines) written by `run`/`verify`.
    results: PathBuf,
}

/// One line of the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    kind: String,
    system: String,
    round: u32,
    method: Option<Phase>,
    connections: usize,
    seconds: f64,
    requests: u64,
    req_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    statuses: BTreeMap<String, u64>,
    /// Answers whose count contradicted the client's own tally.
    mismatches: u64,
    /// Sessions whose final stored count equals the acknowledged writes.
    sessions_ok: usize,
    sessions: usize,
    /// Writes whose outcome the client cannot know (error or non-200).
    ambiguous_writes: u64,
    verified: bool,
    loadgen_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    /// CPU of the database server over the window, % of a core: all
    /// PostgreSQL server processes, or the `--db-pid` process (Redis).
    /// (`pg_cpu_pct` in results files of before Redis.)
    #[serde(default, alias = "pg_cpu_pct")]
    db_cpu_pct: Option<f64>,
    /// CPU-microseconds of the app server per measured request.
    #[serde(default)]
    app_us_per_req: Option<f64>,
    /// CPU-microseconds of the database server per measured request.
    #[serde(default, alias = "pg_us_per_req")]
    db_us_per_req: Option<f64>,
    /// CPU of client backends of other databases over the window (someone
    /// else's load on the same PostgreSQL), % of a core.
    #[serde(default)]
    pg_foreign_cpu_pct: Option<f64>,
    /// Backends connected to the app's database at the end of the window.
    #[serde(default)]
    pg_backends: Option<usize>,
    /// The outcome of `loadgen race` (kind `race`).
    #[serde(default)]
    race: Option<RaceOutcome>,
}

/// What `loadgen race` saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RaceOutcome {
    clients: usize,
    /// Answers 200 (acknowledged increments).
    ok: usize,
    initial: u64,
    #[serde(rename = "final")]
    final_count: u64,
    /// clients - (final - initial).
    lost: i64,
    /// Acknowledged increments missing from the final count: ok - (final -
    /// initial).
    acknowledged_lost: i64,
    /// 200 answers that repeated a count another answer had already given.
    duplicate_answers: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Table(args) => table(&args.results),
        command => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async move {
                match command {
                    Command::Run(args) => run(args).await,
                    Command::Verify(args) => verify(args).await,
                    Command::Race(args) => race(args).await,
                    Command::Table(_) => Ok(true),
                }
            }),
            Err(err) => Err(err.into()),
        },
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP client

/// The server's address and `Host` header, from `http://HOST:PORT`.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str, path: &str) -> Result<Self, BoxError> {
        let host = url
            .strip_prefix("http://")
            .ok_or("--url must start with http://")?
            .trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
            .next()
            .ok_or("--url names no address")?;
        Ok(Target {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
}

/// What one exchange answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: Bytes,
}

impl Conn {
    async fn open(target: &Target) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    async fn exchange(
        &mut self,
        target: &Target,
        method: Phase,
        cookie: Option<&str>,
    ) -> Result<Answer, BoxError> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .uri(target.path.as_str())
            .header(HOST, target.host.as_str());
        request = match method {
            Phase::Get => request.method(Method::GET),
            Phase::Post => request.method(Method::POST).header(CONTENT_LENGTH, "0"),
        };
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = self
            .sender
            .send_request(request.body(Empty::new())?)
            .await?;
        let status = response.status();
        let set_cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|pair| pair.trim().to_owned());
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            set_cookie,
            body,
        })
    }
}

/// The `count` of a `{"count": N}` body.
fn parse_count(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Count {
        count: u64,
    }
    serde_json::from_slice::<Count>(body).ok().map(|c| c.count)
}

// ---------------------------------------------------------------------------
// State file: one `cookie<TAB>count` line per session.

fn read_state(path: &Path) -> Result<Vec<(String, u64)>, BoxError> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut sessions = Vec::new();
    for line in file.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let (cookie, count) = line
            .split_once('\t')
            .ok_or_else(|| format!("{}: bad line {line:?}", path.display()))?;
        sessions.push((cookie.to_owned(), count.parse()?));
    }
    Ok(sessions)
}

fn write_state(path: &Path, sessions: &[(String, u64)]) -> Result<(), BoxError> {
    let mut text = String::new();
    for (cookie, count) in sessions {
        let _ = writeln!(text, "{cookie}\t{count}");
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn append_result(path: &Path, result: &RunResult) -> Result<(), BoxError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{}", serde_json::to_string(result)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc (utime + stime of all threads).

/// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command: `fields[0]` is field 3
/// of proc(5) (the state), so field N is `fields[N - 3]`.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

fn field(fields: &[&str], n: usize) -> Option<u64> {
    fields.get(n - 3)?.parse().ok()
}

fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    // Fields 14 and 15 of proc(5): utime, stime (all threads).
    Some(field(&fields, 14)? + field(&fields, 15)?)
}

// PostgreSQL's CPU. PostgreSQL runs one process per connection (a backend)
// beside the postmaster and its background processes (checkpointer, WAL
// writer, ...), all named `postgres`. A sample adds utime + stime of every
// such process alive, plus the postmaster's cutime + cstime (fields 16 and
// 17: the CPU of children it has waited for), so that a backend that exits
// during the window (a pool closing a connection) still counts: alive at the
// first sample, its time is in the sum; reaped by the second, its whole time
// is in the postmaster's cutime/cstime. The difference of two samples is
// then PostgreSQL's CPU over the window. Limits: a backend exited but not
// yet reaped (a zombie) may be missed for a moment; and the sum covers the
// whole server, so another client's queries on the same PostgreSQL count
// too: the sample also sums the client backends of other databases than
// `--pg-db`, per pid, to report that interference.

/// The user id of `user`, from /etc/passwd.
fn user_id(user: &str) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut parts = line.split(':');
        (parts.next()? == user)
            .then(|| parts.nth(1)?.parse().ok())
            .flatten()
    })
}

/// Where PostgreSQL's processes are, and whose database matters.
#[derive(Debug, Clone)]
struct PgProbe {
    uid: u32,
    db: Option<String>,
}

/// One sample of PostgreSQL's CPU (clock ticks).
#[derive(Debug, Clone, Default)]
struct PgSample {
    /// utime + stime of every process, plus the postmaster's reaped
    /// children.
    total: u64,
    /// Client backends of other databases: pid -> utime + stime.
    foreign: BTreeMap<u32, u64>,
    /// Backends connected to `db`.
    backends: usize,
}

impl PgProbe {
    fn new(user: &str, db: Option<String>) -> Result<Self, BoxError> {
        let uid = user_id(user).ok_or_else(|| format!("no user {user:?} in /etc/passwd"))?;
        Ok(PgProbe { uid, db })
    }

    fn sample(&self) -> Option<PgSample> {
        use std::os::unix::fs::MetadataExt as _;
        // (pid, ppid, utime + stime, cutime + cstime, title)
        let mut processes = Vec::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if entry.metadata().map(|m| m.uid()).ok() != Some(self.uid) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let comm = stat
                .find('(')
                .zip(stat.rfind(')'))
                .map(|(a, b)| &stat[a + 1..b]);
            if comm != Some("postgres") {
                continue;
            }
            let Some(fields) = stat_fields(&stat) else {
                continue;
            };
            let (Some(ppid), Some(ut), Some(st), Some(cut), Some(cst)) = (
                field(&fields, 4),
                field(&fields, 14),
                field(&fields, 15),
                field(&fields, 16),
                field(&fields, 17),
            ) else {
                continue;
            };
            // The process title PostgreSQL sets: "postgres: [CLUSTER: ]USER
            // DB HOST(PORT) STATE" for a client backend.
            let title = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .unwrap_or_default();
            processes.push((pid, ppid as u32, ut + st, cut + cst, title));
        }
        if processes.is_empty() {
            return None;
        }
        let pids: std::collections::BTreeSet<u32> = processes.iter().map(|p| p.0).collect();
        let mut sample = PgSample::default();
        for (pid, ppid, own, children, title) in processes {
            sample.total += own;
            if !pids.contains(&ppid) {
                // The postmaster: its parent is not a PostgreSQL process.
                sample.total += children;
            }
            let words: Vec<&str> = title.split_whitespace().collect();
            let client = words
                .iter()
                .any(|w| *w == "[local]" || (w.ends_with(')') && w.contains('(')));
            if !client {
                continue;
            }
            match &self.db {
                Some(db) if words.contains(&db.as_str()) => sample.backends += 1,
                Some(_) => {
                    sample.foreign.insert(pid, own);
                }
                None => sample.backends += 1,
            }
        }
        Some(sample)
    }
}

#[derive(Debug, Clone)]
struct CpuMark {
    at: Instant,
    own: Option<u64>,
    server: Option<u64>,
    pg: Option<PgSample>,
    /// The `--db-pid` process (Redis).
    db: Option<u64>,
}

/// CPU over a window, each in % of one core.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    loadgen: Option<f64>,
    server: Option<f64>,
    /// The database server: PostgreSQL's processes, or the `--db-pid` one.
    db: Option<f64>,
    pg_foreign: Option<f64>,
    pg_backends: Option<usize>,
}

impl CpuMark {
    fn now(server_pid: Option<u32>, pg: Option<&PgProbe>, db_pid: Option<u32>) -> Self {
        CpuMark {
            at: Instant::now(),
            own: cpu_ticks("self"),
            server: server_pid.and_then(|pid| cpu_ticks(&pid.to_string())),
            pg: pg.and_then(PgProbe::sample),
            db: db_pid.and_then(|pid| cpu_ticks(&pid.to_string())),
        }
    }

    /// CPU used since `start`.
    fn since(&self, start: &CpuMark) -> CpuUse {
        let wall = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let pct = |ticks: f64| ticks / TICKS_PER_SEC / wall * 100.0;
        let diff = |a: Option<u64>, b: Option<u64>| Some(pct(a? as f64 - b? as f64));
        let (pg, pg_foreign, pg_backends) = match (&self.pg, &start.pg) {
            (Some(end), Some(begin)) => {
                // Only backends alive at both samples: one that came or went
                // in between is missed (it is reported as interference only).
                let foreign: u64 = end
                    .foreign
                    .iter()
                    .filter_map(|(pid, t)| Some(t.saturating_sub(*begin.foreign.get(pid)?)))
                    .sum();
                (
                    Some(pct(end.total as f64 - begin.total as f64)),
                    Some(pct(foreign as f64)),
                    Some(end.backends),
                )
            }
            _ => (None, None, None),
        };
        CpuUse {
            loadgen: diff(self.own, start.own),
            server: diff(self.server, start.server),
            db: pg.or_else(|| diff(self.db, start.db)),
            pg_foreign,
            pg_backends,
        }
    }
}

// ---------------------------------------------------------------------------
// `run`

/// A connection with its session and the client's tally of it.
#[derive(Debug)]
struct Client {
    conn: Conn,
    cookie: String,
    /// The count the server must hold: the initial count plus every
    /// acknowledged (200) POST.
    expected: u64,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    measured: u64,
    statuses: BTreeMap<String, u64>,
    errors: u64,
    mismatches: u64,
    ambiguous_writes: u64,
    first_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    warmup_end: Instant,
    end: Instant,
    per_connection: Option<u64>,
}

async fn open_client(
    target: &Target,
    saved: Option<(String, u64)>,
) -> Result<(Client, Tally), BoxError> {
    let mut conn = Conn::open(target).await?;
    let tally = Tally::default();
    if let Some((cookie, expected)) = saved {
        return Ok((
            Client {
                conn,
                cookie,
                expected,
            },
            tally,
        ));
    }
    let answer = conn.exchange(target, Phase::Post, None).await?;
    if answer.status != StatusCode::OK {
        return Err(format!("first POST answered {}", answer.status).into());
    }
    let cookie = answer
        .set_cookie
        .ok_or("first POST answered no Set-Cookie")?;
    let count = parse_count(&answer.body).ok_or("first POST answered no count")?;
    if count != 1 {
        return Err(format!("first POST of a new session answered count {count}").into());
    }
    Ok((
        Client {
            conn,
            cookie,
            expected: count,
        },
        tally,
    ))
}

async fn drive(
    target: Arc<Target>,
    method: Phase,
    window: Window,
    mut client: Client,
    mut tally: Tally,
) -> (Client, Tally) {
    let mut sent = 0u64;
    loop {
        let start = Instant::now();
        match window.per_connection {
            Some(n) if sent >= n => break,
            None if start >= window.end => break,
            _ => {}
        }
        sent += 1;
        let answer = client
            .conn
            .exchange(&target, method, Some(&client.cookie))
            .await;
        let done = Instant::now();
        let measured =
            window.per_connection.is_some() || (start >= window.warmup_end && done <= window.end);
        match answer {
            Ok(answer) => {
                if measured {
                    tally.measured += 1;
                    tally
                        .latencies_ns
                        .push(done.duration_since(start).as_nanos() as u64);
                    *tally
                        .statuses
                        .entry(answer.status.as_u16().to_string())
                        .or_default() += 1;
                }
                if answer.status == StatusCode::OK {
                    if method == Phase::Post {
                        client.expected += 1;
                    }
                    if parse_count(&answer.body) != Some(client.expected) {
                        tally.mismatches += 1;
                    }
                } else {
                    if method == Phase::Post {
                        tally.ambiguous_writes += 1;
                    }
                    if tally.first_error.is_none() {
                        tally.first_error = Some(format!(
                            "status {}: {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        ));
                    }
                }
            }
            Err(err) => {
                tally.errors += 1;
                if measured {
                    *tally.statuses.entry("error".to_owned()).or_default() += 1;
                }
                if method == Phase::Post {
                    tally.ambiguous_writes += 1;
                }
                if tally.first_error.is_none() {
                    tally.first_error = Some(err.to_string());
                }
                // A broken connection is replaced; if even that fails, back
                // off a little rather than spin.
                match Conn::open(&target).await {
                    Ok(conn) => client.conn = conn,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    (client, tally)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

async fn run(args: RunArgs) -> Result<bool, BoxError> {
    let common = &args.common;
    let target = Arc::new(Target::parse(&common.url, &common.path)?);
    let probe = match &args.pg_user {
        Some(user) => Some(PgProbe::new(user, args.pg_db.clone())?),
        None => None,
    };
    if let Some(probe) = &probe
        && probe.sample().is_none()
    {
        return Err(format!(
            "--pg-user {}: no process named postgres of that user",
            args.pg_user.as_deref().unwrap_or_default()
        )
        .into());
    }
    let db_pid = args.db_pid;
    if let Some(pid) = db_pid
        && cpu_ticks(&pid.to_string()).is_none()
    {
        return Err(format!("--db-pid {pid}: no such process in /proc").into());
    }
    let saved = match &common.state {
        Some(path) if !args.fresh && path.exists() => {
            let saved = read_state(path)?;
            if saved.len() < args.connections {
                return Err(format!(
                    "{} holds {} sessions, fewer than --connections {}",
                    path.display(),
                    saved.len(),
                    args.connections
                )
                .into());
            }
            Some(saved)
        }
        _ => None,
    };

    // Connect (and, for new sessions, POST once for the cookie) everywhere
    // before the clock starts.
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        let target = Arc::clone(&target);
        let saved = saved.as_ref().map(|s| s[i].clone());
        opening.spawn(async move { (i, open_client(&target, saved).await) });
    }
    let mut clients: Vec<Option<(Client, Tally)>> = (0..args.connections).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (i, opened) = joined?;
        clients[i] = Some(opened.map_err(|err| format!("connection {i}: {err}"))?);
    }

    let start = Instant::now();
    let window = match args.requests {
        Some(n) => Window {
            warmup_end: start,
            end: start,
            per_connection: Some(n),
        },
        None => {
            let warmup_end = start + Duration::from_secs_f64(args.warmup);
            Window {
                warmup_end,
                end: warmup_end + Duration::from_secs_f64(args.duration),
                per_connection: None,
            }
        }
    };
    let server_pid = args.server_pid;
    // Sampled off the runtime's thread: scanning /proc for PostgreSQL's
    // processes takes a few milliseconds that the connections should not
    // wait for.
    let mark = move |probe: Option<PgProbe>| async move {
        tokio::task::spawn_blocking(move || CpuMark::now(server_pid, probe.as_ref(), db_pid)).await
    };
    let marks = tokio::spawn({
        let probe = probe.clone();
        async move {
            tokio::time::sleep_until(window.warmup_end.into()).await;
            let first = mark(probe.clone()).await?;
            if window.per_connection.is_some() {
                return Ok::<_, tokio::task::JoinError>((first, None));
            }
            tokio::time::sleep_until(window.end.into()).await;
            Ok((first, Some(mark(probe).await?)))
        }
    });
    let mut driving = tokio::task::JoinSet::new();
    for (i, slot) in clients.into_iter().enumerate() {
        let Some((client, tally)) = slot else {
            return Err(format!("connection {i} never opened").into());
        };
        let target = Arc::clone(&target);
        driving.spawn(async move { (i, drive(target, args.method, window, client, tally).await) });
    }
    let mut finished: Vec<Option<(Client, Tally)>> = (0..args.connections).map(|_| None).collect();
    while let Some(joined) = driving.join_next().await {
        let (i, pair) = joined?;
        finished[i] = Some(pair);
    }
    let all_done = CpuMark::now(server_pid, probe.as_ref(), db_pid);
    let (first_mark, last_mark) = marks.await??;
    let cpu = last_mark.as_ref().unwrap_or(&all_done).since(&first_mark);
    let seconds = match args.requests {
        Some(_) => all_done.at.duration_since(start).as_secs_f64(),
        None => args.duration,
    };

    // The no-lost-update check: each session's stored count, read back on
    // its own connection, equals the client's tally.
    let mut sessions = Vec::with_capacity(args.connections);
    let mut total = Tally::default();
    let mut sessions_ok = 0;
    for (i, slot) in finished.into_iter().enumerate() {
        let Some((mut client, tally)) = slot else {
            return Err(format!("connection {i} never finished").into());
        };
        let stored = match client
            .conn
            .exchange(&target, Phase::Get, Some(&client.cookie))
            .await
        {
            Ok(answer) => parse_count(&answer.body),
            Err(_) => match Conn::open(&target).await {
                Ok(mut conn) => conn
                    .exchange(&target, Phase::Get, Some(&client.cookie))
                    .await
                    .ok()
                    .and_then(|answer| parse_count(&answer.body)),
                Err(_) => None,
            },
        };
        if stored == Some(client.expected) {
            sessions_ok += 1;
        } else if total.first_error.is_none() {
            total.first_error = Some(format!(
                "connection {i}: stored count {stored:?}, acknowledged {}",
                client.expected
            ));
        }
        total.latencies_ns.extend(tally.latencies_ns);
        total.measured += tally.measured;
        total.errors += tally.errors;
        total.mismatches += tally.mismatches;
        total.ambiguous_writes += tally.ambiguous_writes;
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
        sessions.push((client.cookie, client.expected));
    }
    if let Some(path) = &common.state {
        write_state(path, &sessions)?;
    }

    total.latencies_ns.sort_unstable();
    let lat = &total.latencies_ns;
    let non_ok: u64 = total
        .statuses
        .iter()
        .filter(|(status, _)| status.as_str() != "200")
        .map(|(_, n)| n)
        .sum();
    let verified = total.mismatches == 0 && sessions_ok == args.connections;
    let per_request = |pct: Option<f64>| {
        (total.measured > 0).then_some(())?;
        Some(pct? / 100.0 * seconds / total.measured as f64 * 1e6)
    };
    let result = RunResult {
        kind: "run".to_owned(),
        system: common.system.clone(),
        round: common.round,
        method: Some(args.method),
        connections: args.connections,
        seconds,
        requests: total.measured,
        req_per_sec: total.measured as f64 / seconds,
        p50_ms: percentile(lat, 0.50),
        p90_ms: percentile(lat, 0.90),
        p99_ms: percentile(lat, 0.99),
        max_ms: percentile(lat, 1.0),
        errors: total.errors + non_ok,
        statuses: total.statuses.clone(),
        mismatches: total.mismatches,
        sessions_ok,
        sessions: args.connections,
        ambiguous_writes: total.ambiguous_writes,
        verified,
        loadgen_cpu_pct: cpu.loadgen,
        server_cpu_pct: cpu.server,
        db_cpu_pct: cpu.db,
        app_us_per_req: per_request(cpu.server),
        db_us_per_req: per_request(cpu.db),
        pg_foreign_cpu_pct: cpu.pg_foreign,
        pg_backends: cpu.pg_backends,
        race: None,
    };
    let method = match args.method {
        Phase::Post => "POST",
        Phase::Get => "GET",
    };
    println!(
        "{} round {} {method} {}: {} connections, {:.1} s measured",
        common.system, common.round, target.path, args.connections, seconds
    );
    println!(
        "  {:.0} req/s ({} requests); latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        result.req_per_sec,
        result.requests,
        result.p50_ms,
        result.p90_ms,
        result.p99_ms,
        result.max_ms
    );
    let histogram: Vec<String> = total
        .statuses
        .iter()
        .map(|(status, n)| format!("{status}={n}"))
        .collect();
    println!(
        "  statuses {}; errors {} (transport {}, non-200 {})",
        histogram.join(" "),
        result.errors,
        total.errors,
        non_ok
    );
    println!(
        "  check: {} answers contradicting the client's tally; {}/{} sessions hold exactly their acknowledged count{}",
        total.mismatches,
        sessions_ok,
        args.connections,
        if total.ambiguous_writes > 0 {
            format!(" ({} writes of unknown outcome)", total.ambiguous_writes)
        } else {
            String::new()
        }
    );
    println!(
        "  cpu over the window (100% = one core): loadgen {}, server {}{}",
        fmt_pct(cpu.loadgen),
        fmt_pct(cpu.server),
        match (cpu.db, &probe) {
            (Some(_), None) => format!(
                ", db (pid {}) {}",
                db_pid.unwrap_or_default(),
                fmt_pct(cpu.db)
            ),
            (Some(_), Some(_)) => format!(
                ", postgres {} ({} backends of the app's database{})",
                fmt_pct(cpu.db),
                cpu.pg_backends
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                match cpu.pg_foreign {
                    Some(p) if p >= 0.5 => {
                        format!("; WARNING: other databases' backends used {p:.0}%")
                    }
                    _ => String::new(),
                }
            ),
            (None, _) => String::new(),
        }
    );
    println!(
        "  cpu per request: app {} µs{}",
        fmt_us(result.app_us_per_req),
        match result.db_us_per_req {
            Some(_) => format!(
                ", {} {} µs",
                if probe.is_some() { "postgres" } else { "db" },
                fmt_us(result.db_us_per_req)
            ),
            None => String::new(),
        }
    );
    if let Some(err) = &total.first_error {
        println!("  first problem: {err}");
    }
    if let Some(path) = &common.results {
        append_result(path, &result)?;
    }
    Ok(verified)
}

fn fmt_pct(pct: Option<f64>) -> String {
    pct.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}%"))
}

fn fmt_us(us: Option<f64>) -> String {
    us.map_or_else(|| "n/a".to_owned(), |u| format!("{u:.0}"))
}

// ---------------------------------------------------------------------------
// `verify`

async fn verify(args: VerifyArgs) -> Result<bool, BoxError> {
    let common = &args.common;
    let target = Arc::new(Target::parse(&common.url, &common.path)?);
    let path = common.state.as_ref().ok_or("verify needs --state")?;
    let sessions = read_state(path)?;
    let workers = sessions.len().clamp(1, 16);
    let mut checking = tokio::task::JoinSet::new();
    for chunk in sessions.chunks(sessions.len().div_ceil(workers).max(1)) {
        let target = Arc::clone(&target);
        let chunk = chunk.to_vec();
        checking.spawn(async move {
            let mut conn = Conn::open(&target).await?;
            let mut bad = Vec::new();
            for (cookie, expected) in chunk {
                let answer = conn.exchange(&target, Phase::Get, Some(&cookie)).await?;
                let stored = parse_count(&answer.body);
                if stored != Some(expected) {
                    bad.push(format!("stored {stored:?}, acknowledged {expected}"));
                }
            }
            Ok::<_, BoxError>(bad)
        });
    }
    let mut bad = Vec::new();
    while let Some(joined) = checking.join_next().await {
        bad.extend(joined??);
    }
    let ok = sessions.len() - bad.len();
    println!(
        "{} round {} verify: {ok}/{} sessions hold their acknowledged count{}",
        common.system,
        common.round,
        sessions.len(),
        bad.first()
            .map(|b| format!(" (first miss: {b})"))
            .unwrap_or_default()
    );
    let result = RunResult {
        kind: "verify".to_owned(),
        system: common.system.clone(),
        round: common.round,
        method: None,
        connections: workers,
        seconds: 0.0,
        requests: sessions.len() as u64,
        req_per_sec: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        errors: 0,
        statuses: BTreeMap::new(),
        mismatches: bad.len() as u64,
        sessions_ok: ok,
        sessions: sessions.len(),
        ambiguous_writes: 0,
        verified: bad.is_empty(),
        loadgen_cpu_pct: None,
        server_cpu_pct: None,
        db_cpu_pct: None,
        app_us_per_req: None,
        db_us_per_req: None,
        pg_foreign_cpu_pct: None,
        pg_backends: None,
        race: None,
    };
    if let Some(path) = &common.results {
        append_result(path, &result)?;
    }
    Ok(bad.is_empty())
}

// ---------------------------------------------------------------------------
// `race`

/// One session, `clients` concurrent increments of it, one connection each,
/// released together; then the final count tells how many took effect.
async fn race(args: RaceArgs) -> Result<bool, BoxError> {
    let common = &args.common;
    let target = Arc::new(Target::parse(&common.url, &common.path)?);
    let clients = args.clients.max(1);

    // The session, and its count before the race.
    let mut first = Conn::open(&target).await?;
    let created = first.exchange(&target, Phase::Post, None).await?;
    if created.status != StatusCode::OK {
        return Err(format!("first POST answered {}", created.status).into());
    }
    let cookie = created
        .set_cookie
        .ok_or("first POST answered no Set-Cookie")?;
    let initial = parse_count(
        &first
            .exchange(&target, Phase::Get, Some(&cookie))
            .await?
            .body,
    )
    .ok_or("GET answered no count")?;

    // Every connection open before any request leaves.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(&target).await?);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let mut racing = tokio::task::JoinSet::new();
    for mut conn in conns {
        let target = Arc::clone(&target);
        let barrier = Arc::clone(&barrier);
        let cookie = cookie.clone();
        racing.spawn(async move {
            conn.sender.ready().await?;
            barrier.wait().await;
            conn.exchange(&target, Phase::Post, Some(&cookie)).await
        });
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered = Vec::new();
    let mut first_error = None;
    while let Some(joined) = racing.join_next().await {
        match joined? {
            Ok(answer) => {
                *statuses
                    .entry(answer.status.as_u16().to_string())
                    .or_default() += 1;
                if answer.status == StatusCode::OK {
                    answered.extend(parse_count(&answer.body));
                } else if first_error.is_none() {
                    first_error = Some(format!(
                        "status {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
            }
            Err(err) => {
                *statuses.entry("error".to_owned()).or_default() += 1;
                first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    let ok = statuses.get("200").copied().unwrap_or(0) as usize;
    let final_count = match first.exchange(&target, Phase::Get, Some(&cookie)).await {
        Ok(answer) => parse_count(&answer.body),
        Err(_) => {
            let mut conn = Conn::open(&target).await?;
            parse_count(
                &conn
                    .exchange(&target, Phase::Get, Some(&cookie))
                    .await?
                    .body,
            )
        }
    }
    .ok_or("final GET answered no count")?;
    let applied = final_count as i64 - initial as i64;
    let distinct: std::collections::BTreeSet<u64> = answered.iter().copied().collect();
    let outcome = RaceOutcome {
        clients,
        ok,
        initial,
        final_count,
        lost: clients as i64 - applied,
        acknowledged_lost: ok as i64 - applied,
        duplicate_answers: answered.len() - distinct.len(),
    };
    println!(
        "{} round {} race: {clients} concurrent POSTs of one session: {ok} answered 200, count {initial} -> {final_count}: lost {} (acknowledged but lost {}; {} answers repeated a count){}",
        common.system,
        common.round,
        outcome.lost,
        outcome.acknowledged_lost,
        outcome.duplicate_answers,
        first_error
            .as_ref()
            .map(|e| format!("; first problem: {e}"))
            .unwrap_or_default()
    );
    let no_loss = outcome.lost == 0 && ok == clients;
    let result = RunResult {
        kind: "race".to_owned(),
        system: common.system.clone(),
        round: common.round,
        method: Some(Phase::Post),
        connections: clients,
        seconds: 0.0,
        requests: clients as u64,
        req_per_sec: 0.0,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        // Transport errors and non-200 answers.
        errors: (clients - ok) as u64,
        statuses,
        mismatches: outcome.duplicate_answers as u64,
        sessions_ok: usize::from(no_loss),
        sessions: 1,
        ambiguous_writes: 0,
        verified: no_loss,
        loadgen_cpu_pct: None,
        server_cpu_pct: None,
        db_cpu_pct: None,
        app_us_per_req: None,
        db_us_per_req: None,
        pg_foreign_cpu_pct: None,
        pg_backends: None,
        race: Some(outcome),
    };
    if let Some(path) = &common.results {
        append_result(path, &result)?;
    }
    Ok(no_loss || !args.expect_no_loss)
}

// ---------------------------------------------------------------------------
// `table`

/// The systems in table order: (label in the results, name in the table).
const SYSTEMS: [(&str, &str); 10] = [
    ("keel", "Keel, redb file (durable)"),
    ("keel-memory", "Keel `--memory`"),
    ("keel-pg", "Keel, PostgreSQL (durable)"),
    ("keel-redis", "Keel, Redis"),
    ("keel-lib", "Keel library on redb (no `keel serve` extras)"),
    ("ts-sqlite", "tower-sessions SqliteStore (sqlx defaults)"),
    ("ts-sqlite-wal", "tower-sessions SqliteStore, WAL"),
    (
        "ts-postgres",
        "tower-sessions PostgresStore (sqlx pool of 10)",
    ),
    ("ts-redis", "tower-sessions RedisStore (fred pool of 6)"),
    ("ts-memory", "tower-sessions MemoryStore"),
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn table(path: &Path) -> Result<bool, BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut results = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        results.push(serde_json::from_str::<RunResult>(line)?);
    }
    let runs = |system: &str, method: Phase| -> Vec<&RunResult> {
        results
            .iter()
            .filter(|r| r.kind == "run" && r.system == system && r.method == Some(method))
            .collect()
    };
    let med = |rs: &[&RunResult], f: fn(&RunResult) -> f64| -> f64 {
        median(&mut rs.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let rounds = results.iter().map(|r| r.round).max().unwrap_or(0);
    println!("Medians over {rounds} round(s); req/s as median (min-max).\n");
    println!(
        "| system | POST req/s | POST p50 ms | POST p99 ms | GET req/s | GET p50 ms | GET p99 ms | errors | lost updates | race: lost (200s), per round | durable after restart | CPU % app / db / loadgen (POST; GET) | app µs/req (POST; GET) | db µs/req (POST; GET) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_ok = true;
    for (system, name) in SYSTEMS {
        let post = runs(system, Phase::Post);
        let get = runs(system, Phase::Get);
        if post.is_empty() && get.is_empty() {
            continue;
        }
        let rps = |rs: &[&RunResult]| {
            if rs.is_empty() {
                return "-".to_owned();
            }
            let min = rs
                .iter()
                .map(|r| r.req_per_sec)
                .fold(f64::INFINITY, f64::min);
            let max = rs.iter().map(|r| r.req_per_sec).fold(0.0, f64::max);
            format!("{:.0} ({:.0}-{:.0})", med(rs, |r| r.req_per_sec), min, max)
        };
        let ms = |rs: &[&RunResult], f: fn(&RunResult) -> f64| {
            if rs.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", med(rs, f))
            }
        };
        // A median, or "-" where no round measured it.
        let opt = |rs: &[&RunResult], f: fn(&RunResult) -> Option<f64>| {
            let values: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            if values.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0}", median(&mut values.clone()))
            }
        };
        let cpu = |rs: &[&RunResult]| {
            format!(
                "{} / {} / {}",
                opt(rs, |r| r.server_cpu_pct),
                opt(rs, |r| r.db_cpu_pct),
                opt(rs, |r| r.loadgen_cpu_pct)
            )
        };
        // Results of before these fields: from the server's CPU %.
        let app_us = |r: &RunResult| {
            r.app_us_per_req
                .or_else(|| Some(r.server_cpu_pct? / 100.0 * r.seconds / r.requests as f64 * 1e6))
        };
        let races: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.kind == "race" && r.system == system)
            .collect();
        let race_cell = if races.is_empty() {
            "-".to_owned()
        } else {
            let lost: Vec<String> = races
                .iter()
                .filter_map(|r| r.race.as_ref())
                .map(|o| o.lost.to_string())
                .collect();
            let ok: Vec<String> = races
                .iter()
                .filter_map(|r| r.race.as_ref())
                .map(|o| o.ok.to_string())
                .collect();
            format!("{} ({})", lost.join(", "), ok.join(", "))
        };
        let errors: u64 = post.iter().chain(&get).map(|r| r.errors).sum();
        let lost: Vec<String> = post
            .iter()
            .chain(&get)
            .filter(|r| !r.verified)
            .map(|r| format!("round {}: {}/{} ok", r.round, r.sessions_ok, r.sessions))
            .collect();
        let lost_cell = if lost.is_empty() {
            "none (all rounds)".to_owned()
        } else {
            all_ok = false;
            lost.join("; ")
        };
        let verifies: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.kind == "verify" && r.system == system)
            .collect();
        let restart_cell = if verifies.is_empty() {
            "n/a".to_owned()
        } else {
            let ok = verifies.iter().filter(|r| r.verified).count();
            if ok != verifies.len() {
                all_ok = false;
            }
            let sessions: usize = verifies.iter().map(|r| r.sessions).sum();
            let held: usize = verifies.iter().map(|r| r.sessions_ok).sum();
            format!("{held}/{sessions} sessions")
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {errors} | {lost_cell} | {race_cell} | {restart_cell} | {}; {} | {}; {} | {}; {} |",
            rps(&post),
            ms(&post, |r| r.p50_ms),
            ms(&post, |r| r.p99_ms),
            rps(&get),
            ms(&get, |r| r.p50_ms),
            ms(&get, |r| r.p99_ms),
            cpu(&post),
            cpu(&get),
            opt(&post, app_us),
            opt(&get, app_us),
            opt(&post, |r| r.db_us_per_req),
            opt(&get, |r| r.db_us_per_req),
        );
    }

    // Ratios of the medians, and the range of the same ratio taken round by
    // round (the systems of a round ran minutes apart, so a per-round ratio
    // cancels some of the machine's drift).
    let ratio = |a: &str, b: &str, method: Phase| -> Option<(f64, f64, f64)> {
        let (ra, rb) = (runs(a, method), runs(b, method));
        if ra.is_empty() || rb.is_empty() {
            return None;
        }
        let of_medians = med(&ra, |r| r.req_per_sec) / med(&rb, |r| r.req_per_sec);
        let per_round: Vec<f64> = ra
            .iter()
            .filter_map(|x| {
                rb.iter()
                    .find(|y| y.round == x.round)
                    .map(|y| x.req_per_sec / y.req_per_sec)
            })
            .collect();
        let min = per_round.iter().copied().fold(f64::INFINITY, f64::min);
        let max = per_round.iter().copied().fold(0.0, f64::max);
        Some((of_medians, min, max))
    };
    println!(
        "\nCPU % is of one core over the measured window. app µs/req: CPU-microseconds of the app server per \
         measured request; db µs/req: of the database server, for the systems on PostgreSQL the whole \
         PostgreSQL server (postmaster, backends, WAL writer, checkpointer; exited backends through the \
         postmaster's reaped-children times), for the systems on Redis the redis-server process (all its \
         threads). race: one session, N concurrent POSTs (`loadgen race`), lost = N - (final - \
         initial count), then how many were answered 200."
    );
    println!("\n| ratio (req/s) | median | per-round range | target | met |");
    println!("|---|---|---|---|---|");
    let checks: [(&str, &str, Phase, f64, &str); 11] = [
        (
            "keel-redis",
            "ts-redis",
            Phase::Post,
            1.0,
            "Keel Redis POST / tower-sessions RedisStore POST",
        ),
        (
            "keel-redis",
            "ts-redis",
            Phase::Get,
            1.0,
            "Keel Redis GET / tower-sessions RedisStore GET",
        ),
        (
            "keel-pg",
            "ts-postgres",
            Phase::Post,
            2.0,
            "Keel PostgreSQL POST / tower-sessions PostgresStore POST",
        ),
        (
            "keel-pg",
            "ts-postgres",
            Phase::Get,
            1.0,
            "Keel PostgreSQL GET / tower-sessions PostgresStore GET",
        ),
        (
            "keel",
            "ts-sqlite",
            Phase::Post,
            10.0,
            "Keel POST / tower-sessions SQLite POST",
        ),
        (
            "keel",
            "ts-memory",
            Phase::Post,
            0.5,
            "Keel POST / tower-sessions MemoryStore POST",
        ),
        (
            "keel",
            "ts-memory",
            Phase::Get,
            1.0,
            "Keel GET / tower-sessions MemoryStore GET",
        ),
        (
            "keel-memory",
            "ts-memory",
            Phase::Post,
            f64::NAN,
            "Keel `--memory` POST / MemoryStore POST",
        ),
        (
            "keel-memory",
            "ts-memory",
            Phase::Get,
            f64::NAN,
            "Keel `--memory` GET / MemoryStore GET",
        ),
        (
            "keel",
            "ts-sqlite-wal",
            Phase::Post,
            f64::NAN,
            "Keel POST / tower-sessions SQLite (WAL) POST",
        ),
        (
            "keel",
            "ts-sqlite",
            Phase::Get,
            f64::NAN,
            "Keel GET / tower-sessions SQLite GET",
        ),
    ];
    for (a, b, method, target, name) in checks {
        let Some((value, min, max)) = ratio(a, b, method) else {
            continue;
        };
        let (target_cell, met) = if target.is_nan() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!(">= {target}x"),
                if value >= target { "yes" } else { "NO" }.to_owned(),
            )
        };
        println!("| {name} | {value:.2}x | {min:.2}x-{max:.2}x | {target_cell} | {met} |");
    }
    Ok(all_ok)
}
