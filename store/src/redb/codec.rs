//! Byte layouts of redb keys and records (the on-disk format of
//! `docs/design.md`).
//!
//! Integers in keys are big-endian so that byte order is numeric order: an
//! expiry sweep is then one range scan. Variable-length parts of a key are
//! prefixed with their length (u16 BE) unless they come last, so no two
//! distinct keys of one table can share bytes ambiguously.

use std::ops::Bound;

use crate::{
    ClientKey, StoreError,
    engine::records::{ItemKey, SessionRecord, item_corrupt},
};

fn push_part(out: &mut Vec<u8>, part: &str) {
    // NOTE: callers check lengths with `check_part` before anything is
    // buffered; saturating keeps a missed check from panicking (the key would
    // then simply never match).
    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// `client ‖ len(package) ‖ package`: the prefix of a package's items.
pub(crate) fn package_key(client: &ClientKey, package: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(34 + package.len());
    out.extend_from_slice(client.as_bytes());
    push_part(&mut out, package);
    out
}

/// `client ‖ len(package) ‖ package ‖ name`.
pub(crate) fn item_key(key: &ItemKey) -> Vec<u8> {
    let mut out = package_key(&key.client, &key.package);
    out.extend_from_slice(key.name.as_bytes());
    out
}

fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::CorruptRecord {
        what: what.into(),
        source: reason.into().into(),
    }
}

/// What a key of the session data table (`keel_data`) addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataKey {
    /// The session's package-set version.
    PackagesVersion,
    /// A package's name-set version.
    NamesVersion(String),
    /// A value: package id and name.
    Item(String, String),
}

/// The byte that ends a name-set version key (never part of UTF-8).
const NAMES_VERSION_MARK: u8 = 0xFF;

/// Parse a key of the session data table.
///
/// # Errors
/// [`StoreError::CorruptRecord`] if the bytes are no such key.
pub(crate) fn split_data_key(bytes: &[u8]) -> Result<(ClientKey, DataKey), StoreError> {
    let bad = || {
        corrupt(
            "data key",
            format!("malformed key of {} bytes", bytes.len()),
        )
    };
    let client = client_at(bytes, 0).ok_or_else(bad)?;
    if bytes.len() == 32 {
        return Ok((client, DataKey::PackagesVersion));
    }
    let len_bytes: [u8; 2] = bytes
        .get(32..34)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let package = bytes.get(34..34 + len).ok_or_else(bad)?;
    let package = std::str::from_utf8(package).map_err(|_| bad())?.to_owned();
    let rest = bytes.get(34 + len..).ok_or_else(bad)?;
    if rest == [NAMES_VERSION_MARK] {
        return Ok((client, DataKey::NamesVersion(package)));
    }
    let name = std::str::from_utf8(rest).map_err(|_| bad())?.to_owned();
    Ok((client, DataKey::Item(package, name)))
}

/// `client ‖ len(package) ‖ package ‖ 0xFF`: a package's name-set version.
pub(crate) fn names_version_key(client: &ClientKey, package: &str) -> Vec<u8> {
    let mut out = package_key(client, package);
    out.push(NAMES_VERSION_MARK);
    out
}

/// A version record (u64 LE).
pub(crate) fn encode_version(version: u64) -> [u8; 8] {
    version.to_le_bytes()
}

/// Decode a version record.
///
/// # Errors
/// [`StoreError::CorruptRecord`] if it is not 8 bytes.
pub(crate) fn decode_version(client: &ClientKey, bytes: &[u8]) -> Result<u64, StoreError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("a version of session {client}"), "not 8 bytes"))?;
    Ok(u64::from_le_bytes(raw))
}

fn client_at(bytes: &[u8], at: usize) -> Option<ClientKey> {
    let raw: [u8; 32] = bytes.get(at..at + 32)?.try_into().ok()?;
    Some(ClientKey::from_bytes(raw))
}

/// `second (u64 BE) ‖ client`: a key of an expiry index.
pub(crate) fn time_key(second: u64, client: &ClientKey) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&second.to_be_bytes());
    out[8..].copy_from_slice(client.as_bytes());
    out
}

/// The client key at the end of an index key (expiry or principal index).
///
/// # Errors
/// [`StoreError::CorruptRecord`] if the key is shorter than a client key.
pub(crate) fn client_of_index_key(bytes: &[u8]) -> Result<ClientKey, StoreError> {
    bytes
        .len()
        .checked_sub(32)
        .and_then(|at| client_at(bytes, at))
        .ok_or_else(|| corrupt("index key", format!("only {} bytes long", bytes.len())))
}

/// `len(principal) ‖ principal ‖ client`.
pub(crate) fn principal_key(principal: &str, client: &ClientKey) -> Vec<u8> {
    let mut out = principal_prefix(principal);
    out.extend_from_slice(client.as_bytes());
    out
}

/// `len(principal) ‖ principal`: the prefix of a principal's sessions.
pub(crate) fn principal_prefix(principal: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + principal.len() + 32);
    push_part(&mut out, principal);
    out
}

