//! The seed corpus: meaningful first inputs for every target (valid and
//! subtly invalid cookies, value encodings, database records, operation
//! sequences), and an [`Encoder`] that writes structured inputs front to
//! back in the byte layout `arbitrary` reads them from.
//!
//! The seeds are checked in as `fuzz/corpus/<target>/seed-*`; regenerate them
//! with
//! `cargo run -p keel-tests --example write_seed_corpus`.
//! Inputs the fuzzer found, and regression inputs, sit beside them under
//! other names.

use std::{collections::BTreeMap, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use keel_store::{
    ClientKey, RedbContainer, SessionAdmin, SessionContainer, SessionValue, Value, encode, to_value,
};
use keel_txn::TransactionManager;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use sha2::Sha256;

use super::{
    cookie::{RING_KEYS, ring_bytes},
    model::{Op, Scenario},
    record::{
        Blob, Case, Client, DataBytes, DataKeyBytes, IndexKeyBytes, List, Part, PrincipalKeyBytes,
        SessionBytes, SettingName, Time, ValueBytes, known_client,
    },
    store_common::SimDisk,
    value::{Choice, Sample},
};

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The fuzz target.
    pub target: &'static str,
    /// The file name in `fuzz/corpus/<target>/`.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut all = Vec::new();
    let mut add = |target: &'static str, list: Vec<(&str, Vec<u8>)>| {
        for (name, bytes) in list {
            all.push(Seed {
                target,
                name: format!("seed-{name}"),
                bytes,
            });
        }
    };
    add("cookie_client_id", cookie_seeds());
    add("stored_value", value_seeds());
    add("stored_record", record_seeds());
    add("store_model", model_seeds());
    all
}

// ---------------------------------------------------------------------------
// The byte layout of `arbitrary`.
// ---------------------------------------------------------------------------

/// Writes values in the layout `arbitrary` (1.x) reads them: integers little
/// endian, `bool` and `Option` tags as one byte, an enum variant as the
/// `u32` that `derive(Arbitrary)` maps onto it (`(x * count) >> 32`).
#[derive(Debug, Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    /// Variant `index` of an enum of `count` variants.
    pub fn variant(&mut self, index: u32, count: u32) -> &mut Self {
        // The smallest x with (x * count) >> 32 == index.
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        self.u32(u32::try_from(x).unwrap_or(u32::MAX))
    }

    /// A `u8`.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    /// A `bool`.
    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(u8::from(value))
    }

    /// A `u16`.
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// An `i16`.
    pub fn i16(&mut self, value: i16) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// An `i32`.
    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A [`Blob`] (at most 255 bytes).
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
        self.u8(len);
        self.0.extend_from_slice(&bytes[..usize::from(len)]);
        self
    }
}

/// Values with a seed encoding.
pub trait Encode {
    /// Append `self` to `out`.
    fn encode(&self, out: &mut Encoder);
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Encoder) {
        out.bool(self.is_some());
        if let Some(value) = self {
            value.encode(out);
        }
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode(&self, out: &mut Encoder) {
        self.0.encode(out);
        self.1.encode(out);
    }
}

impl Encode for u8 {
    fn encode(&self, out: &mut Encoder) {
        out.u8(*self);
    }
}

impl Encode for u16 {
    fn encode(&self, out: &mut Encoder) {
        out.u16(*self);
    }
}

impl Encode for Blob {
    fn encode(&self, out: &mut Encoder) {
        out.blob(&self.0);
    }
}

