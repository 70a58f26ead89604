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
//! Commands on one stream queue in this process and are decided together: the first command
//! on an idle stream starts a writer task for it, and every command that arrives while that
//! writer appends waits in the stream's queue. The writer then takes the whole queue (up to
//! [`MAX_COMMANDS_PER_WRITE`]) and decides each command against the state the ones before it
//! left, and appends all their events in ONE write — one fsync for a burst of reports to one
//! busy agenda instead of one per report. Writers of one process never race each other on a
//! stream; only writers outside the process (another replica) make an append conflict, and
//! then the whole batch is re-decided on what the stream holds. Each command still has its
//! own answer:
//! - a refusal or an event that cannot be stored (too large) fails that command alone, and
//!   the others' events are still appended;
//! - nobody is answered before the write that holds the events its answer depends on is
//!   durable (a refusal or no-op decided on a state that includes the batch's earlier events
//!   waits for that write too, and is decided again if it fails);
//! - the writer runs as its own task, so a caller that goes away (a closed connection) cannot
//!   leave the others of its batch unanswered; a command whose caller is already gone when
//!   its batch is taken is not run.
//!
//! Each command's answer carries the state after the whole write (shared, not copied per
//! command) and the write's last position, which is at or after its own events, so
//! read-your-writes holds; its version is that of its own last event.
//!
//! Tracing: each command is a `command` span (a child of whatever span called it, e.g. the
//! HTTP request's), and the write that holds a batch runs in the span of the batch's first
//! command, so the backend's `append` span joins that command's trace. Beside its state the
//! cache keeps the latest W3C `traceparent` the stream's events carry
//! ([`Executed::traceparent`]): whoever picks the aggregate up later (a worker claiming an
//! agenda) can join the trace of the request that last touched it.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use pop_domain::aggregate::stream_name;
use pop_domain::{Aggregate, CodecError, EventCodec};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::cache::GenerationalCache;
use crate::limits::{MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_READ_BATCH, check_append_sizes};
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

/// Most bytes of stored events the states in that cache may stand for together: states are
/// weighed by their streams' event bytes, so 10,000 agendas near the size limits (a state
/// costs a few times its events' bytes) cannot hold gigabytes however few commands use them.
pub const STATE_CACHE_MAX_BYTES: u64 = 64 << 20;

/// Most queued commands of one stream decided together and appended in one write. A burst
/// of reports larger than this takes several writes; the bound keeps one write (and the
/// latency of the first command in it) small while a queue of 16–64 concurrent reports, what
/// a busy agenda sees, goes out in one. The store's own limits on one append
/// ([`MAX_EVENTS_PER_APPEND`], [`MAX_APPEND_BYTES`]) also end a batch.
pub const MAX_COMMANDS_PER_WRITE: usize = 256;

/// Events read per query while loading a stream.
const LOAD_BATCH: usize = MAX_READ_BATCH;

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events appended (empty: the command changed nothing).
    pub events: Vec<A::Event>,
    /// The state after the write that held the command's events (shared with the cache of
    /// [`Commands`]: no copy is made). Commands of the same stream decided together share one
    /// write, so this may include the events of those decided after this one.
    pub state: Arc<A>,
    /// The stream's version after the command's own events (`None`: the stream still has no
    /// events).
    pub version: Option<u64>,
    /// The global position of the last event of the write that held the command's events, for
    /// read-your-writes (at or after the command's own last event); `None` when no event was
    /// appended.
    pub position: Option<Position>,
    /// The W3C `traceparent` of the latest events of the stream that carried one
    /// ([`EventMetadata::traceparent`]) after this write: the trace of the last traced request
    /// that changed the aggregate.
    pub traceparent: Option<Arc<str>>,
    /// The `tracestate` that came with [`Executed::traceparent`]
    /// ([`EventMetadata::tracestate`]), if any.
    pub tracestate: Option<Arc<str>>,
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
    /// The stream's writer stopped before it answered (the runtime shut down, or a panic):
    /// whether the command's events were appended is not known.
    #[error(
        "the writer of stream {stream:?} stopped before answering; the command may or may not have been applied"
    )]
    Interrupted { stream: String },
    /// A command of a chain ([`Commands::execute_chain`]) was not run because the one before
    /// it appended nothing (refused, failed or a no-op), or was not in the same write.
    #[error("not run: the command before it in its chain appended nothing")]
    ChainBroken,
}

#[derive(Clone)]
struct CachedState {
    version: u64,
    /// The bytes of the stream's events folded into it (its weight in the cache).
    bytes: u64,
    state: Arc<dyn Any + Send + Sync>,
    /// See [`Executed::traceparent`].
    trace: Trace,
}

/// The trace context of the latest events of a stream that carried one: a traceparent and
/// the tracestate that came with it (none beside it is none, not the older one's).
#[derive(Debug, Clone, Default)]
struct Trace {
    traceparent: Option<Arc<str>>,
    tracestate: Option<Arc<str>>,
}

