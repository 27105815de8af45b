//! `inproc`: the server-side CPU of one request through each app's stack
//! (router, session middleware, handler, JSON), without the network: the
//! same handlers as `keel serve` and `anchor`, called in-process on one
//! thread, one client with a session holding `count`.
//!
//! Prints ns per request (median of 7 rounds) for `GET /api/count` and the
//! RAM / memory `POST`, and the Keel / tower-sessions ratios. Keel here is
//! the library stack (`SessionLayer` over a `RedbContainer` or a
//! `RamContainer`), without `keel serve`'s metrics wrapper.
//!
//! Run: `cargo run --release --manifest-path bench/Cargo.toml --bin inproc`.
//!
//! Also prints the floor (the route with no session middleware) and Keel's
//! layer around a handler that never uses its session.
//!
//! Other modes:
//! - `inproc --loop redb-get|ram-get|anchor-get|bare-get|idle-get SECONDS`
//!   runs one case in a loop (for `perf record`) and prints its ns per
//!   request;
//! - `inproc --threads N` runs GET from N threads at once, each its own
//!   client, and prints ns per request per thread: what requests on
//!   different cores cost each other (shared reference counts, locks).
//!   tower-sessions' MemoryStore is a tokio mutex, which here hands the lock
//!   between two runtimes' parked threads: its figure in this mode says
//!   little about a multi-threaded server.

// A measurement tool: a failed setup step ends the run with its message.
#![allow(clippy::expect_used)]

use std::{
    convert::Infallible,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    http::{Method, Request, Response, header},
    routing::get,
};
use http_body_util::BodyExt;
use keel_session::{ContainerRegistry, CookieConfig, KeyRing, SessionLayer, SessionManager};
use keel_store::{RamContainer, RedbContainer, SessionContainer};
use serde::Serialize;
use tower::{Service, ServiceExt};
use tower_sessions::{MemoryStore, SessionManagerLayer};

const ROUNDS: usize = 7;

#[derive(Serialize)]
struct Count {
    count: u64,
}

async fn keel_read(
    session: keel_session::Session,
) -> Result<Json<Count>, keel_session::SessionError> {
    let count = session.value::<u64>("keel.demo", "count")?.unwrap_or(0);
    Ok(Json(Count { count }))
}

async fn keel_increment(
    session: keel_session::Session,
) -> Result<Json<Count>, keel_session::SessionError> {
    let data = session.pkg("keel.demo")?;
    let count = data.get::<u64>("count")?.unwrap_or(0) + 1;
    data.insert("count", count)?;
    Ok(Json(Count { count }))
}

async fn ts_read(session: tower_sessions::Session) -> Json<Count> {
    let count = session
        .get::<u64>("count")
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    Json(Count { count })
}

async fn ts_increment(session: tower_sessions::Session) -> Json<Count> {
    let count = session
        .get::<u64>("count")
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
        + 1;
    let _ = session.insert("count", count).await;
    Json(Count { count })
}

fn keel_app(container: Arc<dyn SessionContainer>) -> Router {
    let ring = KeyRing::generate().expect("a key ring");
    let ids = CookieConfig::keel(ring).build().expect("cookie config");
    let manager = SessionManager::new(ids, ContainerRegistry::new().with_default(container));
    Router::new()
        .route("/api/count", get(keel_read).post(keel_increment))
        .layer(SessionLayer::new(manager))
        // As `axum::serve` does: handlers become routes (and the layer is
        // applied) once, not on every call.
        .with_state(())
}

/// Keel's layer around a handler that takes the session but never uses it:
/// the cost of the layer itself.
fn idle_app() -> Router {
    async fn idle(_session: keel_session::Session) -> Json<Count> {
        Json(Count { count: 1 })
    }
    let ring = KeyRing::generate().expect("a key ring");
    let ids = CookieConfig::keel(ring).build().expect("cookie config");
    let containers = ContainerRegistry::new().with_default(Arc::new(RamContainer::new()));
    Router::new()
        .route("/api/count", get(idle))
        .layer(SessionLayer::new(SessionManager::new(ids, containers)))
        .with_state(())
}

/// tower-sessions' layer around a handler that takes the session but never
/// uses it: the cost of that layer itself.
fn anchor_idle_app() -> Router {
    async fn idle(_session: tower_sessions::Session) -> Json<Count> {
        Json(Count { count: 1 })
    }
    Router::new()
        .route("/api/count", get(idle))
        .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false))
        .with_state(())
}

/// The same route with no session middleware: the floor both stacks share.
fn bare_app() -> Router {
    async fn read() -> Json<Count> {
        Json(Count { count: 1 })
    }
    Router::new()
        .route("/api/count", get(read).post(read))
        .with_state(())
}

fn anchor_app() -> Router {
    Router::new()
        .route("/api/count", get(ts_read).post(ts_increment))
        .layer(SessionManagerLayer::new(MemoryStore::default()).with_secure(false))
        .with_state(())
}

async fn call(app: &mut Router, method: Method, cookie: Option<&str>) -> Response<Body> {
    let mut request = Request::builder().method(method).uri("/api/count");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let request = request.body(Body::empty()).expect("a request");
    let service = <Router as ServiceExt<Request<Body>>>::ready(app)
        .await
        .expect("ready");
    let response: Result<_, Infallible> = service.call(request).await;
    response.expect("infallible")
}

/// A first POST: the client's cookie (`name=value`).
async fn first_cookie(app: &mut Router) -> String {
    let response = call(app, Method::POST, None).await;
    assert!(response.status().is_success(), "{}", response.status());
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .expect("a Set-Cookie")
        .to_str()
        .expect("ASCII")
        .to_owned();
    set.split(';').next().expect("a pair").to_owned()
}

