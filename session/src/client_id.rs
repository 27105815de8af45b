//! Client ids: the [`ClientId`] value, the [`IdFormat`] trait that mints and
//! verifies them, and Keel's default format, [`KeelIdFormat`].
//!
//! The wire format is documented on [`KeelIdFormat`].
//!
//! zope.session's 54-character format is [`ZopeIdFormat`](crate::ZopeIdFormat).

use std::{fmt, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::Mac;
use keel_store::ClientKey;
use subtle::ConstantTimeEq;

use crate::{
    KeyRing, SessionError, SharedKeyRing,
    key_ring::{HmacSha256, fill_random},
    verified_ids::VerifiedIds,
};

/// An opaque client id: the secret a client presents (in its cookie) to
/// reach its session.
///
/// Obtain one from a [`ClientIdManager`](crate::ClientIdManager) (which reads
/// only validly signed ids) or an [`IdFormat`]. [`Display`](fmt::Display)
/// and [`as_str`](ClientId::as_str) give the wire form, for the cookie;
/// `Debug` prints a placeholder, so ids do not leak into logs; at rest the
/// store only ever sees [`key`](ClientId::key), a SHA-256 hash of it.
/// Equality compares in constant time.
///
/// ```
/// use keel_session::{IdFormat, KeelIdFormat, KeyRing};
///
/// let format = KeelIdFormat::new(KeyRing::generate()?);
/// let id = format.mint()?;
/// assert_eq!(id.as_str().len(), 68);
/// assert_eq!(format!("{id:?}"), "ClientId(<redacted>)");
/// assert_eq!(id.key(), keel_store::ClientKey::from_client_id(id.as_str()));
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone, Eq)]
pub struct ClientId {
    /// Shared, not copied, by clones: a request clones its id a few times,
    /// and a remembered id (`verified_ids`) once per request.
    wire: Arc<str>,
    /// Hashed once, when the id is made: every session operation needs it.
    key: ClientKey,
}

impl ClientId {
    /// A client id with the wire form `id`, taken as it is: nothing checks a
    /// signature.
    ///
    /// For [`IdFormat`] implementations (after they signed or verified `id`)
    /// and for tests. Never call it with a value that came from a request:
    /// that would adopt a client-chosen id; use
    /// [`IdFormat::parse`] or a [`ClientIdManager`](crate::ClientIdManager).
    pub fn from_trusted(id: impl Into<String>) -> Self {
        let wire: Arc<str> = Arc::from(id.into());
        let key = ClientKey::from_client_id(&wire);
        ClientId { wire, key }
    }

    /// The wire form: the cookie value.
    pub fn as_str(&self) -> &str {
        &self.wire
    }

    /// The key the store files this client's session under: SHA-256 of the
    /// wire form. A database or an admin listing shows only this.
    pub fn key(&self) -> ClientKey {
        self.key
    }
}

impl PartialEq for ClientId {
    fn eq(&self, other: &Self) -> bool {
        self.wire.as_bytes().ct_eq(other.wire.as_bytes()).into()
    }
}

impl std::hash::Hash for ClientId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.wire.hash(state);
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientId(<redacted>)")
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire)
    }
}

/// How client ids are minted and verified: Keel's default [`KeelIdFormat`],
/// the zope-compatible [`ZopeIdFormat`](crate::ZopeIdFormat), or your own.
///
/// Object safe; a manager holds one as `Arc<dyn IdFormat>`.
///
/// Implementations must make [`verify`](IdFormat::verify) total (any string,
/// no panic), bound its cost before doing cryptography (check the length
/// first), compare secrets in constant time, and mint only ids made of
/// cookie-value characters (RFC 6265 `cookie-octet`).
pub trait IdFormat: fmt::Debug + Send + Sync {
    /// A short name for the format, such as `"keel"` or `"zope"`.
    fn name(&self) -> &'static str;

    /// A new, validly signed id from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`SessionError::Random`] if the OS random number generator fails.
    fn mint(&self) -> Result<ClientId, SessionError>;

    /// Whether `candidate` is an id this format signed (with a key it still
    /// holds).
    fn verify(&self, candidate: &str) -> bool;

    /// `candidate` as a [`ClientId`] if it [verifies](IdFormat::verify).
    fn parse(&self, candidate: &str) -> Option<ClientId> {
        self.verify(candidate)
            .then(|| ClientId::from_trusted(candidate))
    }

