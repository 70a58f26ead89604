//! Verification of a PostgreSQL store ([`verify`]): reads the rows in a read-only
//! repeatable-read transaction (one snapshot, so it may run beside live writers: each group
//! writes its events and stream rows in one transaction) and feeds them to the one rule
//! ([`crate::verify::Walker`]) and to the walk over the signed checkpoints
//! ([`crate::commitment::LogWalker`]). The log head is the highest position any stream row
//! records (tombstones keep theirs).
//!
//! First one pass over the log in its global order feeds both walks (each stream's events
//! come in version order there when the log is intact): read as binary `COPY` by a
//! connection per core and parsed in place, the rows' digests computed on a thread per core
//! while the next rows are fetched. An intact log gives the same report in
//! any order, so that pass answers it. When it finds anything else (a break or an error), the
//! report comes from the reference walks, in the same snapshot: every event in (stream,
//! version) order then every stream row, and, on a second connection that joins the snapshot,
//! every entry in log order to the checkpoints' walk — so the break reported is the first by
//! (stream, version), then the checkpoints', exactly as a walk in that order finds it.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, pin_mut};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::copy::{CopyParser, Fields, Span, malformed};
use super::schema::PG_SCHEMA_VERSION;
use super::{PgOptions, pg_config};
use crate::commitment::{LogWalker, Trust};
use crate::digest::{DigestInput, Hash, data_hash, event_digest_of_bytes};
use crate::verify::{Break, CheckpointReport, EventRow, FastHash, StreamRow, Verification, Walker};
use crate::{Position, StoreError};

/// Feeds the log walk one entry of a row laid out as `seal::ENTRIES_SQL` (tx_id, seq, stream,
/// version, link), the stream borrowed from the row as `seal::entry_from` reads it; whether the
/// walk goes on.
fn log_entry(log: &mut LogWalker, r: &Row) -> Result<bool, StoreError> {
    let version: i64 = r.try_get(3).map_err(fail)?;
    let link: Option<&[u8]> = r.try_get(4).map_err(fail)?;
    Ok(log.entry_parts(
        position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?),
        r.try_get(2).map_err(fail)?,
        u64::try_from(version).unwrap_or(u64::MAX),
        link.and_then(|l| Hash::try_from(l).ok()),
    ))
}

fn fail(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend("verifying the PostgreSQL log", e)
}

fn position(tx_id: i64, seq: i64) -> Position {
    match (u64::try_from(tx_id), u64::try_from(seq)) {
        (Ok(tx), Ok(seq)) => Position::new(tx, seq),
        // Out of order with any real event: the walker reports it.
        _ => Position::START,
    }
}

/// Verifies the store in the database at `url` (a URL as `pop serve --store` takes it). Opens
/// connections of its own, writes nothing, migrates nothing: a database whose schema is
/// not this build's is an error, not a break.
pub async fn verify(url: &str) -> Result<Verification, StoreError> {
    verify_with(url, None).await
}

/// [`verify`], and every signed checkpoint against `key` ([`crate::commitment`]; without a
/// key their signatures are not checked).
///
/// One pass in log order answers an intact log (see the module). Anything else is answered by
/// the reference walks in the same snapshot: two connections read it
/// (`pg_export_snapshot` / `SET TRANSACTION SNAPSHOT`) and run the two walks at once, each on
/// its own task: the walk in (stream, version) order on the first, the walk over the
/// checkpoints in log order on the second. The report is the one the walks give one after
/// the other: the per-stream walk's break first, and the checkpoints' report only when the
/// streams held.
pub async fn verify_with(
    url: &str,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    verify_trusting(url, key.into()).await
}

