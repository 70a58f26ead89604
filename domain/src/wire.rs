//! Serde readers for the JSON POP's Java clients write (Jackson): every unset field `null`, and
//! numbers and booleans often as strings. The domain's value types read their fields through
//! these so that an unchanged POP client is understood; what they write stays pop's own JSON.
//!
//! Each reader takes the value straight from the deserializer (no intermediate
//! `serde_json::Value`), because the same types are decoded on the replay hot path.
//!
//! [`from_json`] reads a whole request object and names a value that does not fit by its JSON
//! path, through `serde_path_to_error` (dtolnay's, already in the tree through axum; tracking
//! the path by hand would mean a visitor per type).

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
            Ok(Some(
                serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string()),
            ))
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

/// Reads a request's JSON object named `root` (e.g. `agenda`) into `T`. A value that does
/// not fit is one validation problem at its exact JSON path inside `root`
/// (`agenda.operations[1].type`), not at `root` as a whole.
pub fn from_json<T: serde::de::DeserializeOwned>(
    root: &str,
    value: serde_json::Value,
) -> Result<T, crate::error::ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = crate::error::join_path(root, &e.path().to_string());
        let mut errors = crate::error::ValidationErrors::new();
        errors.push(field, e.into_inner().to_string());
        errors
    })
}

/// A field whose `null` means "absent": the type's default (an empty string, list or map,
/// WAITING, FirstInFirstOut, ...). Jackson writes every unset field as `null`.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

/// A list whose `null` entries are skipped (and whose own `null` is empty): a report's
/// operations and diagnostics, as POP's server skipped them (`AgendaProgressRequestProcessor`:
/// `if(op == null) continue; // help the user a slight bit`). Refused, an executor that sends
/// the same report again loses its lease (popclient54 M2).
///
/// Read in one pass into the list kept: these lists are decoded with every stored progress on
/// the replay path, where a list of options then a second list cost two allocations each.
pub fn skipping_nulls<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Skipping<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for Skipping<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence (or null)")
        }
        fn visit_unit<E: Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // The hint is the sender's: bounded, so a false one cannot reserve much.
            let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element::<Option<T>>()? {
                kept.extend(item);
            }
            Ok(kept)
        }
    }

    d.deserialize_option(Skipping(std::marker::PhantomData))
}

/// A count (`attemptCount`, `attemptsCompleted`, `maximumAttempts`): a non-negative integer
/// given as a number (`2`, `2.0`) or a numeric string (`"2"`); `null` is 0.
pub mod count {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(CountVisitor)
    }

    struct CountVisitor;

    fn from_i128<E: Error>(v: i128) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("count {v} is not within 0..={}", u32::MAX)))
    }

    fn from_f64<E: Error>(v: f64) -> Result<u32, E> {
        if v.is_finite() && v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) {
            Ok(v as u32)
        } else {
            Err(E::custom(format!("count {v} is not a whole number within 0..={}", u32::MAX)))
        }
    }

    impl<'de> Visitor<'de> for CountVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer (a number or a numeric string)")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u32, E> {
            from_i128(i128::from(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u32, E> {
            from_i128(i128::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<u32, E> {
            from_f64(v)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<u32, E> {
            let t = v.trim();
            if t.is_empty() {
                return Ok(0);
            }
            match (t.parse::<i128>(), t.parse::<f64>()) {
                (Ok(n), _) => from_i128(n),
                (_, Ok(f)) => from_f64(f),
                _ => Err(E::custom(format!("{v:?} is not a number"))),
            }
        }
        fn visit_unit<E: Error>(self) -> Result<u32, E> {
            Ok(0)
        }
        fn visit_none<E: Error>(self) -> Result<u32, E> {
            Ok(0)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
            d.deserialize_any(CountVisitor)
        }
    }
}

/// An optional number (`percentComplete`): a number or a numeric string (`"45.5"`, and the
/// `"NaN"` and `"Infinity"` Jackson writes for a ratio with nothing to divide by, which the
/// caller decides about); `null` and a blank string are `None`.
pub mod number {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_any(NumberVisitor)
    }

    struct NumberVisitor;

    impl<'de> Visitor<'de> for NumberVisitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or a numeric string")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            let t = v.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<f64>().map(Some).map_err(|_| E::custom(format!("{v:?} is not a number")))
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(NumberVisitor)
        }
    }
}

