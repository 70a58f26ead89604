//! Command execution: load an aggregate's state from its stream, let the pure `decide` judge
//! the command, and append the resulting events with the version the decision was based on.
//! A concurrent writer shows up as a conflict; the command is then re-decided on the newer
//! state, a bounded number of times.
//!
//! States are cached per stream with their version. A command on a cached stream is decided
//! on the cached state without reading the store first (the hot path of a busy agenda: one
//! append, no read); the append's expected version is what makes that safe — if anyone else
//! appended (another replica, a process that bypassed this cache) the append conflicts and
//! the command is re-decided on what the stream holds now. A refusal or a no-op decided on an
//! unverified cached state is re-checked against the stream before it is reported, so a stale
//! cache can cost a read but never a wrong answer.
//!
//! Commands on one stream queue in this process: [`Commands::execute`] holds the stream's
//! turn (a FIFO async lock per stream, kept only while someone holds or waits for it) from
//! deciding to appending. Writers of one process therefore never race each other on a stream
//! — a burst of reports to one busy agenda is decided one after the other instead of losing to
//! each other until the attempts run out — and only writers outside the process (another
//! replica) can make an append conflict.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pop_domain::aggregate::stream_name;
use pop_domain::{Aggregate, CodecError, EventCodec};
use uuid::Uuid;

use crate::cache::GenerationalCache;
use crate::limits::MAX_READ_BATCH;
use crate::{
    Direction, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, StoreError,
};

/// Attempts at one command before giving up on a stream that keeps changing. With N writers
/// racing on one stream, a writer loses at most once per *other* writer's success, so ten
/// attempts always get ten simultaneous commands on one agenda through; more contention than
/// that on a single agenda is a client bug worth surfacing.
pub const MAX_EXECUTE_ATTEMPTS: u32 = 10;

/// Streams whose folded state (and version) [`Commands`] keeps, so a command on a busy
/// aggregate reads only the events since its last command instead of the whole stream.
/// Bounded because states can be large (an agenda with its operations).
pub const STATE_CACHE_CAPACITY: usize = 10_000;

/// Events read per query while loading a stream.
const LOAD_BATCH: usize = MAX_READ_BATCH;

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events appended (empty: the command changed nothing).
    pub events: Vec<A::Event>,
    /// The state after the command (shared with the cache of [`Commands`]: no copy is made).
    pub state: Arc<A>,
    /// The stream's version after the command (`None`: the stream still has no events).
    pub version: Option<u64>,
    /// The global position of the last event appended, for read-your-writes; `None` when no
    /// event was appended.
    pub position: Option<Position>,
}

