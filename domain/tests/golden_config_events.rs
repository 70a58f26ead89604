//! Golden fixtures pin the stored shape of every config event (Customer, ResourcePool, Insight,
//! AgendaTemplate): each fixture decodes, re-encodes to the same JSON, and every event type the
//! codec writes has one. A change that breaks this needs a new schema version and an upcaster,
//! not an edited fixture.

use std::path::PathBuf;

use pop_domain::EventCodec;
use pop_domain::config::{
    self, AgendaTemplateEvent, ConfigEvent, ConfigObject, CustomerEvent, InsightEvent,
    ResourcePoolEvent,
};
use serde_json::Value;

fn fixture_path(event_type: &str, version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(format!("{event_type}.v{version}.json"))
}

/// Decodes every fixture of `T`'s event types, re-encodes it and compares the JSON; returns the
/// problems found so one run reports every broken fixture.
fn check_fixtures<T: ConfigObject>(problems: &mut Vec<String>) {
    for &(event_type, version) in ConfigEvent::<T>::EVENT_TYPES {
        let path = fixture_path(event_type, version);
        let Ok(bytes) = std::fs::read(&path) else {
            problems.push(format!("{event_type} v{version} has no fixture at {}", path.display()));
            continue;
        };
        let event = match ConfigEvent::<T>::decode(event_type, version, &bytes) {
            Ok(event) => event,
            Err(e) => {
                problems.push(format!("{}: does not decode: {e}", path.display()));
                continue;
            }
        };
        if event.event_type() != event_type || event.schema_version() != version {
            problems.push(format!("{}: decodes as {}", path.display(), event.event_type()));
        }
        // Fixtures are realistic: what decide accepts (a deletion carries an accepted object).
        if let Err(e) = config::validate(event.object()) {
            problems.push(format!("{}: object would be rejected: {e}", path.display()));
        }
        let expected: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{}: not JSON: {e}", path.display()));
                continue;
            }
        };
        let actual = event
            .encode()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()));
        match actual {
            Ok(actual) if actual == expected => {}
            Ok(actual) => problems.push(format!(
                "{}: re-encodes differently:\n{}",
                path.display(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            )),
            Err(e) => problems.push(format!("{}: does not re-encode: {e}", path.display())),
        }
    }
}

#[test]
fn every_config_event_type_has_a_fixture_that_round_trips() {
    let mut problems = Vec::new();
    check_fixtures::<pop_domain::Customer>(&mut problems);
    check_fixtures::<pop_domain::ResourcePool>(&mut problems);
    check_fixtures::<pop_domain::Insight>(&mut problems);
    check_fixtures::<pop_domain::AgendaTemplate>(&mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_checked_enums_cover_every_config_event_type() {
    let checked = [
        CustomerEvent::EVENT_TYPES,
        ResourcePoolEvent::EVENT_TYPES,
        InsightEvent::EVENT_TYPES,
        AgendaTemplateEvent::EVENT_TYPES,
    ]
    .concat();
    assert_eq!(checked, config::event_types());
}
