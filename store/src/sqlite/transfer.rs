//! Export and import ([`crate::transfer`]) on the embedded store. Export reads one snapshot of
//! a read-only connection (so it may run beside `pop serve`): the counts for the manifest,
//! then events and pruned hash rows merged by position (read on the calling thread, copied
//! into batches of bytes that go back and forth, and checked and written as lines on another,
//! in the same order), then the tombstones. Import refuses a
//! store file that holds any row (the caller holds the data directory's lock), builds the
//! store in a staging file beside it while the export is read and verified on other threads
//! ([`ExportReader::read_parallel`]: lines parsed and hashed on one thread per core, checked in
//! order on one), and renames the staging file into place only after the whole file verified. Positions are
//! numbered 1, 2, 3… in file order (events and pruned rows alike), so the log keeps its order.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use rusqlite::{Connection, params};

use super::schema;
use crate::digest::Hash;
use crate::transfer::{
    DataChecks, Entry, EventRef, ExportEvent, ExportReader, ExportSummary, Exporter, ImportSummary,
    Item, Manifest, StreamSlot, Tombstone, TransferError,
};
use crate::verify::FastHash;
use crate::{Durability, Position, StoreError};

fn fail(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

/// Page cache of the importing connection, in KiB (only what is used is allocated).
const IMPORT_CACHE_KIB: i64 = 64 * 1024;

fn position(p: i64) -> Position {
    Position::from_sequence(u64::try_from(p).unwrap_or(0))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Exports the store in the file at `path`: the entries after `since`, every tombstone, and
/// a checkpoint signed with `key`.
pub fn export(
    path: &Path,
    since: Position,
    key: &SigningKey,
    out: impl Write + Send,
    now: DateTime<Utc>,
) -> Result<ExportSummary, TransferError> {
    export_trusting(path, since, key, None, None, out, now)
}

/// [`export`], which also checks the store's signed checkpoints with `key`'s public half, and
/// that it still holds the `witness`ed one ([`crate::commitment::Trust`]): only a log that
/// verifies is signed.
pub fn export_trusting(
    path: &Path,
    since: Position,
    key: &SigningKey,
    witness: Option<crate::commitment::SignedCheckpoint>,
    max_unsealed_seconds: Option<u64>,
    out: impl Write + Send,
    now: DateTime<Utc>,
) -> Result<ExportSummary, TransferError> {
    let read = fail("exporting the embedded store");
    let conn = schema::open_read_only(path)?;
    let tx = conn.unchecked_transaction().map_err(&read)?;
    // Signed only if its hash rows pass what `pop verify` checks of them beside the walk (the
    // walk itself runs as the entries are written).
    if let Some(found) = super::verify::hash_rows_break(&tx)? {
        return Err(TransferError::SourceBroken(found));
    }
    let after = match since.sequence() {
        Some(after) => to_i64(after),
        None => {
            return Err(TransferError::Since(format!(
                "\"{since}\" is a two-part position (\"<commit>/<prepare>\", a PostgreSQL log's); \
                 this log numbers its positions 1, 2, 3…"
            )));
        }
    };
    let head: i64 =
        tx.query_row("SELECT head FROM log WHERE id = 1", [], |r| r.get(0)).map_err(&read)?;
    if after > head {
        return Err(TransferError::Since(format!(
            "{since} is beyond the end of the log ({head}): nothing was written after it"
        )));
    }
    let count = |table: &str| -> Result<(u64, Option<i64>, Option<i64>), StoreError> {
        tx.query_row(
            &format!(
                "SELECT count(*), min(position), max(position) FROM {table} WHERE position > ?1"
            ),
            [after],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )
        .map_err(&read)
    };
    let (events, e_min, e_max) = count("events")?;
    let (pruned, p_min, p_max) = count("pruned")?;
    let first = e_min.into_iter().chain(p_min).min().map(position);
    let last = e_max.into_iter().chain(p_max).max().map(position);
    // Streams by their row id: a dense number each (what the rows carry to the writing
    // thread) and the name.
    let mut numbers: HashMap<i64, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut tombstones = Vec::new();
    {
        let mut q = tx
            .prepare("SELECT id, name, version, deleted_at, head_hash FROM streams ORDER BY name")
            .map_err(&read)?;
        let mut rows = q.query([]).map_err(&read)?;
        while let Some(r) = rows.next().map_err(&read)? {
            let id: i64 = r.get(0).map_err(&read)?;
            let name: String = r.get(1).map_err(&read)?;
            if let Some(deleted_at) = r.get::<_, Option<i64>>(3).map_err(&read)? {
                let version: Option<i64> = r.get(2).map_err(&read)?;
                let head: Option<Vec<u8>> = r.get(4).map_err(&read)?;
                tombstones.push(Tombstone {
                    stream: name.clone(),
                    version: version.and_then(|v| u64::try_from(v).ok()),
                    head: head.and_then(|h| Hash::try_from(h.as_slice()).ok()),
                    deleted_at,
                });
            }
            numbers.insert(id, names.len() as u32);
            names.push(name);
        }
    }
    let manifest = Manifest::new(
        "sqlite",
        since,
        events,
        pruned,
        tombstones.len() as u64,
        first,
        last,
        &key.verifying_key(),
    );
    let trust = crate::commitment::Trust { key: Some(key.verifying_key()), witness };
    let checkpoints = super::seal::checkpoints(&tx, false)?;
    let mut exporter = Exporter::new(out, manifest.clone())?
        .checking(checkpoints, trust)
        .refusing_unsealed_over(max_unsealed_seconds);
    // Two halves on two cores: this thread steps through the rows and copies them out of
    // SQLite into batches (one buffer of bytes each, used again and again); another checks
    // each event's digest and chain and writes its line, in the order read.
    let (batches, inbox) = std::sync::mpsc::sync_channel::<RowBatch>(BATCHES_AHEAD);
    let (emptied, recycled) = std::sync::mpsc::sync_channel::<RowBatch>(BATCHES_AHEAD + 2);
    let names = &names;
    let (exporter, read) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<_, TransferError> {
            let mut slots: Vec<Option<StreamSlot>> = vec![None; names.len()];
            let mut slot = |exporter: &mut Exporter<_>, stream: Stream| match stream {
                Stream::Known(n) => match (slots.get_mut(n as usize), names.get(n as usize)) {
                    (Some(cached), Some(name)) => {
                        *cached.get_or_insert_with(|| exporter.stream(name))
                    }
                    _ => exporter.stream(&format!("#{n}")),
                },
                // A stream id without a row: named by its id (the digest, which covers the
                // name, then fails, as the export of a log that does not verify should).
                Stream::Unknown(id) => exporter.stream(&format!("#{id}")),
            };
            for mut batch in inbox.iter() {
                for row in &batch.rows {
                    match row {
                        Row::Event(r) => {
                            let stream = slot(&mut exporter, r.stream);
                            exporter.event_checked(stream, &batch.event(r)?, &r.checks)?;
                        }
                        Row::Pruned(p) => {
                            let stream = slot(&mut exporter, p.stream);
                            exporter.pruned_entry(
                                stream,
                                p.position,
                                p.version,
                                p.link.as_ref(),
                            )?;
                        }
                    }
                }
                batch.clear();
                // The reader makes a new one if this one is not wanted back.
                let _ = emptied.try_send(batch);
            }
            Ok(exporter)
        });
        let read = read_entries(&tx, after, &numbers, &batches, &recycled);
        drop(batches);
        let exporter = writer
            .join()
            .map_err(|_| TransferError::File("writing it failed".into()))
            .and_then(|r| r);
        (exporter, read)
    });
    // The writer's failure first: the reading stops when the writer stops.
    let exporter = exporter?;
    read?;
    let checkpoint = exporter.finish(&tombstones, key, now)?;
    Ok(ExportSummary { manifest, checkpoint })
}

