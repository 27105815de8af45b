//! A session as one read brought it from PostgreSQL: its record, its
//! name-set and package-set versions and its values, all from one snapshot.
//! A transaction reads a session through its image; the commit validates
//! every version it read against the rows themselves.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    ClientKey, StoreError, Value,
    engine::{
        records::{ItemKey, SessionRecord},
        view::ReadView,
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
    pub(crate) images: &'a mut Vec<(ClientKey, SessionImage)>,
    pub(crate) loader: &'a dyn Loader,
}

impl ImageView<'_> {
    fn image(&mut self, client: &ClientKey) -> Result<&SessionImage, StoreError> {
        let at = match self.images.binary_search_by(|(key, _)| key.cmp(client)) {
            Ok(at) => at,
            Err(at) => {
                let image = self.loader.load_now(client)?;
                self.images.insert(at, (*client, image));
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
