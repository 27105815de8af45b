//! A session as one read brought it from PostgreSQL: its record, its
//! name-set and package-set versions and its values, all from one snapshot.
//! A transaction reads a session through its image; the commit validates
//! every version it read against the rows themselves. After a commit, the
//! images it read with its change set applied (by the core's own `apply`)
//! are what the container remembers for the next writing request.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    ClientKey, StoreError, Value,
    engine::{
        apply::{self, ChangeSet},
        records::{self, ItemKey, SessionRecord},
        view::{ReadView, Taken, WriteView},
    },
};

/// One session as read (absent: no record, nothing else).
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionImage {
    pub(crate) record: Option<SessionRecord>,
    pub(crate) packages_version: u64,
    /// Package id -> version of its name set.
    pub(crate) names: BTreeMap<String, u64>,
    /// (package id, name) -> version and value.
    pub(crate) items: BTreeMap<(String, String), (u64, Arc<Value>)>,
}

impl SessionImage {
    fn names_of<'a>(&'a self, package: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.items
            .range((package.to_owned(), String::new())..)
            .take_while(move |((p, _), _)| p == package)
            .map(|((_, name), _)| name)
    }
}

/// A transaction's sessions as it read them, sorted by key.
pub(crate) type Images = Vec<(ClientKey, Arc<SessionImage>)>;

/// Reads a session that is not among a transaction's images yet.
pub(crate) trait Loader {
    /// Read `client` now (blocking the calling thread until it is read).
    ///
    /// # Errors
    /// The backend's errors ([`StoreError::Unavailable`],
    /// [`StoreError::Storage`], [`StoreError::CorruptRecord`]).
    fn load_now(&self, client: &ClientKey) -> Result<SessionImage, StoreError>;
}

/// A transaction's images, and how to get one it does not hold yet.
pub(crate) struct ImageView<'a> {
    pub(crate) images: &'a mut Images,
    pub(crate) loader: &'a dyn Loader,
}

impl ImageView<'_> {
    fn image(&mut self, client: &ClientKey) -> Result<&SessionImage, StoreError> {
        let at = match self.images.binary_search_by(|(key, _)| key.cmp(client)) {
            Ok(at) => at,
            Err(at) => {
                let image = self.loader.load_now(client)?;
                self.images.insert(at, (*client, Arc::new(image)));
                at
            }
        };
        Ok(&self.images[at].1)
    }
}

impl ReadView for ImageView<'_> {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.image(client)?.record.clone())
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        Ok(self
            .image(&key.client)?
            .items
            .get(&(key.package.clone(), key.name.clone()))
            .map(|(version, value)| (*version, Arc::clone(value))))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        Ok(self.item(key)?.map_or(0, |(version, _)| version))
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        Ok(self.image(client)?.names.get(package).copied().unwrap_or(0))
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        Ok(self.image(client)?.packages_version)
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.image(client)?.names_of(package).cloned().collect())
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut packages: Vec<String> = Vec::new();
        for (package, _) in self.image(client)?.items.keys() {
            if packages.last() != Some(package) {
                packages.push(package.clone());
            }
        }
        Ok(packages)
    }
}

/// Images a change set is applied to in memory, with the tid PostgreSQL
/// applied it as: what the rows of those sessions became, as far as the
/// transaction read them.
#[derive(Debug, Default)]
pub(crate) struct AppliedImages {
    pub(crate) images: BTreeMap<ClientKey, SessionImage>,
}

impl AppliedImages {
    /// `images` after `changes` was applied as commit `tid`.
    ///
    /// # Errors
    /// [`StoreError::CorruptRecord`] if a written value does not decode.
    pub(crate) fn after(
        images: &[(ClientKey, Arc<SessionImage>)],
        changes: &ChangeSet<Vec<u8>>,
        tid: u64,
    ) -> Result<Self, StoreError> {
        let mut applied = AppliedImages {
            images: images
                .iter()
                .map(|(client, image)| (*client, SessionImage::clone(image)))
                .collect(),
        };
        apply::apply(&mut applied, changes, tid)?;
        Ok(applied)
    }

