//! The one conformance suite every [`EventStore`] backend must pass.
//!
//! A backend provides a [`Harness`] (how to make an empty store, and how to reopen it) and
//! instantiates the whole suite with one line, which generates one `#[tokio::test]` per check
//! (the calling crate needs `tokio` with `macros` and `rt-multi-thread`):
//!
//! ```text
//! pop_store::conformance_suite!(my_backend::TestHarness);
//! ```
//!
//! A backend that needs something the machine may lack (a PostgreSQL installation) returns
//! `false` from [`Harness::available`] there, after saying so loudly; each test then returns.
//!
//! Checks return a [`Failure`] instead of panicking, so this module is ordinary library code;
//! the generated tests turn a failure into a test failure. No check asserts on time: the only
//! timeout ([`SUBSCRIBER_GUARD`]) turns a hang into a failure instead of a stuck test run.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::limits::{
    MAX_APPEND_BYTES, MAX_EVENT_DATA_BYTES, MAX_EVENT_METADATA_BYTES, MAX_EVENT_TYPE_BYTES,
    MAX_EVENTS_PER_APPEND, MAX_READ_BATCH, MAX_STREAM_NAME_BYTES,
};
use crate::{
    ActualVersion, AppendResult, Clock, Direction, EventStore, ExpectedVersion, Limit, NewEvent,
    Position, RecordedEvent, StoreError, fixed_clock,
};

/// How a backend makes stores for the suite.
#[async_trait]
pub trait Harness: Sized + Send + Sync + 'static {
    /// A new, empty store that stamps events with `clock`.
    async fn empty(clock: Clock) -> Result<Self, StoreError>;

    /// The store under test.
    fn store(&self) -> Arc<dyn EventStore>;

    /// Closes the store and opens it again on the same storage, so [`Harness::store`] returns
    /// the reopened one. `Ok(false)`: nothing outlives a close for this backend, and the
    /// reopen check has nothing to test.
    async fn reopen(&mut self) -> Result<bool, StoreError>;

    /// Whether the backend can run here at all. `false` (e.g. no PostgreSQL installed) makes
    /// every generated test return at once; the harness says so loudly itself.
    fn available() -> bool {
        true
    }
}

/// Why a check failed.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(format!("unexpected store error: {e} ({e:?})"))
    }
}

/// The result of one check.
pub type Check = Result<(), Failure>;

/// The longest a subscriber check waits for events it knows are committed. Only a broken
/// subscription (a lost event) ever gets near it.
pub const SUBSCRIBER_GUARD: Duration = Duration::from_secs(120);

/// Concurrent appenders racing for the same expected version.
const RACERS: usize = 32;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Failure(format!($($fmt)+)));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err(Failure(format!(
                        "{}:\n  left:  {:?}\n  right: {:?}",
                        format!($($fmt)+),
                        l,
                        r
                    )));
                }
            }
        }
    };
}

/// Generates one `#[tokio::test]` per conformance check for a [`Harness`] type.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::conformance_suite!(@checks $harness;
            empty_store_reads_nothing,
            expected_version_on_new_stream,
            expected_version_on_existing_stream,
            expected_version_on_deleted_stream,
            one_winner_among_concurrent_appends,
            refused_appends_do_not_fail_batch_mates,
            read_stream_forwards_and_backwards,
            read_all_is_ordered_and_resumable,
            subscribers_see_every_event_once,
            data_and_metadata_round_trip_byte_for_byte,
            idempotent_re_append,
            reused_event_ids_are_refused,
            deleted_streams_vanish,
            largest_append_and_event_are_accepted,
            limits_are_enforced,
            recorded_at_comes_from_the_clock,
            commit_times_never_go_back,
            reopen_keeps_everything,
            positions_round_trip_as_text,
            group_commits_count_every_request,
        );
    };
    (@checks $harness:ty; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                if !<$harness as $crate::conformance::Harness>::available() {
                    return;
                }
                if let Err(failure) = $crate::conformance::$check::<$harness>().await {
                    panic!("conformance check `{}` failed: {}", stringify!($check), failure);
                }
            }
        )*
    };
}

/// The time the suite's stores are stamped with.
pub fn conformance_time() -> Result<DateTime<Utc>, Failure> {
    DateTime::from_timestamp(1_700_000_000, 123_456_000)
        .ok_or_else(|| Failure("the conformance time is out of range".to_owned()))
}

async fn open<H: Harness>() -> Result<H, Failure> {
    Ok(H::empty(fixed_clock(conformance_time()?)).await?)
}

fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        data: data.as_bytes().to_vec(),
        metadata: br#"{"actor":"conformance"}"#.to_vec(),
    }
}

