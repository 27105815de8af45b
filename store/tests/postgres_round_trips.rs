//! Round trips to PostgreSQL per request, counted: a request that only
//! reads costs one (its session read ahead, nothing at commit); a request
//! that writes costs two (the read and the commit), or one when the process
//! remembers the session's state (its commit validates what it read); a new
//! client's first write costs one (a minted id needs no read). A remembered
//! state that another server made stale is a conflict, forgotten, and the
//! request's next attempt reads afresh. Concurrent commits share group
//! commits, and none is lost.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::postgres::{Schema, skip, url};
use keel_store::{
    ClientKey, PostgresContainer, PostgresOptions, ReadAhead, RoundTrips, SessionContainer,
    SessionValue,
};
use keel_txn::{Transaction, TransactionManager, TxnError, commit_without_blocking};

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

/// One request of the demo's counter, as the session layer runs it: read
/// ahead, read, write `count + 1` (unless `read_only`), commit.
async fn request(
    container: &PostgresContainer,
    manager: &TransactionManager,
    key: &ClientKey,
    read_ahead: ReadAhead,
    read_only: bool,
) -> Result<u64, TxnError> {
    let mut tx: Transaction = manager.begin();
    if let Some(read) = container.preload(&mut tx, key, read_ahead).unwrap() {
        read.await.unwrap();
    }
    let count: u64 = container
        .touch_and_get(&mut tx, key, "app", "count")
        .unwrap()
        .unwrap()
        .to_typed()
        .unwrap();
    if !read_only {
        container
            .insert(&mut tx, key, "app", "count", SessionValue::new(count + 1))
            .unwrap();
    }
    commit_without_blocking(tx).await?;
    Ok(if read_only { count } else { count + 1 })
}

#[test]
fn a_read_costs_one_round_trip_a_write_two_or_one_when_remembered_and_a_first_write_one() {
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

        // A returning client that only reads: a fresh read, no commit.
        let before = container.round_trips();
        let count = request(&container, &manager, &key, ReadAhead::Fresh, true).await;
        assert_eq!(count.unwrap(), 1);
        assert_eq!(spent(before, container.round_trips()), (1, 0));

        // A returning client that writes, its state remembered: the commit.
        let before = container.round_trips();
        let count = request(&container, &manager, &key, ReadAhead::Remembered, false).await;
        assert_eq!(count.unwrap(), 2);
        assert_eq!(spent(before, container.round_trips()), (0, 1));

        // The same, asking for a fresh read: the read and the commit.
        let before = container.round_trips();
        let count = request(&container, &manager, &key, ReadAhead::Fresh, false).await;
        assert_eq!(count.unwrap(), 3);
        assert_eq!(spent(before, container.round_trips()), (1, 1));

        // A read-only request served by a remembered state validates it.
        let before = container.round_trips();
        let count = request(&container, &manager, &key, ReadAhead::Remembered, true).await;
        assert_eq!(count.unwrap(), 3);
        assert_eq!(spent(before, container.round_trips()), (0, 1));
    });
}

#[test]
fn a_state_another_server_made_stale_conflicts_once_then_reads_afresh() {
    if skip() {
        return;
    }
    let schema = Schema::new();
    let (a, b) = (connect(&schema), connect(&schema));
    let manager = TransactionManager::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = ClientKey::from_client_id("two servers");
    runtime.block_on(async {
        let mut tx = manager.begin();
        a.declare_fresh(&mut tx, &key).unwrap();
        a.create_session(&mut tx, &key).unwrap();
        a.insert(&mut tx, &key, "app", "count", SessionValue::new(1u64))
            .unwrap();
        commit_without_blocking(tx).await.unwrap();
        // A remembers count 1; B increments behind its back.
        assert_eq!(
            request(&b, &manager, &key, ReadAhead::Fresh, false)
                .await
                .unwrap(),
            2
        );
        let stale = request(&a, &manager, &key, ReadAhead::Remembered, false).await;
        let err = stale.expect_err("A's remembered count is stale");
        assert!(err.is_retryable(), "{err}");
        // The next attempt reads afresh and keeps B's increment.
        let before = a.round_trips();
        let count = request(&a, &manager, &key, ReadAhead::Remembered, false).await;
        assert_eq!(count.unwrap(), 3);
        assert_eq!(spent(before, a.round_trips()), (1, 1));
        assert_eq!(
            request(&b, &manager, &key, ReadAhead::Fresh, true)
                .await
                .unwrap(),
            3
        );
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