/// Rows as the reading thread copied them out of SQLite: the events' type, data and metadata
/// one after the other in `bytes`, the rest in `rows`.
#[derive(Default)]
struct RowBatch {
    bytes: Vec<u8>,
    rows: Vec<Row>,
}

enum Row {
    Event(EventRow),
    Pruned(PrunedRow),
}

/// A row's stream: its number (its index in the export's names), or the id of a stream that
/// has no row.
#[derive(Clone, Copy)]
enum Stream {
    Known(u32),
    Unknown(i64),
}

struct EventRow {
    position: Position,
    stream: Stream,
    version: u64,
    event_id: uuid::Uuid,
    schema_version: u32,
    recorded_at: i64,
    chain: Option<Hash>,
    /// The data's hash and form, computed on the reading thread (the writing one has more
    /// to do).
    checks: DataChecks,
    /// Where its type starts in the batch's bytes, and where its type, data and metadata end
    /// (each of the three starts where the one before it ends).
    start: usize,
    ends: [usize; 3],
}

struct PrunedRow {
    position: Position,
    stream: Stream,
    version: u64,
    link: Option<Hash>,
}

impl RowBatch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }

    fn event<'a>(&'a self, r: &EventRow) -> Result<EventRef<'a>, TransferError> {
        let [type_end, data_end, metadata_end] = r.ends;
        let part = |from: usize, to: usize| self.bytes.get(from..to).unwrap_or_default();
        let event_type = std::str::from_utf8(part(r.start, type_end)).map_err(|_| {
            StoreError::Corrupt(format!("event at {} has a type that is not UTF-8", r.position))
        })?;
        Ok(EventRef {
            position: r.position,
            version: r.version,
            event_id: r.event_id,
            event_type,
            schema_version: r.schema_version,
            recorded_at: r.recorded_at,
            data: part(type_end, data_end),
            metadata: part(data_end, metadata_end),
            chain: r.chain,
        })
    }
}

