//! zope.session's client id format, for sites moving from Zope to Keel.
//!
//! A zope id is 54 ASCII characters, `s + mac`:
//!
//! - `s` (27 characters) is [`digest_encode`] of a SHA-1 digest of random
//!   material. zope.session hashes `random.random()`, the time and the CPU
//!   time (about 53 bits of entropy); Keel hashes 32 bytes from the
//!   operating system's CSPRNG. The format is the same, so Zope verifies
//!   Keel's ids, and Keel verifies Zope's.
//! - `mac` (27 characters) is [`digest_encode`] of HMAC-SHA1, keyed with the
//!   secret's UTF-8 bytes, of the 27 **characters** of `s`.
//!
//! Verification follows zope.session (`getRequestId`): exactly 54 bytes,
//! and the recomputed `mac` must equal the id's last 27 characters; the
//! content of `s` is not checked beyond that. Unlike zope.session, the
//! comparison is in constant time.
//!
//! The HMAC key is the whole secret string. zope.session's default secret (a
//! 22-character `random.random()` float) has about 53 bits of entropy;
//! prefer a long random secret, and prefer the [`keel`](crate::KeelIdFormat)
//! format once the migration is done.

use std::{fmt, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::{
    ClientId, IdFormat, SessionError,
    key_ring::{fill_random, keyed_hmac},
};

/// The length of half a zope id: [`digest_encode`] of a 20-byte digest.
const HALF: usize = 27;
/// The length, in characters, of every zope client id.
pub const ZOPE_ID_LEN: usize = 2 * HALF;

/// zope.session's `digestEncode`: MIME base64 (a newline after every 76
/// characters, and at the end), minus the last two characters, with `+`
/// mapped to `-` and `/` to `.`.
///
/// For a 20-byte digest that is the 27 significant base64 characters. For
/// other lengths it reproduces zope's quirks exactly (padding is not always
/// removed, and inputs of 58 bytes or more keep an embedded newline).
///
/// ```
/// use keel_session::digest_encode;
///
/// assert_eq!(digest_encode(&[0; 20]), "A".repeat(27));
/// assert_eq!(digest_encode(&[0xff; 20]), format!("{}8", ".".repeat(26)));
/// assert_eq!(digest_encode(&[0]), "AA=");
/// ```
pub fn digest_encode(bytes: &[u8]) -> String {
    // MIME base64 as Python's `base64.encodebytes`: 57 input bytes (76
    // output characters) per line, each line ending in a newline.
    let mut mime = String::with_capacity(bytes.len().div_ceil(57) * 77);
    for line in bytes.chunks(57) {
        STANDARD.encode_string(line, &mut mime);
        mime.push('\n');
    }
    mime.truncate(mime.len().saturating_sub(2));
    mime.chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// [`digest_encode`] of a 20-byte digest, without allocating.
fn digest_encode_20(digest: &[u8]) -> [u8; HALF] {
    let mut b64 = [0u8; 28];
    let mut out = [0u8; HALF];
    // NOTE: 20 bytes encode to exactly 28 characters (27 plus one `=`), so
    // the buffer is large enough and `encode_slice` cannot fail; the
    // fallback (all zero bytes) never verifies against an ASCII mac.
    if digest.len() == 20 && STANDARD.encode_slice(digest, &mut b64).is_ok() {
        for (o, c) in out.iter_mut().zip(b64) {
            *o = match c {
                b'+' => b'-',
                b'/' => b'.',
                c => c,
            };
        }
    }
    out
}

/// zope.session's 54-character HMAC-SHA1 client id format.
///
/// An id is `s + mac`: `s` is 27 characters of [`digest_encode`] of a SHA-1
/// digest (Keel: of 32 bytes from the OS CSPRNG), `mac` is [`digest_encode`]
/// of HMAC-SHA1, keyed with the secret's UTF-8 bytes, of the characters of
/// `s`. Verification: exactly 54 bytes, and the recomputed `mac` equals the
/// last 27 characters, compared in constant time (zope compared with `!=`).
///
/// `Debug` never prints the secret.
///
/// ```
/// use keel_session::{IdFormat, ZopeIdFormat};
///
/// let format = ZopeIdFormat::new("some_secret");
/// // An id minted by zope.session with this secret:
/// assert!(format.verify("AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg"));
/// let id = format.mint()?;
/// assert_eq!(id.as_str().len(), 54);
/// assert!(format.verify(id.as_str()));
/// assert!(!format!("{format:?}").contains("some_secret"));
/// # Ok::<(), keel_session::SessionError>(())
/// ```
#[derive(Clone)]
pub struct ZopeIdFormat {
    /// HMAC-SHA1 already keyed with the secret's UTF-8 bytes.
    keyed: Hmac<Sha1>,
}

impl ZopeIdFormat {
    /// The format with zope.session's `secret` (any string, even empty, as
    /// zope allows; it is used as its UTF-8 bytes).
    pub fn new(secret: &str) -> Self {
        ZopeIdFormat {
            keyed: keyed_hmac(secret.as_bytes()),
        }
    }

    /// The format with the secret in the file at `path`: its content with
    /// surrounding whitespace trimmed (as `keel serve --secret-file`).
    ///
    /// # Errors
    /// [`SessionError::SecretFile`] if the file cannot be read, is not UTF-8,
    /// or holds only whitespace.
    pub fn from_secret_file(path: impl AsRef<Path>) -> Result<Self, SessionError> {
        let path = path.as_ref();
        let failed = |source| SessionError::SecretFile {
            path: path.to_path_buf(),
            source,
        };
        let content = std::fs::read_to_string(path).map_err(failed)?;
        let secret = content.trim();
        if secret.is_empty() {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the secret file is empty",
            )));
        }
        Ok(Self::new(secret))
    }

    /// The id zope.session makes from the 27-character random part `s`:
    /// `s` followed by the encoded HMAC of `s`. With a `s` minted elsewhere,
    /// this is zope's `generateUniqueId`; it does not check `s`.
    pub fn sign(&self, s: &str) -> ClientId {
        let mac = self.mac(s.as_bytes());
        let mut id = String::with_capacity(s.len() + HALF);
        id.push_str(s);
        id.extend(mac.iter().map(|&b| char::from(b)));
        ClientId::from_trusted(id)
    }

    fn mac(&self, s: &[u8]) -> [u8; HALF] {
        let mut mac = self.keyed.clone();
        mac.update(s);
        digest_encode_20(&mac.finalize().into_bytes())
    }
}

