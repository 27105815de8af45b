//! `SessionPkgData`: one package's mapping of names to values within a
//! client's session.

use std::{fmt, sync::Arc};

use keel_store::{ClientKey, SessionContainer, SessionValue};
use serde::{Serialize, de::DeserializeOwned};

use crate::{Session, SessionError};

/// The data of one package (an application's namespace, such as `"my.app"`)
/// in one client's session: a mapping from names to values.
///
/// Writes are buffered in the request's transaction as live values and
/// serialized at commit; reads see the transaction's own writes.
///
/// ```
/// # use keel_session::doc_support::session_for_docs;
/// let session = session_for_docs();
/// let cart = session.pkg("shop.cart")?;
/// cart.insert("items", vec!["apple".to_owned()])?;
/// assert_eq!(cart.get::<Vec<String>>("items")?, Some(vec!["apple".to_owned()]));
/// assert_eq!(cart.keys()?, ["items"]);
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone)]
pub struct SessionPkgData {
    session: Session,
    container: Arc<dyn SessionContainer>,
    key: ClientKey,
    package: String,
}

impl fmt::Debug for SessionPkgData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPkgData")
            .field("package", &self.package)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SessionPkgData {
    pub(crate) fn new(
        session: Session,
        container: Arc<dyn SessionContainer>,
        key: ClientKey,
        package: &str,
    ) -> Self {
        SessionPkgData {
            session,
            container,
            key,
            package: package.to_owned(),
        }
    }

    /// The package id.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The value stored under `name`, as a `T`.
    ///
    /// # Errors
    /// [`SessionError::WrongType`] naming the
    /// package and key if the stored value is not a `T`; other store errors.
    pub fn get<T: DeserializeOwned + 'static>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SessionError> {
        self.get_value(name)?
            .map(|value| typed(&value, &self.package, name))
            .transpose()
    }

    /// The value stored under `name`, untyped.
    ///
    /// # Errors
    /// Store errors.
    pub fn get_value(&self, name: &str) -> Result<Option<SessionValue>, SessionError> {
        self.session
            .with_tx(|tx| Ok(self.container.get(tx, &self.key, &self.package, name)?))
    }

    /// Store `value` under `name`. It is kept as a live value and serialized
    /// at commit; a value that cannot be serialized makes the commit fail
    /// (with [`StoreError::Unserializable`] naming package and key) and
    /// nothing of the transaction is written.
    ///
    /// # Errors
    /// Store errors (for example the session was deleted meanwhile).
    pub fn insert<T: Serialize + Send + Sync + 'static>(
        &self,
        name: &str,
        value: T,
    ) -> Result<(), SessionError> {
        self.session.with_tx(|tx| {
            Ok(self.container.insert(
                tx,
                &self.key,
                &self.package,
                name,
                SessionValue::new(value),
            )?)
        })
    }

    /// Remove `name`; `true` if it was there.
    ///
    /// # Errors
    /// Store errors.
    pub fn remove(&self, name: &str) -> Result<bool, SessionError> {
        self.session
            .with_tx(|tx| Ok(self.container.remove(tx, &self.key, &self.package, name)?))
    }

    /// Whether `name` holds a value.
    ///
    /// # Errors
    /// Store errors.
    pub fn contains(&self, name: &str) -> Result<bool, SessionError> {
        Ok(self.get_value(name)?.is_some())
    }

    /// The names holding values, sorted.
    ///
    /// # Errors
    /// Store errors.
    pub fn keys(&self) -> Result<Vec<String>, SessionError> {
        self.session
            .with_tx(|tx| Ok(self.container.names(tx, &self.key, &self.package)?))
    }

    /// How many names hold values.
    ///
    /// # Errors
    /// Store errors.
    pub fn len(&self) -> Result<usize, SessionError> {
        Ok(self.keys()?.len())
    }

    /// Whether no name holds a value.
    ///
    /// # Errors
    /// Store errors.
    pub fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.keys()?.is_empty())
    }

    /// Every (name, value) pair, sorted by name.
    ///
    /// # Errors
    /// Store errors.
    pub fn iter(&self) -> Result<Vec<(String, SessionValue)>, SessionError> {
        let mut pairs = Vec::new();
        for name in self.keys()? {
            if let Some(value) = self.get_value(&name)? {
                pairs.push((name, value));
            }
        }
        Ok(pairs)
    }
}

/// `value` as a `T`, or [`SessionError::WrongType`] naming `package` and
/// `name`.
pub(crate) fn typed<T: DeserializeOwned + 'static>(
    value: &SessionValue,
    package: &str,
    name: &str,
) -> Result<T, SessionError> {
    value
        .to_typed::<T>()
        .map_err(|source| SessionError::WrongType {
            package: package.to_owned(),
            key: name.to_owned(),
            source,
        })
}
