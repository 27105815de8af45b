//! The signing key ring of Keel's default client id format.
//!
//! A [`KeyRing`] holds one or more 32-byte secrets, each under a small key id
//! (`u16`). New ids are signed with the newest key; ids signed with any key
//! still in the ring verify. Rotating ([`KeyRing::rotate`]) adds a new newest
//! key, so secrets change without logging anybody out; dropping old keys
//! ([`KeyRing::retain_newest`]) is what finally invalidates the ids they
//! signed.
//!
//! Persistence format: see [`KeyRing`].

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::SessionError;

/// The HMAC-SHA256 instance keyed with one ring secret.
pub(crate) type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 8] = b"KEELRING";
const FORMAT_VERSION: u8 = 1;
const SECRET_LEN: usize = 32;
const ENTRY_LEN: usize = 2 + SECRET_LEN;
const HEADER_LEN: usize = MAGIC.len() + 2;
const CHECKSUM_LEN: usize = 32;

/// One signing key: its id, its secret, and the HMAC state already keyed with
/// the secret (so signing and verifying skip the key schedule).
#[derive(Clone)]
pub(crate) struct SigningKey {
    id: u16,
    secret: [u8; SECRET_LEN],
    keyed: HmacSha256,
}

impl SigningKey {
    fn new(id: u16, secret: [u8; SECRET_LEN]) -> Self {
        SigningKey {
            id,
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

/// Signing keys for Keel's default client id format: sign with the newest,
/// verify with all.
///
/// `Debug` shows the key ids only, never a secret.
///
/// # Persistence
///
/// The session layer keeps the ring in the store (setting `keel.key_ring`),
/// so a restart does not invalidate every session. [`KeyRing::to_bytes`]
/// writes, and [`KeyRing::from_bytes`] checks and reads, this encoding
/// (version 1, all integers big-endian):
///
/// | offset | size | content |
/// |---|---|---|
/// | 0 | 8 | magic `b"KEELRING"` |
/// | 8 | 1 | format version, `1` |
/// | 9 | 1 | key count `n`, `1..=`[`KeyRing::MAX_KEYS`] |
/// | 10 | `34 × n` | keys, oldest first: key id (`u16`), secret (32 bytes) |
/// | `10 + 34n` | 32 | SHA-256 of every byte before it |
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

    /// A ring with one new key (id 1) from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`SessionError::Random`] if the OS random number generator fails.
    pub fn generate() -> Result<Self, SessionError> {
        Ok(KeyRing {
            keys: vec![SigningKey::new(1, random_secret()?)],
        })
    }

    /// Add a new key from the CSPRNG and make it the signing key; returns its
    /// id. Ids signed by older keys keep verifying, except that the oldest
    /// key is dropped once the ring would exceed [`KeyRing::MAX_KEYS`].
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
        self.keys.push(SigningKey::new(id, secret));
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

    /// The ring in its persistent encoding (see [`KeyRing`]).
    /// It contains the secrets in clear.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.keys.len() + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        // NOTE: the ring holds 1..=MAX_KEYS (32) keys, so the count fits a u8.
        out.push(u8::try_from(self.keys.len()).unwrap_or(u8::MAX));
        for key in &self.keys {
            out.extend_from_slice(&key.id.to_be_bytes());
            out.extend_from_slice(&key.secret);
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Decode a ring written by [`to_bytes`](KeyRing::to_bytes).
    ///
    /// # Errors
    /// [`SessionError::InvalidKeyRing`] if `bytes` is not a complete, intact
    /// version-1 key ring (wrong magic, unknown version, bad length, zero or
    /// too many keys, duplicate key ids, checksum mismatch).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        let invalid = |reason| SessionError::InvalidKeyRing { reason };
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(invalid("too short"));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(invalid("not a Keel key ring (bad magic)"));
        }
        if bytes[MAGIC.len()] != FORMAT_VERSION {
            return Err(invalid("unknown format version (written by a newer Keel?)"));
        }
        let count = usize::from(bytes[MAGIC.len() + 1]);
        if count == 0 || count > Self::MAX_KEYS {
            return Err(invalid("key count out of range"));
        }
        let body_len = HEADER_LEN + ENTRY_LEN * count;
        if bytes.len() != body_len + CHECKSUM_LEN {
            return Err(invalid("length does not match the key count"));
        }
        let (body, checksum) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != checksum {
            return Err(invalid("checksum mismatch (corrupt)"));
        }
        let mut keys: Vec<SigningKey> = Vec::with_capacity(count);
        for entry in body[HEADER_LEN..].chunks_exact(ENTRY_LEN) {
            let (id, secret) = entry.split_at(2);
            let id = u16::from_be_bytes([id[0], id[1]]);
            let mut key = [0u8; SECRET_LEN];
            key.copy_from_slice(secret);
            if keys.iter().any(|known| known.id == id) {
                return Err(invalid("duplicate key id"));
            }
            keys.push(SigningKey::new(id, key));
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
                SigningKey::new(0, [1; 32]),
                SigningKey::new(u16::MAX, [2; 32]),
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
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN + CHECKSUM_LEN);
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
        bytes[MAGIC.len()] = 2;
        let err = KeyRing::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn duplicate_key_ids_are_rejected_even_with_a_valid_checksum() {
        let ring = KeyRing {
            keys: vec![SigningKey::new(7, [1; 32]), SigningKey::new(7, [2; 32])],
        };
        let err = KeyRing::from_bytes(&ring.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let ring = KeyRing {
            keys: vec![SigningKey::new(7, [0xAB; 32])],
        };
        let shown = format!("{ring:?} {ring:#?}");
        assert!(shown.contains("key_ids"));
        assert!(!shown.contains("171"), "{shown}"); // 0xAB in decimal
        assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    }
}