/// An insight's `mappers`: `null` is none, and a mapper whose value set is `null` has no
/// values (Jackson writes a `Map<String, Set<String>>` entry set to null that way).
pub fn mappers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>, D::Error> {
    use std::collections::{BTreeMap, BTreeSet};
    let read: Option<BTreeMap<String, Option<BTreeSet<String>>>> =
        serde::Deserialize::deserialize(d)?;
    Ok(read
        .unwrap_or_default()
        .into_iter()
        .map(|(name, values)| (name, values.unwrap_or_default()))
        .collect())
}

/// The top-level keys of a POP agenda, as its clients write them.
pub const AGENDA_KEYS: &[&str] = &[
    "id",
    "cid",
    "customerId",
    "title",
    "linkId",
    "jobId",
    "externalId",
    "progressId",
    "operations",
    "params",
    "agendaInsight",
    "addedTime",
    "updatedTime",
    "doNotRun",
];

/// How many unknown keys of one object [`misspelt_keys`] looks at.
const MAX_KEYS_LOOKED_AT: usize = 64;

/// How many operations [`misspelt_agenda_keys`] looks into.
const MAX_OPERATIONS_LOOKED_AT: usize = 1_000;

/// The keys of a POP operation.
pub const OPERATION_KEYS: &[&str] = &["name", "type", "id", "payload", "params"];

/// The keys of `object` that are none of `known` but close to one, each with the one it is near: a
/// misspelling that a reader ignoring unknown fields (pop, for POP's clients) drops. At most two
/// edits apart ignoring ASCII case; a short key (four characters or fewer) only one edit from one
/// of its own length (review60 L4: `ts`, `time`, `note` were taken for `id`, `type`, `name`);
/// never near a key the object already has (renew60 L1: `note` beside `name`).
pub fn misspelt_keys<'o>(
    object: &'o serde_json::Map<String, serde_json::Value>,
    known: &[&'static str],
) -> Vec<(&'o str, &'static str)> {
    // Only keys that can be two edits from a known one, and at most a few of them: a hint,
    // which must cost next to nothing whatever a body holds (review61b H1: one unknown key of
    // 2 MiB took 4.6 s of an async worker, compared with every known key).
    let longest = known.iter().map(|k| k.len()).max().unwrap_or(0) + 2;
    let keys = object.keys().filter(|key| key.len() <= longest && !known.contains(&key.as_str()));
    keys.take(MAX_KEYS_LOOKED_AT)
        .filter_map(|key| {
            let lower = key.to_ascii_lowercase();
            let (distance, near) = known
                .iter()
                .map(|k| (crate::text::edit_distance(&lower, &k.to_ascii_lowercase()), *k))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)?;
            let short = key.chars().count() <= 4;
            let same_length = key.chars().count() == near.chars().count();
            let plausible = !short
                || (distance <= 1 && same_length)
                || swapped(&lower, &near.to_ascii_lowercase());
            (plausible && !object.contains_key(near)).then_some((key.as_str(), near))
        })
        .collect()
}

/// Whether `a` is `b` with two neighbouring characters swapped (`nmae`, `name`): one slip of
/// the fingers, where the edit distance counts two (newcomer61 L1).
fn swapped(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len() != b.len() {
        return false;
    }
    let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    matches!(differ[..], [i, j] if j == i + 1 && a[i] == b[j] && a[j] == b[i])
}

