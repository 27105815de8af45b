//! The contract between the session layer and a session data container.

use std::{collections::BTreeMap, fmt, future::Future, pin::Pin, str::FromStr};

use keel_txn::Transaction;
use sha2::{Digest, Sha256};

use crate::{ExpiryPolicy, SessionValue, StoreError, Value};

/// A session's key at rest: the SHA-256 of its client id. A leaked database
/// file or admin listing therefore holds no usable cookie value.
///
/// Shown (and parsed) as 64 lower-case hex digits; this is the `key` of the
/// admin tooling.
///
/// ```
/// use keel_store::ClientKey;
/// let key = ClientKey::from_client_id("some-client-id");
/// let shown = key.to_string();
/// assert_eq!(shown.len(), 64);
/// assert_eq!(shown.parse::<ClientKey>().unwrap(), key);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey([u8; 32]);

impl ClientKey {
    /// The key of the session of client id `client_id`.
    pub fn from_client_id(client_id: &str) -> Self {
        ClientKey(Sha256::digest(client_id.as_bytes()).into())
    }

    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClientKey(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({self})")
    }
}

impl FromStr for ClientKey {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| StoreError::InvalidInput {
            what: "session key",
            reason,
        };
        if let Some((at, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{c:?} at position {} is not a hex digit (a session key is 64 hex digits, 0-9 and a-f)",
                s[..at].chars().count() + 1
            )));
        }
        let mut bytes = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut bytes).is_err() {
            return Err(invalid(format!(
                "a session key is 64 hex digits; this one has {}",
                s.len()
            )));
        }
        Ok(ClientKey(bytes))
    }
}

/// A read of a session started ahead of the request's handler: see
/// [`SessionContainer::preload`]. Resolves once the session is read into the
/// transaction; holds no thread while it waits.
pub type Preload = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// How current a session read ahead must be
/// ([`SessionContainer::preload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadAhead {
    /// Read it now. For requests that probably only read (safe HTTP
    /// methods): a read-only transaction that read one session is not
    /// validated at commit, so what it reads must be current.
    Fresh,
    /// A state the container remembers from an earlier request of this
    /// process may serve, saving the read. For requests that probably write
    /// (unsafe methods): every read is then validated at commit, a read-only
    /// transaction's too, so a stale state is a conflict and the request
    /// runs again on a fresh read.
    Remembered,
}

/// What the container knows about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last access time `L`, Unix seconds, as maintained by the touch rule.
    pub last_access: u64,
    /// The principal (user) attached to the session, if any.
    pub principal: Option<String>,
}