/// [`verify_with`], trusting a witnessed checkpoint as well ([`Trust`]).
pub async fn verify_trusting(url: &str, trust: Trust) -> Result<Verification, StoreError> {
    // A whole-log read may take longer than the store's per-statement bound: none here.
    let options = PgOptions {
        statement_timeout: Duration::ZERO,
        // An export writing to a slow pipe or an import reading one waits between statements.
        idle_transaction_timeout: Duration::ZERO,
        ..PgOptions::default()
    };
    let config = pg_config(url, &options)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(fail)?;
    let connection = tokio::spawn(connection);
    let result = run(&mut client, &config, trust).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn run(
    client: &mut tokio_postgres::Client,
    config: &tokio_postgres::Config,
    trust: Trust,
) -> Result<Verification, StoreError> {
    let tx = super::snapshot_transaction(client).await.map_err(fail)?;
    // Which of pop's tables the connection's search path finds (as every other query of pop's
    // does: review-s37 found `current_schema()` alone reporting an intact store tampered).
    let tables: Vec<String> = tx
        .query(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NOT NULL",
            &[&super::schema::TABLES],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    if tables.is_empty() {
        return Err(StoreError::Corrupt(
            "the database holds none of pop's tables: is this the store's database (and its \
             search path)?"
                .to_owned(),
        ));
    }
    if tables.iter().any(|t| t == "pop_schema") {
        let rows = tx.query("SELECT version FROM pop_schema", &[]).await.map_err(fail)?;
        let [row] = rows.as_slice() else {
            // pop keeps exactly one row there (review-s37b: none or two was "could not check").
            return Ok(crate::verify::Break::of_store(format!(
                "the table pop_schema holds {} rows, where pop keeps one: it was edited \
                 outside pop",
                rows.len()
            ))
            .alone());
        };
        let found: i32 = row.try_get(0).map_err(fail)?;
        if found <= 0 {
            // Never committed by pop: each migration writes its version in its own
            // transaction (auditor54: `SET version = 0` was told to migrate, exit 1).
            return Ok(crate::verify::Break::of_store(format!(
                "the table pop_schema says version {found} beside pop's tables: pop never \
                 commits that, so it was changed outside pop"
            ))
            .alone());
        }
        if found < super::schema::CHAIN_STEP as i32 {
            let found = u32::try_from(found).unwrap_or(0);
            return Ok(
                crate::verify::Break::of_store(crate::verify::unchained_schema(found)).alone()
            );
        }
        if found != PG_SCHEMA_VERSION as i32 {
            return Err(StoreError::Corrupt(format!(
                "the database's pop schema is version {found} and this build verifies version \
                 {PG_SCHEMA_VERSION}; {}",
                if found < PG_SCHEMA_VERSION as i32 {
                    "start `pop serve` of this build on it once to migrate"
                } else {
                    "verify it with the build that wrote it"
                }
            )));
        }
    }
    // The schema's version is this build's (or its record is gone): every table must be there.
    if let Some(missing) = crate::verify::Break::missing_tables(super::schema::TABLES, &tables) {
        return Ok(missing);
    }
    // Every read here walks a whole table in an index's order: sorting it instead spills the
    // log to disk (work_mem) and costs several times the index scan. No JIT: the costs of a
    // whole-log read would turn it on, for ~0.2 s of compiling.
    tx.batch_execute("SET LOCAL enable_sort = off; SET LOCAL jit = off").await.map_err(fail)?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(fail)?;
    // A snapshot id is hex digits and dashes (`SET` takes no parameters).
    if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(StoreError::Corrupt(format!("an unexpected snapshot id {snapshot:?}")));
    }
    if let Ok(report) = one_pass(&tx, config, &snapshot, trust.clone()).await
        && report.is_intact()
    {
        let report = with_pruned_checked(&tx, report).await?;
        return with_unsealed(&tx, report).await;
    }
    let (mut second, second_connection) = config.connect(NoTls).await.map_err(fail)?;
    let second_connection = tokio::spawn(second_connection);
    // The walk over the checkpoints, on the second connection in the same snapshot; `joined`
    // says when it took the snapshot (this transaction must stay open until then).
    let (joined, on_snapshot) = tokio::sync::oneshot::channel::<()>();
    let checkpoints = tokio::spawn(async move {
        let tx = join_snapshot(&mut second, &snapshot).await?;
        let _ = joined.send(());
        log_walk(&tx, trust).await
    });
    // Until the second connection took the snapshot, this transaction is what keeps it.
    let _ = on_snapshot.await;
    let report = stream_walk(&tx).await;
    let log = checkpoints.await.map_err(|e| StoreError::backend("the checkpoint walk", e));
    let _ = second_connection.await;
    let report = report?;
    if !report.is_intact() {
        return Ok(report);
    }
    let report = with_pruned_checked(&tx, report.with_checkpoints(log??)).await?;
    with_unsealed(&tx, report).await
}

/// [`crate::verify::check_pruned`]: every deleted stream's hash rows against its tombstone,
/// read in the verification's snapshot.
pub(crate) async fn with_pruned_checked(
    tx: &tokio_postgres::Transaction<'_>,
    report: Verification,
) -> Result<Verification, StoreError> {
    if !report.is_intact() {
        return Ok(report);
    }
    // The tombstones only (the stream walk read every stream row; these are few).
    let mut tombstones = Vec::new();
    for r in tx
        .query("SELECT name, version, head_hash FROM pop_streams WHERE deleted_at IS NOT NULL", &[])
        .await
        .map_err(fail)?
    {
        tombstones.push(StreamRow {
            name: r.try_get(0).map_err(fail)?,
            version: r.try_get(1).map_err(fail)?,
            deleted: true,
            head: r.try_get(2).map_err(fail)?,
        });
    }
    let mut tails: std::collections::HashMap<String, crate::verify::PrunedTail, FastHash> =
        Default::default();
    // One row per stream (the table may hold millions of hash rows).
    let rows = tx
        .query(
            "SELECT stream, count(*), max(version), \
             (array_agg(chain ORDER BY version DESC))[1] FROM pop_pruned GROUP BY stream",
            &[],
        )
        .await
        .map_err(fail)?;
    for r in rows {
        let count: i64 = r.try_get(1).map_err(fail)?;
        let link: Option<&[u8]> = r.try_get(3).map_err(fail)?;
        let tail = crate::verify::PrunedTail {
            count: u64::try_from(count).unwrap_or(0),
            last_version: r.try_get(2).map_err(fail)?,
            last_link: link.and_then(|l| Hash::try_from(l).ok()),
            disorder: None,
        };
        tails.insert(r.try_get(0).map_err(fail)?, tail);
    }
    // A stream's hash rows rise in version with their positions (see `PrunedTail::disorder`).
    let disordered = tx
        .query_opt(
            "SELECT stream, version, tx_id, seq FROM ( \
               SELECT stream, version, tx_id, seq, max(version) OVER (PARTITION BY stream \
                 ORDER BY tx_id, seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before \
               FROM pop_pruned) t \
             WHERE before >= version ORDER BY tx_id, seq LIMIT 1",
            &[],
        )
        .await
        .map_err(fail)?;
    if let Some(r) = disordered {
        let stream: String = r.try_get(0).map_err(fail)?;
        let at = position(r.try_get(2).map_err(fail)?, r.try_get(3).map_err(fail)?);
        if let Some(tail) = tails.get_mut(&stream) {
            tail.disorder = Some((r.try_get(1).map_err(fail)?, at));
        }
    }
    let report = crate::verify::check_pruned(report, &tombstones, &tails);
    if !report.is_intact() {
        return Ok(report);
    }
    // Hash rows are kept only for the streams pop deleted (see the embedded store's check).
    let stray = tx
        .query_opt(
            "SELECT p.tx_id, p.seq, p.version, p.stream, s.name IS NOT NULL FROM pop_pruned p \
             LEFT JOIN pop_streams s ON s.name = p.stream \
             WHERE s.name IS NULL OR s.deleted_at IS NULL ORDER BY p.tx_id, p.seq LIMIT 1",
            &[],
        )
        .await
        .map_err(fail)?;
    if let Some(r) = stray {
        let at = position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
        let (version, name, known) =
            (r.try_get(2).map_err(fail)?, r.try_get(3).map_err(fail)?, r.try_get(4).map_err(fail)?);
        return Ok(crate::verify::stray_hash_row(name, known, version, at).alone());
    }
    // Nothing of the log lies past the cluster's transaction ids (a hash row moved to
    // transaction 999999 passed, and then every `pop serve` refused to start: auditor20).
    // When events are past them too, the whole database came from a logical dump restored
    // into another cluster: not an edit, and `pop serve` says what to do (review-s38).
    let restored = tx
        .query_one(
            "SELECT (SELECT max(tx_id) FROM pop_events) \
               >= pg_snapshot_xmax(pg_current_snapshot())::text::int8",
            &[],
        )
        .await
        .map_err(fail)?;
    if restored.try_get::<_, Option<bool>>(0).map_err(fail)? == Some(true) {
        return Err(StoreError::Unusable(
            "the log's events are past this cluster's transaction ids: the database was \
             restored from a logical dump (pg_dump) into another cluster, so it cannot be \
             verified here; `pop serve` on it says how to move it (a physical backup, or `pop \
             export` and `pop import`)"
                .into(),
        ));
    }
    let past = tx
        .query_opt(
            "SELECT p.tx_id, p.seq, p.version, p.stream, n.next FROM pop_pruned p, \
               (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS next) n \
             WHERE p.tx_id >= n.next ORDER BY p.tx_id, p.seq LIMIT 1",
            &[],
        )
        .await
        .map_err(fail)?;
    if let Some(r) = past {
        let at = position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
        let (version, name) = (r.try_get(2).map_err(fail)?, r.try_get(3).map_err(fail)?);
        let next: i64 = r.try_get(4).map_err(fail)?;
        let head = format!("the cluster has not reached transaction {next}");
        return Ok(crate::verify::hash_row_past_head(name, version, at, head).alone());
    }
    Ok(report)
}

/// [`Verification::with_unsealed`]: the events past the newest checkpoint, read in the
/// verification's snapshot.
async fn with_unsealed(
    tx: &tokio_postgres::Transaction<'_>,
    report: Verification,
) -> Result<Verification, StoreError> {
    if !report.is_intact() || report.checkpoints.unsealed_entries == 0 {
        return Ok(report);
    }
    let (tx_id, seq) = report.checkpoints.last.map_or((-1, -1), |(_, p, _)| {
        let part = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        (part(p.commit()), part(p.prepare()))
    });
    let first = tx
        .query_opt(
            "SELECT tx_id, seq, recorded_at FROM pop_events \
             WHERE (tx_id, seq) > ($1, $2) ORDER BY tx_id, seq LIMIT 1",
            &[&tx_id, &seq],
        )
        .await
        .map_err(fail)?;
    let last = tx
        .query_opt("SELECT recorded_at FROM pop_events ORDER BY tx_id DESC, seq DESC LIMIT 1", &[])
        .await
        .map_err(fail)?;
    let micros = chrono::DateTime::from_timestamp_micros;
    let unsealed = match (first, last) {
        (Some(f), Some(l)) => {
            let (first, last): (i64, i64) =
                (f.try_get(2).map_err(fail)?, l.try_get(0).map_err(fail)?);
            match (micros(first), micros(last)) {
                (Some(first), Some(last)) => Some(crate::verify::Unsealed {
                    from: position(f.try_get(0).map_err(fail)?, f.try_get(1).map_err(fail)?),
                    first,
                    last,
                }),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(report.with_unsealed(unsealed))
}

/// A read-only transaction on `client` in the exported `snapshot` (checked to be an id).
async fn join_snapshot<'c>(
    client: &'c mut tokio_postgres::Client,
    snapshot: &str,
) -> Result<tokio_postgres::Transaction<'c>, StoreError> {
    let tx = super::snapshot_transaction(client).await.map_err(fail)?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT '{snapshot}'; SET LOCAL enable_sort = off; SET LOCAL jit = off"
    ))
    .await
    .map_err(fail)?;
    Ok(tx)
}