fn numbered(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event("Numbered", &format!(r#"{{"i":{i}}}"#))).collect()
}

/// Unique stream names per check, so a backend shared between checks would still work.
fn stream_name(label: &str) -> String {
    format!("conformance-{label}-{}", Uuid::new_v4().simple())
}

fn expect_conflict(
    result: Result<AppendResult, StoreError>,
    expected: ExpectedVersion,
    actual: ActualVersion,
    what: &str,
) -> Check {
    match result {
        Err(StoreError::WrongExpectedVersion { expected: e, actual: a, .. })
            if e == expected && a == actual =>
        {
            Ok(())
        }
        other => Err(Failure(format!(
            "{what}: expected WrongExpectedVersion {{ expected: {expected:?}, actual: {actual:?} }}, got {other:?}"
        ))),
    }
}

fn expect_deleted<T: fmt::Debug>(result: Result<T, StoreError>, what: &str) -> Check {
    match result {
        Err(StoreError::StreamDeleted { .. }) => Ok(()),
        other => Err(Failure(format!("{what}: expected StreamDeleted, got {other:?}"))),
    }
}

fn expect_limit<T: fmt::Debug>(result: Result<T, StoreError>, limit: Limit, what: &str) -> Check {
    match result {
        Err(StoreError::LimitExceeded { limit: l, .. }) if l == limit => Ok(()),
        other => Err(Failure(format!("{what}: expected LimitExceeded({limit:?}), got {other:?}"))),
    }
}

fn expect_duplicate<T: fmt::Debug>(result: Result<T, StoreError>, what: &str) -> Check {
    match result {
        Err(StoreError::DuplicateEventId { .. }) => Ok(()),
        other => Err(Failure(format!("{what}: expected DuplicateEventId, got {other:?}"))),
    }
}

/// The whole log, page by page.
async fn read_everything(
    store: &dyn EventStore,
    page: usize,
) -> Result<Vec<RecordedEvent>, Failure> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, page).await?;
        let Some(last) = batch.last() else {
            return Ok(all);
        };
        after = last.position;
        all.extend(batch);
    }
}

/// A whole stream, page by page.
async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &str,
) -> Result<Vec<RecordedEvent>, Failure> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = all.last().map_or(0, |e| e.version + 1);
        let batch = store.read_stream(stream, from, MAX_READ_BATCH, Direction::Forwards).await?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

fn ensure_matches(recorded: &RecordedEvent, sent: &NewEvent, what: &str) -> Check {
    ensure_eq!(recorded.event_id, sent.event_id, "{what}: event id");
    ensure_eq!(&*recorded.event_type, sent.event_type.as_str(), "{what}: event type");
    ensure_eq!(recorded.schema_version, sent.schema_version, "{what}: schema version");
    ensure!(recorded.data == sent.data, "{what}: data differs byte for byte");
    ensure!(recorded.metadata == sent.metadata, "{what}: metadata differs byte for byte");
    Ok(())
}

fn ensure_strictly_increasing(events: &[RecordedEvent], what: &str) -> Check {
    for pair in events.windows(2) {
        ensure!(
            pair[0].position < pair[1].position,
            "{what}: position {} is followed by {}",
            pair[0].position,
            pair[1].position
        );
    }
    Ok(())
}

/// An empty store has no head and no events.
pub async fn empty_store_reads_nothing<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    ensure_eq!(store.head().await?, Position::START, "head of an empty store");
    ensure!(store.read_all(Position::START, 10).await?.is_empty(), "read_all of an empty store");
    for direction in [Direction::Forwards, Direction::Backwards] {
        let events = store.read_stream("never-written", 0, 10, direction).await?;
        ensure!(events.is_empty(), "a missing stream reads as empty ({direction:?})");
    }
    Ok(())
}

/// Any and NoStream create a stream; StreamExists and Exact refuse a missing one.
pub async fn expected_version_on_new_stream<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
        let s = stream_name("new");
        let r = store.append(&s, expected, numbered(1)).await?;
        ensure_eq!(r.version, 0, "{expected} on a new stream gives version 0");
    }
    for expected in
        [ExpectedVersion::StreamExists, ExpectedVersion::Exact(0), ExpectedVersion::Exact(5)]
    {
        let s = stream_name("new");
        let r = store.append(&s, expected, numbered(1)).await;
        expect_conflict(
            r,
            expected,
            ActualVersion::NoStream,
            &format!("{expected} on a new stream"),
        )?;
        ensure!(
            store.read_stream(&s, 0, 10, Direction::Forwards).await?.is_empty(),
            "a refused append left events behind"
        );
    }
    Ok(())
}

/// On a stream at version 1: NoStream and wrong Exact refuse; Exact(1), StreamExists, Any
/// append.
pub async fn expected_version_on_existing_stream<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("existing");
    let first = store.append(&s, ExpectedVersion::NoStream, numbered(2)).await?;
    ensure_eq!(first.version, 1, "two events give version 1");

    for expected in
        [ExpectedVersion::NoStream, ExpectedVersion::Exact(0), ExpectedVersion::Exact(2)]
    {
        let r = store.append(&s, expected, numbered(1)).await;
        expect_conflict(
            r,
            expected,
            ActualVersion::Version(1),
            &format!("{expected} at version 1"),
        )?;
    }
    let mut last = first;
    for (expected, version) in [
        (ExpectedVersion::Exact(1), 2),
        (ExpectedVersion::StreamExists, 3),
        (ExpectedVersion::Any, 4),
    ] {
        let r = store.append(&s, expected, numbered(1)).await?;
        ensure_eq!(r.version, version, "{expected} appends");
        ensure!(r.position > last.position, "positions grow with each append");
        last = r;
    }
    let events = read_whole_stream(store.as_ref(), &s).await?;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    ensure_eq!(versions, vec![0, 1, 2, 3, 4], "versions are contiguous from 0");
    ensure_eq!(events.last().map(|e| e.position), Some(last.position), "last position");
    Ok(())
}

