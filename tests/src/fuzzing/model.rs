//! `store_model`: the bytes of an input are a [`Scenario`], a sequence of
//! [`Op`]s read through `arbitrary` (begin / create / insert / remove / get /
//! touch / delete / names / packages / rename / set principal / commit /
//! abort / a conflicting concurrent commit / reopen / crash / clock advance
//! / sweep / admin delete / settings / injected write and sync failures).
//! The same sequence drives two worlds side by side:
//!
//! - a [`RamContainer`], against a model of its semantics: reads come from
//!   the current state, a read of a record committed after the transaction
//!   began is an immediate conflict, and every read is validated at commit;
//! - a [`RedbContainer`] on the store's simulated disk (it keeps only synced
//!   bytes, so a crash loses the rest, and it fails writes or syncs on
//!   demand), against a model of snapshot reads, validated at commit only if
//!   the transaction writes.
//!
//! Each model is a plain `BTreeMap` state plus, per open transaction, its
//! read versions and buffered writes, mirroring the documented semantics
//! (docs/design.md, "Concurrency"). After every step the committed state of
//! each container (sessions, their times and principals, values, principal
//! index, settings) must equal its model; every operation must return what
//! the model says, and conflict exactly when the model says so.
//!
//! Faults: `FailWritesAfter(n)` / `FailSyncsAfter(n)` arm the disk; when a
//! failure fires, the operation may fail with a storage error
//! ([`StoreError::Storage`]: nothing written; [`StoreError::CommitOutcomeUnknown`]
//! or [`StoreError::Closed`]: either outcome), the disk heals at once (a
//! transient fault), and an unknown outcome is resolved by reading the
//! container, which must show one of the two. Transactions that began before
//! a failure may fail with storage errors; later ones may not. A crash may
//! lose only a commit whose outcome was unknown and that no successful sync
//! has covered since; an acknowledged commit is never lost.
//!
//! This is this target's own model, written for both containers; the
//! store's proptest model (`store/tests/model.rs`) covers the redb container
//! with a subset of these operations and shares only the simulated disk.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use arbitrary::{Arbitrary, Unstructured};
use keel_store::{
    ClientKey, Clock, ExpiryPolicy, ManualClock, RamContainer, RedbContainer, SessionContainer,
    SessionInfo, SessionValue, StoreError, from_value,
};
use keel_txn::{Transaction, TransactionManager};

use super::store_common::SimDisk;

/// Concurrent transactions (slots) of a scenario.
pub const SLOTS: u8 = 3;
/// Clients (sessions) of a scenario.
pub const CLIENTS: u8 = 3;
/// Item names; name `n` lives in package `n % 2`.
pub const NAMES: u8 = 4;
/// Principals.
pub const PRINCIPALS: u8 = 2;
/// Setting names.
pub const SETTINGS: u8 = 2;
/// The most operations of one scenario.
pub const MAX_OPS: usize = 64;
/// The inactivity timeout of both containers.
pub const TIMEOUT: u64 = 100;
/// The touch resolution of both containers.
pub const RESOLUTION: u64 = 10;
/// The absolute lifetime of a scenario that has one.
pub const LIFETIME: u64 = 250;
/// The clock at the start of a scenario.
pub const START: u64 = 1000;
/// The clock steps of [`Op::Advance`].
pub const ADVANCES: [u64; 5] = [1, 5, 20, 60, 150];

/// One step of a scenario. Slots, clients, names, packages, principals and
/// settings are taken modulo their counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Op {
    /// Drop the slot's transaction (an abort) and start a fresh one.
    Begin(u8),
    /// `create_session(client)`.
    Create(u8, u8),
    /// `insert(client, package(name), name, value)`.
    Insert(u8, u8, u8, u16),
    /// `remove(client, package(name), name)`.
    Remove(u8, u8, u8),
    /// `get(client, package(name), name)`.
    Get(u8, u8, u8),
    /// `session(client)`: an access, which may touch.
    Touch(u8, u8),
    /// `delete_session(client)`.
    Delete(u8, u8),
    /// `names(client, package)`.
    Names(u8, u8, u8),
    /// `packages(client)`.
    Packages(u8, u8),
    /// `rename_session(from, to)`.
    Rename(u8, u8, u8),
    /// `set_principal(client, principal)`.
    SetPrincipal(u8, u8, Option<u8>),
    /// Commit the slot's transaction.
    Commit(u8),
    /// Abort the slot's transaction.
    Abort(u8),
    /// Another request creates `client`'s session, writes a value and
    /// commits at once.
    ConflictingCommit(u8, u8, u16),
    /// Close and reopen the containers (RAM: abort what is open).
    Reopen,
    /// The process dies: the redb disk loses what was not synced, the RAM
    /// container everything.
    Crash,
    /// Advance the clock by `ADVANCES[n % 5]` seconds.
    Advance(u8),
    /// `sweep(1 + n % 3)`.
    Sweep(u8),
    /// Admin `delete_sessions([client])`.
    AdminDelete(u8),
    /// `store_setting(name, [value])`.
    StoreSetting(u8, u8),
    /// The redb disk fails every write after `n % 32` more.
    FailWritesAfter(u8),
    /// The redb disk fails every sync after `n % 4` more.
    FailSyncsAfter(u8),
}

/// One input: whether the containers have an absolute session lifetime, and
/// the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// [`LIFETIME`] if set.
    pub absolute_lifetime: bool,
    /// At most [`MAX_OPS`] operations.
    pub ops: Vec<Op>,
}