/// Column `i` of `r` (text or a blob) as SQLite holds it, to be copied.
fn bytes<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
    let read = fail("exporting the embedded store");
    match r.get_ref(i).map_err(&read)? {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => Ok(b),
        other => {
            Err(read(rusqlite::Error::InvalidColumnType(i, "bytes".into(), other.data_type())))
        }
    }
}

/// Reads the events and pruned hash rows after `after`, merged by position, and hands them to
/// `out` in batches (taking emptied ones back from `recycled` when there are); stops early
/// when its receiver is gone (the writer failed).
fn read_entries(
    tx: &Connection,
    after: i64,
    numbers: &HashMap<i64, u32>,
    out: &std::sync::mpsc::SyncSender<RowBatch>,
    recycled: &std::sync::mpsc::Receiver<RowBatch>,
) -> Result<(), TransferError> {
    let read = fail("exporting the embedded store");
    let number = |id: i64| numbers.get(&id).map_or(Stream::Unknown(id), |n| Stream::Known(*n));
    let mut live = tx
        .prepare(
            "SELECT position, stream_id, version, event_id, event_type, schema_version, data, \
             metadata, recorded_at, chain FROM events WHERE position > ?1 ORDER BY position",
        )
        .map_err(&read)?;
    let mut gone = tx
        .prepare(
            "SELECT position, stream_id, version, chain FROM pruned WHERE position > ?1 \
             ORDER BY position",
        )
        .map_err(&read)?;
    let mut a = live.query([after]).map_err(&read)?;
    let mut b = gone.query([after]).map_err(&read)?;
    let pruned_from = |r: &rusqlite::Row<'_>| -> Result<PrunedRow, StoreError> {
        let link: Option<Vec<u8>> = r.get(3).map_err(&read)?;
        Ok(PrunedRow {
            position: position(r.get(0).map_err(&read)?),
            stream: number(r.get(1).map_err(&read)?),
            version: u64::try_from(r.get::<_, i64>(2).map_err(&read)?).unwrap_or(u64::MAX),
            link: link.and_then(|l| Hash::try_from(l.as_slice()).ok()),
        })
    };
    let fresh = || recycled.try_recv().unwrap_or_default();
    let mut batch = fresh();
    // `false`: the writer stopped (its error is the one reported).
    let push = |row: Row, batch: &mut RowBatch| -> bool {
        batch.rows.push(row);
        (batch.rows.len() < BATCH && batch.bytes.len() < BATCH_BYTES)
            || out.send(std::mem::replace(batch, fresh())).is_ok()
    };
    let mut next_pruned = b.next().map_err(&read)?.map(pruned_from).transpose()?;
    while let Some(r) = a.next().map_err(&read)? {
        let pos = position(r.get(0).map_err(&read)?);
        while let Some(p) = next_pruned.take_if(|p| p.position < pos) {
            if !push(Row::Pruned(p), &mut batch) {
                return Ok(());
            }
            next_pruned = b.next().map_err(&read)?.map(pruned_from).transpose()?;
        }
        let id = r.get_ref(3).map_err(&read)?.as_blob().map_err(|e| read(e.into()))?;
        let chain = r.get_ref(9).map_err(&read)?.as_blob_or_null().map_err(|e| read(e.into()))?;
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(bytes(r, 4)?);
        let type_end = batch.bytes.len();
        let data = bytes(r, 6)?;
        let checks = DataChecks::of(data);
        batch.bytes.extend_from_slice(data);
        let data_end = batch.bytes.len();
        batch.bytes.extend_from_slice(bytes(r, 7)?);
        let event = EventRow {
            position: pos,
            stream: number(r.get(1).map_err(&read)?),
            version: u64::try_from(r.get::<_, i64>(2).map_err(&read)?).unwrap_or(u64::MAX),
            event_id: uuid::Uuid::from_slice(id)
                .map_err(|_| StoreError::Corrupt(format!("event at {pos} has a malformed id")))?,
            schema_version: r.get(5).map_err(&read)?,
            recorded_at: r.get(8).map_err(&read)?,
            chain: chain.and_then(|c| Hash::try_from(c).ok()),
            checks,
            start,
            ends: [type_end, data_end, batch.bytes.len()],
        };
        if !push(Row::Event(event), &mut batch) {
            return Ok(());
        }
    }
    while let Some(p) = next_pruned.take() {
        if !push(Row::Pruned(p), &mut batch) {
            return Ok(());
        }
        next_pruned = b.next().map_err(&read)?.map(pruned_from).transpose()?;
    }
    if !batch.rows.is_empty() {
        let _ = out.send(batch);
    }
    Ok(())
}