    /// A number that changes whenever ids that verified may have stopped
    /// verifying ([`KeelIdFormat`]: when a key left its
    /// [`SharedKeyRing`]). Whoever remembers verified ids (a
    /// [`CookieClientIdManager`](crate::CookieClientIdManager) does) reads
    /// it before verifying, remembers under it, and forgets what it
    /// remembered under another. A format whose verification never changes
    /// keeps the default, always 0.
    fn epoch(&self) -> u64 {
        0
    }

    /// Whether a validly signed id with no session behind it is still the
    /// client's id, kept when the client's first data is written. zope's
    /// rule ([`ZopeIdFormat`](crate::ZopeIdFormat) answers `true`): an id
    /// exists before any data, so a Zope site and Keel sharing a secret
    /// serve one domain side by side and a migration keeps every cookie.
    /// Keel's rule (the default, `false`): a signed id whose session is gone
    /// (expired, revoked, logged out) is replaced by a fresh one, so an id
    /// that leaked once never names a new session.
    fn adopts_unknown_ids(&self) -> bool {
        false
    }
}

/// The format version byte that starts every version-1 id.
const VERSION: u8 = 1;
/// Domain separation: what the tag is a tag of.
const CONTEXT: &[u8] = b"keel.client-id\0";
const NONCE_LEN: usize = 16;
const SIGNED_LEN: usize = 1 + 2 + NONCE_LEN;
const TAG_LEN: usize = 32;
const RAW_LEN: usize = SIGNED_LEN + TAG_LEN;

/// The length, in characters, of every Keel client id.
pub const KEEL_ID_LEN: usize = RAW_LEN / 3 * 4;

/// Keel's default client id format: 128 random bits and the key id, signed
/// with HMAC-SHA256 under a [`KeyRing`].
///
/// New ids are signed with the ring's newest key; ids signed by any key of
/// the ring verify, so a rotated ring keeps old sessions. To change the ring
/// of a running server, build the format from a [`SharedKeyRing`] and
/// [`replace`](SharedKeyRing::replace) its ring.
///
/// # Wire format (version 1)
///
/// A Keel client id is 68 characters of unpadded base64url (RFC 4648 §5,
/// alphabet `A-Z a-z 0-9 - _`, all of them legal in a cookie value without
/// quoting) encoding exactly 51 bytes:
///
/// | bytes | content |
/// |---|---|
/// | 0 | format version, `0x01` |
/// | 1..3 | id of the signing key in the [`KeyRing`], `u16` big-endian |
/// | 3..19 | nonce: 16 bytes (128 bits) from the operating system's CSPRNG |
/// | 19..51 | tag: HMAC-SHA256 under that key of `"keel.client-id\0"` followed by bytes 0..19 |
///
/// Because 51 is a multiple of 3 the encoding has no padding and no spare
/// bits, so every id has exactly one textual form (the store keys sessions
/// by a hash of the text). The tag covers the version and the key id, so
/// neither can be swapped; the `"keel.client-id\0"` prefix separates this
/// use of the key from any other. The tag is not truncated.
///
/// Verification is total and cheap, and allocates nothing: an input that is
/// not exactly 68 bytes is rejected before any decoding; it is then decoded
/// into a stack buffer, the version and key id are checked, and the tag is
/// compared in constant time (`hmac`'s `verify_slice`, built on `subtle`).
/// The HMAC state of every key is keyed once, when the ring is built.
/// [`parse`](IdFormat::parse) also remembers, per thread, the ids that
/// verified lately, so a returning client skips the HMAC check; a value it
/// has not seen verify is always checked in full, remembered ids are
/// compared in constant time, and every remembered id is forgotten when a
/// key leaves the ring ([`IdFormat::epoch`]).
///
/// ```
/// use keel_session::{IdFormat, KeelIdFormat, KeyRing};
///
/// let mut ring = KeyRing::generate()?;
/// let old = KeelIdFormat::new(ring.clone()).mint()?;
///
/// ring.rotate()?;
/// let format = KeelIdFormat::new(ring);
/// assert!(format.verify(old.as_str())); // still valid after rotation
/// assert!(format.verify(format.mint()?.as_str()));
/// assert!(!format.verify("client-chosen"));
///
/// let other = KeelIdFormat::new(KeyRing::generate()?);
/// assert!(!other.verify(old.as_str())); // foreign
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone, Debug)]
pub struct KeelIdFormat {
    ring: SharedKeyRing,
    /// Ids that verified lately, under the ring's epoch: an id that verified
    /// keeps verifying until a key leaves the ring.
    verified: Arc<VerifiedIds>,
}