impl IdFormat for ZopeIdFormat {
    fn name(&self) -> &'static str {
        "zope"
    }

    /// zope's rule: see [`IdFormat::adopts_unknown_ids`].
    fn adopts_unknown_ids(&self) -> bool {
        true
    }

    fn mint(&self) -> Result<ClientId, SessionError> {
        let mut material = [0u8; 32];
        fill_random(&mut material)?;
        let s = digest_encode_20(&Sha1::digest(material));
        let mac = self.mac(&s);
        // NOTE: both halves are base64 alphabet bytes (ASCII), so mapping
        // each byte to the char of the same value is exact.
        let id = s
            .iter()
            .chain(&mac)
            .map(|&b| char::from(b))
            .collect::<String>();
        Ok(ClientId::from_trusted(id))
    }

    fn verify(&self, candidate: &str) -> bool {
        let bytes = candidate.as_bytes();
        if bytes.len() != ZOPE_ID_LEN {
            return false;
        }
        let (s, mac) = bytes.split_at(HALF);
        self.mac(s).ct_eq(mac).into()
    }
}

impl fmt::Debug for ZopeIdFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZopeIdFormat")
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A27: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAA";

    /// zope's `generateUniqueId` with its three random inputs given: the
    /// data text is the three floats formatted with 20 decimal places.
    fn zope_generate(format: &ZopeIdFormat, random: f64, time: f64, cpu: f64) -> String {
        let data = format!("{random:.20}{time:.20}{cpu:.20}");
        let s = digest_encode(&Sha1::digest(data.as_bytes()));
        format.sign(&s).as_str().to_owned()
    }

    #[test]
    fn digest_encode_of_20_zero_bytes_is_27_a() {
        assert_eq!(digest_encode(&[0; 20]), A27);
        assert_eq!(&digest_encode_20(&[0; 20]), A27.as_bytes());
    }

    #[test]
    fn digest_encode_of_20_ff_bytes_is_26_dots_and_8() {
        let expected = format!("{}8", ".".repeat(26));
        assert_eq!(digest_encode(&[0xff; 20]), expected);
        assert_eq!(&digest_encode_20(&[0xff; 20]), expected.as_bytes());
    }

    #[test]
    fn digest_encode_keeps_zopes_quirks_for_other_lengths() {
        assert_eq!(digest_encode(&[]), "");
        assert_eq!(digest_encode(&[0]), "AA=");
        // 58 bytes: two MIME lines; the first newline stays.
        let encoded = digest_encode(&[0; 58]);
        assert_eq!(encoded, format!("{}\nAA=", "A".repeat(76)));
    }

    #[test]
    fn the_fast_encoder_agrees_with_the_general_one() {
        for seed in 0u8..=255 {
            let digest: Vec<u8> = (0..20u8).map(|i| i.wrapping_mul(37) ^ seed).collect();
            assert_eq!(
                digest_encode_20(&digest).as_slice(),
                digest_encode(&digest).as_bytes()
            );
        }
    }

    #[test]
    fn vector_deterministic_generate_unique_id_with_some_secret() {
        let format = ZopeIdFormat::new("some_secret");
        let data = "0.500000000000000000001700000000.250000000000000000001.50000000000000000000";
        assert_eq!(
            format!("{:.20}{:.20}{:.20}", 0.5f64, 1_700_000_000.25f64, 1.5f64),
            data
        );
        let expected = "VEcVoTTmFPcl4Mru.ErZZSRbctM6Jc2bIciINTfkd3sqRupeTncaRE";
        let s = digest_encode(&Sha1::digest(data.as_bytes()));
        assert_eq!(format.sign(&s).as_str(), expected);
        assert_eq!(zope_generate(&format, 0.5, 1_700_000_000.25, 1.5), expected);
        assert!(format.verify(expected));
    }

    /// Every `(secret, s, id)` vector of the spec, section 2.3.
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "some_secret",
            A27,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg",
        ),
        (
            "some_secret",
            "abcdefghijklmnopqrstuvwxyzA",
            "abcdefghijklmnopqrstuvwxyzA6OADHIRy5-x.iDTF4Hcj.5SsS0E",
        ),
        (
            "secret",
            A27,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAqhxfRg-SpWtB.Wi2d0H1wh7vCFU",
        ),
        (
            "",
            A27,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAKfC9V8T3fHVUZUb9WOo-V.4Tq-8",
        ),
        (
            "zope-peer-bench-secret",
            A27,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAy0CnSLW.TokZbHeubUfukifskEc",
        ),
    ];

    #[test]
    fn every_spec_vector_is_signed_and_verified() {
        for &(secret, s, id) in VECTORS {
            let format = ZopeIdFormat::new(secret);
            assert_eq!(format.sign(s).as_str(), id, "secret {secret:?}");
            assert!(format.verify(id), "secret {secret:?}");
        }
    }

    #[test]
    fn a_vector_does_not_verify_under_another_secret() {
        for &(secret, _, id) in VECTORS {
            for &(other, _, _) in VECTORS {
                if other != secret {
                    assert!(
                        !ZopeIdFormat::new(other).verify(id),
                        "{secret:?} vs {other:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_non_ascii_secret_is_used_as_utf8() {
        let format = ZopeIdFormat::new("sécret");
        let mut mac = Hmac::<Sha1>::new_from_slice("sécret".as_bytes()).unwrap();
        mac.update(A27.as_bytes());
        let expected = format!("{A27}{}", digest_encode(&mac.finalize().into_bytes()));
        assert_eq!(format.sign(A27).as_str(), expected);
        assert!(format.verify(&expected));
        assert!(!ZopeIdFormat::new("secret").verify(&expected));
    }

    #[test]
    fn a_minted_id_has_the_zope_shape_and_verifies() {
        let format = ZopeIdFormat::new("some_secret");
        let id = format.mint().unwrap();
        let s = id.as_str();
        assert_eq!(s.len(), 54);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        );
        for last in [s.as_bytes()[26], s.as_bytes()[53]] {
            assert!(b"AEIMQUYcgkosw048".contains(&last), "{s}");
        }
        assert!(format.verify(s));
        assert_ne!(format.mint().unwrap(), id);
    }

    #[test]
    fn tampered_and_misshapen_ids_are_rejected() {
        let format = ZopeIdFormat::new("some_secret");
        let good = VECTORS[0].2;
        let mut last = good.to_owned();
        last.pop();
        last.push('h');
        assert!(!format.verify(&last));
        assert!(!format.verify(&"x".repeat(54)));
        assert!(!format.verify(&format!("{good}A")));
        assert!(!format.verify(&good[..53]));
        assert!(!format.verify(""));
        // 54 bytes but splitting at 27 falls inside a character.
        assert!(!format.verify(&format!("{}é{}", "A".repeat(26), "A".repeat(26))));
    }

    #[test]
    fn the_secret_file_content_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("keel-zope-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "  some_secret\n").unwrap();
        let format = ZopeIdFormat::from_secret_file(&path).unwrap();
        assert!(format.verify(VECTORS[0].2));

        std::fs::write(&path, " \n\t").unwrap();
        let err = ZopeIdFormat::from_secret_file(&path).unwrap_err();
        assert!(matches!(err, SessionError::SecretFile { .. }));
        assert!(err.to_string().contains("secret"), "{err}");

        let missing = dir.join("missing");
        assert!(matches!(
            ZopeIdFormat::from_secret_file(&missing),
            Err(SessionError::SecretFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let format = ZopeIdFormat::new("hunter2-secret");
        let shown = format!("{format:?} {format:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