impl<T: Encode> Encode for List<T> {
    fn encode(&self, out: &mut Encoder) {
        out.u8(u8::try_from(self.0.len()).unwrap_or(u8::MAX));
        for item in &self.0 {
            item.encode(out);
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Encoder) {
        const COUNT: u32 = 22;
        match *self {
            Op::Begin(s) => out.variant(0, COUNT).u8(s),
            Op::Create(s, c) => out.variant(1, COUNT).u8(s).u8(c),
            Op::Insert(s, c, n, v) => out.variant(2, COUNT).u8(s).u8(c).u8(n).u16(v),
            Op::Remove(s, c, n) => out.variant(3, COUNT).u8(s).u8(c).u8(n),
            Op::Get(s, c, n) => out.variant(4, COUNT).u8(s).u8(c).u8(n),
            Op::Touch(s, c) => out.variant(5, COUNT).u8(s).u8(c),
            Op::Delete(s, c) => out.variant(6, COUNT).u8(s).u8(c),
            Op::Names(s, c, p) => out.variant(7, COUNT).u8(s).u8(c).u8(p),
            Op::Packages(s, c) => out.variant(8, COUNT).u8(s).u8(c),
            Op::Rename(s, f, t) => out.variant(9, COUNT).u8(s).u8(f).u8(t),
            Op::SetPrincipal(s, c, p) => {
                out.variant(10, COUNT).u8(s).u8(c);
                p.encode(out);
                out
            }
            Op::Commit(s) => out.variant(11, COUNT).u8(s),
            Op::Abort(s) => out.variant(12, COUNT).u8(s),
            Op::ConflictingCommit(c, n, v) => out.variant(13, COUNT).u8(c).u8(n).u16(v),
            Op::Reopen => out.variant(14, COUNT),
            Op::Crash => out.variant(15, COUNT),
            Op::Advance(n) => out.variant(16, COUNT).u8(n),
            Op::Sweep(n) => out.variant(17, COUNT).u8(n),
            Op::AdminDelete(c) => out.variant(18, COUNT).u8(c),
            Op::StoreSetting(s, v) => out.variant(19, COUNT).u8(s).u8(v),
            Op::FailWritesAfter(n) => out.variant(20, COUNT).u8(n),
            Op::FailSyncsAfter(n) => out.variant(21, COUNT).u8(n),
        };
    }
}

impl Encode for Scenario {
    fn encode(&self, out: &mut Encoder) {
        out.bool(self.absolute_lifetime);
        for op in &self.ops {
            op.encode(out);
        }
    }
}

impl Encode for Client {
    fn encode(&self, out: &mut Encoder) {
        match self {
            Client::Known(n) => {
                out.variant(0, 2).u8(*n);
            }
            Client::Raw(bytes) => {
                out.variant(1, 2).0.extend_from_slice(bytes);
            }
        }
    }
}

impl Encode for Part {
    fn encode(&self, out: &mut Encoder) {
        match self {
            Part::Known(n) => {
                out.variant(0, 2).u8(*n);
            }
            Part::Text(blob) => {
                out.variant(1, 2).blob(&blob.0);
            }
        }
    }
}

impl Encode for Time {
    fn encode(&self, out: &mut Encoder) {
        match self {
            Time::Near(delta) => out.variant(0, 2).i16(*delta),
            Time::Any(second) => out.variant(1, 2).u64(*second),
        };
    }
}

impl Encode for SessionBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            SessionBytes::Valid(version, created, last_access, principal) => {
                out.variant(0, 2).u64(*version);
                created.encode(out);
                last_access.encode(out);
                principal.encode(out);
            }
            SessionBytes::Raw(blob) => {
                out.variant(1, 2).blob(&blob.0);
            }
        }
    }
}

impl Encode for DataKeyBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            DataKeyBytes::PackagesVersion(client) => {
                out.variant(0, 4);
                client.encode(out);
            }
            DataKeyBytes::NamesVersion(client, package) => {
                out.variant(1, 4);
                client.encode(out);
                package.encode(out);
            }
            DataKeyBytes::Item(client, package, name) => {
                out.variant(2, 4);
                client.encode(out);
                package.encode(out);
                name.encode(out);
            }
            DataKeyBytes::Raw(blob) => {
                out.variant(3, 4).blob(&blob.0);
            }
        }
    }
}

impl Encode for Choice {
    fn encode(&self, out: &mut Encoder) {
        // Only the variants without variable-length fields have a seed
        // encoding (strings and lists use `arbitrary`'s own layout).
        match self {
            Choice::Newtype(n) => {
                out.variant(1, 4).i32(*n);
            }
            _ => {
                out.variant(0, 4);
            }
        }
    }
}

impl Encode for ValueBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            ValueBytes::Number(n) => {
                out.variant(0, 3).u32(*n);
            }
            ValueBytes::Tree(choice) => {
                out.variant(1, 3);
                choice.encode(out);
            }
            ValueBytes::Raw(blob) => {
                out.variant(2, 3).blob(&blob.0);
            }
        }
    }
}

