//! keel-store benchmarks, measured in one run beside raw redb on the same
//! disk: durable commits/s (1 and 64 concurrent committers, against raw redb
//! writing the same records in batches of 64 and one per commit), point
//! reads/s, sweep time for 10k expired sessions among 100k and among 1M live
//! ones, and bytes on disk per session.
//!
//! Run: `cargo bench -p keel-store --bench store`. Options after `--`:
//! `--quick` skips the 1M-session sweep, `--commits-only` and `--sweep-only`
//! measure one part. `KEEL_SWEEP_BATCH` sets the sessions per sweep call
//! (default 1000). Files go to `KEEL_BENCH_DIR` or cargo's target temp dir.
//!
//! `KEEL_SWEEP_FIXTURES=DIR` is for iterating on the sweep: each sweep
//! database is loaded once into `DIR` (kept between runs) and every run
//! sweeps a fresh copy of it, opened cold. Such runs print "fixture copy"
//! and no load time; quoted figures come from runs without it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, RedbContainer, RedbOptions, SessionAdmin,
    SessionContainer, SessionValue,
};
use keel_txn::TransactionManager;
use redb::{Database, Durability, TableDefinition};

/// A session value of about 100 bytes, as a typical small session holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cart {
    user: String,
    items: Vec<u32>,
    note: String,
}

fn cart(n: u64) -> Cart {
    Cart {
        user: format!("user-{n:08}"),
        items: (0..8)
            .map(|i| (n as u32).wrapping_mul(31).wrapping_add(i))
            .collect(),
        note: "x".repeat(48),
    }
}