impl KeelIdFormat {
    /// The format signing with, and verifying against, `ring`: a
    /// [`KeyRing`] (fixed) or a [`SharedKeyRing`] (replaceable while the
    /// format is in use).
    pub fn new(ring: impl Into<SharedKeyRing>) -> Self {
        KeelIdFormat {
            ring: ring.into(),
            verified: Arc::new(VerifiedIds::default()),
        }
    }

    /// The current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.load()
    }

    /// The shared ring this format signs with; replacing its ring changes
    /// this format's.
    pub fn shared_key_ring(&self) -> &SharedKeyRing {
        &self.ring
    }

    /// The id of the key that signed `candidate`, if it verifies.
    pub fn signing_key_id(&self, candidate: &str) -> Option<u16> {
        let raw = decode(candidate)?;
        let key_id = u16::from_be_bytes([raw[1], raw[2]]);
        let ring = self.ring.load();
        let key = ring.find(key_id)?;
        tag(key.mac(), &raw[..SIGNED_LEN])
            .verify_slice(&raw[SIGNED_LEN..])
            .is_ok()
            .then_some(key_id)
    }
}

impl IdFormat for KeelIdFormat {
    fn name(&self) -> &'static str {
        "keel"
    }

    fn mint(&self) -> Result<ClientId, SessionError> {
        let ring = self.ring.load();
        let key = ring.current();
        let mut raw = [0u8; RAW_LEN];
        raw[0] = VERSION;
        raw[1..3].copy_from_slice(&key.id().to_be_bytes());
        fill_random(&mut raw[3..SIGNED_LEN])?;
        let tag = tag(key.mac(), &raw[..SIGNED_LEN]).finalize().into_bytes();
        raw[SIGNED_LEN..].copy_from_slice(&tag);
        Ok(ClientId::from_trusted(URL_SAFE_NO_PAD.encode(raw)))
    }

    fn verify(&self, candidate: &str) -> bool {
        self.signing_key_id(candidate).is_some()
    }

    /// As [`IdFormat::parse`], answering an id this thread verified lately
    /// from memory: most requests come from clients seen a moment ago, and
    /// the HMAC check and the key's hash were most of reading the cookie.
    fn parse(&self, candidate: &str) -> Option<ClientId> {
        // NOTE: the epoch is read before the ring (`verify` loads it): an
        // answer of a ring that was replaced meanwhile is remembered under
        // the old epoch, so no later lookup returns it.
        let epoch = self.ring.epoch();
        if let Some(id) = self.verified.get(candidate.as_bytes(), epoch) {
            return Some(id);
        }
        let id = self
            .verify(candidate)
            .then(|| ClientId::from_trusted(candidate))?;
        self.verified.remember(candidate.as_bytes(), &id, epoch);
        Some(id)
    }

    fn epoch(&self) -> u64 {
        self.ring.epoch()
    }
}

/// `mac` fed with the domain separation prefix and the signed bytes.
fn tag(mut mac: HmacSha256, signed: &[u8]) -> HmacSha256 {
    mac.update(CONTEXT);
    mac.update(signed);
    mac
}