impl Scenario {
    /// Read a scenario: one byte for the lifetime, then operations until
    /// the input ends.
    pub fn parse(data: &[u8]) -> Scenario {
        let mut input = Unstructured::new(data);
        let absolute_lifetime = bool::arbitrary(&mut input).unwrap_or(false);
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < MAX_OPS {
            match Op::arbitrary(&mut input) {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        Scenario {
            absolute_lifetime,
            ops,
        }
    }

    fn policy(&self) -> ExpiryPolicy {
        ExpiryPolicy::default()
            .with_timeout(TIMEOUT)
            .with_resolution(RESOLUTION)
            .with_absolute_lifetime(self.absolute_lifetime.then_some(LIFETIME))
    }
}

/// The check of the `store_model` fuzz target.
///
/// # Panics
/// If a container departs from its model.
pub fn store_model(data: &[u8]) {
    let scenario = Scenario::parse(data);
    let policy = scenario.policy();
    let clock = ManualClock::new(START);
    let mut ram = RamWorld::new(policy, &clock);
    let mut redb = RedbWorld::new(policy, &clock);
    for (step, op) in scenario.ops.iter().enumerate() {
        let context = Context { step, op: *op };
        if let Op::Advance(n) = *op {
            clock.advance(ADVANCES[usize::from(n) % ADVANCES.len()]);
        }
        ram.apply(*op, context);
        redb.apply(*op, context);
        ram.check(context);
        redb.check_step(context);
    }
}

/// Where a failure happened, for the panic message.
#[derive(Debug, Clone, Copy)]
struct Context {
    step: usize,
    op: Op,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({:?})", self.step, self.op)
    }
}

/// With `KEEL_FUZZ_TRACE` set, print what each operation returned (for
/// reading a reproducer).
fn trace(line: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("KEEL_FUZZ_TRACE").is_some()) {
        eprintln!("{}", line());
    }
}

fn key(client: u8) -> ClientKey {
    ClientKey::from_client_id(&format!("model-{client}"))
}

fn package_of(name: u8) -> u8 {
    name % 2
}

fn package_text(package: u8) -> String {
    format!("p{package}")
}

fn name_text(name: u8) -> String {
    format!("n{name}")
}

fn principal_text(principal: u8) -> String {
    format!("user{principal}")
}

fn setting_text(setting: u8) -> String {
    format!("s{setting}")
}

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------

/// A committed session record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MSession {
    version: u64,
    created: u64,
    last_access: u64,
    principal: Option<u8>,
}

/// The committed state of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MState {
    sessions: BTreeMap<u8, MSession>,
    /// (client, name) -> (version, value).
    items: BTreeMap<(u8, u8), (u64, u16)>,
    /// (client, package) -> name-set version.
    names_versions: BTreeMap<(u8, u8), u64>,
    /// client -> package-set version.
    packages_versions: BTreeMap<u8, u64>,
    settings: BTreeMap<u8, u8>,
}

impl MState {
    fn version(&self, key: MKey) -> u64 {
        match key {
            MKey::Session(c) => self.sessions.get(&c).map_or(0, |s| s.version),
            MKey::Item(c, n) => self.items.get(&(c, n)).map_or(0, |i| i.0),
            MKey::Names(c, p) => self.names_versions.get(&(c, p)).copied().unwrap_or(0),
            MKey::Packages(c) => self.packages_versions.get(&c).copied().unwrap_or(0),
        }
    }

    fn wipe(&mut self, client: u8) {
        self.items.retain(|(c, _), _| *c != client);
        self.names_versions.retain(|(c, _), _| *c != client);
        self.packages_versions.remove(&client);
    }

    fn delete(&mut self, client: u8) {
        self.wipe(client);
        self.sessions.remove(&client);
    }

    /// What the public API shows of the state (versions are not visible).
    fn visible(&self) -> Visible {
        Visible {
            sessions: self
                .sessions
                .iter()
                .map(|(c, s)| (*c, (s.created, s.last_access, s.principal)))
                .collect(),
            items: self.items.iter().map(|(k, (_, v))| (*k, *v)).collect(),
            settings: self.settings.clone(),
        }
    }
}

/// The visible part of a state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Visible {
    sessions: BTreeMap<u8, (u64, u64, Option<u8>)>,
    items: BTreeMap<(u8, u8), u16>,
    settings: BTreeMap<u8, u8>,
}

/// A versioned record a transaction reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MKey {
    Session(u8),
    Item(u8, u8),
    Names(u8, u8),
    Packages(u8),
}

/// A session as a transaction sees it.
#[derive(Debug, Clone)]
struct MEntry {
    record: Option<MSession>,
    rewritten: bool,
    wipe: bool,
    touch: Option<u64>,
    stored: bool,
}

/// How a container's transactions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// redb: one snapshot from the first operation on; validated at commit
    /// only if the transaction writes.
    Snapshot,
    /// RAM: the current state; a record committed after the transaction
    /// began is a conflict at once; every read validated at commit.
    Current,
}

/// Why a model operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MErr {
    Conflict,
    NoSuchSession,
    SessionExists,
}

type M<T> = Result<T, MErr>;

/// What `session` / `create_session` return.
type MInfo = (u64, u64, Option<u8>);

/// A transaction in the model, with its real transaction.
struct MTxn {
    tx: Transaction,
    /// The last commit sequence number, and the state, when the transaction
    /// first used the container.
    started: Option<(u64, MState)>,
    reads: BTreeMap<MKey, u64>,
    sessions: BTreeMap<u8, MEntry>,
    items: BTreeMap<(u8, u8), Option<u16>>,
    /// The fault epoch the transaction began in.
    epoch: u64,
}

impl MTxn {
    fn has_writes(&self) -> bool {
        !self.items.is_empty() || self.sessions.values().any(|e| e.rewritten || e.wipe)
    }
}

/// A model transaction at work: its state, the committed state, the clock.
struct Work<'a> {
    txn: &'a mut MTxn,
    committed: &'a MState,
    mode: Mode,
    policy: ExpiryPolicy,
    now: u64,
}

