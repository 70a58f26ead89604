//! Read-ahead for whoever walks the log in batches (a replay, a rebuild, a subscription
//! catching up): once a `read_all(after, max)` came back full, a stream goes on reading the
//! batches that follow, and the next `read_all` from where the last one ended takes its batch
//! from there, so the database formats and sends the next batches while the caller works on
//! this one. Without it the server and the caller took turns: one statement per batch, the
//! server idle while the caller decoded, the caller waiting while the server formatted
//! (~1 µs a row; BENCHMARKS.md, "PostgreSQL replay, read + decode").
//!
//! The streams run on a thread of their own, each on a connection of its own that its task
//! drives (so a row read wakes no other thread), and ask for [`BATCHES_PER_READ`] batches per
//! statement; each event is handed on as soon as it is parsed.
//!
//! **Why a batch read ahead is the batch a fresh read returns.** A batch is handed out only
//! when it is complete: `max` events, or as many as reach the byte cap, exactly the rule of
//! [`reader::read_all`]. Every event of it was below the gap-free horizon when it was read, so
//! every transaction that could put an event between two of them had ended: an append can
//! only land above the batch, never inside it. A batch that came back short (the end of the
//! log below the horizon) is never handed out: the caller reads again, and so sees its own
//! appends. What can change below the horizon is a delete: a stream ahead is dropped when a
//! delete of this store started or ended after its reading began, and no batch read more
//! than [`FRESH`] before is handed out, which bounds how late another replica's delete can be
//! seen (a read already in flight when a delete commits sees it no earlier).
//!
//! **Bounds.** At most [`MAX_STREAMS`] streams per store, each with a connection of its own
//! (at most [`MAX_IDLE`] more kept for the next streams), each holding at most one read of
//! [`BATCHES_PER_READ`] batches (or one byte cap) plus the one under way; a stream nobody
//! takes from for [`FRESH`] drops what it holds and ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls, Socket};

use super::reader;
use crate::limits::{MAX_READ_BATCH, MAX_READ_BATCH_BYTES};
use crate::{Position, RecordedEvent};

/// Walks of the log one store reads ahead for at once (rebuilds, subscriptions catching
/// up); a further one replaces the one taken from longest ago.
const MAX_STREAMS: usize = 4;

/// Batches of the reader's size one read of a stream asks for (one statement planned and
/// one round trip for several batches); it holds at most one such read before it waits for
/// its reader, and reads the next while the reader takes from it.
const BATCHES_PER_READ: usize = 4;

/// The oldest a batch read ahead may be when it is handed out, and how long a stream waits
/// for its reader before it drops what it holds.
const FRESH: Duration = Duration::from_millis(500);

/// Connections of ended streams kept for the next ones.
const MAX_IDLE: usize = 2;

/// A connection of a stream's own, driven by the stream's task: the rows it receives wake
/// no other task (the pool's connections run as tasks of their own and hand every read of
/// the socket over, a wake-up of another thread each).
type Own = (Client, Connection<Socket, NoTlsStream>);

/// The streams of one store.
pub(crate) struct ReadAhead {
    config: tokio_postgres::Config,
    /// Connections of ended streams, for the next (at most [`MAX_IDLE`]).
    idle: Arc<Mutex<Vec<Own>>>,
    /// In order of last use, the most recent last.
    streams: Mutex<Vec<Arc<Stream>>>,
    /// Bumped when a delete starts and when it ends: a stream that began reading before
    /// the latest bump is dropped.
    deletes: AtomicU64,
    /// The thread the streams run on, started with the first.
    thread: Mutex<Option<Thread>>,
}

/// A thread of its own for the streams (a runtime of one thread), so reading ahead goes on
/// while the caller's runtime threads are busy with what was read (decoding it: the store
/// benchmark decodes on two tasks of a two-thread runtime, and a stream on that runtime
/// waited for them).
struct Thread {
    runtime: tokio::runtime::Handle,
    /// Dropped to end the thread (its runtime drops the streams' tasks and connections).
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the streams' thread (`None` when the system has no thread for it: then nothing
/// is read ahead).
fn start_thread() -> Option<Thread> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = Background(Some(runtime));
    std::thread::Builder::new()
        .name("pop-pg-read-ahead".to_owned())
        .spawn(move || {
            let mut runtime = runtime;
            if let Some(runtime) = runtime.0.take() {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            }
        })
        .ok()?;
    Some(Thread { runtime: handle, _stop: stop })
}

/// The streams' runtime until its thread takes it: dropped unstarted (no thread), it shuts
/// down without blocking, as the caller runs on a runtime where blocking is not allowed.
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// One walk read ahead: the batches after `State::next`.
struct Stream {
    /// The caller's batch size.
    max: usize,
    /// [`ReadAhead::deletes`] when the stream began.
    deletes: u64,
    state: Mutex<State>,
    /// A batch arrived or the reading ended.
    arrived: Notify,
    /// A batch was taken: room for the next.
    taken: Notify,
    task: Mutex<Option<AbortHandle>>,
}