/// The misspelt keys of a POP agenda ([`misspelt_keys`]), at its top level and in each of its
/// operations: each key's path in the agenda (`operatoins`, `operations[1].nmae`) and what is
/// said of it (`unknown key "operatoins" at the top level; did you mean "operations"?`).
pub fn misspelt_agenda_keys(agenda: &serde_json::Value) -> Vec<(String, String)> {
    let Some(object) = agenda.as_object() else { return Vec::new() };
    let mut said = Vec::new();
    let mut say = |object, known, at: &str, place: &str| {
        for (key, near) in misspelt_keys(object, known) {
            let path = crate::error::join_path(at, key);
            said.push((path, format!("unknown key {key:?} {place}; did you mean {near:?}?")));
        }
    };
    say(object, AGENDA_KEYS, "", "at the top level");
    let operations = object.get("operations").and_then(serde_json::Value::as_array);
    for (i, operation) in
        operations.into_iter().flatten().take(MAX_OPERATIONS_LOOKED_AT).enumerate()
    {
        if let Some(operation) = operation.as_object() {
            say(
                operation,
                OPERATION_KEYS,
                &format!("operations[{i}]"),
                &format!("in operations[{i}]"),
            );
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(default, deserialize_with = "super::count::deserialize")]
        count: u32,
        #[serde(default, deserialize_with = "super::number::deserialize")]
        number: Option<f64>,
        #[serde(default, deserialize_with = "super::text::deserialize")]
        text: Option<String>,
        #[serde(default, deserialize_with = "super::or_default")]
        list: Vec<String>,
    }

    #[test]
    fn a_value_that_does_not_fit_is_named_by_its_path() {
        let bad = json!({"customerId": "acme", "operations": [
            {"name": "a"}, {"name": "b", "params": {"x": 1}, "type": 5}]});
        let e = super::from_json::<crate::Agenda>("agenda", bad).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].field, "agenda.operations[1].type");
        assert!(e.errors[0].message.contains("expected a string"), "{e}");
        let e = super::from_json::<crate::Agenda>("agenda", json!("x")).unwrap_err();
        assert_eq!(e.errors[0].field, "agenda");
        let e = super::from_json::<crate::AgendaProgress>(
            "agendaProgress",
            json!({"operationProgress": [{"percentComplete": "fast"}]}),
        )
        .unwrap_err();
        assert_eq!(e.errors[0].field, "agendaProgress.operationProgress[0].percentComplete");
    }

    fn probe(v: serde_json::Value) -> Result<Probe, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn scalars_arrive_as_numbers_strings_or_null() {
        let p = probe(json!({"count": "3", "number": "45.5", "text": 7, "list": null})).unwrap();
        assert_eq!(p, Probe { count: 3, number: Some(45.5), text: Some("7".into()), list: vec![] });
        let p = probe(json!({"count": 3.0, "number": 1, "text": true})).unwrap();
        assert_eq!((p.count, p.number, p.text.as_deref()), (3, Some(1.0), Some("true")));
        let p = probe(json!({"count": null, "number": " ", "text": null})).unwrap();
        assert_eq!((p.count, p.number, p.text), (0, None, None));
        assert!(probe(json!({"number": "NaN"})).unwrap().number.is_some_and(f64::is_nan));
        let p = probe(json!({"number": "-Infinity"})).unwrap();
        assert_eq!(p.number, Some(f64::NEG_INFINITY));
        for bad in [
            json!({"count": -1}),
            json!({"count": "x"}),
            json!({"count": 1.5}),
            json!({"count": 5_000_000_000_u64}),
            json!({"number": "fast"}),
            json!({"text": {"a": 1}}),
            json!({"list": "x"}),
        ] {
            assert!(probe(bad.clone()).is_err(), "{bad}");
        }
    }

    /// A misspelt key is named with the key it is near; a short key of one's own is not taken
    /// for one two edits away, but a swap of two neighbouring letters is a slip, not a key of
    /// one's own.
    #[test]
    fn misspelt_keys_are_named_and_keys_of_ones_own_are_not() {
        let agenda = json!({"linkID": "b", "note": 1, "operations": [
            {"nmae": "a", "type": "x"}, {"name": "b", "tpye": "x"},
            {"name": "c", "type": "x", "ts": 1, "time": 2, "note": 3}]});
        let said = super::misspelt_agenda_keys(&agenda);
        let paths: Vec<&str> = said.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["linkID", "operations[0].nmae", "operations[1].tpye"]);
        assert_eq!(said[1].1, r#"unknown key "nmae" in operations[0]; did you mean "name"?"#);
        assert!(!super::swapped("ts", "id") && super::swapped("tpye", "type"));
        // A key far longer than any known one is no misspelling of one, and is not compared.
        let huge = json!({"k".repeat(4 << 20): 1, "operatoins": []});
        let started = std::time::Instant::now();
        let said = super::misspelt_agenda_keys(&huge);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }
}
