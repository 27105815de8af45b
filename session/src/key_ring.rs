//! The signing key ring of Keel's default client id format.
//!
//! A [`KeyRing`] holds one or more 32-byte secrets, each under a small key id
//! (`u16`) and with the time it was made. New ids are signed with the newest
//! key; ids signed with any key still in the ring verify. Rotating
//! ([`KeyRing::rotate`]) adds a new newest key, so secrets change without
//! logging anybody out; dropping old keys ([`KeyRing::retain_newest`]) is
//! what finally invalidates the ids they signed.
//!
//! A running server signs with a [`SharedKeyRing`], which it can replace
//! without a restart.
//!
//! Persistence format: see [`KeyRing`].

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SessionError;

/// The HMAC-SHA256 instance keyed with one ring secret.
pub(crate) type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 8] = b"KEELRING";
/// Keys without creation times.
const VERSION_1: u8 = 1;
/// Keys with creation times.
const VERSION_2: u8 = 2;
const SECRET_LEN: usize = 32;
const ENTRY_LEN_V1: usize = 2 + SECRET_LEN;
const ENTRY_LEN_V2: usize = 2 + 8 + SECRET_LEN;
const HEADER_LEN: usize = MAGIC.len() + 2;
const CHECKSUM_LEN: usize = 32;

/// One signing key: its id, when it was made, its secret, and the HMAC state
/// already keyed with the secret (so signing and verifying skip the key
/// schedule).
#[derive(Clone)]
pub(crate) struct SigningKey {
    id: u16,
    /// Unix seconds; `None` for a key read from a version-1 ring.
    created: Option<u64>,
    secret: [u8; SECRET_LEN],
    keyed: HmacSha256,
}

impl SigningKey {
    fn new(id: u16, created: Option<u64>, secret: [u8; SECRET_LEN]) -> Self {
        SigningKey {
            id,
            created,
            keyed: keyed_hmac(&secret),
            secret,
        }
    }

    /// The key id, written into every id this key signs.
    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    /// A fresh HMAC-SHA256 instance keyed with this key's secret.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// Whether `other` is the same key: same id and same secret.
    fn same_key(&self, other: &SigningKey) -> bool {
        self.id == other.id && bool::from(self.secret.ct_eq(&other.secret))
    }
}

