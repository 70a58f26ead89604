//! [`Payload`]: a JSON value held as its canonical compact text, for the values an agenda
//! keeps but pop never looks inside while folding: operations' payloads and results.
//!
//! Why: a `serde_json::Value` object is a `BTreeMap`, and a non-empty one allocates a whole
//! 632-byte node however few keys it has; a live agenda of five operations held nine of them
//! (issue 18, "Memory and a million agendas"). The text is one allocation the size of the JSON.
//!
//! The text is canonical — what `serde_json` writes for the `Value` (keys sorted, numbers as
//! the `Value` holds them) — so encoding a `Payload` gives exactly the bytes encoding the
//! `Value` gave: events, snapshots, answers and fingerprints are unchanged. Decoding reads a
//! `Value` first, then writes its text, whatever the input spelled. Code that looks inside
//! asks for [`Payload::to_value`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON value as its canonical compact text; `null` holds nothing.
#[derive(Clone, Default)]
pub struct Payload(Option<Box<RawValue>>);

impl Payload {
    /// `null`.
    pub const NULL: Payload = Payload(None);

    pub fn from_value(value: &Value) -> Payload {
        if value.is_null() {
            return Payload::NULL;
        }
        // Writing a `Value` cannot fail (its keys are strings, its numbers finite).
        Payload(serde_json::value::to_raw_value(value).ok())
    }

    /// The value (parsed from the text).
    pub fn to_value(&self) -> Value {
        match &self.0 {
            // The text was written from a `Value`, so it reads back.
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// The canonical compact JSON text (`null` for null).
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("null", RawValue::get)
    }

    /// Calls `f` with every string value in the tree (never a key), in document order: what
    /// [`crate::references::for_each_string`] does over [`Payload::to_value`], read straight
    /// from the text without building the `Value` (the references scan on every submit and
    /// every answer that lists an operation's dependencies).
    pub fn for_each_string(&self, f: &mut impl FnMut(&str)) {
        if let Some(raw) = &self.0 {
            let mut reader = serde_json::Deserializer::from_str(raw.get());
            // The text was written from a `Value`, so it reads.
            let _ = serde::de::DeserializeSeed::deserialize(Strings(f), &mut reader);
        }
    }
}

/// The seed and visitor of [`Payload::for_each_string`].
struct Strings<'f, F>(&'f mut F);

impl<'de, F: FnMut(&str)> serde::de::DeserializeSeed<'de> for Strings<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(&str)> serde::de::Visitor<'de> for Strings<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        (self.0)(v);
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strings(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(Strings(&mut *self.0))?;
        }
        Ok(())
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Payload {
        Payload::from_value(&value)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Payload {
        Payload::from_value(value)
    }
}

impl From<&Payload> for Value {
    fn from(payload: &Payload) -> Value {
        payload.to_value()
    }
}

/// Canonical texts are equal exactly when the values are (up to `0.0 == -0.0`, which a
/// `Value` calls equal and the texts do not).
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_json() == other.as_json()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialEq<Payload> for Value {
    fn eq(&self, other: &Payload) -> bool {
        other == self
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(s),
            None => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Payload::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_exactly_as_the_value() {
        for v in [
            json!(null),
            json!({"z": 1, "a": [1.0, 2.5e-8, -0.0, 18446744073709551615u64, -3], "m": {"y": null, "b": "é\n\"\u{1}"}}),
            json!("text"),
            json!(12),
            json!([]),
            json!({}),
        ] {
            let p = Payload::from_value(&v);
            assert_eq!(serde_json::to_string(&p).unwrap(), serde_json::to_string(&v).unwrap());
            assert_eq!(p.to_value(), v);
            assert_eq!(serde_json::to_value(&p).unwrap(), v);
            let read: Payload = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(read, p);
            assert_eq!(p, v);
        }
        // Whatever the input spells, the text is the canonical one.
        let read: Payload = serde_json::from_str(r#"{ "b" : 1.50, "a":[ 1 ,2] }"#).unwrap();
        assert_eq!(read.as_json(), r#"{"a":[1,2],"b":1.5}"#);
        assert!(Payload::from_value(&json!(null)).is_null());
        assert_eq!(Payload::NULL.as_json(), "null");
    }

    #[test]
    fn its_strings_are_the_values_strings() {
        for v in [
            json!(null),
            json!("@<a.out>"),
            json!({"z": ["@<b.out>", {"k": "@<c.out>/x", "@<key>": 1}], "a": "t\n\"é", "n": [1, null, true, 2.5]}),
            json!([[["deep"]], {}]),
        ] {
            let mut from_value = Vec::new();
            crate::references::for_each_string(&v, &mut |s| from_value.push(s.to_string()));
            let mut from_text = Vec::new();
            Payload::from_value(&v).for_each_string(&mut |s| from_text.push(s.to_string()));
            assert_eq!(from_text, from_value, "{v}");
        }
    }

    #[test]
    fn reads_from_any_deserializer() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct Holder {
            #[serde(default)]
            p: Payload,
        }
        let h: Holder = serde_json::from_value(json!({"p": {"k": [1, {"x": true}]}})).unwrap();
        assert_eq!(h.p.as_json(), r#"{"k":[1,{"x":true}]}"#);
        let h: Holder = serde_json::from_value(json!({})).unwrap();
        assert!(h.p.is_null());
        assert_eq!(serde_json::to_string(&h).unwrap(), r#"{"p":null}"#);
    }
}
