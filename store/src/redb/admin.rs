//! The admin view of a redb container: listings, details, counts and the
//! settings read from a read transaction; deletions, sweeps and settings
//! written as jobs of the committer.

use std::{collections::BTreeMap, ops::Bound};

use redb::{ReadableTable, ReadableTableMetadata};

use crate::{
    ClientKey, ContainerStats, SessionAdmin, SessionCounts, SessionDetail, SessionSummary,
    StoreError, SweepReport, Value,
    engine::{
        admin::{StatsBuilder, summary},
        records::{self, ItemKey},
        view::ReadView,
    },
    redb::{
        READ, RedbContainer,
        codec::{self, DataKey},
        committer::{Done, Job},
        tables,
        view::{snapshot_tables, storage},
    },
};

/// The bytes of stored values of a session: each item record less its
/// version header.
fn value_bytes(
    data: &impl ReadableTable<&'static [u8], &'static [u8]>,
    client: &ClientKey,
) -> Result<u64, StoreError> {
    let bounds = codec::prefix_bounds(client.as_bytes());
    let mut bytes = 0;
    for entry in data
        .range::<&[u8]>(codec::as_slices(&bounds))
        .map_err(storage(READ))?
    {
        let (key, record) = entry.map_err(storage(READ))?;
        bytes += stored_value_len(key.value(), record.value())?;
    }
    Ok(bytes)
}

/// The bytes of the encoded value of a data record; 0 for a version record.
fn stored_value_len(key: &[u8], record: &[u8]) -> Result<u64, StoreError> {
    let (client, DataKey::Item(package, name)) = codec::split_data_key(key)? else {
        return Ok(0);
    };
    let item = ItemKey {
        client,
        package,
        name,
    };
    Ok(codec::split_item(&item, record)?.1.len() as u64)
}