impl Encode for DataBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            DataBytes::Version(version) => {
                out.variant(0, 3).u64(*version);
            }
            DataBytes::Item(version, value) => {
                out.variant(1, 3).u64(*version);
                value.encode(out);
            }
            DataBytes::Raw(blob) => {
                out.variant(2, 3).blob(&blob.0);
            }
        }
    }
}

impl Encode for IndexKeyBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            IndexKeyBytes::Entry(time, client) => {
                out.variant(0, 2);
                time.encode(out);
                client.encode(out);
            }
            IndexKeyBytes::Raw(blob) => {
                out.variant(1, 2).blob(&blob.0);
            }
        }
    }
}

impl Encode for PrincipalKeyBytes {
    fn encode(&self, out: &mut Encoder) {
        match self {
            PrincipalKeyBytes::Entry(principal, client) => {
                out.variant(0, 2);
                principal.encode(out);
                client.encode(out);
            }
            PrincipalKeyBytes::Raw(blob) => {
                out.variant(1, 2).blob(&blob.0);
            }
        }
    }
}

impl Encode for SettingName {
    fn encode(&self, out: &mut Encoder) {
        match self {
            SettingName::KeyRing => {
                out.variant(0, 2);
            }
            SettingName::Other(blob) => {
                out.variant(1, 2).blob(&blob.0);
            }
        }
    }
}

impl Encode for Case {
    fn encode(&self, out: &mut Encoder) {
        out.u16(self.now);
        self.absolute_lifetime.encode(out);
        self.format_version.encode(out);
        self.last_tid.encode(out);
        self.sessions.encode(out);
        self.data.encode(out);
        self.by_access.encode(out);
        self.by_created.encode(out);
        self.principals.encode(out);
        self.settings.encode(out);
    }
}

/// The bytes of `value`.
pub fn encoded(value: &impl Encode) -> Vec<u8> {
    let mut out = Encoder::default();
    value.encode(&mut out);
    out.0
}

// ---------------------------------------------------------------------------
// cookie_client_id
// ---------------------------------------------------------------------------

/// A keel client id built from its specification (`KeelIdFormat`, wire
/// format version 1), independently of the implementation.
pub fn keel_id(version: u8, key_id: u16, secret: &[u8; 32], nonce: [u8; 16]) -> String {
    let mut raw = vec![version];
    raw.extend_from_slice(&key_id.to_be_bytes());
    raw.extend_from_slice(&nonce);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length");
    };
    mac.update(b"keel.client-id\0");
    mac.update(&raw);
    raw.extend_from_slice(&mac.finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// A valid keel id under the fixed ring's key `which` (0 or 1).
pub fn valid_keel_id(which: usize, nonce: u8) -> String {
    let (id, secret) = RING_KEYS[which];
    keel_id(1, id, &secret, [nonce; 16])
}

/// zope.session test vectors under the secret `some_secret`.
pub const ZOPE_IDS: [&str; 2] = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAArzWibqJJL6bXXXJl87b.uPpXhIg",
    "abcdefghijklmnopqrstuvwxyzA6OADHIRy5-x.iDTF4Hcj.5SsS0E",
];

