//! One transaction's view of a container: the versions it read, its buffered
//! writes (live values, not yet serialized), read-your-own-writes, the touch
//! rule, and savepoints. Shared by both containers; storage is reached only
//! through a [`ReadView`].

use std::collections::{BTreeMap, BTreeSet};

use keel_txn::{BoxError, SavepointState};

use crate::{
    ClientKey, ExpiryPolicy, SessionInfo, SessionValue, StoreError, Value,
    engine::{
        apply::{ChangeSet, RecordChange, SessionChange},
        records::{ItemKey, RecordKey, SessionRecord, check_part},
        view::ReadView,
    },
};

/// The expiry policy and the time of one container operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    pub(crate) policy: ExpiryPolicy,
    pub(crate) now: u64,
}

impl At {
    fn is_live(&self, record: &SessionRecord) -> bool {
        !self
            .policy
            .is_expired(record.created, record.last_access, self.now)
    }
}

/// Which reads a commit validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Every read, even of a read-only transaction (RAM: its reads come from
    /// the current state, not a snapshot).
    Always,
    /// Only if the transaction writes something besides touches (redb: a
    /// read-only transaction read one consistent snapshot, and touches merge
    /// by maximum).
    IfWrites,
}

/// A session as this transaction sees it.
#[derive(Debug, Clone)]
struct SessionEntry {
    /// The record (`None`: absent or deleted).
    record: Option<SessionRecord>,
    /// The record's generation changes at commit (create, delete, rename,
    /// principal).
    rewritten: bool,
    /// Stored data of the session is deleted at commit; stored values are
    /// invisible to this transaction.
    wipe: bool,
    /// Last-access time to merge at commit.
    touch: Option<u64>,
    /// The view held a record when the entry was loaded. Without one it
    /// holds no data either (data never outlives its session record), so
    /// there is nothing to read, and the session's version guards it all.
    stored: bool,
}

impl SessionEntry {
    /// Whether stored data is out of sight (wiped, or there is none).
    fn hides_stored_data(&self) -> bool {
        self.wipe || !self.stored
    }
}

/// The buffered writes captured by a savepoint.
#[derive(Debug, Clone)]
pub(crate) struct BufferSavepoint {
    sessions: Vec<(ClientKey, SessionEntry)>,
    items: BTreeMap<ItemKey, Option<SessionValue>>,
}

/// The versions a transaction read: a short list while it is short (a
/// request usually reads two or three records), a map beyond.
#[derive(Debug, Default)]
struct ReadSet {
    few: Vec<(RecordKey, u64)>,
    many: BTreeMap<RecordKey, u64>,
}

/// Reads kept in the short list before it becomes a map.
const FEW_READS: usize = 16;

impl ReadSet {
    fn get(&self, key: &RecordKey) -> Option<u64> {
        if self.many.is_empty() {
            self.few.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
        } else {
            self.many.get(key).copied()
        }
    }

    /// Record a key not recorded yet.
    fn insert(&mut self, key: RecordKey, version: u64) {
        if self.many.is_empty() {
            if self.few.len() < FEW_READS {
                self.few.push((key, version));
                return;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key, version);
    }

    /// The reads in key order (what validation and apply expect).
    fn into_sorted(self) -> Vec<(RecordKey, u64)> {
        if self.many.is_empty() {
            let mut few = self.few;
            few.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            few
        } else {
            self.many.into_iter().collect()
        }
    }
}

/// A transaction's read set and buffered writes for one container.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    reads: ReadSet,
    /// The sessions this transaction used, sorted by key: a list, since a
    /// request uses one or two (a map's first node is a kilobyte).
    sessions: Vec<(ClientKey, SessionEntry)>,
    items: BTreeMap<ItemKey, Option<SessionValue>>,
}

