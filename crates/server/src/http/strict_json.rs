//! Reading request bodies as the API documents them: where a JSON object is expected, only a
//! JSON object is accepted.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence of its fields in order,
//! so `["alice"]` would read as `{"user_id": "alice"}`. [`from_slice`] wraps serde_json's
//! deserializer in [`Strict`], which passes everything through except a sequence offered
//! where a struct is asked for, at any depth (the body itself, `device`, …), and so refuses
//! it in one place for every body type.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    Unexpected, Visitor,
};

/// Reads `bytes` as a `T`, refusing a JSON array wherever `T` (or a struct inside it) expects
/// an object.
///
/// # Errors
/// serde_json's error for malformed JSON, a wrong type or a missing field; "invalid type:
/// sequence, expected a JSON object" for an array in an object's place.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut deserializer))?;
    deserializer.end()?;
    Ok(value)
}

/// A deserializer that refuses sequences where structs are expected, and wraps every nested
/// deserializer the same way.
struct Strict<D>(D);

/// A visitor wrapper: forwards every visit, wrapping what it hands on; refuses `visit_seq`
/// when it stands for a struct.
struct StrictVisitor<V> {
    inner: V,
    object_only: bool,
}

/// Wraps the deserializers of a sequence's elements.
struct StrictSeq<A>(A);

/// Wraps the deserializers of a map's values.
struct StrictMap<A>(A);

/// Wraps the deserializer a seed is given.
struct StrictSeed<S>(S);

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method(StrictVisitor { inner: visitor, object_only: false })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_unit_struct(
            name,
            StrictVisitor {
                inner: visitor,
                object_only: false,
            },
        )
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_newtype_struct(
            name,
            StrictVisitor {
                inner: visitor,
                object_only: false,
            },
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple(
            len,
            StrictVisitor {
                inner: visitor,
                object_only: false,
            },
        )
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_tuple_struct(
            name,
            len,
            StrictVisitor {
                inner: visitor,
                object_only: false,
            },
        )
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(
            name,
            fields,
            StrictVisitor {
                inner: visitor,
                object_only: true,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(
            name,
            variants,
            StrictVisitor {
                inner: visitor,
                object_only: false,
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($type:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, value: $type) -> Result<Self::Value, E> {
                self.inner.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StrictVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.object_only {
            return Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object"));
        }
        self.inner.visit_seq(StrictSeq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(StrictMap(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for StrictSeq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for StrictMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde::Deserialize;
    use serde_json::{Map, Value};

    use super::from_slice;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        free: Option<Map<String, Value>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn an_object_reads_as_a_struct_at_every_depth() {
        let read: Outer = from_slice(
            br#"{"name":"a","inner":{"flag":true},"list":[{"flag":false}],"free":{"x":[1,[2]]}}"#,
        )
        .unwrap();
        assert_eq!(read.name, "a");
        assert_eq!(read.inner, Some(Inner { flag: true }));
        assert_eq!(read.list, vec![Inner { flag: false }]);
        assert_eq!(read.free.unwrap()["x"], serde_json::json!([1, [2]]));
    }

    #[test]
    fn an_array_in_the_place_of_a_struct_is_refused_at_every_depth() {
        for body in [
            &br#"["a"]"#[..],
            br#"["a", {"flag": true}]"#,
            br#"{"name":"a","inner":[true]}"#,
            br#"{"name":"a","list":[[true]]}"#,
            br#"{"name":"a","inner":null,"list":[{"flag":true},[false]]}"#,
        ] {
            let error = from_slice::<Outer>(body).unwrap_err();
            assert!(
                error.to_string().contains("expected a JSON object"),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn trailing_input_after_the_object_is_refused() {
        assert!(from_slice::<Outer>(br#"{"name":"a"} {"name":"b"}"#).is_err());
        assert!(from_slice::<Outer>(b"{\"name\":\"a\"} \n").is_ok());
    }
}
