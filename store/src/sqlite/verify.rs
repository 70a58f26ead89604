//! Verification of the embedded store: reads the rows and feeds them to the one rule
//! ([`crate::verify`]): every event in log order, then every stream row. The log head
//! (`log.head`) bounds positions; an event of a stream id without a row is a break. The same
//! scan feeds the whole log in global order (events and the pruned hash rows of deleted
//! streams) to the check against the signed checkpoints ([`crate::commitment::LogWalker`]).
//! All of it in one read transaction: one snapshot.
//!
//! On every core: the scan runs on the calling thread, which also walks the checkpoints
//! (they need the log in global order), and hands each event, copied out of SQLite into a
//! batch, to one of [`shards`] threads chosen by its stream. A shard recomputes the digest and
//! chain link of each event of its streams in log order ([`crate::verify::step`], the rule the
//! one-thread [`crate::verify::Walker`] applies). Each event keeps its ordinal in the scan, so
//! the first break reported is the one a single walk in log order would stop at: the smallest
//! ordinal among the shards' first breaks (a stream's break depends only on its own earlier
//! events, which all come earlier in the scan). The report's count is that ordinal (the
//! events before the break), as the one-thread walk counts. Once a break is known, the scan
//! stops feeding events after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use rusqlite::{Connection, OptionalExtension};

use crate::commitment::LogWalker;
use crate::digest::Hash;
use crate::verify::{
    Break, EventRow, FastHash, Reaped, StreamRow, Verification, Walk, finish_rule, step,
};
use crate::{Position, StoreError};

fn fail(e: rusqlite::Error) -> StoreError {
    StoreError::backend("verifying the log", e)
}

/// A pruned hash row: position, stream id, version, chain link.
type PrunedRow = (i64, i64, i64, Option<Hash>);

fn position(p: i64) -> Position {
    Position::from_sequence(u64::try_from(p).unwrap_or(0))
}

/// Events per batch handed to a shard (~1.3 MB of ~1 KiB events: large enough that the
/// hand-over costs nothing per event, small enough to stay in the caches).
const BATCH: usize = 1024;

/// Batches in flight to each shard.
const AHEAD: usize = 4;

/// Shard threads: one per core (at least one, at most eight).
fn shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// One event copied out of SQLite: its fixed columns and where its variable ones are in the
/// batch's bytes (event type, metadata, data, then the chain link, back to back).
struct Copied {
    ordinal: u64,
    /// Index of its stream row.
    stream: usize,
    version: i64,
    position: Position,
    schema_version: u32,
    recorded_at: i64,
    start: usize,
    type_len: usize,
    metadata_len: usize,
    data_len: usize,
    /// `None`: no chain link stored.
    chain_len: Option<usize>,
}

struct Batch {
    rows: Vec<Copied>,
    bytes: Vec<u8>,
}

impl Batch {
    /// Sized for [`BATCH`] events of ~1.5 KiB, so it rarely grows while being filled.
    fn new() -> Batch {
        Batch { rows: Vec::with_capacity(BATCH), bytes: Vec::with_capacity(BATCH * 1536) }
    }
}

/// What a shard found: the walk of each of its streams (by `index / shards`), its first
/// break with the ordinal of its event, and its reap records with theirs.
struct ShardOutcome {
    walks: Vec<Option<Walk>>,
    first_break: Option<(u64, Break)>,
    reaped: Vec<(u64, Reaped)>,
}