/// A session data container: stores each client's session (its record and,
/// per package, its names and values) transactionally.
///
/// Every data operation takes the request's [`Transaction`]; the container
/// joins it lazily and buffers all changes until commit, where they are
/// validated (optimistic concurrency), serialized and written atomically.
/// Expired sessions are never returned. See `docs/design.md` for the exact
/// semantics; the conformance suite in this crate's tests checks them for
/// every implementation.
pub trait SessionContainer: SessionAdmin + Send + Sync + fmt::Debug + 'static {
    /// The expiry policy of this container.
    fn expiry(&self) -> &ExpiryPolicy;

    /// The current time, Unix seconds, from the container's clock.
    fn now(&self) -> u64;

    /// Start reading session `client` into the transaction, so that the
    /// operations that follow find it without waiting: `None` when there is
    /// nothing to read ahead (the embedded containers read in place, a
    /// session already read needs no second read, and with
    /// [`ReadAhead::Remembered`] a remembered state may serve). The session layer awaits
    /// it before the handler runs, so a container that reads over the
    /// network never blocks a worker thread on a request's usual reads.
    ///
    /// # Errors
    /// [`StoreError::Transaction`] if the transaction cannot be joined; the
    /// future fails with the container's read errors.
    fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        let _ = (tx, client, read_ahead);
        Ok(None)
    }

    /// Whether a [`rename_session`](Self::rename_session) from `from` to
    /// `to` can commit in this container. Every container answers `true`
    /// except one on a Redis Cluster, where a commit runs on one hash slot
    /// and so a session moves only within its bucket (the first byte of its
    /// key). Whoever mints a new id for a session (`Session::cycle_id`)
    /// draws until every container accepts it (about 256 draws there).
    ///
    /// ```
    /// use keel_store::{ClientKey, RamContainer, SessionContainer};
    /// let container = RamContainer::new();
    /// let (a, b) = (ClientKey::from_client_id("a"), ClientKey::from_client_id("b"));
    /// assert!(container.can_rename(&a, &b));
    /// ```
    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        let _ = (from, to);
        true
    }

    /// `client` was just minted from fresh randomness (128 bits or more), so
    /// no session exists under it: a container may take it as absent without
    /// reading it. Its commit still checks that it is.
    ///
    /// # Errors
    /// [`StoreError::Transaction`] if the transaction cannot be joined.
    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        let _ = (tx, client);
        Ok(())
    }

    /// The live session `client`, or `None` if there is none or it expired.
    /// Counts as an access: applies the touch rule (a buffered, conflict-free
    /// write of the last-access time).
    ///
    /// # Errors
    /// [`StoreError::Storage`] on a read failure,
    /// [`StoreError::CorruptRecord`] if the stored record does not decode,
    /// [`StoreError::Transaction`] if the transaction cannot be joined,
    /// [`StoreError::Conflict`] (RAM container) if the session changed after
    /// the transaction began.
    fn session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<Option<SessionInfo>, StoreError>;

    /// Create the session `client` (last access = now), or return the live
    /// one.
    ///
    /// # Errors
    /// As for [`session`](Self::session).
    fn create_session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<SessionInfo, StoreError>;

    /// Delete the session and all its data; `false` if there was none.
    ///
    /// # Errors
    /// As for [`session`](Self::session).
    fn delete_session(&self, tx: &mut Transaction, client: &ClientKey) -> Result<bool, StoreError>;

    /// Move the session and its data from `from` to `to` (id cycling); `from`
    /// no longer exists afterwards. A value written into `from` by another
    /// transaction meanwhile makes the commit conflict (it is not lost).
    ///
    /// # Errors
    /// [`StoreError::NoSuchSession`] if `from` is not live,
    /// [`StoreError::SessionExists`] if `to` is; as for
    /// [`session`](Self::session).
    fn rename_session(
        &self,
        tx: &mut Transaction,
        from: &ClientKey,
        to: &ClientKey,
    ) -> Result<(), StoreError>;

    /// Attach `principal` to the session (or detach with `None`).
    ///
    /// # Errors
    /// [`StoreError::NoSuchSession`] if the session is not live;
    /// [`StoreError::InvalidInput`] for a principal over 65535 bytes; as for
    /// [`session`](Self::session).
    fn set_principal(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        principal: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The value `name` of package `package`, seeing this transaction's own
    /// writes; `None` if absent or the session is not live.
    ///
    /// # Errors
    /// As for [`session`](Self::session); [`StoreError::InvalidInput`] for a
    /// package id or name over 65535 bytes.
    fn get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError>;

    /// Touch the session `client`, as [`session`](Self::session) does, and
    /// read `name` of package `package`, as [`get`](Self::get) does: `None`
    /// if the session is not live or holds no such value.
    ///
    /// The usual read of a request, in one step: the containers of this
    /// crate look the session up once instead of twice.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    fn touch_and_get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        if self.session(tx, client)?.is_none() {
            return Ok(None);
        }
        self.get(tx, client, package, name)
    }

    /// Buffer `value` under `name` in package `package`. It is serialized at
    /// commit.
    ///
    /// # Errors
    /// [`StoreError::NoSuchSession`] if the session is not live;
    /// [`StoreError::InvalidInput`] for a package id or name over 65535
    /// bytes; as for [`session`](Self::session). Serialization errors come
    /// at commit, as [`StoreError::Unserializable`].
    fn insert(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
        value: SessionValue,
    ) -> Result<(), StoreError>;

    /// Remove `name` from package `package`; `false` if it was absent.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    fn remove(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<bool, StoreError>;

    /// The names in package `package`, sorted.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    fn names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Whether package `package` holds at least one name: `!names(..).is_empty()`
    /// (the default), which a container may answer without listing them.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    fn has_names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<bool, StoreError> {
        Ok(!self.names(tx, client, package)?.is_empty())
    }

    /// The packages of the session that hold at least one name, sorted.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    fn packages(&self, tx: &mut Transaction, client: &ClientKey)
    -> Result<Vec<String>, StoreError>;
}

/// A session as the admin tooling lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSummary {
    /// The session's key (hashed client id).
    pub key: ClientKey,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last access time, Unix seconds.
    pub last_access: u64,
    /// The attached principal, if any.
    pub principal: Option<String>,
    /// Bytes of stored values.
    pub bytes: u64,
    /// Whether it has expired (but not yet been swept).
    pub expired: bool,
}