impl Buffer {
    /// Record that `key` was read at `version`. Reading it again at another
    /// version means the view is not a snapshot and moved under us (RAM): a
    /// conflict now rather than an inconsistent read.
    fn record_read(&mut self, key: RecordKey, version: u64) -> Result<(), StoreError> {
        match self.reads.get(&key) {
            Some(seen) if seen != version => Err(StoreError::Conflict {
                client: *key.client(),
                what: key.describe(),
            }),
            Some(_) => Ok(()),
            None => {
                self.reads.insert(key, version);
                Ok(())
            }
        }
    }

    /// The session entry of `client`, loading it from the view on first use.
    fn entry(
        &mut self,
        view: &mut impl ReadView,
        client: &ClientKey,
    ) -> Result<&mut SessionEntry, StoreError> {
        let at = match self.sessions.binary_search_by(|(key, _)| key.cmp(client)) {
            Ok(at) => at,
            Err(at) => {
                let record = view.session(client)?;
                self.record_read(
                    RecordKey::Session(*client),
                    record.as_ref().map_or(0, |r| r.version),
                )?;
                let stored = record.is_some();
                let entry = SessionEntry {
                    record,
                    rewritten: false,
                    wipe: false,
                    touch: None,
                    stored,
                };
                self.sessions.insert(at, (*client, entry));
                at
            }
        };
        Ok(&mut self.sessions[at].1)
    }