/// A deleted stream refuses every append and delete, and reads as deleted; a delete with the
/// wrong expected version changes nothing; deleting a missing stream leaves a tombstone.
pub async fn expected_version_on_deleted_stream<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("deleted");
    store.append(&s, ExpectedVersion::NoStream, numbered(3)).await?;

    let wrong = store.delete_stream(&s, ExpectedVersion::Exact(1)).await;
    ensure!(
        matches!(
            wrong,
            Err(StoreError::WrongExpectedVersion { actual: ActualVersion::Version(2), .. })
        ),
        "a delete at the wrong version is a conflict, got {wrong:?}"
    );
    ensure_eq!(read_whole_stream(store.as_ref(), &s).await?.len(), 3, "refused delete kept events");

    store.delete_stream(&s, ExpectedVersion::Exact(2)).await?;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(2),
    ] {
        let r = store.append(&s, expected, numbered(1)).await;
        expect_deleted(r, &format!("{expected} on a deleted stream"))?;
    }
    expect_deleted(store.delete_stream(&s, ExpectedVersion::Any).await, "deleting twice")?;
    for direction in [Direction::Forwards, Direction::Backwards] {
        let r = store.read_stream(&s, 0, 10, direction).await;
        expect_deleted(r, "reading a deleted stream")?;
    }

    let missing = stream_name("never");
    let r = store.delete_stream(&missing, ExpectedVersion::StreamExists).await;
    ensure!(
        matches!(r, Err(StoreError::WrongExpectedVersion { actual: ActualVersion::NoStream, .. })),
        "deleting a missing stream expecting it to exist is a conflict, got {r:?}"
    );
    store.delete_stream(&missing, ExpectedVersion::NoStream).await?;
    expect_deleted(
        store.append(&missing, ExpectedVersion::NoStream, numbered(1)).await,
        "appending to a tombstone of a stream that never existed",
    )?;
    Ok(())
}

async fn race(
    store: Arc<dyn EventStore>,
    stream: &str,
    expected: ExpectedVersion,
) -> Result<Vec<Result<AppendResult, StoreError>>, Failure> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let stream = stream.to_owned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(&stream, expected, numbered(1)).await
        }));
    }
    let mut results = Vec::with_capacity(RACERS);
    for task in tasks {
        results.push(task.await.map_err(|e| Failure(format!("a racer panicked: {e}")))?);
    }
    Ok(results)
}

/// 32 appenders with the same expected version: exactly one wins, the others see the
/// winner's version.
pub async fn one_winner_among_concurrent_appends<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let existing = stream_name("race");
    store.append(&existing, ExpectedVersion::NoStream, numbered(1)).await?;
    let fresh = stream_name("race");

    for (stream, expected, winner_version) in
        [(&existing, ExpectedVersion::Exact(0), 1), (&fresh, ExpectedVersion::NoStream, 0)]
    {
        let results = race(Arc::clone(&store), stream, expected).await?;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        ensure_eq!(winners.len(), 1, "winners among {RACERS} appends expecting {expected}");
        ensure_eq!(winners[0].version, winner_version, "the winner's version");
        for r in results.into_iter().filter(|r| r.is_err()) {
            expect_conflict(r, expected, ActualVersion::Version(winner_version), "a loser")?;
        }
        let events = read_whole_stream(store.as_ref(), stream).await?;
        ensure_eq!(events.len() as u64, winner_version + 1, "events in the raced stream");
    }
    Ok(())
}

/// A backend that groups its commits counts them ([`EventStore::group_commits`], exported on
/// `/metrics`): one appender at a time makes a group per append; appends sent together are
/// every one counted, in one group or a few.
pub async fn group_commits_count_every_request<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let Some(start) = store.group_commits() else { return Ok(()) };
    let stream = stream_name("counted");
    for version in 0..5u64 {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version - 1)
        };
        store.append(&stream, expected, numbered(1)).await?;
    }
    let one_by_one = store.group_commits().unwrap_or_default();
    ensure_eq!(one_by_one.requests - start.requests, 5, "requests after 5 appends in turn");
    ensure_eq!(one_by_one.groups - start.groups, 5, "groups after 5 appends in turn");
    let appends = (0..16).map(|_| {
        let store = Arc::clone(&store);
        async move {
            store.append(&stream_name("counted"), ExpectedVersion::NoStream, numbered(1)).await
        }
    });
    for result in futures::future::join_all(appends).await {
        result?;
    }
    let together = store.group_commits().unwrap_or_default();
    ensure_eq!(together.requests - one_by_one.requests, 16, "requests after 16 appends at once");
    let groups = together.groups - one_by_one.groups;
    ensure!((1..=16).contains(&groups), "16 appends at once went in {groups} groups");
    Ok(())
}

