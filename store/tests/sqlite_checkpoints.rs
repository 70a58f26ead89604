//! Signed checkpoints on the embedded store ([`pop_store::commitment`]): a log is sealed in
//! several checkpoints, then changed in the database file in the ways a chain per stream
//! cannot show — a stream removed whole, the log's tail cut with the stream rows rewritten to
//! match, the whole log replaced by a consistent forgery sealed without the key — and
//! verification must find each with its stream, version and position. A stream deleted on
//! purpose (the data reaper) keeps its hash rows and still verifies.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pop_store::commitment::{CheckpointSigningKey, Sealer};
use pop_store::verify::Verification;
use pop_store::{
    Direction, Durability, EventStore, ExpectedVersion, NewEvent, Position, SqliteOptions,
    SqliteStore, fixed_clock,
};
use rusqlite::Connection;
use uuid::Uuid;

mod forge;

fn event(n: u32, salt: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: format!("Type{}", n % 3),
        schema_version: 1,
        data: format!("{{\"n\":{n},\"s\":\"{salt}\"}}").into_bytes(),
        metadata: format!("{{\"actor\":\"user:u{n}\"}}").into_bytes(),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(1_800_000_000_123_456).unwrap()
}

fn key(n: u8) -> CheckpointSigningKey {
    CheckpointSigningKey::from_bytes(&[n; 32])
}

/// Streams a (4 events), b (3) and c (2), interleaved (positions 1…9: a0 a1 b0 a2 a3 c0 c1 b1
/// b2), sealed by `signer` in checkpoints of at most 4 entries (1–4, 5–8, 9). Returns the
/// file and each stream's positions by version.
async fn sealed(
    dir: &Path,
    name: &str,
    salt: &str,
    signer: &CheckpointSigningKey,
) -> (PathBuf, Vec<Vec<Position>>) {
    let path = dir.join(name);
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options).await.unwrap();
    let mut n = 0;
    let mut next = || {
        n += 1;
        event(n, salt)
    };
    store.append("a", ExpectedVersion::NoStream, vec![next(), next()]).await.unwrap();
    store.append("b", ExpectedVersion::NoStream, vec![next()]).await.unwrap();
    store.append("a", ExpectedVersion::Exact(1), vec![next(), next()]).await.unwrap();
    store.append("c", ExpectedVersion::NoStream, vec![next(), next()]).await.unwrap();
    store.append("b", ExpectedVersion::Exact(0), vec![next(), next()]).await.unwrap();
    let sealer = Sealer::with_max_entries(signer.clone(), 4);
    let last = sealer.seal_all(&store, now()).await.unwrap().expect("sealed");
    assert_eq!((last.seq, last.events), (3, 9));
    assert!(sealer.seal(&store, now()).await.unwrap().is_none(), "nothing left to seal");
    let mut positions: Vec<Vec<Position>> = Vec::new();
    for s in ["a", "b", "c"] {
        let events = store.read_stream(s, 0, 100, Direction::Forwards).await.unwrap();
        positions.push(events.iter().map(|e| e.position).collect());
    }
    let report = store.verify_with(Some(signer.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.checkpoints.checkpoints, report.checkpoints.sealed_entries),
        (3, 9),
        "{report:?}"
    );
    assert!(report.checkpoints.signatures_checked);
    assert_eq!(report.checkpoints.last.map(|l| (l.0, l.1)), Some((3, positions[1][2])));
    store.close().await.unwrap();
    (path, positions)
}

