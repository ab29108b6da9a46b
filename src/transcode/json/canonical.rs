//! The serializer every message's JSON goes through, for two things
//! prost-reflect leaves to it.
//!
//! Proto3 JSON writes a non-finite `double` or `float` as the strings
//! `"NaN"`, `"Infinity"` and `"-Infinity"`. prost-reflect does so for plain
//! fields but hands the wrapper types (`google.protobuf.DoubleValue`,
//! `FloatValue`) to the serializer as bare floats, which serde_json writes as
//! `null`, silently losing the value.
//!
//! prost-reflect holds a map field in a `HashMap` and writes its entries in
//! that map's order, which differs from one decoding of the same bytes to
//! the next: one cached reply would be different JSON on every hit, and no
//! client could compare two renderings. Entries are written in key order
//! instead, as Go's protojson writes them: integer keys by value, string
//! and bool keys by their bytes.
//!
//! [`Canonical`] wraps any serializer and does both; everything else
//! passes through.

use serde::ser::{self, Serialize, Serializer};

/// A serializer that writes non-finite floats as proto3 JSON strings and
/// map entries in key order.
pub struct Canonical<S>(pub S);

/// A value whose serialization goes through [`Canonical`] again, so nested
/// values get the same treatment.
struct Nested<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Nested<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(Canonical(s))
    }
}

/// A float with no fractional part, small enough to be exact as an
/// integer, as the integer: protobuf's own JSON printers (C++, Go's
/// protojson, Java) write `100`, not `100.0`, and clients that compare
/// replies byte for byte with another gateway's see the same text. `-0`
/// stays a float, as those printers keep its sign.
/// `exact` is where the type stops holding every integer (2^53 for a
/// `double`, 2^24 for a `float`): past it a whole value is a rounding of
/// what was written (`1.1e10` as a `float` is 11000000512), better written
/// in its shortest form.
pub(super) fn whole_number(v: f64, exact: f64) -> Option<i64> {
    (v.fract() == 0.0 && v.abs() < exact && !(v == 0.0 && v.is_sign_negative())).then_some(v as i64)
}

/// Every integer below these is exactly a `double` / a `float`.
pub(super) const DOUBLE_EXACT: f64 = 9_007_199_254_740_992.0;
pub(super) const FLOAT_EXACT: f64 = 16_777_216.0;

fn non_finite_name(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

macro_rules! pass {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.0.$name(v)
        })*
    };
}

impl<S: Serializer> Serializer for Canonical<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Canonical<S::SerializeSeq>;
    type SerializeTuple = Canonical<S::SerializeTuple>;
    type SerializeTupleStruct = Canonical<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Canonical<S::SerializeTupleVariant>;
    type SerializeMap = MapInOrder<S::SerializeMap>;
    type SerializeStruct = Canonical<S::SerializeStruct>;
    type SerializeStructVariant = Canonical<S::SerializeStructVariant>;

    pass!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        match (
            non_finite_name(f64::from(v)),
            whole_number(f64::from(v), FLOAT_EXACT),
        ) {
            (Some(name), _) => self.0.serialize_str(name),
            (None, Some(whole)) => self.0.serialize_i64(whole),
            (None, None) => self.0.serialize_f32(v),
        }
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        match (non_finite_name(v), whole_number(v, DOUBLE_EXACT)) {
            (Some(name), _) => self.0.serialize_str(name),
            (None, Some(whole)) => self.0.serialize_i64(whole),
            (None, None) => self.0.serialize_f64(v),
        }
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Nested(v))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Nested(v))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Nested(v))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(Canonical)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(Canonical)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(Canonical)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Canonical)
    }

    // prost-reflect opens a message's object with no length and a map
    // field's (and a `Struct`'s, an `Any`'s) with its number of entries:
    // only those are put in order.
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let map = self.0.serialize_map(len)?;
        Ok(match len {
            Some(n) if n > 1 => MapInOrder::Sorted {
                map,
                entries: Vec::with_capacity(n),
                key: None,
            },
            _ => MapInOrder::AsWritten(map),
        })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(Canonical)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Canonical)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident) => {
        impl<S: ser::$trait> ser::$trait for Canonical<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), S::Error> {
                self.0.$method(&Nested(v))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

/// A JSON object being written: a message's fields as they come, or a
/// map's entries held until the last is in and then written in key order.
pub enum MapInOrder<M> {
    AsWritten(M),
    Sorted {
        map: M,
        entries: Vec<(MapKeyText, Box<serde_json::value::RawValue>)>,
        key: Option<MapKeyText>,
    },
}

/// A map key as JSON writes it, and its value when it is an integer.
pub struct MapKeyText {
    text: String,
    integer: Option<i128>,
}

impl MapKeyText {
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        match (self.integer, other.integer) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self.text.cmp(&other.text),
        }
    }
}