fn cookie_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let k1 = valid_keel_id(0, 1);
    let k7 = valid_keel_id(1, 2);
    let mut tampered = k1.clone().into_bytes();
    tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap_or_default();
    let unknown_key = keel_id(1, 9, &RING_KEYS[0].1, [3; 16]);
    let version_2 = keel_id(2, 1, &RING_KEYS[0].1, [4; 16]);
    let standard_alphabet = k1.replace('-', "+").replace('_', "/");
    let zope = ZOPE_IDS[0];
    let text = |s: String| s.into_bytes();
    let mut non_utf8 = b"x=\xff\xfe; keel_session=".to_vec();
    non_utf8.extend_from_slice(k1.as_bytes());
    let mut nbsp = "keel_session=\u{a0}".as_bytes().to_vec();
    nbsp.extend_from_slice(k1.as_bytes());
    let mut control = b"keel_session=".to_vec();
    control.extend_from_slice(k1.as_bytes());
    control.extend_from_slice(b"\r\x00");
    let eight_junk = "keel_session=junk; ".repeat(8);
    let nine_junk = "keel_session=junk; ".repeat(9);
    vec![
        ("keel-valid-key1", text(format!("keel_session={k1}"))),
        ("keel-valid-key7", text(format!("keel_session={k7}"))),
        (
            "keel-unknown-key-id",
            text(format!("keel_session={unknown_key}")),
        ),
        ("keel-version-2", text(format!("keel_session={version_2}"))),
        (
            "keel-standard-alphabet",
            text(format!("keel_session={standard_alphabet}")),
        ),
        ("client-chosen", b"keel_session=mine".to_vec()),
        (
            "first-valid-wins",
            text(format!(
                "a=1; keel_session={tampered}; keel_session={k7}; keel_session={k1}"
            )),
        ),
        ("quoted", text(format!("keel_session=\"{k1}\""))),
        (
            "whitespace",
            text(format!("  keel_session  =  {k1}  ;;; x")),
        ),
        ("tabs", text(format!("keel_session=\t{k1}\t"))),
        ("nbsp", nbsp),
        ("two-headers", text(format!("other=1\nkeel_session={k1}"))),
        (
            "three-headers-invalid-first",
            text(format!("keel_session=x\n\nkeel_session={k7}")),
        ),
        (
            "eight-candidates-then-valid",
            text(format!("{eight_junk}keel_session={k1}")),
        ),
        (
            "nine-candidates-then-valid",
            text(format!("{nine_junk}keel_session={k1}")),
        ),
        (
            "oversized-then-valid",
            text(format!(
                "keel_session={}; keel_session={k1}",
                "A".repeat(4097)
            )),
        ),
        ("non-utf8", non_utf8),
        ("control-characters", control),
        ("trailing-equals", text(format!("keel_session={k1}="))),
        ("name-case", text(format!("KEEL_SESSION={k1}"))),
        ("no-pair", text(format!("keel_session; {k1}"))),
        (
            "empty-then-thirdparty",
            b"keel_session=; keel_session=front-server-id".to_vec(),
        ),
        ("zope-vector", text(format!("keel_session={zope}"))),
        (
            "zope-vector-2",
            text(format!("keel_session={}", ZOPE_IDS[1])),
        ),
        (
            "zope-split-in-char",
            text(format!(
                "keel_session={}é{}",
                "A".repeat(26),
                "A".repeat(26)
            )),
        ),
        ("bare-keel-id", text(k1.clone())),
        ("bare-zope-id", zope.as_bytes().to_vec()),
        ("key-ring", ring_bytes()),
    ]
}

// ---------------------------------------------------------------------------
// stored_value
// ---------------------------------------------------------------------------

fn tree_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    to_value(value).map(|t| encode(&t)).unwrap_or_default()
}