fn tampered(path: &Path, edit: &str, key: &CheckpointSigningKey) -> Verification {
    let copy = path.with_extension(format!("{}.db", Uuid::new_v4()));
    std::fs::copy(path, &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute_batch(edit).unwrap();
    drop(conn);
    SqliteStore::verify_file_with(&copy, Some(key.verifying_key())).unwrap()
}

fn located(r: &Verification, stream: &str, version: u64, position: Position) -> String {
    let b = r.first_break.as_ref().unwrap_or_else(|| panic!("not detected: {r:?}"));
    assert_eq!(
        (b.stream.as_str(), b.version, b.position),
        (stream, Some(version), Some(position)),
        "{b}"
    );
    b.reason.clone()
}

#[tokio::test]
async fn what_a_chain_per_stream_cannot_show_the_checkpoints_find_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let (path, p) = sealed(dir.path(), "pop.db", "real", &k).await;
    let (a, b, c) = (&p[0], &p[1], &p[2]);

    // Untouched, but checked with another key: no checkpoint is accepted.
    let r = SqliteStore::verify_file_with(&path, Some(key(8).verifying_key())).unwrap();
    assert!(located(&r, "a", 0, a[0]).contains("not signed by key"));
    // Without a key the chains and hashes are still checked, the signatures are not.
    let r = SqliteStore::verify_file(&path).unwrap();
    assert!(r.is_intact() && !r.checkpoints.signatures_checked, "{r:?}");

    // A stream removed whole, its row included: every remaining stream is consistent, but
    // checkpoint 2 says c reached version 1 at its position.
    let r = tampered(
        &path,
        "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 'c'); \
         DELETE FROM streams WHERE name = 'c';",
        &k,
    );
    assert!(located(&r, "c", 1, c[1]).contains("the stream was removed"), "{r:?}");

    // The log's tail cut (b's version 2) and b's row rewritten to end at version 1 with the
    // head hash of that event: the chains hold, checkpoint 3 does not.
    let r = tampered(
        &path,
        &format!(
            "DELETE FROM events WHERE position = {b2}; \
             UPDATE streams SET version = 1, \
               head_hash = (SELECT chain FROM events WHERE position = {b1}) WHERE name = 'b'; \
             UPDATE log SET head = {b1};",
            b1 = b[1].sequence().unwrap(),
            b2 = b[2].sequence().unwrap()
        ),
        &k,
    );
    located(&r, "b", 2, b[2]);

    // One event moved in global order with its row (a's version 3 swapped with c's version
    // 0): the streams' chains hold (versions, links, positions still ascend per stream). Its
    // commit time (in its digest) no longer rises with the positions: found at its new place.
    // (With a clock that stood still every commit had one time and the checkpoints found it;
    // the store's time now runs on behind a clock that does not move.)
    let r = tampered(
        &path,
        &format!(
            "UPDATE events SET position = -1 WHERE position = {a3}; \
             UPDATE events SET position = {a3} WHERE position = {c0}; \
             UPDATE events SET position = {c0} WHERE position = -1;",
            a3 = a[3].sequence().unwrap(),
            c0 = c[0].sequence().unwrap()
        ),
        &k,
    );
    assert!(located(&r, "a", 3, c[0]).contains("before the event before it"), "{r:?}");

    // A checkpoint removed from the middle, or its body edited.
    let r = tampered(&path, "DELETE FROM log_checkpoints WHERE seq = 2", &k);
    assert!(located(&r, "a", 3, a[3]).contains("checkpoint 2 is missing"), "{r:?}");
    let r = tampered(
        &path,
        "UPDATE log_checkpoints SET body = CAST(replace(CAST(body AS TEXT), '\"events\":8', '\"events\":7') AS BLOB) WHERE seq = 2",
        &k,
    );
    assert!(located(&r, "a", 3, a[3]).contains("not signed by key"), "{r:?}");

    // One event's metadata edited and its stream's chain recomputed with the published
    // formula (`digest.rs`), head hash included: every chain holds; the checkpoint that signed
    // the stream's old chain says so, not that two equal places differ (auditor15).
    let copy = path.with_extension(format!("{}.db", Uuid::new_v4()));
    std::fs::copy(&path, &copy).unwrap();
    let conn = Connection::open(&copy).unwrap();
    conn.execute(
        "UPDATE events SET metadata = CAST('{\"actor\":\"user:someone-else\"}' AS BLOB) \
         WHERE stream_id = (SELECT id FROM streams WHERE name = 'a') AND version = 1",
        [],
    )
    .unwrap();
    forge::rechain(&conn, "a");
    drop(conn);
    let r = SqliteStore::verify_file_with(&copy, Some(k.verifying_key())).unwrap();
    let found = r.first_break.as_ref().expect("a recomputed chain is found");
    assert_eq!(found.stream, "a", "{found}");
    assert!(found.reason.contains("hash chain there differs"), "{found}");
    assert!(!found.reason.contains("but the log has it at"), "{found}");

    // The whole log replaced by a consistent forgery — other data, every digest, chain and
    // checkpoint recomputed — sealed with a key that is not the operator's.
    let (forged, _) = sealed(dir.path(), "forged.db", "forged", &key(9)).await;
    let r = SqliteStore::verify_file_with(&forged, Some(k.verifying_key())).unwrap();
    let found = r.first_break.as_ref().expect("a forgery is found");
    assert_eq!((found.stream.as_str(), found.version), ("a", Some(0)), "{found}");
    assert!(found.reason.contains("checkpoint 1 is not signed by key"), "{found}");
}

#[tokio::test]
async fn a_deleted_stream_keeps_its_hash_rows_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let (path, _) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    // Deleted after it was sealed: checkpoint 2 still recomputes from the hash rows.
    store.delete_stream("c", ExpectedVersion::Exact(1)).await.unwrap();
    // A stream written and deleted between two seals.
    store
        .append("d", ExpectedVersion::NoStream, vec![event(20, "d"), event(21, "d")])
        .await
        .unwrap();
    store.append("a", ExpectedVersion::Exact(3), vec![event(22, "a")]).await.unwrap();
    store.delete_stream("d", ExpectedVersion::Exact(1)).await.unwrap();
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints.unsealed_entries, 3, "{report:?}");
    // Of those, one is an event (the others are the hash rows of `d`): its commit time is the
    // span's first and last; it comes after the newest checkpoint.
    let unsealed = report.checkpoints.unsealed.expect("the unsealed events");
    assert_eq!(unsealed.first, unsealed.last, "{report:?}");
    assert!(report.checkpoints.last.is_some_and(|(_, p, _)| unsealed.from > p), "{report:?}");
    let sealer = Sealer::new(k.clone());
    let last = sealer.seal_all(&store, now()).await.unwrap().expect("sealed");
    assert_eq!((last.seq, last.events), (4, 12));
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.events, report.checkpoints.sealed_entries, report.checkpoints.unsealed_entries),
        (8, 12, 0),
        "{report:?}"
    );
    assert_eq!(report.checkpoints.unsealed, None, "{report:?}");
    // A sealer with another key does not extend this log.
    let foreign = Sealer::new(key(4));
    store.append("a", ExpectedVersion::Exact(4), vec![event(23, "a")]).await.unwrap();
    assert!(foreign.seal(&store, now()).await.is_err());
    store.close().await.unwrap();
}