impl SessionAdmin for RedbContainer {
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.guarded(|| {
            let now = self.clock.now();
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.as_bytes()));
            let mut out = Vec::new();
            for entry in tables
                .sessions
                .range::<&[u8; 32]>((start, Bound::Unbounded))
                .map_err(storage(READ))?
            {
                if out.len() >= limit {
                    break;
                }
                let (key, record) = entry.map_err(storage(READ))?;
                let client = ClientKey::from_bytes(*key.value());
                let record = codec::decode_session(&client, record.value())?;
                let bytes = value_bytes(&tables.data, &client)?;
                out.push(summary(&client, &record, bytes, &self.expiry, now));
            }
            Ok(out)
        })
    }

    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError> {
        self.guarded(|| {
            let now = self.clock.now();
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            let Some(record) = (&tables).session(key)? else {
                return Ok(None);
            };
            let mut data: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
            let mut bytes = 0;
            let bounds = codec::prefix_bounds(key.as_bytes());
            for entry in tables
                .data
                .range::<&[u8]>(codec::as_slices(&bounds))
                .map_err(storage(READ))?
            {
                let (item_key, item) = entry.map_err(storage(READ))?;
                let (client, DataKey::Item(package, name)) =
                    codec::split_data_key(item_key.value())?
                else {
                    continue;
                };
                let item_key = ItemKey {
                    client,
                    package,
                    name,
                };
                let (_, encoded) = codec::split_item(&item_key, item.value())?;
                bytes += encoded.len() as u64;
                let value = records::decode_value(&item_key, encoded)?;
                data.entry(item_key.package)
                    .or_default()
                    .insert(item_key.name, value);
            }
            Ok(Some(SessionDetail {
                summary: summary(key, &record, bytes, &self.expiry, now),
                data,
            }))
        })
    }

    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError> {
        match self
            .inner
            .committer
            .submit(Job::DeleteSessions(keys.to_vec()))?
        {
            Done::Deleted(count) => Ok(count),
            _ => Ok(0),
        }
    }

    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError> {
        self.guarded(|| {
            records::check_part("principal", principal)?;
            let txn = self.inner.read_txn()?;
            let index = txn.open_table(tables::PRINCIPALS).map_err(storage(READ))?;
            let bounds = codec::prefix_bounds(&codec::principal_prefix(principal));
            let mut keys = Vec::new();
            for entry in index
                .range::<&[u8]>(codec::as_slices(&bounds))
                .map_err(storage(READ))?
            {
                let (key, _) = entry.map_err(storage(READ))?;
                keys.push(codec::client_of_index_key(key.value())?);
            }
            Ok(keys)
        })
    }

    fn stats(&self) -> Result<ContainerStats, StoreError> {
        self.guarded(|| {
            let mut stats = StatsBuilder::new(self.expiry, self.clock.now());
            let txn = self.inner.read_txn()?;
            let tables = snapshot_tables(&txn)?;
            for entry in tables.sessions.iter().map_err(storage(READ))? {
                let (key, record) = entry.map_err(storage(READ))?;
                let client = ClientKey::from_bytes(*key.value());
                stats.add_session(&codec::decode_session(&client, record.value())?);
            }
            for entry in tables.data.iter().map_err(storage(READ))? {
                let (key, record) = entry.map_err(storage(READ))?;
                stats.add_value_bytes(stored_value_len(key.value(), record.value())?);
            }
            let file_bytes = if self.inner.is_file {
                std::fs::metadata(&self.inner.path).ok().map(|m| m.len())
            } else {
                None
            };
            Ok(stats.finish(file_bytes))
        })
    }

    /// The sessions table's length (redb keeps it in the table's root), and
    /// the expired entries of the expiry indexes (as many as a sweep would
    /// remove, not every session).
    fn counts(&self) -> Result<SessionCounts, StoreError> {
        self.guarded(|| {
            let txn = self.inner.read_txn()?;
            let sessions = txn
                .open_table(tables::SESSIONS)
                .map_err(storage(READ))?
                .len()
                .map_err(storage(READ))?;
            let now = self.clock.now();
            let mut expired = std::collections::BTreeSet::new();
            let cutoffs = [
                (tables::BY_ACCESS, self.expiry.idle_cutoff(now)),
                (tables::BY_CREATED, self.expiry.age_cutoff(now)),
            ];
            for (index, cutoff) in cutoffs {
                let Some(cutoff) = cutoff else { continue };
                let end = codec::time_key(cutoff, &ClientKey::from_bytes([0; 32]));
                let index = txn.open_table(index).map_err(storage(READ))?;
                for entry in index.range(..end.as_slice()).map_err(storage(READ))? {
                    let (key, _) = entry.map_err(storage(READ))?;
                    // NOTE: a session is expired by idleness or by age, or
                    // both: counted once.
                    if let Ok(client) = codec::client_of_index_key(key.value()) {
                        expired.insert(client);
                    }
                }
            }
            let file_bytes = if self.inner.is_file {
                std::fs::metadata(&self.inner.path).ok().map(|m| m.len())
            } else {
                None
            };
            Ok(SessionCounts {
                sessions,
                expired: expired.len() as u64,
                file_bytes,
            })
        })
    }

    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError> {
        let job = Job::Sweep {
            policy: self.expiry,
            now: self.clock.now(),
            batch,
        };
        match self.inner.committer.submit(job)? {
            Done::Swept(report) => Ok(report),
            _ => Ok(SweepReport::default()),
        }
    }

    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.guarded(|| {
            let txn = self.inner.read_txn()?;
            let settings = txn.open_table(tables::SETTINGS).map_err(storage(READ))?;
            Ok(settings
                .get(name)
                .map_err(storage(READ))?
                .map(|guard| guard.value().to_vec()))
        })
    }

    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let job = Job::StoreSetting {
            name: name.to_owned(),
            value: value.to_vec(),
        };
        self.inner.committer.submit(job).map(|_| ())
    }

    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if let Some(stored) = self.load_setting(name)? {
            return Ok(stored);
        }
        let job = Job::InitializeSetting {
            name: name.to_owned(),
            value: value.to_vec(),
        };
        match self.inner.committer.submit(job)? {
            Done::Initialized(stored) => Ok(stored),
            _ => Err(StoreError::Closed),
        }
    }
}
