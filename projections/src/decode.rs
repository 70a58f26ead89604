//! Turns a stored event into a typed domain event, chosen by the stream's category
//! (`agenda-<id>` → [`AgendaEvent`], `customer-<id>` → [`CustomerEvent`], …).
//!
//! Three outcomes, on purpose:
//! - a known category and type decodes to a [`DomainEvent`];
//! - an unknown category, type or schema version is [`Decoded::Skipped`]: a newer replica
//!   sharing the log may have written it, and an older reader must keep serving rather than
//!   stop the whole read side. The runner counts and logs every skip;
//! - a known type whose data does not decode is a [`DecodeError`]: that is a bug or a corrupt
//!   log, and folding past it would serve wrong read models without anyone noticing.

use pop_domain::EventCodec;
use pop_domain::agenda::AgendaEvent;
use pop_domain::codec::CodecError;
use pop_domain::config::{AgendaTemplateEvent, CustomerEvent, InsightEvent, ResourcePoolEvent};
use pop_domain::reap::ReapEvent;
use pop_store::{Position, RecordedEvent};

/// A decoded event of one of the categories the read side folds.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Agenda(AgendaEvent),
    Customer(CustomerEvent),
    ResourcePool(ResourcePoolEvent),
    Insight(InsightEvent),
    Template(AgendaTemplateEvent),
    /// A record of the data reaper's audit log (`reaps-<day>`): the named stream was deleted.
    Reap(ReapEvent),
}

/// What [`decode`] made of one stored event.
// Skips are rare and batches short-lived: boxing the event would cost an allocation per event
// on the rebuild's hot path to save bytes only in the rare skipped case.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// `id` is the stream's id: the part of the stream name after `<category>-`.
    Event {
        id: String,
        event: DomainEvent,
        /// The bytes the event takes in the log: its data and metadata (saturating), counted
        /// per customer for `--max-log-bytes-per-customer`.
        stored: u32,
    },
    Skipped(Skip),
}

/// Why an event was skipped (counted and logged by the runner, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("stream {stream:?} is of no category the read side knows")]
    UnknownCategory { stream: String },
    #[error("event type {event_type:?} is unknown in stream {stream:?}")]
    UnknownType { stream: String, event_type: String },
    #[error("event type {event_type:?} has schema version {version}, which this build cannot read")]
    UnknownVersion { stream: String, event_type: String, version: u32 },
}

/// A known event type whose data does not decode: a bug or a corrupt log.
#[derive(Debug, thiserror::Error)]
#[error("event {event_type:?} at position {position} of stream {stream:?} does not decode")]
pub struct DecodeError {
    pub position: Position,
    pub stream: String,
    pub event_type: String,
    #[source]
    pub source: CodecError,
}

/// The categories the read side folds, as written in stream names.
pub mod category {
    pub const AGENDA: &str = pop_domain::agenda::CATEGORY;
    pub const CUSTOMER: &str = <pop_domain::Customer as pop_domain::config::ConfigObject>::CATEGORY;
    pub const RESOURCE_POOL: &str =
        <pop_domain::ResourcePool as pop_domain::config::ConfigObject>::CATEGORY;
    pub const INSIGHT: &str = <pop_domain::Insight as pop_domain::config::ConfigObject>::CATEGORY;
    pub const TEMPLATE: &str =
        <pop_domain::AgendaTemplate as pop_domain::config::ConfigObject>::CATEGORY;
    pub const REAPS: &str = pop_domain::reap::CATEGORY;
}

/// Splits `<category>-<id>` at the first `-`: categories never contain one, ids may.
pub fn split_stream(stream: &str) -> Option<(&str, &str)> {
    stream.split_once('-').filter(|(category, id)| !category.is_empty() && !id.is_empty())
}

/// Decodes one stored event; see the module docs for the three outcomes.
pub fn decode(event: &RecordedEvent) -> Result<Decoded, DecodeError> {
    let Some((category, id)) = split_stream(&event.stream) else {
        return Ok(Decoded::Skipped(Skip::UnknownCategory { stream: event.stream.to_string() }));
    };
    let decoded = match category {
        category::AGENDA => typed::<AgendaEvent>(event).map(|e| e.map(DomainEvent::Agenda)),
        category::CUSTOMER => typed(event).map(|e| e.map(DomainEvent::Customer)),
        category::RESOURCE_POOL => typed(event).map(|e| e.map(DomainEvent::ResourcePool)),
        category::INSIGHT => typed(event).map(|e| e.map(DomainEvent::Insight)),
        category::TEMPLATE => typed(event).map(|e| e.map(DomainEvent::Template)),
        category::REAPS => typed(event).map(|e| e.map(DomainEvent::Reap)),
        _ => {
            return Ok(Decoded::Skipped(Skip::UnknownCategory {
                stream: event.stream.to_string(),
            }));
        }
    }?;
    Ok(match decoded {
        Ok(event_value) => Decoded::Event {
            id: id.to_string(),
            event: event_value,
            stored: u32::try_from(event.data.len().saturating_add(event.metadata.len()))
                .unwrap_or(u32::MAX),
        },
        Err(skip) => Decoded::Skipped(skip),
    })
}

/// `Ok(Ok(event))`, `Ok(Err(skip))` for unknown types and versions, `Err` for bad data.
fn typed<E: EventCodec>(event: &RecordedEvent) -> Result<Result<E, Skip>, DecodeError> {
    match E::decode(&event.event_type, event.schema_version, &event.data) {
        Ok(decoded) => Ok(Ok(decoded)),
        Err(CodecError::UnknownType { .. }) => Ok(Err(Skip::UnknownType {
            stream: event.stream.to_string(),
            event_type: event.event_type.to_string(),
        })),
        Err(CodecError::UnknownVersion { version, .. }) => Ok(Err(Skip::UnknownVersion {
            stream: event.stream.to_string(),
            event_type: event.event_type.to_string(),
            version,
        })),
        Err(source) => Err(DecodeError {
            position: event.position,
            stream: event.stream.to_string(),
            event_type: event.event_type.to_string(),
            source,
        }),
    }
}