struct State {
    /// The position the queued events follow: the last event handed out.
    next: Position,
    queue: VecDeque<RecordedEvent>,
    /// Data and metadata bytes in `queue`.
    bytes: usize,
    /// When each batch still (partly) in `queue` began to be read, and how many of its
    /// events are left, oldest first.
    reads: VecDeque<(Instant, usize)>,
    /// No more batches will come (the log's end, an error, or nobody took them).
    ended: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves nothing half-written that a reader could misread: at
    // worst a stream that is dropped as stale.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn size(event: &RecordedEvent) -> usize {
    event.data.len() + event.metadata.len()
}

impl State {
    /// Whether a whole batch is queued: `max` events, or enough to reach the byte cap.
    fn whole(&self, max: usize) -> bool {
        self.queue.len() >= max || self.bytes >= MAX_READ_BATCH_BYTES
    }

    /// Takes the batch a fresh read would return (the caller checked it is [`whole`]).
    fn take(&mut self, max: usize) -> Vec<RecordedEvent> {
        let mut batch = Vec::with_capacity(max.min(self.queue.len()));
        let mut bytes = 0;
        while batch.len() < max && bytes < MAX_READ_BATCH_BYTES {
            let Some(event) = self.queue.pop_front() else { break };
            bytes += size(&event);
            batch.push(event);
        }
        self.bytes -= bytes;
        let mut left = batch.len();
        while left > 0 {
            let Some(front) = self.reads.front_mut() else { break };
            let used = front.1.min(left);
            front.1 -= used;
            left -= used;
            // The last is the read going on: its next events still count there.
            if front.1 == 0 && self.reads.len() > 1 {
                self.reads.pop_front();
            }
        }
        if let Some(last) = batch.last() {
            self.next = last.position;
        }
        batch
    }
}

impl Stream {
    fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// A stream taken out of the list by one reader; stopped unless it is put back.
struct Taken(Option<Arc<Stream>>);

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(stream) = self.0.take() {
            stream.stop();
        }
    }
}

