//! The one judgement every backend makes of an append, written once: a deleted stream refuses
//! it; an expected version that does not hold refuses it — unless it is the re-send of an
//! append that already succeeded, which is answered with the original result; an expected
//! version that holds writes the events at the next versions — unless their ids are already in
//! the log, which is again either that same append (answered) or a reuse of an id
//! ([`StoreError::DuplicateEventId`]).
//!
//! Pure: the backends supply what they know (the stream's state, and where each event id
//! already sits) and carry the verdict out. They differ only in *when* they look the event ids
//! up: PostgreSQL reads them for the whole group before deciding; SQLite lets its unique index
//! find a duplicate during the insert and only then asks [`resend`].

use uuid::Uuid;

use crate::{ActualVersion, AppendResult, ExpectedVersion, NewEvent, Position, StoreError};

/// A stream as the writer sees it when it judges an append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    /// The version of its last event; `None` when it has none.
    pub version: Option<u64>,
    pub deleted: bool,
}

/// Where an event id already sits in the log (or earlier in the same group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Whether it sits in the stream being appended to.
    pub same_stream: bool,
    pub version: u64,
    pub position: Position,
}

/// Whether an append's events are already in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Every event is in this stream, in order, where this append put them: it is a re-send.
    Same(AppendResult),
    /// At least one event id is in the log some other way (the first one found).
    Clash(Uuid),
    /// None of the event ids is in the log.
    Absent,
}

/// What the rule says of an append before anything is written.
#[derive(Debug)]
pub enum Verdict {
    /// Write the events at versions `first_version..=last_version`, unless their ids turn out
    /// to be in the log already ([`resend`] says what to answer then).
    Write { first_version: u64, last_version: u64 },
    /// Write nothing and answer this: the re-send of an append that already succeeded.
    Resent(AppendResult),
    /// Write nothing; the append is refused.
    Refused(StoreError),
}

/// Where `events` already sit, looked up by `lookup` (an index read, or a map of the group's
/// ids), judged against where an append to `stream` at `expected` would have put them.
pub fn replay<E>(
    expected: ExpectedVersion,
    events: &[NewEvent],
    mut lookup: impl FnMut(&Uuid) -> Result<Option<Placement>, E>,
) -> Result<Replay, E> {
    let mut clash = None;
    let mut same = true;
    let mut first_version = 0u64;
    let mut last_position = Position::START;
    for (offset, event) in (0u64..).zip(events) {
        let Some(found) = lookup(&event.event_id)? else {
            same = false;
            continue;
        };
        clash.get_or_insert(event.event_id);
        if offset == 0 {
            first_version = found.version;
        }
        same &= found.same_stream && first_version.checked_add(offset) == Some(found.version);
        last_position = found.position;
    }
    let Some(clash) = clash else { return Ok(Replay::Absent) };
    let placed_as_expected = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::StreamExists => first_version > 0,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(_) => {
            expected.first_new_version() == Some(first_version)
        }
    };
    match (same && placed_as_expected, first_version.checked_add(events.len() as u64 - 1)) {
        (true, Some(version)) => {
            Ok(Replay::Same(AppendResult { version, position: last_position }))
        }
        _ => Ok(Replay::Clash(clash)),
    }
}

