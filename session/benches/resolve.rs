//! Per-request cost of resolving a session from a request with a valid
//! cookie and reading one value, beside the floor: verifying the id's
//! HMAC-SHA256 alone. Keel over the RAM container and over a redb file.
//!
//! Run: `cargo bench -p keel-session --bench resolve`. Prints ns per
//! operation (median of 7 rounds) and the ratio to the floor.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use http::{HeaderMap, HeaderValue, Method, header};
use keel_session::{
    ContainerRegistry, CookieConfig, IdFormat, KeelIdFormat, KeyRing, SessionManager,
};
use keel_store::{RamContainer, RedbContainer, SessionContainer};

const ROUNDS: usize = 7;

/// Median ns per call of `f` over `ROUNDS` rounds of about 200 ms each.
fn measure(mut f: impl FnMut()) -> f64 {
    // Calibrate the batch size to about 200 ms.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        if start.elapsed() > Duration::from_millis(50) {
            batch *= 4;
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

/// A manager over `container` and the cookie header of a client whose
/// session holds `count = 41`.
fn setup(container: Arc<dyn SessionContainer>, ring: &KeyRing) -> (SessionManager, HeaderMap) {
    let ids = CookieConfig::keel(ring.clone()).build().unwrap();
    let manager = SessionManager::new(ids, ContainerRegistry::new().with_default(container));
    let session = manager.session_for(&Method::POST, &HeaderMap::new());
    session
        .pkg("bench")
        .unwrap()
        .insert("count", 41u64)
        .unwrap();
    session.commit().unwrap();
    let mut response = HeaderMap::new();
    session.write_cookie_headers(&mut response);
    let set = response.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    let pair = set.split(';').next().unwrap().to_owned();
    let mut request = HeaderMap::new();
    request.insert(header::COOKIE, HeaderValue::from_str(&pair).unwrap());
    (manager, request)
}

fn resolve_and_read(manager: &SessionManager, headers: &HeaderMap) -> u64 {
    let session = manager.session_for(&Method::GET, headers);
    let count = session
        .get("bench")
        .unwrap()
        .unwrap()
        .get::<u64>("count")
        .unwrap()
        .unwrap();
    session.commit().unwrap();
    count
}

fn main() {
    let ring = KeyRing::generate().unwrap();
    let format = KeelIdFormat::new(ring.clone());
    let id = format.mint().unwrap();

    let floor = measure(|| {
        black_box(format.verify(black_box(id.as_str())));
    });

    let (ram_manager, ram_headers) = setup(Arc::new(RamContainer::new()), &ring);
    assert_eq!(resolve_and_read(&ram_manager, &ram_headers), 41);
    let read_cookie = measure(|| {
        black_box(ram_manager.client_ids().read_id(black_box(&ram_headers)));
    });
    let ram = measure(|| {
        black_box(resolve_and_read(&ram_manager, &ram_headers));
    });

    let dir = std::env::temp_dir().join(format!("keel-resolve-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redb = Arc::new(RedbContainer::open(dir.join("bench.redb")).unwrap());
    let (redb_manager, redb_headers) = setup(redb, &ring);
    assert_eq!(resolve_and_read(&redb_manager, &redb_headers), 41);
    let redb = measure(|| {
        black_box(resolve_and_read(&redb_manager, &redb_headers));
    });
    drop(redb_manager);
    let _ = std::fs::remove_dir_all(&dir);

    println!("operation                                         ns/op   x floor");
    let row = |name: &str, ns: f64| println!("{name:<48} {ns:>7.0}   {:>5.1}", ns / floor);
    row("floor: verify the id's HMAC-SHA256", floor);
    row(
        "read the id from the Cookie header (verify incl.)",
        read_cookie,
    );
    row("resolve + read one value, RAM container", ram);
    row("resolve + read one value, redb container", redb);
}