fn value_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut nested = Value::U64(1);
    for _ in 0..127 {
        nested = Value::Some(Box::new(nested));
    }
    let at_limit = encode(&nested);
    let too_deep = encode(&Value::Some(Box::new(nested)));
    let mut trailing = tree_bytes(&7u32);
    trailing.push(0);
    let sample = tree_bytes(&Sample::example());
    let truncated = sample[..sample.len() / 2].to_vec();
    vec![
        ("unit", tree_bytes(&())),
        ("bool", tree_bytes(&true)),
        ("i64-min", tree_bytes(&i64::MIN)),
        ("u64-max", tree_bytes(&u64::MAX)),
        ("i128-min", tree_bytes(&i128::MIN)),
        ("u128-max", tree_bytes(&u128::MAX)),
        ("f32", tree_bytes(&0.1f32)),
        (
            "f64-nan",
            encode(&Value::F64(f64::from_bits(0x7ff8_0000_dead_beef))),
        ),
        ("f64-negative-zero", tree_bytes(&-0.0f64)),
        ("char", tree_bytes(&'é')),
        ("string", tree_bytes(&"hello, session")),
        ("bytes", encode(&Value::Bytes(vec![0, 1, 2, 255]))),
        ("option", tree_bytes(&Some(Some(1u8)))),
        ("option-none-inside", tree_bytes(&Some(None::<u8>))),
        ("seq", tree_bytes(&vec![1u32, 2, 3])),
        (
            "map-strings",
            tree_bytes(&BTreeMap::from([("a", 1u32), ("b", 2)])),
        ),
        (
            "map-ints",
            tree_bytes(&BTreeMap::from([(1u8, "one"), (2, "two")])),
        ),
        (
            "map-duplicate-keys",
            encode(&Value::Map(vec![
                (Value::String("k".into()), Value::U64(1)),
                (Value::String("k".into()), Value::U64(2)),
            ])),
        ),
        ("enum-unit", tree_bytes(&Choice::Unit)),
        ("enum-newtype", tree_bytes(&Choice::Newtype(-5))),
        ("enum-tuple", tree_bytes(&Choice::Tuple(1, "t".into()))),
        (
            "enum-struct",
            tree_bytes(&Choice::Struct {
                a: None,
                b: vec![-1, 1],
            }),
        ),
        ("sample", sample),
        ("sample-truncated", truncated),
        ("depth-128", at_limit),
        ("depth-129", too_deep),
        ("trailing-byte", trailing),
        ("unknown-tag", vec![20]),
        ("non-canonical-varint", vec![3, 0x80, 0x00]),
        ("invalid-utf8", vec![9, 2, 0xc3, 0x28]),
        ("bool-2", vec![1, 2]),
        ("char-two-chars", vec![8, 2, b'a', b'b']),
        ("huge-seq-length", vec![13, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (
            "huge-string-length",
            vec![9, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'],
        ),
    ]
}

// ---------------------------------------------------------------------------
// stored_record
// ---------------------------------------------------------------------------

fn blob(bytes: &[u8]) -> Blob {
    Blob(bytes.to_vec())
}

fn empty_case() -> Case {
    Case {
        now: 100,
        absolute_lifetime: None,
        format_version: None,
        last_tid: None,
        sessions: List(Vec::new()),
        data: List(Vec::new()),
        by_access: List(Vec::new()),
        by_created: List(Vec::new()),
        principals: List(Vec::new()),
        settings: List(Vec::new()),
    }
}

/// One well-formed session of known client 0 with two values, its versions
/// and index entries, as the container writes them.
fn consistent_case() -> Case {
    let client = Client::Known(0);
    Case {
        sessions: List(vec![(
            client,
            SessionBytes::Valid(5, Time::Near(-50), Time::Near(0), Some(Part::Known(1))),
        )]),
        data: List(vec![
            (DataKeyBytes::PackagesVersion(client), DataBytes::Version(5)),
            (
                DataKeyBytes::NamesVersion(client, Part::Known(0)),
                DataBytes::Version(5),
            ),
            (
                DataKeyBytes::Item(client, Part::Known(0), Part::Known(0)),
                DataBytes::Item(5, ValueBytes::Number(42)),
            ),
            (
                DataKeyBytes::Item(client, Part::Known(0), Part::Known(1)),
                DataBytes::Item(4, ValueBytes::Tree(Choice::Newtype(-3))),
            ),
        ]),
        by_access: List(vec![IndexKeyBytes::Entry(Time::Near(0), client)]),
        principals: List(vec![PrincipalKeyBytes::Entry(Part::Known(1), client)]),
        ..empty_case()
    }
}

/// The records a real container writes, read back raw: client 0 with a
/// principal and values in two packages, client 1 renamed from another
/// session, and a stored key ring.
fn real_case() -> Case {
    const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("keel_sessions");
    const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keel_data");
    const BY_ACCESS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_by_access");
    const PRINCIPALS: TableDefinition<&[u8], ()> = TableDefinition::new("keel_principals");

    let disk = SimDisk::new();
    let clock = keel_store::ManualClock::new(super::record::BASE_NOW);
    let container = match RedbContainer::open_with(
        "seed",
        disk.options().with_clock(Arc::new(clock.clone())),
    ) {
        Ok(container) => container,
        Err(err) => panic!("seed database: {err}"),
    };
    let manager = TransactionManager::new();
    let (a, b, c) = (known_client(0), known_client(1), known_client(2));
    let run = |work: &dyn Fn(&mut keel_txn::Transaction) -> Result<(), keel_store::StoreError>| {
        let mut tx = manager.begin();
        if let Err(err) = work(&mut tx) {
            panic!("seed database: {err}");
        }
        if let Err(err) = tx.commit() {
            panic!("seed database: {err}");
        }
    };
    run(&|tx| {
        container.create_session(tx, &a)?;
        container.set_principal(tx, &a, Some("p1"))?;
        container.insert(tx, &a, "p0", "p0", SessionValue::new(42u32))?;
        container.insert(tx, &a, "p1", "p2", SessionValue::new(Choice::Newtype(-3)))?;
        container.create_session(tx, &c)?;
        container.insert(tx, &c, "p2", "p1", SessionValue::new("text"))
    });
    clock.advance(30);
    run(&|tx| container.rename_session(tx, &c, &b));
    if let Err(err) = container.store_setting(super::record::KEY_RING_SETTING, &ring_bytes()) {
        panic!("seed database: {err}");
    }
    drop(container);

    let db = match redb::Database::builder().create_with_backend(RawBackend(disk)) {
        Ok(db) => db,
        Err(err) => panic!("seed database: {err}"),
    };
    let result = (|| -> Result<Case, Box<dyn std::error::Error>> {
        let txn = db.begin_read()?;
        let mut case = empty_case();
        case.now = 30;
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (key, value) = entry?;
            case.sessions.0.push((
                Client::Raw(*key.value()),
                SessionBytes::Raw(blob(value.value())),
            ));
        }
        for entry in txn.open_table(DATA)?.iter()? {
            let (key, value) = entry?;
            case.data.0.push((
                DataKeyBytes::Raw(blob(key.value())),
                DataBytes::Raw(blob(value.value())),
            ));
        }
        for entry in txn.open_table(BY_ACCESS)?.iter()? {
            case.by_access
                .0
                .push(IndexKeyBytes::Raw(blob(entry?.0.value())));
        }
        for entry in txn.open_table(PRINCIPALS)?.iter()? {
            case.principals
                .0
                .push(PrincipalKeyBytes::Raw(blob(entry?.0.value())));
        }
        case.settings
            .0
            .push((SettingName::KeyRing, blob(&ring_bytes())));
        Ok(case)
    })();
    match result {
        Ok(case) => case,
        Err(err) => panic!("seed database: {err}"),
    }
}

/// The simulated disk as a redb backend, read directly.
#[derive(Debug)]
struct RawBackend(Arc<SimDisk>);

impl redb::StorageBackend for RawBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.handle().len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.handle().read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.handle().set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.handle().sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.handle().write(offset, data)
    }
}