/// Judges an append of `events` to `stream` (in `state`) at `expected`. `replay` is asked only
/// when the expected version does not hold (to tell a re-send from a conflict).
pub fn judge<E>(
    stream: &str,
    state: StreamState,
    expected: ExpectedVersion,
    events: &[NewEvent],
    replay: impl FnOnce() -> Result<Replay, E>,
) -> Result<Verdict, E> {
    if state.deleted {
        return Ok(Verdict::Refused(StoreError::StreamDeleted { stream: stream.to_owned() }));
    }
    if events.is_empty() {
        return Ok(Verdict::Refused(StoreError::EmptyAppend { stream: stream.to_owned() }));
    }
    if !expected.admits(state.version) {
        return Ok(match replay()? {
            Replay::Same(result) => Verdict::Resent(result),
            Replay::Clash(_) | Replay::Absent => {
                Verdict::Refused(StoreError::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual: ActualVersion::from_current(state.version),
                })
            }
        });
    }
    let first_version = state.version.map_or(Some(0), |v| v.checked_add(1));
    let versions =
        first_version.and_then(|first| Some((first, first.checked_add(events.len() as u64 - 1)?)));
    Ok(match versions {
        Some((first_version, last_version)) if i64::try_from(last_version).is_ok() => {
            Verdict::Write { first_version, last_version }
        }
        _ => Verdict::Refused(StoreError::Corrupt(format!("stream {stream:?} version overflows"))),
    })
}

