//! Reads on their own connections: a small pool, each read on a blocking thread, never on the
//! writer's connection (a long catch-up must not delay commits).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::schema;
use super::writer::from_micros;
use crate::cache::GenerationalCache;
use crate::limits::MAX_READ_BATCH_BYTES;
use crate::{Direction, Position, RecordedEvent, StoreError};

/// Reads running at once. Each holds a connection and a blocking thread; with WAL they run
/// in parallel with each other and with the writer. Four keeps two cores busy without
/// letting catch-ups crowd out the tokio blocking pool.
pub const READER_POOL_SIZE: usize = 4;

/// Stream names each reader connection remembers by stream id, so `read_all` needs no join
/// per event. Ids are never reused (tombstones keep their row), so entries never go stale;
/// the bound only caps memory (100k names is a few MiB).
const STREAM_NAME_CACHE: usize = 100_000;

/// Event type names each reader connection shares between the events it returns. A log has
/// tens of types; the bound only matters for a log written by something else.
const EVENT_TYPE_CACHE: usize = 1_024;

pub(crate) struct Readers {
    path: PathBuf,
    /// Idle connections; at most `READER_POOL_SIZE` exist because of `permits`.
    idle: Mutex<Vec<ReaderConn>>,
    permits: Arc<Semaphore>,
    /// Where a read that failed on the file's own damage says so ([`Readers::noting_damage`]).
    damaged: Option<Arc<std::sync::OnceLock<String>>>,
}

/// A reader connection and what it remembers.
pub(crate) struct ReaderConn {
    pub(super) conn: Connection,
    names: GenerationalCache<i64, Arc<str>>,
    /// Event type names seen by this connection; there are few, so each read shares them.
    types: GenerationalCache<Box<str>, Arc<str>>,
}

impl ReaderConn {
    /// `conn`, configured as a reader ([`schema::configure_reader`]), with empty caches.
    pub(crate) fn new(conn: Connection) -> ReaderConn {
        ReaderConn {
            conn,
            names: GenerationalCache::new(STREAM_NAME_CACHE),
            types: GenerationalCache::new(EVENT_TYPE_CACHE),
        }
    }
}

fn backend(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

impl Readers {
    pub(crate) fn new(path: PathBuf, size: usize) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            damaged: None,
        }
    }

    /// A read that fails on the file's own damage says so in `damaged`, once: the store's
    /// readiness (a new stream's key read from a damaged index fails before any commit).
    pub(crate) fn noting_damage(mut self, damaged: Arc<std::sync::OnceLock<String>>) -> Readers {
        self.damaged = Some(damaged);
        self
    }

    /// Runs `read` on a pooled connection on a blocking thread.
    pub(crate) async fn with<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut ReaderConn) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = this.take()?;
            let result = read(&mut conn);
            this.put_back(conn);
            if let (Err(e), Some(damaged)) = (&result, &this.damaged) {
                super::writer::note_damage(damaged, e);
            }
            result
        })
        .await
        .map_err(|e| StoreError::backend("running a read", e))?
    }

    fn take(&self) -> Result<ReaderConn, StoreError> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Closed)?.pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags)
                    .map_err(backend("opening a reader connection"))?;
                schema::configure_reader(&conn)?;
                Ok(ReaderConn::new(conn))
            }
        }
    }

    fn put_back(&self, conn: ReaderConn) {
        // A poisoned pool only means a connection is not reused.
        if let Ok(mut idle) = self.idle.lock()
            && !self.permits.is_closed()
        {
            idle.push(conn);
        }
    }

    /// Refuses new reads and closes idle connections.
    pub(crate) fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn position_sql(after: Position) -> Result<i64, StoreError> {
    let sequence = after
        .sequence()
        .ok_or_else(|| StoreError::InvalidPosition { position: after.to_string() })?;
    Ok(clamp_i64(sequence))
}

/// Where one row's data and metadata lie in its chunk.
type Spans = (std::ops::Range<usize>, std::ops::Range<usize>);

/// The size of the chunks a read copies event bytes into: ~50 events of pop's, small enough
/// for the allocator's thread-local pages (one buffer for a whole batch took fresh pages from
/// the kernel, zeroed, on every batch), and all an event kept alone keeps alive.
const CHUNK_BYTES: usize = 32 << 10;

