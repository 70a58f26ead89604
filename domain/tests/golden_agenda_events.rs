//! Golden fixtures pin the stored shape of every agenda event: each fixture under
//! `tests/fixtures/events/<EventType>.v<version>.json` decodes, re-encodes to the same JSON, and
//! every type in `agenda::EVENT_TYPES` has one. A change that breaks this needs a new schema
//! version and an upcaster, not an edited fixture.

use std::path::PathBuf;

use pop_domain::EventCodec;
use pop_domain::agenda::{AgendaEvent, AgendaState, EVENT_TYPES, OLDER_EVENT_VERSIONS};
use pop_domain::{Aggregate, CodecError};
use serde_json::Value;

fn fixture_path(event_type: &str, version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(format!("{event_type}.v{version}.json"))
}

fn decode_fixture(event_type: &str, version: u32) -> Result<(Value, AgendaEvent), String> {
    let path = fixture_path(event_type, version);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!("{event_type} v{version} has no fixture at {}: {e}", path.display())
    })?;
    let expected: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let event = AgendaEvent::decode(event_type, version, &bytes)
        .map_err(|e| format!("{}: does not decode: {e}", path.display()))?;
    Ok((expected, event))
}

#[test]
fn every_agenda_event_type_has_a_fixture_that_round_trips() {
    let mut problems = Vec::new();
    for &(event_type, version) in EVENT_TYPES {
        let (expected, event) = match decode_fixture(event_type, version) {
            Ok(found) => found,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        if event.event_type() != event_type || event.schema_version() != version {
            problems.push(format!("{event_type} v{version} decodes as {}", event.event_type()));
        }
        let actual = event
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
        match actual {
            Ok(actual) if actual == expected => {}
            Ok(actual) => problems.push(format!(
                "{event_type} v{version} re-encodes differently:\n{}",
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            )),
            Err(e) => problems.push(format!("{event_type} v{version} does not re-encode: {e}")),
        }
        // A decoded event must also apply: evolve is total, and the stored shape is what the
        // projections will replay.
        let mut state = AgendaState::default();
        state.evolve(&event);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn event_types_are_unique_and_every_version_below_the_current_one_is_still_read() {
    let mut names: Vec<_> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EVENT_TYPES.len());
    // Versions start at 1 and none is ever dropped: each type's older versions are exactly
    // 1..current, all listed as still read.
    for &(event_type, current) in EVENT_TYPES {
        let mut older: Vec<u32> = OLDER_EVENT_VERSIONS
            .iter()
            .filter(|(n, _)| *n == event_type)
            .map(|(_, v)| *v)
            .collect();
        older.sort_unstable();
        assert_eq!(older, (1..current).collect::<Vec<_>>(), "{event_type} v{current}");
    }
    assert!(OLDER_EVENT_VERSIONS.iter().all(|(n, _)| names.contains(n)));
}

/// The documented upcast of `AgendaProgressReported` v1: `statusCode` numbers become their
/// text; nothing else changes.
fn upcast_progress_reported_v1(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "statusCode" && v.is_number() {
                    *v = Value::String(v.to_string());
                } else {
                    upcast_progress_reported_v1(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(upcast_progress_reported_v1),
        _ => {}
    }
}

#[test]
fn every_older_version_keeps_decoding_into_the_current_shape() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut checked = 0;
    for &(event_type, version) in OLDER_EVENT_VERSIONS {
        // `<type>.v<version>.json` and any `<type>.v<version>.<case>.json`.
        let prefix = format!("{event_type}.v{version}.");
        let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("the fixture directory")
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
            })
            .collect();
        fixtures.sort();
        assert!(!fixtures.is_empty(), "{event_type} v{version} has no fixture");
        for path in fixtures {
            let bytes = std::fs::read(&path).expect("fixture readable");
            let event = AgendaEvent::decode(event_type, version, &bytes)
                .unwrap_or_else(|e| panic!("{}: does not decode: {e}", path.display()));
            let mut expected: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
            match event_type {
                "AgendaProgressReported" => upcast_progress_reported_v1(&mut expected),
                other => panic!("no documented upcast for {other} v{version}"),
            }
            let actual: Value =
                serde_json::from_slice(&event.encode().expect("encodes")).expect("JSON");
            assert_eq!(actual, expected, "{} upcasts differently", path.display());
            let mut state = AgendaState::default();
            state.evolve(&event);
            checked += 1;
        }
    }
    assert!(checked >= 2, "the v1 fixture and the numeric statusCode case");
}

#[test]
fn unknown_types_versions_and_shapes_are_typed_errors() {
    assert!(matches!(
        AgendaEvent::decode("AgendaExploded", 1, b"{}"),
        Err(CodecError::UnknownType { .. })
    ));
    assert!(matches!(
        AgendaEvent::decode("AgendaQueued", 2, b"{\"time\": 0}"),
        Err(CodecError::UnknownVersion { version: 2, .. })
    ));
    assert!(matches!(
        AgendaEvent::decode("AgendaQueued", 1, b"{\"when\": 0}"),
        Err(CodecError::Malformed { .. })
    ));
}