/// Median ns per request over `ROUNDS` rounds of about 200 ms.
async fn measure(app: &mut Router, method: Method, cookie: &str) -> f64 {
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            let response = call(app, method.clone(), Some(cookie)).await;
            black_box(response.into_body().collect().await.expect("a body"));
        }
        if start.elapsed() > Duration::from_millis(50) {
            batch *= 4;
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..batch {
            let response = call(app, method.clone(), Some(cookie)).await;
            black_box(response.into_body().collect().await.expect("a body"));
        }
        samples.push(start.elapsed().as_nanos() as f64 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

/// GET on `app` from one thread per cookie at once (each thread its own
/// single-threaded runtime and clone of the app): median ns per request.
fn parallel(app: &Router, cookies: &[String]) -> f64 {
    let results: Vec<f64> = std::thread::scope(|scope| {
        let handles: Vec<_> = cookies
            .iter()
            .map(|cookie| {
                let mut app = app.clone();
                scope.spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime")
                        .block_on(async { measure(&mut app, Method::GET, cookie).await })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    results.iter().sum::<f64>() / results.len() as f64
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("keel-inproc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let redb: Arc<dyn SessionContainer> =
            Arc::new(RedbContainer::open(dir.join("inproc.redb")).expect("a redb file"));
        let mut keel_redb = keel_app(redb);
        let mut keel_ram = keel_app(Arc::new(RamContainer::new()));
        let mut anchor = anchor_app();
        let redb_cookie = first_cookie(&mut keel_redb).await;
        let ram_cookie = first_cookie(&mut keel_ram).await;
        let anchor_cookie = first_cookie(&mut anchor).await;
        let mut bare = bare_app();
        let mut keel_idle = idle_app();
        let mut anchor_idle = anchor_idle_app();

        let nocookie = "x=y".to_owned();
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("--threads") {
            let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
            let mut redb_cookies = Vec::new();
            let mut anchor_cookies = Vec::new();
            let mut ram_cookies = Vec::new();
            for _ in 0..threads {
                ram_cookies.push(first_cookie(&mut keel_ram).await);
                redb_cookies.push(first_cookie(&mut keel_redb).await);
                anchor_cookies.push(first_cookie(&mut anchor).await);
            }
            for round in 0..3 {
                let anchor_ns = parallel(&anchor, &anchor_cookies);
                let keel_ns = parallel(&keel_redb, &redb_cookies);
                let ram_ns = parallel(&keel_ram, &ram_cookies);
                println!(
                    "round {round}: {threads} threads, ns per request per thread: MemoryStore {anchor_ns:.0}, Keel redb {keel_ns:.0}, Keel RAM {ram_ns:.0}"
                );
            }
            drop(keel_redb);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        if args.get(1).map(String::as_str) == Some("--loop") {
            let case = args.get(2).map(String::as_str).unwrap_or("redb-get");
            let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
            let (app, cookie) = match case {
                "redb-get" => (&mut keel_redb, &redb_cookie),
                "ram-get" => (&mut keel_ram, &ram_cookie),
                "anchor-get" => (&mut anchor, &anchor_cookie),
                "bare-get" => (&mut bare, &anchor_cookie),
                "idle-get" => (&mut keel_idle, &nocookie),
                other => panic!("unknown case {other}: redb-get, ram-get or anchor-get"),
            };
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let (mut requests, start) = (0u64, Instant::now());
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    let response = call(app, Method::GET, Some(cookie)).await;
                    black_box(response.into_body().collect().await.expect("a body"));
                }
                requests += 1000;
            }
            println!("{case}: {:.0} ns/req", start.elapsed().as_nanos() as f64 / requests as f64);
            drop(keel_redb);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }

        let bare_get = measure(&mut bare, Method::GET, &anchor_cookie).await;
        let idle_get = measure(&mut keel_idle, Method::GET, &redb_cookie).await;
        let idle_get_nocookie = measure(&mut keel_idle, Method::GET, "x=y").await;
        let anchor_idle_get = measure(&mut anchor_idle, Method::GET, "x=y").await;
        let anchor_get = measure(&mut anchor, Method::GET, &anchor_cookie).await;
        let redb_get = measure(&mut keel_redb, Method::GET, &redb_cookie).await;
        let ram_get = measure(&mut keel_ram, Method::GET, &ram_cookie).await;
        let anchor_post = measure(&mut anchor, Method::POST, &anchor_cookie).await;
        let ram_post = measure(&mut keel_ram, Method::POST, &ram_cookie).await;
        drop(keel_redb);
        let _ = std::fs::remove_dir_all(&dir);

        println!("request (in-process, one thread)          ns/req   / MemoryStore");
        let row = |name: &str, ns: f64, base: f64| {
            println!("{name:<42} {ns:>7.0}   {:>5.2}", ns / base);
        };
        row("GET  no session middleware (floor)", bare_get, anchor_get);
        row("GET  keel layer, session unused (foreign cookie)", idle_get, anchor_get);
        row("GET  keel layer, session unused (no cookie)", idle_get_nocookie, anchor_get);
        row("GET  tower-sessions layer, session unused (no cookie)", anchor_idle_get, anchor_get);
        row("GET  tower-sessions MemoryStore", anchor_get, anchor_get);
        row("GET  Keel, redb container", redb_get, anchor_get);
        row("GET  Keel, RAM container", ram_get, anchor_get);
        row("POST tower-sessions MemoryStore", anchor_post, anchor_post);
        row("POST Keel, RAM container", ram_post, anchor_post);
    });
}
