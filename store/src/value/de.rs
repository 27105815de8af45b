//! `from_value`: a deserializer reading trees.
//!
//! [`ValueDeserializer`] reads any `T: Deserialize` out of a borrowed
//! [`Value`], numbers leniently (see [`from_value`](super::from_value)).

use std::slice;

use serde::{
    Deserializer,
    de::{
        self, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess, Unexpected,
        VariantAccess, Visitor,
        value::{BorrowedStrDeserializer, SeqDeserializer},
    },
};

use super::{Value, ValueError};

/// The content of a unit variant, so that every variant has one.
static UNIT: Value = Value::Unit;

/// Deserializes from a borrowed tree.
#[derive(Clone, Copy)]
pub(super) struct ValueDeserializer<'de>(pub(super) &'de Value);

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
    use super::*;
    use crate::value::{
        from_value,
        tests::{Shape, Tuple},
        to_value,
    };

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
}
