//! The redb tables seen through [`ReadView`] (a request's snapshot, or the
//! committer's write transaction) and [`WriteView`] (the committer).

use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

use crate::{
    ClientKey, StoreError, Value,
    engine::{
        records::{self, ItemKey, SessionRecord},
        view::{ReadView, Taken, WriteView},
    },
    redb::{
        codec::{self, DataKey},
        tables,
    },
};

/// A redb error as a [`StoreError::Storage`] of `operation`.
pub(crate) fn storage<E>(operation: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |err| StoreError::Storage {
        operation,
        source: Box::new(err),
    }
}

const READ: &str = "reading the session database";
const WRITE: &str = "writing the session database";

/// The two tables a [`ReadView`] needs, read-only or writable.
#[derive(Debug)]
pub(crate) struct Tables<S, D> {
    pub(crate) sessions: S,
    pub(crate) data: D,
}

/// A request's snapshot: one redb read transaction.
pub(crate) type SnapshotTables = Tables<
    ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    ReadOnlyTable<&'static [u8], &'static [u8]>,
>;

/// Open the snapshot tables of `txn`.
///
/// # Errors
/// [`StoreError::Storage`] if a table cannot be opened.
pub(crate) fn snapshot_tables(txn: &ReadTransaction) -> Result<SnapshotTables, StoreError> {
    Ok(Tables {
        sessions: txn.open_table(tables::SESSIONS).map_err(storage(READ))?,
        data: txn.open_table(tables::DATA).map_err(storage(READ))?,
    })
}

impl<S, D> Tables<S, D>
where
    D: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn version_at(&self, client: &ClientKey, key: &[u8]) -> Result<u64, StoreError> {
        match self.data.get(key).map_err(storage(READ))? {
            Some(guard) => codec::decode_version(client, guard.value()),
            None => Ok(0),
        }
    }

    /// The item `key`: its version, value, and the value's encoded length.
    pub(crate) fn item_with_len(
        &self,
        key: &ItemKey,
    ) -> Result<Option<(u64, Arc<Value>, usize)>, StoreError> {
        let bytes = codec::item_key(key);
        let Some(guard) = self.data.get(bytes.as_slice()).map_err(storage(READ))? else {
            return Ok(None);
        };
        let (version, value) = codec::split_item(key, guard.value())?;
        Ok(Some((
            version,
            Arc::new(records::decode_value(key, value)?),
            value.len(),
        )))
    }

    /// The data keys of `client` under `prefix`, in order.
    fn data_keys(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(DataKey) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let bounds = codec::prefix_bounds(prefix);
        for entry in self
            .data
            .range::<&[u8]>(codec::as_slices(&bounds))
            .map_err(storage(READ))?
        {
            let (key, _) = entry.map_err(storage(READ))?;
            each(codec::split_data_key(key.value())?.1)?;
        }
        Ok(())
    }
}

// NOTE: implemented on a shared reference: redb's reads take `&self`, and a
// request's snapshot is shared (`crate::snapshot`).
impl<S, D> ReadView for &Tables<S, D>
where
    S: ReadableTable<&'static [u8; 32], &'static [u8]>,
    D: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        let Some(guard) = self
            .sessions
            .get(client.as_bytes())
            .map_err(storage(READ))?
        else {
            return Ok(None);
        };
        codec::decode_session(client, guard.value()).map(Some)
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        Ok(self
            .item_with_len(key)?
            .map(|(version, value, _)| (version, value)))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        let bytes = codec::item_key(key);
        match self.data.get(bytes.as_slice()).map_err(storage(READ))? {
            Some(guard) => Ok(codec::split_item(key, guard.value())?.0),
            None => Ok(0),
        }
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        self.version_at(client, &codec::names_version_key(client, package))
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        self.version_at(client, client.as_bytes())
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        self.data_keys(&codec::package_key(client, package), |key| {
            if let DataKey::Item(_, name) = key {
                names.push(name);
            }
            Ok(())
        })?;
        Ok(names)
    }

    fn package_state(
        &mut self,
        client: &ClientKey,
        package: &str,
    ) -> Result<(u64, bool), StoreError> {
        // One range over the package's keys: its items, then its name-set
        // version key, which sorts last. A package with many names ends the
        // walk early and looks its version up directly.
        const WALK: usize = 8;
        let prefix = codec::package_key(client, package);
        let bounds = codec::prefix_bounds(&prefix);
        let version_key = codec::names_version_key(client, package);
        let mut has_names = false;
        let range = self
            .data
            .range::<&[u8]>(codec::as_slices(&bounds))
            .map_err(storage(READ))?;
        for entry in range.take(WALK) {
            let (key, value) = entry.map_err(storage(READ))?;
            if key.value() == version_key.as_slice() {
                return Ok((codec::decode_version(client, value.value())?, has_names));
            }
            has_names = true;
        }
        if !has_names {
            // An empty range: no names and no version record.
            return Ok((0, false));
        }
        Ok((self.version_at(client, &version_key)?, true))
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut packages: Vec<String> = Vec::new();
        self.data_keys(client.as_bytes(), |key| {
            if let DataKey::Item(package, _) = key
                && packages.last() != Some(&package)
            {
                packages.push(package);
            }
            Ok(())
        })?;
        Ok(packages)
    }
}

