//! Verification of the embedded store: reads the rows and feeds them to the one rule
//! ([`crate::verify::Walker`]): every event in stream order, then every stream row. The log
//! head (`log.head`) bounds positions; an event of a stream id without a row is a break. Then
//! the whole log in global order against the signed checkpoints
//! ([`crate::commitment::LogWalker`]). All of it in one read transaction: one snapshot.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::commitment::LogWalker;
use crate::verify::{Break, EventRow, StreamRow, Verification, Walker};
use crate::{Position, StoreError};

fn fail(e: rusqlite::Error) -> StoreError {
    StoreError::backend("verifying the log", e)
}

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
    let mut q = conn
        .prepare(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, \
             recorded_at, chain FROM events ORDER BY stream_id, version",
        )
        .map_err(fail)?;
    let mut rows = q.query([]).map_err(fail)?;
    while let Some(r) = rows.next().map_err(fail)? {
        let pos: i64 = r.get(0).map_err(fail)?;
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
        let row = EventRow {
            stream: &streams[index].1.name,
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
    }
    drop(rows);
    drop(q);
    let streams: Vec<StreamRow> = streams.into_iter().map(|(_, s)| s).collect();
    let report = walker.finish(&streams);
    if !report.is_intact() {
        return Ok(report);
    }
    let mut log = LogWalker::new(super::seal::checkpoints(conn, false)?, key);
    super::seal::entries(conn, 0, -1, |e| log.entry(e))?;
    Ok(report.with_checkpoints(log.finish()))
}
