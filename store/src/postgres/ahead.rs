//! Read-ahead for whoever walks the log in batches (a replay, a rebuild, a subscription
//! catching up): once a `read_all(after, max)` came back full, a task goes on reading the
//! batches that follow, and the next `read_all` from where the last one ended takes its batch
//! from there, so the database formats and sends the next batch while the caller works on
//! this one. Without it the server waited for each call: it formats ~1 µs per row and the
//! read was a series of round trips (BENCHMARKS.md, "PostgreSQL replay, read + decode").
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
//! **Bounds.** At most [`MAX_STREAMS`] streams per store, each holding at most
//! [`BATCHES_AHEAD`] batches (or one byte cap) read plus one batch in flight; a stream nobody
//! takes from for [`FRESH`] drops what it holds and ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::reader;
use crate::limits::MAX_READ_BATCH_BYTES;
use crate::{Position, RecordedEvent};

/// Walks of the log one store reads ahead for at once (rebuilds, subscriptions catching
/// up); a further one replaces the one taken from longest ago.
const MAX_STREAMS: usize = 4;

/// Batches a stream holds read before it waits for its reader: one being taken while the
/// next arrives.
const BATCHES_AHEAD: usize = 2;

/// The oldest a batch read ahead may be when it is handed out, and how long a stream waits
/// for its reader before it drops what it holds.
pub(crate) const FRESH: Duration = Duration::from_millis(500);

/// The streams of one store.
pub(crate) struct ReadAhead {
    pool: Pool,
    /// In order of last use, the most recent last.
    streams: Mutex<Vec<Arc<Stream>>>,
    /// Bumped when a delete starts and when it ends: a stream that began reading before
    /// the latest bump is dropped.
    deletes: AtomicU64,
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
            if front.1 == 0 {
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
    pub(crate) fn new(pool: Pool) -> ReadAhead {
        ReadAhead { pool, streams: Mutex::new(Vec::new()), deletes: AtomicU64::new(0) }
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
                    || state.reads.front().is_some_and(|(began, _)| began.elapsed() > FRESH);
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
            arrived.await;
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
        let task = tokio::spawn(read(self.pool.clone(), Arc::clone(&stream), last.position));
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
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A stream's task: reads batch after batch of `stream.max` after `after` while there is
/// room, until a batch comes back short, a read fails, or nobody takes for [`FRESH`].
async fn read(pool: Pool, stream: Arc<Stream>, mut after: Position) {
    let max = stream.max;
    loop {
        loop {
            let taken = stream.taken.notified();
            {
                let state = lock(&stream.state);
                if state.queue.len() < BATCHES_AHEAD * max && state.bytes < MAX_READ_BATCH_BYTES {
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
        let began = Instant::now();
        let read = reader::read_all(&pool, after, max).await;
        let mut state = lock(&stream.state);
        match read {
            Ok(batch) => {
                let bytes: usize = batch.iter().map(size).sum();
                state.ended = batch.len() < max && bytes < MAX_READ_BATCH_BYTES;
                if let Some(last) = batch.last() {
                    after = last.position;
                    state.reads.push_back((began, batch.len()));
                    state.bytes += bytes;
                    state.queue.extend(batch);
                }
            }
            // The reader reads for itself and meets the error there.
            Err(_) => state.ended = true,
        }
        let ended = state.ended;
        drop(state);
        stream.arrived.notify_one();
        if ended {
            return;
        }
    }
}