/// An HMAC instance keyed with `key`.
pub(crate) fn keyed_hmac<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    // NOTE: invariant: HMAC accepts keys of every length (longer keys are
    // hashed, shorter ones padded), so `new_from_slice` cannot fail for the
    // `Hmac<_>` types this crate instantiates it with.
    #[allow(clippy::expect_used)]
    <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Fill `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), SessionError> {
    getrandom::fill(buf).map_err(|err| SessionError::Random { source: err.into() })
}

/// The setting under which [`KeyRing::load_or_create`] keeps the ring in a
/// store (`keel serve` and `keel keys` too).
pub const KEY_RING_SETTING: &str = "keel.key_ring";

/// Signing keys for Keel's default client id format: sign with the newest,
/// verify with all.
///
/// `Debug` shows the key ids only, never a secret.
///
/// # Persistence
///
/// [`KeyRing::load_or_create`] (which [`SessionLayer::from_container`](crate::SessionLayer::from_container)
/// and `keel serve` use) keeps the ring in the store, as the setting
/// [`KEY_RING_SETTING`], so a restart does not log every client out; a ring
/// from [`KeyRing::generate`] lives only as long as the process.
/// [`KeyRing::to_bytes`]
/// writes, and [`KeyRing::from_bytes`] checks and reads, this encoding
/// (all integers big-endian):
///
/// | offset | size | content |
/// |---|---|---|
/// | 0 | 8 | magic `b"KEELRING"` |
/// | 8 | 1 | format version, `2` |
/// | 9 | 1 | key count `n`, `1..=`[`KeyRing::MAX_KEYS`] |
/// | 10 | `42 × n` | keys, oldest first: key id (`u16`), creation time (`u64` Unix seconds, `0` = unknown), secret (32 bytes) |
/// | `10 + 42n` | 32 | SHA-256 of every byte before it |
///
/// Version 1, written by Keel before key creation times were recorded, is
/// the same without the creation time (`34 × n` bytes of keys); it still
/// loads, its keys' creation times unknown. A ring in which no key has a
/// known creation time (one read from version 1 and not changed since) is
/// written as version 1 again, byte for byte, so every valid encoding is the
/// only one of its ring; a version-2 ring without any known creation time is
/// therefore invalid.
///
/// Key ids are distinct. Anything else (truncation, a flipped bit, another
/// version, trailing bytes) is [`SessionError::InvalidKeyRing`]. The blob
/// holds the secrets in clear: protect it like the database file.
///
/// ```
/// use keel_session::KeyRing;
///
/// let mut ring = KeyRing::generate()?;
/// let first = ring.current_key_id();
/// let second = ring.rotate()?;
/// assert_ne!(first, second);
/// assert_eq!(ring.current_key_id(), second);
/// assert_eq!(ring.key_ids().collect::<Vec<_>>(), [first, second]);
/// assert!(ring.created(second).is_some());
///
/// // Persist and restore (the session layer stores it as `keel.key_ring`).
/// let restored = KeyRing::from_bytes(&ring.to_bytes())?;
/// assert_eq!(restored.to_bytes(), ring.to_bytes());
/// assert!(!format!("{ring:?}").contains("secret: ["));
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    /// Oldest first; the last one signs. Never empty, at most `MAX_KEYS`,
    /// ids distinct.
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// The most keys a ring holds; [`rotate`](KeyRing::rotate) drops the
    /// oldest key beyond this.
    pub const MAX_KEYS: usize = 32;

    /// The ring stored in `store` (the setting [`KEY_RING_SETTING`]), or,
    /// on the first start, a generated one that is stored there. Servers
    /// starting at once on a new shared database agree on one ring (the
    /// store keeps whichever was stored first), and a restart keeps every
    /// cookie valid. `keel serve` and `keel keys` use the same setting.
    ///
    /// ```
    /// use keel_session::KeyRing;
    /// use keel_store::RamContainer;
    ///
    /// let store = RamContainer::new();
    /// let first = KeyRing::load_or_create(&store)?;
    /// let again = KeyRing::load_or_create(&store)?;
    /// assert_eq!(first.to_bytes(), again.to_bytes());
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Store`] if the store fails;
    /// [`SessionError::InvalidKeyRing`] if what it holds is not a ring;
    /// [`SessionError::Random`] if the OS random number generator fails.
    pub fn load_or_create(store: &dyn keel_store::SessionAdmin) -> Result<Self, SessionError> {
        if let Some(bytes) = store.load_setting(KEY_RING_SETTING)? {
            return KeyRing::from_bytes(&bytes);
        }
        let fresh = KeyRing::generate()?;
        let stored = store.initialize_setting(KEY_RING_SETTING, &fresh.to_bytes())?;
        KeyRing::from_bytes(&stored)
    }

    /// A ring with one new key (id 1) from the operating system's CSPRNG,
    /// made now.
    ///
    /// # Errors
    /// [`SessionError::Random`] if the OS random number generator fails.
    ///
    /// A generated ring lives as long as the process unless stored: see
    /// [`load_or_create`](KeyRing::load_or_create).
    pub fn generate() -> Result<Self, SessionError> {
        Ok(KeyRing {
            keys: vec![SigningKey::new(1, now_unix(), random_secret()?)],
        })
    }

    /// Add a new key from the CSPRNG, made now, and make it the signing key;
    /// returns its id. Ids signed by older keys keep verifying, except that
    /// the oldest key is dropped once the ring would exceed
    /// [`KeyRing::MAX_KEYS`].
    ///
    /// # Errors
    /// [`SessionError::Random`] if the OS random number generator fails; the
    /// ring is then unchanged.
    pub fn rotate(&mut self) -> Result<u16, SessionError> {
        let secret = random_secret()?;
        let mut id = self.current().id.wrapping_add(1);
        // NOTE: terminates: the ring holds at most MAX_KEYS (< 2^16) ids.
        while self.find(id).is_some() {
            id = id.wrapping_add(1);
        }
        self.keys.push(SigningKey::new(id, now_unix(), secret));
        if self.keys.len() > Self::MAX_KEYS {
            self.keys.remove(0);
        }
        Ok(id)
    }

    /// Keep only the `n` newest keys (at least one: the signing key is never
    /// dropped). Ids signed by the dropped keys stop verifying.
    pub fn retain_newest(&mut self, n: usize) {
        let n = n.max(1);
        if self.keys.len() > n {
            self.keys.drain(..self.keys.len() - n);
        }
    }

    /// The id of the key that signs new client ids (the newest).
    pub fn current_key_id(&self) -> u16 {
        self.current().id
    }

    /// The ids of every key that verifies, oldest first.
    pub fn key_ids(&self) -> impl ExactSizeIterator<Item = u16> + '_ {
        self.keys.iter().map(|key| key.id)
    }

    /// How many keys the ring holds (at least one).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// When key `id` was made (to whole seconds); `None` if the ring holds
    /// no such key or the key came from a version-1 encoding, which did not
    /// record it.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use keel_session::KeyRing;
    ///
    /// let ring = KeyRing::generate()?;
    /// let made = ring.created(ring.current_key_id()).unwrap();
    /// assert!(SystemTime::now().duration_since(made).unwrap() < Duration::from_secs(60));
    /// assert_eq!(ring.created(999), None);
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    pub fn created(&self, id: u16) -> Option<SystemTime> {
        let seconds = self.find(id)?.created?;
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
    }

    /// The ring in its persistent encoding (see [`KeyRing`]).
    /// It contains the secrets in clear.
    pub fn to_bytes(&self) -> Vec<u8> {
        let dated = self.keys.iter().any(|key| key.created.is_some());
        let entry_len = if dated { ENTRY_LEN_V2 } else { ENTRY_LEN_V1 };
        let mut out = Vec::with_capacity(HEADER_LEN + entry_len * self.keys.len() + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.push(if dated { VERSION_2 } else { VERSION_1 });
        // NOTE: the ring holds 1..=MAX_KEYS (32) keys, so the count fits a u8.
        out.push(u8::try_from(self.keys.len()).unwrap_or(u8::MAX));
        for key in &self.keys {
            out.extend_from_slice(&key.id.to_be_bytes());
            if dated {
                out.extend_from_slice(&key.created.unwrap_or(0).to_be_bytes());
            }
            out.extend_from_slice(&key.secret);
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Decode a ring written by [`to_bytes`](KeyRing::to_bytes), by this
    /// version of Keel or an older one.
    ///
    /// # Errors
    /// [`SessionError::InvalidKeyRing`] if `bytes` is not a complete, intact
    /// version-1 or version-2 key ring (wrong magic, unknown version, bad
    /// length, zero or too many keys, duplicate key ids, checksum mismatch,
    /// a version-2 ring without a single creation time).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let invalid = |reason| SessionError::InvalidKeyRing { reason };
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(invalid("too short"));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(invalid("not a Keel key ring (bad magic)"));
        }
        let version = bytes[MAGIC.len()];
        let entry_len = match version {
            VERSION_1 => ENTRY_LEN_V1,
            VERSION_2 => ENTRY_LEN_V2,
            _ => return Err(invalid("unknown format version (written by a newer Keel?)")),
        };
        let count = usize::from(bytes[MAGIC.len() + 1]);
        if count == 0 || count > Self::MAX_KEYS {
            return Err(invalid("key count out of range"));
        }
        let body_len = HEADER_LEN + entry_len * count;
        if bytes.len() != body_len + CHECKSUM_LEN {
            return Err(invalid("length does not match the key count"));
        }
        let (body, checksum) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(invalid("checksum mismatch (corrupt)"));
        }
        let mut keys: Vec<SigningKey> = Vec::with_capacity(count);
        for entry in body[HEADER_LEN..].chunks_exact(entry_len) {
            let (id, rest) = entry.split_at(2);
            let id = u16::from_be_bytes([id[0], id[1]]);
            let (created, secret) = if version == VERSION_2 {
                let (created, secret) = rest.split_at(8);
                let mut seconds = [0u8; 8];
                seconds.copy_from_slice(created);
                let seconds = u64::from_be_bytes(seconds);
                ((seconds != 0).then_some(seconds), secret)
            } else {
                (None, rest)
            };
            let mut key = [0u8; SECRET_LEN];
            key.copy_from_slice(secret);
            if keys.iter().any(|known| known.id == id) {
                return Err(invalid("duplicate key id"));
            }
            keys.push(SigningKey::new(id, created, key));
        }
        if version == VERSION_2 && keys.iter().all(|key| key.created.is_none()) {
            return Err(invalid(
                "a version-2 ring without any creation time (it would be written as version 1)",
            ));
        }
        Ok(KeyRing { keys })
    }

    /// The signing (newest) key.
    pub(crate) fn current(&self) -> &SigningKey {
        // NOTE: the ring is never empty: every constructor makes at least one
        // key and `retain_newest` keeps at least one; `rotate` only adds
        // before it removes. `keys[len - 1]` is therefore in bounds.
        &self.keys[self.keys.len() - 1]
    }

    /// The key with id `id`, if the ring still holds it.
    pub(crate) fn find(&self, id: u16) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|key| key.id == id)
    }

    /// Whether every key of `self` is in `other` (same id, same secret): an
    /// id that verifies under `self` then verifies under `other`.
    fn is_kept_by(&self, other: &KeyRing) -> bool {
        self.keys
            .iter()
            .all(|key| other.find(key.id).is_some_and(|kept| kept.same_key(key)))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .field("current", &self.current().id)
            .finish_non_exhaustive()
    }
}

/// A [`KeyRing`] that can be replaced while the id formats built on it sign
/// and verify: how a running server takes up a rotated or retired ring
/// without a restart.
///
/// Clones share the ring. Build a [`KeelIdFormat`](crate::KeelIdFormat) or
/// a [`CookieConfig::keel`](crate::CookieConfig::keel) from a clone, keep
/// another, and [`replace`](SharedKeyRing::replace) the ring through it:
/// new ids are signed with the new ring's newest key from then on. When the
/// new ring lacks a key of the old one (keys were retired), every id the
/// formats and cookie managers remembered as verified is forgotten at once,
/// so an id signed only with a retired key stops verifying on the next
/// request.
///
/// Answering a remembered id costs one atomic load; signing or checking a
/// signature takes a read lock (never contended except during a
/// replacement).
///
/// ```
/// use keel_session::{IdFormat, KeelIdFormat, KeyRing, SharedKeyRing};
///
/// let shared = SharedKeyRing::new(KeyRing::generate()?);
/// let format = KeelIdFormat::new(shared.clone());
/// let old = format.mint()?;
/// assert!(format.parse(old.as_str()).is_some()); // verified, remembered
///
/// let mut ring = (*shared.load()).clone();
/// let newest = ring.rotate()?;
/// shared.replace(ring.clone());
/// assert_eq!(format.signing_key_id(format.mint()?.as_str()), Some(newest));
/// assert!(format.parse(old.as_str()).is_some()); // rotated: still valid
///
/// ring.retain_newest(1);
/// assert!(shared.replace(ring)); // a key left: remembered ids forgotten
/// assert!(format.parse(old.as_str()).is_none()); // retired: logged out
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone)]
pub struct SharedKeyRing {
    inner: Arc<Shared>,
}