/// A key alone cannot tell a log whose checkpoints were deleted (and which was then rewritten
/// and sealed again by a server that holds the key) from a log never sealed: the checkpoint
/// witnessed outside the store can. The store must still hold that very checkpoint.
#[tokio::test]
async fn a_witnessed_checkpoint_finds_checkpoints_deleted_or_sealed_again() {
    use pop_store::commitment::{LogCommitment, Trust};
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let (path, positions) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let witness = store.checkpoint(3).await.unwrap().expect("checkpoint 3 is stored");
    assert_eq!(Some(&witness), store.last_checkpoint().await.unwrap().as_ref());
    assert!(store.checkpoint(4).await.unwrap().is_none());
    store.close().await.unwrap();
    let trust = Trust { key: Some(k.verifying_key()), witness: Some(witness.clone()) };
    let check = |edit: &str| {
        let copy = path.with_extension(format!("{}.db", Uuid::new_v4()));
        std::fs::copy(&path, &copy).unwrap();
        Connection::open(&copy).unwrap().execute_batch(edit).unwrap();
        (
            SqliteStore::verify_file_with(&copy, Some(k.verifying_key())).unwrap(),
            SqliteStore::verify_file_trusting(&copy, trust.clone()).unwrap(),
        )
    };
    let (_, intact) = check("");
    assert!(intact.is_intact(), "{intact:?}");

    // Every checkpoint deleted: with the key alone that is a log not sealed yet.
    let b2 = positions[1][2];
    let (keyed, witnessed) = check("DELETE FROM log_checkpoints");
    assert!(keyed.is_intact(), "the hole the witness closes: {keyed:?}");
    assert!(located(&witnessed, "b", 2, b2).contains("end at 0"), "{witnessed:?}");
    // A sealer told of the witness never seals over the deletion (it would begin again at 1
    // and sign whatever the log now holds); with the checkpoints in place it goes on.
    let copy = dir.path().join("deleted.db");
    std::fs::copy(&path, &copy).unwrap();
    Connection::open(&copy).unwrap().execute_batch("DELETE FROM log_checkpoints").unwrap();
    let store = SqliteStore::open(&copy, SqliteOptions::default()).await.unwrap();
    let sealer = Sealer::new(k.clone());
    let refused = sealer.seal_all_after(&store, now(), Some(&witness)).await;
    assert!(
        matches!(
            refused,
            Err(pop_store::commitment::SealError::BehindWitness { held: 0, witnessed: 3 })
        ),
        "{refused:?}"
    );
    assert!(store.last_checkpoint().await.unwrap().is_none(), "nothing was sealed");
    store.close().await.unwrap();
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    assert!(sealer.seal_all_after(&store, now(), Some(&witness)).await.unwrap().is_none());
    store.close().await.unwrap();
    // Only the newest deleted.
    let (_, witnessed) = check("DELETE FROM log_checkpoints WHERE seq = 3");
    assert!(located(&witnessed, "b", 2, b2).contains("end at 2"), "{witnessed:?}");

    // The log replaced, then sealed again with the operator's key (a server that found no
    // checkpoint to extend): consistent, signed by the right key, and not what was witnessed.
    let (forged, _) = sealed(dir.path(), "forged.db", "forged", &k).await;
    let keyed = SqliteStore::verify_file_with(&forged, Some(k.verifying_key())).unwrap();
    assert!(keyed.is_intact(), "{keyed:?}");
    let witnessed = SqliteStore::verify_file_trusting(&forged, trust).unwrap();
    let found = witnessed.first_break.expect("the witness finds the forgery");
    assert!(found.reason.contains("checkpoint 3 is not the one witnessed"), "{found}");
    assert_eq!(found.position, Some(b2), "checkpoint 3 covers b2 alone: {found}");
}

/// `pop export` signs what it exports: it must refuse a log that does not verify, its stored
/// checkpoints and the witnessed one included — a stream removed whole keeps every chain
/// intact, and only the checkpoints show it.
#[tokio::test]
async fn an_export_signs_only_a_log_whose_checkpoints_verify() {
    use pop_store::commitment::LogCommitment;
    use pop_store::transfer::TransferError;
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let (path, p) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let witness = store.last_checkpoint().await.unwrap();
    store.close().await.unwrap();
    let export = |edit: &str, witness: Option<pop_store::commitment::SignedCheckpoint>| {
        let copy = path.with_extension(format!("{}.db", Uuid::new_v4()));
        std::fs::copy(&path, &copy).unwrap();
        Connection::open(&copy).unwrap().execute_batch(edit).unwrap();
        let mut out = Vec::new();
        pop_store::sqlite::transfer::export_trusting(
            &copy,
            Position::START,
            &k,
            witness,
            None,
            &mut out,
            now(),
        )
    };
    assert!(export("", witness.clone()).is_ok());
    let removed = "DELETE FROM events WHERE stream_id = (SELECT id FROM streams WHERE name = 'c'); \
                   DELETE FROM streams WHERE name = 'c';";
    match export(removed, None) {
        Err(TransferError::SourceBroken(b)) => {
            assert_eq!((b.stream.as_str(), b.position), ("c", Some(p[2][1])), "{b}");
        }
        other => panic!("a log without stream c was exported: {other:?}"),
    }
    // Every checkpoint deleted: consistent for the key alone, not for the witness.
    assert!(export("DELETE FROM log_checkpoints", None).is_ok());
    match export("DELETE FROM log_checkpoints", witness) {
        Err(TransferError::SourceBroken(b)) => assert!(b.reason.contains("witnessed"), "{b}"),
        other => panic!("exported past the witness: {other:?}"),
    }
}

