//! `stored_value`: the bytes of an input are a stored value (the disk format
//! of [`keel_store::Value`]), and, read through `arbitrary`, a typed value an
//! application might store.
//!
//! Invariants:
//! - [`decode`] never panics, whatever the bytes;
//! - a decoded tree re-encodes to at most as many bytes (the encoding is
//!   canonical, so only a non-minimal input can be longer), decodes again to
//!   the same tree (floats compared bit for bit, so NaN payloads and the sign
//!   of zero must survive), and re-encodes to the same bytes;
//! - [`Value::to_json`] and typed reads ([`from_value`],
//!   [`SessionValue::to_typed`]) of any decoded tree never panic;
//! - a typed value goes through `to_value`, `encode`, `decode` and
//!   `from_value` unchanged, as it does through a live [`SessionValue`].

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use keel_store::{SessionValue, Value, decode, encode, from_value, to_value};
use serde::{Deserialize, Serialize};

/// A typed value with every shape of the serde data model an application
/// uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Arbitrary)]
pub struct Sample {
    flag: bool,
    small: i8,
    word: u16,
    signed: i64,
    big: u128,
    wide: i128,
    letter: char,
    text: String,
    single: Bits32,
    double: Bits64,
    list: Vec<Option<u32>>,
    map: BTreeMap<String, Choice>,
    keyed: BTreeMap<u8, (bool, i16)>,
    nested: Option<Option<()>>,
    choices: Vec<Choice>,
    unit: Marker,
}

impl Sample {
    /// A sample with every field filled, for the seed corpus.
    pub fn example() -> Sample {
        Sample {
            flag: true,
            small: -7,
            word: 65_000,
            signed: i64::MIN,
            big: u128::MAX,
            wide: i128::MIN,
            letter: 'é',
            text: "session".to_owned(),
            single: Bits32(0.1),
            double: Bits64(f64::NAN),
            list: vec![Some(1), None, Some(u32::MAX)],
            map: BTreeMap::from([
                ("a".to_owned(), Choice::Unit),
                ("b".to_owned(), Choice::Newtype(-1)),
                ("c".to_owned(), Choice::Tuple(2, "x".to_owned())),
            ]),
            keyed: BTreeMap::from([(1, (true, -2)), (255, (false, 3))]),
            nested: Some(None),
            choices: vec![Choice::Struct {
                a: Some(false),
                b: vec![1, -1],
            }],
            unit: Marker,
        }
    }
}

/// An enum with every kind of variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Arbitrary)]
pub enum Choice {
    /// A unit variant.
    Unit,
    /// A newtype variant.
    Newtype(i32),
    /// A tuple variant.
    Tuple(u8, String),
    /// A struct variant.
    Struct {
        /// An optional field.
        a: Option<bool>,
        /// A list field.
        b: Vec<i16>,
    },
}

/// A unit struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Arbitrary)]
pub struct Marker;

/// An `f32` compared bit for bit (NaN equals itself).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Arbitrary)]
pub struct Bits32(f32);

impl PartialEq for Bits32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// An `f64` compared bit for bit (NaN equals itself).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Arbitrary)]
pub struct Bits64(f64);

