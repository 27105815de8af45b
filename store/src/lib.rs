//! Transactional session data containers for Keel: the durable
//! [`RedbContainer`] (one redb file, group commit) and the in-memory
//! [`RamContainer`], both behind the [`SessionContainer`] trait the session
//! layer uses. It is not an HTTP layer (that is `keel-session`) and not a
//! general-purpose database.
//!
//! ```
//! use keel_store::{ClientKey, RamContainer, SessionContainer, SessionValue};
//! use keel_txn::TransactionManager;
//!
//! let container = RamContainer::new();
//! let manager = TransactionManager::new();
//! let key = ClientKey::from_client_id("a client id");
//!
//! let mut tx = manager.begin();
//! container.create_session(&mut tx, &key)?;
//! container.insert(&mut tx, &key, "my.app", "count", SessionValue::new(1u32))?;
//! tx.commit()?; // serialized and validated here, all or nothing
//!
//! let mut tx = manager.begin();
//! let count = container.get(&mut tx, &key, "my.app", "count")?.expect("stored");
//! assert_eq!(count.to_typed::<u32>()?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a commit works
//! Containers join the request's [`keel_txn::Transaction`] lazily and buffer
//! every write as a live value. At commit each buffered value is serialized
//! into a self-describing [`Value`] tree (a value whose `Serialize` fails
//! fails the commit with [`StoreError::Unserializable`] before anything is
//! written anywhere), then validated against current record versions
//! (optimistic concurrency: a changed record is a retryable
//! [`StoreError::Conflict`]) and applied. The redb container sends its change
//! set to one committer thread that groups concurrent commits into one
//! durable redb commit. `docs/design.md` has the protocol and the on-disk
//! format.
//!
//! # Expiry
//! zope.session's timeout and resolution, exactly ([`ExpiryPolicy`]), with
//! an injectable [`Clock`]. Expired sessions are never returned;
//! [`SessionAdmin::sweep`] deletes them in bounded batches, reading only
//! expired index entries.

mod container;
mod engine;
mod error;
mod expiry;
#[cfg(feature = "postgres")]
mod postgres;
mod ram;
mod redb;
#[cfg(feature = "redis")]
mod redis;
mod session_value;
mod value;

pub use self::redb::{IntegrityReport, RedbContainer, RedbOptions};
#[cfg(feature = "redis")]
pub use self::redis::{RedisContainer, RedisOptions};
pub use container::{
    ClientKey, ContainerStats, Preload, ReadAhead, SessionAdmin, SessionContainer, SessionCounts,
    SessionDetail, SessionInfo, SessionSummary, SweepReport,
};
pub use error::StoreError;
pub use expiry::{Clock, ExpiryPolicy, ManualClock, SystemClock};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresContainer, PostgresOptions, RoundTrips};
pub use ram::RamContainer;
pub use session_value::SessionValue;
pub use value::{Value, ValueError, decode, encode, from_value, to_value};
