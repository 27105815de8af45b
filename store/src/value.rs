//! The self-describing value tree session values are stored as.
//!
//! [`to_value`] turns any `T: Serialize` into a [`Value`] (a model of the
//! whole serde data model), [`from_value`] reads a `T: Deserialize` back out
//! of one, [`encode`] and [`decode`] move trees to and from the bytes stored
//! on disk, and [`Value::to_json`] shows a tree to people.

use std::{cell::Cell, fmt, slice};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{
        self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess,
        Unexpected, VariantAccess, Visitor,
        value::{BorrowedStrDeserializer, SeqDeserializer},
    },
    ser::{self, SerializeTupleVariant as _},
};

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

impl ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::new(msg.to_string())
    }
}

impl de::Error for ValueError {
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

// ---------------------------------------------------------------------------
// The disk format: `Value`'s own shape.
// ---------------------------------------------------------------------------

/// Variant names, indexed by tag.
///
/// NOTE: a variant's position here and in `Value` is its tag on disk: append
/// new variants at the end of both, never reorder.
const TAGS: &[&str] = &[
    "Unit",
    "Bool",
    "I64",
    "U64",
    "I128",
    "U128",
    "F32",
    "F64",
    "Char",
    "String",
    "Bytes",
    "None",
    "Some",
    "Seq",
    "Map",
    "Struct",
    "UnitVariant",
    "NewtypeVariant",
    "TupleVariant",
    "StructVariant",
];

/// Serializes a byte string with `serialize_bytes`.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Writes `Value`'s own shape: the disk format.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn newtype<S: Serializer, T: Serialize + ?Sized>(
            serializer: S,
            tag: u32,
            value: &T,
        ) -> Result<S::Ok, S::Error> {
            serializer.serialize_newtype_variant("Value", tag, TAGS[tag as usize], value)
        }
        fn variant<S: Serializer, T: Serialize + ?Sized>(
            serializer: S,
            tag: u32,
            index: u32,
            name: &str,
            payload: Option<&T>,
        ) -> Result<S::Ok, S::Error> {
            let len = if payload.is_some() { 3 } else { 2 };
            let mut fields =
                serializer.serialize_tuple_variant("Value", tag, TAGS[tag as usize], len)?;
            fields.serialize_field(&index)?;
            fields.serialize_field(name)?;
            if let Some(payload) = payload {
                fields.serialize_field(payload)?;
            }
            fields.end()
        }
        match self {
            Value::Unit => serializer.serialize_unit_variant("Value", 0, "Unit"),
            Value::Bool(v) => newtype(serializer, 1, v),
            Value::I64(v) => newtype(serializer, 2, v),
            Value::U64(v) => newtype(serializer, 3, v),
            Value::I128(v) => newtype(serializer, 4, v),
            Value::U128(v) => newtype(serializer, 5, v),
            Value::F32(v) => newtype(serializer, 6, v),
            Value::F64(v) => newtype(serializer, 7, v),
            Value::Char(v) => newtype(serializer, 8, v),
            Value::String(v) => newtype(serializer, 9, v),
            Value::Bytes(v) => newtype(serializer, 10, &BytesRef(v)),
            Value::None => serializer.serialize_unit_variant("Value", 11, "None"),
            Value::Some(v) => newtype(serializer, 12, &**v),
            Value::Seq(v) => newtype(serializer, 13, v),
            Value::Map(v) => newtype(serializer, 14, v),
            Value::Struct(v) => newtype(serializer, 15, v),
            Value::UnitVariant { index, name } => {
                variant::<S, ()>(serializer, 16, *index, name, None)
            }
            Value::NewtypeVariant { index, name, value } => {
                variant(serializer, 17, *index, name, Some(&**value))
            }
            Value::TupleVariant {
                index,
                name,
                fields,
            } => variant(serializer, 18, *index, name, Some(fields)),
            Value::StructVariant {
                index,
                name,
                fields,
            } => variant(serializer, 19, *index, name, Some(fields)),
        }
    }
}

/// Reads `Value`'s own shape, at most 128 levels deep.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let failure = Cell::new(None);
        DepthSeed {
            remaining: MAX_DEPTH,
            failure: &failure,
        }
        .deserialize(deserializer)
    }
}

/// Deserializes one `Value` that may use `remaining` levels, itself
/// included.
#[derive(Clone, Copy)]
struct DepthSeed<'a> {
    remaining: usize,
    /// Where the seed records why it refused the input, because some formats
    /// (postcard) drop the message of custom errors.
    failure: &'a Cell<Option<ValueError>>,
}

impl DepthSeed<'_> {
    /// Records `err` and returns it as a `E`.
    fn fail<E: de::Error>(&self, err: ValueError) -> E {
        let custom = E::custom(&err);
        self.failure.set(Some(err));
        custom
    }
}

impl<'de> DeserializeSeed<'de> for DepthSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let Some(below) = self.remaining.checked_sub(1) else {
            return Err(self.fail(ValueError::too_deep()));
        };
        let children = DepthSeed {
            remaining: below,
            failure: self.failure,
        };
        deserializer.deserialize_enum("Value", TAGS, ValueVisitor(children))
    }
}