/// A session with its data, for `keel sessions show`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionDetail {
    /// The summary.
    pub summary: SessionSummary,
    /// Package id -> name -> value.
    pub data: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Whole-container figures for `keel sessions stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerStats {
    /// Stored sessions, expired or not.
    pub sessions: u64,
    /// Of which expired but not yet swept.
    pub expired: u64,
    /// Bytes of stored values.
    pub value_bytes: u64,
    /// Size of the database file, if there is one.
    pub file_bytes: Option<u64>,
    /// Ages (now - created), seconds, of the live sessions.
    pub ages: Vec<u64>,
    /// Idle times (now - last access), seconds, of the live sessions.
    pub idle: Vec<u64>,
}

/// Session counts cheap enough to read often (metrics gauges): see
/// [`SessionAdmin::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionCounts {
    /// Stored sessions, expired or not.
    pub sessions: u64,
    /// Of which expired but not yet swept.
    pub expired: u64,
    /// Size of the database file, if there is one.
    pub file_bytes: Option<u64>,
}

impl From<&ContainerStats> for SessionCounts {
    fn from(stats: &ContainerStats) -> Self {
        SessionCounts {
            sessions: stats.sessions,
            expired: stats.expired,
            file_bytes: stats.file_bytes,
        }
    }
}

/// What one sweep call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Sessions deleted.
    pub removed: u64,
    /// Whether more expired sessions remain (the batch limit was reached).
    pub more: bool,
}

/// Administration of a container, outside request transactions. Every change
/// is committed durably on its own, and conflicts with requests in flight (a
/// deleted session is never brought back by one).
pub trait SessionAdmin {
    /// Up to `limit` sessions with keys after `after`, in key order.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::CorruptRecord`].
    fn list_sessions(
        &self,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<Vec<SessionSummary>, StoreError>;

    /// One session with all its data, expired or not.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    fn session_detail(&self, key: &ClientKey) -> Result<Option<SessionDetail>, StoreError>;

    /// Delete sessions; returns how many existed.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions);
    /// [`StoreError::CommitOutcomeUnknown`] if the durable commit failed
    /// partway; [`StoreError::Closed`] if the container shut down.
    fn delete_sessions(&self, keys: &[ClientKey]) -> Result<u64, StoreError>;

    /// The keys of the sessions attached to `principal`.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    fn sessions_of_principal(&self, principal: &str) -> Result<Vec<ClientKey>, StoreError>;

    /// Whole-container figures.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    fn stats(&self) -> Result<ContainerStats, StoreError>;

    /// How many sessions are stored and how many of those have expired,
    /// without reading every session: what the metrics gauges show. The
    /// default takes them from [`stats`](Self::stats), which reads every
    /// session; the redb container answers from the sessions table's length
    /// (kept by redb in the table's root, so exact and crash-safe) and the
    /// expired entries of its expiry indexes (as many as a sweep would
    /// remove), so its cost does not grow with the number of sessions.
    ///
    /// ```
    /// use keel_store::{ClientKey, RamContainer, SessionAdmin, SessionContainer};
    /// use keel_txn::TransactionManager;
    ///
    /// let container = RamContainer::new();
    /// let mut tx = TransactionManager::new().begin();
    /// container.create_session(&mut tx, &ClientKey::from_client_id("a"))?;
    /// tx.commit()?;
    /// assert_eq!(container.counts()?.sessions, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As for [`stats`](Self::stats).
    fn counts(&self) -> Result<SessionCounts, StoreError> {
        Ok(SessionCounts::from(&self.stats()?))
    }

    /// Delete up to `batch` expired sessions, reading only expired ones.
    ///
    /// # Errors
    /// As for [`delete_sessions`](Self::delete_sessions).
    fn sweep(&self, batch: usize) -> Result<SweepReport, StoreError>;

    /// A small durable setting (the signing key ring), if stored.
    ///
    /// # Errors
    /// As for [`list_sessions`](Self::list_sessions).
    fn load_setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Store a small durable setting, committed at once.
    ///
    /// # Errors
    /// As for [`delete_sessions`](Self::delete_sessions).
    fn store_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The setting `name`, storing `value` first if it has none: whoever
    /// stores first wins, and everyone gets the stored value. Several servers
    /// starting at once on one database thus agree on one signing key ring.
    ///
    /// The default reads, then stores: enough for a container only one
    /// process can open (redb, RAM). A shared database does it atomically.
    ///
    /// # Errors
    /// As for [`delete_sessions`](Self::delete_sessions).
    fn initialize_setting(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if let Some(stored) = self.load_setting(name)? {
            return Ok(stored);
        }
        self.store_setting(name, value)?;
        Ok(value.to_vec())
    }
}