/// Refused appends (a conflict, a reused event id) arriving together with valid ones (one
/// group commit, for batching backends) do not take the valid ones down.
pub async fn refused_appends_do_not_fail_batch_mates<H: Harness>() -> Check {
    const TASKS: usize = 96;
    let h = open::<H>().await?;
    let store = h.store();
    let contested = stream_name("contested");
    let used = numbered(1);
    store.append(&contested, ExpectedVersion::NoStream, used.clone()).await?;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let contested = contested.clone();
        let used = used.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let s = stream_name("mate");
            let r = match i % 3 {
                0 => store.append(&s, ExpectedVersion::NoStream, numbered(2)).await,
                1 => store.append(&contested, ExpectedVersion::Exact(99), numbered(1)).await,
                _ => {
                    let mut events = numbered(1);
                    events.extend(used);
                    store.append(&s, ExpectedVersion::NoStream, events).await
                }
            };
            (i % 3, s, r)
        }));
    }
    for task in tasks {
        let (kind, s, result) = task.await.map_err(|e| Failure(format!("a task panicked: {e}")))?;
        match kind {
            0 => {
                let r = result?;
                ensure_eq!(r.version, 1, "a valid batch-mate appended");
                ensure_eq!(read_whole_stream(store.as_ref(), &s).await?.len(), 2, "its events");
            }
            1 => expect_conflict(
                result,
                ExpectedVersion::Exact(99),
                ActualVersion::Version(0),
                "a conflicting batch-mate",
            )?,
            _ => {
                expect_duplicate(result, "a batch-mate reusing an event id")?;
                ensure!(
                    read_whole_stream(store.as_ref(), &s).await?.is_empty(),
                    "it wrote nothing"
                );
            }
        }
    }
    Ok(())
}

/// Stream reads honour from, max and direction, and skip other streams' events.
pub async fn read_stream_forwards_and_backwards<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("read");
    let other = stream_name("other");
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let e = event("Numbered", &format!(r#"{{"i":{i}}}"#));
        sent.push(e.clone());
        store.append(&s, ExpectedVersion::Any, vec![e]).await?;
        store.append(&other, ExpectedVersion::Any, numbered(1)).await?;
    }
    let cases: [(u64, usize, Direction, Vec<u64>); 9] = [
        (0, 100, Direction::Forwards, (0..10).collect()),
        (3, 4, Direction::Forwards, vec![3, 4, 5, 6]),
        (8, 10, Direction::Forwards, vec![8, 9]),
        (10, 10, Direction::Forwards, vec![]),
        (0, 0, Direction::Forwards, vec![]),
        (u64::MAX, 3, Direction::Backwards, vec![9, 8, 7]),
        (4, 10, Direction::Backwards, vec![4, 3, 2, 1, 0]),
        (0, 1, Direction::Backwards, vec![0]),
        (20, 2, Direction::Backwards, vec![9, 8]),
    ];
    for (from, max, direction, versions) in cases {
        let what = format!("read_stream(from {from}, max {max}, {direction:?})");
        let events = store.read_stream(&s, from, max, direction).await?;
        let got: Vec<u64> = events.iter().map(|e| e.version).collect();
        ensure_eq!(got, versions, "{what}: versions");
        for e in &events {
            ensure_eq!(&*e.stream, s.as_str(), "{what}: stream name");
            let index = usize::try_from(e.version).map_err(|_| Failure("version".into()))?;
            ensure_matches(e, &sent[index], &what)?;
        }
    }
    let forwards = store.read_stream(&s, 0, 100, Direction::Forwards).await?;
    ensure_strictly_increasing(&forwards, "a stream's positions")?;
    Ok(())
}

/// `read_all` is in global order, exclusive of `after`, resumable from any position and
/// page size, without duplicates.
pub async fn read_all_is_ordered_and_resumable<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let streams = [stream_name("a"), stream_name("b"), stream_name("c")];
    let mut sent = Vec::new();
    for i in 0..20 {
        let s = &streams[i % 3];
        let batch = numbered(1 + i % 3);
        let r = store.append(s, ExpectedVersion::Any, batch.clone()).await?;
        sent.extend(batch.into_iter().map(|e| (s.clone(), e)));
        ensure_eq!(store.head().await?, r.position, "head after an append");
    }
    let all = store.read_all(Position::START, MAX_READ_BATCH).await?;
    ensure_eq!(all.len(), sent.len(), "events in the log");
    ensure_strictly_increasing(&all, "read_all")?;
    for (recorded, (stream, event)) in all.iter().zip(&sent) {
        ensure_eq!(&*recorded.stream, stream.as_str(), "stream of an event in the log");
        ensure_matches(recorded, event, "read_all")?;
    }
    for page in [1, 7, 1000] {
        let paged = read_everything(store.as_ref(), page).await?;
        ensure!(paged == all, "read_all in pages of {page} differs from one read");
    }
    for (i, e) in all.iter().enumerate() {
        let rest = store.read_all(e.position, MAX_READ_BATCH).await?;
        ensure!(
            rest[..] == all[i + 1..],
            "read_all after position {} is not the suffix",
            e.position
        );
    }
    let head = store.head().await?;
    ensure_eq!(Some(head), all.last().map(|e| e.position), "head is the last position");
    Ok(())
}

