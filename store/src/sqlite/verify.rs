//! Verification of the embedded store: every event's digest and chain link recomputed in
//! stream order, every stream's head (version and head hash) compared with its last event,
//! positions increasing with versions, nothing above the log head, no event of an unknown
//! stream, and every tombstone keeping the head hash of the events it deleted.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::digest::{DigestInput, GENESIS, Hash, chain, data_hash, event_digest};
use crate::verify::{Break, Verification};
use crate::{Position, StoreError};

struct StreamRow {
    name: String,
    version: Option<i64>,
    deleted: bool,
    head: Option<Vec<u8>>,
}

fn fail(e: rusqlite::Error) -> StoreError {
    StoreError::backend("verifying the log", e)
}

/// Where a stream's walk stands.
struct Walk {
    stream_id: i64,
    next_version: u64,
    head: Hash,
    last_position: i64,
}

fn position(p: i64) -> Option<Position> {
    u64::try_from(p).ok().map(Position::from_sequence)
}

/// Verifies the database `conn` reads (a reader connection: nothing is written).
pub(crate) fn verify(conn: &Connection) -> Result<Verification, StoreError> {
    let mut report = Verification::default();
    let log_head: i64 =
        conn.query_row("SELECT head FROM log WHERE id = 1", [], |r| r.get(0)).map_err(fail)?;
    let mut streams: HashMap<i64, StreamRow> = HashMap::new();
    {
        let mut q = conn
            .prepare("SELECT id, name, version, deleted_at, head_hash FROM streams")
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
            let (id, row) = row.map_err(fail)?;
            streams.insert(id, row);
        }
    }
    let mut seen: HashMap<i64, (u64, Hash)> = HashMap::new();
    let mut q = conn
        .prepare(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, \
             recorded_at, chain FROM events ORDER BY stream_id, version",
        )
        .map_err(fail)?;
    let mut rows = q.query([]).map_err(fail)?;
    let mut walk: Option<Walk> = None;
    let stop = |b: Break, report: &mut Verification| {
        report.first_break.get_or_insert(b);
    };
    while let Some(r) = rows.next().map_err(fail)? {
        let pos: i64 = r.get(0).map_err(fail)?;
        let stream_id: i64 = r.get(1).map_err(fail)?;
        let version: i64 = r.get(2).map_err(fail)?;
        let Some(stream) = streams.get(&stream_id) else {
            stop(
                Break {
                    stream: format!("#{stream_id}"),
                    version: u64::try_from(version).ok(),
                    position: position(pos),
                    reason: "an event of a stream the log does not know".into(),
                },
                &mut report,
            );
            break;
        };
        if walk.as_ref().is_none_or(|w| w.stream_id != stream_id) {
            if let Some(w) = walk.take() {
                seen.insert(w.stream_id, (w.next_version, w.head));
            }
            walk = Some(Walk { stream_id, next_version: 0, head: GENESIS, last_position: 0 });
        }
        let Some(w) = walk.as_mut() else { break };
        let at = |reason: String| Break {
            stream: stream.name.clone(),
            version: u64::try_from(version).ok(),
            position: position(pos),
            reason,
        };
        if u64::try_from(version).ok() != Some(w.next_version) {
            stop(
                at(format!("expected version {} here: an event is missing", w.next_version)),
                &mut report,
            );
            break;
        }
        if pos <= w.last_position || pos > log_head {
            stop(
                at(format!(
                    "position out of order (previous event of the stream at {}, log head {log_head})",
                    w.last_position
                )),
                &mut report,
            );
            break;
        }
        let event_type: String = r.get(3).map_err(fail)?;
        let schema_version: u32 = r.get(4).map_err(fail)?;
        let data: Vec<u8> = r.get(5).map_err(fail)?;
        let metadata: Vec<u8> = r.get(6).map_err(fail)?;
        let recorded_at: i64 = r.get(7).map_err(fail)?;
        let stored: Option<Vec<u8>> = r.get(8).map_err(fail)?;
        let hash = data_hash(&data);
        let digest = event_digest(&DigestInput {
            stream: &stream.name,
            version: w.next_version,
            event_type: &event_type,
            schema_version,
            recorded_at_micros: recorded_at,
            metadata: &metadata,
            data_hash: &hash,
        });
        let link = chain(&w.head, &digest);
        if stored.as_deref() != Some(link.as_slice()) {
            stop(
                at("the event does not match its chain link (edited, moved or swapped)".into()),
                &mut report,
            );
            break;
        }
        w.head = link;
        w.next_version += 1;
        w.last_position = pos;
        report.events += 1;
    }
    drop(rows);
    if report.first_break.is_some() {
        return Ok(report);
    }
    if let Some(w) = walk.take() {
        seen.insert(w.stream_id, (w.next_version, w.head));
    }
    let mut ids: Vec<&i64> = streams.keys().collect();
    ids.sort();
    for id in ids {
        let s = &streams[id];
        let whole = |reason: String| Break {
            stream: s.name.clone(),
            version: None,
            position: None,
            reason,
        };
        if s.deleted {
            // Its events are gone; its head hash must still be there when it had any.
            if s.version.is_some() && s.head.as_ref().is_none_or(|h| h.len() != 32) {
                return Ok(Verification {
                    first_break: Some(whole("a deleted stream lost its recorded head hash".into())),
                    ..report
                });
            }
            report.deleted_streams += 1;
            continue;
        }
        let (count, head) = seen.get(id).copied().unwrap_or((0, GENESIS));
        let want_count = s.version.map_or(0, |v| v + 1);
        if i64::try_from(count).ok() != Some(want_count) {
            return Ok(Verification {
                first_break: Some(Break {
                    version: Some(count),
                    ..whole(format!(
                        "the stream's head says {want_count} events, the log holds {count} (a cut tail or deleted events)"
                    ))
                }),
                ..report
            });
        }
        if count > 0 && s.head.as_deref() != Some(head.as_slice()) {
            return Ok(Verification {
                first_break: Some(whole(
                    "the stream's head hash does not match its last event".into(),
                )),
                ..report
            });
        }
        report.streams += 1;
    }
    Ok(report)
}
