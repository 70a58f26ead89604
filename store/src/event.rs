//! The values that cross the store boundary: events going in, events coming out, expected
//! versions and the metadata every pop event carries.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use pop_domain::{CodecError, EventCodec};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Position;

/// What the caller believes about a stream before appending (EventStoreDB semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check at all.
    Any,
    /// The stream has no events yet (and was never deleted).
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this version (the first event is version 0).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `current` (`None`: no events) satisfies this.
    pub fn admits(self, current: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(v) => current == Some(v),
        }
    }

    /// The version the first appended event would get if this expectation held, when that is
    /// determined by the expectation alone (`Any` and `StreamExists` leave it open).
    pub fn first_new_version(self) -> Option<u64> {
        match self {
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => v.checked_add(1),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => None,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where a stream actually is, as reported in a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActualVersion {
    /// The stream has no events.
    NoStream,
    /// The version of the stream's last event.
    Version(u64),
}

impl ActualVersion {
    pub fn from_current(current: Option<u64>) -> ActualVersion {
        current.map_or(ActualVersion::NoStream, ActualVersion::Version)
    }
}

impl fmt::Display for ActualVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActualVersion::NoStream => f.write_str("no stream"),
            ActualVersion::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// Which way `read_stream` walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// An event to append. `data` and `metadata` are JSON bytes, stored and returned byte for
/// byte; `metadata` may also be empty (no metadata). `Default` lets callers and tests name
/// only the fields they care about, so fields added later (e.g. a per-event hash) do not
/// break them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEvent {
    /// Unique across the whole log; the key of idempotent re-appends. Not nil.
    pub event_id: Uuid,
    /// The persisted type name (never renamed once written).
    pub event_type: String,
    /// The shape version of `data` for this type.
    pub schema_version: u32,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

impl NewEvent {
    /// Encodes domain events for one append, each with a fresh UUID v7 id and the same
    /// `metadata` (what the command path writes; seeders and tests use it too).
    pub fn encode_all<E: EventCodec>(
        events: &[E],
        metadata: &[u8],
    ) -> Result<Vec<NewEvent>, CodecError> {
        events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: e.event_type().to_owned(),
                    schema_version: e.schema_version(),
                    data: e.encode()?,
                    metadata: metadata.to_vec(),
                })
            })
            .collect()
    }

    /// The bytes this event weighs against the append limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.metadata.len() + self.event_type.len()
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedEvent {
    /// Global, in commit order.
    pub position: Position,
    /// Shared, not copied per event: a read names each stream and type once per batch.
    pub stream: Arc<str>,
    /// Within the stream, from 0, contiguous.
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: Arc<str>,
    pub schema_version: u32,
    /// The bytes appended, byte for byte. A read may hand out the data and metadata of many
    /// events as slices of one shared buffer (SQLite: chunks of 32 KiB, no allocation per
    /// event): an event kept for long keeps its buffer alive, so copy out (`to_vec`) what is
    /// kept apart from its batch.
    pub data: Bytes,
    pub metadata: Bytes,
    /// When the store committed it, by the store's injected clock, to the microsecond.
    pub recorded_at: DateTime<Utc>,
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream's version after the append: the version of its last event.
    pub version: u64,
    /// The global position of the last event appended (read-your-writes token).
    pub position: Position,
}

/// The metadata every pop event carries, as camelCase JSON. Unknown fields are ignored when
/// reading, so later fields can be added without breaking old readers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The tenant the event belongs to; `None` for system-wide streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The client's correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The command that caused this one: one id per executed command, shared by all the
    /// events it appended (events written before the audit work may lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who asked, as `<role>:<principal name>`: `user:alice`, `service:pool-worker`,
    /// `admin:ops`, or `system:<process>` for the timed processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The use case or command that appended the event (`submitAgenda`,
    /// `updateAgendaProgress`, `queue`, `reclaim`, …), for audit timelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The W3C `traceparent` of the request that caused the event (the request span's, when
    /// the server exports traces; else the client's header as sent), so work done later for
    /// the same object (a worker's execution of an agenda) joins the request's trace. At most
    /// [`TRACEPARENT_MAX_BYTES`]; events written before tracing lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with [`Self::traceparent`] (vendors' trace data, handed
    /// back with the traceparent so a worker's calls carry it on). Only with a traceparent, at
    /// most [`TRACESTATE_MAX_BYTES`] ([`valid_tracestate`]); absent in most events, and in
    /// every event written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// The length of a version-00 W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), the only