/// Walks the events it is handed (those of the streams `index % count` names this shard) as
/// batches arrive.
fn shard(
    count: usize,
    streams: &[(i64, StreamRow)],
    log_head: Position,
    inbox: Receiver<Batch>,
    spent: std::sync::mpsc::Sender<Batch>,
    first_break: &AtomicU64,
) -> ShardOutcome {
    let mut out = ShardOutcome {
        walks: vec![None; streams.len().div_ceil(count)],
        first_break: None,
        reaped: Vec::new(),
    };
    for mut batch in inbox.iter() {
        if out.first_break.is_none() {
            for c in &batch.rows {
                if c.ordinal > first_break.load(Ordering::Relaxed) {
                    break;
                }
                let bytes = &batch.bytes[c.start..];
                let (event_type, bytes) = bytes.split_at(c.type_len);
                let (metadata, bytes) = bytes.split_at(c.metadata_len);
                let (data, bytes) = bytes.split_at(c.data_len);
                let row = EventRow {
                    stream: &streams[c.stream].1.name,
                    version: c.version,
                    position: c.position,
                    // Written by the scan from a `String`: always UTF-8.
                    event_type: std::str::from_utf8(event_type).unwrap_or_default(),
                    schema_version: c.schema_version,
                    recorded_at: c.recorded_at,
                    metadata,
                    data,
                    chain: c.chain_len.map(|n| &bytes[..n]),
                };
                let slot = &mut out.walks[c.stream / count];
                match step(slot.as_ref(), &row, None, Some(log_head)) {
                    Ok(walk) => *slot = Some(walk),
                    Err(reason) => {
                        first_break.fetch_min(c.ordinal, Ordering::Relaxed);
                        out.first_break = Some((c.ordinal, crate::verify::at(&row, reason)));
                        break;
                    }
                }
                if let Some(r) = crate::verify::reap_record(&row) {
                    out.reaped.push((c.ordinal, r));
                }
            }
        }
        batch.rows.clear();
        batch.bytes.clear();
        // The scan may have finished: then the batch is dropped.
        let _ = spent.send(batch);
    }
    out
}

