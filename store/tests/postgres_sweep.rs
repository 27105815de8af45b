//! Sweeping on PostgreSQL: any number of servers sweep at once without
//! doing the same work twice (rows another sweeper holds are skipped), every
//! expired session goes, no live one does, and a request committing on a
//! session meanwhile is never blocked for long nor undone.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, thread};

use common::postgres::{Schema, skip, url};
use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, PostgresContainer, PostgresOptions, SessionAdmin,
    SessionContainer, SessionValue,
};
use keel_txn::TransactionManager;

fn connect(schema: &Schema, clock: &ManualClock) -> Arc<PostgresContainer> {
    Arc::new(
        PostgresContainer::connect(
            &url(),
            PostgresOptions::new()
                .with_schema(schema.name.clone())
                .with_pool_size(2)
                .with_expiry(
                    ExpiryPolicy::default()
                        .with_timeout(100)
                        .with_resolution(10),
                )
                .with_clock(Arc::new(clock.clone())),
        )
        .unwrap(),
    )
}

#[test]
fn four_sweepers_at_once_remove_each_expired_session_exactly_once() {
    if skip() {
        return;
    }
    let schema = Schema::new();
    let clock = ManualClock::new(1_000);
    let sweepers: Vec<_> = (0..4).map(|_| connect(&schema, &clock)).collect();
    let manager = TransactionManager::new();
    let writer = &sweepers[0];
    // 600 sessions that will expire, 50 that will stay live.
    for (n, at) in (0..650u32).map(|n| (n, if n < 600 { 1_000 } else { 1_200 })) {
        clock.set(at);
        let key = ClientKey::from_client_id(&format!("sweep-{n}"));
        let mut tx = manager.begin();
        writer.declare_fresh(&mut tx, &key).unwrap();
        writer.create_session(&mut tx, &key).unwrap();
        writer
            .insert(&mut tx, &key, "app", "n", SessionValue::new(n))
            .unwrap();
        tx.commit().unwrap();
    }
    clock.set(1_250); // idle cutoff 1_140: the first 600 have expired
    let threads: Vec<_> = sweepers
        .iter()
        .map(|sweeper| {
            let sweeper = Arc::clone(sweeper);
            thread::spawn(move || {
                let mut removed = 0;
                loop {
                    let report = sweeper.sweep(25).unwrap();
                    removed += report.removed;
                    if !report.more {
                        return removed;
                    }
                }
            })
        })
        .collect();
    let removed: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        removed.iter().sum::<u64>(),
        600,
        "each exactly once: {removed:?}"
    );
    let stats = writer.stats().unwrap();
    assert_eq!((stats.sessions, stats.expired), (50, 0));
    let mut tx = manager.begin();
    for n in 600..650u32 {
        let key = ClientKey::from_client_id(&format!("sweep-{n}"));
        let value = writer.get(&mut tx, &key, "app", "n").unwrap().unwrap();
        assert_eq!(value.to_typed::<u32>().unwrap(), n);
    }
}