/// Every stream row (in name order) and the log head they record.
async fn stream_rows(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<(Vec<StreamRow>, Position), StoreError> {
    let mut streams = Vec::new();
    let mut log_head = Position::START;
    for r in tx
        .query(
            "SELECT name, version, deleted_at IS NOT NULL, head_hash, last_tx, last_seq \
             FROM pop_streams ORDER BY name",
            &[],
        )
        .await
        .map_err(fail)?
    {
        let last: (Option<i64>, Option<i64>) =
            (r.try_get(4).map_err(fail)?, r.try_get(5).map_err(fail)?);
        if let (Some(tx_id), Some(seq)) = last {
            log_head = log_head.max(position(tx_id, seq));
        }
        streams.push(StreamRow {
            name: r.try_get(0).map_err(fail)?,
            version: r.try_get(1).map_err(fail)?,
            deleted: r.try_get(2).map_err(fail)?,
            head: r.try_get(3).map_err(fail)?,
        });
    }
    Ok((streams, log_head))
}

/// Every stream row, then every event in (stream, version) order, through the [`Walker`].
async fn stream_walk(tx: &tokio_postgres::Transaction<'_>) -> Result<Verification, StoreError> {
    let (streams, log_head) = stream_rows(tx).await?;
    let mut walker = Walker::new(Some(log_head));
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tx
        .query_raw(
            "SELECT tx_id, seq, stream, version, event_type, schema_version, data, metadata, \
             recorded_at, chain FROM pop_events ORDER BY stream, version",
            no_params,
        )
        .await
        .map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r.map_err(fail)?;
        let schema_version: i64 = r.try_get(5).map_err(fail)?;
        let row = EventRow {
            stream: r.try_get(2).map_err(fail)?,
            version: r.try_get(3).map_err(fail)?,
            position: position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?),
            event_type: r.try_get(4).map_err(fail)?,
            // Out of range: recomputes to another digest, so the walker reports it.
            schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
            recorded_at: r.try_get(8).map_err(fail)?,
            metadata: r.try_get(7).map_err(fail)?,
            data: r.try_get(6).map_err(fail)?,
            chain: r.try_get(9).map_err(fail)?,
        };
        if !walker.event(&row) {
            break;
        }
    }
    Ok(walker.finish(&streams))
}