/// Subscribers starting at different places (before, inside and after the committed log, and
/// while writers are busy) each see every later event exactly once, in order.
pub async fn subscribers_see_every_event_once<H: Harness>() -> Check {
    const WRITERS: usize = 4;
    const APPENDS_PER_WRITER: usize = 50;
    let h = open::<H>().await?;
    let store = h.store();

    // A log to catch up on.
    let mut starts = vec![Position::START];
    for i in 0..100 {
        let r =
            store.append(&stream_name("history"), ExpectedVersion::NoStream, numbered(1)).await?;
        if i == 49 {
            starts.push(r.position);
        }
    }
    starts.push(store.head().await?);

    let spawn_subscriber = |after: Position| {
        let mut events = store.subscribe_all(after);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        (after, rx)
    };
    let mut subscribers: Vec<_> = starts.iter().map(|p| spawn_subscriber(*p)).collect();

    // Concurrent writers; one of them reports a position in the middle of the writing, where
    // another subscriber starts while events keep committing.
    let (mid_tx, mid_rx) = tokio::sync::oneshot::channel();
    let mut mid_tx = Some(mid_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        let mut mid = if w == 0 { mid_tx.take() } else { None };
        writers.push(tokio::spawn(async move {
            let s = stream_name("live");
            for i in 0..APPENDS_PER_WRITER {
                let r = store.append(&s, ExpectedVersion::Any, numbered(1 + i % 3)).await?;
                if i == APPENDS_PER_WRITER / 2
                    && let Some(mid) = mid.take()
                {
                    let _ = mid.send(r.position);
                }
            }
            Ok::<_, StoreError>(())
        }));
    }
    let mid = mid_rx.await.map_err(|_| Failure("the first writer never reported".into()))?;
    subscribers.push(spawn_subscriber(mid));
    for w in writers {
        w.await.map_err(|e| Failure(format!("a writer panicked: {e}")))??;
    }

    let all = read_everything(store.as_ref(), 97).await?;
    let last = all.last().map(|e| e.position).ok_or_else(|| Failure("empty log".into()))?;
    for (after, mut rx) in subscribers {
        let expected: Vec<&RecordedEvent> = all.iter().filter(|e| e.position > after).collect();
        let collect = async {
            let mut seen = Vec::new();
            while seen.last().is_none_or(|e: &RecordedEvent| e.position < last) {
                match rx.recv().await {
                    Some(Ok(e)) => seen.push(e),
                    Some(Err(e)) => return Err(Failure(format!("subscription failed: {e}"))),
                    None => return Err(Failure("subscription ended early".into())),
                }
            }
            Ok(seen)
        };
        let seen = tokio::time::timeout(SUBSCRIBER_GUARD, collect).await.map_err(|_| {
            Failure(format!("subscriber after {after} stalled: an event was never delivered"))
        })??;
        ensure_eq!(seen.len(), expected.len(), "events seen by the subscriber after {after}");
        for (got, want) in seen.iter().zip(&expected) {
            ensure!(
                got == *want,
                "subscriber after {after}: got {} where {} was due",
                got.position,
                want.position
            );
        }
    }
    Ok(())
}

/// Data, metadata and type names come back byte for byte through every read path.
pub async fn data_and_metadata_round_trip_byte_for_byte<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let data = [
        r#"{"a":1}"#,
        "  {\n\t\"a\" : [1, 2 ,3] ,\r\n \"b\":{}}  \n",
        r#"{"emoji":"🦀","nfc":"é","nfd":"é","rtl":"שלום","zwj":"👩‍💻"}"#,
        r#""\u0000 escaped \ud83e\udd80 \" \\ \/""#,
        "1.00000000000000000000000001",
        r#"{"big":123456789012345678901234567890,"neg":-0.0,"exp":1E+400}"#,
        "[]",
        "null",
        r#"{"dup":1,"dup":2}"#,
    ];
    let metadata =
        ["", "{}", " { \"actor\" :\t\"ünïcödé\" } ", r#"{"customerId":"c-1","x":[null]}"#];
    let s = stream_name("bytes");
    let mut sent = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let mut e = event(if i % 2 == 0 { "Plain" } else { "Événement✓" }, d);
        e.metadata = metadata[i % metadata.len()].as_bytes().to_vec();
        e.schema_version = u32::MAX - i as u32;
        sent.push(e);
    }
    store.append(&s, ExpectedVersion::NoStream, sent.clone()).await?;

    let by_stream = read_whole_stream(store.as_ref(), &s).await?;
    let by_log = read_everything(store.as_ref(), 100).await?;
    let mut subscription = store.subscribe_all(Position::START);
    let mut by_subscription = Vec::new();
    for _ in 0..sent.len() {
        match tokio::time::timeout(SUBSCRIBER_GUARD, subscription.next()).await {
            Ok(Some(Ok(e))) => by_subscription.push(e),
            other => return Err(Failure(format!("subscription gave {other:?}"))),
        }
    }
    for (path, events) in
        [("read_stream", by_stream), ("read_all", by_log), ("subscribe_all", by_subscription)]
    {
        ensure_eq!(events.len(), sent.len(), "{path}: events");
        for (got, want) in events.iter().zip(&sent) {
            ensure_matches(got, want, path)?;
        }
    }
    Ok(())
}