/// form pop stores: far inside [`crate::limits::MAX_EVENT_METADATA_BYTES`].
pub const TRACEPARENT_MAX_BYTES: usize = 55;

/// `value` when it is a well-formed version-00 W3C `traceparent` (lowercase hex, neither id
/// all zeros); anything else is no trace context at all, as the W3C recommendation says of
/// a header that does not parse.
pub fn valid_traceparent(value: &str) -> Option<&str> {
    let value = value.trim();
    let bytes = value.as_bytes();
    if bytes.len() != TRACEPARENT_MAX_BYTES {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| {
        bytes[r].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let zeros = |r: std::ops::Range<usize>| bytes[r].iter().all(|b| *b == b'0');
    let shaped = value.starts_with("00-") && bytes[35] == b'-' && bytes[52] == b'-';
    (shaped && hex(3..35) && hex(36..52) && hex(53..55) && !zeros(3..35) && !zeros(36..52))
        .then_some(value)
}

/// The longest `tracestate` pop keeps: the 512 characters the W3C recommendation asks every
/// vendor to propagate. A longer one is dropped whole (the recommendation allows dropping
/// list members; pop does not rewrite the value), which bounds what one request adds to each
/// event's metadata far inside [`crate::limits::MAX_EVENT_METADATA_BYTES`].
pub const TRACESTATE_MAX_BYTES: usize = 512;

/// Most list members of a `tracestate` (the W3C limit).
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// `value` (trimmed) when it is a `tracestate` pop keeps: at most [`TRACESTATE_MAX_BYTES`] of
/// printable ASCII, at most [`TRACESTATE_MAX_MEMBERS`] comma-separated `key=value` members
/// (keys of lowercase letters, digits and `_-*/@`, values without `=` or `,`), at least one.
/// Anything else is no `tracestate` at all.
pub fn valid_tracestate(value: &str) -> Option<&str> {
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty()
        || value.len() > TRACESTATE_MAX_BYTES
        || !value.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return None;
    }
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let (key, val) = member.split_once('=')?;
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
        if !key_ok || val.is_empty() || val.contains('=') || members > TRACESTATE_MAX_MEMBERS {
            return None;
        }
    }
    (members > 0).then_some(value)
}

