//! A process killed with SIGKILL at a random moment loses no acknowledged
//! commit, and leaves no transaction half applied.
//!
//! The test re-runs its own binary as a child process (selected by an
//! environment variable) that commits from several threads in a loop and
//! prints every commit the container acknowledged. The parent kills it at a
//! random moment, reopens the database, and checks every acknowledged
//! commit; many rounds on one file, so later rounds also start with a repair.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use keel_store::{ClientKey, RedbContainer, SessionContainer, SessionValue};
use keel_txn::TransactionManager;

const CHILD_DB: &str = "KEEL_CRASH_TEST_DB";
const CHILD_START: &str = "KEEL_CRASH_TEST_START";
const SESSIONS: u64 = 8;

fn key(n: u64) -> ClientKey {
    ClientKey::from_client_id(&format!("crash-{}", n % SESSIONS))
}

/// The child's work; a no-op unless the parent started this binary as its
/// child.
#[test]
fn child_process_entry_point() {
    let (Ok(path), Ok(start)) = (std::env::var(CHILD_DB), std::env::var(CHILD_START)) else {
        return;
    };
    let start: u64 = start.parse().unwrap();
    let container = Arc::new(RedbContainer::open(path).unwrap());
    let next = Arc::new(AtomicU64::new(start));
    let _threads: Vec<_> = (0..4)
        .map(|_| {
            let (container, next) = (Arc::clone(&container), Arc::clone(&next));
            std::thread::spawn(move || {
                let manager = TransactionManager::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let mut tx = manager.begin();
                    container.create_session(&mut tx, &key(n)).unwrap();
                    for package in ["a", "b"] {
                        container
                            .insert(
                                &mut tx,
                                &key(n),
                                package,
                                &n.to_string(),
                                SessionValue::new(n),
                            )
                            .unwrap();
                    }
                    tx.commit().unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {n}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    // The committers run until the parent kills this process.
    loop {
        std::thread::park();
    }
}

/// A small PRNG (xorshift), seeded from the clock and printed, so a failing
/// run can be reproduced with `KEEL_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn every_acknowledged_commit_survives_a_kill() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let seed = std::env::var("KEEL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("KEEL_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: BTreeSet<u64> = BTreeSet::new();
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 40 && started.elapsed() < Duration::from_secs(20) {
        rounds += 1;
        let start = rounds * 1_000_000;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .env(CHILD_START, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| line.strip_prefix("acked ").and_then(|n| n.parse().ok()))
                .collect::<Vec<u64>>()
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acknowledged.extend(reader.join().unwrap());

        let container = RedbContainer::open(&path).unwrap();
        let manager = TransactionManager::new();
        let mut tx = manager.begin();
        let mut present = BTreeSet::new();
        for session in 0..SESSIONS {
            let a = container.names(&mut tx, &key(session), "a").unwrap();
            let b = container.names(&mut tx, &key(session), "b").unwrap();
            assert_eq!(a, b, "a transaction is half applied (round {rounds})");
            present.extend(a.iter().map(|n| n.parse::<u64>().unwrap()));
        }
        let lost: Vec<_> = acknowledged.difference(&present).take(10).collect();
        assert!(
            lost.is_empty(),
            "acknowledged but lost in round {rounds}: {lost:?}"
        );
        tx.abort();
    }
    eprintln!(
        "{rounds} rounds, {} acknowledged commits",
        acknowledged.len()
    );
    assert!(rounds >= 5);
    assert!(!acknowledged.is_empty());
}