struct ValueVisitor<'a>(DepthSeed<'a>);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Keel value tree")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let children = self.0;
        let (tag, variant) = data.variant_seed(TagSeed(children))?;
        Ok(match tag {
            0 => {
                variant.unit_variant()?;
                Value::Unit
            }
            1 => Value::Bool(variant.newtype_variant()?),
            2 => Value::I64(variant.newtype_variant()?),
            3 => Value::U64(variant.newtype_variant()?),
            4 => Value::I128(variant.newtype_variant()?),
            5 => Value::U128(variant.newtype_variant()?),
            6 => Value::F32(variant.newtype_variant()?),
            7 => Value::F64(variant.newtype_variant()?),
            8 => Value::Char(variant.newtype_variant()?),
            9 => Value::String(variant.newtype_variant()?),
            10 => Value::Bytes(variant.newtype_variant_seed(BytesSeed)?),
            11 => {
                variant.unit_variant()?;
                Value::None
            }
            12 => Value::Some(Box::new(variant.newtype_variant_seed(children)?)),
            13 => Value::Seq(variant.newtype_variant_seed(ListSeed(children))?),
            14 => Value::Map(variant.newtype_variant_seed(ListSeed(PairSeed(children)))?),
            15 => Value::Struct(variant.newtype_variant_seed(ListSeed(FieldSeed(children)))?),
            _ => variant.tuple_variant(
                if tag == 16 { 2 } else { 3 },
                EnumVariantVisitor { tag, children },
            )?,
        })
    }
}

/// Reads a variant tag: an index (postcard) or a name (self-describing
/// formats).
struct TagSeed<'a>(DepthSeed<'a>);

impl<'de> DeserializeSeed<'de> for TagSeed<'_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for TagSeed<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value tree tag")
    }

    fn visit_u64<E: de::Error>(self, tag: u64) -> Result<u32, E> {
        match u32::try_from(tag) {
            Ok(tag) if (tag as usize) < TAGS.len() => Ok(tag),
            _ => Err(self.0.fail(ValueError::new(format!(
                "cannot decode value tree: unknown tag {tag}"
            )))),
        }
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<u32, E> {
        match TAGS.iter().position(|tag| *tag == name) {
            Some(tag) => Ok(tag as u32),
            None => Err(self.0.fail(ValueError::new(format!(
                "cannot decode value tree: unknown tag {name:?}"
            )))),
        }
    }
}

/// Reads a byte string (or, from self-describing formats, a list of bytes).
struct BytesSeed;

impl<'de> DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(self)
    }
}

impl<'de> Visitor<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(cautious(seq.size_hint()));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

fn cautious(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(MAX_PREALLOCATED)
}

/// Reads a length-prefixed list of what `S` reads.
#[derive(Clone, Copy)]
struct ListSeed<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for ListSeed<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for ListSeed<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(cautious(seq.size_hint()));
        while let Some(item) = seq.next_element_seed(self.0)? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Reads a map entry: a (key, value) pair of values.
#[derive(Clone, Copy)]
struct PairSeed<'a>(DepthSeed<'a>);

impl<'de> DeserializeSeed<'de> for PairSeed<'_> {
    type Value = (Value, Value);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for PairSeed<'_> {
    type Value = (Value, Value);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a (key, value) pair")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let key = next(&mut seq, self.0, 0, &self)?;
        let value = next(&mut seq, self.0, 1, &self)?;
        Ok((key, value))
    }
}

/// Reads a struct field: a (name, value) pair.
#[derive(Clone, Copy)]
struct FieldSeed<'a>(DepthSeed<'a>);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = (String, Value);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = (String, Value);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a (field name, value) pair")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let name = next(&mut seq, std::marker::PhantomData::<String>, 0, &self)?;
        let value = next(&mut seq, self.0, 1, &self)?;
        Ok((name, value))
    }
}

/// The payload of tags 16 to 19: variant index, variant name, then the
/// variant's content, if any.
struct EnumVariantVisitor<'a> {
    tag: u32,
    children: DepthSeed<'a>,
}

impl<'de> Visitor<'de> for EnumVariantVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an enum variant: index, name and content")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let index = next(&mut seq, std::marker::PhantomData::<u32>, 0, &self)?;
        let name = next(&mut seq, std::marker::PhantomData::<String>, 1, &self)?;
        let children = self.children;
        Ok(match self.tag {
            16 => Value::UnitVariant { index, name },
            17 => Value::NewtypeVariant {
                index,
                name,
                value: Box::new(next(&mut seq, children, 2, &self)?),
            },
            18 => Value::TupleVariant {
                index,
                name,
                fields: next(&mut seq, ListSeed(children), 2, &self)?,
            },
            _ => Value::StructVariant {
                index,
                name,
                fields: next(&mut seq, ListSeed(FieldSeed(children)), 2, &self)?,
            },
        })
    }
}

/// The `position`th element of a fixed-length tuple; missing is an error.
fn next<'de, A: SeqAccess<'de>, S: DeserializeSeed<'de>>(
    seq: &mut A,
    seed: S,
    position: usize,
    expected: &dyn Expected,
) -> Result<S::Value, A::Error> {
    seq.next_element_seed(seed)?
        .ok_or_else(|| de::Error::invalid_length(position, expected))
}

// ---------------------------------------------------------------------------
// `to_value`: a serializer producing trees.
// ---------------------------------------------------------------------------

/// Serializes one value that may use `remaining` levels (at least one),
/// itself included.
struct ValueSerializer {
    remaining: usize,
}