/// Events past the newest checkpoint written over longer than allowed are not exported: the
/// rule of `pop verify --max-unsealed-span` (auditor55 M1: an export signed a log whose
/// checkpoints were deleted and whose events were then written over hours, and its import
/// verified). Within the span, with no bound, or once sealed, the same log is exported.
#[tokio::test]
async fn an_export_refuses_events_unsealed_over_a_long_span() {
    use pop_store::transfer::TransferError;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pop.db");
    let at = Arc::new(AtomicI64::new(now().timestamp_micros()));
    let options = || {
        let at = at.clone();
        SqliteOptions {
            durability: Durability::Normal,
            clock: Arc::new(move || DateTime::from_timestamp_micros(at.load(SeqCst)).unwrap()),
            min_free_bytes: 0,
            chain_unchained: false,
            accept_wal_damage: false,
        }
    };
    let k = key(4);
    let store = SqliteStore::open(&path, options()).await.unwrap();
    let sealed = store.append("a", ExpectedVersion::NoStream, vec![event(1, "u")]).await.unwrap();
    Sealer::new(k.clone()).seal_all(&store, now()).await.unwrap().expect("sealed");
    let first = store.append("a", ExpectedVersion::Exact(0), vec![event(2, "u")]).await.unwrap();
    at.fetch_add(2 * 3_600 * 1_000_000, SeqCst);
    store.append("b", ExpectedVersion::NoStream, vec![event(3, "u")]).await.unwrap();
    store.close().await.unwrap();
    let export_since = |since: Position, max: Option<u64>| {
        let mut out = Vec::new();
        pop_store::sqlite::transfer::export_trusting(&path, since, &k, None, max, &mut out, now())
    };
    let export = |max| export_since(Position::START, max);
    match export(Some(3_600)) {
        Err(TransferError::Unsealed { entries, unsealed }) => {
            assert_eq!(entries, 2, "{unsealed:?}");
            // The store's commit floor keeps times rising: a few µs past the clock's.
            let near =
                |a: DateTime<Utc>, b: DateTime<Utc>| (a - b).abs() < chrono::Duration::seconds(1);
            assert!(near(unsealed.first, now()), "{unsealed:?}");
            assert_eq!(unsealed.from, first.position, "{unsealed:?}");
            assert!(near(unsealed.last, now() + chrono::Duration::hours(2)), "{unsealed:?}");
        }
        other => panic!("events unsealed over 2 h were exported under a bound of 1 h: {other:?}"),
    }
    assert!(export(Some(3 * 3_600)).is_ok());
    assert!(export(None).is_ok());
    // Part of the log, after the sealed event: the same two events, the same rule.
    let part = export_since(sealed.position, Some(3_600));
    assert!(matches!(part, Err(TransferError::Unsealed { entries: 2, .. })), "{part:?}");

    let store = SqliteStore::open(&path, options()).await.unwrap();
    Sealer::new(k.clone()).seal_all(&store, now()).await.unwrap().expect("sealed");
    store.close().await.unwrap();
    assert!(export(Some(0)).is_ok(), "a sealed log is exported");
    // And part of it (review56 H1: an export `--since` counted every event unsealed).
    let part = export_since(sealed.position, Some(0));
    assert!(part.is_ok(), "{part:?}");
}

/// An emptied store file beside the checkpoint witnessed of it is said as such, not as an older
/// pop's store to chain (auditor55 L3: the advice was `pop serve --chain-unchained-history`,
/// which would have signed the empty file).
#[tokio::test]
async fn an_emptied_file_is_named_against_its_witness() {
    use pop_store::commitment::LogCommitment;
    let dir = tempfile::tempdir().unwrap();
    let k = key(6);
    let (path, _) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let witness = store.last_checkpoint().await.unwrap();
    store.close().await.unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let verify = |witness| {
        let trust = pop_store::commitment::Trust { key: Some(k.verifying_key()), witness };
        SqliteStore::verify_file_trusting(&empty, trust).unwrap()
    };
    let said = verify(witness).first_break.expect("an emptied file passed").reason;
    assert!(said.contains("checkpoint 3 witnessed") && said.contains("9 entries"), "{said}");
    assert!(said.contains("emptied or replaced"), "{said}");
    assert!(!said.contains("chain-unchained"), "{said}");
    let said = verify(None).first_break.expect("an empty file passed").reason;
    assert!(said.contains("holds no table") && !said.contains("chain-unchained"), "{said}");
}

/// A checkpoint is stored only after its predecessor: one deleted while the next was being
/// sealed leaves no link past the hole (which the server's witness then finds).
#[tokio::test]
async fn a_checkpoint_is_stored_only_after_its_predecessor() {
    use pop_store::commitment::LogCommitment;
    let dir = tempfile::tempdir().unwrap();
    let k = key(5);
    let (path, _) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let (two, three) =
        (store.checkpoint(2).await.unwrap().unwrap(), store.checkpoint(3).await.unwrap().unwrap());
    store.close().await.unwrap();
    Connection::open(&path)
        .unwrap()
        .execute_batch("DELETE FROM log_checkpoints WHERE seq >= 2")
        .unwrap();
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    assert!(!store.add_checkpoint(&three).await.unwrap(), "3 was stored after a hole");
    assert!(store.add_checkpoint(&two).await.unwrap());
    assert!(store.add_checkpoint(&three).await.unwrap());
    assert!(!store.add_checkpoint(&three).await.unwrap(), "taken already");
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    store.close().await.unwrap();
}

/// A sealed hash row of a deleted stream changed outside pop: every digest and chain still
/// verifies, and the checkpoint's log hash does not; the break says it is in the range that
/// checkpoint adds, not that the range's first entry was changed (auditor59 M1).
#[tokio::test]
async fn a_sealed_hash_row_changed_is_said_as_the_range_it_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(4);
    let (path, _) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    store
        .append("d", ExpectedVersion::NoStream, vec![event(20, "d"), event(21, "d")])
        .await
        .unwrap();
    store.append("a", ExpectedVersion::Exact(3), vec![event(22, "a")]).await.unwrap();
    store.delete_stream("d", ExpectedVersion::Exact(1)).await.unwrap();
    let sealed_to = Sealer::new(k.clone()).seal_all(&store, now()).await.unwrap();
    assert!(sealed_to.is_some());
    assert!(store.verify_with(Some(k.verifying_key())).await.unwrap().is_intact());
    store.close().await.unwrap();
    let conn = Connection::open(&path).unwrap();
    let d = "(SELECT id FROM streams WHERE name = 'd')";
    let changed = conn
        .execute(
            &format!(
                "UPDATE pruned SET chain = zeroblob(32) WHERE stream_id = {d} AND version = 0"
            ),
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    let found = report.first_break.expect("the changed row is found");
    assert!(found.reason.contains("an entry differs from what was signed"), "{found}");
    assert!(
        found.reason.contains(" after position ") && found.reason.contains("up to position"),
        "{found}"
    );
    assert!(found.reason.contains("deleted stream's hash row"), "{found}");
    store.close().await.unwrap();
}

