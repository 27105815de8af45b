//! The shared databases of the multi-server tests: a PostgreSQL database of
//! the test's own, or a Redis key prefix of its own, on the machine's
//! servers (dropped at the end), and a TCP proxy in front of either that can
//! add latency or cut the link. Under `CI=true` an unreachable server fails
//! the test; elsewhere the test says loudly that it was skipped.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

/// PostgreSQL's address.
pub(crate) const HOST_PORT: &str = "127.0.0.1:5432";

/// Redis's address.
pub(crate) const REDIS_HOST_PORT: &str = "127.0.0.1:6379";

/// A database several servers share, made fresh for one test.
pub(crate) trait SharedDb: Sized {
    /// What the tests call it.
    const NAME: &'static str;
    /// The server's address (what a proxy forwards to).
    const ADDRESS: &'static str;
    /// A URL of the same kind whose server does not answer, and what an
    /// error about it must name.
    const UNREACHABLE: (&'static str, &'static [&'static str]);
    /// Whether to skip: the server does not answer and this is not CI.
    fn skip() -> bool;
    /// A fresh one.
    fn new() -> Self;
    /// The `--db` URL, directly or through `proxy`.
    fn url(&self, proxy: Option<&Proxy>) -> String;
}

impl SharedDb for TestDatabase {
    const NAME: &'static str = "PostgreSQL";
    const ADDRESS: &'static str = HOST_PORT;
    const UNREACHABLE: (&'static str, &'static [&'static str]) = (
        "postgres://postgres@127.0.0.1:1/nowhere",
        &["127.0.0.1:1", "nowhere"],
    );

    fn skip() -> bool {
        skip()
    }

    fn new() -> Self {
        TestDatabase::new()
    }

    fn url(&self, proxy: Option<&Proxy>) -> String {
        TestDatabase::url(self, proxy)
    }
}

/// A Redis key prefix of this test's own; its keys are deleted on drop.
pub(crate) struct TestPrefix {
    pub(crate) name: String,
}

fn redis_run<T>(
    work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let client =
        redis::Client::open(format!("redis://{REDIS_HOST_PORT}")).map_err(|e| e.to_string())?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    work(&mut connection).map_err(|e| e.to_string())
}

impl SharedDb for TestPrefix {
    const NAME: &'static str = "Redis";
    const ADDRESS: &'static str = REDIS_HOST_PORT;
    const UNREACHABLE: (&'static str, &'static [&'static str]) =
        ("redis://127.0.0.1:1", &["127.0.0.1:1"]);

    fn skip() -> bool {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        match REACHABLE
            .get_or_init(|| redis_run(|c| redis::cmd("PING").query::<String>(c)).map(|_| ()))
        {
            Ok(()) => false,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("Redis at {REDIS_HOST_PORT} is unreachable under CI=true: {why}")
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED: Redis at {REDIS_HOST_PORT} is unreachable ({why}); this test ran nothing"
                );
                true
            }
        }
    }

    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        TestPrefix {
            name: format!(
                "keel_cli_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    fn url(&self, proxy: Option<&Proxy>) -> String {
        let at = proxy.map_or(REDIS_HOST_PORT.to_owned(), |p| p.addr.clone());
        format!("redis://{at}/0?prefix={}", self.name)
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.name);
        let dropped = redis_run(|c| {
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(c)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(c)?;
            }
            Ok(())
        });
        if let Err(err) = dropped {
            eprintln!("could not delete test keys {pattern}: {err}");
        }
    }
}

/// The three-master Redis Cluster's nodes (`scripts/redis-cluster.sh`).
pub(crate) const CLUSTER_NODES: [&str; 3] =
    ["127.0.0.1:17001", "127.0.0.1:17002", "127.0.0.1:17003"];

/// A Redis key prefix of this test's own on the Redis Cluster; its keys are
/// deleted on drop. No proxy: a cluster client learns the nodes' own
/// addresses from the cluster, so it would go around one.
pub(crate) struct TestClusterPrefix {
    pub(crate) name: String,
}

fn node_run<T>(
    node: &str,
    work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let client = redis::Client::open(format!("redis://{node}")).map_err(|e| e.to_string())?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    work(&mut connection).map_err(|e| e.to_string())
}

fn cluster_ok() -> Result<(), String> {
    for node in CLUSTER_NODES {
        let info: String = node_run(node, |c| redis::cmd("CLUSTER").arg("INFO").query(c))?;
        if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
            return Err(format!("{node}: cluster_state is not ok"));
        }
    }
    Ok(())
}

impl SharedDb for TestClusterPrefix {
    const NAME: &'static str = "Redis Cluster";
    const ADDRESS: &'static str = CLUSTER_NODES[0];
    const UNREACHABLE: (&'static str, &'static [&'static str]) =
        ("redis+cluster://127.0.0.1:1,127.0.0.1:2", &["127.0.0.1:1"]);

    /// A cluster that does not answer is started first
    /// (`scripts/redis-cluster.sh start`, which needs `redis-server`).
    fn skip() -> bool {
        static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let reachable = REACHABLE.get_or_init(|| {
            if cluster_ok().is_err() {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-cluster.sh");
                let started = std::process::Command::new("bash")
                    .arg(script)
                    .arg("start")
                    .output()
                    .map_err(|err| format!("{script} start: {err}"))?;
                if !started.status.success() {
                    return Err(format!(
                        "{script} start failed: {}",
                        String::from_utf8_lossy(&started.stderr).trim()
                    ));
                }
            }
            cluster_ok()
        });
        match reachable {
            Ok(()) => false,
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("the Redis Cluster is unreachable under CI=true: {why}")
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED: the Redis Cluster is unreachable ({why}); this test ran nothing"
                );
                true
            }
        }
    }

    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        TestClusterPrefix {
            name: format!(
                "keel_cli_cluster_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
        }
    }