impl EventMetadata {
    /// The JSON bytes stored in [`NewEvent::metadata`].
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads stored metadata bytes; empty bytes are empty metadata. Read on every event of a
    /// replay: the text's UTF-8 is checked once, as the domain's codec does
    /// ([`pop_domain::codec::from_json`]), not string by string.
    pub fn from_json(bytes: &[u8]) -> Result<EventMetadata, serde_json::Error> {
        if bytes.is_empty() {
            return Ok(EventMetadata::default());
        }
        pop_domain::codec::from_json(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_rules() {
        use ExpectedVersion::*;
        let table = [
            (Any, None, true),
            (Any, Some(3), true),
            (NoStream, None, true),
            (NoStream, Some(0), false),
            (StreamExists, None, false),
            (StreamExists, Some(0), true),
            (Exact(0), None, false),
            (Exact(0), Some(0), true),
            (Exact(2), Some(3), false),
        ];
        for (expected, current, admits) in table {
            assert_eq!(expected.admits(current), admits, "{expected} vs {current:?}");
        }
    }

    #[test]
    fn metadata_is_camel_case_and_round_trips() {
        let m = EventMetadata {
            customer_id: Some("c1".into()),
            cid: Some("corr".into()),
            causation_id: Some(Uuid::nil()),
            actor: Some("reaper".into()),
            command: None,
            traceparent: None,
            tracestate: None,
        };
        let json = String::from_utf8(m.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"customerId":"c1","cid":"corr","causationId":"00000000-0000-0000-0000-000000000000","actor":"reaper"}"#
        );
        assert_eq!(EventMetadata::from_json(json.as_bytes()).unwrap(), m);
        assert_eq!(EventMetadata::from_json(b"").unwrap(), EventMetadata::default());
        assert_eq!(
            EventMetadata::from_json(br#"{"actor":"a","later":1}"#).unwrap().actor.as_deref(),
            Some("a")
        );
        let with_command = EventMetadata { command: Some("queue".into()), ..m };
        let json = String::from_utf8(with_command.to_json().unwrap()).unwrap();
        assert!(json.ends_with(r#""actor":"reaper","command":"queue"}"#), "{json}");
        assert_eq!(EventMetadata::from_json(json.as_bytes()).unwrap(), with_command);
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_is_stored_only_when_present_and_old_metadata_still_reads() {
        let m = EventMetadata { traceparent: Some(TP.into()), ..EventMetadata::default() };
        let json = String::from_utf8(m.to_json().unwrap()).unwrap();
        assert_eq!(json, format!(r#"{{"traceparent":"{TP}"}}"#));
        assert_eq!(EventMetadata::from_json(json.as_bytes()).unwrap(), m);
        // Metadata written before the field decodes with none, and none is not written.
        let old = br#"{"customerId":"c1","cid":"corr","actor":"user:a","command":"submitAgenda"}"#;
        let decoded = EventMetadata::from_json(old).unwrap();
        assert_eq!(decoded.traceparent, None);
        assert_eq!(decoded.to_json().unwrap(), old.to_vec());
    }

    #[test]
    fn tracestate_is_stored_beside_the_traceparent_and_old_metadata_still_reads() {
        let m = EventMetadata {
            traceparent: Some(TP.into()),
            tracestate: Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into()),
            ..EventMetadata::default()
        };
        let json = String::from_utf8(m.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"traceparent":"{TP}","tracestate":"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}}"#
            )
        );
        assert_eq!(EventMetadata::from_json(json.as_bytes()).unwrap(), m);
        // A traceparent alone is written as before the field existed, and such metadata
        // (what every stored event holds) decodes with no tracestate.
        let old = format!(r#"{{"actor":"user:a","traceparent":"{TP}"}}"#);
        let decoded = EventMetadata::from_json(old.as_bytes()).unwrap();
        assert_eq!(decoded.tracestate, None);
        assert_eq!(decoded.to_json().unwrap(), old.into_bytes());
    }

    #[test]
    fn only_bounded_well_formed_tracestates_are_valid() {
        for good in ["rojo=00f067aa0ba902b7", " a=1, b@vendor=x y ,,c*/-_=z ", "k=v"] {
            assert!(valid_tracestate(good).is_some(), "{good:?}");
        }
        assert_eq!(valid_tracestate(" a=1 "), Some("a=1"));
        let at_most = format!("a={}", "x".repeat(TRACESTATE_MAX_BYTES - 2));
        assert_eq!(valid_tracestate(&at_most), Some(at_most.as_str()));
        let too_long = format!("a={}", "x".repeat(TRACESTATE_MAX_BYTES - 1));
        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert!(valid_tracestate(&members(TRACESTATE_MAX_MEMBERS)).is_some());
        let bad = [
            String::new(),
            " , ".into(),
            too_long,
            members(TRACESTATE_MAX_MEMBERS + 1),
            "novalue".into(),
            "Upper=1".into(),
            "a=".into(),
            "=b".into(),
            "a=b=c".into(),
            "a=\u{e9}".into(),
            "a=1\nb=2".into(),
        ];
        for value in bad {
            assert_eq!(valid_tracestate(&value), None, "{value:?}");
        }
    }

    #[test]
    fn only_well_formed_version_00_traceparents_are_valid() {
        assert_eq!(valid_traceparent(TP), Some(TP));
        assert_eq!(valid_traceparent(&format!(" {TP} ")), Some(TP));
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for value in bad {
            assert_eq!(valid_traceparent(value), None, "{value:?}");
        }
    }
}