/// Re-sending an append that succeeded returns the original result and writes nothing, also
/// when the copies race each other.
pub async fn idempotent_re_append<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("idempotent");
    let a = numbered(2);
    let ra = store.append(&s, ExpectedVersion::NoStream, a.clone()).await?;
    let b = numbered(1);
    let rb = store.append(&s, ExpectedVersion::Exact(1), b.clone()).await?;
    let head = store.head().await?;

    ensure_eq!(
        store.append(&s, ExpectedVersion::NoStream, a.clone()).await?,
        ra,
        "re-sent NoStream append"
    );
    ensure_eq!(store.append(&s, ExpectedVersion::Any, a.clone()).await?, ra, "re-sent as Any");
    ensure_eq!(
        store.append(&s, ExpectedVersion::Exact(1), b.clone()).await?,
        rb,
        "re-sent Exact append"
    );
    ensure_eq!(store.head().await?, head, "re-sends wrote nothing");

    // Copies of one append racing: all get the same result, one copy is written.
    let c = numbered(3);
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, barrier, c, s) =
            (Arc::clone(&store), Arc::clone(&barrier), c.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.append(&s, ExpectedVersion::Exact(2), c).await
        }));
    }
    let mut results = HashSet::new();
    for t in tasks {
        results.insert(t.await.map_err(|e| Failure(format!("a task panicked: {e}")))??);
    }
    ensure_eq!(results.len(), 1, "racing copies got different results: {results:?}");
    let events = read_whole_stream(store.as_ref(), &s).await?;
    ensure_eq!(events.len(), 6, "events after all the re-sends");
    let ids: Vec<Uuid> = a.iter().chain(&b).chain(&c).map(|e| e.event_id).collect();
    let got: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    ensure_eq!(got, ids, "each event once, in order");
    Ok(())
}

/// Event ids reused in any way other than an identical re-send are refused.
pub async fn reused_event_ids_are_refused<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("ids");
    let a = numbered(2);
    store.append(&s, ExpectedVersion::NoStream, a.clone()).await?;
    let head = store.head().await?;

    let other = stream_name("ids-other");
    let r = store.append(&other, ExpectedVersion::NoStream, vec![a[0].clone()]).await;
    expect_duplicate(r, "an id reused in another stream")?;

    let e = event("Twice", "{}");
    let r = store.append(&other, ExpectedVersion::Any, vec![e.clone(), e]).await;
    expect_duplicate(r, "one id twice in an append")?;

    let r = store.append(&s, ExpectedVersion::Any, vec![numbered(1).remove(0), a[1].clone()]).await;
    expect_duplicate(r, "a new id followed by a used one")?;

    let r = store.append(&s, ExpectedVersion::Exact(1), vec![a[0].clone()]).await;
    expect_duplicate(r, "a used id appended again at the stream's end")?;

    let r = store.append(&s, ExpectedVersion::Exact(5), vec![a[0].clone()]).await;
    expect_conflict(
        r,
        ExpectedVersion::Exact(5),
        ActualVersion::Version(1),
        "a used id at a wrong version",
    )?;

    ensure_eq!(store.head().await?, head, "refused appends wrote nothing");
    ensure!(
        read_whole_stream(store.as_ref(), &other).await?.is_empty(),
        "nothing in the other stream"
    );
    Ok(())
}

/// A deleted stream's events leave the log; positions are never handed out again, even when
/// the deleted events were the newest.
pub async fn deleted_streams_vanish<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let keep = stream_name("keep");
    let gone = stream_name("gone");
    store.append(&keep, ExpectedVersion::NoStream, numbered(1)).await?;
    store.append(&gone, ExpectedVersion::NoStream, numbered(2)).await?;
    store.append(&keep, ExpectedVersion::Exact(0), numbered(1)).await?;
    let last = store.append(&gone, ExpectedVersion::Exact(1), numbered(1)).await?;

    store.delete_stream(&gone, ExpectedVersion::Exact(2)).await?;
    let all = read_everything(store.as_ref(), 10).await?;
    ensure!(
        all.iter().all(|e| *e.stream == *keep),
        "read_all still has events of a deleted stream"
    );
    ensure_eq!(all.len(), 2, "events left in the log");
    expect_deleted(store.read_stream(&gone, 0, 10, Direction::Forwards).await, "reading it")?;
    ensure_eq!(store.head().await?, last.position, "a delete does not move the head");

    let mut subscription = store.subscribe_all(Position::START);
    for want in &all {
        match tokio::time::timeout(SUBSCRIBER_GUARD, subscription.next()).await {
            Ok(Some(Ok(got))) => ensure!(got == *want, "subscription after a delete"),
            other => return Err(Failure(format!("subscription gave {other:?}"))),
        }
    }
    let next = store.append(&stream_name("after"), ExpectedVersion::NoStream, numbered(1)).await?;
    ensure!(next.position > last.position, "a position was handed out twice");
    match tokio::time::timeout(SUBSCRIBER_GUARD, subscription.next()).await {
        Ok(Some(Ok(got))) => ensure_eq!(got.position, next.position, "live event after the gap"),
        other => return Err(Failure(format!("subscription gave {other:?}"))),
    }
    Ok(())
}

/// The largest append (by count) and the largest event (data and metadata) are accepted and
/// read back whole.
pub async fn largest_append_and_event_are_accepted<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("many");
    let many = numbered(MAX_EVENTS_PER_APPEND);
    let r = store.append(&s, ExpectedVersion::NoStream, many.clone()).await?;
    ensure_eq!(r.version, MAX_EVENTS_PER_APPEND as u64 - 1, "version after the largest append");
    let events = read_whole_stream(store.as_ref(), &s).await?;
    ensure_eq!(events.len(), MAX_EVENTS_PER_APPEND, "events read back");
    for (got, want) in events.iter().zip(&many) {
        ensure_matches(got, want, "largest append")?;
    }

    let big = stream_name("big");
    let mut e = event("Big", &json_string_of_len(MAX_EVENT_DATA_BYTES));
    e.metadata =
        format!(r#"{{"pad":{}}}"#, json_string_of_len(MAX_EVENT_METADATA_BYTES - 8)).into_bytes();
    ensure_eq!(e.data.len(), MAX_EVENT_DATA_BYTES, "test data size");
    ensure_eq!(e.metadata.len(), MAX_EVENT_METADATA_BYTES, "test metadata size");
    store.append(&big, ExpectedVersion::NoStream, vec![e.clone()]).await?;
    let back = store.read_stream(&big, 0, 1, Direction::Forwards).await?;
    ensure_eq!(back.len(), 1, "the largest event read back");
    ensure_matches(&back[0], &e, "largest event")?;
    Ok(())
}