impl Work<'_> {
    fn view(&self) -> &MState {
        match (self.mode, &self.txn.started) {
            (Mode::Snapshot, Some((_, snapshot))) => snapshot,
            _ => self.committed,
        }
    }

    /// RAM: a record committed after the transaction began is a conflict.
    fn check(&self, version: u64) -> M<()> {
        match (self.mode, &self.txn.started) {
            (Mode::Current, Some((start, _))) if version > *start => Err(MErr::Conflict),
            _ => Ok(()),
        }
    }

    fn record_read(&mut self, key: MKey, version: u64) -> M<()> {
        match self.txn.reads.get(&key) {
            Some(&seen) if seen != version => Err(MErr::Conflict),
            Some(_) => Ok(()),
            None => {
                self.txn.reads.insert(key, version);
                Ok(())
            }
        }
    }

    fn is_live(&self, record: &MSession) -> bool {
        !self
            .policy
            .is_expired(record.created, record.last_access, self.now)
    }

    fn entry(&mut self, client: u8) -> M<()> {
        if self.txn.sessions.contains_key(&client) {
            return Ok(());
        }
        let record = self.view().sessions.get(&client).cloned();
        let version = record.as_ref().map_or(0, |r| r.version);
        self.check(version)?;
        self.record_read(MKey::Session(client), version)?;
        let stored = record.is_some();
        self.txn.sessions.insert(
            client,
            MEntry {
                record,
                rewritten: false,
                wipe: false,
                touch: None,
                stored,
            },
        );
        Ok(())
    }

    fn entry_mut(&mut self, client: u8) -> &mut MEntry {
        self.txn.sessions.entry(client).or_insert_with(|| MEntry {
            record: None,
            rewritten: false,
            wipe: false,
            touch: None,
            stored: false,
        })
    }

    /// (live, stored data hidden).
    fn liveness(&mut self, client: u8) -> M<(bool, bool)> {
        self.entry(client)?;
        let entry = &self.txn.sessions[&client];
        let live = entry.record.as_ref().is_some_and(|r| self.is_live(r));
        Ok((live, entry.wipe || !entry.stored))
    }

    fn item_version(&mut self, client: u8, name: u8) -> M<u64> {
        let version = self.view().items.get(&(client, name)).map_or(0, |i| i.0);
        self.check(version)?;
        self.record_read(MKey::Item(client, name), version)?;
        Ok(version)
    }

    fn item(&mut self, client: u8, name: u8) -> M<Option<u16>> {
        let stored = self.view().items.get(&(client, name)).copied();
        let version = stored.map_or(0, |i| i.0);
        self.check(version)?;
        self.record_read(MKey::Item(client, name), version)?;
        Ok(stored.map(|i| i.1))
    }

    fn drop_items_of(&mut self, client: u8) {
        self.txn.items.retain(|(c, _), _| *c != client);
    }

    fn session(&mut self, client: u8) -> M<Option<MInfo>> {
        self.entry(client)?;
        let (policy, now) = (self.policy, self.now);
        let live = {
            let entry = &self.txn.sessions[&client];
            entry.record.as_ref().is_some_and(|r| self.is_live(r))
        };
        if !live {
            return Ok(None);
        }
        let entry = self.entry_mut(client);
        let Some(record) = entry.record.as_mut() else {
            return Ok(None);
        };
        if policy.needs_touch(record.last_access, now) {
            record.last_access = now;
            entry.touch = Some(entry.touch.map_or(now, |t| t.max(now)));
        }
        Ok(Some((record.created, record.last_access, record.principal)))
    }

    fn create(&mut self, client: u8) -> M<MInfo> {
        if let Some(info) = self.session(client)? {
            return Ok(info);
        }
        let now = self.now;
        let entry = self.entry_mut(client);
        let wipe = entry.record.is_some() || entry.wipe;
        *entry = MEntry {
            record: Some(MSession {
                version: 0,
                created: now,
                last_access: now,
                principal: None,
            }),
            rewritten: true,
            wipe,
            touch: None,
            stored: entry.stored,
        };
        self.drop_items_of(client);
        Ok((now, now, None))
    }

    fn delete(&mut self, client: u8) -> M<bool> {
        if !self.liveness(client)?.0 {
            return Ok(false);
        }
        let entry = self.entry_mut(client);
        *entry = MEntry {
            record: None,
            rewritten: true,
            wipe: true,
            touch: None,
            stored: entry.stored,
        };
        self.drop_items_of(client);
        Ok(true)
    }

    fn set_principal(&mut self, client: u8, principal: Option<u8>) -> M<()> {
        if !self.liveness(client)?.0 {
            return Err(MErr::NoSuchSession);
        }
        let entry = self.entry_mut(client);
        if let Some(record) = entry.record.as_mut() {
            record.principal = principal;
        }
        entry.rewritten = true;
        Ok(())
    }

    fn get(&mut self, client: u8, name: u8) -> M<Option<u16>> {
        let (live, hidden) = self.liveness(client)?;
        if !live {
            return Ok(None);
        }
        if let Some(buffered) = self.txn.items.get(&(client, name)) {
            return Ok(*buffered);
        }
        if hidden {
            return Ok(None);
        }
        self.item(client, name)
    }

    fn insert(&mut self, client: u8, name: u8, value: u16) -> M<()> {
        let (live, hidden) = self.liveness(client)?;
        if !live {
            return Err(MErr::NoSuchSession);
        }
        if !hidden && !self.txn.items.contains_key(&(client, name)) {
            self.item_version(client, name)?;
        }
        self.txn.items.insert((client, name), Some(value));
        Ok(())
    }

    fn remove(&mut self, client: u8, name: u8) -> M<bool> {
        let (live, hidden) = self.liveness(client)?;
        if !live {
            return Ok(false);
        }
        let present = match self.txn.items.get(&(client, name)) {
            Some(buffered) => buffered.is_some(),
            None if hidden => false,
            None => self.item_version(client, name)? != 0,
        };
        if present {
            self.txn.items.insert((client, name), None);
        }
        Ok(present)
    }

    fn names(&mut self, client: u8, package: u8) -> M<Vec<u8>> {
        let (live, hidden) = self.liveness(client)?;
        if !live {
            return Ok(Vec::new());
        }
        let mut names = BTreeSet::new();
        if !hidden {
            let version = self
                .view()
                .names_versions
                .get(&(client, package))
                .copied()
                .unwrap_or(0);
            self.check(version)?;
            self.record_read(MKey::Names(client, package), version)?;
            names.extend(
                self.view()
                    .items
                    .keys()
                    .filter(|(c, n)| *c == client && package_of(*n) == package)
                    .map(|(_, n)| *n),
            );
        }
        for ((c, n), value) in &self.txn.items {
            if *c == client && package_of(*n) == package {
                if value.is_some() {
                    names.insert(*n);
                } else {
                    names.remove(n);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn packages(&mut self, client: u8) -> M<Vec<u8>> {
        let (live, hidden) = self.liveness(client)?;
        if !live {
            return Ok(Vec::new());
        }
        let mut packages = BTreeSet::new();
        if !hidden {
            let version = self
                .view()
                .packages_versions
                .get(&client)
                .copied()
                .unwrap_or(0);
            self.check(version)?;
            self.record_read(MKey::Packages(client), version)?;
            packages.extend(
                self.view()
                    .items
                    .keys()
                    .filter(|(c, _)| *c == client)
                    .map(|(_, n)| package_of(*n)),
            );
        }
        let touched: BTreeSet<u8> = self
            .txn
            .items
            .keys()
            .filter(|(c, _)| *c == client)
            .map(|(_, n)| package_of(*n))
            .collect();
        for package in touched {
            if self.names(client, package)?.is_empty() {
                packages.remove(&package);
            } else {
                packages.insert(package);
            }
        }
        Ok(packages.into_iter().collect())
    }

    fn rename(&mut self, from: u8, to: u8) -> M<()> {
        if !self.liveness(from)?.0 {
            return Err(MErr::NoSuchSession);
        }
        if from == to {
            return Ok(());
        }
        if self.liveness(to)?.0 {
            return Err(MErr::SessionExists);
        }
        let mut data = Vec::new();
        for package in self.packages(from)? {
            for name in self.names(from, package)? {
                if let Some(value) = self.get(from, name)? {
                    data.push((name, value));
                }
            }
        }
        let source = self.entry_mut(from);
        let record = source.record.take();
        *source = MEntry {
            record: None,
            rewritten: true,
            wipe: true,
            touch: None,
            stored: source.stored,
        };
        self.drop_items_of(from);
        let target = self.entry_mut(to);
        let wipe = target.record.is_some() || target.wipe;
        *target = MEntry {
            record: record.map(|r| MSession { version: 0, ..r }),
            rewritten: true,
            wipe,
            touch: None,
            stored: target.stored,
        };
        self.drop_items_of(to);
        for (name, value) in data {
            self.txn.items.insert((to, name), Some(value));
        }
        Ok(())
    }
}

/// Whether committing `txn` in `mode` conflicts with `committed`.
fn conflicts(txn: &MTxn, mode: Mode, committed: &MState) -> bool {
    let validate = match mode {
        Mode::Current => true,
        Mode::Snapshot => txn.has_writes(),
    };
    validate
        && txn
            .reads
            .iter()
            .any(|(key, version)| committed.version(*key) != *version)
}

/// Apply `txn` to `state` as commit `tid` (docs/design.md; store's
/// `apply::apply`).
fn apply_commit(state: &mut MState, txn: &MTxn, tid: u64) {
    for (client, entry) in &txn.sessions {
        if !(entry.rewritten || entry.wipe || entry.touch.is_some()) {
            continue;
        }
        let old = state.sessions.get(client).cloned();
        if entry.wipe {
            state.wipe(*client);
        }
        if entry.rewritten {
            match &entry.record {
                Some(record) => {
                    let kept = old
                        .as_ref()
                        .filter(|_| !entry.wipe)
                        .map_or(0, |o| o.last_access);
                    state.sessions.insert(
                        *client,
                        MSession {
                            version: tid,
                            created: record.created,
                            last_access: record.last_access.max(kept),
                            principal: record.principal,
                        },
                    );
                }
                None => {
                    state.sessions.remove(client);
                }
            }
        }
    }
    let mut changed = BTreeSet::new();
    for ((client, name), value) in &txn.items {
        let name_set_changed = match value {
            Some(value) => state
                .items
                .insert((*client, *name), (tid, *value))
                .is_none(),
            None => state.items.remove(&(*client, *name)).is_some(),
        };
        if name_set_changed {
            changed.insert((*client, package_of(*name)));
        }
    }
    for (client, package) in changed {
        state.names_versions.insert((client, package), tid);
        state.packages_versions.insert(client, tid);
    }
    for (client, entry) in &txn.sessions {
        if let (false, Some(touch)) = (entry.rewritten, entry.touch)
            && let Some(session) = state.sessions.get_mut(client)
            && touch > session.last_access
        {
            session.last_access = touch;
        }
    }
}

// ---------------------------------------------------------------------------
// A world: one container and its model.
// ---------------------------------------------------------------------------

/// What the harness does with a container error it did not predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tolerance {
    /// Nothing may fail unpredicted.
    Strict,
    /// A storage error is acceptable (a fault fired, or the transaction
    /// began before one did).
    StorageErrors,
}

/// Whether `err` is an error an injected storage fault may cause.
fn is_storage_error(err: &StoreError) -> bool {
    match err {
        StoreError::Storage { .. }
        | StoreError::CommitOutcomeUnknown { .. }
        | StoreError::Closed => true,
        StoreError::Transaction(txn) => txn.source_as::<StoreError>().is_some_and(is_storage_error),
        _ => false,
    }
}

/// What a model operation and the container's answer are compared as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Info(Option<MInfo>),
    Value(Option<u16>),
    Flag(bool),
    List(Vec<String>),
    Done,
}

fn info_answer(info: Option<SessionInfo>) -> Answer {
    Answer::Info(info.map(|i| {
        let principal = i.principal.map(|p| {
            (0..PRINCIPALS)
                .find(|n| principal_text(*n) == p)
                .unwrap_or(u8::MAX)
        });
        (i.created, i.last_access, principal)
    }))
}

fn value_of(value: &SessionValue) -> u16 {
    match value.to_typed::<u16>() {
        Ok(value) => value,
        Err(err) => panic!("a stored value does not read as u16: {err}"),
    }
}

/// An operation whose outcome is unknown (a storage error in the durable
/// commit).
#[derive(Debug)]
enum Ambiguity {
    /// The committed state, or this one.
    State(MState),
    /// A sweep of at most `batch` of the `expired` sessions: none of them
    /// gone, or `min(batch, expired)` of them.
    Sweep { expired: Vec<u8>, batch: usize },
}

/// One container and its model.
struct World {
    name: &'static str,
    mode: Mode,
    policy: ExpiryPolicy,
    clock: ManualClock,
    manager: TransactionManager,
    committed: MState,
    /// The last commit sequence number used.
    seq: u64,
    slots: Vec<Option<MTxn>>,
    epoch: u64,
}

impl World {
    fn new(name: &'static str, mode: Mode, policy: ExpiryPolicy, clock: &ManualClock) -> World {
        World {
            name,
            mode,
            policy,
            clock: clock.clone(),
            manager: TransactionManager::new(),
            committed: MState::default(),
            seq: 0,
            slots: (0..SLOTS).map(|_| None).collect(),
            epoch: 0,
        }
    }

    fn fresh(&self) -> MTxn {
        MTxn {
            tx: self.manager.begin(),
            started: None,
            reads: BTreeMap::new(),
            sessions: BTreeMap::new(),
            items: BTreeMap::new(),
            epoch: self.epoch,
        }
    }

    fn take(&mut self, slot: u8) -> MTxn {
        let slot = usize::from(slot % SLOTS);
        match self.slots[slot].take() {
            Some(txn) => txn,
            None => self.fresh(),
        }
    }

    fn abort_all(&mut self) {
        for slot in &mut self.slots {
            if let Some(txn) = slot.take() {
                txn.tx.abort();
            }
        }
    }

    /// Run one transactional operation on the container and the model, and
    /// compare. `faulted` says whether a fault fired during the call.
    fn transactional(
        &mut self,
        container: &dyn SessionContainer,
        slot: u8,
        context: Context,
        faulted: &dyn Fn() -> bool,
        model: impl FnOnce(&mut Work<'_>) -> M<Answer>,
        real: impl FnOnce(&dyn SessionContainer, &mut Transaction) -> Result<Answer, StoreError>,
    ) {
        let mut txn = self.take(slot);
        if txn.started.is_none() {
            let snapshot = match self.mode {
                Mode::Snapshot => self.committed.clone(),
                Mode::Current => MState::default(),
            };
            txn.started = Some((self.seq, snapshot));
        }
        let expected = model(&mut Work {
            txn: &mut txn,
            committed: &self.committed,
            mode: self.mode,
            policy: self.policy,
            now: self.clock.now(),
        });
        let got = real(container, &mut txn.tx);
        trace(|| {
            format!(
                "{} {context}: model {expected:?}, container {got:?}",
                self.name
            )
        });
        let tolerance = if faulted() || txn.epoch < self.epoch {
            Tolerance::StorageErrors
        } else {
            Tolerance::Strict
        };
        let keep = match (&expected, &got) {
            (Ok(e), Ok(g)) => {
                assert_eq!(e, g, "{}: {context}: the answer differs", self.name);
                true
            }
            (Err(MErr::Conflict), Err(err)) if err.is_retryable() => false,
            (Err(MErr::NoSuchSession), Err(StoreError::NoSuchSession { .. }))
            | (Err(MErr::SessionExists), Err(StoreError::SessionExists { .. })) => true,
            (_, Err(err)) if tolerance == Tolerance::StorageErrors && is_storage_error(err) => {
                false
            }
            _ => panic!(
                "{}: {context}: the model says {expected:?}, the container {got:?}",
                self.name
            ),
        };
        if keep {
            self.slots[usize::from(slot % SLOTS)] = Some(txn);
        } else {
            txn.tx.abort();
        }
    }

    /// Commit `txn`; returns the state the commit may have produced if its
    /// outcome is unknown.
    fn commit(
        &mut self,
        txn: MTxn,
        context: Context,
        faulted: &dyn Fn() -> bool,
    ) -> Option<MState> {
        let conflict = conflicts(&txn, self.mode, &self.committed);
        self.seq += 1;
        let mut applied = self.committed.clone();
        if !conflict {
            apply_commit(&mut applied, &txn, self.seq);
        }
        let began_before_fault = txn.epoch < self.epoch;
        let result = txn.tx.commit();
        trace(|| {
            format!(
                "{} {context}: conflict {conflict}, commit {result:?}",
                self.name
            )
        });
        match result {
            Ok(_) => {
                assert!(
                    !conflict,
                    "{}: {context}: the model expects a conflict, the commit succeeded",
                    self.name
                );
                self.committed = applied;
                None
            }
            Err(err) if err.is_retryable() => {
                assert!(
                    conflict,
                    "{}: {context}: unexpected conflict: {err}",
                    self.name
                );
                None
            }
            Err(err) => {
                let store = err.source_as::<StoreError>();
                let tolerated =
                    (faulted() || began_before_fault) && store.is_some_and(is_storage_error);
                assert!(
                    tolerated,
                    "{}: {context}: unexpected commit error: {err:?}",
                    self.name
                );
                match store {
                    Some(StoreError::Storage { .. }) => None,
                    _ => (applied != self.committed).then_some(applied),
                }
            }
        }
    }

    /// Apply one operation to this world's container and model.
    fn run(
        &mut self,
        container: &dyn SessionContainer,
        op: Op,
        context: Context,
        faulted: &dyn Fn() -> bool,
    ) -> Option<Ambiguity> {
        let c = |n: u8| n % CLIENTS;
        let n = |n: u8| n % NAMES;
        match op {
            Op::Begin(slot) => {
                let fresh = self.fresh();
                if let Some(old) = self.slots[usize::from(slot % SLOTS)].replace(fresh) {
                    old.tx.abort();
                }
            }
            Op::Create(slot, client) => {
                let client = c(client);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.create(client).map(|i| Answer::Info(Some(i))),
                    |k, tx| {
                        k.create_session(tx, &key(client))
                            .map(|i| info_answer(Some(i)))
                    },
                );
            }
            Op::Insert(slot, client, name, value) => {
                let (client, name) = (c(client), n(name));
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.insert(client, name, value).map(|()| Answer::Done),
                    |k, tx| {
                        k.insert(
                            tx,
                            &key(client),
                            &package_text(package_of(name)),
                            &name_text(name),
                            SessionValue::new(value),
                        )
                        .map(|()| Answer::Done)
                    },
                );
            }
            Op::Remove(slot, client, name) => {
                let (client, name) = (c(client), n(name));
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.remove(client, name).map(Answer::Flag),
                    |k, tx| {
                        k.remove(
                            tx,
                            &key(client),
                            &package_text(package_of(name)),
                            &name_text(name),
                        )
                        .map(Answer::Flag)
                    },
                );
            }
            Op::Get(slot, client, name) => {
                let (client, name) = (c(client), n(name));
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.get(client, name).map(Answer::Value),
                    |k, tx| {
                        k.get(
                            tx,
                            &key(client),
                            &package_text(package_of(name)),
                            &name_text(name),
                        )
                        .map(|v| Answer::Value(v.as_ref().map(value_of)))
                    },
                );
            }
            Op::Touch(slot, client) => {
                let client = c(client);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.session(client).map(Answer::Info),
                    |k, tx| k.session(tx, &key(client)).map(info_answer),
                );
            }
            Op::Delete(slot, client) => {
                let client = c(client);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.delete(client).map(Answer::Flag),
                    |k, tx| k.delete_session(tx, &key(client)).map(Answer::Flag),
                );
            }
            Op::Names(slot, client, package) => {
                let (client, package) = (c(client), package % 2);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| {
                        w.names(client, package)
                            .map(|names| Answer::List(names.into_iter().map(name_text).collect()))
                    },
                    |k, tx| {
                        k.names(tx, &key(client), &package_text(package))
                            .map(Answer::List)
                    },
                );
            }
            Op::Packages(slot, client) => {
                let client = c(client);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| {
                        w.packages(client).map(|packages| {
                            Answer::List(packages.into_iter().map(package_text).collect())
                        })
                    },
                    |k, tx| k.packages(tx, &key(client)).map(Answer::List),
                );
            }
            Op::Rename(slot, from, to) => {
                let (from, to) = (c(from), c(to));
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.rename(from, to).map(|()| Answer::Done),
                    |k, tx| {
                        k.rename_session(tx, &key(from), &key(to))
                            .map(|()| Answer::Done)
                    },
                );
            }
            Op::SetPrincipal(slot, client, principal) => {
                let client = c(client);
                let principal = principal.map(|p| p % PRINCIPALS);
                self.transactional(
                    container,
                    slot,
                    context,
                    faulted,
                    |w| w.set_principal(client, principal).map(|()| Answer::Done),
                    |k, tx| {
                        let text = principal.map(principal_text);
                        k.set_principal(tx, &key(client), text.as_deref())
                            .map(|()| Answer::Done)
                    },
                );
            }
            Op::Commit(slot) => {
                if let Some(txn) = self.slots[usize::from(slot % SLOTS)].take() {
                    return self.commit(txn, context, faulted).map(Ambiguity::State);
                }
            }
            Op::Abort(slot) => {
                if let Some(txn) = self.slots[usize::from(slot % SLOTS)].take() {
                    txn.tx.abort();
                }
            }
            Op::ConflictingCommit(client, name, value) => {
                let (client, name) = (c(client), n(name));
                let slot_txn = self.fresh();
                // Run it in a scratch slot: the last slot's transaction is
                // set aside meanwhile.
                let scratch = usize::from(SLOTS - 1);
                let parked = self.slots[scratch].replace(slot_txn);
                let scratch_slot = SLOTS - 1;
                self.transactional(
                    container,
                    scratch_slot,
                    context,
                    faulted,
                    |w| {
                        w.create(client)?;
                        w.insert(client, name, value).map(|()| Answer::Done)
                    },
                    |k, tx| {
                        k.create_session(tx, &key(client))?;
                        k.insert(
                            tx,
                            &key(client),
                            &package_text(package_of(name)),
                            &name_text(name),
                            SessionValue::new(value),
                        )
                        .map(|()| Answer::Done)
                    },
                );
                let lone = self.slots[scratch].take();
                self.slots[scratch] = parked;
                if let Some(txn) = lone {
                    assert!(
                        !conflicts(&txn, self.mode, &self.committed),
                        "{}: {context}: a lone commit must not conflict",
                        self.name
                    );
                    return self.commit(txn, context, faulted).map(Ambiguity::State);
                }
            }
            Op::Sweep(batch) => {
                let batch = 1 + usize::from(batch % 3);
                let now = self.clock.now();
                let expired: Vec<u8> = self
                    .committed
                    .sessions
                    .iter()
                    .filter(|(_, s)| self.policy.is_expired(s.created, s.last_access, now))
                    .map(|(c, _)| *c)
                    .collect();
                match container.sweep(batch) {
                    Ok(report) => {
                        assert_eq!(
                            report.removed,
                            expired.len().min(batch) as u64,
                            "{}: {context}: sweep removed",
                            self.name
                        );
                        assert_eq!(
                            report.more,
                            expired.len() > batch,
                            "{}: {context}: sweep more",
                            self.name
                        );
                        // Which ones went is the container's choice; the
                        // check after this step sees the rest.
                        let mut removed = 0;
                        for client in expired {
                            if self.shows(container, client) == Some(false) {
                                self.committed.delete(client);
                                removed += 1;
                            }
                        }
                        assert_eq!(removed, report.removed, "{}: {context}", self.name);
                    }
                    Err(err) => {
                        assert!(
                            faulted() && is_storage_error(&err),
                            "{}: {context}: sweep failed: {err:?}",
                            self.name
                        );
                        if matches!(err, StoreError::Storage { .. }) {
                            return None;
                        }
                        // Unknown: resolved by the caller reading the state.
                        return Some(Ambiguity::Sweep { expired, batch });
                    }
                }
            }
            Op::AdminDelete(client) => {
                let client = c(client);
                let existed = self.committed.sessions.contains_key(&client);
                let mut deleted = self.committed.clone();
                deleted.delete(client);
                match container.delete_sessions(&[key(client)]) {
                    Ok(count) => {
                        assert_eq!(count, u64::from(existed), "{}: {context}", self.name);
                        self.committed = deleted;
                    }
                    Err(err) => {
                        assert!(
                            faulted() && is_storage_error(&err),
                            "{}: {context}: delete_sessions failed: {err:?}",
                            self.name
                        );
                        if !matches!(err, StoreError::Storage { .. }) && existed {
                            return Some(Ambiguity::State(deleted));
                        }
                    }
                }
            }
            Op::StoreSetting(setting, value) => {
                let setting = setting % SETTINGS;
                let mut stored = self.committed.clone();
                stored.settings.insert(setting, value);
                match container.store_setting(&setting_text(setting), &[value]) {
                    Ok(()) => self.committed = stored,
                    Err(err) => {
                        assert!(
                            faulted() && is_storage_error(&err),
                            "{}: {context}: store_setting failed: {err:?}",
                            self.name
                        );
                        if !matches!(err, StoreError::Storage { .. }) {
                            return Some(Ambiguity::State(stored));
                        }
                    }
                }
            }
            Op::Reopen
            | Op::Crash
            | Op::Advance(_)
            | Op::FailWritesAfter(_)
            | Op::FailSyncsAfter(_) => {}
        }
        None
    }

    /// Whether the container shows `client`'s session (`None`: the read
    /// failed).
    fn shows(&self, container: &dyn SessionContainer, client: u8) -> Option<bool> {
        container
            .session_detail(&key(client))
            .ok()
            .map(|d| d.is_some())
    }

    /// The visible committed state of the container.
    fn read_visible(&self, container: &dyn SessionContainer) -> Result<Visible, StoreError> {
        let mut visible = Visible {
            sessions: BTreeMap::new(),
            items: BTreeMap::new(),
            settings: BTreeMap::new(),
        };
        for client in 0..CLIENTS {
            let Some(detail) = container.session_detail(&key(client))? else {
                continue;
            };
            let principal = detail.summary.principal.as_ref().map(|p| {
                (0..PRINCIPALS)
                    .find(|n| principal_text(*n) == *p)
                    .unwrap_or(u8::MAX)
            });
            visible.sessions.insert(
                client,
                (
                    detail.summary.created,
                    detail.summary.last_access,
                    principal,
                ),
            );
            for (package, names) in &detail.data {
                for (name, value) in names {
                    let Some(n) = (0..NAMES).find(|n| name_text(*n) == *name) else {
                        panic!("{}: unknown name {name:?}", self.name);
                    };
                    assert_eq!(*package, package_text(package_of(n)), "{}", self.name);
                    let value: u16 = match from_value(value) {
                        Ok(value) => value,
                        Err(err) => panic!("{}: a stored value is no u16: {err}", self.name),
                    };
                    visible.items.insert((client, n), value);
                }
            }
        }
        let listed: BTreeSet<ClientKey> = container
            .list_sessions(None, 16)?
            .into_iter()
            .map(|s| s.key)
            .collect();
        let expected: BTreeSet<ClientKey> = visible.sessions.keys().map(|c| key(*c)).collect();
        assert_eq!(listed, expected, "{}: list_sessions", self.name);
        for principal in 0..PRINCIPALS {
            let found: BTreeSet<ClientKey> = container
                .sessions_of_principal(&principal_text(principal))?
                .into_iter()
                .collect();
            let expected: BTreeSet<ClientKey> = visible
                .sessions
                .iter()
                .filter(|(_, s)| s.2 == Some(principal))
                .map(|(c, _)| key(*c))
                .collect();
            assert_eq!(found, expected, "{}: sessions_of_principal", self.name);
        }
        assert_eq!(
            container.stats()?.sessions,
            visible.sessions.len() as u64,
            "{}: stats",
            self.name
        );
        for setting in 0..SETTINGS {
            if let Some(bytes) = container.load_setting(&setting_text(setting))? {
                assert_eq!(bytes.len(), 1, "{}: setting {setting}", self.name);
                visible.settings.insert(setting, bytes[0]);
            }
        }
        Ok(visible)
    }
}

