//! Model-based test of the redb and PostgreSQL containers: random sequences
//! of begin / create / insert / remove / get / touch / delete / commit /
//! abort / conflicting concurrent commit / reopen / simulated crash / clock
//! advance / sweep drive the real container and a plain `BTreeMap` model side
//! by side. After every step the committed state must equal the model; reads
//! inside transactions must see their snapshot plus their own writes; a
//! commit must conflict exactly when something it read or wrote changed
//! since.
//!
//! redb runs on a simulated disk that keeps only synced bytes; a crash loses
//! the unsynced ones. PostgreSQL (feature `postgres`, a schema per case) has
//! no simulated disk: everything acknowledged is in the server, so a crash is
//! a reopen (a new container on the same schema). The two differ in what a
//! transaction reads and validates, and the model says so: redb reads one
//! snapshot of everything, taken at the transaction's first operation, and
//! validates its reads only if it writes something besides touches;
//! PostgreSQL reads each session (record and values) in one statement when
//! the transaction first uses it, so sessions used later are read later, and
//! a transaction that used more than one session validates its reads even if
//! it writes nothing.
//!
//! Redis (feature `redis`, a key prefix per case) is modelled as PostgreSQL:
//! both are the core's network data manager.
//!
//! `PROPTEST_CASES` sets the number of cases (256 in CI); the PostgreSQL and
//! Redis tests run at most 64 of them (each case connects a pool and creates a schema)
//! unless `KEEL_POSTGRES_MODEL_CASES` sets its number. For a long run:
//! `PROPTEST_CASES=100000 cargo test -p keel-store --release --test model`,
//! and `KEEL_POSTGRES_MODEL_CASES=5000 cargo test -p keel-store --release
//! --features postgres --test model postgres`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::SimDisk;
use keel_store::{
    ClientKey, ExpiryPolicy, ManualClock, RedbContainer, SessionContainer, SessionValue, StoreError,
};
use keel_txn::{Transaction, TransactionManager};
use proptest::prelude::*;

