//! Signed checkpoints on PostgreSQL ([`pop_store::commitment`]): a log is sealed in several
//! checkpoints, then changed in the database in the ways a chain per stream cannot show — a
//! stream removed whole, the log's tail cut with the stream row rewritten to match, the whole
//! log replaced by a consistent forgery sealed without the key — and verification must find
//! each with its stream, version and position. A stream deleted on purpose (the data reaper)
//! keeps its hash rows and still verifies; two replicas sealing at once keep one checkpoint
//! per number. Each case runs on a fresh database of a throwaway cluster
//! (`POP_REQUIRE_POSTGRES=1` turns a missing PostgreSQL into a failure).

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use pop_store::commitment::{CheckpointSigningKey, LogCommitment, Sealer};
use pop_store::test_cluster::TestCluster;
use pop_store::verify::Verification;
use pop_store::{
    Direction, EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore, Position, fixed_clock,
};
use tokio_postgres::NoTls;
use uuid::Uuid;

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

fn options() -> PgOptions {
    PgOptions { clock: fixed_clock(now()), database_clock: false, ..PgOptions::default() }
}

/// A fresh database with streams a (4 events), b (3) and c (2), interleaved (a0 a1 b0 a2 a3
/// c0 c1 b1 b2), sealed by `signer` in checkpoints of at most 4 entries. Returns its URL, the
/// open store and each stream's positions by version.
async fn sealed(
    cluster: &TestCluster,
    salt: &str,
    signer: &CheckpointSigningKey,
) -> (String, PgStore, Vec<Vec<Position>>) {
    let url = cluster.create_database().await.unwrap();
    let store = PgStore::connect(&url, options()).await.unwrap();
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
    let mut positions = Vec::new();
    for s in ["a", "b", "c"] {
        let events = store.read_stream(s, 0, 100, Direction::Forwards).await.unwrap();
        positions.push(events.iter().map(|e| e.position).collect::<Vec<_>>());
    }
    let report =
        pop_store::postgres::verify_with(&url, Some(signer.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.checkpoints.checkpoints, report.checkpoints.sealed_entries), (3, 9));
    assert_eq!(report.checkpoints.last.map(|l| (l.0, l.1)), Some((3, positions[1][2])));
    (url, store, positions)
}

async fn sql(url: &str, edit: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(edit).await.unwrap();
    drop(client);
    let _ = driver.await;
}

async fn tampered(
    cluster: &TestCluster,
    k: &CheckpointSigningKey,
    edit: impl FnOnce(&[Vec<Position>]) -> String,
) -> (Verification, Vec<Vec<Position>>) {
    let (url, store, positions) = sealed(cluster, "real", k).await;
    store.close().await;
    sql(&url, &edit(&positions)).await;
    (pop_store::postgres::verify_with(&url, Some(k.verifying_key())).await.unwrap(), positions)
}

fn at(p: Position) -> String {
    format!("tx_id = {} AND seq = {}", p.commit(), p.prepare())
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
    let Some(cluster) = TestCluster::shared("checkpoints_find_what_chains_cannot") else {
        return;
    };
    let k = key(7);

    // Checked with another key: no checkpoint is accepted.
    let (url, store, p) = sealed(cluster, "real", &k).await;
    store.close().await;
    let r = pop_store::postgres::verify_with(&url, Some(key(8).verifying_key())).await.unwrap();
    assert!(located(&r, "a", 0, p[0][0]).contains("not signed by key"), "{r:?}");

    // A stream removed whole, its row included.
    let (r, p) = tampered(cluster, &k, |_| {
        "DELETE FROM pop_events WHERE stream = 'c'; DELETE FROM pop_streams WHERE name = 'c';"
            .into()
    })
    .await;
    assert!(located(&r, "c", 1, p[2][1]).contains("the stream was removed"), "{r:?}");

    // The log's tail cut (b's version 2) and b's row rewritten to end at version 1.
    let (r, p) = tampered(cluster, &k, |p| {
        let (b1, b2) = (p[1][1], p[1][2]);
        format!(
            "DELETE FROM pop_events WHERE {}; \
             UPDATE pop_streams SET version = 1, last_tx = {}, last_seq = {}, \
               head_hash = (SELECT chain FROM pop_events WHERE {}) WHERE name = 'b';",
            at(b2),
            b1.commit(),
            b1.prepare(),
            at(b1)
        )
    })
    .await;
    located(&r, "b", 2, p[1][2]);

    // a's version 3 and c's version 0 swap places in global order, rows and all.
    let (r, p) = tampered(cluster, &k, |p| {
        let (a3, c0) = (p[0][3], p[2][0]);
        format!(
            "UPDATE pop_events SET tx_id = -1, seq = -1 WHERE {a}; \
             UPDATE pop_events SET tx_id = {t0}, seq = {s0} WHERE {c}; \
             UPDATE pop_events SET tx_id = {t1}, seq = {s1} WHERE tx_id = -1 AND seq = -1;",
            a = at(a3),
            c = at(c0),
            t0 = a3.commit(),
            s0 = a3.prepare(),
            t1 = c0.commit(),
            s1 = c0.prepare(),
        )
    })
    .await;
    located(&r, "a", 3, p[0][3]);

    // A checkpoint removed from the middle.
    let (r, p) =
        tampered(cluster, &k, |_| "DELETE FROM pop_checkpoints WHERE seq = 2".into()).await;
    assert!(located(&r, "a", 3, p[0][3]).contains("checkpoint 2 is missing"), "{r:?}");

    // The whole log replaced by a consistent forgery sealed with a key that is not the
    // operator's.
    let (forged, store, p) = sealed(cluster, "forged", &key(9)).await;
    store.close().await;
    let r = pop_store::postgres::verify_with(&forged, Some(k.verifying_key())).await.unwrap();
    assert!(located(&r, "a", 0, p[0][0]).contains("checkpoint 1 is not signed by key"), "{r:?}");
}