impl<M: ser::SerializeMap> ser::SerializeMap for MapInOrder<M> {
    type Ok = M::Ok;
    type Error = M::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), M::Error> {
        match self {
            MapInOrder::AsWritten(map) => map.serialize_key(&Nested(k)),
            MapInOrder::Sorted { key, .. } => {
                *key = Some(k.serialize(KeyText).map_err(ser::Error::custom)?);
                Ok(())
            }
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), M::Error> {
        match self {
            MapInOrder::AsWritten(map) => map.serialize_value(&Nested(v)),
            MapInOrder::Sorted { entries, key, .. } => {
                let key = key
                    .take()
                    .ok_or_else(|| ser::Error::custom("a map value without its key"))?;
                // The value is written as it would have been in place, then
                // copied in whole, so a float keeps its exact text.
                let mut json = Vec::new();
                v.serialize(Canonical(&mut serde_json::Serializer::new(&mut json)))
                    .map_err(ser::Error::custom)?;
                let json = String::from_utf8(json).map_err(ser::Error::custom)?;
                let raw =
                    serde_json::value::RawValue::from_string(json).map_err(ser::Error::custom)?;
                entries.push((key, raw));
                Ok(())
            }
        }
    }

    fn end(self) -> Result<M::Ok, M::Error> {
        match self {
            MapInOrder::AsWritten(map) => map.end(),
            MapInOrder::Sorted {
                mut map,
                mut entries,
                ..
            } => {
                entries.sort_by(|(a, _), (b, _)| a.order(b));
                for (key, value) in &entries {
                    map.serialize_entry(&key.text, value)?;
                }
                map.end()
            }
        }
    }
}

/// Reads a map key: prost-reflect writes a string key with `serialize_str`
/// and an integer or bool key with `collect_str`.
struct KeyText;

macro_rules! not_a_key {
    ($($name:ident($($ty:ty),*) -> $out:ty),* $(,)?) => {
        $(fn $name(self, $(_: $ty),*) -> Result<$out, serde_json::Error> {
            Err(ser::Error::custom("a map key that is not text"))
        })*
    };
}

impl Serializer for KeyText {
    type Ok = MapKeyText;
    type Error = serde_json::Error;
    type SerializeSeq = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeTuple = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeTupleStruct = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeTupleVariant = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeMap = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeStruct = ser::Impossible<MapKeyText, serde_json::Error>;
    type SerializeStructVariant = ser::Impossible<MapKeyText, serde_json::Error>;

    fn serialize_str(self, v: &str) -> Result<MapKeyText, serde_json::Error> {
        Ok(MapKeyText {
            text: v.to_owned(),
            integer: None,
        })
    }

    fn collect_str<T: std::fmt::Display + ?Sized>(
        self,
        v: &T,
    ) -> Result<MapKeyText, serde_json::Error> {
        let text = v.to_string();
        let integer = text.parse().ok();
        Ok(MapKeyText { text, integer })
    }

    not_a_key!(
        serialize_bool(bool) -> MapKeyText,
        serialize_i8(i8) -> MapKeyText,
        serialize_i16(i16) -> MapKeyText,
        serialize_i32(i32) -> MapKeyText,
        serialize_i64(i64) -> MapKeyText,
        serialize_u8(u8) -> MapKeyText,
        serialize_u16(u16) -> MapKeyText,
        serialize_u32(u32) -> MapKeyText,
        serialize_u64(u64) -> MapKeyText,
        serialize_f32(f32) -> MapKeyText,
        serialize_f64(f64) -> MapKeyText,
        serialize_char(char) -> MapKeyText,
        serialize_bytes(&[u8]) -> MapKeyText,
        serialize_none() -> MapKeyText,
        serialize_unit() -> MapKeyText,
        serialize_unit_struct(&'static str) -> MapKeyText,
        serialize_unit_variant(&'static str, u32, &'static str) -> MapKeyText,
        serialize_seq(Option<usize>) -> Self::SerializeSeq,
        serialize_tuple(usize) -> Self::SerializeTuple,
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct,
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant,
        serialize_map(Option<usize>) -> Self::SerializeMap,
        serialize_struct(&'static str, usize) -> Self::SerializeStruct,
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant,
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<MapKeyText, serde_json::Error> {
        Err(ser::Error::custom("a map key that is not text"))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<MapKeyText, serde_json::Error> {
        Err(ser::Error::custom("a map key that is not text"))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<MapKeyText, serde_json::Error> {
        Err(ser::Error::custom("a map key that is not text"))
    }
}

macro_rules! named_fields {
    ($trait:ident) => {
        impl<S: ser::$trait> ser::$trait for Canonical<S> {
            type Ok = S::Ok;
            type Error = S::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), S::Error> {
                self.0.serialize_field(key, &Nested(v))
            }

            fn end(self) -> Result<S::Ok, S::Error> {
                self.0.end()
            }
        }
    };
}

named_fields!(SerializeStruct);
named_fields!(SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        let mut out = Vec::new();
        v.serialize(Canonical(&mut serde_json::Serializer::new(&mut out)))
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn non_finite_floats_become_the_proto3_strings_at_any_depth() {
        assert_eq!(json(&f64::NAN), r#""NaN""#);
        assert_eq!(json(&f64::INFINITY), r#""Infinity""#);
        assert_eq!(json(&f32::NEG_INFINITY), r#""-Infinity""#);
        assert_eq!(json(&1.5f64), "1.5");
        assert_eq!(json(&100.0f64), "100");
        assert_eq!(json(&-3.0f32), "-3");
        assert_eq!(json(&-0.0f64), "-0.0");
        assert_eq!(json(&1e300f64), "1e+300");
        // A float past 2^24 is written in its shortest form, not as the
        // integer it rounded to.
        assert_eq!(json(&16_777_215.0f32), "16777215");
        assert_eq!(json(&1.1e10f32), "11000000000.0");
        let nested = std::collections::BTreeMap::from([("a", vec![Some(f64::NAN), None])]);
        assert_eq!(json(&nested), r#"{"a":["NaN",null]}"#);
    }
}
