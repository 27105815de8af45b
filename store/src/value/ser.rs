//! `to_value`: a serializer producing trees.
//!
//! [`ValueSerializer`] maps serde's data model onto [`Value`] as that type's
//! documentation describes, at most 128 levels deep.

use serde::{Serialize, Serializer, ser};

use super::{Value, ValueError, wire::cautious};

/// Serializes one value that may use `remaining` levels (at least one),
/// itself included.
pub(super) struct ValueSerializer {
    pub(super) remaining: usize,
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

pub(super) struct SeqBuilder {
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

pub(super) struct TupleVariantBuilder {
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

pub(super) struct MapBuilder {
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

pub(super) struct StructBuilder {
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

pub(super) struct StructVariantBuilder {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::ser::Error as _;

    use super::*;
    use crate::value::{MAX_DEPTH, to_value};

    struct Unpicklable;

    impl Serialize for Unpicklable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("I cannot be pickled"))
        }
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

    #[test]
    fn to_value_refuses_values_nested_deeper_than_the_limit() {
        assert!(to_value(&nest(MAX_DEPTH)).is_ok());
        let err = to_value(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
    }
}
