//! The sizes the store accepts, and the checks every backend runs before touching storage so
//! that all backends refuse the same requests with the same typed errors.

use std::collections::HashSet;

use serde::de::IgnoredAny;

use crate::{Limit, NewEvent, StoreError};

/// Largest event data. Events are facts, not files: 1 MiB holds the largest agenda (hundreds
/// of operations with parameters) many times over, and keeps one event cheap to read, decode
/// and ship to subscribers. Exactly 1 MiB is accepted.
pub const MAX_EVENT_DATA_BYTES: usize = 1 << 20;

/// Largest event metadata. Metadata is a few ids (customer, correlation, causation, actor);
/// 64 KiB leaves room for tracing context without letting metadata become a second payload.
pub const MAX_EVENT_METADATA_BYTES: usize = 64 << 10;

/// Longest event type name. Type names are identifiers like `AgendaSubmitted`.
pub const MAX_EVENT_TYPE_BYTES: usize = 256;

/// Most events in one append. An append is one atomic decision; 10,000 covers expanding a
/// large agenda in one go while bounding the work of one writer transaction.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// Most bytes (data + metadata + type names) in one append. Bounds the memory a single request
/// pins in the writer queue and the size of one transaction; 32 MiB admits a few maximum-size
/// events or 10,000 ordinary ones.
pub const MAX_APPEND_BYTES: usize = 32 << 20;

/// Longest stream name. Names are `<category>-<id>`; ids are uuids or short client ids.
pub const MAX_STREAM_NAME_BYTES: usize = 512;

/// Most events one read may ask for. Bounds the memory of one read and the time a reader
/// connection is held, so one large catch-up cannot starve other readers.
pub const MAX_READ_BATCH: usize = 10_000;

/// Bytes after which a read stops early (after the row that crosses it): with maximum-size
/// events, `MAX_READ_BATCH` of them would be 10 GiB.
pub const MAX_READ_BATCH_BYTES: usize = 64 << 20;

/// Checks a stream name: non-empty, not too long, no control characters.
pub fn check_stream_name(stream: &str) -> Result<(), StoreError> {
    if stream.is_empty() {
        return Err(StoreError::InvalidStreamName {
            stream: stream.to_owned(),
            reason: "it is empty",
        });
    }
    if stream.len() > MAX_STREAM_NAME_BYTES {
        return Err(StoreError::LimitExceeded {
            limit: Limit::StreamNameBytes,
            actual: stream.len(),
            max: MAX_STREAM_NAME_BYTES,
        });
    }
    if stream.chars().any(char::is_control) {
        return Err(StoreError::InvalidStreamName {
            stream: stream.to_owned(),
            reason: "it contains control characters",
        });
    }
    Ok(())
}

/// Checks the `max` of a read.
pub fn check_read_max(max: usize) -> Result<(), StoreError> {
    if max > MAX_READ_BATCH {
        return Err(StoreError::LimitExceeded {
            limit: Limit::ReadBatch,
            actual: max,
            max: MAX_READ_BATCH,
        });
    }
    Ok(())
}

/// Checks an append before it reaches storage; returns its size in bytes. Runs on the caller's
/// task so the single writer spends its time writing.
pub fn check_append(stream: &str, events: &[NewEvent]) -> Result<usize, StoreError> {
    let total = check_append_sizes(stream, events)?;
    for e in events {
        check_event_json(e)?;
    }
    Ok(total)
}

/// [`check_append`] without parsing the events' JSON: the name, the counts, the sizes and the
/// ids. Cheap enough to run per command before commands are appended together, so that one
/// command too large to store fails alone instead of sinking the write it would have joined.
pub fn check_append_sizes(stream: &str, events: &[NewEvent]) -> Result<usize, StoreError> {
    check_stream_name(stream)?;
    if events.is_empty() {
        return Err(StoreError::EmptyAppend { stream: stream.to_owned() });
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::LimitExceeded {
            limit: Limit::EventsPerAppend,
            actual: events.len(),
            max: MAX_EVENTS_PER_APPEND,
        });
    }
    let mut total = 0usize;
    for e in events {
        check_event_sizes(e)?;
        total = total.saturating_add(e.size());
    }
    if total > MAX_APPEND_BYTES {
        return Err(StoreError::LimitExceeded {
            limit: Limit::AppendBytes,
            actual: total,
            max: MAX_APPEND_BYTES,
        });
    }
    if events.len() > 1 {
        let mut seen = HashSet::with_capacity(events.len());
        for e in events {
            if !seen.insert(e.event_id) {
                return Err(StoreError::DuplicateEventId {
                    stream: stream.to_owned(),
                    event_id: e.event_id,
                });
            }
        }
    }
    Ok(total)
}

fn check_event_sizes(e: &NewEvent) -> Result<(), StoreError> {
    let invalid =
        |reason: &str| StoreError::InvalidEvent { event_id: e.event_id, reason: reason.to_owned() };
    if e.event_id.is_nil() {
        return Err(invalid("the event id is nil"));
    }
    if e.event_type.is_empty() {
        return Err(invalid("the event type is empty"));
    }
    if e.event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(StoreError::LimitExceeded {
            limit: Limit::EventTypeBytes,
            actual: e.event_type.len(),
            max: MAX_EVENT_TYPE_BYTES,
        });
    }
    if e.data.len() > MAX_EVENT_DATA_BYTES {
        return Err(StoreError::LimitExceeded {
            limit: Limit::EventDataBytes,
            actual: e.data.len(),
            max: MAX_EVENT_DATA_BYTES,
        });
    }
    if e.metadata.len() > MAX_EVENT_METADATA_BYTES {
        return Err(StoreError::LimitExceeded {
            limit: Limit::EventMetadataBytes,
            actual: e.metadata.len(),
            max: MAX_EVENT_METADATA_BYTES,
        });
    }
    Ok(())
}

fn check_event_json(e: &NewEvent) -> Result<(), StoreError> {
    let invalid =
        |reason: &str| StoreError::InvalidEvent { event_id: e.event_id, reason: reason.to_owned() };
    // The log is read by every projection forever: refuse what is not JSON now rather than
    // fail every rebuild later. Validation only; the bytes are stored as given. JSON is
    // UTF-8 (RFC 8259 §8.1), and serde_json's `IgnoredAny` skips strings without looking at
    // their bytes, so the encoding is checked first: every reader may take the data as text.
    // Checked once: parsing the `&str` does not look at the encoding again.
    let Ok(data) = std::str::from_utf8(&e.data) else {
        return Err(invalid("the data is not JSON: it is not UTF-8"));
    };
    if let Err(err) = serde_json::from_str::<IgnoredAny>(data) {
        return Err(invalid(&format!("the data is not JSON: {err}")));
    }
    let Ok(metadata) = std::str::from_utf8(&e.metadata) else {
        return Err(invalid("the metadata is not JSON: it is not UTF-8"));
    };
    if !metadata.is_empty()
        && let Err(err) = serde_json::from_str::<IgnoredAny>(metadata)
    {
        return Err(invalid(&format!("the metadata is not JSON: {err}")));
    }
    Ok(())
}
