//! What a container's storage must offer the shared transaction logic: reads
//! of committed state (a snapshot during a request, the current state during a
//! commit) and the writes of a commit.
//!
//! Both containers implement these traits, so the buffering, validation and
//! apply rules exist once ([`crate::buffer`], [`crate::apply`]) and the RAM
//! and redb containers cannot drift apart in semantics.

use std::sync::Arc;

use crate::{
    ClientKey, StoreError, Value,
    engine::records::{ItemKey, RecordKey, SessionRecord},
};

/// Read access to committed state.
pub(crate) trait ReadView {
    /// The stored session record, expired or not.
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError>;

    /// The stored value and its version. Shared, not copied: a read hands
    /// out a reference count, whatever the size of the value.
    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError>;

    /// The version of a value; 0 if absent.
    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError>;

    /// The version of a package's name set; 0 if it never had names.
    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError>;

    /// The version of a session's package set; 0 if it never had names.
    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError>;

    /// The names of a package, sorted.
    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError>;

    /// `names_version(client, package)` and whether `names(client, package)`
    /// is not empty; a store may answer both with one lookup.
    fn package_state(
        &mut self,
        client: &ClientKey,
        package: &str,
    ) -> Result<(u64, bool), StoreError> {
        Ok((
            self.names_version(client, package)?,
            !self.names(client, package)?.is_empty(),
        ))
    }

    /// The packages of a session that hold at least one name, sorted.
    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError>;

    /// The current version of anything a transaction may have read.
    fn version(&mut self, key: &RecordKey) -> Result<u64, StoreError> {
        match key {
            RecordKey::Session(client) => Ok(self.session(client)?.map_or(0, |r| r.version)),
            RecordKey::Packages(client) => self.packages_version(client),
            RecordKey::Names(client, package) => self.names_version(client, package),
            RecordKey::Item(key) => self.item_version(key),
        }
    }
}

/// What [`WriteView::take_session`] removed.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Nothing: there was no session record.
    Absent,
    /// The session record.
    Record(SessionRecord),
    /// A session record that does not decode (a damaged file), removed all
    /// the same. Its index entries cannot be computed; the sweep drops them
    /// as stale when it meets them.
    Damaged,
}

/// The writes of a commit, applied to the current state. Implementations
/// keep their indexes (expiry, principal) in step with the session records.
pub(crate) trait WriteView: ReadView {
    /// A value as this storage keeps it (a tree in RAM, bytes in redb).
    type Stored;

    /// Write a session record; `old` is the record it replaces, if any.
    fn put_session(
        &mut self,
        client: &ClientKey,
        old: Option<&SessionRecord>,
        new: &SessionRecord,
    ) -> Result<(), StoreError>;

    /// Delete a session record (not its data: see [`WriteView::wipe`]).
    fn delete_session(&mut self, client: &ClientKey, old: &SessionRecord)
    -> Result<(), StoreError>;

    /// Delete a session record (not its data) and return it: one lookup
    /// where [`ReadView::session`] and [`WriteView::delete_session`] take two.
    fn take_session(&mut self, client: &ClientKey) -> Result<Taken, StoreError>;

    /// Delete every value and name-set version of a session.
    fn wipe(&mut self, client: &ClientKey) -> Result<(), StoreError>;

    /// Write a value; `true` if it replaced one.
    fn put_item(
        &mut self,
        key: &ItemKey,
        version: u64,
        value: &Self::Stored,
    ) -> Result<bool, StoreError>;

    /// Delete a value; `true` if there was one.
    fn remove_item(&mut self, key: &ItemKey) -> Result<bool, StoreError>;

    /// Set the version of a package's name set.
    fn set_names_version(
        &mut self,
        client: &ClientKey,
        package: &str,
        version: u64,
    ) -> Result<(), StoreError>;

    /// Set the version of a session's package set.
    fn set_packages_version(&mut self, client: &ClientKey, version: u64) -> Result<(), StoreError>;

    /// Up to `limit` sessions from the expiry indexes: last access before
    /// `idle_before`, or creation before `created_before`. Reads only those.
    /// Index entries that are damaged, or that no session record matches,
    /// are removed instead; a session whose record does not decode is
    /// returned (and its index entry removed), for the sweep to remove.
    fn expired(
        &mut self,
        idle_before: Option<u64>,
        created_before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ClientKey>, StoreError>;
}
