//! Golden fixtures pin the stored shape of the reap log's events (the DataObjectReaper's audit
//! trail): every type in `reap::EVENT_TYPES` has a fixture under `tests/fixtures/events/` that
//! decodes, re-encodes to the same JSON and folds.

use std::path::PathBuf;

use pop_domain::reap::{EVENT_TYPES, ReapEvent, ReapLog};
use pop_domain::{Aggregate, EventCodec};
use serde_json::Value;

#[test]
fn every_reap_event_type_has_a_fixture_that_round_trips() {
    for &(event_type, version) in EVENT_TYPES {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events")
            .join(format!("{event_type}.v{version}.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{event_type} v{version} has no fixture at {}: {e}", path.display())
        });
        let expected: Value = serde_json::from_slice(&bytes).expect("fixture is JSON");
        let event = ReapEvent::decode(event_type, version, &bytes).expect("fixture decodes");
        assert_eq!((event.event_type(), event.schema_version()), (event_type, version));
        let actual: Value =
            serde_json::from_slice(&event.encode().expect("encodes")).expect("JSON");
        assert_eq!(actual, expected, "{event_type} v{version} re-encodes differently");
        let mut log = ReapLog::default();
        log.evolve(&event);
        let ReapEvent::StreamReaped(e) = &event;
        assert!(log.records(&e.stream));
    }
}
