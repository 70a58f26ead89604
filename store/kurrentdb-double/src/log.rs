//! The double's log: streams, `$all`, and the server rules the double reproduces (expected
//! revisions, idempotent re-sends, tombstones, the append-size cap). Each rule the double had
//! to guess is marked `GUESS` with its source; the crate doc lists them all.

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::Bytes;
use uuid::Uuid;

/// Where the first record of the double's log sits. A KurrentDB log never has an event at
/// (0, 0): it opens with the epoch record and system events. GUESS: the exact number does not
/// matter to a client; positions are opaque.
pub const FIRST_POSITION: u64 = 1_024;

/// Revision of a tombstone record. GUESS from the KurrentDB docs ("the stream gets closed
/// with a tombstone event"), whose event number is `long.MaxValue` in the server.
pub const TOMBSTONE_REVISION: u64 = i64::MAX as u64;

/// One record of `$all`.
#[derive(Debug, Clone)]
pub struct Record {
    pub stream: Arc<str>,
    pub revision: u64,
    pub id: Uuid,
    pub event_type: String,
    pub content_type: String,
    /// 100 ns ticks since the Unix epoch, the server's clock (the `created` metadata).
    pub created: i64,
    pub data: Bytes,
    pub custom_metadata: Bytes,
    pub commit: u64,
    pub prepare: u64,
}

impl Record {
    pub fn position(&self) -> (u64, u64) {
        (self.commit, self.prepare)
    }
}

/// An event an append proposes.
#[derive(Debug, Clone)]
pub struct Proposed {
    pub id: Uuid,
    pub event_type: String,
    pub content_type: String,
    pub data: Bytes,
    pub custom_metadata: Bytes,
}

/// What an append or tombstone expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Any,
    NoStream,
    StreamExists,
    Revision(u64),
}

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written (or, for a re-send, found already written): the last revision and the
    /// position of the last record.
    Success { revision: Option<u64>, position: (u64, u64) },
    /// The stream is not where the append expected it.
    WrongExpectedVersion { current: Option<u64>, expected: Expected },
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    StreamDeleted,
    MaxAppendSize { max: usize },
    WrongExpectedVersion { current: Option<u64>, expected: Expected },
}

#[derive(Debug, Default)]
struct Stream {
    /// Indexes into `Log::records`, by revision.
    records: Vec<usize>,
    tombstoned: bool,
}

/// The log.
#[derive(Debug)]
pub struct Log {
    records: Vec<Record>,
    streams: HashMap<Arc<str>, Stream>,
    next: u64,
    max_append_size: usize,
}