/// The binary COPY of the entries of the log with a transaction id in `[from, to)` (or from
/// `from` on, in the last chunk) in global order: the events with their columns, and the hash
/// rows of deleted streams (`pruned`, their event columns NULL). The bounds stay outside the
/// `UNION ALL`: the planner pushes them into both scans and still merges the two primary keys
/// in order (written inside each branch, it sorts instead). `COPY` takes no parameters: the
/// bounds are typed literals (a bare `-9223372036854775808` would be a numeric, and compare
/// `tx_id` as one, off the index).
fn copy_chunk_sql(from: i64, to: Option<i64>) -> String {
    let upper = to.map_or_else(String::new, |to| format!(" AND tx_id < '{to}'::int8"));
    format!(
        "COPY (SELECT tx_id, seq, stream, version, chain, event_type, schema_version, data,
                      metadata, recorded_at, pruned FROM (
                   SELECT tx_id, seq, stream, version, chain, event_type, schema_version, data,
                          metadata, recorded_at, false AS pruned
                   FROM pop_events
                   UNION ALL
                   SELECT tx_id, seq, stream, version, chain, NULL, NULL, NULL, NULL, NULL, true
                   FROM pop_pruned
               ) e WHERE tx_id >= '{from}'::int8{upper} ORDER BY tx_id, seq)
         TO STDOUT (FORMAT binary)"
    )
}

/// COPY messages handed on at once to a digest thread (one tuple each, as PostgreSQL sends
/// them): few hand-offs between threads.
const BATCH: usize = 4096;
/// Emptied row batches a digest thread keeps for reuse: as many as can be in flight to and
/// in the walk (its `done` channel's 4, the one being walked, one more), no more.
const SPARE_BATCHES: usize = 6;

/// About how many entries one chunk of the log holds (one `COPY` of one reader).
const CHUNK_ENTRIES: f64 = 16_384.0;