/// Serializes `value` as a child of a value that had `parent_remaining`
/// levels.
fn child<T: Serialize + ?Sized>(value: &T, parent_remaining: usize) -> Result<Value, ValueError> {
    match parent_remaining.checked_sub(1) {
        Some(remaining) if remaining > 0 => value.serialize(ValueSerializer { remaining }),
        _ => Err(ValueError::too_deep()),
    }
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = TupleVariantBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructVariantBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        Ok(Value::I64(v.into()))
    }

    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        Ok(Value::I64(v))
    }

    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        Ok(if let Ok(v) = i64::try_from(v) {
            Value::I64(v)
        } else if let Ok(v) = u64::try_from(v) {
            Value::U64(v)
        } else {
            Value::I128(v)
        })
    }

    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        Ok(Value::U64(v.into()))
    }

    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        Ok(Value::U64(v))
    }

    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        Ok(match u64::try_from(v) {
            Ok(v) => Value::U64(v),
            Err(_) => Value::U128(v),
        })
    }

    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::F32(v))
    }

    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        Ok(Value::F64(v))
    }

    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::Char(v))
    }

    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::String(v.to_owned()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::Bytes(v.to_vec()))
    }

    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::None)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, ValueError> {
        Ok(Value::Some(Box::new(child(value, self.remaining)?)))
    }

    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::Unit)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::Unit)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        Ok(Value::UnitVariant {
            index,
            name: variant.to_owned(),
        })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        // NOTE: transparent, as in most formats: the wrapper adds no level.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        Ok(Value::NewtypeVariant {
            index,
            name: variant.to_owned(),
            value: Box::new(child(value, self.remaining)?),
        })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder {
            remaining: self.remaining,
            items: Vec::with_capacity(cautious(len)),
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleVariantBuilder, ValueError> {
        Ok(TupleVariantBuilder {
            index,
            name: variant,
            fields: self.serialize_seq(Some(len))?,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder {
            remaining: self.remaining,
            entries: Vec::with_capacity(cautious(len)),
            key: None,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<StructBuilder, ValueError> {
        Ok(StructBuilder {
            remaining: self.remaining,
            fields: Vec::with_capacity(cautious(Some(len))),
        })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructVariantBuilder, ValueError> {
        Ok(StructVariantBuilder {
            index,
            name: variant,
            fields: self.serialize_struct("", len)?,
        })
    }

    fn is_human_readable(&self) -> bool {
        // NOTE: must agree with `ValueDeserializer::is_human_readable`; trees
        // are shown to people (`to_json`), so types such as IP addresses
        // should appear in their readable form.
        true
    }
}

struct SeqBuilder {
    remaining: usize,
    items: Vec<Value>,
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.items.push(child(value, self.remaining)?);
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Seq(self.items))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        ser::SerializeSeq::end(self)
    }
}

struct TupleVariantBuilder {
    index: u32,
    name: &'static str,
    fields: SeqBuilder,
}

impl ser::SerializeTupleVariant for TupleVariantBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        ser::SerializeSeq::serialize_element(&mut self.fields, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::TupleVariant {
            index: self.index,
            name: self.name.to_owned(),
            fields: self.fields.items,
        })
    }
}

struct MapBuilder {
    remaining: usize,
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        if self.key.is_some() {
            return Err(ValueError::new("map key serialized twice without a value"));
        }
        self.key = Some(child(key, self.remaining)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let Some(key) = self.key.take() else {
            return Err(ValueError::new("map value serialized without a key"));
        };
        self.entries.push((key, child(value, self.remaining)?));
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        if self.key.is_some() {
            return Err(ValueError::new("map key serialized without a value"));
        }
        Ok(Value::Map(self.entries))
    }
}

struct StructBuilder {
    remaining: usize,
    fields: Vec<(String, Value)>,
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.fields
            .push((key.to_owned(), child(value, self.remaining)?));
        Ok(())
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::Struct(self.fields))
    }
}

struct StructVariantBuilder {
    index: u32,
    name: &'static str,
    fields: StructBuilder,
}

impl ser::SerializeStructVariant for StructVariantBuilder {
    type Ok = Value;
    type Error = ValueError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        ser::SerializeStruct::serialize_field(&mut self.fields, key, value)
    }

    fn end(self) -> Result<Value, ValueError> {
        Ok(Value::StructVariant {
            index: self.index,
            name: self.name.to_owned(),
            fields: self.fields.fields,
        })
    }
}

// ---------------------------------------------------------------------------
// `from_value`: a deserializer reading trees.
// ---------------------------------------------------------------------------

/// The content of a unit variant, so that every variant has one.
static UNIT: Value = Value::Unit;

/// Deserializes from a borrowed tree.
#[derive(Clone, Copy)]
struct ValueDeserializer<'de>(&'de Value);

