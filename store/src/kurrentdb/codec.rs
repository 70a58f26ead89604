//! How pop's values map onto KurrentDB's: stream names pop may use, the envelope an event's
//! custom metadata carries, expected versions, positions, and the client's errors.
//!
//! Each mapping here is a pure function with unit tests; the rest of the backend only calls
//! them.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use kurrentdb::{CurrentRevision, EventData, StreamState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ActualVersion, ExpectedVersion, Limit, NewEvent, Position, RecordedEvent, StoreError};

/// Streams pop keeps for its own bookkeeping (event-id claims, leases) start with this. Pop's
/// own stream names are `<category>-<id>`; this prefix is refused for them, so a bookkeeping
/// stream can never be mistaken for one of pop's, and reads of `$all` skip them.
pub const RESERVED_PREFIX: &str = "pop.";

/// The event types of pop's bookkeeping streams. An installation without a namespace sees
/// the streams of namespaced installations on the same server as its own (their names are
/// ordinary names to it), so their bookkeeping events are also told apart by type.
pub const BOOKKEEPING_TYPES: [&str; 2] = [CLAIM_TYPE, LEASE_TYPE];

/// The type of an event-id claim (see `append`).
pub const CLAIM_TYPE: &str = "PopEventIdClaim";

/// The type of a lease record (see `lease`).
pub const LEASE_TYPE: &str = "PopLease";

/// Longest namespace ([`Names`]).
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// How pop's stream names map to the server's. Without a namespace they are the same names.
/// With one (`KurrentOptions::namespace`), every stream pop writes is `<namespace>:<name>`
/// and pop sees only those: several pop installations (or test runs) can share one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// `""` or `"<namespace>:"`.
    prefix: String,
}

impl Names {
    /// Names in `namespace` (`""`: none). A namespace is 1–64 ASCII letters, digits, `-`
    /// or `_`, so it needs no escaping in the server's filter.
    pub fn new(namespace: &str) -> Result<Names, StoreError> {
        if namespace.is_empty() {
            return Ok(Names::default());
        }
        let ok = namespace.len() <= MAX_NAMESPACE_BYTES
            && namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StoreError::InvalidStreamName {
                stream: namespace.to_owned(),
                reason: "a KurrentDB namespace is 1-64 ASCII letters, digits, `-` or `_`",
            });
        }
        Ok(Names { prefix: format!("{namespace}:") })
    }

    /// The server's name of pop's stream `stream`.
    pub fn server(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// Pop's name of the server's stream `name`, if it is one of pop's (not a system stream,
    /// not a bookkeeping stream, in this namespace).
    pub fn pop<'a>(&self, name: &'a str) -> Option<&'a str> {
        let stream = name.strip_prefix(self.prefix.as_str())?;
        (!stream.starts_with('$') && !stream.starts_with(RESERVED_PREFIX)).then_some(stream)
    }

    /// Whether an event read from `$all` is one of pop's: in one of pop's streams and not a
    /// system record (KurrentDB writes the tombstone of a hard-deleted stream,
    /// `$streamDeleted`, into that stream; every system event type starts with `$`).
    pub fn is_pop_event(&self, name: &str, event_type: &str) -> bool {
        self.pop(name).is_some()
            && !event_type.starts_with('$')
            && !BOOKKEEPING_TYPES.contains(&event_type)
    }

    /// The claim stream of one event id (see `append`).
    pub fn claim_stream(&self, event_id: Uuid) -> String {
        format!("{}{RESERVED_PREFIX}id-{event_id}", self.prefix)
    }

    /// The lock stream of one leader name (see `lease`).
    pub fn lease_stream(&self, name: &str) -> String {
        format!("{}{RESERVED_PREFIX}lease-{name}", self.prefix)
    }

    /// The server-side filter on `$all` reads and subscriptions: the stream names
    /// [`Names::pop`] accepts, as a regular expression without look-around (the server's
    /// .NET regex would take `^(?!…)`, but this form means the same in every engine, the
    /// double's included). [`Names::is_pop_event`] still checks each event: the filter only
    /// saves bandwidth. The namespace needs no escaping (see [`Names::new`]).
    pub fn filter_regex(&self) -> String {
        format!("^{}([^$p]|p$|p[^o]|po$|po[^p]|pop$|pop[^.])", self.prefix)
    }
}