/// Verifies the database `conn` reads (a reader connection: nothing is written).
pub(crate) fn verify(
    conn: &Connection,
    trust: crate::commitment::Trust,
) -> Result<Verification, StoreError> {
    let tx = conn.unchecked_transaction().map_err(fail)?;
    let conn: &Connection = &tx;
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(fail)?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .map_err(fail)?;
    if found == 0 && tables.iter().any(|t| super::schema::TABLES.contains(&t.as_str())) {
        // pop's tables in a file whose schema version says it has none: the version was
        // changed outside pop (migrating it would fail on the tables that are there).
        return Ok(crate::verify::Break::of_store(
            "the file holds pop's tables but its schema version (PRAGMA user_version) is 0: it \
             was changed outside pop",
        )
        .alone());
    }
    if found == 0 && tables.is_empty() {
        // No table at all: an empty file (or one never pop's), not an older pop's store, whose
        // chaining the advice of `unchained_schema` would sign (auditor55 L3: an emptied file
        // beside its witness was told to `pop serve --chain-unchained-history`).
        let witnessed = trust.witness.as_ref().and_then(|w| w.checkpoint().ok());
        return Ok(crate::verify::Break::of_store(match witnessed {
            Some(c) => format!(
                "the store file holds no table, while checkpoint {} witnessed outside it covers \
                 {} entries of its log up to position {}: the file was emptied or replaced \
                 outside pop. Restore it from a backup or a `pop export` (`pop import`); a \
                 server started on it would begin a new log",
                c.seq, c.events, c.position
            ),
            None => "the store file holds no table: an empty file, or not pop's; there is no \
                     log in it to verify"
                .to_owned(),
        })
        .alone());
    }
    if found < super::schema::CHAIN_STEP as u32 {
        return Ok(crate::verify::Break::of_store(crate::verify::unchained_schema(found)).alone());
    }
    if found != super::SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the store's schema is version {found} and this build verifies version {}; {}",
            super::SCHEMA_VERSION,
            if found < super::SCHEMA_VERSION {
                "start `pop serve` of this build on it once to migrate"
            } else {
                "verify it with the build that wrote it"
            }
        )));
    }
    if let Some(missing) = crate::verify::Break::missing_tables(super::schema::TABLES, &tables) {
        return Ok(missing);
    }
    let log_head: Option<(i64, Option<i64>)> = conn
        .query_row("SELECT head, imported_to FROM log WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(fail)?;
    let Some((log_head, imported_to)) = log_head else {
        return Ok(crate::verify::Break::of_store(
            "the table log has no row: pop never deletes it, so it was deleted outside pop",
        )
        .alone());
    };
    let log_head = position(log_head.max(0));
    let mut streams: Vec<(i64, StreamRow)> = Vec::new();
    {
        let mut q = conn
            .prepare("SELECT id, name, version, deleted_at, head_hash FROM streams ORDER BY id")
            .map_err(fail)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    StreamRow {
                        name: r.get(1)?,
                        version: r.get(2)?,
                        deleted: r.get::<_, Option<i64>>(3)?.is_some(),
                        head: r.get(4)?,
                    },
                ))
            })
            .map_err(fail)?;
        for row in rows {
            streams.push(row.map_err(fail)?);
        }
    }
    let log = LogWalker::new(super::seal::checkpoints(conn, false)?, trust);
    let count = shards();
    // The smallest ordinal of a break found so far (`u64::MAX`: none).
    let first_break = AtomicU64::new(u64::MAX);
    let (spent, recycled) = std::sync::mpsc::channel::<Batch>();
    let mut by_index: HashMap<usize, crate::verify::PrunedTail, FastHash> = HashMap::default();
    let (scanned, outcomes, log) = std::thread::scope(|scope| {
        let mut senders: Vec<SyncSender<Batch>> = Vec::with_capacity(count);
        let mut workers = Vec::with_capacity(count);
        for _ in 0..count {
            let (send, inbox) = std::sync::mpsc::sync_channel::<Batch>(AHEAD);
            senders.push(send);
            let spent = spent.clone();
            let (streams, first_break) = (&streams, &first_break);
            workers.push(
                std::thread::Builder::new()
                    .name("pop-verify".into())
                    .spawn_scoped(scope, move || {
                        shard(count, streams, log_head, inbox, spent, first_break)
                    })
                    .map_err(|e| StoreError::backend("starting a verification thread", e)),
            );
        }
        drop(spent);
        let (log_out, log_inbox) = std::sync::mpsc::sync_channel::<Vec<LogItem>>(4 * AHEAD);
        let streams_ref = &streams;
        let log_thread = std::thread::Builder::new()
            .name("pop-verify-log".into())
            .spawn_scoped(scope, move || walk_log(log, streams_ref, log_inbox))
            .map_err(|e| StoreError::backend("starting a verification thread", e));
        let scanned = scan(
            conn,
            &streams,
            imported_to.unwrap_or(0),
            &log_out,
            &senders,
            &recycled,
            &first_break,
            &mut by_index,
        );
        drop(senders);
        drop(log_out);
        let log = log_thread.and_then(|t| {
            t.join().map_err(|_| StoreError::Corrupt("a verification thread failed".into()))
        });
        let outcomes: Result<Vec<ShardOutcome>, StoreError> = workers
            .into_iter()
            .map(|w| {
                w?.join().map_err(|_| StoreError::Corrupt("a verification thread failed".into()))
            })
            .collect();
        (scanned, outcomes, log)
    });
    let (events, scan_break) = scanned?;
    let outcomes = outcomes?;
    let log = log?;
    let first = outcomes
        .iter()
        .filter_map(|o| o.first_break.as_ref())
        .chain(scan_break.as_ref())
        .min_by_key(|(ordinal, _)| *ordinal);
    if let Some((ordinal, b)) = first {
        return Ok(Verification {
            events: *ordinal,
            first_break: Some(b.clone()),
            ..Verification::default()
        });
    }
    let mut reaped: Vec<(u64, Reaped)> =
        outcomes.iter().flat_map(|o| o.reaped.iter().map(|(n, r)| (*n, r.clone()))).collect();
    reaped.sort_by_key(|(n, _)| *n);
    let reaped: Vec<Reaped> = reaped.into_iter().map(|(_, r)| r).collect();
    let tails: HashMap<String, crate::verify::PrunedTail, FastHash> =
        by_index.into_iter().map(|(i, tail)| (streams[i].1.name.clone(), tail)).collect();
    let rows: Vec<StreamRow> = streams.into_iter().map(|(_, s)| s).collect();
    let report = finish_rule(
        Verification { events, ..Verification::default() },
        &reaped,
        &rows,
        |i, _| outcomes[i % count].walks[i / count].map(|w| (w.next_version, w.head)),
        None,
    );
    let report = crate::verify::check_pruned(report, &rows, &tails);
    if !report.is_intact() {
        return Ok(report);
    }
    if let Some(found) = stray_or_misplaced(conn, log_head)? {
        return Ok(found.alone());
    }
    let report = report.with_checkpoints(log.finish());
    if !report.is_intact() {
        return Ok(report);
    }
    let sealed = report.checkpoints.last.map_or(0, |(_, p, _)| p.commit());
    if let Some(found) = missing_entries(conn, log_head, sealed)? {
        return Ok(found.alone());
    }
    if report.checkpoints.unsealed_entries == 0 {
        return Ok(report);
    }
    let unsealed = unsealed(conn, report.checkpoints.last.map(|(_, p, _)| p))?;
    Ok(report.with_unsealed(unsealed))
}