/// The data and metadata of a read's events, copied into shared chunks of [`CHUNK_BYTES`]:
/// one allocation per chunk instead of two per event. Each event's bytes are slices of its
/// chunk (an event larger than a chunk gets one of its own).
struct Chunks {
    current: Vec<u8>,
    /// The spans of the events whose bytes are in `current`: `events[first..]`.
    spans: Vec<Spans>,
    first: usize,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks { current: Vec::new(), spans: Vec::new(), first: 0 }
    }

    /// Copies the bytes of the event that comes after `events`.
    fn push(&mut self, events: &mut [RecordedEvent], data: &[u8], metadata: &[u8]) {
        let size = data.len() + metadata.len();
        if self.current.len() + size > self.current.capacity() {
            self.seal(events);
            self.current = Vec::with_capacity(size.max(CHUNK_BYTES));
        }
        let start = self.current.len();
        self.current.extend_from_slice(data);
        let middle = self.current.len();
        self.current.extend_from_slice(metadata);
        self.spans.push((start..middle, middle..self.current.len()));
    }

    /// Hands the current chunk's slices to the events whose bytes it holds.
    fn seal(&mut self, events: &mut [RecordedEvent]) {
        if self.spans.is_empty() {
            return;
        }
        let shared = Bytes::from(std::mem::take(&mut self.current));
        let holders = events.get_mut(self.first..).unwrap_or_default();
        for (event, (data, metadata)) in holders.iter_mut().zip(self.spans.drain(..)) {
            event.data = shared.slice(data);
            event.metadata = shared.slice(metadata);
        }
        self.first = events.len();
    }
}

/// The event type names of one read: the few seen in this batch, compared by a short linear
/// scan (cheaper than hashing the name on every row), in front of the connection's cache.
struct Types<'a> {
    recent: Vec<Arc<str>>,
    cache: &'a mut GenerationalCache<Box<str>, Arc<str>>,
}

/// Types a batch keeps in its scan; a log has tens of types, a batch usually a handful.
const RECENT_TYPES: usize = 16;

impl<'a> Types<'a> {
    fn new(cache: &'a mut GenerationalCache<Box<str>, Arc<str>>) -> Types<'a> {
        Types { recent: Vec::new(), cache }
    }

    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.recent.iter().find(|t| ***t == *name) {
            return Arc::clone(shared);
        }
        let shared = match self.cache.get(name) {
            Some(shared) => shared,
            None => {
                let shared: Arc<str> = Arc::from(name);
                self.cache.insert(Box::from(name), Arc::clone(&shared));
                shared
            }
        };
        if self.recent.len() < RECENT_TYPES {
            self.recent.push(Arc::clone(&shared));
        }
        shared
    }
}

/// Columns: position, version, event_id, event_type, schema_version, data, metadata,
/// recorded_at. The event's data and metadata are left empty and returned beside it, for
/// [`Chunks`].
fn event_from_row<'r>(
    row: &'r Row<'_>,
    stream: Arc<str>,
    types: &mut Types<'_>,
) -> Result<(RecordedEvent, &'r [u8], &'r [u8]), StoreError> {
    let read = backend("reading an event row");
    let position: i64 = row.get(0).map_err(&read)?;
    let version: i64 = row.get(1).map_err(&read)?;
    let event_id = row.get_ref(2).map_err(&read)?.as_blob().map_err(|e| corrupt("event id", e))?;
    let event_id = Uuid::from_slice(event_id).map_err(|e| corrupt("event id", e))?;
    let data = row.get_ref(5).map_err(&read)?.as_blob().map_err(|e| corrupt("data", e))?;
    let metadata = row.get_ref(6).map_err(&read)?.as_blob().map_err(|e| corrupt("metadata", e))?;
    let event = RecordedEvent {
        position: Position::from_sequence(
            u64::try_from(position).map_err(|e| corrupt("position", e))?,
        ),
        stream,
        version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
        event_id,
        event_type: {
            let name =
                row.get_ref(3).map_err(&read)?.as_str().map_err(|e| corrupt("event type", e))?;
            types.get(name)
        },
        schema_version: row.get(4).map_err(&read)?,
        data: Bytes::new(),
        metadata: Bytes::new(),
        recorded_at: from_micros(row.get(7).map_err(&read)?)?,
    };
    Ok((event, data, metadata))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("stored {what} is invalid: {e}"))
}