impl PartialEq for Bits64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// Whether two trees are the same, floats compared bit for bit.
pub fn same_tree(a: &Value, b: &Value) -> bool {
    fn all<T>(a: &[T], b: &[T], same: impl Fn(&T, &T) -> bool) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
    }
    let fields = |a: &[(String, Value)], b: &[(String, Value)]| {
        all(a, b, |(n, x), (m, y)| n == m && same_tree(x, y))
    };
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Some(x), Value::Some(y)) => same_tree(x, y),
        (Value::Seq(x), Value::Seq(y)) => all(x, y, same_tree),
        (Value::Map(x), Value::Map(y)) => {
            all(x, y, |(k, v), (l, w)| same_tree(k, l) && same_tree(v, w))
        }
        (Value::Struct(x), Value::Struct(y)) => fields(x, y),
        (
            Value::NewtypeVariant {
                index: i,
                name: n,
                value: x,
            },
            Value::NewtypeVariant {
                index: j,
                name: m,
                value: y,
            },
        ) => i == j && n == m && same_tree(x, y),
        (
            Value::TupleVariant {
                index: i,
                name: n,
                fields: x,
            },
            Value::TupleVariant {
                index: j,
                name: m,
                fields: y,
            },
        ) => i == j && n == m && all(x, y, same_tree),
        (
            Value::StructVariant {
                index: i,
                name: n,
                fields: x,
            },
            Value::StructVariant {
                index: j,
                name: m,
                fields: y,
            },
        ) => i == j && n == m && fields(x, y),
        // Leaves without floats.
        _ => a == b,
    }
}

/// Typed reads of a tree: each may fail, none may panic.
fn read_as_types(tree: &Value) {
    let _ = from_value::<serde_json::Value>(tree);
    let _ = from_value::<Sample>(tree);
    let _ = from_value::<Choice>(tree);
    let _ = from_value::<String>(tree);
    let _ = from_value::<Vec<u8>>(tree);
    let _ = from_value::<(bool, char, f32)>(tree);
    let _ = from_value::<Option<i128>>(tree);
    let _ = from_value::<BTreeMap<String, u64>>(tree);
    let _ = from_value::<BTreeMap<u8, Option<f64>>>(tree);
    let _ = SessionValue::from_tree(tree.clone()).to_typed::<Vec<serde_json::Value>>();
}

/// Check one decoded tree; `input` is the bytes it was decoded from.
fn check_tree(tree: &Value, input: &[u8]) {
    let encoded = encode(tree);
    assert!(
        encoded.len() <= input.len(),
        "re-encoding grew {} bytes into {}",
        input.len(),
        encoded.len()
    );
    let again = match decode(&encoded) {
        Ok(again) => again,
        Err(err) => panic!("a re-encoded tree does not decode: {err}\n{tree:?}"),
    };
    assert!(
        same_tree(tree, &again),
        "the tree changed in a round trip:\n{tree:?}\n{again:?}"
    );
    assert_eq!(encode(&again), encoded, "re-encoding is not stable");
    let json = tree.to_json();
    assert!(serde_json::to_string(&json).is_ok());
    read_as_types(tree);
    let stored = SessionValue::from_tree(tree.clone());
    match stored.to_tree() {
        Ok(copy) => assert!(same_tree(tree, &copy)),
        Err(err) => panic!("a decoded tree is refused by SessionValue::to_tree: {err}"),
    }
}

/// Check one typed value's round trip through the disk format.
fn check_sample(sample: &Sample) {
    let tree = match to_value(sample) {
        Ok(tree) => tree,
        Err(err) => panic!("a sample does not convert to a tree: {err}"),
    };
    let bytes = encode(&tree);
    let decoded = match decode(&bytes) {
        Ok(decoded) => decoded,
        Err(err) => panic!("an encoded sample does not decode: {err}"),
    };
    assert!(same_tree(&tree, &decoded));
    match from_value::<Sample>(&decoded) {
        Ok(back) => assert_eq!(&back, sample),
        Err(err) => panic!("a sample does not read back: {err}\n{decoded:?}"),
    }
    match SessionValue::new(sample.clone()).to_typed::<Sample>() {
        Ok(back) => assert_eq!(&back, sample),
        Err(err) => panic!("a live sample does not read back: {err}"),
    }
    let _ = tree.to_json();
}

/// The check of the `stored_value` fuzz target.
///
/// # Panics
/// If an invariant of the module documentation is broken.
pub fn stored_value(data: &[u8]) {
    if let Ok(tree) = decode(data) {
        check_tree(&tree, data);
    }
    let mut input = Unstructured::new(data);
    if let Ok(sample) = Sample::arbitrary(&mut input) {
        check_sample(&sample);
    }
}
