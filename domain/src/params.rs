//! Parameter maps (`params`, `staticParameters`) and the lenient reading POP clients rely on:
//! `"5"` and `5` are both 5, `"true"` and `true` are both true.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, de::Error};
use serde_json::Value;

/// Parameter keys with meaning (DOMAIN.md §2, §5, §8).
pub mod keys {
    pub const DO_NOT_RUN: &str = "doNotRun";
    pub const MAXIMUM_ATTEMPTS: &str = "maximumAttempts";
    pub const DEFAULT_INSIGHT: &str = "defaultInsight";
    pub const EXTERNAL_ID: &str = "externalId";
    pub const PRIORITY: &str = "priority";
    pub const DEPENDS_ON: &str = "dependsOn";
    pub const GENERATED_OPERATION_PARENT: &str = "generatedOperationParent";
    pub const GENERATOR: &str = "agenda.operation.generator";
}

/// A JSON object of parameters, kept in key order so that encoding is deterministic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }
    /// A string value; numbers and booleans are not strings here (use [`Params::get_text`]).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// The value as text: strings as they are, scalars in their JSON spelling.
    pub fn get_text(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(value_as_text)
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(value_as_i64)
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(value_as_bool)
    }
    /// Merges `other` into `self`, `other` winning (used by expand).
    pub fn merge(&mut self, other: &Params) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), v.clone());
        }
    }
}

impl FromIterator<(String, Value)> for Params {
    fn from_iter<T: IntoIterator<Item = (String, Value)>>(iter: T) -> Self {
        Params(iter.into_iter().collect())
    }
}

/// Scalars as text; objects and arrays have no text form here.
pub fn value_as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `5`, `5.0` and `"5"` are all 5.
pub fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
        }
        _ => None,
    }
}

/// `true` and `"true"` (any case) are true; likewise false.
pub fn value_as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Serde helper: a boolean sent as `true` or `"true"`; null or absent is false.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(false);
    }
    value_as_bool(&v).ok_or_else(|| D::Error::custom(format!("expected a boolean, got {v}")))
}

/// Serde helper: an integer sent as `5` or `"5"`; null or absent is 0.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(0);
    }
    value_as_i64(&v).ok_or_else(|| D::Error::custom(format!("expected an integer, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_values() {
        let p: Params = serde_json::from_value(json!({
            "a": "5", "b": 5, "c": "true", "d": true, "e": " 7 ", "f": 3.0, "g": "x"
        }))
        .unwrap();
        assert_eq!(p.get_i64("a"), Some(5));
        assert_eq!(p.get_i64("b"), Some(5));
        assert_eq!(p.get_bool("c"), Some(true));
        assert_eq!(p.get_bool("d"), Some(true));
        assert_eq!(p.get_i64("e"), Some(7));
        assert_eq!(p.get_i64("f"), Some(3));
        assert_eq!(p.get_i64("g"), None);
        assert_eq!(p.get_bool("g"), None);
        assert_eq!(p.get_text("b").as_deref(), Some("5"));
    }
}
