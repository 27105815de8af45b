//! The disk format: `Value`'s own shape.
//!
//! `impl Serialize for Value` writes it and `impl Deserialize for Value`
//! reads it, at most 128 levels deep; [`encode`](super::encode) and
//! [`decode`](super::decode) run them through postcard. The format itself is
//! documented on [`Value`].

use std::{cell::Cell, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, DeserializeSeed, EnumAccess, Expected, SeqAccess, VariantAccess, Visitor},
    ser::SerializeTupleVariant as _,
};

use super::{MAX_DEPTH, MAX_PREALLOCATED, Value, ValueError};

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
pub(super) struct DepthSeed<'a> {
    pub(super) remaining: usize,
    /// Where the seed records why it refused the input, because some formats
    /// (postcard) drop the message of custom errors.
    pub(super) failure: &'a Cell<Option<ValueError>>,
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

pub(super) fn cautious(hint: Option<usize>) -> usize {
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

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::value::{
        decode, encode, from_value,
        tests::{everything, same},
        to_value,
    };

    fn nested_seqs(levels: usize) -> Value {
        (1..levels).fold(Value::Unit, |inner, _| Value::Seq(vec![inner]))
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
    }
}
