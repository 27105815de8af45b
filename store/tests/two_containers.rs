//! One transaction that spans a RAM and a redb container commits in both or
//! in neither: an unserializable value in either, or a conflict in the redb
//! container (which votes last), leaves both untouched.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Kind, NoPickle};
use keel_store::{
    ClientKey, RamContainer, RedbContainer, SessionContainer, SessionValue, StoreError,
};
use keel_txn::TransactionManager;

struct Pair {
    ram: Arc<RamContainer>,
    redb: Arc<RedbContainer>,
    manager: TransactionManager,
    _dir: tempfile::TempDir,
}

fn key() -> ClientKey {
    ClientKey::from_client_id("both")
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let redb = Arc::new(RedbContainer::open(dir.path().join("s.redb")).unwrap());
    let ram = Arc::new(RamContainer::new());
    let pair = Pair {
        ram,
        redb,
        manager: TransactionManager::new(),
        _dir: dir,
    };
    let mut tx = pair.manager.begin();
    for (_, container) in pair.containers() {
        container.create_session(&mut tx, &key()).unwrap();
        container
            .insert(&mut tx, &key(), "app", "count", SessionValue::new(0i64))
            .unwrap();
    }
    tx.commit().unwrap();
    pair
}

impl Pair {
    fn containers(&self) -> [(Kind, &dyn SessionContainer); 2] {
        [
            (Kind::Ram, &*self.ram as &dyn SessionContainer),
            (Kind::Redb, &*self.redb),
        ]
    }

    fn count(&self, container: &dyn SessionContainer) -> i64 {
        let mut tx = self.manager.begin();
        container
            .get(&mut tx, &key(), "app", "count")
            .unwrap()
            .unwrap()
            .to_typed()
            .unwrap()
    }
}

#[test]
fn an_unserializable_value_in_either_container_writes_nothing_in_both() {
    for bad in [Kind::Ram, Kind::Redb] {
        let pair = pair();
        let mut tx = pair.manager.begin();
        for (kind, container) in pair.containers() {
            container
                .insert(&mut tx, &key(), "app", "count", SessionValue::new(1i64))
                .unwrap();
            if kind == bad {
                container
                    .insert(&mut tx, &key(), "app", "oops", SessionValue::new(NoPickle))
                    .unwrap();
            }
        }
        let err = tx.commit().unwrap_err();
        assert!(matches!(
            err.source_as::<StoreError>(),
            Some(StoreError::Unserializable { key, .. }) if key == "oops"
        ));
        for (kind, container) in pair.containers() {
            assert_eq!(
                pair.count(container),
                0,
                "{kind:?} after a bad value in {bad:?}"
            );
        }
    }
}

#[test]
fn a_conflict_in_the_redb_container_leaves_the_ram_container_untouched() {
    let pair = pair();
    let mut tx = pair.manager.begin();
    for (_, container) in pair.containers() {
        let _ = container.get(&mut tx, &key(), "app", "count").unwrap();
        container
            .insert(&mut tx, &key(), "app", "count", SessionValue::new(1i64))
            .unwrap();
    }
    let mut other = pair.manager.begin();
    pair.redb
        .insert(&mut other, &key(), "app", "count", SessionValue::new(5i64))
        .unwrap();
    other.commit().unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(pair.count(&*pair.ram), 0);
    assert_eq!(pair.count(&*pair.redb), 5);
}

#[test]
fn both_containers_commit_together() {
    let pair = pair();
    let mut tx = pair.manager.begin();
    for (_, container) in pair.containers() {
        container
            .insert(&mut tx, &key(), "app", "count", SessionValue::new(7i64))
            .unwrap();
    }
    let info = tx.commit().unwrap();
    assert_eq!(info.resources, 2);
    for (_, container) in pair.containers() {
        assert_eq!(pair.count(container), 7);
    }
}