    fn url(&self, proxy: Option<&Proxy>) -> String {
        assert!(proxy.is_none(), "a cluster client goes around a proxy");
        format!(
            "redis+cluster://{}?prefix={}",
            CLUSTER_NODES.join(","),
            self.name
        )
    }
}

impl Drop for TestClusterPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.name);
        for node in CLUSTER_NODES {
            let dropped = node_run(node, |c| {
                let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(c)?;
                // One DEL a key: they span slots.
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                pipe.query::<()>(c)
            });
            if let Err(err) = dropped {
                eprintln!("could not delete test keys {pattern} on {node}: {err}");
            }
        }
    }
}

/// Run `sql` (several statements allowed) on database `db` of the machine's
/// server.
pub(crate) fn execute(db: &str, sql: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let url = format!("postgres://postgres@{HOST_PORT}/{db}");
        let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        // One statement at a time: CREATE DATABASE refuses to run in the
        // implicit transaction of a multi-statement string.
        let mut result = Ok(());
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            result = client
                .batch_execute(statement)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                });
            if result.is_err() {
                break;
            }
        }
        driver.abort();
        result
    })
}

/// Whether to skip: PostgreSQL does not answer and this is not CI.
pub(crate) fn skip() -> bool {
    static REACHABLE: OnceLock<Result<(), String>> = OnceLock::new();
    match REACHABLE.get_or_init(|| execute("postgres", "SELECT 1")) {
        Ok(()) => false,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL at {HOST_PORT} is unreachable under CI=true: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: PostgreSQL at {HOST_PORT} is unreachable ({why}); this test ran nothing"
            );
            true
        }
    }
}

/// A database of this test's own, dropped (with its connections) on drop.
pub(crate) struct TestDatabase {
    pub(crate) name: String,
}

impl TestDatabase {
    pub(crate) fn new() -> TestDatabase {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "keel_cli_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        execute(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}"),
        )
        .unwrap();
        TestDatabase { name }
    }

    /// The URL a server uses, directly or through `proxy`.
    pub(crate) fn url(&self, proxy: Option<&Proxy>) -> String {
        let at = proxy.map_or(HOST_PORT.to_owned(), |p| p.addr.clone());
        format!("postgres://postgres@{at}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(err) = execute(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop test database {}: {err}", self.name);
        }
    }
}

/// A TCP proxy to PostgreSQL on a loopback port: each chunk it forwards
/// waits `delay` first; `cut()` closes every connection and refuses new
/// ones until `restore()`.
pub(crate) struct Proxy {
    pub(crate) addr: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    delay_ms: AtomicU64,
    cut: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    pub(crate) fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState {
            delay_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if shared.cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = shared.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let state = Arc::clone(&shared);
                    thread::spawn(move || pump(from, to, &state));
                }
            }
        });
        Proxy { addr, state }
    }

    /// Wait `delay` before forwarding each chunk, both ways.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Close every connection and refuse new ones.
    pub(crate) fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Accept connections again.
    pub(crate) fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        if state.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
