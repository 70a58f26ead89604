//! Verification of the embedded store: reads the rows and feeds them to the one rule
//! ([`crate::verify::Walker`]): every event in log order, then every stream row. The log head
//! (`log.head`) bounds positions; an event of a stream id without a row is a break. The same
//! scan feeds the whole log in global order (events and the pruned hash rows of deleted
//! streams) to the check against the signed checkpoints ([`crate::commitment::LogWalker`]).
//! All of it in one read transaction: one snapshot.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::commitment::{LogEntry, LogWalker};
use crate::digest::Hash;
use crate::verify::{Break, EventRow, StreamRow, Verification, Walker};
use crate::{Position, StoreError};

fn fail(e: rusqlite::Error) -> StoreError {
    StoreError::backend("verifying the log", e)
}

/// A pruned hash row: position, stream id, version, chain link.
type PrunedRow = (i64, i64, i64, Option<Vec<u8>>);

fn position(p: i64) -> Position {
    Position::from_sequence(u64::try_from(p).unwrap_or(0))
}

/// Verifies the database `conn` reads (a reader connection: nothing is written).
pub(crate) fn verify(
    conn: &Connection,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    let tx = conn.unchecked_transaction().map_err(fail)?;
    let conn: &Connection = &tx;
    let log_head: i64 =
        conn.query_row("SELECT head FROM log WHERE id = 1", [], |r| r.get(0)).map_err(fail)?;
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
    let names: HashMap<i64, usize> =
        streams.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut walker = Walker::new(Some(position(log_head.max(0))));
    let mut log = LogWalker::new(super::seal::checkpoints(conn, false)?, key);
    // One scan in log order (the table's own order: sequential reads) feeds both rules: each
    // event to the per-stream walk, and each event and each pruned hash row, merged by
    // position, to the walk over the checkpoints.
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
        Ok((
            r.get(0).map_err(fail)?,
            r.get(1).map_err(fail)?,
            r.get(2).map_err(fail)?,
            r.get(3).map_err(fail)?,
        ))
    };
    let mut next_pruned = pruned.next().map_err(fail)?.map(pruned_entry).transpose()?;
    let name_of = |id: i64| -> String {
        names.get(&id).map_or_else(|| format!("#{id}"), |&i| streams[i].1.name.clone())
    };
    let feed_pruned = |up_to: Option<i64>,
                       next: &mut Option<PrunedRow>,
                       pruned: &mut rusqlite::Rows<'_>,
                       log: &mut LogWalker|
     -> Result<(), StoreError> {
        while let Some((pos, stream_id, version, chain)) =
            next.take_if(|n| up_to.is_none_or(|u| n.0 < u))
        {
            if !log.stopped() {
                log.entry(LogEntry {
                    position: position(pos),
                    stream: name_of(stream_id),
                    version: u64::try_from(version).unwrap_or(u64::MAX),
                    link: chain.and_then(|c| Hash::try_from(c.as_slice()).ok()),
                });
            }
            *next = pruned.next().map_err(fail)?.map(pruned_entry).transpose()?;
        }
        Ok(())
    };
    while let Some(r) = rows.next().map_err(fail)? {
        let pos: i64 = r.get(0).map_err(fail)?;
        feed_pruned(Some(pos), &mut next_pruned, &mut pruned, &mut log)?;
        let stream_id: i64 = r.get(1).map_err(fail)?;
        let version: i64 = r.get(2).map_err(fail)?;
        let Some(&index) = names.get(&stream_id) else {
            walker.stop(Break {
                stream: format!("#{stream_id}"),
                version: u64::try_from(version).ok(),
                position: Some(position(pos)),
                reason: "an event of a stream the log does not know".into(),
            });
            break;
        };
        let event_type: String = r.get(3).map_err(fail)?;
        let data = r.get_ref(5).map_err(fail)?.as_blob().map_err(|e| fail(e.into()))?;
        let metadata = r.get_ref(6).map_err(fail)?.as_blob().map_err(|e| fail(e.into()))?;
        let chain = r.get_ref(8).map_err(fail)?.as_blob_or_null().map_err(|e| fail(e.into()))?;
        let name = &streams[index].1.name;
        let row = EventRow {
            stream: name,
            version,
            // A position below 1 is out of order with any stream's first event.
            position: position(pos),
            event_type: &event_type,
            schema_version: r.get(4).map_err(fail)?,
            recorded_at: r.get(7).map_err(fail)?,
            metadata,
            data,
            chain,
        };
        if !walker.event(&row) {
            break;
        }
        if !log.stopped() {
            log.entry(LogEntry {
                position: position(pos),
                stream: name.clone(),
                version: u64::try_from(version).unwrap_or(u64::MAX),
                link: chain.and_then(|c| Hash::try_from(c).ok()),
            });
        }
    }
    if !walker.stopped() {
        feed_pruned(None, &mut next_pruned, &mut pruned, &mut log)?;
    }
    drop(rows);
    drop(pruned);
    drop(q);
    drop(p);
    let streams: Vec<StreamRow> = streams.into_iter().map(|(_, s)| s).collect();
    let report = walker.finish(&streams);
    if !report.is_intact() {
        return Ok(report);
    }
    Ok(report.with_checkpoints(log.finish()))
}