struct Shared {
    ring: RwLock<Arc<KeyRing>>,
    /// Bumped whenever a replacement removes or changes a key: ids that
    /// verified before may not verify now.
    epoch: AtomicU64,
}

impl SharedKeyRing {
    /// A shared ring, starting with `ring`.
    pub fn new(ring: KeyRing) -> Self {
        SharedKeyRing {
            inner: Arc::new(Shared {
                ring: RwLock::new(Arc::new(ring)),
                epoch: AtomicU64::new(0),
            }),
        }
    }

    /// The current ring.
    pub fn load(&self) -> Arc<KeyRing> {
        Arc::clone(&self.inner.ring.read())
    }

    /// Make `ring` the current ring of every format built on this one.
    /// Returns whether it removed or changed a key of the old ring, in which
    /// case every remembered verified id was forgotten (ids signed only with
    /// a removed key no longer verify, from the next request on).
    pub fn replace(&self, ring: KeyRing) -> bool {
        let mut current = self.inner.ring.write();
        let removed = !current.is_kept_by(&ring);
        *current = Arc::new(ring);
        if removed {
            // NOTE: bumped after the new ring is in place and before the lock
            // is released: a reader that sees the new epoch sees the new ring
            // (it takes the lock after loading the epoch), and one that still
            // verified under the old ring remembers its answer under the old
            // epoch, which no lookup accepts any more.
            self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// The number of replacements so far that removed or changed a key.
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }
}

impl From<KeyRing> for SharedKeyRing {
    fn from(ring: KeyRing) -> Self {
        SharedKeyRing::new(ring)
    }
}

impl fmt::Debug for SharedKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyRing")
            .field("ring", &*self.load())
            .field("epoch", &self.epoch())
            .finish()
    }
}

