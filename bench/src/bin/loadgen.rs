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
//!   it made: the no-lost-update check.
//! - `loadgen verify`: after a server restart, checks that every session in
//!   the `--state` file still has its acknowledged count (every acknowledged
//!   write durable).
//! - `loadgen table`: turns the `RESULT` lines that `run`/`verify` appended to
//!   a results file into the comparison table (medians over rounds, ratios).
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

fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    own: Option<u64>,
    server: Option<u64>,
}

impl CpuMark {
    fn now(server_pid: Option<u32>) -> Self {
        CpuMark {
            at: Instant::now(),
            own: cpu_ticks("self"),
            server: server_pid.and_then(|pid| cpu_ticks(&pid.to_string())),
        }
    }

    /// Percent of one core used by (self, server) since `start`.
    fn since(self, start: CpuMark) -> (Option<f64>, Option<f64>) {
        let wall = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let pct = |a: Option<u64>, b: Option<u64>| {
            Some((a? as f64 - b? as f64) / TICKS_PER_SEC / wall * 100.0)
        };
        (pct(self.own, start.own), pct(self.server, start.server))
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
    let marks = tokio::spawn(async move {
        tokio::time::sleep_until(window.warmup_end.into()).await;
        let first = CpuMark::now(server_pid);
        if window.per_connection.is_some() {
            return (first, None);
        }
        tokio::time::sleep_until(window.end.into()).await;
        (first, Some(CpuMark::now(server_pid)))
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
    let all_done = CpuMark::now(server_pid);
    let (first_mark, last_mark) = marks.await?;
    let last_mark = last_mark.unwrap_or(all_done);
    let (loadgen_cpu, server_cpu) = last_mark.since(first_mark);
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
        loadgen_cpu_pct: loadgen_cpu,
        server_cpu_pct: server_cpu,
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
        "  cpu over the window (100% = one core): loadgen {}, server {}",
        fmt_pct(loadgen_cpu),
        fmt_pct(server_cpu)
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
    };
    if let Some(path) = &common.results {
        append_result(path, &result)?;
    }
    Ok(bad.is_empty())
}

// ---------------------------------------------------------------------------
// `table`

/// The systems in table order: (label in the results, name in the table).
const SYSTEMS: [(&str, &str); 5] = [
    ("keel", "Keel, redb file (durable)"),
    ("keel-memory", "Keel `--memory`"),
    ("ts-sqlite", "tower-sessions SqliteStore (sqlx defaults)"),
    ("ts-sqlite-wal", "tower-sessions SqliteStore, WAL"),
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
        "| system | POST req/s | POST p50 ms | POST p99 ms | GET req/s | GET p50 ms | GET p99 ms | errors | lost updates | durable after restart | CPU % server / loadgen (POST; GET) | server CPU µs/req (POST; GET) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
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
        let cpu = |rs: &[&RunResult]| {
            let server = med(rs, |r| r.server_cpu_pct.unwrap_or(f64::NAN));
            let loadgen = med(rs, |r| r.loadgen_cpu_pct.unwrap_or(f64::NAN));
            format!("{server:.0} / {loadgen:.0}")
        };
        let cost = |rs: &[&RunResult]| {
            let us = med(rs, |r| {
                r.server_cpu_pct.unwrap_or(f64::NAN) / 100.0 * r.seconds / r.requests as f64 * 1e6
            });
            format!("{us:.0}")
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
            "| {name} | {} | {} | {} | {} | {} | {} | {errors} | {lost_cell} | {restart_cell} | {}; {} | {}; {} |",
            rps(&post),
            ms(&post, |r| r.p50_ms),
            ms(&post, |r| r.p99_ms),
            rps(&get),
            ms(&get, |r| r.p50_ms),
            ms(&get, |r| r.p99_ms),
            cpu(&post),
            cpu(&get),
            cost(&post),
            cost(&get),
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
    println!("\n| ratio (req/s) | median | per-round range | target | met |");
    println!("|---|---|---|---|---|");
    let checks: [(&str, &str, Phase, f64, &str); 7] = [
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