/// What to answer when the events of an append the rule let through are found in the log
/// already: the original result for a re-send, [`StoreError::DuplicateEventId`] for a reuse;
/// `None` when none is there (write them).
pub fn resend(stream: &str, replay: Replay) -> Option<Result<AppendResult, StoreError>> {
    match replay {
        Replay::Same(result) => Some(Ok(result)),
        Replay::Clash(event_id) => {
            Some(Err(StoreError::DuplicateEventId { stream: stream.to_owned(), event_id }))
        }
        Replay::Absent => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use super::*;

    fn events(n: u128) -> Vec<NewEvent> {
        (1..=n)
            .map(|i| NewEvent {
                event_id: Uuid::from_u128(i),
                event_type: "t".into(),
                schema_version: 1,
                data: b"{}".to_vec(),
                metadata: b"{}".to_vec(),
            })
            .collect()
    }

    fn at(same_stream: bool, version: u64, seq: u64) -> Placement {
        Placement { same_stream, version, position: Position::from_sequence(seq) }
    }

    /// `replay` over a table of where ids sit.
    fn replay_of(
        expected: ExpectedVersion,
        events: &[NewEvent],
        table: &HashMap<Uuid, Placement>,
    ) -> Replay {
        let found: Result<Replay, Infallible> =
            replay(expected, events, |id| Ok(table.get(id).copied()));
        match found {
            Ok(r) => r,
        }
    }

    fn judged(
        state: StreamState,
        expected: ExpectedVersion,
        n: u128,
        table: &HashMap<Uuid, Placement>,
    ) -> Verdict {
        let events = events(n);
        let verdict: Result<Verdict, Infallible> =
            judge("s", state, expected, &events, || Ok(replay_of(expected, &events, table)));
        match verdict {
            Ok(v) => v,
        }
    }

    /// One row of the rule's table: name, stream state, expectation, where ids sit, verdict.
    type Case<'t> =
        (&'static str, StreamState, ExpectedVersion, &'t HashMap<Uuid, Placement>, Verdict);

    const FRESH: StreamState = StreamState { version: None, deleted: false };
    const AT_1: StreamState = StreamState { version: Some(1), deleted: false };

    #[test]
    fn the_rule_as_a_table() {
        use ExpectedVersion::*;
        let none = HashMap::new();
        // Two events written at versions 0 and 1 (positions 5, 6): the append that made them.
        let written: HashMap<Uuid, Placement> =
            [(Uuid::from_u128(1), at(true, 0, 5)), (Uuid::from_u128(2), at(true, 1, 6))].into();
        let elsewhere: HashMap<Uuid, Placement> = [(Uuid::from_u128(1), at(false, 0, 5))].into();
        let resent =
            Verdict::Resent(AppendResult { version: 1, position: Position::from_sequence(6) });
        let cases: Vec<Case<'_>> = vec![
            (
                "new stream",
                FRESH,
                NoStream,
                &none,
                Verdict::Write { first_version: 0, last_version: 1 },
            ),
            (
                "any on a new stream",
                FRESH,
                Any,
                &none,
                Verdict::Write { first_version: 0, last_version: 1 },
            ),
            (
                "exact holds",
                AT_1,
                Exact(1),
                &none,
                Verdict::Write { first_version: 2, last_version: 3 },
            ),
            (
                "exists holds",
                AT_1,
                StreamExists,
                &none,
                Verdict::Write { first_version: 2, last_version: 3 },
            ),
            ("re-send of the first append", AT_1, NoStream, &written, resent),
            (
                "conflict, ids unknown",
                AT_1,
                Exact(0),
                &none,
                Verdict::Refused(StoreError::WrongExpectedVersion {
                    stream: "s".into(),
                    expected: Exact(0),
                    actual: ActualVersion::Version(1),
                }),
            ),
            (
                "conflict, an id of another stream",
                AT_1,
                NoStream,
                &elsewhere,
                Verdict::Refused(StoreError::WrongExpectedVersion {
                    stream: "s".into(),
                    expected: NoStream,
                    actual: ActualVersion::Version(1),
                }),
            ),
            (
                "exists on a new stream",
                FRESH,
                StreamExists,
                &none,
                Verdict::Refused(StoreError::WrongExpectedVersion {
                    stream: "s".into(),
                    expected: StreamExists,
                    actual: ActualVersion::NoStream,
                }),
            ),
            (
                "deleted",
                StreamState { version: Some(3), deleted: true },
                Any,
                &none,
                Verdict::Refused(StoreError::StreamDeleted { stream: "s".into() }),
            ),
        ];
        for (name, state, expected, table, want) in cases {
            let got = judged(state, expected, 2, table);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{name}");
        }
    }

    #[test]
    fn an_empty_append_is_refused() {
        let verdict: Result<Verdict, Infallible> =
            judge("s", FRESH, ExpectedVersion::Any, &[], || Ok(Replay::Absent));
        assert!(matches!(verdict, Ok(Verdict::Refused(StoreError::EmptyAppend { .. }))));
    }

    #[test]
    fn found_ids_after_the_expected_version_held() {
        let evs = events(2);
        // Same stream, same places, as NoStream put them: the re-send.
        let same: HashMap<Uuid, Placement> =
            [(Uuid::from_u128(1), at(true, 0, 5)), (Uuid::from_u128(2), at(true, 1, 6))].into();
        let r = replay_of(ExpectedVersion::NoStream, &evs, &same);
        assert!(matches!(resend("s", r), Some(Ok(AppendResult { version: 1, .. }))));
        // Out of order in the stream: a reuse.
        let swapped: HashMap<Uuid, Placement> =
            [(Uuid::from_u128(1), at(true, 1, 6)), (Uuid::from_u128(2), at(true, 0, 5))].into();
        let r = replay_of(ExpectedVersion::Any, &evs, &swapped);
        assert!(matches!(
            resend("s", r),
            Some(Err(StoreError::DuplicateEventId { event_id, .. })) if event_id == Uuid::from_u128(1)
        ));
        // Only some of the ids: a reuse too.
        let part: HashMap<Uuid, Placement> = [(Uuid::from_u128(2), at(true, 1, 6))].into();
        let r = replay_of(ExpectedVersion::Any, &evs, &part);
        assert!(matches!(resend("s", r), Some(Err(StoreError::DuplicateEventId { .. }))));
        // Placed where NoStream would not have put them (at 3 and 4): a reuse.
        let later: HashMap<Uuid, Placement> =
            [(Uuid::from_u128(1), at(true, 3, 7)), (Uuid::from_u128(2), at(true, 4, 8))].into();
        let r = replay_of(ExpectedVersion::NoStream, &evs, &later);
        assert!(matches!(resend("s", r), Some(Err(StoreError::DuplicateEventId { .. }))));
        // None there: write them.
        assert!(resend("s", replay_of(ExpectedVersion::Any, &evs, &HashMap::new())).is_none());
    }
}