/// The [`ReadView`] tables, writable.
type WritableTables<'t> =
    Tables<Table<'t, &'static [u8; 32], &'static [u8]>, Table<'t, &'static [u8], &'static [u8]>>;

/// Every table a commit writes, open in the committer's write transaction.
pub(crate) struct WriteTables<'t> {
    view: WritableTables<'t>,
    by_access: Table<'t, &'static [u8], ()>,
    by_created: Table<'t, &'static [u8], ()>,
    principals: Table<'t, &'static [u8], ()>,
    /// Whether sessions are indexed by creation (only with an absolute
    /// lifetime: nothing else reads that index).
    index_created: bool,
}

impl<'t> WriteTables<'t> {
    /// Open the tables in `txn`.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if a table cannot be opened.
    pub(crate) fn open(txn: &'t WriteTransaction, index_created: bool) -> Result<Self, StoreError> {
        Ok(WriteTables {
            view: Tables {
                sessions: txn.open_table(tables::SESSIONS).map_err(storage(WRITE))?,
                data: txn.open_table(tables::DATA).map_err(storage(WRITE))?,
            },
            by_access: txn.open_table(tables::BY_ACCESS).map_err(storage(WRITE))?,
            by_created: txn.open_table(tables::BY_CREATED).map_err(storage(WRITE))?,
            principals: txn.open_table(tables::PRINCIPALS).map_err(storage(WRITE))?,
            index_created,
        })
    }

    /// Bring the indexes from `old` to `new`, touching only entries that
    /// change (a touch moves one expiry entry and nothing else).
    fn reindex(
        &mut self,
        client: &ClientKey,
        old: Option<&SessionRecord>,
        new: Option<&SessionRecord>,
    ) -> Result<(), StoreError> {
        let access = |r: &SessionRecord| codec::time_key(r.last_access, client);
        update(&mut self.by_access, old.map(access), new.map(access), true)?;
        let created = |r: &SessionRecord| codec::time_key(r.created, client);
        // NOTE: removal is attempted even when not indexing, so entries
        // written under an absolute lifetime never go stale.
        update(
            &mut self.by_created,
            old.map(created),
            new.map(created),
            self.index_created,
        )?;
        let principal = |r: &SessionRecord| {
            r.principal
                .as_deref()
                .map(|p| codec::principal_key(p, client))
        };
        update(
            &mut self.principals,
            old.and_then(principal),
            new.and_then(principal),
            true,
        )
    }
}

/// Replace index entry `old` by `new` (either may be absent); nothing if
/// they are equal. `insert` false only removes.
fn update<K: AsRef<[u8]> + PartialEq>(
    index: &mut Table<'_, &'static [u8], ()>,
    old: Option<K>,
    new: Option<K>,
    insert: bool,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        index.remove(old.as_ref()).map_err(storage(WRITE))?;
    }
    if let (Some(new), true) = (new, insert) {
        index.insert(new.as_ref(), ()).map_err(storage(WRITE))?;
    }
    Ok(())
}

impl ReadView for WriteTables<'_> {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        (&self.view).session(client)
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        (&self.view).item(key)
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        (&self.view).item_version(key)
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        (&self.view).names_version(client, package)
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        (&self.view).packages_version(client)
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        (&self.view).names(client, package)
    }

    fn package_state(
        &mut self,
        client: &ClientKey,
        package: &str,
    ) -> Result<(u64, bool), StoreError> {
        (&self.view).package_state(client, package)
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        (&self.view).packages(client)
    }
}