/// A hash row moved outside pop, past the log's head or onto an event's position, is not
/// signed (auditor20: the server sealed "up to position 5000", or sealed two entries at one
/// position, and verify then blamed the next real event or export refused for good).
#[tokio::test]
async fn a_hash_row_moved_outside_pop_is_not_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let (path, _) = sealed(dir.path(), "pop.db", "real", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    // `d` (positions 10 and 11) written and deleted after the seals; `a` goes on at 12.
    store
        .append("d", ExpectedVersion::NoStream, vec![event(20, "d"), event(21, "d")])
        .await
        .unwrap();
    store.append("a", ExpectedVersion::Exact(3), vec![event(22, "a")]).await.unwrap();
    store.delete_stream("d", ExpectedVersion::Exact(1)).await.unwrap();
    store.close().await.unwrap();
    let moved = |to: &str| {
        let copy = dir.path().join(format!("moved-{to}.db"));
        std::fs::copy(&path, &copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        let d = "(SELECT id FROM streams WHERE name = 'd')";
        conn.execute_batch(&format!(
            "UPDATE pruned SET position = {to} WHERE stream_id = {d} AND version = 1"
        ))
        .unwrap();
        copy
    };
    // Nor exported and signed (auditor21: export signed such logs, and their import
    // verified intact): past the head, before the first position, or out of order.
    for to in ["5000", "0", "9"] {
        let mut out = Vec::new();
        let exported = pop_store::sqlite::transfer::export_trusting(
            &moved(to),
            Position::START,
            &k,
            None,
            None,
            &mut out,
            now(),
        );
        match exported {
            Err(pop_store::transfer::TransferError::SourceBroken(b)) => {
                assert_eq!(b.stream, "d", "moved to {to}: {b}");
            }
            other => panic!("moved to {to}: exported: {other:?}"),
        }
    }
    // Past the head: nothing is sealed around it, and verify names the row.
    let store = SqliteStore::open(moved("5000"), SqliteOptions::default()).await.unwrap();
    let refused = Sealer::new(k.clone()).seal_all(&store, now()).await;
    let refused = refused.map(|c| c.map(|c| c.seq)).expect_err("not sealed");
    assert!(refused.to_string().contains("past the log's head"), "{refused}");
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    let found = report.first_break.expect("the moved row is found");
    assert_eq!((found.stream.as_str(), found.version), ("d", Some(1)), "{found}");
    assert!(found.reason.contains("past the log's head"), "{found}");
    store.close().await.unwrap();
    // Onto the position of `a`'s last event: the sealer refuses to sign.
    let store = SqliteStore::open(moved("12"), SqliteOptions::default()).await.unwrap();
    // The first thing wrong in log order is said: the position the row left holds nothing
    // (auditor31: a hole is never sealed over), before the entry it doubles at 12.
    let refused = Sealer::new(k.clone()).seal_all(&store, now()).await;
    let refused = refused.map(|c| c.map(|c| c.seq)).expect_err("not sealed");
    assert!(refused.to_string().contains("position 11 of the log holds no entry"), "{refused}");
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    let found = report.first_break.expect("the moved row is found");
    assert!(found.reason.contains("a second entry at this position"), "{found}");
    assert_eq!(found.position, Some(Position::from_sequence(12)), "{found}");
    store.close().await.unwrap();
}

/// A key rotation: the new key extends the log only when told which key signed it before
/// (its file: the old key endorses the new; or, lost, its id: then only the checkpoint
/// witnessed outside the store is taken over). Verification with the new key checks the old
/// checkpoints with the old public key the handover names, with the old key follows the
/// endorsement, and a checkpoint signed by a key no handover names still breaks.
#[tokio::test]
async fn a_key_rotation_hands_the_log_over_and_still_verifies() {
    use pop_store::commitment::{LogCommitment, PreviousKey, SealError, Trust, key_id};
    use pop_store::verify::KeyChange;
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (key(1), key(2), key(3));
    let id = |k: &CheckpointSigningKey| key_id(&k.verifying_key());
    let (path, _) = sealed(dir.path(), "pop.db", "rotated", &a).await;
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options.clone()).await.unwrap();
    store.append("d", ExpectedVersion::NoStream, vec![event(40, "d")]).await.unwrap();

    // Without being told, the new key refuses to extend the old key's checkpoints, and says
    // which key signed them.
    let refused = Sealer::new(b.clone()).seal(&store, now()).await;
    assert!(matches!(&refused, Err(SealError::Foreign(e)) if e.contains(&id(&a))), "{refused:?}");
    // Told the old key: checkpoint 4 records the handover, endorsed by it.
    let rotated = Sealer::new(b.clone()).handing_over(vec![PreviousKey::Held(a.clone())]);
    let four = rotated.seal_all(&store, now()).await.unwrap().expect("sealed");
    assert_eq!(four.seq, 4);
    let h = four.handover.clone().expect("a handover");
    assert_eq!((h.from_key_id.as_str(), h.endorsement.is_some()), (id(&a).as_str(), true));
    // The next seals are plain ones of the new key, with or without the old key given.
    store.append("d", ExpectedVersion::Exact(0), vec![event(41, "d")]).await.unwrap();
    let five = Sealer::new(b.clone()).seal_all(&store, now()).await.unwrap().expect("sealed");
    assert_eq!((five.seq, five.handover), (5, None));

    let change = KeyChange { seq: 4, from: id(&a), to: id(&b), endorsed: true };
    for (trusted, name) in [(&b, "the new key"), (&a, "the old key, following its endorsement")] {
        let r = store.verify_with(Some(trusted.verifying_key())).await.unwrap();
        assert!(r.is_intact(), "{name}: {r:?}");
        assert_eq!(r.checkpoints.checkpoints, 5, "{name}: {r:?}");
        assert_eq!(r.checkpoints.key_changes, vec![change.clone()], "{name}: {r:?}");
        assert_eq!(r.checkpoints.pinned, 0, "{name}: {r:?}");
    }
    let r = store.verify_with(Some(c.verifying_key())).await.unwrap();
    // A key no checkpoint names: said, with what to do if it is a new one (ops3am11), and
    // known as such, so `pop verify` says NOT VERIFIED, not TAMPERED (newcomer57 L2).
    assert_eq!(r.checkpoints.signer_not_handed_over, Some(id(&c)), "{r:?}");
    let found = r.first_break.expect("another key");
    assert!(found.reason.contains("checkpoint 1 is not signed"), "{found}");
    assert!(found.reason.contains("not been handed over to yet"), "{found}");

    // The key B is lost: C takes over by its id only, and only the witnessed checkpoint.
    let newest = store.last_checkpoint().await.unwrap().expect("checkpoint 5");
    store.append("d", ExpectedVersion::Exact(1), vec![event(42, "d")]).await.unwrap();
    let lost = Sealer::new(c.clone()).handing_over(vec![PreviousKey::Lost(id(&b))]);
    for (witness, said) in [
        (None, "there is no witness"),
        (store.checkpoint(4).await.unwrap(), "witnessed outside the store is checkpoint 4"),
    ] {
        let refused = lost.seal_all_after(&store, now(), witness.as_ref()).await;
        assert!(matches!(&refused, Err(SealError::Foreign(e)) if e.contains(said)), "{refused:?}");
    }
    let six = lost.seal_all_after(&store, now(), Some(&newest)).await.unwrap().expect("sealed");
    let h = six.handover.clone().expect("a handover");
    assert_eq!((h.from_key_id.as_str(), h.endorsement, h.from_key), (id(&b).as_str(), None, None));
    // With C: B's handover is pinned by the chain to C's first checkpoint, so the public key
    // of A it names checks A's checkpoints, A's endorsement there checks B's public key, and
    // that one B's checkpoints: every signature is still checked.
    let r = store.verify_with(Some(c.verifying_key())).await.unwrap();
    assert!(r.is_intact(), "{r:?}");
    assert_eq!(r.checkpoints.checkpoints, 6, "{r:?}");
    assert_eq!(
        r.checkpoints.key_changes,
        vec![change.clone(), KeyChange { seq: 6, from: id(&b), to: id(&c), endorsed: false }]
    );
    assert_eq!(r.checkpoints.pinned, 0, "{r:?}");
    // With B (or A) the lost key's successor is not vouched for: named, with what to do.
    let r = store.verify_with(Some(b.verifying_key())).await.unwrap();
    let found = r.first_break.expect("C is not B's");
    assert!(found.reason.contains("checkpoint 6 is not signed by key"), "{found}");
    assert!(found.reason.contains("without that key's endorsement"), "{found}");
    // A checkpoint of the old key edited before the handover is still found.
    store.close().await.unwrap();
    let r = {
        let copy = path.with_extension("edited.db");
        std::fs::copy(&path, &copy).unwrap();
        Connection::open(&copy)
            .unwrap()
            .execute_batch(
                "UPDATE log_checkpoints SET body = CAST(replace(CAST(body AS TEXT), '\"events\":8', '\"events\":7') AS BLOB) WHERE seq = 2",
            )
            .unwrap();
        SqliteStore::verify_file_trusting(
            &copy,
            Trust { key: Some(c.verifying_key()), witness: None },
        )
        .unwrap()
    };
    assert!(r.first_break.expect("edited").reason.contains("checkpoint 2 is not signed by key"));
}