#[tokio::test]
async fn a_deleted_stream_keeps_its_hash_rows_and_replicas_seal_one_checkpoint_each() {
    let Some(cluster) = TestCluster::shared("checkpoints_deleted_stream_and_replicas") else {
        return;
    };
    let k = key(3);
    let (url, store, _) = sealed(cluster, "real", &k).await;
    // Deleted after it was sealed: checkpoint 2 still recomputes from the hash rows.
    store.delete_stream("c", ExpectedVersion::Exact(1)).await.unwrap();
    store
        .append("d", ExpectedVersion::NoStream, vec![event(20, "d"), event(21, "d")])
        .await
        .unwrap();
    store.append("a", ExpectedVersion::Exact(3), vec![event(22, "a")]).await.unwrap();
    store.delete_stream("d", ExpectedVersion::Exact(1)).await.unwrap();
    let report = pop_store::postgres::verify_with(&url, Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints.unsealed_entries, 3, "{report:?}");
    // Of those, one is an event (the others are the hash rows of `d`): its commit time is the
    // span's first and last; it comes after the newest checkpoint.
    let unsealed = report.checkpoints.unsealed.expect("the unsealed events");
    assert_eq!(unsealed.first, unsealed.last, "{report:?}");
    assert!(report.checkpoints.last.is_some_and(|(_, p, _)| unsealed.from > p), "{report:?}");
    // Two replicas seal at once: one checkpoint 4, and both agree it is there.
    let other = PgStore::connect(&url, options()).await.unwrap();
    let (one, two) = (Sealer::new(k.clone()), Sealer::new(k.clone()));
    let (x, y) = tokio::join!(one.seal(&store, now()), two.seal(&other, now()));
    let sealed: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
    assert_eq!(sealed.len(), 1, "one of the two wins: {sealed:?}");
    assert_eq!((sealed[0].seq, sealed[0].events), (4, 12));
    assert_eq!(other.last_checkpoint().await.unwrap().map(|c| c.seq), Some(4));
    let report = pop_store::postgres::verify_with(&url, Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.events, report.checkpoints.sealed_entries, report.checkpoints.unsealed_entries),
        (8, 12, 0),
        "{report:?}"
    );
    assert_eq!(report.checkpoints.unsealed, None, "{report:?}");
    store.close().await;
    other.close().await;
}

/// A checkpoint is stored only after its predecessor: one deleted while the next was being
/// sealed leaves no link past the hole (which the server's witness then finds).
#[tokio::test]
async fn a_checkpoint_is_stored_only_after_its_predecessor() {
    use pop_store::commitment::LogCommitment;
    let Some(cluster) = TestCluster::shared("checkpoint_after_its_predecessor") else {
        return;
    };
    let k = key(5);
    let (url, store, _) = sealed(cluster, "real", &k).await;
    let (two, three) =
        (store.checkpoint(2).await.unwrap().unwrap(), store.checkpoint(3).await.unwrap().unwrap());
    sql(&url, "DELETE FROM pop_checkpoints WHERE seq >= 2").await;
    assert!(!store.add_checkpoint(&three).await.unwrap(), "3 was stored after a hole");
    assert!(store.add_checkpoint(&two).await.unwrap());
    assert!(store.add_checkpoint(&three).await.unwrap());
    assert!(!store.add_checkpoint(&three).await.unwrap(), "taken already");
    let report = pop_store::postgres::verify_with(&url, Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    store.close().await;
}

/// A hash row of a stream pop did not delete, added outside pop at a transaction id no event
/// uses, is not sealed: the sealer refuses (newcomer9: the servers signed it, and verify and
/// export then called the log tampered with).
#[tokio::test]
async fn a_stray_hash_row_is_never_sealed() {
    let Some(cluster) = TestCluster::shared("a_stray_hash_row_is_never_sealed") else {
        return;
    };
    let k = key(7);
    let (url, store, _) = sealed(cluster, "real", &k).await;
    // At the id of a transaction of its own, then an event after it: inside the next range.
    sql(
        &url,
        "INSERT INTO pop_pruned (tx_id, seq, stream, version, chain) \
         VALUES (txid_current(), 1, 'ghost', 0, decode(repeat('11', 32), 'hex'))",
    )
    .await;
    store.append("a", ExpectedVersion::Exact(3), vec![event(50, "after")]).await.unwrap();
    let refused = Sealer::with_max_entries(k.clone(), 4).seal_all(&store, now()).await;
    let refused = refused.map(|c| c.map(|c| c.seq)).expect_err("not sealed");
    assert!(refused.to_string().contains("a hash row is kept for"), "{refused}");
    assert!(refused.to_string().contains("ghost"), "{refused}");
    store.close().await;
}
