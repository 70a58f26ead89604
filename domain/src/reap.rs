//! The reap log: the audit trail of the DataObjectReaper (DOMAIN.md §9). Store deletes are not
//! events, so for every stream it deletes the reaper records a `StreamReaped` event in the
//! stream `reaps-<YYYY-MM-DD>` (the UTC day of the reap) — what was removed (kind, id,
//! customer, last version, `updatedTime`), when and why. These streams are never reaped. The
//! read models forget the named stream when they fold the record, so queries stop returning
//! the object and a rebuild (where the deleted stream's events are gone) agrees.
//!
//! Recording is idempotent per day stream: a second record of the same stream in the same day
//! changes nothing (a reaper that crashed after recording retries safely).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::codec::{CodecError, EventCodec};
use crate::model::{Timestamp, epoch_ms};

/// The stream category: `reaps-<YYYY-MM-DD>`.
pub const CATEGORY: &str = "reaps";

/// The persisted type names and the schema version this build writes for each.
pub const EVENT_TYPES: &[(&str, u32)] = &[(STREAM_REAPED, 1)];

/// The persisted type name of [`StreamReaped`].
pub const STREAM_REAPED: &str = "StreamReaped";

/// The id (after `reaps-`) of the day stream that records reaps made at `now`.
pub fn day_id(now: Timestamp) -> String {
    now.format("%Y-%m-%d").to_string()
}

/// What was reaped, as the reaper saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReaped {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    /// The deleted stream, e.g. `agenda-<id>`.
    #[serde(rename = "stream")]
    pub stream: String,
    /// `agenda`, `customer`, `resource pool`, `insight` or `agenda template`.
    #[serde(rename = "kind")]
    pub kind: String,
    #[serde(rename = "objectId")]
    pub object_id: String,
    #[serde(rename = "customerId")]
    pub customer_id: String,
    /// The stream's last version when it was deleted (`None`: it was already gone).
    #[serde(rename = "lastVersion", default, skip_serializing_if = "Option::is_none")]
    pub last_version: Option<u64>,
    /// The object's `updatedTime` (for a deleted config object: its deletion).
    #[serde(
        rename = "updatedTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_time: Option<Timestamp>,
    /// Why, in words (the age rule that selected it).
    #[serde(rename = "reason")]
    pub reason: String,
    /// The stream's hash chain head when it was deleted (lower-case hex SHA-256, the store's
    /// tamper evidence), so verification holds the tombstone to it after the events are gone.
    /// `None` in records from before it was kept, and when the stream was already gone.
    #[serde(rename = "headHash", default, skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
}

/// Every event of a reap log stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ReapEvent {
    StreamReaped(StreamReaped),
}

/// What the reaper asks of a day's reap log.
#[derive(Debug, Clone, PartialEq)]
pub enum ReapCommand {
    /// Records that `record.stream` was reaped (`record.time` is the command's time).
    Record { record: StreamReaped },
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReapError {
    #[error("a reap record needs a stream, a kind and an object id")]
    Incomplete,
}

/// One day's reap log folded: the streams recorded so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReapLog {
    streams: BTreeSet<String>,
}

impl ReapLog {
    /// Whether `stream` is recorded in this day's log.
    pub fn records(&self, stream: &str) -> bool {
        self.streams.contains(stream)
    }
}

impl crate::Aggregate for ReapLog {
    type Command = ReapCommand;
    type Event = ReapEvent;
    type Error = ReapError;

    const CATEGORY: &'static str = CATEGORY;

    fn decide(&self, command: &ReapCommand) -> Result<Vec<ReapEvent>, ReapError> {
        let ReapCommand::Record { record } = command;
        if record.stream.trim().is_empty()
            || record.kind.trim().is_empty()
            || record.object_id.trim().is_empty()
        {
            return Err(ReapError::Incomplete);
        }
        if self.records(&record.stream) {
            return Ok(Vec::new());
        }
        let mut record = record.clone();
        record.time = ms(record.time);
        record.updated_time = record.updated_time.map(ms);
        Ok(vec![ReapEvent::StreamReaped(record)])
    }

    fn evolve(&mut self, event: &ReapEvent) {
        let ReapEvent::StreamReaped(e) = event;
        self.streams.insert(e.stream.clone());
    }
}

/// Times are stored in epoch milliseconds: truncate so a decoded event equals the decided one.
fn ms(t: Timestamp) -> Timestamp {
    Timestamp::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

impl EventCodec for ReapEvent {
    fn event_type(&self) -> &'static str {
        STREAM_REAPED
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let ReapEvent::StreamReaped(e) = self;
        serde_json::to_vec(e).map_err(CodecError::Encode)
    }

    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, CodecError> {
        if event_type != STREAM_REAPED {
            return Err(CodecError::UnknownType { event_type: event_type.to_string() });
        }
        if schema_version != 1 {
            return Err(CodecError::UnknownVersion {
                event_type: event_type.to_string(),
                version: schema_version,
            });
        }
        serde_json::from_slice(data).map(ReapEvent::StreamReaped).map_err(|source| {
            CodecError::Malformed { event_type: event_type.to_string(), version: 1, source }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Aggregate;

    fn record(stream: &str) -> StreamReaped {
        StreamReaped {
            time: Timestamp::from_timestamp(1_000, 0).unwrap(),
            stream: stream.to_string(),
            kind: "agenda".to_string(),
            object_id: "a".to_string(),
            customer_id: "acme".to_string(),
            last_version: Some(7),
            updated_time: None,
            reason: "old".to_string(),
            head_hash: None,
        }
    }

    #[test]
    fn a_stream_is_recorded_once_per_day_log() {
        let mut log = ReapLog::default();
        let command = ReapCommand::Record { record: record("agenda-a") };
        let events = log.decide(&command).unwrap();
        assert_eq!(events.len(), 1);
        log.evolve(&events[0]);
        assert!(log.records("agenda-a"));
        assert!(log.decide(&command).unwrap().is_empty());
    }

    #[test]
    fn an_incomplete_record_is_refused() {
        let command = ReapCommand::Record { record: record(" ") };
        assert_eq!(ReapLog::default().decide(&command), Err(ReapError::Incomplete));
    }

    #[test]
    fn day_ids_are_utc_dates() {
        let t = Timestamp::from_timestamp(1_764_287_999, 0).unwrap();
        assert_eq!(day_id(t), "2025-11-27");
    }
}