/// The first key lost: its checkpoints cannot be checked by signature any more, and the new
/// key's first checkpoint, which takes over only the witnessed one, pins them by the chain.
#[tokio::test]
async fn a_lost_first_key_leaves_its_checkpoints_pinned_by_the_chain() {
    use pop_store::commitment::{LogCommitment, PreviousKey, key_id};
    use pop_store::verify::KeyChange;
    let dir = tempfile::tempdir().unwrap();
    let (a, c) = (key(1), key(3));
    let (path, _) = sealed(dir.path(), "pop.db", "lost", &a).await;
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options).await.unwrap();
    let witness = store.last_checkpoint().await.unwrap();
    store.append("d", ExpectedVersion::NoStream, vec![event(40, "d")]).await.unwrap();
    let lost =
        Sealer::new(c.clone()).handing_over(vec![PreviousKey::Lost(key_id(&a.verifying_key()))]);
    let four = lost.seal_all_after(&store, now(), witness.as_ref()).await.unwrap().expect("sealed");
    assert_eq!(four.seq, 4);
    let r = store.verify_with(Some(c.verifying_key())).await.unwrap();
    assert!(r.is_intact(), "{r:?}");
    assert_eq!((r.checkpoints.checkpoints, r.checkpoints.pinned), (4, 3), "{r:?}");
    assert_eq!(
        r.checkpoints.key_changes,
        vec![KeyChange {
            seq: 4,
            from: key_id(&a.verifying_key()),
            to: key_id(&c.verifying_key()),
            endorsed: false
        }]
    );
    // A checkpoint after the handover that names no trusted key is not pinned.
    let r = store.verify_with(Some(a.verifying_key())).await.unwrap();
    assert!(r.first_break.expect("C is not A's").reason.contains("checkpoint 4 is not signed"));
    store.close().await.unwrap();
    // An edited checkpoint of the lost key is found (here by its own content; one edited to
    // match an edited log, by the link of the next one: the chain to the handover).
    let copy = path.with_extension("edited.db");
    std::fs::copy(&path, &copy).unwrap();
    Connection::open(&copy)
        .unwrap()
        .execute_batch(
            "UPDATE log_checkpoints SET body = CAST(replace(CAST(body AS TEXT), '\"events\":8', '\"events\":7') AS BLOB) WHERE seq = 2",
        )
        .unwrap();
    let r = SqliteStore::verify_file_with(&copy, Some(c.verifying_key())).unwrap();
    let found = r.first_break.expect("edited");
    assert!(found.reason.contains("checkpoint 2 covers 7 entries"), "{found}");
}

