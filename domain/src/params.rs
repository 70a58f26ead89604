//! Parameter maps (`params`, `staticParameters`) and the lenient reading POP clients rely on:
//! `"5"` and `5` are both 5, `"true"` and `true` are both true.

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
///
/// Held as one sorted array of entries rather than a `BTreeMap`: a non-empty `BTreeMap`
/// allocates a whole node (632 bytes for `String` → `Value`) however few entries it holds,
/// and params hold one to three. Every live agenda keeps two copies (its own and its
/// AgendaProgress's), so this is a large share of the read models' memory (issue 18).
/// Encoding and decoding are those of a `BTreeMap`: keys in order, the last of duplicate keys
/// wins. A boxed slice, not a `Vec`: 16 bytes instead of 24 in each of the twelve params a
/// five-operation agenda holds, and never spare capacity (an insert reallocates; params are
/// written at submission and expansion only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(Box<[(String, Value)]>);

impl Params {
    pub fn new() -> Self {
        Self::default()
    }
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.find(key).ok().and_then(|i| self.0.get(i)).map(|(_, v)| v)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.find(&key) {
            Ok(i) => {
                if let Some(slot) = self.0.get_mut(i) {
                    slot.1 = value;
                }
            }
            Err(i) => {
                let mut entries = std::mem::take(&mut self.0).into_vec();
                entries.reserve_exact(1);
                entries.insert(i, (key, value));
                self.0 = entries.into_boxed_slice();
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    /// A string value; numbers and booleans are not strings here (use [`Params::get_text`]).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    /// The value as text: strings as they are, scalars in their JSON spelling.
    pub fn get_text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(value_as_text)
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(value_as_i64)
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(value_as_bool)
    }
    /// Merges `other` into `self`, `other` winning (used by expand).
    pub fn merge(&mut self, other: &Params) {
        for (k, v) in other.0.iter() {
            self.insert(k.clone(), v.clone());
        }
    }

    /// These params with `reported` merged in (reported keys winning), or `None` when
    /// `reported` changes none of them (an executor's report of an operation's params).
    pub fn merged_with(&self, reported: &Params) -> Option<Params> {
        if reported.iter().all(|(key, value)| self.get(key) == Some(value)) {
            return None;
        }
        let mut merged = self.clone();
        merged.merge(reported);
        Some(merged)
    }

    /// Sorts `entries` by key, keeping the last of equal keys (what inserting them one by one
    /// into a map does), with no spare capacity.
    fn from_entries(mut entries: Vec<(String, Value)>) -> Self {
        // Stable: equal keys stay in arrival order, so the last of each run is the winner.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, Value)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match out.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => out.push(entry),
            }
        }
        Params(out.into_boxed_slice())
    }
}

impl FromIterator<(String, Value)> for Params {
    fn from_iter<T: IntoIterator<Item = (String, Value)>>(iter: T) -> Self {
        Params::from_entries(iter.into_iter().collect())
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Params;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Params, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Params::from_entries(entries))
            }
        }
        d.deserialize_map(Entries)
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

    #[test]
    fn encodes_and_decodes_like_a_btreemap() {
        use std::collections::BTreeMap;
        let text = r#"{"z":1,"a":{"y":[1,"2"],"b":null},"m":"x","a":"last","e":3.5}"#;
        let p: Params = serde_json::from_str(text).unwrap();
        let m: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), serde_json::to_string(&m).unwrap());
        assert_eq!(p.get_str("a"), Some("last"));
        assert_eq!(p.len(), 4);
        let mut q = Params::new();
        for (k, v) in [("m", json!("x")), ("z", json!(0)), ("e", json!(3.5)), ("a", json!("last"))]
        {
            q.insert(k, v);
        }
        q.insert("z", 1);
        assert_eq!(q, p);
        assert_eq!(q.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "e", "m", "z"]);
        assert!(serde_json::from_str::<Params>("[1]").is_err());
    }
}