    fn image(&mut self, client: &ClientKey) -> &mut SessionImage {
        self.images.entry(*client).or_default()
    }
}

impl ReadView for AppliedImages {
    fn session(&mut self, client: &ClientKey) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.image(client).record.clone())
    }

    fn item(&mut self, key: &ItemKey) -> Result<Option<(u64, Arc<Value>)>, StoreError> {
        Ok(self
            .image(&key.client)
            .items
            .get(&(key.package.clone(), key.name.clone()))
            .map(|(version, value)| (*version, Arc::clone(value))))
    }

    fn item_version(&mut self, key: &ItemKey) -> Result<u64, StoreError> {
        Ok(self.item(key)?.map_or(0, |(version, _)| version))
    }

    fn names_version(&mut self, client: &ClientKey, package: &str) -> Result<u64, StoreError> {
        Ok(self.image(client).names.get(package).copied().unwrap_or(0))
    }

    fn packages_version(&mut self, client: &ClientKey) -> Result<u64, StoreError> {
        Ok(self.image(client).packages_version)
    }

    fn names(&mut self, client: &ClientKey, package: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.image(client).names_of(package).cloned().collect())
    }

    fn packages(&mut self, client: &ClientKey) -> Result<Vec<String>, StoreError> {
        let mut packages: Vec<String> = Vec::new();
        for (package, _) in self.image(client).items.keys() {
            if packages.last() != Some(package) {
                packages.push(package.clone());
            }
        }
        Ok(packages)
    }
}

impl WriteView for AppliedImages {
    type Stored = Vec<u8>;

    fn put_session(
        &mut self,
        client: &ClientKey,
        _old: Option<&SessionRecord>,
        new: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.image(client).record = Some(new.clone());
        Ok(())
    }

    fn delete_session(
        &mut self,
        client: &ClientKey,
        _old: &SessionRecord,
    ) -> Result<(), StoreError> {
        self.image(client).record = None;
        Ok(())
    }

    fn take_session(&mut self, client: &ClientKey) -> Result<Taken, StoreError> {
        Ok(match self.image(client).record.take() {
            Some(record) => Taken::Record(record),
            None => Taken::Absent,
        })
    }

    fn wipe(&mut self, client: &ClientKey) -> Result<(), StoreError> {
        let image = self.image(client);
        image.items.clear();
        image.names.clear();
        image.packages_version = 0;
        Ok(())
    }

    fn put_item(
        &mut self,
        key: &ItemKey,
        version: u64,
        value: &Vec<u8>,
    ) -> Result<bool, StoreError> {
        let value = Arc::new(records::decode_value(key, value)?);
        Ok(self
            .image(&key.client)
            .items
            .insert((key.package.clone(), key.name.clone()), (version, value))
            .is_some())
    }

    fn remove_item(&mut self, key: &ItemKey) -> Result<bool, StoreError> {
        Ok(self
            .image(&key.client)
            .items
            .remove(&(key.package.clone(), key.name.clone()))
            .is_some())
    }

    fn set_names_version(
        &mut self,
        client: &ClientKey,
        package: &str,
        version: u64,
    ) -> Result<(), StoreError> {
        self.image(client).names.insert(package.to_owned(), version);
        Ok(())
    }

    fn set_packages_version(&mut self, client: &ClientKey, version: u64) -> Result<(), StoreError> {
        self.image(client).packages_version = version;
        Ok(())
    }

    /// Never asked: sweeping runs in PostgreSQL.
    fn expired(
        &mut self,
        _idle_before: Option<u64>,
        _created_before: Option<u64>,
        _limit: usize,
    ) -> Result<Vec<ClientKey>, StoreError> {
        Ok(Vec::new())
    }
}