/// The 51 raw bytes of a well-formed version-1 id, or `None`. Checks the
/// length before decoding anything.
fn decode(candidate: &str) -> Option<[u8; RAW_LEN]> {
    if candidate.len() != KEEL_ID_LEN {
        return None;
    }
    let mut raw = [0u8; RAW_LEN];
    match URL_SAFE_NO_PAD.decode_slice(candidate.as_bytes(), &mut raw) {
        Ok(RAW_LEN) if raw[0] == VERSION => Some(raw),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> KeelIdFormat {
        KeelIdFormat::new(KeyRing::generate().unwrap())
    }

    #[test]
    fn a_minted_id_is_68_base64url_characters_and_verifies() {
        let format = format();
        let id = format.mint().unwrap();
        assert_eq!(KEEL_ID_LEN, 68);
        assert_eq!(id.as_str().len(), KEEL_ID_LEN);
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(format.verify(id.as_str()));
        assert_eq!(format.parse(id.as_str()), Some(id));
    }

    #[test]
    fn a_minted_id_carries_the_version_and_the_signing_key_id() {
        let mut ring = KeyRing::generate().unwrap();
        ring.rotate().unwrap();
        let format = KeelIdFormat::new(ring);
        let id = format.mint().unwrap();
        let raw = decode(id.as_str()).unwrap();
        assert_eq!(raw[0], 1);
        assert_eq!(u16::from_be_bytes([raw[1], raw[2]]), 2);
        assert_eq!(format.signing_key_id(id.as_str()), Some(2));
    }

    #[test]
    fn two_minted_ids_differ() {
        let format = format();
        assert_ne!(format.mint().unwrap(), format.mint().unwrap());
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let format = format();
        let id = format.mint().unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for pos in 0..KEEL_ID_LEN {
            let mut bytes = id.as_str().as_bytes().to_vec();
            let original = bytes[pos];
            let replacement = alphabet.iter().copied().find(|&c| c != original).unwrap();
            bytes[pos] = replacement;
            let forged = String::from_utf8(bytes).unwrap();
            assert!(!format.verify(&forged), "position {pos}");
        }
    }

    #[test]
    fn a_tag_over_another_version_or_key_id_does_not_verify() {
        let format = format();
        let ring = format.key_ring();
        let key = ring.current();
        // Signed correctly, but version 2: a future format is not accepted
        // by this one.
        let mut raw = [0u8; RAW_LEN];
        raw[0] = 2;
        raw[1..3].copy_from_slice(&key.id().to_be_bytes());
        let t = tag(key.mac(), &raw[..SIGNED_LEN]).finalize().into_bytes();
        raw[SIGNED_LEN..].copy_from_slice(&t);
        assert!(!format.verify(&URL_SAFE_NO_PAD.encode(raw)));
    }

    #[test]
    fn wrong_lengths_padding_and_other_alphabets_are_rejected() {
        let format = format();
        let id = format.mint().unwrap();
        let s = id.as_str();
        assert!(!format.verify(""));
        assert!(!format.verify(&s[..67]));
        assert!(!format.verify(&format!("{s}A")));
        assert!(!format.verify(&format!("{}=", &s[..67])));
        let standard = s.replace('-', "+").replace('_', "/");
        if standard != s {
            assert!(!format.verify(&standard));
        }
        // 68 bytes but not ASCII.
        assert!(!format.verify(&"é".repeat(34)));
    }

    #[test]
    fn client_id_debug_is_a_placeholder_and_display_is_the_wire_form() {
        let id = format().mint().unwrap();
        assert_eq!(format!("{id:?}"), "ClientId(<redacted>)");
        assert_eq!(format!("{id:#?}"), "ClientId(<redacted>)");
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(id.key(), ClientKey::from_client_id(id.as_str()));
    }

    #[test]
    fn the_format_debug_does_not_print_secrets() {
        let format = format();
        let shown = format!("{format:?}");
        assert!(shown.contains("KeelIdFormat"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn parse_answers_a_verified_id_from_memory_and_still_refuses_every_forgery() {
        let format = format();
        let id = format.mint().unwrap();
        let s = id.as_str();
        // The first parse verifies and remembers; the second is answered
        // from memory, on this thread and on another.
        for _ in 0..2 {
            let parsed = format.parse(s).unwrap();
            assert_eq!(parsed, id);
            assert_eq!(parsed.key(), id.key());
        }
        let elsewhere = std::thread::scope(|scope| scope.spawn(|| format.parse(s)).join().unwrap());
        assert_eq!(elsewhere, Some(id.clone()));
        // Every one-character change of a remembered id is refused: it is
        // looked up by its own hash and verified in full.
        for position in 0..s.len() {
            for replacement in ['A', 'b', '0', '-', '_'] {
                let mut forged: Vec<char> = s.chars().collect();
                if forged[position] == replacement {
                    continue;
                }
                forged[position] = replacement;
                let forged: String = forged.into_iter().collect();
                assert_eq!(format.parse(&forged), None, "accepted {forged}");
            }
        }
        // A remembered id does not verify under another format.
        let other = KeelIdFormat::new(KeyRing::generate().unwrap());
        assert_eq!(other.parse(s), None);
    }

    #[test]
    fn retiring_a_key_makes_remembered_ids_of_it_fail_on_every_thread() {
        let mut ring = KeyRing::generate().unwrap();
        let shared = SharedKeyRing::new(ring.clone());
        let format = KeelIdFormat::new(shared.clone());
        let old = format.mint().unwrap();
        // Remembered on this thread and on another.
        assert!(format.parse(old.as_str()).is_some());
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(format.parse(old.as_str()).is_some()));
        });
        let newest = ring.rotate().unwrap();
        assert!(!shared.replace(ring.clone()));
        let new = format.mint().unwrap();
        assert_eq!(format.signing_key_id(new.as_str()), Some(newest));
        assert!(
            format.parse(old.as_str()).is_some(),
            "rotation keeps old ids"
        );
        ring.retain_newest(1);
        assert!(shared.replace(ring));
        assert_eq!(format.parse(old.as_str()), None);
        std::thread::scope(|scope| {
            scope.spawn(|| assert_eq!(format.parse(old.as_str()), None));
        });
        assert_eq!(format.parse(new.as_str()), Some(new));
    }
}