/// Entries gone from the log after position `after` (the newest checkpoint's: below it the
/// checkpoints account for every entry). The embedded log leaves no position empty (a failed
/// group's savepoint gives its positions back; a deleted stream keeps a hash row per event)
/// and its head is the highest position handed out, so a position with no entry up to the
/// head was removed: a hole (auditor31: a whole agenda, or a stream's last event with its
/// row rewritten, removed from the unsealed tail passed as intact, and the next start sealed
/// over it) or a cut tail (auditor30). Checked after the walks and the checkpoints, which name
/// a removed stream more precisely.
fn missing_entries(
    conn: &Connection,
    log_head: Position,
    after: u64,
) -> Result<Option<Break>, StoreError> {
    let head = log_head.commit();
    let mut expected = after.saturating_add(1);
    let mut hole: Option<(u64, u64)> = None;
    // Positions only (SQLite merges the two ordered index scans): no entry is built per row.
    let mut positions = conn
        .prepare(
            "SELECT position FROM events WHERE position > ?1 \
             UNION ALL SELECT position FROM pruned WHERE position > ?1 ORDER BY 1",
        )
        .map_err(fail)?;
    let mut rows = positions.query([i64::try_from(after).unwrap_or(i64::MAX)]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let at = u64::try_from(row.get::<_, i64>(0).map_err(fail)?).unwrap_or(0);
        if at > expected {
            hole = Some((expected, at - 1));
            break;
        }
        expected = expected.max(at.saturating_add(1));
    }
    let gone = match hole {
        Some(range) => range,
        None if expected <= head => (expected, head),
        None => return Ok(None),
    };
    let (first, last) = gone;
    let span = match first == last {
        true => format!("position {first} of the log holds"),
        false => format!("positions {first}–{last} of the log hold"),
    };
    Ok(Some(crate::verify::Break {
        stream: String::new(),
        version: None,
        position: Some(position(i64::try_from(first).unwrap_or(i64::MAX))),
        reason: if hole.is_some() {
            format!(
                "{span} no entry, and the embedded log leaves none empty: what was there was \
                 removed or moved outside pop (a hole)"
            )
        } else {
            format!(
                "the log's head says {head} positions were handed out, but its entries end \
                 at {}: the entries after it are gone (a cut tail)",
                first - 1
            )
        },
    }))
}

