//! Serde readers for the JSON POP's Java clients write (Jackson): every unset field `null`, and
//! numbers and booleans often as strings. The domain's value types read their fields through
//! these so that an unchanged POP client is understood; what they write stays pop's own JSON.
//!
//! Each reader takes the value straight from the deserializer (no intermediate
//! `serde_json::Value`), because the same types are decoded on the replay hot path.

use std::fmt;

use serde::de::{Deserializer, Error, Visitor};

/// `Option<String>` read from a string, a number or a boolean (their JSON text); `null` is
/// `None`. For fields POP types as `String` that older pop versions wrote as numbers (e.g.
/// `DiagnosticEvent.statusCode`).
pub mod text {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(TextVisitor)
    }

    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a number or a boolean")
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())))
        }
        fn visit_bool<E: Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(TextVisitor)
        }
    }
}
