//! The self-describing value tree session values are stored as.
//!
//! [`to_value`] turns any `T: Serialize` into a [`Value`] (a model of the
//! whole serde data model), [`from_value`] reads a `T: Deserialize` back out
//! of one, [`encode`] and [`decode`] move trees to and from the bytes stored
//! on disk, and [`Value::to_json`] shows a tree to people.
//!
//! This file holds the tree itself ([`Value`], [`ValueError`],
//! [`Value::to_json`]) and those four functions; the rest lives in
//! submodules: `wire` is the disk format (`Value`'s own `Serialize` and
//! `Deserialize`, which [`encode`] and [`decode`] run through postcard), `ser`
//! the serializer behind [`to_value`] and `de` the deserializer behind
//! [`from_value`].

mod de;
mod ser;
mod wire;

use std::{cell::Cell, fmt};

use serde::{
    Serialize,
    de::{DeserializeOwned, DeserializeSeed},
};

use self::{de::ValueDeserializer, ser::ValueSerializer, wire::DepthSeed};

/// The deepest nesting [`to_value`] produces and [`decode`] accepts: every
/// value (a leaf, a sequence, an option's content, ...) is one level.
pub(crate) const MAX_DEPTH: usize = 128;

/// How many elements a decoder reserves room for up front, whatever length
/// the input claims; longer lists grow as their elements actually arrive.
const MAX_PREALLOCATED: usize = 256;