fn key(n: u64) -> ClientKey {
    ClientKey::from_client_id(&format!("bench-client-{n}"))
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = base.join(format!("keel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// One durable commit creating session `n` with one value.
fn commit_one(container: &RedbContainer, manager: &TransactionManager, n: u64) {
    let mut tx = manager.begin();
    container.create_session(&mut tx, &key(n)).unwrap();
    container
        .insert(&mut tx, &key(n), "shop", "cart", SessionValue::new(cart(n)))
        .unwrap();
    tx.commit().unwrap();
}

fn keel_commits(dir: &Path, committers: usize, per_committer: u64) -> f64 {
    let path = fresh(dir, &format!("commits-{committers}.redb"));
    let container = Arc::new(RedbContainer::open(&path).unwrap());
    let manager = TransactionManager::new();
    let barrier = Arc::new(Barrier::new(committers + 1));
    let threads: Vec<_> = (0..committers)
        .map(|t| {
            let (container, manager, barrier) = (
                Arc::clone(&container),
                manager.clone(),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_committer {
                    commit_one(&container, &manager, t as u64 * 1_000_000 + i);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for thread in threads {
        thread.join().unwrap();
    }
    (committers as u64 * per_committer) as f64 / start.elapsed().as_secs_f64()
}

const RAW_SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");
const RAW_DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");
const RAW_BY_ACCESS: TableDefinition<&[u8], ()> = TableDefinition::new("by_access");

/// Raw redb writing, per logical commit, exactly the records a Keel commit
/// of [`commit_one`] writes (the session record, the value, the package's
/// name-set version, the session's package-set version, the expiry index
/// entry), `batch` logical commits per durable redb commit; returns logical
/// commits/s. No validation, no serialization, no transaction manager.
fn raw_commits(dir: &Path, batch: u64, total: u64) -> f64 {
    let path = fresh(dir, &format!("raw-{batch}.redb"));
    let db = Database::create(&path).unwrap();
    let value = postcard::to_stdvec(&cart(1)).unwrap();
    let record = [7u8; 20];
    let start = Instant::now();
    let mut n = 0;
    while n < total {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        {
            let mut sessions = txn.open_table(RAW_SESSIONS).unwrap();
            let mut data = txn.open_table(RAW_DATA).unwrap();
            let mut by_access = txn.open_table(RAW_BY_ACCESS).unwrap();
            for _ in 0..batch {
                let k = key(n);
                sessions.insert(k.as_bytes(), record.as_slice()).unwrap();
                let mut item = k.as_bytes().to_vec();
                item.extend_from_slice(b"\0\x04shopcart");
                data.insert(item.as_slice(), value.as_slice()).unwrap();
                item.truncate(38);
                item.push(0xFF);
                data.insert(item.as_slice(), [1u8; 8].as_slice()).unwrap();
                data.insert(k.as_bytes().as_slice(), [1u8; 8].as_slice())
                    .unwrap();
                let mut by_time = n.to_be_bytes().to_vec();
                by_time.extend_from_slice(k.as_bytes());
                by_access.insert(by_time.as_slice(), ()).unwrap();
                n += 1;
            }
        }
        txn.commit().unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Create `count` sessions (one value each) at second `at`, in large
/// transactions.
fn load(container: &RedbContainer, clock: &ManualClock, first: u64, count: u64, at: u64) {
    clock.set(at);
    let manager = TransactionManager::new();
    let chunk = 5_000;
    let mut n = first;
    while n < first + count {
        let mut tx = manager.begin();
        for n in n..(n + chunk).min(first + count) {
            container.create_session(&mut tx, &key(n)).unwrap();
            container
                .insert(&mut tx, &key(n), "shop", "cart", SessionValue::new(cart(n)))
                .unwrap();
        }
        tx.commit().unwrap();
        n += chunk;
    }
}

/// Sessions deleted per sweep call (one durable commit each):
/// `KEEL_SWEEP_BATCH`, default 1000.
fn sweep_batch() -> usize {
    std::env::var("KEEL_SWEEP_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

struct SweepFigures {
    /// `None` for a copy of a fixture.
    load: Option<Duration>,
    /// One time per group of expired sessions, sorted.
    sweeps: Vec<Duration>,
    removed: u64,
    file_bytes: u64,
}

impl SweepFigures {
    fn median(&self) -> Duration {
        self.sweeps[self.sweeps.len() / 2]
    }
}

/// `groups` groups of `expired` sessions, each last accessed long before the
/// `live` ones; the clock then moves so that one group at a time expires, and
/// sweeping it (batches of 1000) is timed. Several groups give a median on a
/// noisy machine without loading the large database again.
fn sweep_among(dir: &Path, expired: u64, groups: u64, live: u64) -> SweepFigures {
    let name = format!("sweep-{live}-{expired}x{groups}.redb");
    let path = fresh(dir, &name);
    let clock = ManualClock::new(0);
    let (timeout, resolution) = (3_600, 600);
    let options = RedbOptions::new()
        .with_expiry(
            ExpiryPolicy::default()
                .with_timeout(timeout)
                .with_resolution(resolution),
        )
        .with_clock(Arc::new(clock.clone()));
    let group_at = |g: u64| 1_000 + g * 10_000;
    let fixtures = std::env::var_os("KEEL_SWEEP_FIXTURES").map(PathBuf::from);
    let load_all = |path: &Path| {
        let container = RedbContainer::open_with(path, options.clone()).unwrap();
        for g in 0..groups {
            load(&container, &clock, g * expired, expired, group_at(g));
        }
        load(&container, &clock, groups * expired, live, 1_000_000);
        container
    };
    let started = Instant::now();
    let (container, load_time) = match &fixtures {
        None => {
            let container = load_all(&path);
            (container, Some(started.elapsed()))
        }
        Some(fixtures) => {
            std::fs::create_dir_all(fixtures).unwrap();
            let fixture = fixtures.join(&name);
            if !fixture.exists() {
                let partial = fixtures.join(format!("{name}.partial"));
                let _ = std::fs::remove_file(&partial);
                drop(load_all(&partial));
                std::fs::rename(&partial, &fixture).unwrap();
            }
            std::fs::copy(&fixture, &path).unwrap();
            (RedbContainer::open_with(&path, options).unwrap(), None)
        }
    };
    let mut sweeps = Vec::new();
    let mut removed = 0;
    for g in 0..groups {
        // Group g has expired, group g + 1 not yet.
        clock.set(group_at(g) + timeout + resolution + 1);
        let start = Instant::now();
        loop {
            let report = container.sweep(sweep_batch()).unwrap();
            removed += report.removed;
            if !report.more {
                break;
            }
        }
        sweeps.push(start.elapsed());
    }
    sweeps.sort();
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    SweepFigures {
        load: load_time,
        sweeps,
        removed,
        file_bytes,
    }
}

fn point_reads(dir: &Path, sessions: u64, reads: u64) -> (f64, u64) {
    let path = fresh(dir, "reads.redb");
    let clock = ManualClock::new(1_000);
    let options = RedbOptions::new().with_clock(Arc::new(clock.clone()));
    let container = RedbContainer::open_with(&path, options).unwrap();
    load(&container, &clock, 0, sessions, 1_000);
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    let manager = TransactionManager::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = x % sessions;
        // One request: a fresh transaction (and redb snapshot) per read.
        let mut tx = manager.begin();
        let value = container.get(&mut tx, &key(n), "shop", "cart").unwrap();
        black_box(value.unwrap().to_typed::<Cart>().unwrap());
        tx.abort();
    }
    (reads as f64 / start.elapsed().as_secs_f64(), file_bytes)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = bench_dir();
    println!("keel-store benchmarks in {}", dir.display());

    let sweep_only = std::env::args().any(|a| a == "--sweep-only");
    // Interleaved rounds, medians: the machine is shared and noisy.
    let rounds = if sweep_only { 0 } else { 5 };
    let mut figures: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        figures[0].push(keel_commits(&dir, 1, 500));
        figures[1].push(keel_commits(&dir, 64, 80));
        figures[2].push(raw_commits(&dir, 1, 500));
        figures[3].push(raw_commits(&dir, 64, 64 * 80));
    }
    let labels = [
        "keel, 1 committer (durable commits/s)",
        "keel, 64 committers (durable commits/s)",
        "raw redb, 1 record per commit (records/s)",
        "raw redb, batches of 64 (records/s)",
    ];
    let mut medians = [0.0; 4];
    for (i, runs) in figures.iter_mut().enumerate() {
        if runs.is_empty() {
            continue;
        }
        runs.sort_by(f64::total_cmp);
        medians[i] = runs[runs.len() / 2];
        println!(
            "{:<44} median {:>7.0}  (min {:>7.0}, max {:>7.0}, {rounds} rounds)",
            labels[i],
            medians[i],
            runs[0],
            runs[runs.len() - 1]
        );
    }
    if !sweep_only {
        println!(
            "keel 64 committers / raw redb batches of 64: {:.2}",
            medians[1] / medians[3]
        );
        if std::env::args().any(|a| a == "--commits-only") {
            return;
        }
        let (reads, file_bytes) = point_reads(&dir, 100_000, 200_000);
        println!("point reads (fresh transaction each, 100k sessions): {reads:>9.0} reads/s");
        println!(
            "bytes on disk per session (100k sessions, one ~100-byte value): {:.0}",
            file_bytes as f64 / 100_000.0
        );
    }

    let report = |label: &str, f: &SweepFigures| {
        let load = match f.load {
            Some(took) => format!("load took {took:?}"),
            None => "fixture copy".to_owned(),
        };
        println!(
            "sweep 10k expired among {label} live: median {:?} of {:?} ({} removed; {load}; file {} MiB)",
            f.median(),
            f.sweeps,
            f.removed,
            f.file_bytes >> 20
        );
    };
    let small = sweep_among(&dir, 10_000, 3, 100_000);
    report("100k", &small);
    if !quick {
        let large = sweep_among(&dir, 10_000, 3, 1_000_000);
        report("1M", &large);
        println!(
            "sweep time ratio 1M / 100k (medians): {:.2}",
            large.median().as_secs_f64() / small.median().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