/// A JSON string literal of exactly `len` bytes (quotes included).
fn json_string_of_len(len: usize) -> String {
    let mut s = String::with_capacity(len);
    s.push('"');
    s.extend(std::iter::repeat_n('x', len.saturating_sub(2)));
    s.push('"');
    s
}

/// Requests past any limit are refused with the typed error, and write nothing.
pub async fn limits_are_enforced<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("limits");

    let r = store.append(&s, ExpectedVersion::Any, numbered(MAX_EVENTS_PER_APPEND + 1)).await;
    expect_limit(r, Limit::EventsPerAppend, "one event too many")?;

    let too_big = event("Big", &json_string_of_len(MAX_EVENT_DATA_BYTES + 1));
    let r = store.append(&s, ExpectedVersion::Any, vec![too_big]).await;
    expect_limit(r, Limit::EventDataBytes, "data one byte too large")?;

    let mut e = event("Meta", "{}");
    e.metadata = json_string_of_len(MAX_EVENT_METADATA_BYTES + 1).into_bytes();
    let r = store.append(&s, ExpectedVersion::Any, vec![e]).await;
    expect_limit(r, Limit::EventMetadataBytes, "metadata one byte too large")?;

    let r = store
        .append(&s, ExpectedVersion::Any, vec![event(&"T".repeat(MAX_EVENT_TYPE_BYTES + 1), "{}")])
        .await;
    expect_limit(r, Limit::EventTypeBytes, "type name too long")?;

    let full = json_string_of_len(MAX_EVENT_DATA_BYTES);
    let count = MAX_APPEND_BYTES / MAX_EVENT_DATA_BYTES + 1;
    let heavy: Vec<NewEvent> = (0..count).map(|_| event("Big", &full)).collect();
    let r = store.append(&s, ExpectedVersion::Any, heavy).await;
    expect_limit(r, Limit::AppendBytes, "an append over the byte cap")?;

    let long = "s".repeat(MAX_STREAM_NAME_BYTES + 1);
    expect_limit(
        store.append(&long, ExpectedVersion::Any, numbered(1)).await,
        Limit::StreamNameBytes,
        "stream name",
    )?;
    let longest = "s".repeat(MAX_STREAM_NAME_BYTES);
    store.append(&longest, ExpectedVersion::Any, numbered(1)).await?;

    expect_limit(
        store.read_stream(&s, 0, MAX_READ_BATCH + 1, Direction::Forwards).await,
        Limit::ReadBatch,
        "read_stream max",
    )?;
    expect_limit(
        store.read_all(Position::START, MAX_READ_BATCH + 1).await,
        Limit::ReadBatch,
        "read_all max",
    )?;

    let r = store.append("", ExpectedVersion::Any, numbered(1)).await;
    ensure!(matches!(r, Err(StoreError::InvalidStreamName { .. })), "empty stream name: {r:?}");
    let r = store.append(&s, ExpectedVersion::Any, vec![]).await;
    ensure!(matches!(r, Err(StoreError::EmptyAppend { .. })), "empty append: {r:?}");
    let mut nil = event("Nil", "{}");
    nil.event_id = Uuid::nil();
    let r = store.append(&s, ExpectedVersion::Any, vec![nil]).await;
    ensure!(matches!(r, Err(StoreError::InvalidEvent { .. })), "nil event id: {r:?}");
    let r = store.append(&s, ExpectedVersion::Any, vec![event("NotJson", "{nope")]).await;
    ensure!(matches!(r, Err(StoreError::InvalidEvent { .. })), "data that is not JSON: {r:?}");
    let mut bad_meta = event("BadMeta", "{}");
    bad_meta.metadata = b"not json".to_vec();
    let r = store.append(&s, ExpectedVersion::Any, vec![bad_meta]).await;
    ensure!(matches!(r, Err(StoreError::InvalidEvent { .. })), "metadata that is not JSON: {r:?}");
    // JSON whose strings hold bytes that are not UTF-8: the grammar holds, the encoding not.
    let bad_data =
        NewEvent { data: b"{\"a\":\"\xff\xfe\"}".to_vec(), ..event("BadUtf8Data", "{}") };
    let bad_meta =
        NewEvent { metadata: b"{\"actor\":\"\xc3\"}".to_vec(), ..event("BadUtf8Meta", "{}") };
    for (what, bad) in [("data", bad_data), ("metadata", bad_meta)] {
        let r = store.append(&s, ExpectedVersion::Any, vec![bad]).await;
        ensure!(
            matches!(&r, Err(StoreError::InvalidEvent { reason, .. })
                if reason.contains(what) && reason.contains("UTF-8")),
            "{what} that is not UTF-8: {r:?}"
        );
    }

    ensure!(
        read_whole_stream(store.as_ref(), &s).await?.is_empty(),
        "refused appends wrote events"
    );
    Ok(())
}