/// Items the reader thread hands the writer at once.
const BATCH: usize = 512;

/// Bytes of rows after which the export's reading thread hands a batch on whatever its count
/// (events may be large).
const BATCH_BYTES: usize = 4 << 20;

/// Batches in flight between the reader thread and the writer.
const BATCHES_AHEAD: usize = 8;

/// Imports a verified export into the store file at `path`, which must not exist or hold
/// nothing; the caller holds the data directory's lock. The file is read and verified on a
/// thread of its own while this one writes what it handed out (two cores, two halves of the
/// work) into a staging file beside `path` (`<name>.importing`: no journal, no WAL — it is
/// thrown away whole on any failure, so it needs neither; written in several commits, each
/// synced on another thread as the import goes on), which is synced once more and renamed over
/// `path` only after the whole export verified. So a bad file leaves `path` as it was.
pub fn import<R: BufRead + Send>(
    path: &Path,
    reader: ExportReader<R>,
) -> Result<ImportSummary, TransferError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TransferError::File(format!("{}: {e}", dir.display())))?;
    }
    let existing = path.exists();
    if existing {
        refuse_unless_empty(path)?;
    }
    let staging = path.with_extension("db.importing");
    let _ = std::fs::remove_file(&staging);
    let result = stage(&staging, reader);
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            return Err(e.named_duplicate_id());
        }
    };
    let io =
        |what: &'static str, e: std::io::Error| TransferError::Store(StoreError::backend(what, e));
    std::fs::File::open(&staging)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the imported store", e))?;
    if existing {
        // An empty store's file and its WAL: the WAL must not be replayed into the new file.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing the empty store's WAL", e));
                }
                _ => {}
            }
        }
    }
    std::fs::rename(&staging, path).map_err(|e| io("renaming the imported store into place", e))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the data directory", e))?;
    }
    Ok(summary)
}