/// Calls `f` with serde's description of what `value` is.
fn describe<R>(value: &Value, f: impl FnOnce(Unexpected<'_>) -> R) -> R {
    let text;
    let unexpected = match value {
        Value::Unit => Unexpected::Unit,
        Value::Bool(v) => Unexpected::Bool(*v),
        Value::I64(v) => Unexpected::Signed(*v),
        Value::U64(v) => Unexpected::Unsigned(*v),
        Value::I128(v) => {
            text = format!("integer `{v}`");
            Unexpected::Other(&text)
        }
        Value::U128(v) => {
            text = format!("integer `{v}`");
            Unexpected::Other(&text)
        }
        Value::F32(v) => Unexpected::Float(f64::from(*v)),
        Value::F64(v) => Unexpected::Float(*v),
        Value::Char(v) => Unexpected::Char(*v),
        Value::String(v) => Unexpected::Str(v),
        Value::Bytes(v) => Unexpected::Bytes(v),
        Value::None | Value::Some(_) => Unexpected::Option,
        Value::Seq(_) => Unexpected::Seq,
        Value::Map(_) => Unexpected::Map,
        Value::Struct(_) => Unexpected::Other("struct"),
        Value::UnitVariant { name, .. } => {
            text = format!("unit variant `{name}`");
            Unexpected::Other(&text)
        }
        Value::NewtypeVariant { name, .. } => {
            text = format!("newtype variant `{name}`");
            Unexpected::Other(&text)
        }
        Value::TupleVariant { name, .. } => {
            text = format!("tuple variant `{name}`");
            Unexpected::Other(&text)
        }
        Value::StructVariant { name, .. } => {
            text = format!("struct variant `{name}`");
            Unexpected::Other(&text)
        }
    };
    f(unexpected)
}

fn invalid_type(value: &Value, expected: &dyn Expected) -> ValueError {
    describe(value, |unexpected| {
        de::Error::invalid_type(unexpected, expected)
    })
}

fn invalid_value(value: &Value, expected: &dyn Expected) -> ValueError {
    describe(value, |unexpected| {
        de::Error::invalid_value(unexpected, expected)
    })
}

impl ValueDeserializer<'_> {
    /// The tree's integer as a `T`, if it is an integer that fits.
    fn integer<T>(self, expected: &dyn Expected) -> Result<T, ValueError>
    where
        T: TryFrom<i128> + TryFrom<u128>,
    {
        let converted = match *self.0 {
            Value::I64(v) => <T as TryFrom<i128>>::try_from(v.into()).ok(),
            Value::U64(v) => <T as TryFrom<i128>>::try_from(v.into()).ok(),
            Value::I128(v) => <T as TryFrom<i128>>::try_from(v).ok(),
            Value::U128(v) => <T as TryFrom<u128>>::try_from(v).ok(),
            _ => return Err(invalid_type(self.0, expected)),
        };
        converted.ok_or_else(|| invalid_value(self.0, expected))
    }

    /// The tree's number as an `f64`; integers are converted (rounding to
    /// the nearest `f64` when they have more than 53 significant bits).
    fn float(self, expected: &dyn Expected) -> Result<f64, ValueError> {
        match *self.0 {
            Value::F64(v) => Ok(v),
            Value::F32(v) => Ok(v.into()),
            Value::I64(v) => Ok(v as f64),
            Value::U64(v) => Ok(v as f64),
            Value::I128(v) => Ok(v as f64),
            Value::U128(v) => Ok(v as f64),
            _ => Err(invalid_type(self.0, expected)),
        }
    }
}

