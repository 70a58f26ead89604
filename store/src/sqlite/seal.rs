//! The global commitment on the embedded store ([`crate::commitment`]): the log's entries in
//! global order (events and the hash rows of deleted streams, merged), the stored checkpoints,
//! and storing a new one through the writer. The single writer commits in position order, so
//! every read snapshot is a prefix of the log below which nothing can still commit: all of it
//! may be sealed.

use rusqlite::{Connection, OptionalExtension};

use crate::commitment::{LogEntry, SignedCheckpoint};
use crate::digest::Hash;
use crate::{Position, StoreError};

pub(crate) fn fail(e: rusqlite::Error) -> StoreError {
    // A table of pop's gone from under an open store was dropped outside pop: not a passing
    // condition of the storage, but the alarm (auditor18: checkpoints dropped whole went
    // unnoticed where deleted rows raised it).
    if let rusqlite::Error::SqliteFailure(_, Some(message)) = &e
        && message.starts_with("no such table")
    {
        return StoreError::Corrupt(format!(
            "reading the log for its checkpoints: {message} (pop never drops a table)"
        ));
    }
    StoreError::backend("reading the log for its checkpoints", e)
}

fn entry_from(r: &rusqlite::Row<'_>) -> Result<LogEntry, StoreError> {
    let position: i64 = r.get(0).map_err(fail)?;
    let version: i64 = r.get(2).map_err(fail)?;
    let link: Option<Vec<u8>> = r.get(3).map_err(fail)?;
    Ok(LogEntry {
        // Out of range values stay visible as breaks: they fold to another log hash.
        position: Position::from_sequence(u64::try_from(position).unwrap_or(0)),
        stream: r.get(1).map_err(fail)?,
        version: u64::try_from(version).unwrap_or(u64::MAX),
        link: link.and_then(|l| Hash::try_from(l.as_slice()).ok()),
    })
}

/// Feeds `each` the entries after `after` in position order, at most `limit` (negative: no
/// limit), until it answers `false`. The caller holds a read transaction, so both tables are
/// read in one snapshot. A hash row past the log's head (pop writes none there: it was moved
/// outside pop) is [`StoreError::Corrupt`]: nothing is signed around it (review-s38: sealing
/// what was left signed the gap the row left), and `pop verify` names it.
pub(crate) fn entries(
    tx: &Connection,
    after: u64,
    limit: i64,
    mut each: impl FnMut(LogEntry) -> bool,
) -> Result<(), StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let sql = |table: &str| {
        format!(
            "SELECT t.position, COALESCE(s.name, '#' || t.stream_id), t.version, t.chain \
             FROM {table} t LEFT JOIN streams s ON s.id = t.stream_id \
             WHERE t.position > ?1 ORDER BY t.position LIMIT ?2"
        )
    };
    let past: Option<i64> = tx
        .query_row(
            "SELECT position FROM pruned WHERE position > (SELECT head FROM log WHERE id = 1) \
             ORDER BY position LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(fail)?;
    if let Some(at) = past {
        return Err(StoreError::Corrupt(format!(
            "a hash row at position {at} lies past the log's head: it was moved outside pop; \
             nothing is sealed until it is found (run `pop verify`)"
        )));
    }
    let mut live = tx.prepare(&sql("events")).map_err(fail)?;
    let mut pruned = tx.prepare(&sql("pruned")).map_err(fail)?;
    let mut a = live.query(rusqlite::params![after, limit]).map_err(fail)?;
    let mut b = pruned.query(rusqlite::params![after, limit]).map_err(fail)?;
    let mut next_a = a.next().map_err(fail)?.map(entry_from).transpose()?;
    let mut next_b = b.next().map_err(fail)?.map(entry_from).transpose()?;
    let mut taken = 0i64;
    while limit < 0 || taken < limit {
        let take_a = match (&next_a, &next_b) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(x), Some(y)) => x.position <= y.position,
        };
        let e = if take_a {
            let e = next_a.take();
            next_a = a.next().map_err(fail)?.map(entry_from).transpose()?;
            e
        } else {
            let e = next_b.take();
            next_b = b.next().map_err(fail)?.map(entry_from).transpose()?;
            e
        };
        let Some(e) = e else { break };
        taken += 1;
        if !each(e) {
            break;
        }
    }
    Ok(())
}

/// The checkpoint numbered `seq`, if stored.
pub(crate) fn checkpoint(
    conn: &Connection,
    seq: u64,
) -> Result<Option<SignedCheckpoint>, StoreError> {
    let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
    conn.query_row("SELECT seq, body, signature FROM log_checkpoints WHERE seq = ?1", [seq], |r| {
        Ok(SignedCheckpoint {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            body: r.get(1)?,
            signature: r.get(2)?,
        })
    })
    .optional()
    .map_err(fail)
}

/// Every stored checkpoint in sequence order (`last`: only the newest).
pub(crate) fn checkpoints(
    conn: &Connection,
    last: bool,
) -> Result<Vec<SignedCheckpoint>, StoreError> {
    let sql = if last {
        "SELECT seq, body, signature FROM log_checkpoints ORDER BY seq DESC LIMIT 1"
    } else {
        "SELECT seq, body, signature FROM log_checkpoints ORDER BY seq"
    };
    let mut q = conn.prepare(sql).map_err(fail)?;
    let rows = q
        .query_map([], |r| {
            Ok(SignedCheckpoint {
                seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                body: r.get(1)?,
                signature: r.get(2)?,
            })
        })
        .map_err(fail)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(fail)
}
