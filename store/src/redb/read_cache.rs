//! A thread's cache of what requests read from one snapshot.
//!
//! A snapshot never changes, so what one request read from it is what the
//! next request on the same snapshot would read: each thread keeps the
//! session records and small values its requests read, with its handle on
//! the snapshot (`crate::snapshot`), and drops them with the handle when a
//! new state is published. A hit costs a hash lookup and a clone instead of
//! two B-tree descents and a decode; on several cores the descents also
//! contended, each page fetch taking a shared reference count in redb's
//! page cache. ZODB's per-connection object cache plays the same part for
//! zope.session.
//!
//! Reads still go through the transaction's buffer, which records their
//! versions: validation is unchanged.

use std::{collections::HashMap, sync::Arc};

use crate::{
    ClientKey, StoreError, Value,
    engine::{
        records::{ItemKey, SessionRecord},
        view::ReadView,
    },
    redb::view::SnapshotTables,
};

/// Entries kept per kind; the cache is emptied when one kind fills up.
const MAX_ENTRIES: usize = 1024;

/// Values larger than this, encoded, are read from the snapshot each time
/// (the cache's memory stays under about `MAX_ENTRIES` KiB per thread).
const MAX_CACHED_VALUE_BYTES: usize = 1024;

/// What requests on one thread read from one snapshot.
///
/// NOTE: hashed with `foldhash`, not SipHash: the keys are hashes of
/// server-minted ids (a client cannot choose them) and the application's
/// package and item names, and a map holds at most `MAX_ENTRIES`. SipHash
/// of the keys showed in the profile of a read-only request.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    sessions: HashMap<ClientKey, Option<SessionRecord>, foldhash::fast::RandomState>,
    items: HashMap<ItemKey, Option<(u64, Arc<Value>)>, foldhash::fast::RandomState>,
}

/// A snapshot's tables, read through the calling thread's cache of that
/// snapshot when it has one.
pub(crate) struct CachedTables<'a> {
    pub(crate) tables: &'a SnapshotTables,
    pub(crate) cache: Option<&'a mut ReadCache>,
}

/// Insert into a bounded map: a full map is emptied first.
fn remember<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
    key: K,
    value: V,
) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

impl ReadView for CachedTables<'_> {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        let mut tables = self.tables;
        let Some(cache) = self.cache.as_deref_mut() else {
            return tables.session(client);
        };
        if let Some(record) = cache.sessions.get(client) {
            return Ok(record.clone());
        }
        let record = tables.session(client)?;
        remember(&mut cache.sessions, *client, record.clone());
        Ok(record)
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        let Some(cache) = self.cache.as_deref_mut() else {
            let mut tables = self.tables;
            return tables.item(key);
        };
        if let Some(item) = cache.items.get(key) {
            return Ok(item.clone());
        }
        let Some((version, value, encoded_len)) = self.tables.item_with_len(key)? else {
            remember(&mut cache.items, key.clone(), None);
            return Ok(None);
        };
        if encoded_len <= MAX_CACHED_VALUE_BYTES {
            remember(
                &mut cache.items,
                key.clone(),
                Some((version, Arc::clone(&value))),
            );
        }
        Ok(Some((version, value)))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        let mut tables = self.tables;
        tables.item_version(key)
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        let mut tables = self.tables;
        tables.names_version(client, package)
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        let mut tables = self.tables;
        tables.packages_version(client)
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        let mut tables = self.tables;
        tables.names(client, package)
    }

    fn package_state(
        &mut self,
        client: &ClientKey,
        package: &str,
    ) -> Result<(u64, bool), StoreError> {
        let mut tables = self.tables;
        tables.package_state(client, package)
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut tables = self.tables;
        tables.packages(client)
    }
}