macro_rules! deserialize_integer {
    ($($method:ident => $visit:ident($ty:ty),)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            let value: $ty = self.integer(&visitor)?;
            visitor.$visit(value)
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDeserializer<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Unit => visitor.visit_unit(),
            Value::Bool(v) => visitor.visit_bool(*v),
            Value::I64(v) => visitor.visit_i64(*v),
            Value::U64(v) => visitor.visit_u64(*v),
            Value::I128(v) => visitor.visit_i128(*v),
            Value::U128(v) => visitor.visit_u128(*v),
            Value::F32(v) => visitor.visit_f32(*v),
            Value::F64(v) => visitor.visit_f64(*v),
            Value::Char(v) => visitor.visit_char(*v),
            Value::String(v) => visitor.visit_borrowed_str(v),
            Value::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Value::None => visitor.visit_none(),
            Value::Some(v) => visitor.visit_some(ValueDeserializer(v)),
            Value::Seq(items) => visit_list(items, visitor),
            Value::Map(entries) => visit_entries(entries, visitor),
            Value::Struct(fields) => visit_entries(fields, visitor),
            // NOTE: as serde_json shows enums (externally tagged), which is
            // what untagged and internally tagged enums and `flatten` expect
            // of `deserialize_any`.
            Value::UnitVariant { name, .. } => visitor.visit_borrowed_str(name),
            Value::NewtypeVariant { name, value, .. } => {
                visit_variant_map(name, Payload::Value(value), visitor)
            }
            Value::TupleVariant { name, fields, .. } => {
                visit_variant_map(name, Payload::List(fields), visitor)
            }
            Value::StructVariant { name, fields, .. } => {
                visit_variant_map(name, Payload::Fields(fields), visitor)
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Bool(v) => visitor.visit_bool(*v),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    deserialize_integer! {
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_i128 => visit_i128(i128),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_u128 => visit_u128(u128),
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        if let Value::F32(v) = self.0 {
            return visitor.visit_f32(*v);
        }
        let value = self.float(&visitor)?;
        if value.is_finite() && value.abs() > f64::from(f32::MAX) {
            return Err(invalid_value(self.0, &visitor));
        }
        visitor.visit_f32(value as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        let value = self.float(&visitor)?;
        visitor.visit_f64(value)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Char(v) => visitor.visit_char(*v),
            Value::String(v) => {
                let mut chars = v.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => visitor.visit_char(c),
                    _ => Err(invalid_value(self.0, &visitor)),
                }
            }
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::String(v) => visitor.visit_borrowed_str(v),
            Value::Char(v) => visitor.visit_str(v.encode_utf8(&mut [0; 4])),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Value::String(v) => visitor.visit_borrowed_bytes(v.as_bytes()),
            Value::Seq(items) => visit_list(items, visitor),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::None | Value::Unit => visitor.visit_none(),
            Value::Some(v) => visitor.visit_some(ValueDeserializer(v)),
            // NOTE: a plain value reads as `Some`, so that a field can become
            // optional without rewriting what is stored.
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Unit | Value::None => visitor.visit_unit(),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Seq(items) => visit_list(items, visitor),
            Value::Bytes(bytes) => {
                let mut seq = SeqDeserializer::<_, ValueError>::new(bytes.iter().copied());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Map(entries) => visit_entries(entries, visitor),
            Value::Struct(fields) => visit_entries(fields, visitor),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::Struct(fields) => visit_entries(fields, visitor),
            Value::Map(entries) => visit_entries(entries, visitor),
            Value::Seq(items) => visit_list(items, visitor),
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        let (name, index, payload) = match self.0 {
            Value::UnitVariant { index, name } => (name, Some(*index), Payload::Value(&UNIT)),
            Value::NewtypeVariant { index, name, value } => {
                (name, Some(*index), Payload::Value(value))
            }
            Value::TupleVariant {
                index,
                name,
                fields,
            } => (name, Some(*index), Payload::List(fields)),
            Value::StructVariant {
                index,
                name,
                fields,
            } => (name, Some(*index), Payload::Fields(fields)),
            // NOTE: the externally tagged forms, as `deserialize_any` shows
            // variants: a name, or a map with a single entry.
            Value::String(name) => (name, None, Payload::Value(&UNIT)),
            Value::Map(entries) => match entries.as_slice() {
                [(Value::String(name), value)] => (name, None, Payload::Value(value)),
                _ => return Err(invalid_type(self.0, &visitor)),
            },
            other => return Err(invalid_type(other, &visitor)),
        };
        visitor.visit_enum(EnumRef {
            name,
            index,
            payload,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.0 {
            Value::String(v) => visitor.visit_borrowed_str(v),
            Value::Char(v) => visitor.visit_str(v.encode_utf8(&mut [0; 4])),
            Value::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Value::I64(_) | Value::U64(_) | Value::I128(_) | Value::U128(_) => {
                let index: u64 = self.integer(&visitor)?;
                visitor.visit_u64(index)
            }
            other => Err(invalid_type(other, &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        true
    }
}

/// Visits `items` as a sequence; elements the visitor leaves unread are an
/// error.
fn visit_list<'de, V: Visitor<'de>>(
    items: &'de [Value],
    visitor: V,
) -> Result<V::Value, ValueError> {
    let mut access = ListAccess {
        items: items.iter(),
    };
    let value = visitor.visit_seq(&mut access)?;
    match access.items.len() {
        0 => Ok(value),
        left => Err(ValueError::new(format!(
            "invalid length {}, expected {} elements in sequence",
            items.len(),
            items.len() - left
        ))),
    }
}

struct ListAccess<'de> {
    items: slice::Iter<'de, Value>,
}

impl<'de> SeqAccess<'de> for ListAccess<'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        self.items
            .next()
            .map(|item| seed.deserialize(ValueDeserializer(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map key: a value ([`Value::Map`]) or a field name ([`Value::Struct`]).
trait EntryKey {
    fn deserialize_key<'de, S: DeserializeSeed<'de>>(
        &'de self,
        seed: S,
    ) -> Result<S::Value, ValueError>;
}

impl EntryKey for Value {
    fn deserialize_key<'de, S: DeserializeSeed<'de>>(
        &'de self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        seed.deserialize(ValueDeserializer(self))
    }
}

impl EntryKey for String {
    fn deserialize_key<'de, S: DeserializeSeed<'de>>(
        &'de self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        seed.deserialize(BorrowedStrDeserializer::new(self))
    }
}

/// Visits `entries` as a map; entries the visitor leaves unread are an
/// error.
fn visit_entries<'de, K: EntryKey, V: Visitor<'de>>(
    entries: &'de [(K, Value)],
    visitor: V,
) -> Result<V::Value, ValueError> {
    let mut access = EntriesAccess {
        entries: entries.iter(),
        value: None,
    };
    let value = visitor.visit_map(&mut access)?;
    match access.entries.len() {
        0 => Ok(value),
        left => Err(ValueError::new(format!(
            "invalid length {}, expected {} entries in map",
            entries.len(),
            entries.len() - left
        ))),
    }
}

struct EntriesAccess<'de, K> {
    entries: slice::Iter<'de, (K, Value)>,
    value: Option<&'de Value>,
}

impl<'de, K: EntryKey> MapAccess<'de> for EntriesAccess<'de, K> {
    type Error = ValueError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ValueError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        key.deserialize_key(seed).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        match self.value.take() {
            Some(value) => seed.deserialize(ValueDeserializer(value)),
            None => Err(ValueError::new("map value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The content of an enum variant.
#[derive(Clone, Copy)]
enum Payload<'de> {
    /// A unit variant's ([`UNIT`]), a newtype variant's, or a variant read
    /// from its externally tagged form.
    Value(&'de Value),
    /// A tuple variant's fields.
    List(&'de [Value]),
    /// A struct variant's fields.
    Fields(&'de [(String, Value)]),
}

impl<'de> Payload<'de> {
    fn deserialize<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, ValueError> {
        match self {
            Payload::Value(value) => seed.deserialize(ValueDeserializer(value)),
            Payload::List(items) => seed.deserialize(ListDeserializer(items)),
            Payload::Fields(fields) => seed.deserialize(FieldsDeserializer(fields)),
        }
    }
}

/// Shows a variant as a map with a single entry: name → content.
fn visit_variant_map<'de, V: Visitor<'de>>(
    name: &'de str,
    payload: Payload<'de>,
    visitor: V,
) -> Result<V::Value, ValueError> {
    visitor.visit_map(VariantMap {
        name: Some(name),
        payload,
    })
}

struct VariantMap<'de> {
    name: Option<&'de str>,
    payload: Payload<'de>,
}

impl<'de> MapAccess<'de> for VariantMap<'de> {
    type Error = ValueError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, ValueError> {
        self.name
            .take()
            .map(|name| seed.deserialize(BorrowedStrDeserializer::new(name)))
            .transpose()
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        self.payload.deserialize(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.name.is_some()))
    }
}

/// A tuple variant's fields, read as a sequence.
struct ListDeserializer<'de>(&'de [Value]);

impl<'de> Deserializer<'de> for ListDeserializer<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visit_list(self.0, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

/// A struct variant's fields, read as a map.
struct FieldsDeserializer<'de>(&'de [(String, Value)]);

impl<'de> Deserializer<'de> for FieldsDeserializer<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visit_entries(self.0, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

/// An enum variant being read by `deserialize_enum`.
struct EnumRef<'de> {
    name: &'de str,
    index: Option<u32>,
    payload: Payload<'de>,
}

impl<'de> EnumAccess<'de> for EnumRef<'de> {
    type Error = ValueError;
    type Variant = Payload<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Payload<'de>), ValueError> {
        let variant = seed.deserialize(VariantName {
            name: self.name,
            index: self.index,
        })?;
        Ok((variant, self.payload))
    }
}

impl<'de> VariantAccess<'de> for Payload<'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self {
            Payload::Value(Value::Unit) => Ok(()),
            Payload::Value(other) => Err(invalid_type(other, &"unit variant")),
            Payload::List(_) => Err(de::Error::invalid_type(
                Unexpected::TupleVariant,
                &"unit variant",
            )),
            Payload::Fields(_) => Err(de::Error::invalid_type(
                Unexpected::StructVariant,
                &"unit variant",
            )),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ValueError> {
        self.deserialize(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Payload::List(items) => visit_list(items, visitor),
            Payload::Value(value) => ValueDeserializer(value).deserialize_tuple(len, visitor),
            Payload::Fields(_) => Err(de::Error::invalid_type(Unexpected::StructVariant, &visitor)),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Payload::Fields(entries) => visit_entries(entries, visitor),
            Payload::List(items) => visit_list(items, visitor),
            Payload::Value(value) => {
                ValueDeserializer(value).deserialize_struct("", fields, visitor)
            }
        }
    }
}

/// A variant's identifier: its name, or its index when asked for an integer.
struct VariantName<'de> {
    name: &'de str,
    index: Option<u32>,
}

impl<'de> VariantName<'de> {
    fn visit_index<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.index {
            Some(index) => visitor.visit_u64(index.into()),
            None => visitor.visit_borrowed_str(self.name),
        }
    }
}

impl<'de> Deserializer<'de> for VariantName<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_borrowed_str(self.name)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.visit_index(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.visit_index(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.visit_index(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.visit_index(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::{collection::vec, prelude::*};
    use serde::{Deserialize, ser::Error as _};

    use super::*;

    /// Equality that treats two floats as equal when their bits are.
    fn same(a: &Value, b: &Value) -> bool {
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
    struct Tuple(i8, String, Option<bool>);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Empty,
        Circle(f64),
        Line(i32, i32),
        Rect { w: u16, h: u16 },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Everything {
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

    struct Unpicklable;

    impl Serialize for Unpicklable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("I cannot be pickled"))
        }
    }

    fn everything() -> Everything {
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
    fn numbers_read_leniently_when_they_fit() {
        assert_eq!(from_value::<u8>(&Value::U64(200)).unwrap(), 200);
        assert_eq!(from_value::<u64>(&Value::I64(5)).unwrap(), 5);
        assert_eq!(from_value::<i8>(&Value::U64(127)).unwrap(), 127);
        assert_eq!(
            from_value::<i128>(&Value::U64(u64::MAX)).unwrap(),
            i128::from(u64::MAX)
        );
        assert_eq!(from_value::<u64>(&Value::U128(7)).unwrap(), 7);
        assert_eq!(from_value::<f64>(&Value::U64(5)).unwrap(), 5.0);
        assert_eq!(from_value::<f64>(&Value::I64(-5)).unwrap(), -5.0);
        assert_eq!(from_value::<f64>(&Value::F32(0.5)).unwrap(), 0.5);
        assert_eq!(from_value::<f32>(&Value::F64(0.5)).unwrap(), 0.5);
        assert_eq!(from_value::<f32>(&Value::I64(3)).unwrap(), 3.0);
        assert!(from_value::<f32>(&Value::F64(f64::NAN)).unwrap().is_nan());
        assert_eq!(
            from_value::<f32>(&Value::F64(f64::INFINITY)).unwrap(),
            f32::INFINITY
        );
        assert_eq!(from_value::<char>(&Value::String("é".into())).unwrap(), 'é');
        assert_eq!(from_value::<String>(&Value::Char('é')).unwrap(), "é");
        assert_eq!(from_value::<Option<u8>>(&Value::U64(1)).unwrap(), Some(1));
        assert_eq!(from_value::<Option<u8>>(&Value::Unit).unwrap(), None);
        assert_eq!(
            from_value::<Vec<u8>>(&Value::Bytes(vec![1, 2])).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            from_value::<Shape>(&Value::String("Empty".into())).unwrap(),
            Shape::Empty
        );
        let tagged = Value::Map(vec![(Value::String("Circle".into()), Value::F64(1.0))]);
        assert_eq!(from_value::<Shape>(&tagged).unwrap(), Shape::Circle(1.0));
    }

    #[test]
    fn numbers_out_of_range_are_errors_not_truncated() {
        let cases: Vec<(ValueError, &str, &str)> = vec![
            (from_value::<u8>(&Value::U64(300)).unwrap_err(), "300", "u8"),
            (from_value::<u64>(&Value::I64(-1)).unwrap_err(), "-1", "u64"),
            (
                from_value::<i8>(&Value::I64(-129)).unwrap_err(),
                "-129",
                "i8",
            ),
            (
                from_value::<i64>(&Value::U64(u64::MAX)).unwrap_err(),
                "18446744073709551615",
                "i64",
            ),
            (
                from_value::<u64>(&Value::U128(u128::MAX)).unwrap_err(),
                "340282366920938463463374607431768211455",
                "u64",
            ),
            (
                from_value::<u128>(&Value::I128(i128::MIN)).unwrap_err(),
                "-170141183460469231731687303715884105728",
                "u128",
            ),
            (
                from_value::<f32>(&Value::F64(1e300)).unwrap_err(),
                "floating point",
                "f32",
            ),
        ];
        for (err, found, expected) in cases {
            let message = err.to_string();
            assert!(message.contains("invalid value"), "{message}");
            assert!(
                message.contains(found) && message.contains(expected),
                "{message}"
            );
        }
    }

    #[test]
    fn type_mismatches_name_what_was_expected_and_what_was_found() {
        let cases: Vec<(ValueError, &str, &str)> = vec![
            (
                from_value::<u32>(&Value::String("x".into())).unwrap_err(),
                "string \"x\"",
                "u32",
            ),
            (
                from_value::<u32>(&Value::F64(1.5)).unwrap_err(),
                "floating point `1.5`",
                "u32",
            ),
            (
                from_value::<bool>(&Value::U64(1)).unwrap_err(),
                "integer `1`",
                "a boolean",
            ),
            (
                from_value::<String>(&Value::Seq(vec![])).unwrap_err(),
                "sequence",
                "a string",
            ),
            (
                from_value::<Vec<u8>>(&Value::Map(vec![])).unwrap_err(),
                "map",
                "a sequence",
            ),
            (
                from_value::<Shape>(&Value::U64(1)).unwrap_err(),
                "integer `1`",
                "enum Shape",
            ),
            (
                from_value::<u8>(&Value::UnitVariant {
                    index: 0,
                    name: "Empty".into(),
                })
                .unwrap_err(),
                "unit variant `Empty`",
                "u8",
            ),
            (
                from_value::<char>(&Value::String("ab".into())).unwrap_err(),
                "string \"ab\"",
                "a character",
            ),
        ];
        for (err, found, expected) in cases {
            let message = err.to_string();
            assert!(
                message.contains(found) && message.contains(expected),
                "{message}"
            );
        }
        let unknown = Value::UnitVariant {
            index: 9,
            name: "Hexagon".into(),
        };
        let message = from_value::<Shape>(&unknown).unwrap_err().to_string();
        assert!(message.contains("Hexagon"), "{message}");
        let wrong_kind = to_value(&Shape::Line(1, 2)).unwrap();
        assert!(from_value::<Tuple>(&wrong_kind).is_err());
        let too_long = Value::Seq(vec![Value::U64(1), Value::U64(2), Value::U64(3)]);
        let message = from_value::<(u8, u8)>(&too_long).unwrap_err().to_string();
        assert!(message.contains("invalid length 3"), "{message}");
    }

    #[test]
    fn a_serialize_error_is_kept_in_the_value_error() {
        for err in [
            to_value(&Unpicklable).unwrap_err(),
            to_value(&vec![Some(Unpicklable)]).unwrap_err(),
            to_value(&BTreeMap::from([(1, Unpicklable)])).unwrap_err(),
        ] {
            assert!(err.to_string().contains("I cannot be pickled"), "{err}");
        }
        fn check<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
        check(&to_value(&Unpicklable).unwrap_err());
    }

    /// `levels` nested options: `levels - 1` times `Some`, then `None`.
    #[derive(Serialize)]
    struct Nest(Option<Box<Nest>>);

    fn nest(levels: usize) -> Nest {
        (1..levels).fold(Nest(None), |inner, _| Nest(Some(Box::new(inner))))
    }

    fn nested_seqs(levels: usize) -> Value {
        (1..levels).fold(Value::Unit, |inner, _| Value::Seq(vec![inner]))
    }

    #[test]
    fn to_value_refuses_values_nested_deeper_than_the_limit() {
        assert!(to_value(&nest(MAX_DEPTH)).is_ok());
        let err = to_value(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
    }

    #[test]
    fn decode_accepts_the_depth_limit_and_refuses_one_more_level() {
        let deepest = nested_seqs(MAX_DEPTH);
        assert_eq!(deepest.check_depth(), Ok(()));
        assert_eq!(decode(&encode(&deepest)).unwrap(), deepest);
        let json: serde_json::Value = from_value(&deepest).unwrap();
        assert_eq!(to_value(&json).unwrap(), deepest);
        let too_deep = nested_seqs(MAX_DEPTH + 1);
        assert!(too_deep.check_depth().is_err());
        let err = decode(&encode(&too_deep)).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
    }

    #[test]
    fn decode_of_absurdly_deep_input_is_an_error_not_a_stack_overflow() {
        let levels = 100_000;
        let inputs: Vec<Vec<u8>> = vec![
            // Seq of one element.
            [13, 1].repeat(levels),
            // Some.
            [12].repeat(levels),
            // Map with one entry, nested in the key.
            [14, 1].repeat(levels),
            // Newtype variant 0 named "".
            [17, 0, 0].repeat(levels),
            // Struct with one field named "".
            [15, 1, 0].repeat(levels),
        ];
        for mut bytes in inputs {
            bytes.push(0);
            let err = decode(&bytes).unwrap_err();
            assert!(err.to_string().contains("deeper than 128"), "{err}");
        }
    }

    #[test]
    fn decode_of_truncated_or_padded_bytes_is_an_error() {
        let bytes = encode(&to_value(&everything()).unwrap());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        let err = decode(&padded).unwrap_err();
        assert!(err.to_string().contains("1 unexpected byte"), "{err}");
        let err = decode(&[20]).unwrap_err();
        assert!(err.to_string().contains("unknown tag 20"), "{err}");
    }

    #[test]
    fn decode_of_malformed_bytes_is_an_error() {
        let cases: &[&[u8]] = &[
            &[],
            &[20],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
            &[1, 2],
            &[8, 2, 0xC3, 0x28],
            &[9, 1, 0xFF],
            &[8, 5, b'a', b'b', b'c', b'd', b'e'],
            &[8, 2, b'a', b'b'],
            // Lengths far beyond the input.
            &[13, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            &[
                10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
            ],
            &[14, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0, 0],
            // A variant index beyond u32.
            &[16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0],
        ];
        for bytes in cases {
            assert!(decode(bytes).is_err(), "{bytes:?}");
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Decoding never panics, and what decodes survives another round trip
    /// (not necessarily as the same bytes: postcard accepts over-long
    /// varints).
    fn decode_is_total(bytes: &[u8]) {
        if let Ok(value) = decode(bytes) {
            let again = decode(&encode(&value)).unwrap();
            assert!(same(&value, &again), "{value:?} != {again:?}");
            let _ = value.to_json();
        }
    }

    #[test]
    fn decode_of_random_bytes_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..50_000 {
            let len = rng.below(40) as usize;
            // Mostly small bytes, which are valid tags and lengths, so the
            // decoder gets past the first byte.
            let small = rng.below(2) == 0;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if small {
                        rng.below(24) as u8
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            decode_is_total(&bytes);
        }
    }

    #[test]
    fn decode_of_mutated_encodings_never_panics() {
        let bytes = encode(&to_value(&everything()).unwrap());
        let mut rng = Rng(42);
        for position in 0..bytes.len() {
            for _ in 0..64 {
                let mut mutated = bytes.clone();
                mutated[position] = rng.next() as u8;
                decode_is_total(&mutated);
            }
        }
    }

    #[test]
    fn the_disk_format_is_stable() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Unit, vec![0]),
            (Value::Bool(true), vec![1, 1]),
            (Value::I64(-1), vec![2, 1]),
            (Value::U64(300), vec![3, 0xAC, 0x02]),
            (Value::I128(-2), vec![4, 3]),
            (Value::U128(1), vec![5, 1]),
            (Value::F32(1.0), vec![6, 0, 0, 0x80, 0x3F]),
            (Value::F64(1.0), vec![7, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F]),
            (Value::Char('é'), vec![8, 2, 0xC3, 0xA9]),
            (Value::String("ab".into()), vec![9, 2, b'a', b'b']),
            (Value::Bytes(vec![1, 2]), vec![10, 2, 1, 2]),
            (Value::None, vec![11]),
            (Value::Some(Box::new(Value::Unit)), vec![12, 0]),
            (Value::Seq(vec![Value::Unit]), vec![13, 1, 0]),
            (
                Value::Map(vec![(Value::Unit, Value::None)]),
                vec![14, 1, 0, 11],
            ),
            (
                Value::Struct(vec![("a".into(), Value::U64(1))]),
                vec![15, 1, 1, b'a', 3, 1],
            ),
            (
                Value::UnitVariant {
                    index: 2,
                    name: "B".into(),
                },
                vec![16, 2, 1, b'B'],
            ),
            (
                Value::NewtypeVariant {
                    index: 2,
                    name: "B".into(),
                    value: Box::new(Value::Unit),
                },
                vec![17, 2, 1, b'B', 0],
            ),
            (
                Value::TupleVariant {
                    index: 2,
                    name: "B".into(),
                    fields: vec![Value::Unit],
                },
                vec![18, 2, 1, b'B', 1, 0],
            ),
            (
                Value::StructVariant {
                    index: 2,
                    name: "B".into(),
                    fields: vec![("a".into(), Value::Unit)],
                },
                vec![19, 2, 1, b'B', 1, 1, b'a', 0],
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(encode(&value), bytes, "{value:?}");
            assert_eq!(decode(&bytes).unwrap(), value);
        }
    }

    #[test]
    fn value_itself_deserializes_from_a_self_describing_format() {
        let tree = to_value(&everything()).unwrap();
        let json = serde_json::to_string(&tree).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert!(same(&tree, &back), "{json}");
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

    fn arb_name() -> impl Strategy<Value = String> {
        "[A-Za-z_]{0,8}"
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Unit),
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<u64>().prop_map(Value::U64),
            any::<i128>().prop_map(Value::I128),
            any::<u128>().prop_map(Value::U128),
            any::<f32>().prop_map(Value::F32),
            any::<f64>().prop_map(Value::F64),
            Just(Value::F64(f64::NAN)),
            Just(Value::F32(-f32::NAN)),
            any::<char>().prop_map(Value::Char),
            any::<String>().prop_map(Value::String),
            vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
            (any::<u32>(), arb_name()).prop_map(|(index, name)| Value::UnitVariant { index, name }),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                inner.clone().prop_map(|value| Value::Some(Box::new(value))),
                vec(inner.clone(), 0..6).prop_map(Value::Seq),
                vec((inner.clone(), inner.clone()), 0..6).prop_map(Value::Map),
                vec((arb_name(), inner.clone()), 0..6).prop_map(Value::Struct),
                (any::<u32>(), arb_name(), inner.clone()).prop_map(|(index, name, value)| {
                    Value::NewtypeVariant {
                        index,
                        name,
                        value: Box::new(value),
                    }
                }),
                (any::<u32>(), arb_name(), vec(inner.clone(), 0..4)).prop_map(
                    |(index, name, fields)| Value::TupleVariant {
                        index,
                        name,
                        fields,
                    }
                ),
                (any::<u32>(), arb_name(), vec((arb_name(), inner), 0..4)).prop_map(
                    |(index, name, fields)| Value::StructVariant {
                        index,
                        name,
                        fields,
                    }
                ),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_tree_survives_encode_and_decode(value in arb_value()) {
            let bytes = encode(&value);
            let decoded = decode(&bytes).unwrap();
            prop_assert!(same(&value, &decoded), "{:?} != {:?}", value, decoded);
            prop_assert_eq!(encode(&decoded), bytes);
            let _ = value.to_json();
        }

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
