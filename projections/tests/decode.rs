//! Decode dispatch: stream category → domain event type; unknown categories, types and
//! versions are skips, bad data of a known type is an error naming the position.
// Helpers outside `#[test]` functions unwrap too: in a test binary a failing fixture is a
// test bug, and the panic names it.
#![allow(clippy::unwrap_used)]

use pop_domain::EventCodec;
use pop_domain::agenda::{AgendaEvent, AgendaQueued};
use pop_domain::config::ConfigEvent;
use pop_domain::{AgendaTemplate, Customer, Insight, ResourcePool};
use pop_projections::{Decoded, DomainEvent, Skip, decode};
use pop_store::{Position, RecordedEvent};

fn recorded(stream: &str, event: &impl EventCodec) -> RecordedEvent {
    RecordedEvent {
        position: Position::from_sequence(7),
        stream: stream.into(),
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        data: event.encode().unwrap().into(),
        ..RecordedEvent::default()
    }
}

fn raw(stream: &str, event_type: &str, version: u32, data: &str) -> RecordedEvent {
    RecordedEvent {
        position: Position::from_sequence(42),
        stream: stream.into(),
        event_type: event_type.into(),
        schema_version: version,
        data: data.as_bytes().to_vec().into(),
        ..RecordedEvent::default()
    }
}

fn time() -> pop_domain::Timestamp {
    chrono::DateTime::from_timestamp_millis(1_736_935_200_000).unwrap()
}

fn config<T: Default>() -> ConfigEvent<T> {
    ConfigEvent::Created { object: T::default(), time: time() }
}

#[test]
fn each_category_decodes_to_its_event_type() {
    let queued = AgendaEvent::Queued(AgendaQueued { time: time() });
    match decode(&recorded("agenda-a-1", &queued)).unwrap() {
        Decoded::Event { id, event: DomainEvent::Agenda(e), .. } => {
            assert_eq!(id, "a-1", "ids may contain dashes");
            assert_eq!(e, queued);
        }
        other => panic!("{other:?}"),
    }
    let cases: Vec<(&str, Decoded)> = vec![
        ("customer-c", decode(&recorded("customer-c", &config::<Customer>())).unwrap()),
        ("resourcepool-p", decode(&recorded("resourcepool-p", &config::<ResourcePool>())).unwrap()),
        ("insight-i", decode(&recorded("insight-i", &config::<Insight>())).unwrap()),
        ("template-t", decode(&recorded("template-t", &config::<AgendaTemplate>())).unwrap()),
    ];
    let kinds: Vec<_> = cases
        .iter()
        .map(|(stream, d)| match d {
            Decoded::Event { event: DomainEvent::Customer(_), .. } => (*stream, "customer"),
            Decoded::Event { event: DomainEvent::ResourcePool(_), .. } => (*stream, "resourcepool"),
            Decoded::Event { event: DomainEvent::Insight(_), .. } => (*stream, "insight"),
            Decoded::Event { event: DomainEvent::Template(_), .. } => (*stream, "template"),
            other => panic!("{stream}: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("customer-c", "customer"),
            ("resourcepool-p", "resourcepool"),
            ("insight-i", "insight"),
            ("template-t", "template")
        ]
    );
}

#[test]
fn unknown_categories_types_and_versions_are_skipped() {
    let skip = |e: RecordedEvent| match decode(&e).unwrap() {
        Decoded::Skipped(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(matches!(skip(raw("reaper-1", "X", 1, "{}")), Skip::UnknownCategory { .. }));
    assert!(matches!(skip(raw("nodash", "X", 1, "{}")), Skip::UnknownCategory { .. }));
    assert!(matches!(skip(raw("agenda-", "AgendaQueued", 1, "{}")), Skip::UnknownCategory { .. }));
    assert!(matches!(skip(raw("agenda-a", "AgendaTeleported", 1, "{}")), Skip::UnknownType { .. }));
    assert!(matches!(skip(raw("customer-a", "AgendaQueued", 1, "{}")), Skip::UnknownType { .. }));
    assert_eq!(
        skip(raw("agenda-a", "AgendaQueued", 2, "{}")),
        Skip::UnknownVersion {
            stream: "agenda-a".into(),
            event_type: "AgendaQueued".into(),
            version: 2
        }
    );
}

#[test]
fn bad_data_of_a_known_type_is_an_error_with_the_position() {
    let err = decode(&raw("agenda-a", "AgendaQueued", 1, "{\"time\": \"soon\"}")).unwrap_err();
    assert_eq!(err.position, Position::from_sequence(42));
    let text = err.to_string();
    assert!(text.contains("position 42") && text.contains("agenda-a"), "{text}");
    let err = decode(&raw("insight-i", "InsightCreated", 1, "not json")).unwrap_err();
    assert!(err.to_string().contains("InsightCreated"));
}
