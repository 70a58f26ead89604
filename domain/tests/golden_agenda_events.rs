//! Golden fixtures pin the stored shape of every agenda event: each fixture under
//! `tests/fixtures/events/<EventType>.v<version>.json` decodes, re-encodes to the same JSON, and
//! every type in `agenda::EVENT_TYPES` has one. A change that breaks this needs a new schema
//! version and an upcaster, not an edited fixture.

use std::path::PathBuf;

use pop_domain::EventCodec;
use pop_domain::agenda::{AgendaEvent, AgendaState, EVENT_TYPES};
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
fn event_types_are_unique_and_all_version_1() {
    let mut names: Vec<_> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EVENT_TYPES.len());
    assert!(EVENT_TYPES.iter().all(|(_, v)| *v == 1));
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