/// A self-describing model of the serde data model; postcard-encoded on disk
/// (see [Disk format](#disk-format) below).
///
/// [`to_value`] maps serde's data model onto it like this:
/// - `bool`, `char`, strings and byte strings map to their own variants;
/// - `i8`..`i64` become [`Value::I64`] and `u8`..`u64` become
///   [`Value::U64`]; `i128` and `u128` become those too when they fit, and
///   [`Value::I128`] / [`Value::U128`] only when they do not;
/// - `f32` stays [`Value::F32`] (it is not widened, so it reads back exactly
///   and prints as written), `f64` is [`Value::F64`];
/// - `()` and unit structs are [`Value::Unit`]; `Option` is [`Value::None`]
///   or [`Value::Some`], so `Option<Option<T>>` keeps all three states;
/// - a newtype struct is its content (as in JSON and postcard);
/// - sequences, tuples and tuple structs are [`Value::Seq`];
/// - maps are [`Value::Map`] with keys of any kind, in serialization order;
/// - structs are [`Value::Struct`], field names kept, in serialization order;
/// - enum variants keep both the variant's index and its name.
///
/// Type names (of structs and enums) are not kept: `Deserialize` does not
/// need them and they would cost space in every stored value.
///
/// The `Serialize` and `Deserialize` implementations of `Value` itself
/// describe this enum's *own* shape (they are how [`encode`] and [`decode`]
/// work): `to_value(&tree)` does not return `tree`, and neither does
/// `from_value::<Value>(&tree)`; clone the tree instead.
///
/// # Disk format
///
/// A stored value is the [postcard] encoding of its `Value`: the variant's
/// tag as a varint, then its payload. Postcard itself is not self-describing;
/// the tags make the encoding so. Integers are varints (signed ones zigzag
/// encoded), floats are little-endian IEEE 754, strings and byte strings are a
/// varint length followed by the bytes, and a list of `n` items is the varint
/// `n` followed by the items.
///
/// | tag | variant          | payload                                                      |
/// |----:|------------------|--------------------------------------------------------------|
/// |   0 | `Unit`           | nothing                                                      |
/// |   1 | `Bool`           | one byte, 0 or 1                                             |
/// |   2 | `I64`            | zigzag varint                                                |
/// |   3 | `U64`            | varint                                                       |
/// |   4 | `I128`           | zigzag varint                                                |
/// |   5 | `U128`           | varint                                                       |
/// |   6 | `F32`            | 4 bytes                                                      |
/// |   7 | `F64`            | 8 bytes                                                      |
/// |   8 | `Char`           | its UTF-8 encoding as a string                               |
/// |   9 | `String`         | string                                                       |
/// |  10 | `Bytes`          | byte string                                                  |
/// |  11 | `None`           | nothing                                                      |
/// |  12 | `Some`           | value                                                        |
/// |  13 | `Seq`            | list of values                                               |
/// |  14 | `Map`            | list of (key value, value) pairs                             |
/// |  15 | `Struct`         | list of (field name string, value) pairs                     |
/// |  16 | `UnitVariant`    | variant index (varint), variant name (string)                |
/// |  17 | `NewtypeVariant` | variant index, variant name, value                           |
/// |  18 | `TupleVariant`   | variant index, variant name, list of values                  |
/// |  19 | `StructVariant`  | variant index, variant name, list of (name, value) pairs     |
///
/// This format is public API: tags are never reused or renumbered; new kinds
/// of value only ever get new tags. [`decode`] refuses trees nested deeper
/// than 128 levels, trailing bytes, and anything else malformed, with an
/// error rather than a panic.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `()` and unit structs.
    Unit,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer outside the range of `i64` and `u64`.
    I128(i128),
    /// An unsigned integer above `u64::MAX`.
    U128(u128),
    /// A single-precision float.
    F32(f32),
    /// A double-precision float.
    F64(f64),
    /// A character.
    Char(char),
    /// A string.
    String(String),
    /// A byte string (`serialize_bytes`; a `Vec<u8>` serializes as a
    /// [`Value::Seq`] of integers).
    Bytes(Vec<u8>),
    /// `Option::None`.
    None,
    /// `Option::Some`.
    Some(Box<Value>),
    /// A sequence, tuple or tuple struct.
    Seq(Vec<Value>),
    /// A map, entries in serialization order; keys may be any value.
    Map(Vec<(Value, Value)>),
    /// A struct: its fields in serialization order.
    Struct(Vec<(String, Value)>),
    /// An enum's unit variant.
    UnitVariant {
        /// The variant's index in its enum.
        index: u32,
        /// The variant's name.
        name: String,
    },
    /// An enum's newtype variant.
    NewtypeVariant {
        /// The variant's index in its enum.
        index: u32,
        /// The variant's name.
        name: String,
        /// Its content.
        value: Box<Value>,
    },
    /// An enum's tuple variant.
    TupleVariant {
        /// The variant's index in its enum.
        index: u32,
        /// The variant's name.
        name: String,
        /// Its fields.
        fields: Vec<Value>,
    },
    /// An enum's struct variant.
    StructVariant {
        /// The variant's index in its enum.
        index: u32,
        /// The variant's name.
        name: String,
        /// Its fields, in serialization order.
        fields: Vec<(String, Value)>,
    },
}

/// A value that could not be converted to or from a [`Value`], or bytes that
/// are not an encoded [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    message: String,
}

impl ValueError {
    fn new(message: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
        }
    }

    fn too_deep() -> Self {
        ValueError::new(format!("value is nested deeper than {MAX_DEPTH} levels"))
    }
}

impl serde::ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::new(msg.to_string())
    }
}

impl serde::de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::new(msg.to_string())
    }
}

/// Convert `value` into a tree.
///
/// ```
/// use keel_store::{Value, to_value};
///
/// #[derive(serde::Serialize)]
/// struct Cart {
///     items: Vec<u32>,
/// }
///
/// let tree = to_value(&Cart { items: vec![7] })?;
/// assert_eq!(
///     tree,
///     Value::Struct(vec![("items".into(), Value::Seq(vec![Value::U64(7)]))])
/// );
/// # Ok::<(), keel_store::ValueError>(())
/// ```
///
/// # Errors
/// The value's own `Serialize` error (its message is kept), or an error if
/// the value is nested deeper than 128 levels.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    value.serialize(ValueSerializer {
        remaining: MAX_DEPTH,
    })
}