/// The log cut into chunks by transaction id, in order: each `[from, to)` (`to` is `None` on
/// the last). Cut evenly over the ids in use, about [`CHUNK_ENTRIES`] each by the planner's
/// count of events (or one per id without one); at least one per reader, so they all work.
async fn chunks(
    tx: &tokio_postgres::Transaction<'_>,
    readers: usize,
) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
    let r = tx
        .query_one(
            "SELECT least((SELECT min(tx_id) FROM pop_events), (SELECT min(tx_id) FROM pop_pruned)),
                    greatest((SELECT max(tx_id) FROM pop_events),
                             (SELECT max(tx_id) FROM pop_pruned)),
                    (SELECT reltuples::float8 FROM pg_class WHERE oid = 'pop_events'::regclass)",
            &[],
        )
        .await
        .map_err(fail)?;
    let (min, max): (Option<i64>, Option<i64>) =
        (r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
    let counted: Option<f64> = r.try_get(2).map_err(fail)?;
    let (Some(min), Some(max)) = (min, max) else { return Ok(vec![(i64::MIN, None)]) };
    let ids = i128::from(max) - i128::from(min) + 1;
    let entries = counted.filter(|n| *n > 0.0).unwrap_or(ids as f64);
    let n = ((entries / CHUNK_ENTRIES).ceil() as i128).clamp(readers as i128, 4096).min(ids);
    let mut cuts = vec![(i64::MIN, None)];
    for i in 1..n {
        let at = i64::try_from(i128::from(min) + ids * i / n).unwrap_or(max);
        if let Some(last) = cuts.last_mut() {
            last.1 = Some(at);
        }
        cuts.push((at, None));
    }
    Ok(cuts)
}

/// What a reader hands on: a batch, or the end of its chunk.
enum Piece<T> {
    Rows(T),
    End,
}

/// One reader: a connection of its own that joins the exported `snapshot`, `COPY`s `mine`
/// (chunks, in order) and hands each chunk's messages on to `out` in batches, each chunk
/// followed by its end; stops early when `out` is closed (the walk stopped). The connection
/// is driven in this same task, so a message read wakes no other thread.
async fn read_chunks(
    config: tokio_postgres::Config,
    snapshot: String,
    mine: Vec<(i64, Option<i64>)>,
    out: tokio::sync::mpsc::Sender<Piece<Vec<Bytes>>>,
) -> Result<(), StoreError> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(fail)?;
    let mut connection = std::pin::pin!(connection);
    let mut closed = false;
    let result = {
        let copies = std::pin::pin!(copy_chunks(&mut client, &snapshot, mine, &out));
        tokio::select! {
            biased;
            ended = &mut connection => {
                closed = true;
                Err(match ended {
                    Err(e) => fail(e),
                    Ok(()) => StoreError::Corrupt("a verifying connection closed early".into()),
                })
            }
            done = copies => done,
        }
    };
    drop(client);
    if !closed {
        let _ = connection.await;
    }
    result
}