/// Refuses stream names pop must not write on KurrentDB, on top of the shared checks.
pub fn check_writable_stream(stream: &str) -> Result<(), StoreError> {
    if stream.starts_with('$') {
        return Err(StoreError::InvalidStreamName {
            stream: stream.to_owned(),
            reason: "names starting with `$` are KurrentDB system streams",
        });
    }
    if stream.starts_with(RESERVED_PREFIX) {
        return Err(StoreError::InvalidStreamName {
            stream: stream.to_owned(),
            reason: "names starting with `pop.` are reserved for pop's bookkeeping streams",
        });
    }
    Ok(())
}

/// What pop keeps of an event beyond KurrentDB's own fields (id, type, data), as the JSON
/// custom metadata of the KurrentDB event. The caller's metadata travels as a JSON string
/// so that it comes back byte for byte (whitespace and key order included).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    /// Version of this envelope's shape.
    pop: u32,
    schema_version: u32,
    /// The injected clock's time at append, RFC 3339 to the microsecond. KurrentDB's own
    /// `created` is the server's clock, which pop must not use (see the crate doc).
    recorded_at: String,
    metadata: String,
}

/// The envelope shape this build writes and reads.
const ENVELOPE_VERSION: u32 = 1;

/// The KurrentDB event for a pop event. The data goes as `application/octet-stream`: the
/// client's JSON constructor re-serialises its payload, and pop's data (validated JSON) must
/// be stored byte for byte.
pub(crate) fn encode(
    event: &NewEvent,
    recorded_at: DateTime<Utc>,
) -> Result<EventData, StoreError> {
    let metadata = String::from_utf8(event.metadata.clone()).map_err(|_| {
        // Unreachable for validated metadata (JSON is UTF-8), but never panic on input.
        StoreError::InvalidEvent {
            event_id: event.event_id,
            reason: "the metadata is not UTF-8".to_owned(),
        }
    })?;
    let envelope = Envelope {
        pop: ENVELOPE_VERSION,
        schema_version: event.schema_version,
        recorded_at: recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        metadata,
    };
    let envelope = serde_json::to_vec(&envelope)
        .map_err(|e| StoreError::backend("encoding an event envelope", e))?;
    Ok(EventData::binary(event.event_type.as_str(), Bytes::from(event.data.clone()))
        .id(event.event_id)
        .metadata(Bytes::from(envelope)))
}

/// The size an event weighs on the server (data, custom metadata, type), for the error when
/// the server's own append limit refuses an append.
pub(crate) fn encoded_size(event: &NewEvent) -> usize {
    // The envelope adds under 200 bytes plus the escaping of the metadata.
    event.size() + 200 + event.metadata.len() / 8
}

/// A pop event from a KurrentDB one.
pub(crate) fn decode(
    names: &Names,
    event: &kurrentdb::RecordedEvent,
) -> Result<RecordedEvent, StoreError> {
    let corrupt = |why: String| {
        StoreError::Corrupt(format!(
            "event {} of stream {:?} at revision {}: {why}",
            event.id,
            event.stream_id(),
            event.revision
        ))
    };
    let envelope: Envelope = serde_json::from_slice(&event.custom_metadata)
        .map_err(|e| corrupt(format!("its custom metadata is not pop's envelope: {e}")))?;
    if envelope.pop != ENVELOPE_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: envelope.pop,
            supported: ENVELOPE_VERSION,
        });
    }
    let recorded_at = DateTime::parse_from_rfc3339(&envelope.recorded_at)
        .map_err(|e| corrupt(format!("recordedAt {:?}: {e}", envelope.recorded_at)))?
        .with_timezone(&Utc);
    let stream = names
        .pop(event.stream_id())
        .ok_or_else(|| corrupt("it is not in one of pop's streams".to_owned()))?;
    Ok(RecordedEvent {
        position: from_position(event.position),
        stream: stream.into(),
        version: event.revision,
        event_id: event.id,
        event_type: event.event_type.as_str().into(),
        schema_version: envelope.schema_version,
        data: event.data.clone(),
        metadata: envelope.metadata.into_bytes().into(),
        recorded_at,
    })
}

/// Pop's expectation as KurrentDB's: the same four cases (pop took them from EventStoreDB).
pub fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        ExpectedVersion::Any => StreamState::Any,
        ExpectedVersion::NoStream => StreamState::NoStream,
        ExpectedVersion::StreamExists => StreamState::StreamExists,
        ExpectedVersion::Exact(v) => StreamState::StreamRevision(v),
    }
}