impl ReadAhead {
    pub(crate) fn new(mut config: tokio_postgres::Config) -> ReadAhead {
        // A read of several batches is a large part of a small log, and the horizon is
        // unknown when the statement is planned: the planner then sorts a bitmap scan of the
        // rest of the log for every read (seen: an 18,000-event log read at a third of the
        // speed). These connections only ever walk the primary key in order.
        let options = format!(
            "{} -c enable_sort=off -c enable_bitmapscan=off -c jit=off",
            config.get_options().unwrap_or("")
        );
        config.options(options.trim());
        ReadAhead {
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
            streams: Mutex::new(Vec::new()),
            deletes: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }

    /// Call when a delete starts and when it ends.
    pub(crate) fn deleting(&self) {
        self.deletes.fetch_add(1, Ordering::SeqCst);
    }

    /// The batch after `after` of a stream read ahead, or `None`: no stream stands there,
    /// or it cannot hand out a whole batch read fresh enough (the caller then reads).
    pub(crate) async fn take(&self, after: Position, max: usize) -> Option<Vec<RecordedEvent>> {
        let taken = {
            let mut streams = lock(&self.streams);
            let at = streams.iter().position(|s| s.max == max && lock(&s.state).next == after)?;
            Taken(Some(streams.remove(at)))
        };
        let stream = Arc::clone(taken.0.as_ref()?);
        loop {
            let arrived = stream.arrived.notified();
            {
                let mut state = lock(&stream.state);
                let stale = stream.deletes != self.deletes.load(Ordering::SeqCst)
                    || state
                        .reads
                        .iter()
                        .find(|(_, left)| *left > 0)
                        .is_some_and(|(began, _)| began.elapsed() > FRESH);
                if stale {
                    return None;
                }
                if state.whole(max) {
                    let batch = state.take(max);
                    drop(state);
                    stream.taken.notify_one();
                    self.keep(taken);
                    return Some(batch);
                }
                if state.ended {
                    return None;
                }
            }
            // A batch still not whole after FRESH would be too old to hand out anyway.
            if tokio::time::timeout(FRESH, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// After a read of `max` from the log came back with `batch`: when it is whole, starts
    /// reading the batches after it.
    pub(crate) fn follow(&self, batch: &[RecordedEvent], max: usize) {
        let Some(last) = batch.last() else { return };
        let bytes: usize = batch.iter().map(size).sum();
        if batch.len() < max && bytes < MAX_READ_BATCH_BYTES {
            return;
        }
        let runtime = {
            let mut thread = lock(&self.thread);
            if thread.is_none() {
                *thread = start_thread();
            }
            let Some(thread) = thread.as_ref() else { return };
            thread.runtime.clone()
        };
        let stream = Arc::new(Stream {
            max,
            deletes: self.deletes.load(Ordering::SeqCst),
            state: Mutex::new(State {
                next: last.position,
                queue: VecDeque::new(),
                bytes: 0,
                reads: VecDeque::new(),
                ended: false,
            }),
            arrived: Notify::new(),
            taken: Notify::new(),
            task: Mutex::new(None),
        });
        let own = (self.config.clone(), Arc::clone(&self.idle));
        let task = runtime.spawn(read(own, EndsStream(Arc::clone(&stream)), last.position));
        *lock(&stream.task) = Some(task.abort_handle());
        self.keep(Taken(Some(stream)));
    }

    /// Puts a stream (back) in the list as the most recently used, stopping the least
    /// recently used past [`MAX_STREAMS`].
    fn keep(&self, mut taken: Taken) {
        let Some(stream) = taken.0.take() else { return };
        let mut streams = lock(&self.streams);
        streams.push(stream);
        while streams.len() > MAX_STREAMS {
            streams.remove(0).stop();
        }
    }

    /// Stops every stream (the store closes).
    pub(crate) fn stop(&self) {
        for stream in lock(&self.streams).drain(..) {
            stream.stop();
        }
        lock(&self.idle).clear();
        lock(&self.thread).take();
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends a stream: no more batches will come.
fn end(stream: &Stream) {
    lock(&stream.state).ended = true;
    stream.arrived.notify_one();
}

/// Ends its stream when dropped: when the task finishes, and also when it is aborted, its
/// runtime shuts down (the store closes), it panics, or it was spawned onto a runtime already
/// gone — so a reader waiting in [`ReadAhead::take`] is always woken.
struct EndsStream(Arc<Stream>);

impl Drop for EndsStream {
    fn drop(&mut self) {
        end(&self.0);
    }
}

/// A stream's task: on a connection of its own (an idle one, or a new one), reads after
/// `after` until the stream ends, then leaves the connection for the next stream.
async fn read(
    (config, idle): (tokio_postgres::Config, Arc<Mutex<Vec<Own>>>),
    stream: EndsStream,
    after: Position,
) {
    let stream = &stream.0;
    let reused = lock(&idle).pop();
    let (client, mut connection) = match reused {
        Some(own) => own,
        None => match config.connect(NoTls).await {
            Ok(own) => own,
            // The reader reads for itself and meets the error there.
            Err(_) => return end(stream),
        },
    };
    let closed = {
        let walk = std::pin::pin!(walk(&client, stream, after));
        tokio::select! {
            biased;
            _ = &mut connection => true,
            () = walk => false,
        }
    };
    if closed || client.is_closed() {
        return end(stream);
    }
    let mut idle = lock(&idle);
    if idle.len() < MAX_IDLE {
        idle.push((client, connection));
    }
}

/// Reads batch after batch after `after` while there is room, until a read comes back
/// short, fails, or nobody takes for [`FRESH`].
async fn walk(client: &Client, stream: &Stream, mut after: Position) {
    // Several batches per statement, no more than the largest batch a caller may ask for
    // (unless its own batch is larger).
    let read_size = stream.max.saturating_mul(BATCHES_PER_READ).min(MAX_READ_BATCH.max(stream.max));
    loop {
        loop {
            let taken = stream.taken.notified();
            {
                let state = lock(&stream.state);
                if state.queue.len() < read_size && state.bytes < MAX_READ_BATCH_BYTES {
                    break;
                }
            }
            if tokio::time::timeout(FRESH, taken).await.is_err() {
                let mut state = lock(&stream.state);
                state.queue.clear();
                state.reads.clear();
                state.bytes = 0;
                state.ended = true;
                return;
            }
        }
        lock(&stream.state).reads.push_back((Instant::now(), 0));
        let (mut count, mut bytes, mut last) = (0, 0, None);
        let read = reader::read_all_each(client, after, read_size, |event| {
            count += 1;
            bytes += size(&event);
            last = Some(event.position);
            let mut state = lock(&stream.state);
            let whole = state.whole(stream.max);
            state.bytes += size(&event);
            state.queue.push_back(event);
            if let Some(read) = state.reads.back_mut() {
                read.1 += 1;
            }
            // The reader waits for a whole batch: wake it when there is one.
            if !whole && state.whole(stream.max) {
                drop(state);
                stream.arrived.notify_one();
            }
        })
        .await;
        after = last.unwrap_or(after);
        let mut state = lock(&stream.state);
        // The reader reads for itself and meets an error there.
        state.ended = read.is_err() || (count < read_size && bytes < MAX_READ_BATCH_BYTES);
        let ended = state.ended;
        drop(state);
        stream.arrived.notify_one();
        if ended {
            return;
        }
    }
}