/// The checks of the hash rows that need no walk: a row kept for a stream pop did not delete
/// (a live one, or one that does not exist: auditor19, it passed, was sealed, then misled
/// export and the sealer's later checks into blaming real events), and a row past the log's
/// head or below its first position (auditor20: one at 5000 was sealed "up to position 5000",
/// and the next real event was blamed; one at 0 was left out of exports unseen).
fn stray_or_misplaced(conn: &Connection, log_head: Position) -> Result<Option<Break>, StoreError> {
    let stray: Option<(i64, i64, i64, Option<String>)> = conn
        .query_row(
            "SELECT p.position, p.version, p.stream_id, s.name FROM pruned p \
             LEFT JOIN streams s ON s.id = p.stream_id \
             WHERE s.id IS NULL OR s.deleted_at IS NULL ORDER BY p.position LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(fail)?;
    if let Some((at, version, id, name)) = stray {
        let exists = name.is_some();
        let stream = name.unwrap_or_else(|| format!("#{id}"));
        let at = position(at.max(0));
        return Ok(Some(crate::verify::stray_hash_row(stream, exists, version, at)));
    }
    let head = i64::try_from(log_head.commit()).unwrap_or(i64::MAX);
    let misplaced: Option<(i64, i64, i64, Option<String>)> = conn
        .query_row(
            "SELECT p.position, p.version, p.stream_id, s.name FROM pruned p \
             LEFT JOIN streams s ON s.id = p.stream_id \
             WHERE p.position > ?1 OR p.position < 1 ORDER BY p.position LIMIT 1",
            [head],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(fail)?;
    Ok(misplaced.map(|(at, version, id, name)| {
        let stream = name.unwrap_or_else(|| format!("#{id}"));
        if at < 1 {
            return Break {
                stream,
                version: u64::try_from(version).ok(),
                position: None,
                reason: format!(
                    "a hash row at position {at}, before the log's first (1): pop writes none \
                     there, so the row was moved or added outside pop"
                ),
            };
        }
        crate::verify::hash_row_past_head(stream, version, position(at), log_head)
    }))
}

/// Every check of the hash rows of deleted streams `pop verify` makes, without walking the
/// events: [`stray_or_misplaced`], then each deleted stream's rows against its tombstone and in
/// order ([`crate::verify::check_pruned`]). What `pop export` runs before it signs (auditor21:
/// it signed logs verify called tampered, and their import verified intact).
pub(crate) fn hash_rows_break(conn: &Connection) -> Result<Option<Break>, StoreError> {
    let head: Option<i64> = conn
        .query_row("SELECT head FROM log WHERE id = 1", [], |r| r.get(0))
        .optional()
        .map_err(fail)?;
    let log_head = position(head.unwrap_or(0).max(0));
    if let Some(found) = stray_or_misplaced(conn, log_head)? {
        return Ok(Some(found));
    }
    let mut tombstones = Vec::new();
    {
        let mut q = conn
            .prepare("SELECT name, version, head_hash FROM streams WHERE deleted_at IS NOT NULL")
            .map_err(fail)?;
        let rows = q
            .query_map([], |r| {
                Ok(StreamRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    deleted: true,
                    head: r.get(2)?,
                })
            })
            .map_err(fail)?;
        for row in rows {
            tombstones.push(row.map_err(fail)?);
        }
    }
    let mut tails: HashMap<String, crate::verify::PrunedTail, FastHash> = HashMap::default();
    {
        let mut q = conn
            .prepare(
                "SELECT s.name, p.version, p.chain, p.position FROM pruned p \
                 JOIN streams s ON s.id = p.stream_id ORDER BY p.position",
            )
            .map_err(fail)?;
        let mut rows = q.query([]).map_err(fail)?;
        while let Some(r) = rows.next().map_err(fail)? {
            let name: String = r.get(0).map_err(fail)?;
            let link = r.get_ref(2).map_err(fail)?.as_blob_or_null().map_err(|e| fail(e.into()))?;
            let at = position(r.get::<_, i64>(3).map_err(fail)?.max(0));
            tails.entry(name).or_default().add(r.get(1).map_err(fail)?, link, at);
        }
    }
    let report = crate::verify::check_pruned(Verification::default(), &tombstones, &tails);
    match report.first_break {
        Some(found) => Ok(Some(found)),
        // Above the newest checkpoint: below it, the checkpoints' own check names what is
        // gone more precisely (the stream), as verify's does.
        None => {
            let sealed = crate::sqlite::seal::checkpoints(conn, true)?
                .first()
                .and_then(|c| serde_json::from_slice::<crate::commitment::Checkpoint>(&c.body).ok())
                .map_or(0, |c| c.position.commit());
            missing_entries(conn, log_head, sealed)
        }
    }
}

/// The events after position `after` (the newest checkpoint's; `None`: none): where they
/// start, and the commit times of the first and the last.
fn unsealed(
    conn: &Connection,
    after: Option<Position>,
) -> Result<Option<crate::verify::Unsealed>, StoreError> {
    let after = after.map_or(0, |p| i64::try_from(p.commit()).unwrap_or(i64::MAX));
    let row = conn
        .query_row(
            "SELECT min(position), \
             (SELECT recorded_at FROM events WHERE position > ?1 ORDER BY position LIMIT 1), \
             (SELECT recorded_at FROM events ORDER BY position DESC LIMIT 1) \
             FROM events WHERE position > ?1",
            [after],
            |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .map_err(fail)?;
    let micros = chrono::DateTime::from_timestamp_micros;
    Ok(match row {
        (Some(from), Some(first), Some(last)) => match (micros(first), micros(last)) {
            (Some(first), Some(last)) => {
                Some(crate::verify::Unsealed { from: position(from), first, last })
            }
            _ => None,
        },
        _ => None,
    })
}

/// What the scan answers: the events it handed out, and the break it found itself (an event of
/// an unknown stream id) with its ordinal.
type Scanned = (u64, Option<(u64, Break)>);

/// One entry of the log for the walk over the checkpoints: position, its stream (the index of
/// its row, or the stream id without a row), version and chain link.
struct LogItem {
    position: Position,
    stream: Result<usize, i64>,
    version: u64,
    link: Option<Hash>,
}

/// Walks the log's entries over the checkpoints as batches arrive, in global order.
fn walk_log(
    mut log: LogWalker,
    streams: &[(i64, StreamRow)],
    inbox: Receiver<Vec<LogItem>>,
) -> LogWalker {
    for batch in inbox.iter() {
        for e in batch {
            if log.stopped() {
                break;
            }
            let unknown;
            let stream = match e.stream {
                Ok(i) => streams[i].1.name.as_str(),
                Err(id) => {
                    unknown = format!("#{id}");
                    unknown.as_str()
                }
            };
            log.entry_parts(e.position, stream, e.version, e.link);
        }
    }
    log
}

/// Stream row indexes by stream id: a table when the ids are dense (they are rowids handed
/// out 1, 2, 3…), else a map.
enum Ids {
    Dense(Vec<u32>),
    Sparse(HashMap<i64, usize>),
}

impl Ids {
    fn new(streams: &[(i64, StreamRow)]) -> Ids {
        let max = streams.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let dense = usize::try_from(max).ok().filter(|m| *m <= 4 * streams.len() + 1024);
        match (dense, u32::try_from(streams.len())) {
            (Some(max), Ok(_)) if streams.iter().all(|(id, _)| *id >= 0) => {
                let mut table = vec![u32::MAX; max + 1];
                for (i, (id, _)) in streams.iter().enumerate() {
                    // Both fit: checked above.
                    table[*id as usize] = i as u32;
                }
                Ids::Dense(table)
            }
            _ => Ids::Sparse(streams.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect()),
        }
    }

    fn get(&self, id: i64) -> Option<usize> {
        match self {
            Ids::Dense(table) => usize::try_from(id)
                .ok()
                .and_then(|i| table.get(i))
                .filter(|i| **i != u32::MAX)
                .map(|i| *i as usize),
            Ids::Sparse(map) => map.get(&id).copied(),
        }
    }
}

/// The scan in log order (the table's own order: sequential reads): each event copied to the
/// shard of its stream, and each event and each pruned hash row, merged by position, to the
/// walk over the checkpoints.
#[allow(clippy::too_many_arguments)]
fn scan(
    conn: &Connection,
    streams: &[(i64, StreamRow)],
    imported_to: i64,
    log_out: &SyncSender<Vec<LogItem>>,
    shards: &[SyncSender<Batch>],
    recycled: &Receiver<Batch>,
    first_break: &AtomicU64,
    tails: &mut HashMap<usize, crate::verify::PrunedTail, FastHash>,
) -> Result<Scanned, StoreError> {
    let ids = Ids::new(streams);
    let mut q = conn
        .prepare(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, \
             recorded_at, chain FROM events ORDER BY position",
        )
        .map_err(fail)?;
    let mut p = conn
        .prepare("SELECT position, stream_id, version, chain FROM pruned ORDER BY position")
        .map_err(fail)?;
    let mut rows = q.query([]).map_err(fail)?;
    let mut pruned = p.query([]).map_err(fail)?;
    let pruned_entry = |r: &rusqlite::Row<'_>| -> Result<PrunedRow, StoreError> {
        let link = r.get_ref(3).map_err(fail)?.as_blob_or_null().map_err(|e| fail(e.into()))?;
        Ok((
            r.get(0).map_err(fail)?,
            r.get(1).map_err(fail)?,
            r.get(2).map_err(fail)?,
            link.and_then(|c| Hash::try_from(c).ok()),
        ))
    };
    let mut next_pruned = pruned.next().map_err(fail)?.map(pruned_entry).transpose()?;
    let mut log_batch: Vec<LogItem> = Vec::with_capacity(BATCH);
    let send_log = |log_batch: &mut Vec<LogItem>| -> Result<(), StoreError> {
        let full = std::mem::replace(log_batch, Vec::with_capacity(BATCH));
        log_out.send(full).map_err(|_| StoreError::Corrupt("a verification thread stopped".into()))
    };
    let feed_pruned = |up_to: Option<i64>,
                       next: &mut Option<PrunedRow>,
                       pruned: &mut rusqlite::Rows<'_>,
                       log_batch: &mut Vec<LogItem>,
                       tails: &mut HashMap<usize, crate::verify::PrunedTail, FastHash>|
     -> Result<(), StoreError> {
        while let Some((pos, stream_id, version, link)) =
            next.take_if(|n| up_to.is_none_or(|u| n.0 < u))
        {
            // Each deleted stream's hash rows, for `check_pruned` (one read of the table).
            if let Some(i) = ids.get(stream_id) {
                tails.entry(i).or_default().add(
                    version,
                    link.as_ref().map(|h| &h[..]),
                    position(pos),
                );
            }
            log_batch.push(LogItem {
                position: position(pos),
                stream: ids.get(stream_id).ok_or(stream_id),
                version: u64::try_from(version).unwrap_or(u64::MAX),
                link,
            });
            if log_batch.len() >= BATCH {
                send_log(log_batch)?;
            }
            *next = pruned.next().map_err(fail)?.map(pruned_entry).transpose()?;
        }
        Ok(())
    };
    let mut batches: Vec<Batch> = (0..shards.len()).map(|_| Batch::new()).collect();
    // Batches go round: the scan fills them, the shards empty them and hand them back (so the
    // memory is reused, not allocated and faulted in again). The scan waits for one when all
    // are in flight.
    let mut created = shards.len();
    let mut send = |shard: usize, batches: &mut Vec<Batch>| -> Result<(), StoreError> {
        let fresh = match recycled.try_recv() {
            Ok(b) => b,
            Err(_) if created < shards.len() * (AHEAD + 2) => {
                created += 1;
                Batch::new()
            }
            Err(_) => recycled.recv().unwrap_or_else(|_| Batch::new()),
        };
        let full = std::mem::replace(&mut batches[shard], fresh);
        shards[shard]
            .send(full)
            .map_err(|_| StoreError::Corrupt("a verification thread stopped".into()))
    };
    let mut ordinal = 0u64;
    let mut scan_break = None;
    // The commit time and position of the event before, in log order.
    let mut before: Option<(i64, i64)> = None;
    while let Some(r) = rows.next().map_err(fail)? {
        if ordinal > first_break.load(Ordering::Relaxed) {
            // A shard found a break before this event: nothing after it counts.
            break;
        }
        let pos: i64 = r.get(0).map_err(fail)?;
        feed_pruned(Some(pos), &mut next_pruned, &mut pruned, &mut log_batch, tails)?;
        let stream_id: i64 = r.get(1).map_err(fail)?;
        let version: i64 = r.get(2).map_err(fail)?;
        let Some(index) = ids.get(stream_id) else {
            first_break.fetch_min(ordinal, Ordering::Relaxed);
            scan_break = Some((
                ordinal,
                Break {
                    stream: format!("#{stream_id}"),
                    version: u64::try_from(version).ok(),
                    position: Some(position(pos)),
                    reason: "an event of a stream the log does not know".into(),
                },
            ));
            break;
        };
        let blob = |i: usize| r.get_ref(i).map_err(fail)?.as_blob().map_err(|e| fail(e.into()));
        let event_type = r.get_ref(3).map_err(fail)?.as_str().map_err(|e| fail(e.into()))?;
        let (data, metadata) = (blob(5)?, blob(6)?);
        let chain = r.get_ref(8).map_err(fail)?.as_blob_or_null().map_err(|e| fail(e.into()))?;
        let shard = index % shards.len();
        let batch = &mut batches[shard];
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(event_type.as_bytes());
        batch.bytes.extend_from_slice(metadata);
        batch.bytes.extend_from_slice(data);
        if let Some(c) = chain {
            batch.bytes.extend_from_slice(c);
        }
        // A position below 1 is out of order with any stream's first event.
        let at = position(pos);
        // One writer stamps the embedded store's commits with a clock that never goes back, so
        // commit times rise with positions across the whole log (auditor23: an event added to
        // a new stream, or to one stream between two of another's, dated before the events
        // around it, passed the check within its stream).
        let recorded_at: i64 = r.get(7).map_err(fail)?;
        // Said after the event is handed to its shard, so a break of its own stream's walk at
        // the same event (a more precise one) is the one reported.
        let backdated = before.filter(|(_, was)| pos > imported_to && recorded_at < *was).map(
            |(was_at, was)| {
                let time = |micros: i64| {
                    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
                        || micros.to_string(),
                        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    )
                };
                Break {
                    stream: streams[index].1.name.clone(),
                    version: u64::try_from(version).ok(),
                    position: Some(at),
                    reason: format!(
                        "committed at {}, before the event before it in the log (position {}, {}): \
                     the embedded store's commit times rise with its positions (after what an \
                     import brought, which keeps its source's times), so this event was written \
                     or its time changed outside pop",
                        time(recorded_at),
                        position(was_at),
                        time(was)
                    ),
                }
            },
        );
        before = Some((pos, recorded_at));
        let version_u = u64::try_from(version).unwrap_or(u64::MAX);
        batch.rows.push(Copied {
            ordinal,
            stream: index,
            version,
            position: at,
            schema_version: r.get(4).map_err(fail)?,
            recorded_at,
            start,
            type_len: event_type.len(),
            metadata_len: metadata.len(),
            data_len: data.len(),
            chain_len: chain.map(<[u8]>::len),
        });
        if batch.rows.len() == BATCH {
            send(shard, &mut batches)?;
        }
        log_batch.push(LogItem {
            position: at,
            stream: Ok(index),
            version: version_u,
            link: chain.and_then(|c| Hash::try_from(c).ok()),
        });
        if log_batch.len() >= BATCH {
            send_log(&mut log_batch)?;
        }
        if let Some(b) = backdated {
            first_break.fetch_min(ordinal, Ordering::Relaxed);
            scan_break = Some((ordinal, b));
            break;
        }
        ordinal += 1;
    }
    for shard in 0..shards.len() {
        if !batches[shard].rows.is_empty() {
            send(shard, &mut batches)?;
        }
    }
    if scan_break.is_none() && first_break.load(Ordering::Relaxed) == u64::MAX {
        feed_pruned(None, &mut next_pruned, &mut pruned, &mut log_batch, tails)?;
    }
    if !log_batch.is_empty() {
        send_log(&mut log_batch)?;
    }
    Ok((ordinal, scan_break))
}