/// Deserialize a `T` from a tree.
///
/// Numbers are read leniently: any integer reads as any integer type it fits
/// in (and as a float), an `f64` reads as an `f32` unless it is out of
/// `f32`'s range; a value that does not fit is an error, never truncated.
///
/// ```
/// use keel_store::{Value, from_value};
///
/// let tree = Value::Seq(vec![Value::U64(1), Value::I64(2)]);
/// let pair: (u8, f64) = from_value(&tree)?;
/// assert_eq!(pair, (1, 2.0));
/// assert!(from_value::<(i8, String)>(&tree).is_err());
/// # Ok::<(), keel_store::ValueError>(())
/// ```
///
/// # Errors
/// When the tree does not have `T`'s shape; the message names what was
/// expected and what was found.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ValueError> {
    T::deserialize(ValueDeserializer(value))
}

/// Encode a tree in the disk format (described in [`Value`]'s
/// documentation).
///
/// This cannot fail: every `Value` has an encoding, because postcard only
/// fails on sequences of unknown length and on `Display` errors, and
/// `Value`'s own `Serialize` produces neither. The result decodes with
/// [`decode`] as long as the tree is at most 128 levels deep, which trees
/// from [`to_value`] and [`decode`] always are (and which
/// `SessionValue::to_tree` checks for trees built by hand).
pub fn encode(value: &Value) -> Vec<u8> {
    match postcard::to_stdvec(value) {
        Ok(bytes) => bytes,
        // NOTE: unreachable by the argument in the doc comment above.
        Err(err) => unreachable!("postcard failed to encode a value tree: {err}"),
    }
}

/// Decode a tree from the disk format.
///
/// Any input is safe: malformed bytes give an error, never a panic; nesting
/// is limited to 128 levels; memory allocated is proportional to the input's
/// length, whatever lengths the input claims.
///
/// # Errors
/// When `bytes` are not exactly one encoded [`Value`] (truncated, trailing
/// bytes, unknown tag, invalid UTF-8, nested too deep, ...).
pub fn decode(bytes: &[u8]) -> Result<Value, ValueError> {
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let failure = Cell::new(None);
    let seed = DepthSeed {
        remaining: MAX_DEPTH,
        failure: &failure,
    };
    let value = seed.deserialize(&mut deserializer).map_err(|err| {
        // NOTE: postcard drops the message of custom errors, hence `failure`.
        failure
            .take()
            .unwrap_or_else(|| ValueError::new(format!("cannot decode value tree: {err}")))
    })?;
    let rest = deserializer
        .finalize()
        .map_err(|err| ValueError::new(format!("cannot decode value tree: {err}")))?;
    if !rest.is_empty() {
        return Err(ValueError::new(format!(
            "cannot decode value tree: {} unexpected byte(s) after the value",
            rest.len()
        )));
    }
    Ok(value)
}

impl Value {
    /// The tree as JSON, for tooling that has no application types.
    ///
    /// - unit and `None` are `null`; `Some(v)` is `v`;
    /// - integers are numbers, except 128-bit ones outside the range of
    ///   `i64`/`u64`, which are decimal strings;
    /// - finite floats are numbers (an `f32` as its shortest decimal form, so
    ///   `0.1f32` prints as `0.1`); NaN and infinities are the strings
    ///   `"NaN"`, `"inf"` and `"-inf"`;
    /// - chars are strings; byte strings are arrays of numbers;
    /// - sequences are arrays; structs are objects;
    /// - maps whose keys are all distinct strings are objects, other maps are
    ///   arrays of `[key, value]` pairs;
    /// - enum variants are externally tagged, as `serde_json` does: a unit
    ///   variant is its name, other variants `{"Name": content}`.
    ///
    /// ```
    /// use keel_store::{Value, to_value};
    ///
    /// let tree = to_value(&std::collections::BTreeMap::from([(1u8, "one")]))?;
    /// assert_eq!(tree.to_json(), serde_json::json!([[1, "one"]]));
    /// # Ok::<(), keel_store::ValueError>(())
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match self {
            Value::Unit | Value::None => Json::Null,
            Value::Bool(v) => Json::Bool(*v),
            Value::I64(v) => Json::from(*v),
            Value::U64(v) => Json::from(*v),
            Value::I128(v) => i64::try_from(*v)
                .map(Json::from)
                .or_else(|_| u64::try_from(*v).map(Json::from))
                .unwrap_or_else(|_| Json::String(v.to_string())),
            Value::U128(v) => u64::try_from(*v)
                .map(Json::from)
                .unwrap_or_else(|_| Json::String(v.to_string())),
            // NOTE: through the shortest decimal form, so that 0.1f32 prints
            // as 0.1 rather than as the f64 nearest to it.
            Value::F32(v) => float_json(v.to_string().parse().unwrap_or(f64::from(*v))),
            Value::F64(v) => float_json(*v),
            Value::Char(v) => Json::String(v.to_string()),
            Value::String(v) => Json::String(v.clone()),
            Value::Bytes(v) => Json::Array(v.iter().map(|byte| Json::from(*byte)).collect()),
            Value::Some(v) => v.to_json(),
            Value::Seq(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => map_json(entries),
            Value::Struct(fields) => fields_json(fields),
            Value::UnitVariant { name, .. } => Json::String(name.clone()),
            Value::NewtypeVariant { name, value, .. } => tagged_json(name, value.to_json()),
            Value::TupleVariant { name, fields, .. } => tagged_json(
                name,
                Json::Array(fields.iter().map(Value::to_json).collect()),
            ),
            Value::StructVariant { name, fields, .. } => tagged_json(name, fields_json(fields)),
        }
    }