impl Trace {
    fn of(metadata: &EventMetadata) -> Trace {
        Trace {
            traceparent: metadata.traceparent.as_deref().map(Arc::from),
            tracestate: metadata.tracestate.as_deref().map(Arc::from),
        }
    }
}

/// An aggregate's state as far as it was folded: its version and the latest trace context
/// its events carried.
struct Folded<A> {
    state: A,
    version: Option<u64>,
    /// The bytes of the events folded (as far as this process saw them): the state's weight.
    bytes: u64,
    trace: Trace,
}

impl<A: Clone> Folded<A> {
    /// A copy of the cached `state` of `hit`, to evolve further.
    fn of(hit: &CachedState, state: &A) -> Folded<A> {
        Folded {
            state: state.clone(),
            version: Some(hit.version),
            bytes: hit.bytes,
            trace: hit.trace.clone(),
        }
    }
}

/// A command ready for its stream's queue, its span and where its answer will come.
#[allow(clippy::type_complexity)]
fn pending<A: Aggregate>(
    stream: &str,
    metadata: &EventMetadata,
    command: &A::Command,
    chained: bool,
) -> Result<(Pending<A>, tracing::Span, oneshot::Receiver<Answer<A>>), ExecuteError<A::Error>>
where
    A::Command: Clone,
{
    let span = tracing::info_span!(
        "command",
        stream,
        command = metadata.command.as_deref().unwrap_or(A::CATEGORY),
    );
    let trace = Trace::of(metadata);
    let metadata = metadata.to_json().map_err(CodecError::Encode)?;
    let (reply, answer) = oneshot::channel();
    let pending = Pending::<A> {
        command: command.clone(),
        metadata,
        trace,
        span: span.clone(),
        chained,
        reply,
    };
    Ok((pending, span, answer))
}

/// A command's answer.
type Answer<A> = Result<Executed<A>, ExecuteError<<A as Aggregate>::Error>>;

/// A command waiting in its stream's queue.
struct Pending<A: Aggregate> {
    command: A::Command,
    /// The events' metadata, encoded.
    metadata: Vec<u8>,
    /// The metadata's trace context.
    trace: Trace,
    /// The command's span: the write that holds its events runs in it when it is the first
    /// of its batch.
    span: tracing::Span,
    /// Runs only if the command queued just before it appended events in the same write
    /// ([`Commands::execute_chain`]).
    chained: bool,
    reply: oneshot::Sender<Answer<A>>,
}

/// The streams with a writer task, by aggregate type and stream name, each with the commands
/// waiting for it (boxed [`Pending`] of that aggregate type).
type Queues = HashMap<(TypeId, String), Vec<Box<dyn Any + Send>>>;

/// Executes commands against an [`EventStore`]. Share one per process: it caches states and
/// queues each stream's commands.
pub struct Commands {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    states: Mutex<GenerationalCache<String, CachedState>>,
    /// The highest position an append through these commands was acknowledged at: a read
    /// that starts after an acknowledged write waits until the read models reach it
    /// (read-your-writes on one replica, at no cost once they have).
    written: Mutex<Position>,
    /// The same per actor (`EventMetadata::actor`): what a read by that actor must see of its
    /// own writes when the read models cannot reach [`Inner::written`] (the store down: the
    /// others' writes are then not waited for). One entry per actor that wrote.
    written_by: Mutex<HashMap<String, Position>>,
    /// Each stream's queue while its writer task runs.
    queues: Mutex<Queues>,
    /// When an append last failed because the store was unavailable (disk full, database
    /// down), and why; cleared by the next append that succeeds. Readiness reads it.
    unavailable: Mutex<Option<(std::time::Instant, String)>>,
    /// A write beside the commands that failed for the store's condition
    /// ([`Commands::note_write`]), held until a write lands.
    held_failure: Mutex<Option<(std::time::Instant, String)>>,
    /// When these commands were made (the process started serving).
    started: std::time::Instant,
    /// The store's outages as these commands saw them ([`Commands::serving_for`]).
    outages: Mutex<Outages>,
}

/// The failures for the store's condition (writes, or [`Commands::note_probe`]'s reads) since
/// the last success, and when the last outage ended. Failures that all fall within
/// [`MIN_OUTAGE`] of the first (a busy store, a lost race: it answered again at once) are no
/// outage; a run of failures longer than that is, and it ends at the next success.
#[derive(Debug, Default)]
struct Outages {
    /// The first and the latest failure since the last success.
    failing: Option<(std::time::Instant, std::time::Instant)>,
    ended: Option<std::time::Instant>,
}

/// The shortest run of failures that counts as an outage ([`Outages`]).
pub const MIN_OUTAGE: std::time::Duration = std::time::Duration::from_secs(1);