impl Log {
    pub fn new(max_append_size: usize) -> Log {
        Log { records: Vec::new(), streams: HashMap::new(), next: FIRST_POSITION, max_append_size }
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The index of the first record at or after `position`.
    pub fn index_from(&self, position: (u64, u64)) -> usize {
        self.records.partition_point(|r| r.position() < position)
    }

    /// A stream's records in revision order; `Err` when tombstoned, `Ok(None)` when it never
    /// existed.
    pub fn stream(&self, name: &str) -> Result<Option<Vec<&Record>>, Refused> {
        match self.streams.get(name) {
            None => Ok(None),
            Some(s) if s.tombstoned => Err(Refused::StreamDeleted),
            Some(s) if s.records.is_empty() => Ok(None),
            Some(s) => Ok(Some(s.records.iter().map(|&i| &self.records[i]).collect())),
        }
    }

    fn current(&self, name: &str) -> Option<u64> {
        self.streams.get(name).and_then(|s| s.records.len().checked_sub(1)).map(|v| v as u64)
    }

    /// Whether `proposed` are the events of `name` from revision `from` on: all of them, the
    /// first only (KurrentDB's "corrupted idempotency"), or not even the first.
    fn matches_at(&self, name: &str, from: u64, proposed: &[Proposed]) -> Match {
        let Some(stream) = self.streams.get(name) else { return Match::No };
        let ids: Vec<Uuid> = usize::try_from(from)
            .ok()
            .and_then(|from| stream.records.get(from..))
            .unwrap_or(&[])
            .iter()
            .take(proposed.len())
            .map(|&i| self.records[i].id)
            .collect();
        match ids.first() {
            Some(first) if *first == proposed[0].id => {
                if ids.len() == proposed.len() && ids.iter().zip(proposed).all(|(a, p)| *a == p.id)
                {
                    Match::All
                } else {
                    Match::FirstOnly
                }
            }
            _ => Match::No,
        }
    }

    /// The revision of `id` in `name`, if it is there.
    fn revision_of(&self, name: &str, id: Uuid) -> Option<u64> {
        let stream = self.streams.get(name)?;
        stream.records.iter().position(|&i| self.records[i].id == id).map(|v| v as u64)
    }

    fn success_at(&self, name: &str, last: u64) -> Appended {
        let position = self
            .streams
            .get(name)
            .and_then(|s| usize::try_from(last).ok().and_then(|l| s.records.get(l)))
            .map_or((0, 0), |&i| self.records[i].position());
        Appended::Success { revision: Some(last), position }
    }

    /// Appends `proposed` to `name` under `expected`, with the server's rules:
    /// - a tombstoned stream refuses every append;
    /// - GUESS (EventStoreDB docs, *Optimistic concurrency and idempotence*): with an exact
    ///   revision or `NoStream`, a stream already past it whose next events have the
    ///   proposed ids is an idempotent success; if only the first id matches, or none, it is
    ///   a wrong expected version. A stream exactly at the expected revision takes the events
    ///   whatever their ids (reported on the EventStore forum, *Idempotency confirmation*:
    ///   "If I set the ExpectedRevision to the previous event's version, the event is
    ///   appended twice");
    /// - GUESS (KurrentDB .NET client docs, *Appending events*: "if two events with the same
    ///   Uuid are appended to the same stream in quick succession, KurrentDB will only append
    ///   one"; the forum thread above: "best effort … based on a cache of recently appended
    ///   events ID"): with `Any` or `StreamExists`, the first id found in the stream with the
    ///   following ids after it is an idempotent success. The real server looks the first id
    ///   up in a bounded cache; the double remembers every id;
    /// - GUESS (KurrentDB's `MaxAppendSize` setting): an append whose data and custom
    ///   metadata add up to more than the cap is refused whole.
    pub fn append(
        &mut self,
        name: &str,
        expected: Expected,
        proposed: Vec<Proposed>,
        created: i64,
    ) -> Result<Appended, Refused> {
        if self.streams.get(name).is_some_and(|s| s.tombstoned) {
            return Err(Refused::StreamDeleted);
        }
        let size: usize = proposed.iter().map(|p| p.data.len() + p.custom_metadata.len()).sum();
        if size > self.max_append_size {
            return Err(Refused::MaxAppendSize { max: self.max_append_size });
        }
        let current = self.current(name);
        let wrong = Appended::WrongExpectedVersion { current, expected };
        if proposed.is_empty() {
            return Ok(match (expected, current) {
                (Expected::Revision(e), Some(c)) if e != c => wrong,
                (Expected::Revision(_), None) | (Expected::StreamExists, None) => wrong,
                (Expected::NoStream, Some(_)) => wrong,
                _ => Appended::Success { revision: current, position: (0, 0) },
            });
        }
        let n = proposed.len() as u64;
        match expected {
            Expected::Revision(e) if current == Some(e) => {}
            Expected::NoStream if current.is_none() => {}
            Expected::Revision(_) | Expected::NoStream => {
                let from = match expected {
                    Expected::Revision(e) => e + 1,
                    _ => 0,
                };
                return Ok(match self.matches_at(name, from, &proposed) {
                    Match::All => self.success_at(name, from + n - 1),
                    Match::FirstOnly | Match::No => wrong,
                });
            }
            Expected::StreamExists if current.is_none() => return Ok(wrong),
            Expected::Any | Expected::StreamExists => {
                if let Some(from) = self.revision_of(name, proposed[0].id) {
                    return Ok(match self.matches_at(name, from, &proposed) {
                        Match::All => self.success_at(name, from + n - 1),
                        Match::FirstOnly | Match::No => wrong,
                    });
                }
            }
        }
        let key: Arc<str> = Arc::from(name);
        let commit = self.next;
        let mut last = (0, 0);
        for p in proposed {
            let prepare = self.next;
            // Positions are byte offsets in the real log; the double spaces them the same
            // way (never consecutive numbers), so a client cannot get away with counting.
            self.next += 64 + (p.data.len() + p.custom_metadata.len()) as u64;
            let stream = self.streams.entry(Arc::clone(&key)).or_default();
            let record = Record {
                stream: Arc::clone(&key),
                revision: stream.records.len() as u64,
                id: p.id,
                event_type: p.event_type,
                content_type: p.content_type,
                created,
                data: p.data,
                custom_metadata: p.custom_metadata,
                commit,
                prepare,
            };
            // Answered as the write's position: for a one-event write it is the event's
            // own (the client's test `test_read_stream_populates_log_position`); which record
            // a multi-event write's answer names is not documented, so pop reads it back.
            last = record.position();
            stream.records.push(self.records.len());
            self.records.push(record);
        }
        Ok(Appended::Success { revision: self.current(name), position: last })
    }

    /// Tombstones `name` under `expected`. GUESS (KurrentDB docs, *Deleting streams*): a
    /// stream that never existed can be tombstoned with `Any` or `NoStream`; the tombstone is
    /// a `$streamDeleted` record in `$all` whose stream is the deleted one; the deleted
    /// stream's events stay in `$all` ("until a scavenge", which the double never runs).
    pub fn tombstone(
        &mut self,
        name: &str,
        expected: Expected,
        created: i64,
    ) -> Result<(u64, u64), Refused> {
        if self.streams.get(name).is_some_and(|s| s.tombstoned) {
            return Err(Refused::StreamDeleted);
        }
        let current = self.current(name);
        let ok = match expected {
            Expected::Any => true,
            Expected::NoStream => current.is_none(),
            Expected::StreamExists => current.is_some(),
            Expected::Revision(e) => current == Some(e),
        };
        if !ok {
            return Err(Refused::WrongExpectedVersion { current, expected });
        }
        let key: Arc<str> = Arc::from(name);
        let position = self.next;
        self.next += 64;
        self.records.push(Record {
            stream: Arc::clone(&key),
            revision: TOMBSTONE_REVISION,
            id: Uuid::new_v4(),
            event_type: "$streamDeleted".to_owned(),
            content_type: "application/octet-stream".to_owned(),
            created,
            data: Bytes::new(),
            custom_metadata: Bytes::new(),
            commit: position,
            prepare: position,
        });
        self.streams.entry(key).or_default().tombstoned = true;
        Ok((position, position))
    }

    /// A system record, as the server writes its own (`$`-prefixed) streams into `$all`.
    pub fn system_record(&mut self, stream: &str, event_type: &str, created: i64) {
        let position = self.next;
        self.next += 64;
        let key: Arc<str> = Arc::from(stream);
        let revision = {
            let s = self.streams.entry(Arc::clone(&key)).or_default();
            s.records.push(self.records.len());
            s.records.len() as u64 - 1
        };
        self.records.push(Record {
            stream: key,
            revision,
            id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            content_type: "application/json".to_owned(),
            created,
            data: Bytes::from_static(b"{}"),
            custom_metadata: Bytes::new(),
            commit: position,
            prepare: position,
        });
    }
}

enum Match {
    All,
    FirstOnly,
    No,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Uuid) -> Proposed {
        Proposed {
            id,
            event_type: "T".into(),
            content_type: "application/octet-stream".into(),
            data: Bytes::from_static(b"{}"),
            custom_metadata: Bytes::new(),
        }
    }