/// The state under which an append puts its first event at `first_version`: pop always
/// appends at an exact place (see `append`).
pub fn exact_state(first_version: u64) -> StreamState {
    match first_version.checked_sub(1) {
        None => StreamState::NoStream,
        Some(last) => StreamState::StreamRevision(last),
    }
}

/// A stream revision as reported in a conflict. Revisions and versions are the same numbers:
/// both count a stream's events from 0.
pub fn actual_version(current: CurrentRevision) -> ActualVersion {
    match current {
        CurrentRevision::Current(v) => ActualVersion::Version(v),
        CurrentRevision::NoStream => ActualVersion::NoStream,
    }
}

/// A KurrentDB log position as pop's: the same (commit, prepare) pair, ordered the same way
/// (commit first), so pop's order is the server's `$all` order.
pub fn from_position(p: kurrentdb::Position) -> Position {
    Position::new(p.commit, p.prepare)
}

/// Pop's position as KurrentDB's.
pub fn to_position(p: Position) -> kurrentdb::Position {
    kurrentdb::Position { commit: p.commit(), prepare: p.prepare() }
}

/// The client's failure as a store error. `stream` names the stream of the operation;
/// conflicts are mapped where the expectation is known (`append`, `delete_stream`).
pub(crate) fn map_error(context: &'static str, stream: &str, e: kurrentdb::Error) -> StoreError {
    match e {
        kurrentdb::Error::ResourceDeleted => {
            StoreError::StreamDeleted { stream: stream.to_owned() }
        }
        // The status of the server's append-size refusal is INVALID_ARGUMENT; the client
        // keeps the code and message but drops the metadata naming the cap.
        kurrentdb::Error::Grpc { code: tonic::Code::InvalidArgument, ref message }
            if message.contains("Maximum Append Size") =>
        {
            // The server's own cap (its MaxAppendSize setting, 1 MiB by default) is below
            // pop's. The message names the cap: "Maximum Append Size of <n> Exceeded.".
            let max = message
                .split(|c: char| !c.is_ascii_digit())
                .find_map(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            StoreError::LimitExceeded { limit: Limit::AppendBytes, actual: max + 1, max }
        }
        other => StoreError::backend(context, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expected_versions_map_to_stream_states_one_to_one() {
        assert_eq!(stream_state(ExpectedVersion::Any), StreamState::Any);
        assert_eq!(stream_state(ExpectedVersion::NoStream), StreamState::NoStream);
        assert_eq!(stream_state(ExpectedVersion::StreamExists), StreamState::StreamExists);
        assert_eq!(stream_state(ExpectedVersion::Exact(7)), StreamState::StreamRevision(7));
        // Appending at version 0 means "no stream yet"; at version n, "the last is n - 1".
        assert_eq!(exact_state(0), StreamState::NoStream);
        assert_eq!(exact_state(1), StreamState::StreamRevision(0));
        assert_eq!(exact_state(u64::MAX), StreamState::StreamRevision(u64::MAX - 1));
    }

    #[test]
    fn current_revisions_are_actual_versions() {
        assert_eq!(actual_version(CurrentRevision::NoStream), ActualVersion::NoStream);
        assert_eq!(actual_version(CurrentRevision::Current(0)), ActualVersion::Version(0));
        assert_eq!(actual_version(CurrentRevision::Current(41)), ActualVersion::Version(41));
    }

    proptest! {
        #[test]
        fn positions_round_trip_and_keep_the_servers_order(
            a in any::<(u64, u64)>(),
            b in any::<(u64, u64)>(),
        ) {
            let (ka, kb) = (
                kurrentdb::Position { commit: a.0, prepare: a.1 },
                kurrentdb::Position { commit: b.0, prepare: b.1 },
            );
            prop_assert_eq!(to_position(from_position(ka)), ka);
            prop_assert_eq!(from_position(ka).cmp(&from_position(kb)), ka.cmp(&kb));
            let text = from_position(ka).to_string();
            prop_assert_eq!(text.parse::<Position>().ok(), Some(from_position(ka)));
        }
    }

    #[test]
    fn a_single_event_write_prints_as_one_number_a_batch_member_as_a_pair() {
        // KurrentDB gives a one-event write commit == prepare; events of a multi-event write
        // share the commit and differ in prepare.
        assert_eq!(from_position(kurrentdb::Position { commit: 5, prepare: 5 }).to_string(), "5");
        assert_eq!(
            from_position(kurrentdb::Position { commit: 5, prepare: 90 }).to_string(),
            "5/90"
        );
    }

    #[test]
    fn client_errors_map_to_store_errors() {
        let e = map_error("appending", "s", kurrentdb::Error::ResourceDeleted);
        assert!(matches!(e, StoreError::StreamDeleted { ref stream } if stream == "s"), "{e:?}");
        let size = kurrentdb::Error::Grpc {
            code: tonic::Code::InvalidArgument,
            message: "Maximum Append Size of 1048576 Exceeded.".to_owned(),
        };
        let e = map_error("appending", "s", size);
        assert!(
            matches!(
                e,
                StoreError::LimitExceeded { limit: Limit::AppendBytes, max: 1_048_576, .. }
            ),
            "{e:?}"
        );
        let other = map_error("reading", "s", kurrentdb::Error::ConnectionClosed);
        assert!(matches!(other, StoreError::Backend { context: "reading", .. }), "{other:?}");
    }

    fn names(ns: &str) -> Names {
        Names::new(ns).expect("a valid namespace")
    }

    #[test]
    fn pops_streams_are_told_from_system_and_bookkeeping_streams() {
        let plain = names("");
        assert_eq!(plain.pop("agenda-1"), Some("agenda-1"));
        assert_eq!(plain.pop("p"), Some("p"));
        assert_eq!(plain.pop("popular"), Some("popular"));
        assert_eq!(plain.pop("$all"), None);
        assert_eq!(plain.pop("$$agenda-1"), None);
        assert_eq!(plain.pop(&plain.claim_stream(uuid::Uuid::nil())), None);
        assert_eq!(plain.pop(&plain.lease_stream("scheduler")), None);
        assert!(!plain.is_pop_event("agenda-1", "$streamDeleted"));
        assert!(plain.is_pop_event("agenda-1", "AgendaSubmitted"));

        let ns = names("tenant-a");
        assert_eq!(ns.server("agenda-1"), "tenant-a:agenda-1");
        assert_eq!(ns.pop("tenant-a:agenda-1"), Some("agenda-1"));
        assert_eq!(ns.pop("agenda-1"), None, "outside the namespace");
        assert_eq!(ns.pop("tenant-b:agenda-1"), None);
        assert_eq!(ns.pop(&ns.claim_stream(uuid::Uuid::nil())), None);
        for bad in ["a:b", "a b", "ünï", &"x".repeat(65)] {
            assert!(Names::new(bad).is_err(), "{bad:?} accepted as a namespace");
        }
    }

    #[test]
    fn the_servers_filter_accepts_exactly_pops_streams() {
        for ns in ["", "tenant-a"] {
            let names = names(ns);
            let re = regex::Regex::new(&names.filter_regex()).expect("a valid regex");
            let prefix = names.server("");
            for name in [
                "a", "p", "po", "pop", "pop.", "pop.id-1", "popx", "pox", "pp", "$all", "$", "x$",
                "agenda-1", "pop-1", "poq.", "p.", "$$agenda",
            ] {
                let server = format!("{prefix}{name}");
                assert_eq!(
                    re.is_match(&server),
                    names.pop(&server).is_some(),
                    "filter and check disagree on {server:?}"
                );
            }
        }
    }

    #[test]
    fn reserved_names_are_refused_for_writing() {
        assert!(check_writable_stream("agenda-1").is_ok());
        assert!(check_writable_stream("$agenda").is_err());
        assert!(check_writable_stream("pop.id-x").is_err());
    }

    #[test]
    fn the_envelope_keeps_metadata_byte_for_byte() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).expect("a time");
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "Typed".into(),
            schema_version: u32::MAX,
            data: b" {\"a\" : 1 } ".to_vec(),
            metadata: " { \"actor\" :\t\"\u{fc}\" } ".as_bytes().to_vec(),
        };
        let data = encode(&event, at).expect("encodes");
        let _ = data;
        let envelope = Envelope {
            pop: ENVELOPE_VERSION,
            schema_version: event.schema_version,
            recorded_at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
            metadata: String::from_utf8(event.metadata.clone()).expect("utf-8"),
        };
        let bytes = serde_json::to_vec(&envelope).expect("json");
        let back: Envelope = serde_json::from_slice(&bytes).expect("reads back");
        assert_eq!(back.metadata.as_bytes(), &event.metadata[..]);
        assert_eq!(
            DateTime::parse_from_rfc3339(&back.recorded_at).expect("a time").with_timezone(&Utc),
            at
        );
    }
}
