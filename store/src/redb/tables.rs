//! Every redb table of the on-disk format, in one place.
//!
//! The format is public API: `docs/design.md` ("On-disk format") documents
//! each table, and [`crate::codec`] the byte layout of keys and values.
//! Changing anything here that changes the bytes on disk needs a new
//! [`FORMAT_VERSION`].

use redb::TableDefinition;

/// The format version this build writes and the newest it reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// `format_version` (u32 LE) and `last_tid` (u64 LE).
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("keel_meta");

/// Key of the format version record in [`META`].
pub(crate) const META_FORMAT_VERSION: &str = "format_version";

/// Key of the last commit sequence number in [`META`].
pub(crate) const META_LAST_TID: &str = "last_tid";

/// Client key -> postcard `SessionRecord`.
pub(crate) const SESSIONS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("keel_sessions");

/// A session's data, all under its client key, so that one commit of one
/// session dirties few pages:
/// - client key -> the session's package-set version (u64 LE);
/// - client key ‖ package length (u16 BE) ‖ package ‖ name -> item version
///   (postcard varint) ‖ encoded value tree;
/// - client key ‖ package length (u16 BE) ‖ package ‖ 0xFF -> the package's
///   name-set version (u64 LE). 0xFF never occurs in UTF-8, so it is no name
///   and sorts after every name of the package.
pub(crate) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keel_data");

/// Last-access second (u64 BE) ‖ client key: the inactivity expiry index.
pub(crate) const BY_ACCESS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_by_access");

/// Creation second (u64 BE) ‖ client key: the absolute-lifetime expiry index.
pub(crate) const BY_CREATED: TableDefinition<&[u8], ()> = TableDefinition::new("keel_by_created");

/// Principal length (u16 BE) ‖ principal ‖ client key: sessions of a user.
pub(crate) const PRINCIPALS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_principals");

/// Small durable settings (the signing key ring).
pub(crate) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("keel_settings");