    #[test]
    fn exact_re_sends_are_idempotent_and_partial_ones_conflict() {
        let mut log = Log::new(1 << 20);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let first = log.append("s", Expected::NoStream, vec![event(a), event(b)], 0).unwrap();
        assert_eq!(
            log.append("s", Expected::NoStream, vec![event(a), event(b)], 0).unwrap(),
            first
        );
        assert_eq!(
            log.append("s", Expected::NoStream, vec![event(a), event(c)], 0).unwrap(),
            Appended::WrongExpectedVersion { current: Some(1), expected: Expected::NoStream }
        );
        // The id at the end of the stream again, with the right revision: written (the
        // server only checks ids of a stream already past the expected revision).
        let again = log.append("s", Expected::Revision(1), vec![event(a)], 0).unwrap();
        assert!(matches!(again, Appended::Success { revision: Some(2), .. }));
    }

    #[test]
    fn tombstones_stay_in_all_with_the_deleted_events() {
        let mut log = Log::new(1 << 20);
        log.append("s", Expected::Any, vec![event(Uuid::new_v4())], 0).unwrap();
        log.tombstone("s", Expected::Revision(0), 0).unwrap();
        assert_eq!(log.records().len(), 2);
        assert_eq!(log.stream("s").unwrap_err(), Refused::StreamDeleted);
        assert_eq!(
            log.append("s", Expected::Any, vec![event(Uuid::new_v4())], 0).unwrap_err(),
            Refused::StreamDeleted
        );
        assert!(log.tombstone("never", Expected::NoStream, 0).is_ok());
    }

    #[test]
    fn positions_grow_and_share_a_commit_within_a_write() {
        let mut log = Log::new(1 << 20);
        log.append("s", Expected::Any, vec![event(Uuid::new_v4()), event(Uuid::new_v4())], 0)
            .unwrap();
        let r = log.records();
        assert_eq!(r[0].commit, r[1].commit);
        assert!(r[0].position() < r[1].position());
        assert!(r[0].position() > (0, 0));
    }
}