/// Now, in Unix seconds (`None` for a clock before 1970, which would make
/// every creation time unknown rather than wrong).
fn now_unix() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
        .filter(|&seconds| seconds != 0)
}

fn random_secret() -> Result<[u8; SECRET_LEN], SessionError> {
    let mut secret = [0u8; SECRET_LEN];
    fill_random(&mut secret)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ring_has_one_key_with_id_one() {
        let ring = KeyRing::generate().unwrap();
        assert_eq!(ring.key_count(), 1);
        assert_eq!(ring.current_key_id(), 1);
    }

    #[test]
    fn two_generated_rings_have_different_secrets() {
        let a = KeyRing::generate().unwrap();
        let b = KeyRing::generate().unwrap();
        assert_ne!(a.current().secret, b.current().secret);
    }

    #[test]
    fn rotation_adds_a_newer_key_and_keeps_the_old_ones() {
        let mut ring = KeyRing::generate().unwrap();
        let old = ring.current().secret;
        let id = ring.rotate().unwrap();
        assert_eq!(id, 2);
        assert_eq!(ring.current_key_id(), 2);
        assert_eq!(ring.find(1).unwrap().secret, old);
        assert_ne!(ring.current().secret, old);
    }

    #[test]
    fn rotation_drops_the_oldest_key_beyond_the_maximum() {
        let mut ring = KeyRing::generate().unwrap();
        for _ in 0..KeyRing::MAX_KEYS {
            ring.rotate().unwrap();
        }
        assert_eq!(ring.key_count(), KeyRing::MAX_KEYS);
        assert!(ring.find(1).is_none());
        assert_eq!(ring.current_key_id(), 1 + KeyRing::MAX_KEYS as u16);
    }

    #[test]
    fn rotation_skips_key_ids_still_in_use_when_ids_wrap() {
        let mut ring = KeyRing {
            keys: vec![
                SigningKey::new(0, None, [1; 32]),
                SigningKey::new(u16::MAX, None, [2; 32]),
            ],
        };
        let id = ring.rotate().unwrap();
        assert_eq!(id, 1, "0 is still in the ring, so the id after 65535 is 1");
    }

    #[test]
    fn retain_newest_keeps_at_least_the_signing_key() {
        let mut ring = KeyRing::generate().unwrap();
        ring.rotate().unwrap();
        ring.rotate().unwrap();
        ring.retain_newest(2);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [2, 3]);
        ring.retain_newest(0);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn the_encoding_round_trips() {
        let mut ring = KeyRing::generate().unwrap();
        ring.rotate().unwrap();
        let bytes = ring.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN_V2 + CHECKSUM_LEN);
        assert_eq!(bytes[MAGIC.len()], VERSION_2);
        let back = KeyRing::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.current_key_id(), 2);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let bytes = KeyRing::generate().unwrap().to_bytes();
        for len in 0..bytes.len() {
            assert!(matches!(
                KeyRing::from_bytes(&bytes[..len]),
                Err(SessionError::InvalidKeyRing { .. })
            ));
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(matches!(
                    KeyRing::from_bytes(&bad),
                    Err(SessionError::InvalidKeyRing { .. })
                ));
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(KeyRing::from_bytes(&longer).is_err());
    }

    #[test]
    fn an_unknown_version_is_named_in_the_error() {
        let mut bytes = KeyRing::generate().unwrap().to_bytes();
        bytes[MAGIC.len()] = 3;
        let err = KeyRing::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn duplicate_key_ids_are_rejected_even_with_a_valid_checksum() {
        let ring = KeyRing {
            keys: vec![
                SigningKey::new(7, None, [1; 32]),
                SigningKey::new(7, None, [2; 32]),
            ],
        };
        let err = KeyRing::from_bytes(&ring.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let ring = KeyRing {
            keys: vec![SigningKey::new(7, None, [0xAB; 32])],
        };
        let shown = format!("{ring:?} {ring:#?}");
        assert!(shown.contains("key_ids"));
        assert!(!shown.contains("171"), "{shown}"); // 0xAB in decimal
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }

    /// A version-1 encoding, as Keel wrote it before creation times.
    fn version_1_bytes(keys: &[(u16, [u8; 32])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(1);
        out.push(keys.len() as u8);
        for (id, secret) in keys {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(secret);
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    #[test]
    fn a_version_1_ring_still_loads_with_unknown_creation_times() {
        let old = version_1_bytes(&[(1, [0x11; 32]), (7, [0x77; 32])]);
        let ring = KeyRing::from_bytes(&old).unwrap();
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), [1, 7]);
        assert_eq!(ring.current_key_id(), 7);
        assert_eq!(ring.created(1), None);
        assert_eq!(ring.created(7), None);
        assert_eq!(ring.find(7).unwrap().secret, [0x77; 32]);
        // Unchanged, it is written as it was read: older Keel still reads it.
        assert_eq!(ring.to_bytes(), old);
    }

    #[test]
    fn a_rotated_version_1_ring_is_written_as_version_2_and_keeps_its_old_keys() {
        let old = version_1_bytes(&[(1, [0x11; 32])]);
        let mut ring = KeyRing::from_bytes(&old).unwrap();
        let newest = ring.rotate().unwrap();
        let bytes = ring.to_bytes();
        assert_eq!(bytes[MAGIC.len()], VERSION_2);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN_V2 + CHECKSUM_LEN);
        let back = KeyRing::from_bytes(&bytes).unwrap();
        assert_eq!(back.created(1), None);
        assert_eq!(back.created(newest), ring.created(newest));
        assert!(back.created(newest).is_some());
        assert_eq!(back.find(1).unwrap().secret, [0x11; 32]);
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn creation_times_survive_the_encoding_to_the_second() {
        let ring = KeyRing {
            keys: vec![
                SigningKey::new(3, Some(1_700_000_000), [1; 32]),
                SigningKey::new(4, Some(1_700_000_600), [2; 32]),
            ],
        };
        let back = KeyRing::from_bytes(&ring.to_bytes()).unwrap();
        assert_eq!(
            back.created(3),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            back.created(4),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_600))
        );
    }

    #[test]
    fn a_version_2_ring_without_any_creation_time_is_rejected() {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[VERSION_2, 1, 0, 1]);
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&[5; 32]);
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        let err = KeyRing::from_bytes(&out).unwrap_err();
        assert!(err.to_string().contains("creation time"), "{err}");
    }

    #[test]
    fn replacing_a_shared_ring_forgets_verified_ids_only_when_a_key_leaves() {
        let mut ring = KeyRing::generate().unwrap();
        let shared = SharedKeyRing::new(ring.clone());
        assert_eq!(shared.epoch(), 0);
        ring.rotate().unwrap();
        assert!(!shared.replace(ring.clone()), "rotation keeps every key");
        assert_eq!(shared.epoch(), 0);
        assert_eq!(shared.load().current_key_id(), 2);
        ring.retain_newest(1);
        assert!(shared.replace(ring.clone()), "retiring removes key 1");
        assert_eq!(shared.epoch(), 1);
        // Same id, another secret: ids of the old secret stop verifying.
        let other = KeyRing {
            keys: vec![SigningKey::new(2, None, [9; 32])],
        };
        assert!(shared.replace(other));
        assert_eq!(shared.epoch(), 2);
    }

    #[test]
    fn a_shared_ring_debug_never_prints_a_secret() {
        let shared = SharedKeyRing::new(KeyRing {
            keys: vec![SigningKey::new(7, None, [0xAB; 32])],
        });
        let shown = format!("{shared:?} {shared:#?}");
        assert!(shown.contains("key_ids"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }
}