    /// Whether the tree is nested at most [`MAX_DEPTH`] levels deep; the
    /// recursion stops there, so any tree is safe to check.
    pub(crate) fn check_depth(&self) -> Result<(), ValueError> {
        fn within(value: &Value, remaining: usize) -> bool {
            let Some(below) = remaining.checked_sub(1) else {
                return false;
            };
            match value {
                Value::Some(inner) | Value::NewtypeVariant { value: inner, .. } => {
                    within(inner, below)
                }
                Value::Seq(items) | Value::TupleVariant { fields: items, .. } => {
                    items.iter().all(|item| within(item, below))
                }
                Value::Map(entries) => entries
                    .iter()
                    .all(|(key, value)| within(key, below) && within(value, below)),
                Value::Struct(fields) | Value::StructVariant { fields, .. } => {
                    fields.iter().all(|(_, value)| within(value, below))
                }
                _ => true,
            }
        }
        if within(self, MAX_DEPTH) {
            Ok(())
        } else {
            Err(ValueError::too_deep())
        }
    }
}

fn float_json(value: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(value) {
        Some(number) => serde_json::Value::Number(number),
        None if value.is_nan() => serde_json::Value::from("NaN"),
        None if value > 0.0 => serde_json::Value::from("inf"),
        None => serde_json::Value::from("-inf"),
    }
}

fn map_json(entries: &[(Value, Value)]) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for (key, value) in entries {
        let Value::String(key) = key else {
            return pairs_json(entries);
        };
        if object.insert(key.clone(), value.to_json()).is_some() {
            return pairs_json(entries);
        }
    }
    serde_json::Value::Object(object)
}

fn pairs_json(entries: &[(Value, Value)]) -> serde_json::Value {
    serde_json::Value::Array(
        entries
            .iter()
            .map(|(key, value)| serde_json::Value::Array(vec![key.to_json(), value.to_json()]))
            .collect(),
    )
}

fn fields_json(fields: &[(String, Value)]) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(name, value)| (name.clone(), value.to_json()))
            .collect(),
    )
}