impl WriteView for WriteTables<'_> {
    type Stored = Vec<u8>;

    fn put_session(
        &mut self,
        client: &ClientKey,
        old: Option<&SessionRecord>,
        new: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.reindex(client, old, Some(new))?;
        let bytes = codec::encode_session(new)?;
        self.view
            .sessions
            .insert(client.as_bytes(), bytes.as_slice())
            .map_err(storage(WRITE))?;
        Ok(())
    }

    fn delete_session(
        &mut self,
        client: &ClientKey,
        old: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.reindex(client, Some(old), None)?;
        self.view
            .sessions
            .remove(client.as_bytes())
            .map_err(storage(WRITE))?;
        Ok(())
    }

    fn take_session(&mut self, client: &ClientKey) -> Result<Taken, StoreError> {
        let decoded = match self
            .view
            .sessions
            .remove(client.as_bytes())
            .map_err(storage(WRITE))?
        {
            Some(bytes) => codec::decode_session(client, bytes.value()),
            None => return Ok(Taken::Absent),
        };
        match decoded {
            Ok(old) => {
                self.reindex(client, Some(&old), None)?;
                Ok(Taken::Record(old))
            }
            // NOTE: removed, not returned as an error: failing here would
            // fail every commit of the committer's batch (KS-1 in
            // docs/FUZZING.md), and nothing can read the record anyway.
            Err(err) => {
                tracing::warn!(%client, error = %err, "removing a session record that does not decode");
                Ok(Taken::Damaged)
            }
        }
    }

    fn wipe(&mut self, client: &ClientKey) -> Result<(), StoreError> {
        // Values and versions alike: everything under the client key.
        let bounds = codec::prefix_bounds(client.as_bytes());
        self.view
            .data
            .retain_in::<&[u8], _>(codec::as_slices(&bounds), |_, _| false)
            .map_err(storage(WRITE))?;
        Ok(())
    }

    fn put_item(
        &mut self,
        key: &ItemKey,
        version: u64,
        value: &Vec<u8>,
    ) -> Result<bool, StoreError> {
        let record = codec::encode_item(version, value);
        let bytes = codec::item_key(key);
        Ok(self
            .view
            .data
            .insert(bytes.as_slice(), record.as_slice())
            .map_err(storage(WRITE))?
            .is_some())
    }

    fn remove_item(&mut self, key: &ItemKey) -> Result<bool, StoreError> {
        let bytes = codec::item_key(key);
        Ok(self
            .view
            .data
            .remove(bytes.as_slice())
            .map_err(storage(WRITE))?
            .is_some())
    }

    fn set_names_version(
        &mut self,
        client: &ClientKey,
        package: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        let key = codec::names_version_key(client, package);
        let value = codec::encode_version(version);
        self.view
            .data
            .insert(key.as_slice(), value.as_slice())
            .map_err(storage(WRITE))?;
        Ok(())
    }

    fn set_packages_version(&mut self, client: &ClientKey, version: u64) -> Result<(), StoreError> {
        let value = codec::encode_version(version);
        self.view
            .data
            .insert(client.as_bytes().as_slice(), value.as_slice())
            .map_err(storage(WRITE))?;
        Ok(())
    }

    fn expired(
        &mut self,
        idle_before: Option<u64>,
        created_before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ClientKey>, StoreError> {
        let mut found = std::collections::BTreeSet::new();
        // Entries that do not decode, or that no session record matches (a
        // damaged or inconsistent file): removed here, so that they neither
        // fail the sweep's batch nor block the expired sessions behind them.
        let mut broken: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut scanned = 0usize;
        for (by_created, cutoff) in [(false, idle_before), (true, created_before)] {
            let Some(cutoff) = cutoff else { continue };
            let end = codec::time_key(cutoff, &ClientKey::from_bytes([0; 32]));
            let mut entries = Vec::new();
            {
                let index = if by_created {
                    &self.by_created
                } else {
                    &self.by_access
                };
                for entry in index.range(..end.as_slice()).map_err(storage(READ))? {
                    if found.len() + entries.len() >= limit || scanned >= limit.saturating_mul(4) {
                        break;
                    }
                    scanned += 1;
                    let (key, _) = entry.map_err(storage(READ))?;
                    entries.push(key.value().to_vec());
                }
            }
            for raw in entries {
                let Ok(client) = codec::client_of_index_key(&raw) else {
                    broken.push((by_created, raw));
                    continue;
                };
                let record = match self.session(&client) {
                    Ok(record) => record,
                    // The entry is the only trace of the session's times:
                    // drop it, and let the sweep remove the record.
                    Err(StoreError::CorruptRecord { .. }) => {
                        found.insert(client);
                        broken.push((by_created, raw));
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                let matches = record.is_some_and(|record| {
                    let time = if by_created {
                        record.created
                    } else {
                        record.last_access
                    };
                    raw == codec::time_key(time, &client)
                });
                if matches {
                    found.insert(client);
                } else {
                    broken.push((by_created, raw));
                }
            }
        }
        for (by_created, raw) in broken {
            tracing::warn!(
                index = if by_created {
                    "by_created"
                } else {
                    "by_access"
                },
                "removing a damaged or stale expiry index entry"
            );
            let index = if by_created {
                &mut self.by_created
            } else {
                &mut self.by_access
            };
            index.remove(raw.as_slice()).map_err(storage(WRITE))?;
        }
        Ok(found.into_iter().collect())
    }
}