/// Collects rows until the byte cap; `stream_of` names each row's stream. The events' data
/// and metadata are slices of shared chunks ([`Chunks`]).
fn collect(
    rows: &mut rusqlite::Rows<'_>,
    max: usize,
    types: &mut GenerationalCache<Box<str>, Arc<str>>,
    mut stream_of: impl FnMut(&Row<'_>) -> Result<Arc<str>, StoreError>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut types = Types::new(types);
    let mut events = Vec::with_capacity(max.min(1024));
    let mut chunks = Chunks::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().map_err(backend("reading events"))? {
        let (event, data, metadata) = event_from_row(row, stream_of(row)?, &mut types)?;
        chunks.push(&mut events, data, metadata);
        events.push(event);
        bytes += data.len() + metadata.len();
        if bytes >= MAX_READ_BATCH_BYTES {
            break;
        }
    }
    chunks.seal(&mut events);
    Ok(events)
}

pub(crate) fn read_all(
    reader: &mut ReaderConn,
    after: Position,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let after = position_sql(after)?;
    let ReaderConn { conn, names, types } = reader;
    let mut statement = conn
        .prepare_cached(
            "SELECT position, version, event_id, event_type, schema_version, data, metadata, \
             recorded_at, stream_id FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .map_err(backend("reading the log"))?;
    let mut name_of = conn
        .prepare_cached("SELECT name FROM streams WHERE id = ?1")
        .map_err(backend("reading stream names"))?;
    let mut rows =
        statement.query([after, clamp_i64(max as u64)]).map_err(backend("reading the log"))?;
    // A stream's events are mostly next to each other in the log (appended together): the
    // previous row's name is checked before the cache.
    let mut last: Option<(i64, Arc<str>)> = None;
    collect(&mut rows, max, types, |row| {
        let id: i64 = row.get(8).map_err(backend("reading an event row"))?;
        if let Some((last_id, name)) = &last
            && *last_id == id
        {
            return Ok(Arc::clone(name));
        }
        if let Some(name) = names.get(&id) {
            last = Some((id, Arc::clone(&name)));
            return Ok(name);
        }
        // Same read transaction as the events (the statement above is still open), so the
        // stream row is there.
        let name: String =
            name_of.query_row([id], |r| r.get(0)).map_err(backend("reading a stream name"))?;
        let name: Arc<str> = Arc::from(name);
        names.insert(id, Arc::clone(&name));
        last = Some((id, Arc::clone(&name)));
        Ok(name)
    })
}

pub(crate) fn read_stream(
    reader: &mut ReaderConn,
    stream: &str,
    from_version: u64,
    max: usize,
    direction: Direction,
) -> Result<Vec<RecordedEvent>, StoreError> {
    // One snapshot for the stream row and its events, so a concurrent delete cannot make a
    // deleted stream read as empty.
    let ReaderConn { conn, types, .. } = reader;
    let tx = conn.transaction().map_err(backend("starting a read"))?;
    let row: Option<(i64, Option<i64>)> = tx
        .prepare_cached("SELECT id, deleted_at FROM streams WHERE name = ?1")
        .and_then(|mut s| s.query_row([stream], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend("looking up a stream"))?;
    let Some((id, deleted_at)) = row else {
        return Ok(Vec::new());
    };
    if deleted_at.is_some() {
        return Err(StoreError::StreamDeleted { stream: stream.to_owned() });
    }
    if max == 0 {
        return Ok(Vec::new());
    }
    let sql = match direction {
        Direction::Forwards => {
            "SELECT position, version, event_id, event_type, schema_version, data, metadata, \
             recorded_at FROM events WHERE stream_id = ?1 AND version >= ?2 \
             ORDER BY version ASC LIMIT ?3"
        }
        Direction::Backwards => {
            "SELECT position, version, event_id, event_type, schema_version, data, metadata, \
             recorded_at FROM events WHERE stream_id = ?1 AND version <= ?2 \
             ORDER BY version DESC LIMIT ?3"
        }
    };
    let mut statement = tx.prepare_cached(sql).map_err(backend("reading a stream"))?;
    let mut rows = statement
        .query([id, clamp_i64(from_version), clamp_i64(max as u64)])
        .map_err(backend("reading a stream"))?;
    let name: Arc<str> = Arc::from(stream);
    collect(&mut rows, max, types, |_| Ok(Arc::clone(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events of every size, around and past a chunk (and empty ones), keep their own bytes,
    /// in order, and share chunks only up to [`CHUNK_BYTES`].
    #[test]
    fn chunks_hand_every_event_its_own_bytes() {
        let sizes = [0, 1, 700, CHUNK_BYTES - 1, 5, CHUNK_BYTES, 0, 3 * CHUNK_BYTES, 12, 900];
        let bodies: Vec<(Vec<u8>, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (vec![i as u8; n], vec![(i as u8) ^ 0xff; n % 97]))
            .collect();
        let mut events = Vec::new();
        let mut chunks = Chunks::new();
        for (data, metadata) in &bodies {
            chunks.push(&mut events, data, metadata);
            events.push(RecordedEvent::default());
        }
        chunks.seal(&mut events);
        assert_eq!(events.len(), bodies.len());
        for (event, (data, metadata)) in events.iter().zip(&bodies) {
            assert_eq!(&event.data[..], &data[..]);
            assert_eq!(&event.metadata[..], &metadata[..]);
        }
        // Nothing left to seal twice.
        chunks.seal(&mut events);
        assert_eq!(&events[2].data[..], &bodies[2].0[..]);
    }
}