/// `recorded_at` is the injected clock's time.
pub async fn recorded_at_comes_from_the_clock<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    store.append(&stream_name("clock"), ExpectedVersion::NoStream, numbered(3)).await?;
    let want = conformance_time()?;
    for e in store.read_all(Position::START, 10).await? {
        ensure_eq!(e.recorded_at, want, "recorded_at");
    }
    Ok(())
}

/// Commit times never go back: not when the wall clock steps back an hour while the store is
/// open, nor when it is reopened behind its last commit (ops3am3: an NTP step back stamped
/// later commits earlier, and as-of reads by time then hid a finished agenda); behind the
/// floor they run on from it no faster than real time; and the store says so through
/// [`EventStore::commit_floor`], which the commands' clock follows.
pub async fn commit_times_never_go_back<H: Harness>() -> Check {
    use std::sync::atomic::{AtomicI64, Ordering};
    let start = conformance_time()?.timestamp_micros();
    let wall = Arc::new(AtomicI64::new(start));
    let read = Arc::clone(&wall);
    let clock: Clock = Arc::new(move || {
        DateTime::from_timestamp_micros(read.load(Ordering::SeqCst)).unwrap_or_default()
    });
    let mut h = H::empty(clock).await?;
    let s = stream_name("times");
    h.store().append(&s, ExpectedVersion::NoStream, numbered(1)).await?;
    let stepped = std::time::Instant::now();
    wall.fetch_sub(3_600_000_000, Ordering::SeqCst);
    // Time goes on meanwhile, though the wall clock is an hour behind.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    h.store().append(&s, ExpectedVersion::Exact(0), numbered(1)).await?;
    let floor = h.store().commit_floor().map(|t| t.timestamp_micros());
    if h.reopen().await? {
        h.store().append(&s, ExpectedVersion::Exact(1), numbered(1)).await?;
    }
    // Behind the floor, time runs on from it at the monotonic clock's pace: never faster.
    let most = start + i64::try_from(stepped.elapsed().as_micros()).unwrap_or(i64::MAX);
    let times: Vec<i64> = h
        .store()
        .read_stream(&s, 0, 10, Direction::Forwards)
        .await?
        .iter()
        .map(|e| e.recorded_at.timestamp_micros())
        .collect();
    ensure!(
        times.len() >= 2
            && times[0] == start
            && times[1] - times[0] >= 40_000
            && times.windows(2).all(|w| w[0] <= w[1])
            && times.iter().all(|&t| t <= most),
        "commit times {times:?}: from {start} on, the second 40 ms or more after it, never \
         back, at most {most} (the wall clock went back to {})",
        start - 3_600_000_000
    );
    ensure!(
        floor.is_some_and(|f| f >= times[1] && f <= most),
        "the commit floor with the clock stepped back: {floor:?}, not from {} to {most}",
        times[1]
    );
    Ok(())
}

/// Closing and reopening keeps every event, tombstone, version and the head; positions go on
/// growing and version checks still hold.
pub async fn reopen_keeps_everything<H: Harness>() -> Check {
    let mut h = open::<H>().await?;
    let store = h.store();
    let s = stream_name("durable");
    let gone = stream_name("gone");
    store.append(&s, ExpectedVersion::NoStream, numbered(3)).await?;
    store.append(&gone, ExpectedVersion::NoStream, numbered(2)).await?;
    store.delete_stream(&gone, ExpectedVersion::Any).await?;
    let before = read_everything(store.as_ref(), 100).await?;
    let head = store.head().await?;
    drop(store);

    if !h.reopen().await? {
        return Ok(());
    }
    let store = h.store();
    ensure_eq!(store.head().await?, head, "head after reopening");
    ensure!(
        read_everything(store.as_ref(), 100).await? == before,
        "the log changed across a reopen"
    );
    expect_deleted(
        store.read_stream(&gone, 0, 10, Direction::Forwards).await,
        "tombstone after reopening",
    )?;
    let r = store.append(&s, ExpectedVersion::NoStream, numbered(1)).await;
    expect_conflict(
        r,
        ExpectedVersion::NoStream,
        ActualVersion::Version(2),
        "NoStream after reopening",
    )?;
    let r = store.append(&s, ExpectedVersion::Exact(2), numbered(1)).await?;
    ensure_eq!(r.version, 3, "appending after reopening");
    ensure!(r.position > head, "positions keep growing after a reopen");
    Ok(())
}

/// Every position a store hands out survives its text form, in the same order.
pub async fn positions_round_trip_as_text<H: Harness>() -> Check {
    let h = open::<H>().await?;
    let store = h.store();
    for i in 0..10 {
        store.append(&stream_name("text"), ExpectedVersion::Any, numbered(1 + i % 2)).await?;
    }
    let all = store.read_all(Position::START, 100).await?;
    let parsed: Vec<Position> = all
        .iter()
        .map(|e| e.position.to_string().parse::<Position>())
        .collect::<Result<_, _>>()
        .map_err(|e| Failure(format!("a position does not parse back: {e}")))?;
    let original: Vec<Position> = all.iter().map(|e| e.position).collect();
    ensure_eq!(parsed, original, "positions through text");
    for p in &original {
        let rest = store
            .read_all(p.to_string().parse().map_err(|e| Failure(format!("{e}")))?, 100)
            .await?;
        ensure!(rest.iter().all(|e| e.position > *p), "reading after a parsed position");
    }
    Ok(())
}