fn tagged_json(name: &str, content: serde_json::Value) -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::from_iter([(name.to_owned(), content)]))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::{collection::vec, prelude::*};
    use serde::{
        Deserialize, Deserializer, Serializer,
        de::{self, SeqAccess, Visitor},
    };

    use super::*;

    /// Equality that treats two floats as equal when their bits are.
    pub(super) fn same(a: &Value, b: &Value) -> bool {
        fn all<'a, T: 'a>(a: &'a [T], b: &'a [T], same: impl Fn(&'a T, &'a T) -> bool) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        match (a, b) {
            (Value::F32(a), Value::F32(b)) => a.to_bits() == b.to_bits(),
            (Value::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
            (Value::Some(a), Value::Some(b)) => same(a, b),
            (Value::Seq(a), Value::Seq(b)) => all(a, b, same),
            (Value::Map(a), Value::Map(b)) => {
                all(a, b, |(ak, av), (bk, bv)| same(ak, bk) && same(av, bv))
            }
            (Value::Struct(a), Value::Struct(b)) => {
                all(a, b, |(an, av), (bn, bv)| an == bn && same(av, bv))
            }
            (
                Value::NewtypeVariant {
                    index: ai,
                    name: an,
                    value: av,
                },
                Value::NewtypeVariant {
                    index: bi,
                    name: bn,
                    value: bv,
                },
            ) => ai == bi && an == bn && same(av, bv),
            (
                Value::TupleVariant {
                    index: ai,
                    name: an,
                    fields: af,
                },
                Value::TupleVariant {
                    index: bi,
                    name: bn,
                    fields: bf,
                },
            ) => ai == bi && an == bn && all(af, bf, same),
            (
                Value::StructVariant {
                    index: ai,
                    name: an,
                    fields: af,
                },
                Value::StructVariant {
                    index: bi,
                    name: bn,
                    fields: bf,
                },
            ) => ai == bi && an == bn && all(af, bf, |(an, av), (bn, bv)| an == bn && same(av, bv)),
            _ => a == b,
        }
    }

    /// `value` through the whole pipeline: tree, bytes, tree, `T`.
    fn through_disk<T: Serialize + DeserializeOwned>(value: &T) -> T {
        let tree = to_value(value).unwrap();
        let bytes = encode(&tree);
        let decoded = decode(&bytes).unwrap();
        assert!(same(&tree, &decoded), "{tree:?} != {decoded:?}");
        from_value(&decoded).unwrap()
    }

    fn round_trips<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: T) {
        assert_eq!(through_disk(&value), value);
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Unit;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Newtype(u32);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub(super) struct Tuple(i8, String, Option<bool>);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub(super) enum Shape {
        Empty,
        Circle(f64),
        Line(i32, i32),
        Rect { w: u16, h: u16 },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub(super) struct Everything {
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        tuple: Tuple,
        shapes: Vec<Shape>,
        maybe: Option<Option<u8>>,
        text: String,
        letter: char,
        nested: BTreeMap<String, Vec<Shape>>,
    }

    /// Serialized with `serialize_bytes`, like `serde_bytes::ByteBuf`.
    #[derive(Debug, PartialEq)]
    struct ByteBuf(Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct BufVisitor;
            impl<'de> Visitor<'de> for BufVisitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                    let mut bytes = Vec::new();
                    while let Some(byte) = seq.next_element()? {
                        bytes.push(byte);
                    }
                    Ok(ByteBuf(bytes))
                }
            }
            deserializer.deserialize_byte_buf(BufVisitor)
        }
    }

    pub(super) fn everything() -> Everything {
        Everything {
            unit: (),
            unit_struct: Unit,
            newtype: Newtype(7),
            tuple: Tuple(-3, "three".into(), None),
            shapes: vec![
                Shape::Empty,
                Shape::Circle(1.5),
                Shape::Line(-1, 1),
                Shape::Rect { w: 2, h: 3 },
            ],
            maybe: Some(None),
            text: "héllo 🦀".into(),
            letter: '🦀',
            nested: BTreeMap::from([("k".into(), vec![Shape::Circle(-0.0)])]),
        }
    }

    #[test]
    fn every_kind_of_the_serde_data_model_round_trips_through_disk() {
        round_trips(everything());
        round_trips(());
        round_trips(Unit);
        round_trips(Newtype(u32::MAX));
        round_trips(Tuple(i8::MIN, String::new(), Some(true)));
        round_trips(vec![
            Shape::Empty,
            Shape::Circle(f64::INFINITY),
            Shape::Line(i32::MIN, i32::MAX),
            Shape::Rect { w: 0, h: u16::MAX },
        ]);
        round_trips((true, 'x', "str".to_owned(), -1i16, 1u16));
        round_trips(vec![0u8, 1, 255]);
        round_trips(ByteBuf(vec![0, 1, 255]));
        round_trips(ByteBuf(Vec::new()));
        round_trips(HashMap::from([
            (1u32, "one".to_owned()),
            (2, "two".to_owned()),
        ]));
        round_trips(BTreeMap::from([
            ((1u8, "a".to_owned()), vec![1i64]),
            ((0u8, "b".to_owned()), vec![]),
        ]));
        #[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Hash)]
        enum Key {
            A,
            B(u8),
            C { c: Option<char> },
        }
        round_trips(HashMap::from([
            (Key::A, Unit),
            (Key::B(1), Unit),
            (Key::C { c: None }, Unit),
        ]));
    }

    #[test]
    fn nested_options_keep_all_three_states() {
        for value in [None, Some(None), Some(Some(5u8))] {
            round_trips(value);
        }
        assert_eq!(to_value(&None::<Option<u8>>).unwrap(), Value::None);
        assert_eq!(
            to_value(&Some(None::<u8>)).unwrap(),
            Value::Some(Box::new(Value::None))
        );
        assert_eq!(
            to_value(&Some(())).unwrap(),
            Value::Some(Box::new(Value::Unit))
        );
    }

    #[test]
    fn integer_extremes_round_trip_and_use_the_smallest_variant() {
        round_trips(i128::MIN);
        round_trips(i128::MAX);
        round_trips(u128::MAX);
        round_trips(u128::MIN);
        round_trips(i64::MIN);
        round_trips(u64::MAX);
        round_trips((i8::MIN, i16::MIN, i32::MIN, u8::MAX, u16::MAX, u32::MAX));
        assert_eq!(to_value(&-5i128).unwrap(), Value::I64(-5));
        assert_eq!(
            to_value(&u128::from(u64::MAX)).unwrap(),
            Value::U64(u64::MAX)
        );
        assert_eq!(
            to_value(&i128::from(u64::MAX)).unwrap(),
            Value::U64(u64::MAX)
        );
        assert_eq!(to_value(&i128::MIN).unwrap(), Value::I128(i128::MIN));
        assert_eq!(to_value(&u128::MAX).unwrap(), Value::U128(u128::MAX));
    }

    #[test]
    fn floats_round_trip_bit_for_bit() {
        for value in [0.1f32, -0.0, f32::MIN_POSITIVE, f32::MAX, f32::INFINITY] {
            assert_eq!(through_disk(&value).to_bits(), value.to_bits());
        }
        for value in [0.1f64, -0.0, f64::MIN_POSITIVE, f64::MAX, f64::NEG_INFINITY] {
            assert_eq!(through_disk(&value).to_bits(), value.to_bits());
        }
        assert!(through_disk(&f32::NAN).is_nan());
        assert!(through_disk(&f64::NAN).is_nan());
        assert_eq!(to_value(&0.5f32).unwrap(), Value::F32(0.5));
    }

    #[test]
    fn chars_and_strings_round_trip() {
        for value in ['a', 'é', '\u{10FFFF}', '\0'] {
            round_trips(value);
        }
        round_trips(String::from("a\0b\u{FEFF}"));
    }

    #[test]
    fn type_names_are_dropped_and_newtypes_are_transparent() {
        assert_eq!(to_value(&Unit).unwrap(), Value::Unit);
        assert_eq!(to_value(&Newtype(3)).unwrap(), Value::U64(3));
        assert_eq!(
            to_value(&Tuple(1, "a".into(), None)).unwrap(),
            Value::Seq(vec![Value::I64(1), Value::String("a".into()), Value::None])
        );
        assert_eq!(
            to_value(&Shape::Rect { w: 1, h: 2 }).unwrap(),
            Value::StructVariant {
                index: 3,
                name: "Rect".into(),
                fields: vec![("w".into(), Value::U64(1)), ("h".into(), Value::U64(2))],
            }
        );
        // A newtype reads as what it wraps, and the other way round.
        assert_eq!(
            from_value::<u32>(&to_value(&Newtype(3)).unwrap()).unwrap(),
            3
        );
        assert_eq!(from_value::<Newtype>(&Value::U64(3)).unwrap(), Newtype(3));
    }

    #[test]
    fn serde_attributes_that_buffer_through_deserialize_any_work() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        #[serde(tag = "type")]
        enum Internal {
            A { x: u8 },
            B,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        #[serde(tag = "t", content = "c")]
        enum Adjacent {
            A(Vec<u8>),
            B(Shape),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        #[serde(untagged)]
        enum Untagged {
            Number(u32),
            // NOTE: before `Text`, which would take unit variants' names.
            Shape(Shape),
            Text(String),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Flat {
            id: u64,
            #[serde(flatten)]
            rest: BTreeMap<String, Untagged>,
        }
        round_trips(vec![Internal::A { x: 1 }, Internal::B]);
        round_trips(vec![Adjacent::A(vec![1]), Adjacent::B(Shape::Line(1, 2))]);
        round_trips(vec![
            Untagged::Number(1),
            Untagged::Text("t".into()),
            Untagged::Shape(Shape::Empty),
            Untagged::Shape(Shape::Circle(2.0)),
            Untagged::Shape(Shape::Rect { w: 1, h: 1 }),
        ]);
        round_trips(Flat {
            id: 9,
            rest: BTreeMap::from([("extra".into(), Untagged::Number(1))]),
        });
        let json = serde_json::json!({"a": [1, -2, 2.5, null, true, "s", {"b": {}}]});
        round_trips(json);
    }

    #[test]
    fn to_json_shows_trees_without_application_types() {
        use serde_json::json;
        assert_eq!(
            to_value(&everything()).unwrap().to_json(),
            json!({
                "unit": null,
                "unit_struct": null,
                "newtype": 7,
                "tuple": [-3, "three", null],
                "shapes": ["Empty", {"Circle": 1.5}, {"Line": [-1, 1]}, {"Rect": {"w": 2, "h": 3}}],
                "maybe": null,
                "text": "héllo 🦀",
                "letter": "🦀",
                "nested": {"k": [{"Circle": -0.0}]},
            })
        );
        let int_keys = to_value(&BTreeMap::from([(1u32, "a"), (2, "b")])).unwrap();
        assert_eq!(int_keys.to_json(), json!([[1, "a"], [2, "b"]]));
        let duplicate_keys = Value::Map(vec![
            (Value::String("k".into()), Value::U64(1)),
            (Value::String("k".into()), Value::U64(2)),
        ]);
        assert_eq!(duplicate_keys.to_json(), json!([["k", 1], ["k", 2]]));
        assert_eq!(
            to_value(&ByteBuf(vec![0, 255])).unwrap().to_json(),
            json!([0, 255])
        );
        assert_eq!(
            to_value(&(f64::NAN, f64::INFINITY, f32::NEG_INFINITY, 0.1f32))
                .unwrap()
                .to_json(),
            json!(["NaN", "inf", "-inf", 0.1])
        );
        assert_eq!(
            to_value(&(i128::MIN, u128::MAX, 5i128)).unwrap().to_json(),
            json!([
                "-170141183460469231731687303715884105728",
                "340282366920938463463374607431768211455",
                5
            ])
        );
    }

    proptest! {
        #[test]
        fn typed_data_survives_the_whole_pipeline(
            data in (
                vec((any::<i64>(), any::<String>()), 0..8),
                any::<Option<Option<u16>>>(),
                proptest::collection::btree_map(any::<(u8, bool)>(), any::<char>(), 0..8),
                any::<(i128, u128, f64)>(),
            )
        ) {
            let back = through_disk(&data);
            prop_assert_eq!(&back.0, &data.0);
            prop_assert_eq!(back.1, data.1);
            prop_assert_eq!(&back.2, &data.2);
            prop_assert_eq!(back.3.0, data.3.0);
            prop_assert_eq!(back.3.1, data.3.1);
            prop_assert_eq!(back.3.2.to_bits(), data.3.2.to_bits());
        }
    }
}