/// Refuses a store file that holds any row (a file of an empty store may be replaced).
fn refuse_unless_empty(path: &Path) -> Result<(), TransferError> {
    let read = fail("reading the target store");
    let mut conn = Connection::open(path).map_err(fail("opening the store file"))?;
    schema::configure_writer(&conn, Durability::Full)?;
    schema::migrate(&mut conn, false)?;
    let (rows, head): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM streams) + (SELECT count(*) FROM events) + \
             (SELECT count(*) FROM pruned) + (SELECT count(*) FROM log_checkpoints), \
             (SELECT head FROM log WHERE id = 1)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(&read)?;
    if rows > 0 || head > 0 {
        return Err(TransferError::NotEmpty(format!(
            "{} holds {rows} rows, log head {head}",
            path.display()
        )));
    }
    Ok(())
}

/// Writes the export into a new file at `staging`, the reading and verifying on a thread of
/// its own; the summary once the whole file verified and was written.
fn stage<R: BufRead + Send>(
    staging: &Path,
    reader: ExportReader<R>,
) -> Result<ImportSummary, TransferError> {
    let write = fail("importing into the embedded store");
    let mut conn = Connection::open(staging).map_err(fail("opening the staging file"))?;
    schema::migrate(&mut conn, false)?;

    // A file thrown away whole on failure: no rollback journal, no fsync before the one at the
    // end, one process.
    conn.pragma_update_and_check(None, "journal_mode", "OFF", |_| Ok(())).map_err(&write)?;
    conn.pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |_| Ok(())).map_err(&write)?;
    conn.pragma_update(None, "synchronous", "OFF").map_err(&write)?;
    conn.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB).map_err(&write)?;
    // Synced by another thread as the import goes (see `FLUSH_EVERY_BYTES`).
    let file = std::fs::File::open(staging)
        .map_err(|e| TransferError::Store(StoreError::backend("opening the staging file", e)))?;
    std::thread::scope(|scope| {
        // `Ok(None)`: the whole file verified (sent only then: the commit waits for it).
        let (batches, inbox) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_AHEAD);
        let read = scope
            .spawn(move || reader.read_to_writer(parsers(), |batch| batches.send(batch).is_ok()));
        let (flush, flushes) = std::sync::mpsc::sync_channel::<()>(1);
        let flusher = scope.spawn(move || -> std::io::Result<()> {
            for () in flushes {
                file.sync_data()?;
            }
            Ok(())
        });
        let written = write_items(&conn, &inbox, &flush);
        drop(inbox);
        drop(flush);
        let summary = read.join().map_err(|_| TransferError::File("reading it failed".into()))?;
        let flushed = flusher
            .join()
            .map_err(|_| TransferError::File("was not written (syncing it failed)".into()))?;
        flushed.map_err(|e| StoreError::backend("syncing the staging file", e))?;
        written?;
        summary.ok_or_else(|| TransferError::File("was not read to its end".into()))
    })
}

type Batch = crate::transfer::ImportBatch;

/// Threads that parse the file's lines: one per core (the writer and the sequential checks
/// take their share of them too).
fn parsers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).min(4)
}

/// Bytes of rows after which the import commits what it wrote so far into the staging file
/// and has another thread sync it while it goes on: the disk writes the file during the import
/// rather than all of it in the sync at the end, and the page cache holds only what is not
/// written yet. A commit in the staging file makes nothing visible: the file becomes the store
/// only when it is renamed into place, after the whole export verified.
const FLUSH_EVERY_BYTES: usize = 32 << 20;