    /// Whether `client` is live, and whether its stored data is out of
    /// sight (wiped, or there is none to read).
    fn liveness(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<(bool, bool), StoreError> {
        let entry = self.entry(view, client)?;
        let live = entry.record.as_ref().is_some_and(|r| at.is_live(r));
        Ok((live, entry.hides_stored_data()))
    }

    fn stored_item_version(
        &mut self,
        view: &mut impl ReadView,
        key: &ItemKey,
    ) -> Result<u64, StoreError> {
        let version = view.item_version(key)?;
        self.record_read(RecordKey::Item(key.clone()), version)?;
        Ok(version)
    }

    fn drop_items_of(&mut self, client: &ClientKey) {
        self.items.retain(|key, _| key.client != *client);
    }

    /// The buffered writes of `client`'s package `package` (all packages if
    /// `None`).
    fn buffered<'a>(
        &'a self,
        client: &'a ClientKey,
        package: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ItemKey, &'a Option<SessionValue>)> + 'a {
        let start = ItemKey {
            client: *client,
            package: package.unwrap_or_default().to_owned(),
            name: String::new(),
        };
        self.items.range(start..).take_while(move |(key, _)| {
            key.client == *client && package.is_none_or(|p| key.package == p)
        })
    }

    /// [`SessionContainer::session`](crate::SessionContainer::session).
    pub(crate) fn session(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        Ok(self.touch(view, at, client)?.map(info))
    }

    /// The live record of `client`, after applying the touch rule to it.
    fn touch(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<Option<&SessionRecord>, StoreError> {
        let entry = self.entry(view, client)?;
        let Some(record) = entry.record.as_mut().filter(|r| at.is_live(r)) else {
            return Ok(None);
        };
        if at.policy.needs_touch(record.last_access, at.now) {
            record.last_access = at.now;
            entry.touch = Some(entry.touch.map_or(at.now, |t| t.max(at.now)));
        }
        Ok(Some(record))
    }

    /// [`SessionContainer::touch_and_get`](crate::SessionContainer::touch_and_get).
    pub(crate) fn touch_and_get(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        if self.touch(view, at, client)?.is_none() {
            return Ok(None);
        }
        self.get(view, at, client, package, name)
    }

    /// [`SessionContainer::create_session`](crate::SessionContainer::create_session).
    pub(crate) fn create_session(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<SessionInfo, StoreError> {
        if let Some(info) = self.session(view, at, client)? {
            return Ok(info);
        }
        let entry = self.entry(view, client)?;
        // An expired record still stored, or one deleted earlier in this
        // transaction: its data goes, the new session starts empty.
        let wipe = entry.record.is_some() || entry.wipe;
        let record = SessionRecord {
            version: 0,
            created: at.now,
            last_access: at.now,
            principal: None,
        };
        let created = info(&record);
        *entry = SessionEntry {
            record: Some(record),
            rewritten: true,
            wipe,
            touch: None,
            stored: entry.stored,
        };
        self.drop_items_of(client);
        Ok(created)
    }

    /// [`SessionContainer::delete_session`](crate::SessionContainer::delete_session).
    pub(crate) fn delete_session(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<bool, StoreError> {
        let (live, _) = self.liveness(view, at, client)?;
        if !live {
            return Ok(false);
        }
        let entry = self.entry(view, client)?;
        *entry = SessionEntry {
            record: None,
            rewritten: true,
            wipe: true,
            touch: None,
            stored: entry.stored,
        };
        self.drop_items_of(client);
        Ok(true)
    }

    /// [`SessionContainer::set_principal`](crate::SessionContainer::set_principal).
    pub(crate) fn set_principal(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        if let Some(principal) = principal {
            check_part("principal", principal)?;
        }
        let entry = self.entry(view, client)?;
        let Some(record) = entry.record.as_mut().filter(|r| at.is_live(r)) else {
            return Err(StoreError::NoSuchSession { client: *client });
        };
        record.principal = principal.map(str::to_owned);
        entry.rewritten = true;
        Ok(())
    }

    /// [`SessionContainer::rename_session`](crate::SessionContainer::rename_session).
    ///
    /// The data is copied into this transaction's buffer, and everything the
    /// copy read (package set, name sets, values) is validated at commit, so
    /// a value written into `from` meanwhile makes the rename conflict rather
    /// than get lost.
    pub(crate) fn rename_session(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        from: &ClientKey,
        to: &ClientKey,
    ) -> Result<(), StoreError> {
        let (live, _) = self.liveness(view, at, from)?;
        if !live {
            return Err(StoreError::NoSuchSession { client: *from });
        }
        if from == to {
            return Ok(());
        }
        if self.liveness(view, at, to)?.0 {
            return Err(StoreError::SessionExists { client: *to });
        }
        let mut data = Vec::new();
        for package in self.packages(view, at, from)? {
            for name in self.names(view, at, from, &package)? {
                if let Some(value) = self.get(view, at, from, &package, &name)? {
                    data.push((ItemKey::new(to, &package, &name), value));
                }
            }
        }
        let source = self.entry(view, from)?;
        let record = source.record.take();
        *source = SessionEntry {
            record: None,
            rewritten: true,
            wipe: true,
            touch: None,
            stored: source.stored,
        };
        self.drop_items_of(from);
        let target = self.entry(view, to)?;
        let wipe = target.record.is_some() || target.wipe;
        *target = SessionEntry {
            record: record.map(|r| SessionRecord { version: 0, ..r }),
            rewritten: true,
            wipe,
            touch: None,
            stored: target.stored,
        };
        self.drop_items_of(to);
        for (key, value) in data {
            self.items.insert(key, Some(value));
        }
        Ok(())
    }

    /// [`SessionContainer::get`](crate::SessionContainer::get).
    pub(crate) fn get(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        check_parts(package, name)?;
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live {
            return Ok(None);
        }
        let key = ItemKey::new(client, package, name);
        if let Some(buffered) = self.items.get(&key) {
            return Ok(buffered.clone());
        }
        if hidden {
            return Ok(None);
        }
        let stored = view.item(&key)?;
        self.record_read(
            RecordKey::Item(key),
            stored.as_ref().map_or(0, |(version, _)| *version),
        )?;
        Ok(stored.map(|(_, tree)| SessionValue::from_shared_tree(tree)))
    }

    /// [`SessionContainer::insert`](crate::SessionContainer::insert).
    pub(crate) fn insert(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
        name: &str,
        value: SessionValue,
    ) -> Result<(), StoreError> {
        check_parts(package, name)?;
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live {
            return Err(StoreError::NoSuchSession { client: *client });
        }
        let key = ItemKey::new(client, package, name);
        if !hidden && !self.items.contains_key(&key) {
            // A write records the version it overwrites: two concurrent
            // writes of one value conflict (first committer wins).
            self.stored_item_version(view, &key)?;
        }
        self.items.insert(key, Some(value));
        Ok(())
    }

    /// [`SessionContainer::remove`](crate::SessionContainer::remove).
    pub(crate) fn remove(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_parts(package, name)?;
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live {
            return Ok(false);
        }
        let key = ItemKey::new(client, package, name);
        let present = match self.items.get(&key) {
            Some(buffered) => buffered.is_some(),
            None if hidden => false,
            None => self.stored_item_version(view, &key)? != 0,
        };
        if present {
            self.items.insert(key, None);
        }
        Ok(present)
    }

    /// [`SessionContainer::names`](crate::SessionContainer::names).
    pub(crate) fn names(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
    ) -> Result<Vec<String>, StoreError> {
        check_part("package id", package)?;
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live {
            return Ok(Vec::new());
        }
        let mut names: BTreeSet<String> = BTreeSet::new();
        if !hidden {
            let version = view.names_version(client, package)?;
            self.record_read(RecordKey::Names(*client, package.to_owned()), version)?;
            names.extend(view.names(client, package)?);
        }
        for (key, value) in self.buffered(client, Some(package)) {
            if value.is_some() {
                names.insert(key.name.clone());
            } else {
                names.remove(&key.name);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// [`SessionContainer::has_names`](crate::SessionContainer::has_names):
    /// as `!names(..).is_empty()`, recording the same read, without listing
    /// the stored names when nothing of the package is buffered.
    pub(crate) fn has_names(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
        package: &str,
    ) -> Result<bool, StoreError> {
        if self.buffered(client, Some(package)).next().is_some() {
            // Buffered writes and removals change the set: count it.
            return Ok(!self.names(view, at, client, package)?.is_empty());
        }
        check_part("package id", package)?;
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live || hidden {
            return Ok(false);
        }
        let (version, has_names) = view.package_state(client, package)?;
        self.record_read(RecordKey::Names(*client, package.to_owned()), version)?;
        Ok(has_names)
    }

    /// [`SessionContainer::packages`](crate::SessionContainer::packages).
    pub(crate) fn packages(
        &mut self,
        view: &mut impl ReadView,
        at: At,
        client: &ClientKey,
    ) -> Result<Vec<String>, StoreError> {
        let (live, hidden) = self.liveness(view, at, client)?;
        if !live {
            return Ok(Vec::new());
        }
        let mut packages: BTreeSet<String> = BTreeSet::new();
        if !hidden {
            let version = view.packages_version(client)?;
            self.record_read(RecordKey::Packages(*client), version)?;
            packages.extend(view.packages(client)?);
        }
        let touched: BTreeSet<String> = self
            .buffered(client, None)
            .map(|(key, _)| key.package.clone())
            .collect();
        for package in touched {
            if self.names(view, at, client, &package)?.is_empty() {
                packages.remove(&package);
            } else {
                packages.insert(package);
            }
        }
        Ok(packages.into_iter().collect())
    }

    /// Whether the transaction writes anything besides touches.
    pub(crate) fn has_writes(&self) -> bool {
        !self.items.is_empty() || self.sessions.iter().any(|(_, e)| e.rewritten || e.wipe)
    }

    /// Whether committing may write anything at all (touches included).
    pub(crate) fn may_write(&self) -> bool {
        !self.items.is_empty()
            || self
                .sessions
                .iter()
                .any(|(_, e)| e.rewritten || e.wipe || e.touch.is_some())
    }

    /// Capture the buffered writes.
    pub(crate) fn savepoint(&self) -> SavepointState {
        Box::new(BufferSavepoint {
            sessions: self.sessions.clone(),
            items: self.items.clone(),
        })
    }

    /// Restore the buffered writes captured by [`savepoint`](Self::savepoint).
    /// The read set is kept: what was read stays validated, which is
    /// conservative and correct.
    ///
    /// # Errors
    /// If `state` was not captured by a buffer.
    pub(crate) fn rollback(&mut self, state: &SavepointState) -> Result<(), BoxError> {
        let savepoint = state
            .downcast_ref::<BufferSavepoint>()
            .ok_or("savepoint state of another data manager")?;
        self.sessions = savepoint.sessions.clone();
        self.items = savepoint.items.clone();
        Ok(())
    }

    /// The change set to commit, converting every buffered value with
    /// `convert` (this is where live values are serialized). Consumes the
    /// buffer: after the commit step a transaction can only finish or
    /// abort.
    ///
    /// # Errors
    /// The first error of `convert`.
    pub(crate) fn change_set<V>(
        self,
        validation: Validation,
        mut convert: impl FnMut(&ItemKey, &SessionValue) -> Result<V, StoreError>,
    ) -> Result<ChangeSet<V>, StoreError> {
        let validate = match validation {
            Validation::Always => true,
            Validation::IfWrites => self.has_writes(),
        };
        let reads = if validate {
            self.reads.into_sorted()
        } else {
            Vec::new()
        };
        let sessions = self
            .sessions
            .into_iter()
            .filter(|(_, e)| e.rewritten || e.wipe || e.touch.is_some())
            .map(|(client, entry)| {
                let record = match (entry.record, entry.rewritten) {
                    (_, false) => RecordChange::Keep,
                    (Some(r), true) => RecordChange::Put {
                        created: r.created,
                        last_access: r.last_access,
                        principal: r.principal,
                    },
                    (None, true) => RecordChange::Delete,
                };
                SessionChange {
                    client,
                    wipe: entry.wipe,
                    // A rewritten record carries its last access itself.
                    touch: if entry.rewritten { None } else { entry.touch },
                    record,
                }
            })
            .collect();
        let mut items = Vec::with_capacity(self.items.len());
        for (key, value) in self.items {
            let converted = match value {
                Some(value) => Some(convert(&key, &value)?),
                None => None,
            };
            items.push((key, converted));
        }
        Ok(ChangeSet {
            reads,
            sessions,
            items,
        })
    }
}

/// Serialize a buffered value into its tree at commit.
pub(crate) fn to_tree(key: &ItemKey, value: &SessionValue) -> Result<Value, StoreError> {
    value.to_tree().map_err(|err| StoreError::Unserializable {
        package: key.package.clone(),
        key: key.name.clone(),
        source: Box::new(err),
    })
}

fn info(record: &SessionRecord) -> SessionInfo {
    SessionInfo {
        created: record.created,
        last_access: record.last_access,
        principal: record.principal.clone(),
    }
}

fn check_parts(package: &str, name: &str) -> Result<(), StoreError> {
    check_part("package id", package)?;
    check_part("name", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_key(n: u8) -> RecordKey {
        RecordKey::Session(ClientKey::from_bytes([n; 32]))
    }

    #[test]
    fn a_read_set_finds_every_read_before_and_after_it_becomes_a_map_and_sorts_them() {
        // Recorded in descending key order, past the short list's length.
        let keys: Vec<RecordKey> = (0..40u8).rev().map(session_key).collect();
        let mut reads = ReadSet::default();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(reads.get(key), None);
            reads.insert(key.clone(), i as u64 + 1);
            for (j, seen) in keys[..=i].iter().enumerate() {
                assert_eq!(reads.get(seen), Some(j as u64 + 1), "{i} reads");
            }
        }
        let sorted = reads.into_sorted();
        assert_eq!(sorted.len(), keys.len());
        assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));

        let mut few = ReadSet::default();
        few.insert(session_key(2), 1);
        few.insert(session_key(1), 2);
        assert_eq!(
            few.into_sorted(),
            [(session_key(1), 2), (session_key(2), 1)]
        );
    }
}
