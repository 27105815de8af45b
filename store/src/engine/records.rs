//! The records every backend stores, as the transactional core sees them:
//! a session record, the address of a value, the things a transaction
//! reads and validates, the limits on names, and the value codec (the
//! self-describing tree, postcard-encoded, that every backend stores, so the
//! admin tools decode any backend's values).

use serde::{Deserialize, Serialize};

use crate::{ClientKey, StoreError, Value, ValueError};

/// The longest package id, principal or item name, in bytes: their length
/// is stored as a u16.
pub(crate) const MAX_PART_LEN: usize = u16::MAX as usize;

/// A stored session (what redb's `keel_sessions` holds, postcard-encoded;
/// what a row of PostgreSQL's `sessions` holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// Tid of the commit that created, renamed or re-principaled it.
    pub(crate) version: u64,
    /// Creation second.
    pub(crate) created: u64,
    /// Last-access second `L` (touch rule).
    pub(crate) last_access: u64,
    /// Attached principal.
    pub(crate) principal: Option<String>,
}

/// The address of one value: session, package id, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ItemKey {
    pub(crate) client: ClientKey,
    pub(crate) package: String,
    pub(crate) name: String,
}

impl ItemKey {
    pub(crate) fn new(client: &ClientKey, package: &str, name: &str) -> Self {
        ItemKey {
            client: *client,
            package: package.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Something a transaction read, whose version is checked at commit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RecordKey {
    /// The session record (existence and generation).
    Session(ClientKey),
    /// The set of packages of a session that hold names.
    Packages(ClientKey),
    /// The set of names of one package.
    Names(ClientKey, String),
    /// One value.
    Item(ItemKey),
}

impl RecordKey {
    pub(crate) fn client(&self) -> &ClientKey {
        match self {
            RecordKey::Session(client)
            | RecordKey::Packages(client)
            | RecordKey::Names(client, _) => client,
            RecordKey::Item(key) => &key.client,
        }
    }

    /// What changed, for a conflict's message.
    pub(crate) fn describe(&self) -> String {
        match self {
            RecordKey::Session(_) => "the session record".to_owned(),
            RecordKey::Packages(_) => "the session's set of packages".to_owned(),
            RecordKey::Names(_, package) => format!("the names of package {package:?}"),
            RecordKey::Item(key) => {
                format!("value {:?} of package {:?}", key.name, key.package)
            }
        }
    }
}

/// Check that a package id, name or principal fits the format.
///
/// # Errors
/// [`StoreError::InvalidInput`] if it is longer than [`MAX_PART_LEN`] bytes.
pub(crate) fn check_part(what: &'static str, part: &str) -> Result<(), StoreError> {
    if part.len() > MAX_PART_LEN {
        return Err(StoreError::InvalidInput {
            what,
            reason: format!(
                "{} bytes long; at most {MAX_PART_LEN} are allowed",
                part.len()
            ),
        });
    }
    Ok(())
}

pub(crate) fn item_corrupt(key: &ItemKey, source: keel_txn::BoxError) -> StoreError {
    StoreError::CorruptRecord {
        what: format!(
            "value {:?} of package {:?} of session {}",
            key.name, key.package, key.client
        ),
        source,
    }
}

/// Encode a value tree the way it is stored.
pub(crate) fn encode_value(value: &Value) -> Vec<u8> {
    crate::value::encode(value)
}

/// Decode a stored value tree.
///
/// # Errors
/// [`StoreError::CorruptRecord`] naming the item.
pub(crate) fn decode_value(key: &ItemKey, bytes: &[u8]) -> Result<Value, StoreError> {
    crate::value::decode(bytes).map_err(|err: ValueError| item_corrupt(key, Box::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_long_parts_are_refused() {
        assert!(check_part("package id", &"x".repeat(MAX_PART_LEN)).is_ok());
        assert!(matches!(
            check_part("package id", &"x".repeat(MAX_PART_LEN + 1)),
            Err(StoreError::InvalidInput { .. })
        ));
    }
}