/// A witness file edited (its checkpoint's signature, or its body) is said to be the witness's
/// fault, not the store's (auditor19 N6: it was blamed on the store's checkpoints).
#[tokio::test]
async fn an_edited_witness_is_named_as_such() {
    use pop_store::commitment::{LogCommitment, Trust};
    let dir = tempfile::tempdir().unwrap();
    let k = key(3);
    let (path, _) = sealed(dir.path(), "pop.db", "witness", &k).await;
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let genuine = store.checkpoint(2).await.unwrap().expect("checkpoint 2");
    store.close().await.unwrap();
    let mut signature = genuine.clone();
    signature.signature[3] ^= 1;
    let mut body = genuine.clone();
    body.body =
        String::from_utf8(body.body).unwrap().replace("\"events\":8", "\"events\":7").into_bytes();
    let mut ahead = genuine.clone();
    ahead.seq = 9;
    for (witness, what) in [(signature, "signature"), (body, "body"), (ahead, "a later seq")] {
        let trust = Trust { key: Some(k.verifying_key()), witness: Some(witness) };
        let r = SqliteStore::verify_file_trusting(&path, trust).unwrap();
        let found = r.first_break.unwrap_or_else(|| panic!("{what}: not found"));
        assert!(found.reason.contains("the witness file was edited"), "{what}: {found}");
    }
    let trust = Trust { key: Some(k.verifying_key()), witness: Some(genuine) };
    assert!(SqliteStore::verify_file_trusting(&path, trust).unwrap().is_intact());
}

/// What a sealer that cannot extend the log says: a replica still on the key that endorsed a
/// handover is told to restart with the new one; previous keys given that did not sign are
/// named; a lost key with no witness at all is taken over only on the operator's word
/// (`--checkpoint-takeover-unwitnessed`), and never against a witness that disagrees
/// (newcomer10, auditor23).
#[tokio::test]
async fn a_sealer_that_cannot_extend_the_log_says_why_and_what_to_do() {
    use pop_store::commitment::{LogCommitment, PreviousKey, SealError, key_id};
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (key(1), key(2), key(3), key(4));
    let id = |k: &CheckpointSigningKey| key_id(&k.verifying_key());
    let (path, _) = sealed(dir.path(), "pop.db", "why", &a).await;
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options).await.unwrap();
    let refused = |r: Result<Option<pop_store::commitment::Checkpoint>, SealError>| match r {
        Err(SealError::Foreign(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let a_signed = store.last_checkpoint().await.unwrap();

    // Previous keys given that did not sign it are named.
    store.append("d", ExpectedVersion::NoStream, vec![event(40, "d")]).await.unwrap();
    let wrong = Sealer::new(c.clone()).handing_over(vec![PreviousKey::Held(d.clone())]);
    let why = refused(wrong.seal(&store, now()).await);
    assert!(why.contains(&format!("none of the previous keys given (key {})", id(&d))), "{why}");

    // A lost key with no witness: refused, naming the flag; taken over with it.
    let lost = || Sealer::new(c.clone()).handing_over(vec![PreviousKey::Lost(id(&a))]);
    let why = refused(lost().seal_all_after(&store, now(), None).await);
    assert!(why.contains("--checkpoint-takeover-unwitnessed"), "{why}");
    // A witness that disagrees is never overruled.
    let older = store.checkpoint(2).await.unwrap().expect("checkpoint 2");
    let why = refused(
        lost().taking_over_unwitnessed(true).seal_all_after(&store, now(), Some(&older)).await,
    );
    assert!(why.contains("the checkpoint witnessed outside the store is checkpoint 2"), "{why}");
    // With what to do if the witness is only behind (review-s39 R5).
    assert!(why.contains("move the witness file away"), "{why}");
    assert_eq!(store.last_checkpoint().await.unwrap(), a_signed, "nothing was sealed");
    let taken = lost().taking_over_unwitnessed(true).seal_all_after(&store, now(), None).await;
    let taken = taken.unwrap().expect("sealed");
    assert_eq!(taken.handover.map(|h| h.endorsement), Some(None));

    // C hands over to B, endorsed: a replica still on C is told to restart.
    store.append("d", ExpectedVersion::Exact(0), vec![event(41, "d")]).await.unwrap();
    let handed = Sealer::new(b.clone()).handing_over(vec![PreviousKey::Held(c.clone())]);
    handed.seal_all(&store, now()).await.unwrap().expect("sealed");
    store.append("d", ExpectedVersion::Exact(1), vec![event(42, "d")]).await.unwrap();
    let why = refused(Sealer::new(c.clone()).seal(&store, now()).await);
    assert!(why.contains("restart this replica with the new --checkpoint-key"), "{why}");
    // Also once B has sealed on past its handover (ops3am12: after one round it went back to
    // advising to name B as the previous key).
    store.append("d", ExpectedVersion::Exact(2), vec![event(43, "d")]).await.unwrap();
    Sealer::new(b.clone()).seal_all(&store, now()).await.unwrap().expect("B seals on");
    let why = refused(Sealer::new(c.clone()).seal(&store, now()).await);
    assert!(why.contains("restart this replica with the new --checkpoint-key"), "{why}");
    let r = store.verify_with(Some(b.verifying_key())).await.unwrap();
    assert!(r.is_intact(), "{r:?}");
    store.close().await.unwrap();
}

/// A key that handed the log on cannot take it back by declaring its successor lost (a
/// retired key, leaked say: ops3am11 had verify say intact with either key); with the
/// endorsement of the key it takes it from, it can (a rotation back).
#[tokio::test]
async fn a_retired_key_takes_the_log_back_only_with_an_endorsement() {
    use pop_store::commitment::{LogCommitment, PreviousKey, key_id};
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(1), key(2));
    let id = |k: &CheckpointSigningKey| key_id(&k.verifying_key());
    let (path, _) = sealed(dir.path(), "pop.db", "retired", &a).await;
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options.clone()).await.unwrap();
    store.append("d", ExpectedVersion::NoStream, vec![event(40, "d")]).await.unwrap();
    let rotated = Sealer::new(b.clone()).handing_over(vec![PreviousKey::Held(a.clone())]);
    rotated.seal_all(&store, now()).await.unwrap().expect("A hands over to B");
    store.close().await.unwrap();
    let after_b = path.with_extension("b.db");
    std::fs::copy(&path, &after_b).unwrap();
    let store = SqliteStore::open(&path, options.clone()).await.unwrap();

    // A's holder declares B lost to take the log back: pop's sealer refuses (ops3am12).
    store.append("d", ExpectedVersion::Exact(0), vec![event(41, "d")]).await.unwrap();
    let newest = store.last_checkpoint().await.unwrap();
    let back = Sealer::new(a.clone()).handing_over(vec![PreviousKey::Lost(id(&b))]);
    let refused = back.seal_all_after(&store, now(), newest.as_ref()).await;
    assert!(
        matches!(&refused, Err(pop_store::commitment::SealError::Foreign(e))
            if e.contains(&format!("handed the log over to key {} at checkpoint 4", id(&b)))),
        "{refused:?}"
    );
    // A forger with A and the database does it by hand: the takeover another key would seal
    // (checkpoint 5), signed by A instead.
    let c = key(3);
    let other = Sealer::new(c.clone()).handing_over(vec![PreviousKey::Lost(id(&b))]);
    let mut five = other.seal_all_after(&store, now(), newest.as_ref()).await.unwrap().unwrap();
    store.close().await.unwrap();
    five.key_id = id(&a);
    if let Some(h) = five.handover.as_mut() {
        h.to_key = pop_store::digest::hex(a.verifying_key().as_bytes());
    }
    let forged = pop_store::commitment::SignedCheckpoint::sign(&five, &a).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE log_checkpoints SET body = ?1, signature = ?2 WHERE seq = 5",
            rusqlite::params![forged.body, forged.signature],
        )
        .unwrap();
    for (k, name) in [(&b, "B"), (&a, "A")] {
        let r = SqliteStore::verify_file_with(&path, Some(k.verifying_key())).unwrap();
        let found = r.first_break.unwrap_or_else(|| panic!("verified with {name}: intact"));
        assert!(found.reason.contains("handed the log on at checkpoint 4"), "{name}: {found}");
    }

    // The same log as after A -> B, handed back to A with B's endorsement: a rotation back.
    let store = SqliteStore::open(&after_b, options).await.unwrap();
    store.append("d", ExpectedVersion::Exact(0), vec![event(41, "d")]).await.unwrap();
    let back = Sealer::new(a.clone()).handing_over(vec![PreviousKey::Held(b.clone())]);
    back.seal_all(&store, now()).await.unwrap().expect("sealed");
    for k in [&a, &b] {
        let r = store.verify_with(Some(k.verifying_key())).await.unwrap();
        assert!(r.is_intact(), "{r:?}");
        assert_eq!(r.checkpoints.key_changes.len(), 2, "{r:?}");
    }
    store.close().await.unwrap();
}