/// The bounds of every key that starts with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    // The smallest key greater than every key with this prefix: increment
    // the last byte that is not 0xFF and cut what follows.
    while let Some(last) = end.pop() {
        if last != u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// Borrow a pair of owned bounds as slices, for a redb range.
pub(crate) fn as_slices(bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (bound_slice(&bounds.0), bound_slice(&bounds.1))
}

fn bound_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Encode a session record.
///
/// # Errors
/// [`StoreError::CorruptRecord`] never in practice: postcard cannot fail on
/// this type, but its signature says it may.
pub(crate) fn encode_session(record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(record).map_err(|err| StoreError::CorruptRecord {
        what: "session record".to_owned(),
        source: Box::new(err),
    })
}

/// Decode a session record.
///
/// # Errors
/// [`StoreError::CorruptRecord`] naming the session.
pub(crate) fn decode_session(
    client: &ClientKey,
    bytes: &[u8],
) -> Result<SessionRecord, StoreError> {
    postcard::from_bytes(bytes).map_err(|err| StoreError::CorruptRecord {
        what: format!("session {client}"),
        source: Box::new(err),
    })
}

/// An item record: the item's version (postcard varint) followed by the
/// encoded value tree.
pub(crate) fn encode_item(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + value.len());
    let mut buf = [0u8; 10];
    // A u64 varint takes at most 10 bytes, so this cannot fail; if it ever
    // did, the empty prefix would decode as a corrupt record, not panic.
    let head: &[u8] = match postcard::to_slice(&version, &mut buf) {
        Ok(head) => head,
        Err(_) => &[],
    };
    out.extend_from_slice(head);
    out.extend_from_slice(value);
    out
}

/// Split an item record into its version and the encoded value.
///
/// # Errors
/// [`StoreError::CorruptRecord`] naming the item.
pub(crate) fn split_item<'a>(
    key: &ItemKey,
    bytes: &'a [u8],
) -> Result<(u64, &'a [u8]), StoreError> {
    postcard::take_from_bytes::<u64>(bytes).map_err(|err| item_corrupt(key, Box::new(err)))
}

/// Decode a u32 or u64 little-endian meta record.
pub(crate) fn meta_u64(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => bytes.try_into().ok().map(u32::from_le_bytes).map(u64::from),
        8 => bytes.try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(byte: u8) -> ClientKey {
        ClientKey::from_bytes([byte; 32])
    }

    #[test]
    fn data_keys_round_trip_and_never_collide() {
        let a = ItemKey::new(&client(1), "a", "bc");
        let b = ItemKey::new(&client(1), "ab", "c");
        assert_ne!(item_key(&a), item_key(&b));
        assert_eq!(
            split_data_key(&item_key(&a)).unwrap(),
            (client(1), DataKey::Item("a".into(), "bc".into()))
        );
        let empty = item_key(&ItemKey::new(&client(1), "a", ""));
        let version = names_version_key(&client(1), "a");
        assert_ne!(empty, version);
        assert_eq!(
            split_data_key(&version).unwrap(),
            (client(1), DataKey::NamesVersion("a".into()))
        );
        assert_eq!(
            split_data_key(client(1).as_bytes()).unwrap(),
            (client(1), DataKey::PackagesVersion)
        );
    }

    #[test]
    fn a_names_version_sorts_after_every_name_of_its_package() {
        let version = names_version_key(&client(1), "p");
        for name in ["", "a", "zzz", "\u{10FFFF}"] {
            assert!(item_key(&ItemKey::new(&client(1), "p", name)) < version);
        }
    }

    #[test]
    fn item_keys_of_a_package_share_its_prefix() {
        let key = item_key(&ItemKey::new(&client(7), "pkg", "name"));
        assert!(key.starts_with(&package_key(&client(7), "pkg")));
        assert!(!key.starts_with(&package_key(&client(7), "pk")));
    }

    #[test]
    fn time_keys_sort_by_time() {
        assert!(time_key(255, &client(9)) < time_key(256, &client(0)));
        assert_eq!(
            client_of_index_key(&time_key(1, &client(3))).unwrap(),
            client(3)
        );
    }

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        use std::ops::RangeBounds;
        let bounds = prefix_bounds(&[1, 0xFF]);
        assert_eq!(bounds.1, Bound::Excluded(vec![2]));
        assert!(bounds.contains(&vec![1, 0xFF, 0xFF, 0xFF]));
        assert!(!bounds.contains(&vec![2]));
        assert_eq!(prefix_bounds(&[0xFF]).1, Bound::Unbounded);
    }

    #[test]
    fn item_records_keep_version_and_value_apart() {
        let key = ItemKey::new(&client(1), "p", "n");
        let record = encode_item(300, b"tree");
        assert_eq!(split_item(&key, &record).unwrap(), (300, &b"tree"[..]));
        assert!(matches!(
            split_item(&key, &[0xFF]),
            Err(StoreError::CorruptRecord { .. })
        ));
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(split_data_key(&[1, 2, 3]).is_err());
        let mut key = client(1).as_bytes().to_vec();
        key.extend_from_slice(&[0, 9, b'x']);
        assert!(split_data_key(&key).is_err());
        assert!(decode_version(&client(1), &[1, 2]).is_err());
        assert!(client_of_index_key(&[0; 10]).is_err());
    }
}