/// [`read_chunks`]' reading, on its connection.
async fn copy_chunks(
    client: &mut tokio_postgres::Client,
    snapshot: &str,
    mine: Vec<(i64, Option<i64>)>,
    out: &tokio::sync::mpsc::Sender<Piece<Vec<Bytes>>>,
) -> Result<(), StoreError> {
    let tx = join_snapshot(client, snapshot).await?;
    for (from, to) in mine {
        let copy = tx.copy_out(copy_chunk_sql(from, to).as_str()).await.map_err(fail)?;
        pin_mut!(copy);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(message) = copy.next().await {
            batch.push(message.map_err(fail)?);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out.send(Piece::Rows(full)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() && out.send(Piece::Rows(batch)).await.is_err() {
            return Ok(());
        }
        if out.send(Piece::End).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The columns of an event's row (the hash row of a deleted stream has none).
struct EventSpans {
    event_type: Span,
    schema_version: i64,
    data: Span,
    metadata: Span,
    recorded_at: i64,
}

/// One entry of the log as the one pass reads it: a tuple of the binary COPY of
/// [`copy_chunk_sql`], its fields located in place (nothing copied).
struct LogRow {
    raw: Bytes,
    tx_id: i64,
    seq: i64,
    version: i64,
    stream: Span,
    chain: Option<Span>,
    /// `None`: a deleted stream's hash row.
    event: Option<EventSpans>,
    /// The event's digest, computed on the reader's digest thread.
    digest: Option<Hash>,
}

/// The columns of [`copy_chunk_sql`].
const LOG_COLUMNS: usize = 11;

impl LogRow {
    /// The row of one whole tuple (`fields`: where each field lies, `None` for NULL).
    fn parse(raw: Bytes, fields: &Fields<LOG_COLUMNS>) -> Result<LogRow, StoreError> {
        let int8 = |i: usize| -> Result<i64, StoreError> {
            fields[i]
                .and_then(|s| <[u8; 8]>::try_from(&raw[s.range()]).ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| malformed("a bigint column that is not 8 bytes or NULL"))
        };
        let text = |i: usize| -> Result<Span, StoreError> {
            let s = fields[i].ok_or_else(|| malformed("a NULL text column"))?;
            std::str::from_utf8(&raw[s.range()])
                .map_err(|_| malformed("a text column that is not UTF-8"))?;
            Ok(s)
        };
        let bytes = |i: usize| fields[i].ok_or_else(|| malformed("a NULL bytea column"));
        let pruned = match fields[10] {
            Some(s) if s.len == 1 => raw[s.at as usize] != 0,
            _ => return Err(malformed("a bool column that is not 1 byte")),
        };
        let event = if pruned {
            None
        } else {
            Some(EventSpans {
                event_type: text(5)?,
                schema_version: int8(6)?,
                data: bytes(7)?,
                metadata: bytes(8)?,
                recorded_at: int8(9)?,
            })
        };
        Ok(LogRow {
            tx_id: int8(0)?,
            seq: int8(1)?,
            version: int8(3)?,
            stream: text(2)?,
            chain: fields[4],
            event,
            digest: None,
            raw,
        })
    }

    fn bytes(&self, s: Span) -> &[u8] {
        &self.raw[s.range()]
    }

    /// The stream's name (checked to be UTF-8 when parsed; checked again, as the borrow
    /// cannot carry that).
    fn stream(&self) -> Result<&str, StoreError> {
        std::str::from_utf8(self.bytes(self.stream))
            .map_err(|_| malformed("a text column that is not UTF-8"))
    }

    /// The event of the row, borrowed from it (`None`: a deleted stream's hash row).
    fn event<'a>(&'a self, stream: &'a str) -> Result<Option<EventRow<'a>>, StoreError> {
        let Some(e) = &self.event else { return Ok(None) };
        Ok(Some(EventRow {
            stream,
            version: self.version,
            position: position(self.tx_id, self.seq),
            event_type: std::str::from_utf8(self.bytes(e.event_type))
                .map_err(|_| malformed("a text column that is not UTF-8"))?,
            // Out of range: recomputes to another digest, so the walker reports it.
            schema_version: u32::try_from(e.schema_version).unwrap_or(u32::MAX),
            recorded_at: e.recorded_at,
            metadata: self.bytes(e.metadata),
            data: self.bytes(e.data),
            chain: self.chain.map(|c| self.bytes(c)),
        }))
    }

    /// The digest of the row's event, as [`crate::verify::step`] computes it for the version
    /// the row says (`None`: not an event, or a version the walk rejects before any digest).
    /// From the bytes of the stream and type, checked to be UTF-8 when parsed.
    fn recompute_digest(&self) -> Option<Hash> {
        let e = self.event.as_ref()?;
        let version = u64::try_from(self.version).ok()?;
        Some(event_digest_of_bytes(
            self.bytes(self.stream),
            self.bytes(e.event_type),
            &DigestInput {
                stream: "",
                version,
                event_type: "",
                // Out of range: recomputes to another digest, so the walker reports it.
                schema_version: u32::try_from(e.schema_version).unwrap_or(u32::MAX),
                recorded_at_micros: e.recorded_at,
                metadata: self.bytes(e.metadata),
                data_hash: &data_hash(self.bytes(e.data)),
            },
        ))
    }
}

/// Parses one message of a chunk's COPY into `out`, each event with its digest.
fn feed_rows(
    parser: &mut CopyParser,
    message: Bytes,
    out: &mut Vec<LogRow>,
) -> Result<(), StoreError> {
    parser.feed::<LOG_COLUMNS>(message, |raw, fields| {
        let mut row = LogRow::parse(raw, fields)?;
        row.digest = row.recompute_digest();
        out.push(row);
        Ok(())
    })
}

/// A reader's digest thread: parses each batch of COPY messages into rows and computes their
/// events' digests, and hands them on to the walk. How many rows it handed on. The walk
/// hands the emptied batches back (`spare`): a batch is ~0.7 MB, and fresh ones cost page
/// faults (~15% of the client's time when allocated per batch).
fn digest_rows(
    mut messages: tokio::sync::mpsc::Receiver<Piece<Vec<Bytes>>>,
    done: std::sync::mpsc::SyncSender<Piece<Vec<LogRow>>>,
    spare: std::sync::mpsc::Receiver<Vec<LogRow>>,
) -> Result<u64, StoreError> {
    let mut parser = CopyParser::default();
    let mut parsed = 0u64;
    while let Some(piece) = messages.blocking_recv() {
        let piece = match piece {
            Piece::Rows(batch) => {
                let mut rows = spare.try_recv().unwrap_or_default();
                rows.reserve(batch.len());
                for message in batch {
                    feed_rows(&mut parser, message, &mut rows)?;
                }
                parsed += rows.len() as u64;
                Piece::Rows(rows)
            }
            Piece::End => {
                parser.finish()?;
                Piece::End
            }
        };
        if done.send(piece).is_err() {
            break;
        }
    }
    Ok(parsed)
}

/// The one thread that walks: every event to the [`Walker`], every entry to the
/// [`LogWalker`], taking the `count` chunks in order from the readers in turn (`digested`).
/// The report, and how many rows it walked.
fn walk_chunks(
    (streams, log_head): (Vec<StreamRow>, Position),
    checkpoints: Vec<crate::commitment::SignedCheckpoint>,
    trust: Trust,
    digested: Vec<std::sync::mpsc::Receiver<Piece<Vec<LogRow>>>>,
    spare: Vec<std::sync::mpsc::SyncSender<Vec<LogRow>>>,
    count: usize,
) -> Result<(Verification, u64), StoreError> {
    let mut walker = Walker::new(Some(log_head));
    let mut log = LogWalker::new(checkpoints, trust);
    let mut walked = 0u64;
    'chunks: for chunk in 0..count {
        let from = &digested[chunk % digested.len()];
        loop {
            let mut batch = match from.recv() {
                Ok(Piece::Rows(rows)) => rows,
                Ok(Piece::End) => break,
                // Its reader or digest thread ended early (`walked` tells).
                Err(_) => break 'chunks,
            };
            walked += batch.len() as u64;
            for r in &batch {
                let stream = r.stream()?;
                if let Some(e) = r.event(stream)?
                    && !walker.event_digested(&e, r.digest.as_ref())
                {
                    break 'chunks;
                }
                let link = r.chain.and_then(|c| Hash::try_from(r.bytes(c)).ok());
                let version = u64::try_from(r.version).unwrap_or(u64::MAX);
                if !log.entry_parts(position(r.tx_id, r.seq), stream, version, link) {
                    break 'chunks;
                }
            }
            batch.clear();
            // Dropped when its digest thread has enough spares (or has ended).
            let _ = spare[chunk % spare.len()].try_send(batch);
        }
    }
    Ok((walker.finish(&streams).with_checkpoints(log.finish()), walked))
}

/// Both walks over one read of the log in global order: every event to the [`Walker`]
/// (each stream's events in position order, which is version order in an intact log), every
/// entry to the [`LogWalker`]. For an intact log this is the report of the reference walks
/// (the same checks pass in either order, and what they count does not depend on it); for
/// anything else the caller asks the reference walks.
///
/// The log is cut into chunks of transaction ids, read in turn by one reader per core, each a
/// connection of its own that joins the exported `snapshot` (held by `tx`) and reads its
/// chunks as binary `COPY`, parsed in place (no row objects); each reader's tuples get their
/// digests on a thread of its own and go on to the one thread that walks, which takes the
/// chunks in order. The readers start before `tx` reads the stream rows and checkpoints, so
/// both go on at once.
async fn one_pass(
    tx: &tokio_postgres::Transaction<'_>,
    config: &tokio_postgres::Config,
    snapshot: &str,
    trust: Trust,
) -> Result<Verification, StoreError> {
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let chunks = chunks(tx, readers).await?;
    let mut fetches = Vec::with_capacity(readers);
    let mut digesters = Vec::with_capacity(readers);
    let mut digested = Vec::with_capacity(readers);
    let mut spares = Vec::with_capacity(readers);
    // Room for a whole chunk: the next reader reads its chunk while the walk takes this one.
    let room = (CHUNK_ENTRIES as usize).div_ceil(BATCH) + 2;
    for k in 0..readers {
        let (send, messages) = tokio::sync::mpsc::channel::<Piece<Vec<Bytes>>>(room);
        let (done, recv) = std::sync::mpsc::sync_channel::<Piece<Vec<LogRow>>>(4);
        let (back, spare) = std::sync::mpsc::sync_channel::<Vec<LogRow>>(SPARE_BATCHES);
        digested.push(recv);
        spares.push(back);
        digesters.push(tokio::task::spawn_blocking(move || digest_rows(messages, done, spare)));
        let mine = chunks.iter().skip(k).step_by(readers).copied().collect();
        fetches.push(tokio::spawn(read_chunks(config.clone(), snapshot.to_owned(), mine, send)));
    }
    let count = chunks.len();
    let head = async { Ok::<_, StoreError>((stream_rows(tx).await?, checkpoints(tx).await?)) };
    let walked = match head.await {
        Ok((streams, checkpoints)) => tokio::task::spawn_blocking(move || {
            walk_chunks(streams, checkpoints, trust, digested, spares, count)
        })
        .await
        .map_err(|e| StoreError::backend("the verifying walk", e))
        .and_then(|walked| walked),
        Err(e) => {
            // Ends the digest threads, then the readers.
            drop((digested, spares));
            Err(e)
        }
    };
    // Every reader and digest thread ends before the snapshot's transaction may.
    let mut failed = None;
    for fetch in fetches {
        match fetch.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(StoreError::backend("a verifying reader", e));
            }
        }
    }
    let mut parsed = 0;
    for digester in digesters {
        match digester.await {
            Ok(Ok(n)) => parsed += n,
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(StoreError::backend("a digest thread", e));
            }
        }
    }
    let (report, walked) = walked?;
    if let Some(e) = failed {
        return Err(e);
    }
    // Every row read was walked (a reader or digest thread that ended early would end the
    // walk early).
    if report.is_intact() && walked != parsed {
        return Err(StoreError::Corrupt(format!(
            "the verifying walk saw {walked} of {parsed} entries"
        )));
    }
    Ok(report)
}