/// Events one statement inserts (ten parameters each, far below SQLite's limit of 32,766): a
/// statement's step, reset and checks once for that many rows.
const ROWS_PER_INSERT: usize = 32;

/// The statement that inserts `rows` events, their ten columns in [`bind_events`]' order. `OR
/// ROLLBACK`: a row that breaks a constraint fails the whole import (the staging file is thrown
/// away), so SQLite keeps no statement journal to undo the rows before it (it would copy each
/// page a statement changes).
fn insert_events_sql(rows: usize) -> String {
    format!(
        "INSERT OR ROLLBACK INTO events (position, stream_id, version, event_id, event_type, \
         schema_version, data, metadata, recorded_at, chain) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

/// Binds `rows` (position, stream id, event) to the parameters of [`insert_events_sql`].
fn bind_events(
    insert: &mut rusqlite::Statement<'_>,
    rows: &[(i64, i64, ExportEvent)],
) -> rusqlite::Result<()> {
    for (r, (position, stream, e)) in rows.iter().enumerate() {
        let at = r * 10;
        insert.raw_bind_parameter(at + 1, position)?;
        insert.raw_bind_parameter(at + 2, stream)?;
        insert.raw_bind_parameter(at + 3, to_i64(e.version))?;
        insert.raw_bind_parameter(at + 4, e.event_id.as_bytes().as_slice())?;
        insert.raw_bind_parameter(at + 5, e.event_type.as_str())?;
        insert.raw_bind_parameter(at + 6, e.schema_version)?;
        insert.raw_bind_parameter(at + 7, e.data.as_slice())?;
        insert.raw_bind_parameter(at + 8, e.metadata.as_slice())?;
        insert.raw_bind_parameter(at + 9, e.recorded_at)?;
        insert.raw_bind_parameter(at + 10, e.chain.as_ref().map(|c| c.as_slice()))?;
    }
    Ok(())
}

/// Inserts what the reader hands out into the staging file (committing every
/// [`FLUSH_EVERY_BYTES`] and asking `flush` to sync it), and finishes it with the streams and
/// the log head once the reader reached the end of the file without a problem.
fn write_items(
    conn: &Connection,
    inbox: &std::sync::mpsc::Receiver<Batch>,
    flush: &std::sync::mpsc::SyncSender<()>,
) -> Result<(), TransferError> {
    let write = fail("importing into the embedded store");
    conn.execute_batch("BEGIN").map_err(&write)?;
    // Stream ids in order of first appearance (1, 2, 3…), keyed by names from the file with
    // the hasher the reader's walks already use for them; each live stream's last version and
    // head, at its id - 1.
    let mut ids: HashMap<String, i64, FastHash> = HashMap::default();
    let mut heads: Vec<(i64, Hash)> = Vec::new();
    let mut tombstones: Vec<Tombstone> = Vec::new();
    let mut next_position: i64 = 0;
    let mut complete = false;
    let mut unflushed = 0usize;
    {
        let mut insert_events =
            conn.prepare(&insert_events_sql(ROWS_PER_INSERT)).map_err(&write)?;
        let mut insert_event = conn.prepare(&insert_events_sql(1)).map_err(&write)?;
        let mut insert_pruned = conn
            .prepare(
                "INSERT INTO pruned (position, stream_id, version, chain) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(&write)?;
        let mut id_of = |name: &str| -> i64 {
            if let Some(id) = ids.get(name) {
                return *id;
            }
            let id = ids.len() as i64 + 1;
            ids.insert(name.to_owned(), id);
            id
        };
        // The previous event's stream and its id: the events of one append are consecutive
        // and share their stream, so most events need no lookup by name. The name's buffer is
        // reused: in a log where streams interleave, a change of stream costs no allocation.
        let mut previous_name = String::new();
        let mut previous_id: Option<i64> = None;
        // A batch's events with their positions and stream ids, inserted at its end.
        let mut rows: Vec<(i64, i64, ExportEvent)> = Vec::new();
        for batch in inbox.iter() {
            let Some(batch) = batch? else {
                complete = true;
                break;
            };
            for item in batch {
                match item {
                    Item::Entry(Entry::Event(e)) => {
                        next_position += 1;
                        let id = match previous_id {
                            Some(id) if previous_name == e.stream => id,
                            _ => {
                                let id = id_of(&e.stream);
                                previous_name.clear();
                                previous_name.push_str(&e.stream);
                                previous_id = Some(id);
                                id
                            }
                        };
                        let head = (to_i64(e.version), e.chain.unwrap_or_default());
                        match heads.get_mut((id - 1) as usize) {
                            Some(h) => *h = head,
                            None => {
                                // Streams first met in pruned rows have no head.
                                heads.resize((id - 1) as usize, (-1, [0; 32]));
                                heads.push(head);
                            }
                        }
                        unflushed += e.data.len() + e.metadata.len() + 128;
                        rows.push((next_position, id, e));
                    }
                    Item::Entry(Entry::Pruned(p)) => {
                        next_position += 1;
                        let id = id_of(&p.stream);
                        insert_pruned
                            .execute(params![
                                next_position,
                                id,
                                to_i64(p.version),
                                p.link.as_ref().map(|l| l.as_slice())
                            ])
                            .map_err(&write)?;
                        unflushed += 128;
                    }
                    Item::Tombstone(t) => tombstones.push(t),
                }
            }
            let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
            for chunk in &mut chunks {
                bind_events(&mut insert_events, chunk).map_err(&write)?;
                insert_events.raw_execute().map_err(&write)?;
            }
            for row in chunks.remainder() {
                bind_events(&mut insert_event, std::slice::from_ref(row)).map_err(&write)?;
                insert_event.raw_execute().map_err(&write)?;
            }
            rows.clear();
            if unflushed >= FLUSH_EVERY_BYTES {
                conn.execute_batch("COMMIT; BEGIN").map_err(&write)?;
                unflushed = 0;
                if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = flush.try_send(()) {
                    // The syncing thread failed: its error is the one reported.
                    return Err(TransferError::File("was not written (syncing it failed)".into()));
                }
            }
        }
    }
    if !complete {
        return Err(TransferError::File("was not read to its end".into()));
    }
    {
        let mut insert_stream = conn
            .prepare(
                "INSERT INTO streams (id, name, version, deleted_at, head_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(&write)?;
        let mut dead: HashMap<&str, &Tombstone> =
            tombstones.iter().map(|t| (t.stream.as_str(), t)).collect();
        let mut named: Vec<(&String, &i64)> = ids.iter().collect();
        named.sort_by_key(|(_, id)| **id);
        for (name, id) in named {
            match dead.remove(name.as_str()) {
                Some(t) => insert_stream.execute(params![
                    id,
                    name,
                    t.version.map(to_i64),
                    t.deleted_at,
                    t.head.map(|h| h.to_vec())
                ]),
                None => {
                    let (version, head) =
                        heads.get((id - 1) as usize).copied().unwrap_or((-1, [0; 32]));
                    insert_stream.execute(params![
                        id,
                        name,
                        (version >= 0).then_some(version),
                        None::<i64>,
                        (version >= 0).then(|| head.to_vec())
                    ])
                }
            }
            .map_err(&write)?;
        }
        // Tombstones of streams without a row in the log (deleted before any event).
        let mut rest: Vec<&Tombstone> = dead.into_values().collect();
        rest.sort_by(|a, b| a.stream.cmp(&b.stream));
        for t in rest {
            insert_stream
                .execute(params![
                    None::<i64>,
                    t.stream,
                    t.version.map(to_i64),
                    t.deleted_at,
                    t.head.map(|h| h.to_vec())
                ])
                .map_err(&write)?;
        }
    }
    conn.execute("UPDATE log SET head = ?1, imported_to = ?1 WHERE id = 1", [next_position])
        .map_err(&write)?;
    conn.execute_batch("COMMIT").map_err(&write)?;
    Ok(())
}