impl Outages {
    /// A success, or a failure for the store's condition; `certain`: a failure that alone
    /// says the store is down (a read of its head, which contends with nothing), not one a
    /// busy store gives now and then.
    fn note(&mut self, ok: bool, certain: bool) {
        let now = std::time::Instant::now();
        let first = match certain {
            true => now.checked_sub(MIN_OUTAGE).unwrap_or(now),
            false => now,
        };
        match (ok, self.failing) {
            (false, None) => self.failing = Some((first, now)),
            (false, Some((earlier, _))) => self.failing = Some((earlier.min(first), now)),
            (true, Some((first, last))) => {
                if last.duration_since(first) >= MIN_OUTAGE {
                    self.ended = Some(now);
                }
                self.failing = None;
            }
            (true, None) => {}
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

impl Commands {
    pub fn new(store: Arc<dyn EventStore>) -> Commands {
        Commands {
            inner: Arc::new(Inner {
                store,
                states: Mutex::new(GenerationalCache::weighted(
                    STATE_CACHE_CAPACITY,
                    STATE_CACHE_MAX_BYTES,
                )),
                written: Mutex::new(Position::START),
                written_by: Mutex::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
                unavailable: Mutex::new(None),
                held_failure: Mutex::new(None),
                started: std::time::Instant::now(),
                outages: Mutex::new(Outages::default()),
            }),
        }
    }

    /// How long ago an append through these commands, or a write beside them
    /// ([`Commands::note_write`]), last failed because the store was unavailable
    /// ([`StoreError::is_unavailable`]), and the failure; `None` when none did or a write
    /// landed since.
    pub fn unavailable(&self) -> Option<Unavailable> {
        if let Some((at, why)) = self.inner.held_failure.lock().ok()?.clone() {
            // (ops3am16: its age read 0.0 s on every look, whatever it was.)
            return Some(Unavailable { ago: at.elapsed(), why, held: true });
        }
        let last = self.inner.unavailable.lock().ok()?;
        last.as_ref().map(|(at, why)| Unavailable {
            ago: at.elapsed(),
            why: why.clone(),
            held: false,
        })
    }

    /// How long the store has served since the end of its latest outage these commands saw
    /// (failures for its condition, of writes or [`Commands::note_probe`]'s reads, for at
    /// least [`MIN_OUTAGE`], then a success) — and, with `since_start`, since they were made —
    /// whichever is shorter; zero during an outage; `None`: neither applies. While the store
    /// was down nobody could write (a worker could not renew its lease), so the reclaimer
    /// gives leases that long again before it times them out.
    pub fn serving_for(&self, since_start: bool) -> Option<std::time::Duration> {
        let outages = self.inner.outages.lock().ok()?;
        if let Some((first, last)) = outages.failing
            && last.duration_since(first) >= MIN_OUTAGE
        {
            return Some(std::time::Duration::ZERO);
        }
        let failed = outages.ended.map(|at| at.elapsed());
        let started = since_start.then(|| self.inner.started.elapsed());
        match (failed, started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records whether a read of the store (a timed process's probe of its head) reached it,
    /// for [`Commands::serving_for`] only: a process that writes nothing during an outage
    /// still sees it, and its end.
    pub fn note_probe(&self, result: Result<(), &StoreError>) {
        if let Ok(mut outages) = self.inner.outages.lock() {
            match result {
                Ok(()) => outages.note(true, false),
                Err(e) if e.is_unavailable() => outages.note(false, true),
                Err(_) => {}
            }
        }
    }

    /// Records the outcome of a write made beside these commands (the checkpoint sealer's),
    /// for [`Commands::unavailable`]: a server whose only writes are its seals (no client
    /// traffic) on a full disk answered ready (ops3am3). Such a failure holds until a write
    /// lands (a seal, or an append), not for a fixed while: seals come seconds apart, and a
    /// hold shorter than their interval let readiness flap (review-s36b).
    pub fn note_write(&self, result: Result<(), &StoreError>) {
        if let Ok(mut held) = self.inner.held_failure.lock() {
            *held = match result {
                Err(e) if e.is_unavailable() => {
                    Some((std::time::Instant::now(), pop_domain::error::ErrorChain(e).to_string()))
                }
                Err(_) => return,
                Ok(()) => None,
            };
        }
        self.inner.note_append(result);
    }

    /// The highest position an append through these commands was acknowledged at (the
    /// position of the last event of the latest acknowledged write; [`Position::START`] before
    /// any).
    pub fn written(&self) -> Position {
        self.inner.written.lock().map_or(Position::START, |w| *w)
    }

    /// [`Commands::written`] for the commands of one actor (`EventMetadata::actor`, e.g.
    /// `user:alice`) run through [`Commands::execute`] or [`Commands::execute_chain`];
    /// [`Position::START`] before any.
    pub fn written_by(&self, actor: &str) -> Position {
        let written = self.inner.written_by.lock().unwrap_or_else(PoisonError::into_inner);
        written.get(actor).copied().unwrap_or(Position::START)
    }

    /// Notes that `actor` had a write acknowledged at `position` ([`Commands::written_by`]).
    fn note_written_by(&self, metadata: &EventMetadata, position: Option<Position>) {
        let (Some(actor), Some(position)) = (metadata.actor.as_deref(), position) else { return };
        let mut written = self.inner.written_by.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get_mut(actor) {
            Some(at) => *at = (*at).max(position),
            None => {
                written.insert(actor.to_string(), position);
            }
        }
    }

    /// The store commands are executed against.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Runs `command` on the aggregate `A` with id `id` (stream `<A::CATEGORY>-<id>`). Every
    /// appended event carries `metadata` and a fresh UUID v7 id; time is whatever the command
    /// carries (the domain reads no clock). Must run inside a tokio runtime (the stream's
    /// writer is a task of it).
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        metadata: &EventMetadata,
        command: &A::Command,
    ) -> Result<Executed<A>, ExecuteError<A::Error>>
    where
        A::Command: Clone + Send + 'static,
    {
        let stream = stream_name(A::CATEGORY, id);
        let (pending, span, answer) = pending::<A>(&stream, metadata, command, false)?;
        Inner::enqueue(&self.inner, stream.clone(), vec![pending]);
        let executed =
            answer.instrument(span).await.unwrap_or(Err(ExecuteError::Interrupted { stream }));
        if let Ok(executed) = &executed {
            self.note_written_by(metadata, executed.position);
        }
        executed
    }

    /// Runs `steps` on the aggregate `A` with id `id` as a chain: they are queued together and
    /// decided in order in ONE write (the stream's queue holds nothing else between them), and
    /// each step runs only if the one before it appended events in that write — otherwise it
    /// and every step after it answer [`ExecuteError::ChainBroken`]. So either a prefix of the
    /// chain is appended at once, each step's events with its own metadata, or nothing of the
    /// steps after the first one that appended nothing. One answer per step, in order.
    /// (A chain whose events exceed one append's limits is cut there: the rest is broken.)
    pub async fn execute_chain<A: Aggregate>(
        &self,
        id: &str,
        steps: &[(EventMetadata, A::Command)],
    ) -> Vec<Result<Executed<A>, ExecuteError<A::Error>>>
    where
        A::Command: Clone + Send + 'static,
    {
        let stream = stream_name(A::CATEGORY, id);
        let mut pendings = Vec::with_capacity(steps.len());
        let mut answers = Vec::with_capacity(steps.len());
        for (i, (metadata, command)) in steps.iter().enumerate() {
            match pending::<A>(&stream, metadata, command, i > 0) {
                Ok((pending, span, answer)) => {
                    pendings.push(pending);
                    answers.push((span, answer));
                }
                Err(e) => {
                    // Nothing is queued: the step cannot even be encoded.
                    let mut out: Vec<Result<Executed<A>, ExecuteError<A::Error>>> =
                        (0..steps.len()).map(|_| Err(ExecuteError::ChainBroken)).collect();
                    out[i] = Err(e);
                    return out;
                }
            }
        }
        Inner::enqueue(&self.inner, stream.clone(), pendings);
        let mut out = Vec::with_capacity(answers.len());
        for ((span, answer), (metadata, _)) in answers.into_iter().zip(steps) {
            let stream = stream.clone();
            let executed =
                answer.instrument(span).await.unwrap_or(Err(ExecuteError::Interrupted { stream }));
            if let Ok(executed) = &executed {
                self.note_written_by(metadata, executed.position);
            }
            out.push(executed);
        }
        out
    }

    /// How many streams have a command running or waiting in this process (for tests: a
    /// stream's queue is dropped once its writer has answered every command).
    pub fn streams_in_use(&self) -> usize {
        self.inner.queues.lock().map_or(0, |m| m.len())
    }

    /// How many commands wait in this process for their stream's writer to take them (for
    /// tests: those a writer has taken are not counted).
    pub fn queued(&self) -> usize {
        self.inner.queues.lock().map_or(0, |m| m.values().map(Vec::len).sum())
    }

    /// The current state of the aggregate `A` with id `id`, and its stream version.
    pub async fn load<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<(A, Option<u64>), ExecuteError<A::Error>> {
        let stream = stream_name(A::CATEGORY, id);
        let mut folded = self.inner.cached::<A>(&stream).unwrap_or_default();
        self.inner.catch_up(&stream, &mut folded).await?;
        let version = folded.version;
        let (state, _) = self.inner.remember(&stream, folded);
        Ok((Arc::unwrap_or_clone(state), version))
    }

    /// Applies `f` to the current state of the aggregate `A` with id `id` (as [`Self::load`]
    /// reads it) without copying it out of the cache: what a check of a large state costs is
    /// then the same for every state (a copy of an agenda of 800 operations took milliseconds:
    /// hostile54 M2).
    pub async fn load_with<A: Aggregate, R>(
        &self,
        id: &str,
        f: impl FnOnce(&A) -> R,
    ) -> Result<R, ExecuteError<A::Error>> {
        let stream = stream_name(A::CATEGORY, id);
        // Cached and nothing past it: the cached state itself, shared, not a copy; with
        // something past it, caught up from a copy of that hit (not looked up again).
        let hit = self.inner.states.lock().ok().and_then(|mut c| c.get(&stream));
        let mut folded = match hit.as_ref().and_then(|h| Some((h, h.state.downcast_ref::<A>()?))) {
            Some((hit, state)) => {
                let next = hit.version.saturating_add(1);
                let newer =
                    self.inner.store.read_stream(&stream, next, 1, Direction::Forwards).await?;
                if newer.is_empty() {
                    return Ok(f(state));
                }
                Folded::of(hit, state)
            }
            None => Folded::default(),
        };
        self.inner.catch_up(&stream, &mut folded).await?;
        let (state, _) = self.inner.remember(&stream, folded);
        Ok(f(&state))
    }

    /// The trace context of the latest traced events of the aggregate `A` with id `id`
    /// (traceparent, tracestate), for work on it that no request started (a timed process's
    /// command) to join the trace of the request that last touched it. The cached one when
    /// the stream is cached (it may be behind the stream: good enough to join a trace, never
    /// to decide anything), else read from the stream and cached, so the command that follows
    /// is decided without reading it again. Call it only while traces are exported
    /// ([`crate::trace::propagation`]): without, it is a lookup for nothing.
    pub async fn trace_context<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<(Option<Arc<str>>, Option<Arc<str>>), ExecuteError<A::Error>> {
        let stream = stream_name(A::CATEGORY, id);
        let hit = self.inner.states.lock().ok().and_then(|mut c| c.get(&stream));
        if let Some(hit) = hit.filter(|h| h.state.is::<A>()) {
            return Ok((hit.trace.traceparent, hit.trace.tracestate));
        }
        let mut folded = Folded::<A>::default();
        self.inner.catch_up(&stream, &mut folded).await?;
        let (_, Trace { traceparent, tracestate }) = self.inner.remember(&stream, folded);
        Ok((traceparent, tracestate))
    }

    /// Applies `f` to the cached state of the aggregate `A` with id `id`, without reading the
    /// store: `None` when it is not cached. The state may be behind the stream, so use it only
    /// for what never changes once set (an agenda's customer, say).
    pub fn peek<A: Aggregate, R>(&self, id: &str, f: impl FnOnce(&A) -> R) -> Option<R> {
        let stream = stream_name(A::CATEGORY, id);
        let hit = self.inner.states.lock().ok().and_then(|mut c| c.get(&stream))?;
        hit.state.downcast_ref::<A>().map(f)
    }
}

/// What deciding one command of a batch came to, before the write.
enum Decided<A: Aggregate> {
    /// Events to append; `upto` counts the batch's events up to and including these.
    Events { events: Vec<A::Event>, upto: usize },
    /// Nothing to do, with `upto` of the batch's events decided before it.
    NoOp { upto: usize },
    /// Refused, with `upto` of the batch's events decided before it.
    Refused { error: A::Error, upto: usize },
    /// Failed on its own (its events could not be encoded or are too large to store).
    Failed(ExecuteError<A::Error>),
}

/// The store's condition as the latest failed write saw it ([`Commands::unavailable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// How long ago the write failed.
    pub ago: std::time::Duration,
    /// Why, as the store said it.
    pub why: String,
    /// A write beside the commands (the checkpoint sealer's) failed: the failure holds until
    /// a write lands, not for a while (seals come seconds apart).
    pub held: bool,
}

impl Inner {
    /// Records whether an append reached the store, for [`Commands::unavailable`].
    fn note_append(&self, result: Result<(), &StoreError>) {
        let Ok(mut last) = self.unavailable.lock() else { return };
        if result.is_ok()
            && let Ok(mut held) = self.held_failure.lock()
        {
            *held = None;
        }
        match result {
            Ok(()) => {
                *last = None;
                if let Ok(mut outages) = self.outages.lock() {
                    outages.note(true, false);
                }
            }
            Err(e) if e.is_unavailable() => {
                if let Ok(mut outages) = self.outages.lock() {
                    outages.note(false, false);
                }
                let why = pop_domain::error::ErrorChain(e).to_string();
                *last = Some((std::time::Instant::now(), why));
            }
            Err(_) => {}
        }
    }

    /// Queues `pending` for its stream, and starts the stream's writer unless one runs.
    /// Queues `pendings` (in order, at once) for the stream's writer, starting one if none
    /// runs.
    fn enqueue<A: Aggregate>(this: &Arc<Inner>, stream: String, pendings: Vec<Pending<A>>)
    where
        A::Command: Send + 'static,
    {
        let key = (TypeId::of::<A>(), stream);
        let boxed = pendings.into_iter().map(|p| Box::new(p) as Box<dyn Any + Send>);
        let start = {
            // A poisoned map (a panic while it was held; nothing in here panics) keeps working.
            let mut queues = this.queues.lock().unwrap_or_else(PoisonError::into_inner);
            match queues.get_mut(&key) {
                Some(queue) => {
                    queue.extend(boxed);
                    None
                }
                None => {
                    queues.insert(key.clone(), boxed.collect());
                    Some(key)
                }
            }
        };
        if let Some(key) = start {
            tokio::spawn(Arc::clone(this).write::<A>(key));
        }
    }

    /// A stream's writer: takes the queued commands, decides them together, appends their
    /// events in one write and answers them; again while commands keep arriving, then it
    /// ends (and the stream leaves the map).
    async fn write<A: Aggregate>(self: Arc<Inner>, key: (TypeId, String))
    where
        A::Command: Send + 'static,
    {
        // On a panic the queue goes with the writer: its callers learn they were interrupted
        // (their reply senders drop) and the next command starts a new writer.
        let mut guard = Leave { inner: &self, key: &key, armed: true };
        let stream = key.1.as_str();
        let mut batch: VecDeque<Pending<A>> = VecDeque::new();
        loop {
            {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(queue) = queues.get_mut(&key) {
                    let take = queue.len().min(MAX_COMMANDS_PER_WRITE.saturating_sub(batch.len()));
                    batch.extend(
                        queue
                            .drain(..take)
                            .filter_map(|p| p.downcast::<Pending<A>>().ok().map(|p| *p)),
                    );
                }
                // A command whose caller went away before its batch was taken is not run.
                batch.retain(|p| !p.reply.is_closed());
                if batch.is_empty() {
                    queues.remove(&key);
                    guard.armed = false;
                    return;
                }
            }
            let answers = self.write_batch::<A>(stream, &mut batch).await;
            // The stream leaves the map before its last answers go out, so that a caller who
            // got its answer finds the stream idle (or a new writer started after this one).
            if batch.is_empty() {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                if queues.get(&key).is_none_or(Vec::is_empty) {
                    queues.remove(&key);
                    guard.armed = false;
                }
            }
            let done = !guard.armed;
            for (reply, answer) in answers {
                // The caller may have gone away meanwhile: nobody to tell.
                let _ = reply.send(answer);
            }
            if done {
                return;
            }
        }
    }

    /// Decides the commands at the front of `batch` and appends their events in one write.
    /// Answers those it settled (removed from `batch`, in order); the ones it did not reach
    /// (a limit, or a decision that needs the stream read first) stay at the front of `batch`.
    async fn write_batch<A: Aggregate>(
        &self,
        stream: &str,
        batch: &mut VecDeque<Pending<A>>,
    ) -> Vec<(oneshot::Sender<Answer<A>>, Answer<A>)> {
        let mut conflicts = 0;
        let mut read_first = false;
        loop {
            let (mut folded, mut fresh) = match self.cached::<A>(stream) {
                // Optimistic: decide on the cached state and let the append's expected version
                // tell whether another writer (another replica, or a delete) got there first.
                Some(folded) => (folded, false),
                // A submission to a stream this process has not seen: most likely the stream
                // does not exist, so decide on the initial state unread (one read and its
                // thread hand-off less on every submission); the append expects no stream,
                // and a stream that exists after all is read and decided on below.
                None if batch.front().is_some_and(|p| A::creates(&p.command)) => {
                    (Folded::default(), false)
                }
                None => (Folded::default(), true),
            };
            if fresh || read_first {
                if let Err(e) = self.catch_up(stream, &mut folded).await {
                    return fail_first(batch, e);
                }
                fresh = true;
            }
            let base = folded.version;
            let mut decided: Vec<Decided<A>> = Vec::with_capacity(batch.len());
            let mut events_out: Vec<NewEvent> = Vec::new();
            let mut bytes = 0usize;
            while let Some(pending) = batch.get(decided.len()) {
                let upto = events_out.len();
                if pending.chained && !matches!(decided.last(), Some(Decided::Events { .. })) {
                    decided.push(Decided::Failed(ExecuteError::ChainBroken));
                    continue;
                }
                let events = match folded.state.decide(&pending.command) {
                    Ok(events) if !events.is_empty() => events,
                    Ok(_) => {
                        decided.push(Decided::NoOp { upto });
                        continue;
                    }
                    Err(error) => {
                        decided.push(Decided::Refused { error, upto });
                        continue;
                    }
                };
                let encoded = match NewEvent::encode_all(&events, &pending.metadata) {
                    Ok(encoded) => encoded,
                    Err(e) => {
                        decided.push(Decided::Failed(e.into()));
                        continue;
                    }
                };
                let size = match check_append_sizes(stream, &encoded) {
                    Ok(size) => size,
                    Err(e) => {
                        decided.push(Decided::Failed(e.into()));
                        continue;
                    }
                };
                if upto > 0
                    && (upto + encoded.len() > MAX_EVENTS_PER_APPEND
                        || bytes + size > MAX_APPEND_BYTES)
                {
                    break;
                }
                for e in &events {
                    folded.state.evolve(e);
                }
                if pending.trace.traceparent.is_some() {
                    folded.trace.clone_from(&pending.trace);
                }
                bytes += size;
                events_out.extend(encoded);
                decided.push(Decided::Events { events, upto: events_out.len() });
            }
            if events_out.is_empty() {
                // Only refusals and no-ops (or failures): judged on an unverified cached state,
                // they are reported only after reading what the stream holds now, and decided
                // again if it moved on. (With events, the write's expected version verifies the
                // state every decision of the batch was judged on.)
                if !fresh {
                    let before = folded.version;
                    if let Err(e) = self.catch_up(stream, &mut folded).await {
                        return fail_first(batch, e);
                    }
                    if folded.version != before {
                        read_first = true;
                        continue;
                    }
                }
                let settled = self.remember(stream, folded);
                return settle(batch, decided, Some(settled), base, None);
            }
            let expected = base.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            // In the span of the batch's first command: the backend's append span joins its
            // trace.
            let span = batch.front().map_or_else(tracing::Span::none, |p| p.span.clone());
            let appended = self.store.append(stream, expected, events_out).instrument(span).await;
            self.note_append(appended.as_ref().map(|_| ()));
            match appended {
                Ok(appended) => {
                    self.note_written(appended.position);
                    folded.version = Some(appended.version);
                    folded.bytes += bytes as u64;
                    let settled = self.remember(stream, folded);
                    return settle(batch, decided, Some(settled), base, Some(appended.position));
                }
                // Someone else appended since the cached state: read their events and decide
                // the whole batch again.
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    if conflicts >= MAX_EXECUTE_ATTEMPTS {
                        let n = decided.len();
                        return batch
                            .drain(..n)
                            .map(|p| {
                                let stream = stream.to_owned();
                                (
                                    p.reply,
                                    Err(ExecuteError::Conflict { stream, attempts: conflicts }),
                                )
                            })
                            .collect();
                    }
                    read_first = true;
                }
                // The write failed: the commands with events in it fail with it; a refusal or a
                // no-op judged on a state that included them is decided again (from the stream).
                Err(e) => return fail_write(batch, decided, fresh, e),
            }
        }
    }

    /// Folds the events after `folded.version` into `folded`.
    async fn catch_up<A: Aggregate>(
        &self,
        stream: &str,
        folded: &mut Folded<A>,
    ) -> Result<(), ExecuteError<A::Error>> {
        loop {
            let from = folded.version.map_or(0, |v| v.saturating_add(1));
            let batch =
                self.store.read_stream(stream, from, LOAD_BATCH, Direction::Forwards).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for recorded in &batch {
                let event = <A::Event as EventCodec>::decode(
                    &recorded.event_type,
                    recorded.schema_version,
                    &recorded.data,
                )?;
                folded.state.evolve(&event);
                folded.version = Some(recorded.version);
                folded.bytes += recorded.data.len() as u64;
            }
            // Only the batch's latest trace context counts: look for it from the end, so one
            // metadata is decoded per batch, not one per traced event.
            if let Some(trace) = batch.iter().rev().find_map(|r| trace_of(&r.metadata)) {
                folded.trace = trace;
            }
        }
    }

    /// The cached state of `stream` and its version, if any (a copy: the decisions of a batch
    /// evolve it). A poisoned lock or a state of another type (two aggregates sharing a
    /// category) is a miss: the stream is then read from the start.
    fn cached<A: Aggregate>(&self, stream: &str) -> Option<Folded<A>> {
        let hit = self.states.lock().ok().and_then(|mut c| c.get(stream))?;
        hit.state.downcast_ref::<A>().map(|s| Folded::of(&hit, s))
    }

    /// Caches `folded` (when the stream exists) and hands its state back shared, with its
    /// trace context.
    fn remember<A: Aggregate>(&self, stream: &str, folded: Folded<A>) -> Settled<A> {
        let Folded { state, version, bytes, trace } = folded;
        let state = Arc::new(state);
        if let (Some(version), Ok(mut cache)) = (version, self.states.lock()) {
            let shared: Arc<dyn Any + Send + Sync> = Arc::clone(&state) as _;
            let trace = trace.clone();
            let cached = CachedState { version, bytes, state: shared, trace };
            cache.insert_weighted(stream.to_owned(), cached, bytes);
        }
        (state, trace)
    }

    fn note_written(&self, position: Position) {
        if let Ok(mut written) = self.written.lock()
            && position > *written
        {
            *written = position;
        }
    }
}

impl<A: Default> Default for Folded<A> {
    fn default() -> Self {
        Folded { state: A::default(), version: None, bytes: 0, trace: Trace::default() }
    }
}

/// A state after a write, shared, and the stream's latest trace context.
type Settled<A> = (Arc<A>, Trace);

/// The trace context in a stored event's metadata, if it carries a traceparent. Most events
/// of a busy stream carry none (the timed processes' commands): those are told by a byte
/// search, not parsed.
fn trace_of(metadata: &[u8]) -> Option<Trace> {
    const KEY: &[u8] = b"\"traceparent\"";
    if !metadata.windows(KEY.len()).any(|w| w == KEY) {
        return None;
    }
    let trace = Trace::of(&EventMetadata::from_json(metadata).ok()?);
    trace.traceparent.is_some().then_some(trace)
}

/// The answers of the first `decided.len()` commands of `batch` (removed from it), after the
/// write that held their events (at `position`; `None`: nothing was appended). `base` is the
/// stream's version before the write; `state` the state after it.
fn settle<A: Aggregate>(
    batch: &mut VecDeque<Pending<A>>,
    decided: Vec<Decided<A>>,
    settled: Option<Settled<A>>,
    base: Option<u64>,
    position: Option<Position>,
) -> Vec<(oneshot::Sender<Answer<A>>, Answer<A>)> {
    let (state, trace) = settled.map_or((None, Trace::default()), |(s, t)| (Some(s), t));
    // The version after the batch's first `upto` events.
    let version_at = |upto: usize| match upto {
        0 => base,
        n => Some(base.map_or(0, |v| v.saturating_add(1)).saturating_add(n as u64 - 1)),
    };
    let executed = |events: Vec<A::Event>, upto: usize, position: Option<Position>| {
        // `state` is only missing when every decision is a failure or a refusal.
        let state = state.clone().unwrap_or_default();
        let Trace { traceparent, tracestate } = trace.clone();
        Ok(Executed { events, state, version: version_at(upto), position, traceparent, tracestate })
    };
    let n = decided.len();
    batch
        .drain(..n)
        .zip(decided)
        .map(|(pending, decided)| {
            let answer = match decided {
                Decided::Events { events, upto } => executed(events, upto, position),
                Decided::NoOp { upto } => executed(Vec::new(), upto, None),
                Decided::Refused { error, .. } => Err(ExecuteError::Refused(error)),
                Decided::Failed(e) => Err(e),
            };
            (pending.reply, answer)
        })
        .collect()
}

/// The first command of `batch` fails with `error` (the stream could not be read); the others
/// stay queued and are tried again, each getting its own answer.
fn fail_first<A: Aggregate>(
    batch: &mut VecDeque<Pending<A>>,
    error: ExecuteError<A::Error>,
) -> Vec<(oneshot::Sender<Answer<A>>, Answer<A>)> {
    batch.pop_front().map(|p| (p.reply, Err(error))).into_iter().collect()
}

/// A write of the first `decided.len()` commands of `batch` failed with `error`; `verified`:
/// the state before the write was read from the stream, not only cached.
fn fail_write<A: Aggregate>(
    batch: &mut VecDeque<Pending<A>>,
    decided: Vec<Decided<A>>,
    verified: bool,
    error: StoreError,
) -> Vec<(oneshot::Sender<Answer<A>>, Answer<A>)> {
    let n = decided.len();
    let mut answers = Vec::new();
    let mut again = Vec::new();
    for (pending, decided) in batch.drain(..n).zip(decided) {
        match decided {
            Decided::Events { .. } => answers.push((pending.reply, Err(error.clone().into()))),
            Decided::Failed(e) => answers.push((pending.reply, Err(e))),
            // Judged on the stream's state before any of the failed write's events: it stands.
            Decided::Refused { error, upto: 0 } if verified => {
                answers.push((pending.reply, Err(ExecuteError::Refused(error))))
            }
            // A no-op's answer carries the state, and the one before the write is not at hand.
            Decided::NoOp { .. } | Decided::Refused { .. } => again.push(pending),
        }
    }
    for pending in again.into_iter().rev() {
        batch.push_front(pending);
    }
    answers
}

/// Takes a stream out of the writers' map when its writer ends by a panic.
struct Leave<'a> {
    inner: &'a Inner,
    key: &'a (TypeId, String),
    armed: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queues = self.inner.queues.lock().unwrap_or_else(PoisonError::into_inner);
            queues.remove(self.key);
        }
    }
}