const SLOTS: usize = 3;
const CLIENTS: u8 = 3;
const NAMES: u8 = 4;
const TIMEOUT: u64 = 100;
const RESOLUTION: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Begin(usize),
    Create(usize, u8),
    Insert(usize, u8, u8, u32),
    Remove(usize, u8, u8),
    Get(usize, u8, u8),
    Touch(usize, u8),
    Delete(usize, u8),
    Commit(usize),
    Abort(usize),
    /// Another request writes and commits at once.
    ConflictingCommit(u8, u8, u32),
    Reopen,
    Crash,
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let client = 0..CLIENTS;
    let name = 0..NAMES;
    prop_oneof![
        3 => slot.clone().prop_map(Op::Begin),
        3 => (slot.clone(), client.clone()).prop_map(|(s, c)| Op::Create(s, c)),
        6 => (slot.clone(), client.clone(), name.clone(), 0..100u32)
            .prop_map(|(s, c, n, v)| Op::Insert(s, c, n, v)),
        2 => (slot.clone(), client.clone(), name.clone()).prop_map(|(s, c, n)| Op::Remove(s, c, n)),
        3 => (slot.clone(), client.clone(), name.clone()).prop_map(|(s, c, n)| Op::Get(s, c, n)),
        2 => (slot.clone(), client.clone()).prop_map(|(s, c)| Op::Touch(s, c)),
        1 => (slot.clone(), client.clone()).prop_map(|(s, c)| Op::Delete(s, c)),
        4 => slot.clone().prop_map(Op::Commit),
        1 => slot.prop_map(Op::Abort),
        2 => (client, name, 100..200u32).prop_map(|(c, n, v)| Op::ConflictingCommit(c, n, v)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        2 => prop_oneof![Just(1u64), Just(5), Just(20), Just(60), Just(150)].prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

fn key(client: u8) -> ClientKey {
    ClientKey::from_client_id(&format!("model-{client}"))
}

fn package(name: u8) -> String {
    format!("p{}", name % 2)
}

fn name_of(name: u8) -> String {
    format!("n{name}")
}

fn policy() -> ExpiryPolicy {
    ExpiryPolicy::default()
        .with_timeout(TIMEOUT)
        .with_resolution(RESOLUTION)
}

#[derive(Debug, Clone, PartialEq)]
struct MSession {
    version: u64,
    created: u64,
    last_access: u64,
}

/// The committed state.
#[derive(Debug, Clone, Default)]
struct MState {
    sessions: BTreeMap<u8, MSession>,
    items: BTreeMap<(u8, u8), (u64, u32)>,
}

fn live(session: &MSession, now: u64) -> bool {
    !policy().is_expired(session.created, session.last_access, now)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum MKey {
    Session(u8),
    Item(u8, u8),
}

#[derive(Debug, Clone, Default)]
struct MEntry {
    record: Option<MSession>,
    rewritten: bool,
    wipe: bool,
    touch: Option<u64>,
}

/// A transaction in the model: its snapshots, read versions and writes.
struct MTxn {
    tx: Transaction,
    /// Whether each session is read from a snapshot of its own, taken when
    /// the transaction first uses it (PostgreSQL), rather than everything
    /// from one snapshot taken at the transaction's first operation (redb).
    per_session_snapshots: bool,
    /// The snapshots taken so far: under `None` the one of everything, or
    /// under `Some(client)` the one of each session used.
    snapshots: BTreeMap<Option<u8>, MState>,
    reads: BTreeMap<MKey, u64>,
    sessions: BTreeMap<u8, MEntry>,
    items: BTreeMap<(u8, u8), Option<u32>>,
}

impl MTxn {
    /// The snapshot that reads of `client` come from, taken now from the
    /// committed state if the transaction has none for it yet.
    fn snapshot(&mut self, committed: &MState, client: u8) -> &MState {
        let scope = self.per_session_snapshots.then_some(client);
        self.snapshots
            .entry(scope)
            .or_insert_with(|| committed.clone())
    }

    fn entry(&mut self, committed: &MState, client: u8) -> &mut MEntry {
        if !self.sessions.contains_key(&client) {
            let record = self
                .snapshot(committed, client)
                .sessions
                .get(&client)
                .cloned();
            self.reads
                .entry(MKey::Session(client))
                .or_insert(record.as_ref().map_or(0, |r| r.version));
            self.sessions.insert(
                client,
                MEntry {
                    record,
                    ..MEntry::default()
                },
            );
        }
        self.sessions.get_mut(&client).unwrap()
    }

    fn live(&mut self, committed: &MState, client: u8, now: u64) -> (bool, bool) {
        let entry = self.entry(committed, client);
        (
            entry.record.as_ref().is_some_and(|r| live(r, now)),
            entry.wipe,
        )
    }

    fn stored_item(&mut self, committed: &MState, client: u8, name: u8) -> Option<u32> {
        let stored = self
            .snapshot(committed, client)
            .items
            .get(&(client, name))
            .copied();
        self.reads
            .entry(MKey::Item(client, name))
            .or_insert(stored.map_or(0, |(v, _)| v));
        stored.map(|(_, value)| value)
    }

    fn has_writes(&self) -> bool {
        !self.items.is_empty() || self.sessions.values().any(|e| e.rewritten || e.wipe)
    }
}

/// Where the container under test keeps its data.
enum Backend {
    /// redb on a simulated disk.
    Redb { disk: Arc<SimDisk> },
    /// PostgreSQL, in a schema of this case's own (dropped with it).
    #[cfg(feature = "postgres")]
    Postgres { schema: common::postgres::Schema },
    /// Redis, under a key prefix of this case's own (its keys deleted with
    /// it). Same reads and validation as PostgreSQL: the core's network
    /// data manager.
    #[cfg(feature = "redis")]
    Redis {
        prefix: common::redis_server::Prefix,
    },
}

impl Backend {
    fn redb() -> Backend {
        Backend::Redb {
            disk: SimDisk::new(),
        }
    }

    #[cfg(feature = "postgres")]
    fn postgres() -> Backend {
        Backend::Postgres {
            schema: common::postgres::Schema::new(),
        }
    }

    #[cfg(feature = "redis")]
    fn redis() -> Backend {
        Backend::Redis {
            prefix: common::redis_server::Prefix::new(),
        }
    }

    /// Whether a transaction reads each session from a snapshot taken when
    /// it first uses that session (PostgreSQL reads a session whole, in one
    /// statement), rather than everything from one snapshot (redb).
    fn per_session_snapshots(&self) -> bool {
        match self {
            Backend::Redb { .. } => false,
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => true,
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => true,
        }
    }

    /// Whether a transaction that used more than one session validates its
    /// reads even if it writes nothing (PostgreSQL: it read them at
    /// different moments). Otherwise only a transaction that writes
    /// something besides touches validates them.
    fn validates_multi_session_reads(&self) -> bool {
        match self {
            Backend::Redb { .. } => false,
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => true,
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => true,
        }
    }

    /// A new container on the backend's data.
    fn open(&self, clock: &ManualClock) -> Box<dyn SessionContainer> {
        match self {
            Backend::Redb { disk } => {
                let options = disk
                    .options()
                    .with_expiry(policy())
                    .with_clock(Arc::new(clock.clone()));
                Box::new(RedbContainer::open_with("model", options).expect("reopen"))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { schema } => {
                let options = keel_store::PostgresOptions::new()
                    .with_schema(schema.name.clone())
                    .with_pool_size(4)
                    .with_expiry(policy())
                    .with_clock(Arc::new(clock.clone()));
                Box::new(
                    keel_store::PostgresContainer::connect(&common::postgres::url(), options)
                        .expect("connect the PostgreSQL container"),
                )
            }
            #[cfg(feature = "redis")]
            Backend::Redis { prefix } => {
                let options = keel_store::RedisOptions::new()
                    .with_prefix(prefix.name.clone())
                    .with_expiry(policy())
                    .with_clock(Arc::new(clock.clone()));
                Box::new(
                    keel_store::RedisContainer::connect(&common::redis_server::url(), options)
                        .expect("connect the Redis container"),
                )
            }
        }
    }

    /// The process dies: redb's disk loses what was not synced. PostgreSQL
    /// loses nothing acknowledged (uncommitted transactions are aborted by
    /// the caller, as for redb).
    fn crash(&self) {
        match self {
            Backend::Redb { disk } => disk.crash(),
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => {}
            #[cfg(feature = "redis")]
            Backend::Redis { .. } => {}
        }
    }
}

struct Harness {
    // Dropped in this order: the transactions and the container go before
    // the backend (PostgreSQL's schema is dropped with it).
    slots: Vec<Option<MTxn>>,
    container: Option<Box<dyn SessionContainer>>,
    clock: ManualClock,
    manager: TransactionManager,
    committed: MState,
    next_version: u64,
    backend: Backend,
}

impl Harness {
    fn new(backend: Backend) -> Harness {
        let clock = ManualClock::new(1000);
        let mut harness = Harness {
            slots: (0..SLOTS).map(|_| None).collect(),
            container: None,
            clock,
            manager: TransactionManager::new(),
            committed: MState::default(),
            next_version: 1,
            backend,
        };
        harness.open();
        harness
    }

    fn open(&mut self) {
        self.container = Some(self.backend.open(&self.clock));
    }

    fn container(&self) -> &dyn SessionContainer {
        self.container.as_deref().unwrap()
    }

    fn now(&self) -> u64 {
        use keel_store::Clock;
        self.clock.now()
    }

    /// The transaction in `slot`, begun if there is none.
    fn take(&mut self, slot: usize) -> MTxn {
        match self.slots[slot].take() {
            Some(txn) => txn,
            None => self.fresh(),
        }
    }

    fn fresh(&self) -> MTxn {
        MTxn {
            tx: self.manager.begin(),
            per_session_snapshots: self.backend.per_session_snapshots(),
            snapshots: BTreeMap::new(),
            reads: BTreeMap::new(),
            sessions: BTreeMap::new(),
            items: BTreeMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match *op {
            Op::Begin(slot) => {
                self.slots[slot] = None;
                let txn = self.take(slot);
                self.slots[slot] = Some(txn);
            }
            Op::Create(slot, client) => {
                let mut txn = self.take(slot);
                let info = self
                    .container()
                    .create_session(&mut txn.tx, &key(client))
                    .unwrap();
                let committed = &self.committed;
                let (is_live, _) = txn.live(committed, client, now);
                let entry = txn.entry(committed, client);
                if is_live {
                    let record = entry.record.as_mut().unwrap();
                    if policy().needs_touch(record.last_access, now) {
                        record.last_access = now;
                        entry.touch = Some(entry.touch.map_or(now, |t| t.max(now)));
                    }
                    assert_eq!(info.last_access, record.last_access);
                } else {
                    let wipe = entry.record.is_some() || entry.wipe;
                    *entry = MEntry {
                        record: Some(MSession {
                            version: 0,
                            created: now,
                            last_access: now,
                        }),
                        rewritten: true,
                        wipe,
                        touch: None,
                    };
                    txn.items.retain(|(c, _), _| *c != client);
                    assert_eq!(info.created, now);
                }
                self.slots[slot] = Some(txn);
            }
            Op::Insert(slot, client, name, value) => {
                let mut txn = self.take(slot);
                let result = self.container().insert(
                    &mut txn.tx,
                    &key(client),
                    &package(name),
                    &name_of(name),
                    SessionValue::new(value),
                );
                let (is_live, wiped) = txn.live(&self.committed, client, now);
                if is_live {
                    result.unwrap();
                    if !wiped && !txn.items.contains_key(&(client, name)) {
                        txn.stored_item(&self.committed, client, name);
                    }
                    txn.items.insert((client, name), Some(value));
                } else {
                    assert!(
                        matches!(result, Err(StoreError::NoSuchSession { .. })),
                        "{result:?}"
                    );
                }
                self.slots[slot] = Some(txn);
            }
            Op::Remove(slot, client, name) => {
                let mut txn = self.take(slot);
                let removed = self
                    .container()
                    .remove(&mut txn.tx, &key(client), &package(name), &name_of(name))
                    .unwrap();
                let (is_live, wiped) = txn.live(&self.committed, client, now);
                let expected = if !is_live {
                    false
                } else {
                    let present = match txn.items.get(&(client, name)) {
                        Some(buffered) => buffered.is_some(),
                        None if wiped => false,
                        None => txn.stored_item(&self.committed, client, name).is_some(),
                    };
                    if present {
                        txn.items.insert((client, name), None);
                    }
                    present
                };
                assert_eq!(removed, expected, "remove {client}/{name}");
                self.slots[slot] = Some(txn);
            }
            Op::Get(slot, client, name) => {
                let mut txn = self.take(slot);
                let got = self
                    .container()
                    .get(&mut txn.tx, &key(client), &package(name), &name_of(name))
                    .unwrap()
                    .map(|v| v.to_typed::<u32>().unwrap());
                let (is_live, wiped) = txn.live(&self.committed, client, now);
                let expected = if !is_live {
                    None
                } else if let Some(buffered) = txn.items.get(&(client, name)) {
                    *buffered
                } else if wiped {
                    None
                } else {
                    txn.stored_item(&self.committed, client, name)
                };
                assert_eq!(got, expected, "get {client}/{name}");
                self.slots[slot] = Some(txn);
            }
            Op::Touch(slot, client) => {
                let mut txn = self.take(slot);
                let info = self.container().session(&mut txn.tx, &key(client)).unwrap();
                let (is_live, _) = txn.live(&self.committed, client, now);
                let entry = txn.entry(&self.committed, client);
                if is_live {
                    let record = entry.record.as_mut().unwrap();
                    if policy().needs_touch(record.last_access, now) {
                        record.last_access = now;
                        entry.touch = Some(entry.touch.map_or(now, |t| t.max(now)));
                    }
                    assert_eq!(info.map(|i| i.last_access), Some(record.last_access));
                } else {
                    assert_eq!(info, None);
                }
                self.slots[slot] = Some(txn);
            }
            Op::Delete(slot, client) => {
                let mut txn = self.take(slot);
                let deleted = self
                    .container()
                    .delete_session(&mut txn.tx, &key(client))
                    .unwrap();
                let (is_live, _) = txn.live(&self.committed, client, now);
                assert_eq!(deleted, is_live);
                if is_live {
                    *txn.entry(&self.committed, client) = MEntry {
                        record: None,
                        rewritten: true,
                        wipe: true,
                        touch: None,
                    };
                    txn.items.retain(|(c, _), _| *c != client);
                }
                self.slots[slot] = Some(txn);
            }
            Op::Commit(slot) => {
                let Some(txn) = self.slots[slot].take() else {
                    return;
                };
                self.commit(txn);
            }
            Op::Abort(slot) => {
                if let Some(txn) = self.slots[slot].take() {
                    txn.tx.abort();
                }
            }
            Op::ConflictingCommit(client, name, value) => {
                let mut txn = self.fresh();
                let container = self.container.as_ref().unwrap();
                container.create_session(&mut txn.tx, &key(client)).unwrap();
                container
                    .insert(
                        &mut txn.tx,
                        &key(client),
                        &package(name),
                        &name_of(name),
                        SessionValue::new(value),
                    )
                    .unwrap();
                // Mirror it in the model.
                let committed = &self.committed;
                let (is_live, _) = txn.live(committed, client, now);
                let entry = txn.entry(committed, client);
                if is_live {
                    let record = entry.record.as_mut().unwrap();
                    if policy().needs_touch(record.last_access, now) {
                        record.last_access = now;
                        entry.touch = Some(now);
                    }
                } else {
                    let wipe = entry.record.is_some();
                    *entry = MEntry {
                        record: Some(MSession {
                            version: 0,
                            created: now,
                            last_access: now,
                        }),
                        rewritten: true,
                        wipe,
                        touch: None,
                    };
                }
                let wiped = txn.sessions[&client].wipe;
                if !wiped {
                    txn.stored_item(&self.committed, client, name);
                }
                txn.items.insert((client, name), Some(value));
                assert!(self.commit(txn), "a lone commit must not conflict");
            }
            Op::Reopen => {
                self.abort_all();
                self.container = None;
                self.open();
            }
            Op::Crash => {
                self.abort_all();
                self.backend.crash();
                self.container = None;
                self.open();
            }
            Op::Advance(seconds) => self.clock.advance(seconds),
            Op::Sweep => {
                let report = self.container().sweep(1000).unwrap();
                let expired: Vec<u8> = self
                    .committed
                    .sessions
                    .iter()
                    .filter(|(_, s)| !live(s, now))
                    .map(|(c, _)| *c)
                    .collect();
                assert_eq!(report.removed, expired.len() as u64);
                for client in expired {
                    self.committed.sessions.remove(&client);
                    self.committed.items.retain(|(c, _), _| *c != client);
                }
            }
        }
    }

    fn abort_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(txn) = slot.take() {
                txn.tx.abort();
            }
        }
    }

    /// Commit `txn` in the container and the model; returns whether it
    /// committed. Checks that it conflicts exactly when the model says so.
    fn commit(&mut self, txn: MTxn) -> bool {
        let validates = txn.has_writes()
            || (self.backend.validates_multi_session_reads() && txn.sessions.len() > 1);
        let conflict = validates
            && txn.reads.iter().any(|(key, version)| {
                let current = match key {
                    MKey::Session(c) => self.committed.sessions.get(c).map_or(0, |s| s.version),
                    MKey::Item(c, n) => self.committed.items.get(&(*c, *n)).map_or(0, |i| i.0),
                };
                current != *version
            });
        let result = txn.tx.commit();
        if conflict {
            let err = result.expect_err("the model expects a conflict");
            assert!(err.is_retryable(), "{err}");
            return false;
        }
        result.expect("the model expects a commit");
        let version = self.next_version;
        self.next_version += 1;
        let state = &mut self.committed;
        for (client, entry) in &txn.sessions {
            let old = state.sessions.get(client).cloned();
            if entry.wipe {
                state.items.retain(|(c, _), _| c != client);
            }
            if entry.rewritten {
                match &entry.record {
                    Some(record) => {
                        let kept = old.filter(|_| !entry.wipe).map_or(0, |o| o.last_access);
                        state.sessions.insert(
                            *client,
                            MSession {
                                version,
                                created: record.created,
                                last_access: record.last_access.max(kept),
                            },
                        );
                    }
                    None => {
                        state.sessions.remove(client);
                    }
                }
            }
        }
        for ((client, name), value) in &txn.items {
            match value {
                Some(value) => {
                    state.items.insert((*client, *name), (version, *value));
                }
                None => {
                    state.items.remove(&(*client, *name));
                }
            }
        }
        for (client, entry) in &txn.sessions {
            if let (false, Some(touch)) = (entry.rewritten, entry.touch)
                && let Some(session) = state.sessions.get_mut(client)
            {
                session.last_access = session.last_access.max(touch);
            }
        }
        true
    }

    /// The committed state of the container equals the model.
    fn check(&self) {
        for client in 0..CLIENTS {
            let detail = self.container().session_detail(&key(client)).unwrap();
            let expected = self.committed.sessions.get(&client);
            assert_eq!(detail.is_some(), expected.is_some(), "session {client}");
            let (Some(detail), Some(expected)) = (detail, expected) else {
                continue;
            };
            assert_eq!(
                detail.summary.last_access, expected.last_access,
                "L of {client}"
            );
            assert_eq!(
                detail.summary.created, expected.created,
                "created of {client}"
            );
            let mut data = BTreeMap::new();
            for (package, names) in &detail.data {
                for (name, value) in names {
                    let value: u32 = keel_store::from_value(value).unwrap();
                    data.insert((package.clone(), name.clone()), value);
                }
            }
            let model: BTreeMap<(String, String), u32> = self
                .committed
                .items
                .iter()
                .filter(|((c, _), _)| *c == client)
                .map(|((_, n), (_, v))| ((package(*n), name_of(*n)), *v))
                .collect();
            assert_eq!(data, model, "data of session {client}");
        }
        // The cheap counts (the redb container's come from the sessions
        // table's length and the expiry indexes) equal a full count, after
        // every step, crashes and reopens included.
        let full = self.container().stats().unwrap();
        let counts = self.container().counts().unwrap();
        assert_eq!(counts, keel_store::SessionCounts::from(&full), "counts");
        let stored = self.committed.sessions.len() as u64;
        assert_eq!(counts.sessions, stored, "counts against the model");
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..40)
}

/// Run `ops` on a container of `backend` and the model, checking after
/// every step.
fn run(backend: Backend, ops: &[Op]) {
    let mut harness = Harness::new(backend);
    for op in ops {
        harness.apply(op);
        harness.check();
    }
}

proptest! {
    // The number of cases comes from PROPTEST_CASES (default 256).
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_redb_container_behaves_like_the_model(ops in ops()) {
        run(Backend::redb(), &ops);
    }
}

/// At most this many cases on a database server (each connects and sets up
/// a schema or prefix) unless `KEEL_POSTGRES_MODEL_CASES` /
/// `KEEL_REDIS_MODEL_CASES` says otherwise.
#[cfg(any(feature = "postgres", feature = "redis"))]
const SERVER_CASES: u32 = 64;

/// Run the model on a database server, `new` making each case's backend.
/// The runner is driven here: the `proptest!` macro would let
/// `PROPTEST_CASES` override the cap on the number of cases (`cases_var`
/// sets it exactly), and the caller checks for the server once, before the
/// cases, so "skipped" is said once.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn run_on_a_server(test_name: &'static str, cases_var: &str, new: fn() -> Backend) {
    use proptest::test_runner::{TestRunner, contextualize_config};

    // As the macro does: the environment's PROPTEST_* settings apply.
    let mut config = contextualize_config(ProptestConfig {
        max_shrink_iters: 2000,
        source_file: Some(file!()),
        test_name: Some(test_name),
        ..ProptestConfig::default()
    });
    config.cases = match std::env::var(cases_var) {
        Ok(cases) => cases
            .parse()
            .unwrap_or_else(|_| panic!("{cases_var} is a number of cases")),
        // PROPTEST_CASES (default 256), capped.
        Err(_) => config.cases.min(SERVER_CASES),
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops(), |ops| {
        run(new(), &ops);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}\n{runner}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn the_postgres_container_behaves_like_the_model() {
    if common::postgres::skip() {
        return;
    }
    run_on_a_server(
        concat!(
            module_path!(),
            "::the_postgres_container_behaves_like_the_model"
        ),
        "KEEL_POSTGRES_MODEL_CASES",
        Backend::postgres,
    );
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_container_behaves_like_the_model() {
    if common::redis_server::skip() {
        return;
    }
    run_on_a_server(
        concat!(
            module_path!(),
            "::the_redis_container_behaves_like_the_model"
        ),
        "KEEL_REDIS_MODEL_CASES",
        Backend::redis,
    );
}