/// Why a command was not executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The domain refused the command.
    #[error("the command was refused")]
    Refused(#[source] E),
    /// The store failed (including a deleted stream).
    #[error("the event store failed")]
    Store(#[from] StoreError),
    /// A stored event could not be decoded, or a new one encoded.
    #[error("an event could not be decoded or encoded")]
    Codec(#[from] CodecError),
    /// Other writers kept changing the stream.
    #[error("stream {stream:?} kept changing; gave up after {attempts} attempts")]
    Conflict { stream: String, attempts: u32 },
}

#[derive(Clone)]
struct CachedState {
    version: u64,
    state: Arc<dyn Any + Send + Sync>,
}

/// Executes commands against an [`EventStore`]. Share one per process: it caches states.
pub struct Commands {
    store: Arc<dyn EventStore>,
    states: Mutex<GenerationalCache<String, CachedState>>,
    /// The highest position an append through these commands was acknowledged at: a read
    /// that starts after an acknowledged write waits until the read models reach it
    /// (read-your-writes on one replica, at no cost once they have).
    written: Mutex<Position>,
    /// Each stream's turn, while a command holds or waits for it.
    turns: StreamTurns,
    /// When an append last failed because the store was unavailable (disk full, database
    /// down), and why; cleared by the next append that succeeds. Readiness reads it.
    unavailable: Mutex<Option<(std::time::Instant, String)>>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

impl Commands {
    pub fn new(store: Arc<dyn EventStore>) -> Commands {
        Commands {
            store,
            states: Mutex::new(GenerationalCache::new(STATE_CACHE_CAPACITY)),
            written: Mutex::new(Position::START),
            turns: StreamTurns::default(),
            unavailable: Mutex::new(None),
        }
    }

    /// How long ago an append through these commands last failed because the store was
    /// unavailable ([`StoreError::is_unavailable`]), and the failure; `None` when none did
    /// or an append succeeded since.
    pub fn unavailable(&self) -> Option<(std::time::Duration, String)> {
        let last = self.unavailable.lock().ok()?;
        last.as_ref().map(|(at, why)| (at.elapsed(), why.clone()))
    }

    fn note_append(&self, result: Result<(), &StoreError>) {
        let Ok(mut last) = self.unavailable.lock() else { return };
        match result {
            Ok(()) => *last = None,
            Err(e) if e.is_unavailable() => {
                let why = pop_domain::error::ErrorChain(e).to_string();
                *last = Some((std::time::Instant::now(), why));
            }
            Err(_) => {}
        }
    }

    /// The highest position an append through these commands was acknowledged at (the
    /// position of the last event of the latest acknowledged write; [`Position::START`] before
    /// any).
    pub fn written(&self) -> Position {
        self.written.lock().map_or(Position::START, |w| *w)
    }

    fn note_written(&self, position: Position) {
        if let Ok(mut written) = self.written.lock()
            && position > *written
        {
            *written = position;
        }
    }

    /// The store commands are executed against.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Runs `command` on the aggregate `A` with id `id` (stream `<A::CATEGORY>-<id>`). Every
    /// appended event carries `metadata` and a fresh UUID v7 id; time is whatever the command
    /// carries (the domain reads no clock).
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        metadata: &EventMetadata,
        command: &A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Sync,
    {
        let stream = stream_name(A::CATEGORY, id);
        let metadata = metadata.to_json().map_err(CodecError::Encode)?;
        // Wait for the commands on this stream queued before this one (held until return).
        let _turn = self.turns.take(&stream).await;
        let (mut state, mut version, mut fresh) = match self.cached::<A>(&stream) {
            // Optimistic: decide on the cached state and let the append's expected version
            // tell whether another writer (another replica, or a delete) got there first.
            Some((state, version)) => (state, Some(version), false),
            None => (A::default(), None, true),
        };
        if fresh {
            self.catch_up(&stream, &mut state, &mut version).await?;
        }
        for _ in 0..MAX_EXECUTE_ATTEMPTS {
            let decided = state.decide(command);
            let events = match decided {
                Ok(events) if fresh || !events.is_empty() => events,
                // A refusal or a no-op judged on an unverified cached state is only reported
                // after reading what the stream holds now: the cache may be behind.
                _ if !fresh => {
                    self.catch_up(&stream, &mut state, &mut version).await?;
                    fresh = true;
                    continue;
                }
                Ok(events) => events,
                Err(e) => return Err(ExecuteError::Refused(e)),
            };
            if events.is_empty() {
                let state = self.remember(&stream, version, state);
                return Ok(Executed { events, state, version, position: None });
            }
            let new_events = events
                .iter()
                .map(|e| {
                    Ok(NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: e.event_type().to_owned(),
                        schema_version: e.schema_version(),
                        data: e.encode()?,
                        metadata: metadata.clone(),
                    })
                })
                .collect::<Result<Vec<_>, CodecError>>()?;
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let appended = self.store.append(&stream, expected, new_events).await;
            self.note_append(appended.as_ref().map(|_| ()));
            match appended {
                Ok(appended) => {
                    self.note_written(appended.position);
                    for e in &events {
                        state.evolve(e);
                    }
                    let version = Some(appended.version);
                    let state = self.remember(&stream, version, state);
                    return Ok(Executed {
                        events,
                        state,
                        version,
                        position: Some(appended.position),
                    });
                }
                // Someone else appended since we read: read their events and decide again.
                Err(e) if e.is_conflict() => {
                    self.catch_up(&stream, &mut state, &mut version).await?;
                    fresh = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecuteError::Conflict { stream, attempts: MAX_EXECUTE_ATTEMPTS })
    }

    /// How many streams have a command running or waiting in this process (for tests: the
    /// turns are dropped once nobody holds or waits for them).
    pub fn streams_in_use(&self) -> usize {
        self.turns.map.lock().map_or(0, |m| m.len())
    }

    /// The current state of the aggregate `A` with id `id`, and its stream version.
    pub async fn load<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<(A, Option<u64>), ExecuteError<A::Error>> {
        let stream = stream_name(A::CATEGORY, id);
        let (mut state, mut version) = match self.cached::<A>(&stream) {
            Some((state, version)) => (state, Some(version)),
            None => (A::default(), None),
        };
        self.catch_up(&stream, &mut state, &mut version).await?;
        let state = self.remember(&stream, version, state);
        Ok((Arc::unwrap_or_clone(state), version))
    }

    /// Folds the events after `version` into `state`.
    async fn catch_up<A: Aggregate>(
        &self,
        stream: &str,
        state: &mut A,
        version: &mut Option<u64>,
    ) -> Result<(), ExecuteError<A::Error>> {
        loop {
            let from = version.map_or(0, |v| v.saturating_add(1));
            let batch =
                self.store.read_stream(stream, from, LOAD_BATCH, Direction::Forwards).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for recorded in batch {
                let event = <A::Event as EventCodec>::decode(
                    &recorded.event_type,
                    recorded.schema_version,
                    &recorded.data,
                )?;
                state.evolve(&event);
                *version = Some(recorded.version);
            }
        }
    }

    /// The cached state of `stream` and its version, if any. A poisoned lock or a state of
    /// another type (two aggregates sharing a category) is a miss: the stream is then read
    /// from the start.
    fn cached<A: Aggregate>(&self, stream: &str) -> Option<(A, u64)> {
        let hit = self.states.lock().ok().and_then(|mut c| c.get(stream))?;
        hit.state.downcast_ref::<A>().map(|s| (s.clone(), hit.version))
    }

    /// Caches `state` at `version` (when the stream exists) and hands it back shared.
    fn remember<A: Aggregate>(&self, stream: &str, version: Option<u64>, state: A) -> Arc<A> {
        let state = Arc::new(state);
        let Some(version) = version else { return state };
        if let Ok(mut cache) = self.states.lock() {
            let shared: Arc<dyn Any + Send + Sync> = Arc::clone(&state) as _;
            cache.insert(stream.to_owned(), CachedState { version, state: shared });
        }
        state
    }

    /// Applies `f` to the cached state of the aggregate `A` with id `id`, without reading the
    /// store: `None` when it is not cached. The state may be behind the stream, so use it only
    /// for what never changes once set (an agenda's customer, say).
    pub fn peek<A: Aggregate, R>(&self, id: &str, f: impl FnOnce(&A) -> R) -> Option<R> {
        let stream = stream_name(A::CATEGORY, id);
        let hit = self.states.lock().ok().and_then(|mut c| c.get(&stream))?;
        hit.state.downcast_ref::<A>().map(f)
    }
}

/// One FIFO async lock per stream, created on first use and dropped when the last holder or
/// waiter is done, so the map holds only the streams with a command in flight.
#[derive(Default)]
struct StreamTurns {
    map: Arc<Mutex<TurnMap>>,
}

/// The streams with a command in flight, keyed by a name shared with their [`Turn`]s (so a
/// command on a busy stream allocates nothing).
type TurnMap = HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>;

impl StreamTurns {
    /// Waits for `stream`'s turn (tokio's mutex queues waiters in arrival order).
    async fn take(&self, stream: &str) -> Turn {
        // A poisoned map (a panic while it was held) only loses the queueing, never a write:
        // the append's expected version still guards the stream.
        let (key, lock): (Arc<str>, _) = match self.map.lock() {
            Ok(mut map) => match map.get_key_value(stream) {
                Some((key, lock)) => (Arc::clone(key), Arc::clone(lock)),
                None => {
                    let key: Arc<str> = Arc::from(stream);
                    let lock = Arc::clone(map.entry(Arc::clone(&key)).or_default());
                    (key, lock)
                }
            },
            Err(_) => (Arc::from(stream), Arc::new(tokio::sync::Mutex::new(()))),
        };
        let guard = lock.lock_owned().await;
        Turn { guard: Some(guard), map: Arc::clone(&self.map), stream: key }
    }
}

/// A stream's turn; on drop it passes to the next waiter, or the stream leaves the map.
struct Turn {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    map: Arc<Mutex<TurnMap>>,
    stream: Arc<str>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Release first; then the entry goes if nobody else holds a handle to it (a handle is
        // only ever cloned under the map's lock, so the count cannot rise behind this check).
        drop(self.guard.take());
        if let Ok(mut map) = self.map.lock()
            && map.get(&*self.stream).is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&*self.stream);
        }
    }
}
