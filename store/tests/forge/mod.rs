//! What a forger with write access to the embedded store's file does after editing an event:
//! recomputes its stream's hash chain and head with the published formula (`digest.rs`), so
//! that every chain holds and only the other checks can find the edit.

use pop_store::digest::{DigestInput, GENESIS, chain, data_hash, event_digest};
use rusqlite::Connection;

/// Recomputes the chain link of every event of `stream` (in version order) and the stream's
/// head hash from the events as they now are in the file.
pub fn rechain(conn: &Connection, stream: &str) {
    type Row = (i64, i64, String, i64, Vec<u8>, Vec<u8>, i64);
    let rows: Vec<Row> = conn
        .prepare(
            "SELECT e.position, e.version, e.event_type, e.schema_version, e.data, e.metadata, \
             e.recorded_at FROM events e JOIN streams s ON s.id = e.stream_id \
             WHERE s.name = ?1 ORDER BY e.version",
        )
        .and_then(|mut q| {
            q.query_map([stream], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect()
        })
        .expect("the stream's events");
    let mut head = GENESIS;
    for (position, version, event_type, schema, data, metadata, at) in &rows {
        let digest = event_digest(&DigestInput {
            stream,
            version: *version as u64,
            event_type,
            schema_version: *schema as u32,
            recorded_at_micros: *at,
            metadata,
            data_hash: &data_hash(data),
        });
        head = chain(&head, &digest);
        conn.execute(
            "UPDATE events SET chain = ?1 WHERE position = ?2",
            rusqlite::params![head.to_vec(), position],
        )
        .expect("a chain link written");
    }
    conn.execute(
        "UPDATE streams SET head_hash = ?1 WHERE name = ?2",
        rusqlite::params![head.to_vec(), stream],
    )
    .expect("the head written");
}
