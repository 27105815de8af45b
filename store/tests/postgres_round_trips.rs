//! Round trips to PostgreSQL per request, counted: a request that only
//! reads costs one (its session read ahead, nothing at commit); a request
//! that writes costs two (the read and the commit); a new client's first
//! write costs one (a minted id needs no read). Concurrent commits share
//! group commits, and none is lost.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::postgres::{Schema, skip, url};
use keel_store::{
    ClientKey, PostgresContainer, PostgresOptions, RoundTrips, SessionContainer, SessionValue,
};
use keel_txn::{TransactionManager, commit_without_blocking};

fn connect(schema: &Schema) -> Arc<PostgresContainer> {
    Arc::new(
        PostgresContainer::connect(
            &url(),
            PostgresOptions::new()
                .with_schema(schema.name.clone())
                .with_pool_size(4),
        )
        .unwrap(),
    )
}

fn spent(before: RoundTrips, after: RoundTrips) -> (u64, u64) {
    (after.reads - before.reads, after.commits - before.commits)
}

#[test]
fn a_read_costs_one_round_trip_a_write_two_and_a_first_write_one() {
    if skip() {
        return;
    }
    let schema = Schema::new();
    let container = connect(&schema);
    let manager = TransactionManager::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = ClientKey::from_client_id("round-trips");
    runtime.block_on(async {
        // A new client's first write: the minted id is declared fresh.
        let before = container.round_trips();
        let mut tx = manager.begin();
        container.declare_fresh(&mut tx, &key).unwrap();
        container.create_session(&mut tx, &key).unwrap();
        container
            .insert(&mut tx, &key, "app", "count", SessionValue::new(1u64))
            .unwrap();
        commit_without_blocking(tx).await.unwrap();
        assert_eq!(spent(before, container.round_trips()), (0, 1));

        // A returning client that only reads.
        let before = container.round_trips();
        let mut tx = manager.begin();
        let read = container
            .preload(&mut tx, &key)
            .unwrap()
            .expect("a read ahead");
        read.await.unwrap();
        assert!(
            container.preload(&mut tx, &key).unwrap().is_none(),
            "read once"
        );
        let value = container
            .touch_and_get(&mut tx, &key, "app", "count")
            .unwrap()
            .unwrap();
        assert_eq!(value.to_typed::<u64>().unwrap(), 1);
        commit_without_blocking(tx).await.unwrap();
        assert_eq!(spent(before, container.round_trips()), (1, 0));

        // A returning client that writes.
        let before = container.round_trips();
        let mut tx = manager.begin();
        container
            .preload(&mut tx, &key)
            .unwrap()
            .unwrap()
            .await
            .unwrap();
        let count: u64 = container
            .touch_and_get(&mut tx, &key, "app", "count")
            .unwrap()
            .unwrap()
            .to_typed()
            .unwrap();
        container
            .insert(&mut tx, &key, "app", "count", SessionValue::new(count + 1))
            .unwrap();
        commit_without_blocking(tx).await.unwrap();
        assert_eq!(spent(before, container.round_trips()), (1, 1));
    });
}

#[test]
fn concurrent_commits_share_group_commits_and_none_is_lost() {
    if skip() {
        return;
    }
    let schema = Schema::new();
    let container = connect(&schema);
    let manager = TransactionManager::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = container.round_trips();
    runtime.block_on(async {
        let mut commits = Vec::new();
        for n in 0..200u64 {
            let key = ClientKey::from_client_id(&format!("client-{n}"));
            let mut tx = manager.begin();
            container.declare_fresh(&mut tx, &key).unwrap();
            container.create_session(&mut tx, &key).unwrap();
            container
                .insert(&mut tx, &key, "app", "n", SessionValue::new(n))
                .unwrap();
            commits.push(tokio::spawn(commit_without_blocking(tx)));
        }
        for commit in commits {
            commit.await.unwrap().unwrap();
        }
    });
    let after = container.round_trips();
    assert_eq!(
        after.committed_change_sets - before.committed_change_sets,
        200
    );
    eprintln!(
        "200 concurrent commits took {} group commits",
        after.commits - before.commits
    );
    assert!(after.commits - before.commits <= 200);
    let mut tx = manager.begin();
    for n in 0..200u64 {
        let key = ClientKey::from_client_id(&format!("client-{n}"));
        let value = container.get(&mut tx, &key, "app", "n").unwrap().unwrap();
        assert_eq!(value.to_typed::<u64>().unwrap(), n);
    }
}