/// The signed checkpoints, in order.
pub(crate) async fn checkpoints(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<crate::commitment::SignedCheckpoint>, StoreError> {
    tx.query("SELECT seq, body, signature FROM pop_checkpoints ORDER BY seq", &[])
        .await
        .map_err(fail)?
        .iter()
        .map(super::seal::checkpoint_from)
        .collect()
}

/// The signed checkpoints and every entry in log order, through the [`LogWalker`].
async fn log_walk(
    tx: &tokio_postgres::Transaction<'_>,
    trust: Trust,
) -> Result<(CheckpointReport, Option<Break>), StoreError> {
    let mut log = LogWalker::new(checkpoints(tx).await?, trust);
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tx.query_raw(super::seal::ENTRIES_SQL, no_params).await.map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r.map_err(fail)?;
        if !log_entry(&mut log, &r)? {
            break;
        }
    }
    Ok(log.finish())
}

#[cfg(test)]
mod tests {
    use super::super::copy::COPY_SIGNATURE;
    use super::*;
    use crate::digest::event_digest;

    /// One tuple of a binary COPY (`None`: NULL).
    fn tuple_bytes(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    /// A whole chunk's COPY: the header, an event, a deleted stream's hash row, the trailer.
    fn copy_stream(chain: &[u8; 32]) -> Vec<u8> {
        let mut out = COPY_SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        // A header extension of 3 bytes, skipped.
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        let (tx, seq, version) = (7i64.to_be_bytes(), 2i64.to_be_bytes(), 0i64.to_be_bytes());
        let (schema, at) = (1i64.to_be_bytes(), 1_800_000_000_000_000i64.to_be_bytes());
        out.extend(tuple_bytes(&[
            Some(&tx),
            Some(&seq),
            Some(b"agenda-acme/a"),
            Some(&version),
            Some(chain),
            Some(b"AgendaQueued"),
            Some(&schema),
            Some(b"{\"x\":1}"),
            Some(b"{\"actor\":\"a\"}"),
            Some(&at),
            Some(&[0]),
        ]));
        let (seq, version) = (3i64.to_be_bytes(), 4i64.to_be_bytes());
        out.extend(tuple_bytes(&[
            Some(&tx),
            Some(&seq),
            Some(b"agenda-acme/gone"),
            Some(&version),
            None,
            None,
            None,
            None,
            None,
            None,
            Some(&[1]),
        ]));
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn check(rows: &[LogRow], chain: &[u8; 32]) {
        assert_eq!(rows.len(), 2);
        let (a, b) = (&rows[0], &rows[1]);
        assert_eq!((a.tx_id, a.seq, a.version), (7, 2, 0));
        assert_eq!(a.stream().unwrap(), "agenda-acme/a");
        let e = a.event("agenda-acme/a").unwrap().unwrap();
        assert_eq!(e.event_type, "AgendaQueued");
        assert_eq!((e.schema_version, e.recorded_at), (1, 1_800_000_000_000_000));
        assert_eq!((e.data, e.metadata), (&b"{\"x\":1}"[..], &b"{\"actor\":\"a\"}"[..]));
        assert_eq!(e.chain, Some(&chain[..]));
        let want = event_digest(&DigestInput {
            stream: "agenda-acme/a",
            version: 0,
            event_type: "AgendaQueued",
            schema_version: 1,
            recorded_at_micros: 1_800_000_000_000_000,
            metadata: b"{\"actor\":\"a\"}",
            data_hash: &data_hash(b"{\"x\":1}"),
        });
        assert_eq!(a.digest, Some(want));
        assert_eq!((b.tx_id, b.seq, b.version), (7, 3, 4));
        assert_eq!(b.stream().unwrap(), "agenda-acme/gone");
        assert!(b.event("agenda-acme/gone").unwrap().is_none());
        assert!(b.chain.is_none() && b.digest.is_none());
    }

    #[test]
    fn a_binary_copy_parses_in_place_however_its_messages_are_cut() {
        let chain = [9u8; 32];
        let bytes = copy_stream(&chain);
        // Whole, a byte a message, and cut in two at every point.
        let mut cuts: Vec<Vec<usize>> = vec![vec![], (1..bytes.len()).collect()];
        cuts.extend((1..bytes.len()).map(|i| vec![i]));
        let mut parser = CopyParser::default();
        for cut in cuts {
            let mut rows = Vec::new();
            let mut from = 0;
            for at in cut.into_iter().chain([bytes.len()]) {
                feed_rows(&mut parser, Bytes::copy_from_slice(&bytes[from..at]), &mut rows)
                    .unwrap();
                from = at;
            }
            parser.finish().unwrap();
            check(&rows, &chain);
        }
    }

    #[test]
    fn a_cut_or_foreign_copy_is_an_error() {
        let bytes = copy_stream(&[9; 32]);
        let mut parser = CopyParser::default();
        let mut rows = Vec::new();
        feed_rows(&mut parser, Bytes::copy_from_slice(&bytes[..bytes.len() - 2]), &mut rows)
            .unwrap();
        assert!(parser.finish().is_err(), "no trailer");
        let mut parser = CopyParser::default();
        feed_rows(&mut parser, Bytes::copy_from_slice(&bytes[..bytes.len() - 5]), &mut rows)
            .unwrap();
        assert!(parser.finish().is_err(), "a tuple cut short");
        let mut parser = CopyParser::default();
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(feed_rows(&mut parser, Bytes::from(foreign), &mut rows).is_err());
        let mut parser = CopyParser::default();
        let mut after = bytes.clone();
        after.extend_from_slice(&[0, 0]);
        assert!(
            feed_rows(&mut parser, Bytes::from(after), &mut rows).is_err(),
            "data after the trailer"
        );
    }
}