fn record_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let client = Client::Known(0);
    let with = |change: &dyn Fn(&mut Case)| {
        let mut case = consistent_case();
        change(&mut case);
        encoded(&case)
    };
    let mut corrupt_ring = ring_bytes();
    corrupt_ring[20] ^= 1;
    vec![
        ("empty", encoded(&empty_case())),
        ("consistent", encoded(&consistent_case())),
        ("real-records", encoded(&real_case())),
        (
            "session-record-garbage",
            with(&|c| c.sessions.0[0].1 = SessionBytes::Raw(blob(&[0xff; 12]))),
        ),
        (
            "session-record-truncated",
            with(&|c| c.sessions.0[0].1 = SessionBytes::Raw(blob(&[5, 0x80]))),
        ),
        (
            "session-record-trailing-bytes",
            with(&|c| c.sessions.0[0].1 = SessionBytes::Raw(blob(&[5, 1, 1, 0, 9, 9]))),
        ),
        (
            "item-value-garbage",
            with(&|c| {
                c.data.0[2].1 = DataBytes::Item(5, ValueBytes::Raw(blob(&[20, 1, 2])));
            }),
        ),
        (
            "item-version-truncated",
            with(&|c| c.data.0[2].1 = DataBytes::Raw(blob(&[0xff]))),
        ),
        (
            "item-record-empty",
            with(&|c| c.data.0[3].1 = DataBytes::Raw(blob(&[]))),
        ),
        (
            "names-version-short",
            with(&|c| c.data.0[1].1 = DataBytes::Raw(blob(&[1, 2, 3]))),
        ),
        (
            "packages-version-is-an-item",
            with(&|c| c.data.0[0].1 = DataBytes::Item(1, ValueBytes::Number(1))),
        ),
        (
            "data-key-length-past-end",
            with(&|c| {
                let mut key = known_client(0).as_bytes().to_vec();
                key.extend_from_slice(&[0, 200, b'p']);
                c.data
                    .0
                    .push((DataKeyBytes::Raw(blob(&key)), DataBytes::Version(1)));
            }),
        ),
        (
            "data-key-invalid-utf8",
            with(&|c| {
                let mut key = known_client(0).as_bytes().to_vec();
                key.extend_from_slice(&[0, 2, 0xc3, 0x28, 0xff, 0xfe]);
                c.data.0.push((
                    DataKeyBytes::Raw(blob(&key)),
                    DataBytes::Item(1, ValueBytes::Number(1)),
                ));
            }),
        ),
        (
            "data-key-short",
            with(&|c| {
                c.data
                    .0
                    .push((DataKeyBytes::Raw(blob(&[1, 2, 3])), DataBytes::Version(1)));
            }),
        ),
        (
            "index-key-short",
            with(&|c| c.by_access.0.push(IndexKeyBytes::Raw(blob(&[0; 9])))),
        ),
        (
            "principal-key-malformed",
            with(&|c| {
                c.principals
                    .0
                    .push(PrincipalKeyBytes::Raw(blob(&[0, 40, b'u'])));
            }),
        ),
        (
            "index-without-session",
            with(&|c| {
                c.by_access
                    .0
                    .push(IndexKeyBytes::Entry(Time::Near(-5000), Client::Known(2)));
            }),
        ),
        (
            "expired-session",
            with(&|c| {
                c.sessions.0[0].1 =
                    SessionBytes::Valid(5, Time::Near(-9000), Time::Near(-9000), None);
                c.by_access.0[0] = IndexKeyBytes::Entry(Time::Near(-9000), client);
            }),
        ),
        (
            "times-at-the-extremes",
            with(&|c| {
                c.sessions.0[0].1 =
                    SessionBytes::Valid(u64::MAX, Time::Any(u64::MAX), Time::Any(0), None);
            }),
        ),
        (
            "absolute-lifetime",
            with(&|c| {
                c.absolute_lifetime = Some(60);
                c.by_created
                    .0
                    .push(IndexKeyBytes::Entry(Time::Near(-50), client));
            }),
        ),
        (
            "raw-client-keys",
            with(&|c| {
                c.sessions.0.push((
                    Client::Raw([7; 32]),
                    SessionBytes::Valid(1, Time::Near(0), Time::Near(0), None),
                ));
            }),
        ),
        (
            "format-version-2",
            with(&|c| c.format_version = Some(blob(&2u32.to_le_bytes()))),
        ),
        (
            "format-version-garbage",
            with(&|c| c.format_version = Some(blob(&[1, 0, 0]))),
        ),
        (
            "last-tid-garbage",
            with(&|c| c.last_tid = Some(blob(&[1, 2, 3]))),
        ),
        (
            "key-ring-valid",
            with(&|c| {
                c.settings
                    .0
                    .push((SettingName::KeyRing, blob(&ring_bytes())))
            }),
        ),
        (
            "key-ring-corrupt",
            with(&|c| {
                c.settings
                    .0
                    .push((SettingName::KeyRing, blob(&corrupt_ring)))
            }),
        ),
        ("raw-key-ring", ring_bytes()),
        (
            "raw-client-key-hex",
            ClientKey::from_client_id("x").to_string().into_bytes(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// store_model
// ---------------------------------------------------------------------------

fn scenario(absolute_lifetime: bool, ops: &[Op]) -> Vec<u8> {
    encoded(&Scenario {
        absolute_lifetime,
        ops: ops.to_vec(),
    })
}

fn model_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::*;
    let setup = [
        Create(0, 0),
        Insert(0, 0, 0, 7),
        Insert(0, 0, 1, 8),
        Commit(0),
    ];
    let after_setup = |ops: &[Op]| {
        let mut all = setup.to_vec();
        all.extend_from_slice(ops);
        scenario(false, &all)
    };
    vec![
        (
            "create-insert-commit-read",
            after_setup(&[Get(1, 0, 0), Commit(1)]),
        ),
        (
            "lost-update-conflicts",
            after_setup(&[
                Get(1, 0, 0),
                ConflictingCommit(0, 0, 5),
                Insert(1, 0, 0, 9),
                Commit(1),
            ]),
        ),
        (
            "ram-read-after-begin-conflicts",
            after_setup(&[
                Touch(1, 1),
                ConflictingCommit(0, 0, 5),
                Get(1, 0, 0),
                Commit(1),
            ]),
        ),
        (
            "read-skew-conflicts",
            after_setup(&[
                Get(1, 0, 0),
                Insert(2, 0, 0, 1),
                Insert(2, 0, 1, 2),
                Commit(2),
                Get(1, 0, 1),
                Insert(1, 1, 0, 3),
                Commit(1),
            ]),
        ),
        (
            "phantom-name-conflicts",
            after_setup(&[
                Names(1, 0, 0),
                ConflictingCommit(0, 2, 4),
                Insert(1, 0, 3, 1),
                Commit(1),
            ]),
        ),
        (
            "packages-after-remove",
            after_setup(&[
                Remove(1, 0, 0),
                Packages(1, 0),
                Remove(1, 0, 1),
                Packages(1, 0),
                Commit(1),
            ]),
        ),
        (
            "crash-keeps-commits",
            after_setup(&[Insert(1, 0, 2, 3), Crash, Get(0, 0, 0), Get(0, 0, 2)]),
        ),
        ("reopen", after_setup(&[Reopen, Names(0, 0, 1), Commit(0)])),
        (
            "expiry-and-sweep",
            after_setup(&[
                Create(1, 1),
                Commit(1),
                Advance(4),
                Advance(4),
                Sweep(0),
                Sweep(2),
            ]),
        ),
        (
            "touch-resolution",
            after_setup(&[
                Advance(2),
                Touch(1, 0),
                Commit(1),
                Advance(0),
                Touch(1, 0),
                Commit(1),
            ]),
        ),
        (
            "rename-with-principal",
            after_setup(&[
                SetPrincipal(1, 0, Some(1)),
                Commit(1),
                Rename(1, 0, 2),
                Commit(1),
                Get(0, 2, 1),
            ]),
        ),
        (
            "rename-conflicts-with-write",
            after_setup(&[Rename(1, 0, 1), ConflictingCommit(0, 1, 9), Commit(1)]),
        ),
        (
            "delete-and-recreate",
            after_setup(&[
                Delete(1, 0),
                Create(1, 0),
                Insert(1, 0, 3, 1),
                Commit(1),
                Packages(0, 0),
            ]),
        ),
        (
            "admin-delete-while-open",
            after_setup(&[Get(1, 0, 0), AdminDelete(0), Insert(1, 0, 0, 1), Commit(1)]),
        ),
        (
            "settings-survive-crash",
            after_setup(&[
                StoreSetting(0, 1),
                StoreSetting(1, 2),
                Crash,
                StoreSetting(0, 3),
            ]),
        ),
        (
            "failed-sync",
            after_setup(&[
                FailSyncsAfter(0),
                Insert(1, 0, 2, 1),
                Commit(1),
                Get(2, 0, 2),
                Commit(2),
            ]),
        ),
        (
            "failed-writes",
            after_setup(&[
                FailWritesAfter(2),
                Insert(1, 0, 2, 1),
                Commit(1),
                Insert(1, 0, 3, 2),
                Commit(1),
                Get(2, 0, 3),
            ]),
        ),
        (
            "failed-sync-then-crash",
            after_setup(&[
                FailSyncsAfter(0),
                Insert(1, 0, 2, 1),
                Commit(1),
                Crash,
                Get(1, 0, 2),
            ]),
        ),
        (
            "fault-during-sweep",
            after_setup(&[
                Advance(4),
                FailSyncsAfter(0),
                Sweep(2),
                Create(1, 0),
                Commit(1),
            ]),
        ),
        (
            "open-transaction-across-fault",
            after_setup(&[
                Get(2, 0, 0),
                FailSyncsAfter(0),
                Insert(1, 0, 2, 1),
                Commit(1),
                Insert(2, 0, 0, 4),
                Commit(2),
            ]),
        ),
        (
            "absolute-lifetime",
            scenario(
                true,
                &[
                    Create(0, 0),
                    Commit(0),
                    Advance(4),
                    Touch(0, 0),
                    Commit(0),
                    Advance(4),
                    Touch(0, 0),
                    Sweep(2),
                ],
            ),
        ),
        (
            "sweep-batches",
            scenario(
                false,
                &[
                    Create(0, 0),
                    Create(0, 1),
                    Create(0, 2),
                    Commit(0),
                    Advance(4),
                    Sweep(0),
                    Sweep(0),
                    Sweep(0),
                ],
            ),
        ),
    ]
}