/// A log that takes one more event each time the sealer asks what to seal, `left` times: writes
/// that never pause.
struct Growing {
    store: SqliteStore,
    left: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl pop_store::commitment::LogCommitment for Growing {
    async fn last_checkpoint(
        &self,
    ) -> Result<Option<pop_store::commitment::SignedCheckpoint>, pop_store::StoreError> {
        self.store.last_checkpoint().await
    }
    async fn checkpoint(
        &self,
        seq: u64,
    ) -> Result<Option<pop_store::commitment::SignedCheckpoint>, pop_store::StoreError> {
        self.store.checkpoint(seq).await
    }
    async fn sealable_entries(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<pop_store::commitment::LogEntry>, pop_store::StoreError> {
        let left = self.left.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.left.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            self.store.append("w", ExpectedVersion::Any, vec![event(left, "grow")]).await?;
        }
        self.store.sealable_entries(after, max).await
    }
    async fn add_checkpoint(
        &self,
        checkpoint: &pop_store::commitment::SignedCheckpoint,
    ) -> Result<bool, pop_store::StoreError> {
        self.store.add_checkpoint(checkpoint).await
    }
}

/// A sealing round under writes that never pause seals what was there and ends: checkpoints
/// of the most entries while a backlog is there, then one of what was left (ops3am13: each
/// pass sealed what came during the last, so a round ended only at a lull, with a checkpoint
/// per ~27 events).
#[tokio::test]
async fn a_sealing_round_under_steady_writes_ends() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&dir.path().join("grow.db"), options).await.unwrap();
    let backlog: Vec<NewEvent> = (0..6).map(|n| event(n, "backlog")).collect();
    store.append("a", ExpectedVersion::NoStream, backlog).await.unwrap();
    let log = Growing { store, left: std::sync::atomic::AtomicU32::new(20) };
    let sealer = Sealer::with_max_entries(key(1), 4);
    // Each pass first sees one more event. Pass 1: entries 1-4 of 7 (full: on); pass 2: 5-8
    // (full: on); pass 3: 9, fewer than a full checkpoint, so the round ends there.
    let newest = sealer.seal_all(&log, now()).await.unwrap().expect("sealed");
    assert_eq!((newest.seq, newest.events), (3, 9), "{newest:?}");
    assert_eq!(log.left.load(std::sync::atomic::Ordering::SeqCst), 17);
    // The next round goes on from there.
    let next = sealer.seal_all(&log, now()).await.unwrap().expect("sealed");
    assert_eq!((next.seq, next.events), (4, 10), "{next:?}");
}