// ---------------------------------------------------------------------------
// The RAM world.
// ---------------------------------------------------------------------------

struct RamWorld {
    world: World,
    container: RamContainer,
}

impl RamWorld {
    fn new(policy: ExpiryPolicy, clock: &ManualClock) -> RamWorld {
        RamWorld {
            world: World::new("ram", Mode::Current, policy, clock),
            container: Self::container(policy, clock),
        }
    }

    fn container(policy: ExpiryPolicy, clock: &ManualClock) -> RamContainer {
        RamContainer::new()
            .with_expiry(policy)
            .with_clock(Arc::new(clock.clone()))
    }

    fn apply(&mut self, op: Op, context: Context) {
        match op {
            Op::Reopen => self.world.abort_all(),
            Op::Crash => {
                self.world.abort_all();
                self.container = Self::container(self.world.policy, &self.world.clock);
                self.world.committed = MState::default();
            }
            _ => {
                let ambiguous = self.world.run(&self.container, op, context, &|| false);
                assert!(ambiguous.is_none(), "ram: {context}: an unknown outcome");
            }
        }
    }

    fn check(&self, context: Context) {
        match self.world.read_visible(&self.container) {
            Ok(visible) => assert_eq!(
                visible,
                self.world.committed.visible(),
                "ram: {context}: the committed state differs from the model"
            ),
            Err(err) => panic!("ram: {context}: reading the state failed: {err:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The redb world.
// ---------------------------------------------------------------------------

struct RedbWorld {
    world: World,
    disk: Arc<SimDisk>,
    container: Option<RedbContainer>,
    failures_seen: u64,
    syncs_seen: u64,
    /// States a crash may return to: before commits whose outcome was
    /// unknown, resolved as applied, and not yet covered by a successful
    /// sync.
    undurable: Vec<MState>,
}

impl RedbWorld {
    fn new(policy: ExpiryPolicy, clock: &ManualClock) -> RedbWorld {
        let mut world = RedbWorld {
            world: World::new("redb", Mode::Snapshot, policy, clock),
            disk: SimDisk::new(),
            container: None,
            failures_seen: 0,
            syncs_seen: 0,
            undurable: Vec::new(),
        };
        world.open(Context {
            step: 0,
            op: Op::Reopen,
        });
        world.settle(true);
        world
    }

    /// Open the container; a fault firing during the open is healed and the
    /// open retried once.
    fn open(&mut self, context: Context) {
        let options = self
            .disk
            .options()
            .with_expiry(self.world.policy)
            .with_clock(Arc::new(self.world.clock.clone()));
        match RedbContainer::open_with("model", options.clone()) {
            Ok(container) => self.container = Some(container),
            Err(err) => {
                assert!(
                    self.disk.failures() > self.failures_seen,
                    "redb: {context}: open failed without a fault: {err:?}"
                );
                self.disk.heal();
                match RedbContainer::open_with("model", options) {
                    Ok(container) => self.container = Some(container),
                    Err(err) => panic!("redb: {context}: open failed after healing: {err:?}"),
                }
            }
        }
    }

    fn container(&self) -> &RedbContainer {
        match &self.container {
            Some(container) => container,
            None => panic!("redb: the container is not open"),
        }
    }

    fn apply(&mut self, op: Op, context: Context) {
        let ambiguous = match op {
            Op::Reopen => {
                self.world.abort_all();
                self.container = None;
                self.open(context);
                None
            }
            Op::Crash => {
                self.world.abort_all();
                self.container = None;
                self.disk.crash();
                self.open(context);
                self.after_crash(context);
                None
            }
            Op::FailWritesAfter(n) => {
                self.disk.fail_writes_after(u64::from(n % 32));
                None
            }
            Op::FailSyncsAfter(n) => {
                self.disk.fail_syncs_after(u64::from(n % 4));
                None
            }
            _ => {
                let Some(container) = self.container.take() else {
                    panic!("redb: {context}: the container is not open");
                };
                let disk = Arc::clone(&self.disk);
                let seen = self.failures_seen;
                let faulted = move || disk.failures() > seen;
                let ambiguous = self.world.run(&container, op, context, &faulted);
                self.container = Some(container);
                ambiguous
            }
        };
        let faulted = self.disk.failures() > self.failures_seen;
        if faulted {
            self.disk.heal();
            self.failures_seen = self.disk.failures();
            self.world.epoch += 1;
        }
        if let Some(ambiguity) = ambiguous {
            self.resolve(ambiguity, context);
        }
        self.settle(!faulted);
    }

    /// Note successful syncs: they make every earlier commit durable.
    fn settle(&mut self, clean: bool) {
        let syncs = self.disk.syncs();
        if clean && syncs > self.syncs_seen {
            self.undurable.clear();
        }
        self.syncs_seen = syncs;
    }

    /// Read the visible state, healing and retrying if a fault fires.
    fn read_visible(&mut self, context: Context) -> Visible {
        for _ in 0..2 {
            match self.world.read_visible(self.container()) {
                Ok(visible) => return visible,
                Err(err) => {
                    assert!(
                        self.disk.failures() > self.failures_seen && is_storage_error(&err),
                        "redb: {context}: reading the state failed: {err:?}"
                    );
                    self.disk.heal();
                    self.failures_seen = self.disk.failures();
                    self.world.epoch += 1;
                }
            }
        }
        match self.world.read_visible(self.container()) {
            Ok(visible) => visible,
            Err(err) => panic!("redb: {context}: reading the state failed after healing: {err:?}"),
        }
    }

    /// An operation's outcome is unknown: find out which it was.
    fn resolve(&mut self, ambiguity: Ambiguity, context: Context) {
        let visible = self.read_visible(context);
        let applied = match ambiguity {
            Ambiguity::State(applied) => applied,
            Ambiguity::Sweep { expired, batch } => {
                let mut swept = self.world.committed.clone();
                let gone: Vec<u8> = expired
                    .iter()
                    .copied()
                    .filter(|c| !visible.sessions.contains_key(c))
                    .collect();
                assert!(
                    gone.is_empty() || gone.len() == expired.len().min(batch),
                    "redb: {context}: an unknown sweep removed {gone:?} of {expired:?}"
                );
                for client in gone {
                    swept.delete(client);
                }
                swept
            }
        };
        let before = self.world.committed.visible();
        let after = applied.visible();
        if visible == before && visible == after {
            // Indistinguishable; versions may differ, so no transaction may
            // carry reads across.
            self.world.abort_all();
            self.undurable.push(self.world.committed.clone());
            self.world.committed = applied;
        } else if visible == after {
            self.undurable.push(self.world.committed.clone());
            self.world.committed = applied;
        } else {
            assert_eq!(
                visible, before,
                "redb: {context}: after an unknown outcome the state is neither before nor after"
            );
        }
    }

    /// After a crash the state is the committed one, or one a crash may
    /// return to.
    fn after_crash(&mut self, context: Context) {
        let visible = self.read_visible(context);
        if visible != self.world.committed.visible() {
            let Some(state) = self
                .undurable
                .iter()
                .find(|s| s.visible() == visible)
                .cloned()
            else {
                panic!(
                    "redb: {context}: a crash lost an acknowledged commit:\nshown {visible:?}\nmodel {:?}",
                    self.world.committed.visible()
                );
            };
            self.world.committed = state;
        }
        self.undurable.clear();
    }

    fn check_step(&mut self, context: Context) {
        let failures = self.disk.failures();
        let visible = self.read_visible(context);
        assert_eq!(
            visible,
            self.world.committed.visible(),
            "redb: {context}: the committed state differs from the model"
        );
        self.settle(self.disk.failures() == failures);
    }
}
