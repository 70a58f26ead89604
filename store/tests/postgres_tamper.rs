//! Tamper evidence on PostgreSQL: a log is written through the store, then edited directly in
//! the database the way someone with database access could, and verification must find each
//! edit with its stream, version and position. Also: chains stay right under concurrent group
//! commits, a deleted (reaped) stream still verifies, and a database from before the chain is
//! migrated (backfilled) and then verifies. Each case runs on a fresh database of a throwaway
//! cluster (`POP_REQUIRE_POSTGRES=1` turns a missing PostgreSQL into a failure).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use pop_store::test_cluster::TestCluster;
use pop_store::verify::Verification;
use pop_store::{
    Direction, EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore, Position, fixed_clock,
};
use tokio_postgres::NoTls;
use uuid::Uuid;

fn event(n: u32) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: format!("Type{}", n % 3),
        schema_version: 1,
        data: format!("{{\"n\":{n}}}").into_bytes(),
        metadata: format!("{{\"actor\":\"user:u{n}\"}}").into_bytes(),
    }
}

fn options() -> PgOptions {
    let at = DateTime::<Utc>::from_timestamp_micros(1_800_000_000_123_456).unwrap();
    PgOptions { clock: fixed_clock(at), database_clock: false, ..PgOptions::default() }
}

/// A fresh database with streams a (4 events, two appends), b (3) and c (2), interleaved;
/// returns its URL and each stream's positions by version.
async fn pristine(cluster: &TestCluster) -> (String, Vec<Vec<Position>>) {
    let url = cluster.create_database().await.unwrap();
    let store = PgStore::connect(&url, options()).await.unwrap();
    let mut n = 0;
    let mut next = || {
        n += 1;
        event(n)
    };
    store.append("a", ExpectedVersion::NoStream, vec![next(), next()]).await.unwrap();
    store.append("b", ExpectedVersion::NoStream, vec![next()]).await.unwrap();
    store.append("a", ExpectedVersion::Exact(1), vec![next(), next()]).await.unwrap();
    store.append("c", ExpectedVersion::NoStream, vec![next(), next()]).await.unwrap();
    store.append("b", ExpectedVersion::Exact(0), vec![next(), next()]).await.unwrap();
    let mut positions = Vec::new();
    for s in ["a", "b", "c"] {
        let events = store.read_stream(s, 0, 100, Direction::Forwards).await.unwrap();
        positions.push(events.iter().map(|e| e.position).collect());
    }
    store.close().await;
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events, report.streams), (9, 3));
    (url, positions)
}

async fn sql(url: &str, edit: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(edit).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// A fresh pristine database, edited with `edit`, then verified.
async fn tampered(
    cluster: &TestCluster,
    edit: impl FnOnce(&[Vec<Position>]) -> String,
) -> (Verification, Vec<Vec<Position>>) {
    let (url, positions) = pristine(cluster).await;
    sql(&url, &edit(&positions)).await;
    (pop_store::postgres::verify(&url).await.unwrap(), positions)
}

fn at(p: Position) -> String {
    format!("tx_id = {} AND seq = {}", p.commit(), p.prepare())
}

fn located(r: &Verification, stream: &str, version: u64, position: Position) {
    let b = r.first_break.as_ref().unwrap_or_else(|| panic!("not detected: {r:?}"));
    assert_eq!(
        (b.stream.as_str(), b.version, b.position),
        (stream, Some(version), Some(position)),
        "{b}"
    );
}

#[tokio::test]
async fn every_edit_of_the_database_is_found_with_its_place() {
    let Some(cluster) = TestCluster::shared("every_edit_of_the_database_is_found_with_its_place")
    else {
        return;
    };
    // One byte of one event's data.
    let (r, p) = tampered(cluster, |p| {
        format!(
            "UPDATE pop_events SET data = convert_to('{{\"n\":9}}', 'UTF8') WHERE {}",
            at(p[0][1])
        )
    })
    .await;
    located(&r, "a", 1, p[0][1]);
    // Its metadata.
    let (r, p) = tampered(cluster, |p| {
        format!(
            "UPDATE pop_events SET metadata = convert_to('{{\"actor\":\"user:mallory\"}}', 'UTF8') WHERE {}",
            at(p[1][2])
        )
    })
    .await;
    located(&r, "b", 2, p[1][2]);
    // Its type, or its commit time.
    let (r, p) = tampered(cluster, |p| {
        format!("UPDATE pop_events SET event_type = 'X' WHERE {}", at(p[0][0]))
    })
    .await;
    located(&r, "a", 0, p[0][0]);
    let (r, p) = tampered(cluster, |p| {
        format!("UPDATE pop_events SET recorded_at = recorded_at + 1 WHERE {}", at(p[0][3]))
    })
    .await;
    located(&r, "a", 3, p[0][3]);
    // One event deleted from the middle of a stream: found where the gap is.
    let (r, p) =
        tampered(cluster, |p| format!("DELETE FROM pop_events WHERE {}", at(p[0][1]))).await;
    located(&r, "a", 2, p[0][2]);
    assert!(r.first_break.unwrap().reason.contains("expected version 1"));
    // Two events swapped (their contents change places).
    let (r, p) = tampered(cluster, |p| {
        format!(
            "UPDATE pop_events AS x SET data = y.data, metadata = y.metadata, event_type = y.event_type \
             FROM pop_events AS y WHERE (x.tx_id, x.seq) = ({}, {}) AND (y.tx_id, y.seq) = ({}, {})",
            p[0][0].commit(),
            p[0][0].prepare(),
            p[0][1].commit(),
            p[0][1].prepare()
        )
    })
    .await;
    located(&r, "a", 0, p[0][0]);
    // Two events swapped in global order (their positions change places).
    let (r, p) = tampered(cluster, |p| {
        let (b0, b1) = (p[1][0], p[1][1]);
        format!(
            "UPDATE pop_events SET tx_id = -1, seq = -1 WHERE {a0}; \
             UPDATE pop_events SET tx_id = {t0}, seq = {s0} WHERE {a1}; \
             UPDATE pop_events SET tx_id = {t1}, seq = {s1} WHERE tx_id = -1 AND seq = -1;",
            a0 = at(b0),
            a1 = at(b1),
            t0 = b0.commit(),
            s0 = b0.prepare(),
            t1 = b1.commit(),
            s1 = b1.prepare(),
        )
    })
    .await;
    let found = r.first_break.expect("a reordering is found");
    assert_eq!(
        (found.stream.as_str(), found.version, found.position),
        ("b", Some(1), Some(p[1][0])),
        "{found}"
    );
    // The log's tail cut (the last append, b's versions 1 and 2).
    let (r, _) = tampered(cluster, |p| {
        format!(
            "DELETE FROM pop_events WHERE (tx_id, seq) >= ({}, {})",
            p[1][1].commit(),
            p[1][1].prepare()
        )
    })
    .await;
    let found = r.first_break.expect("a cut tail is found");
    assert_eq!((found.stream.as_str(), found.version), ("b", Some(1)), "{found}");
    assert!(found.reason.contains("says 3 events, the log holds 1"), "{found}");
    // The tail cut and the stream row rewritten to match: the head hash no longer matches.
    let (r, _) = tampered(cluster, |p| {
        format!(
            "DELETE FROM pop_events WHERE (tx_id, seq) >= ({}, {}); \
             UPDATE pop_streams SET version = 0 WHERE name = 'b';",
            p[1][1].commit(),
            p[1][1].prepare()
        )
    })
    .await;
    let found = r.first_break.expect("a rewritten head is found");
    assert_eq!(found.stream, "b", "{found}");
    assert!(found.reason.contains("head hash"), "{found}");
    // A stream's events deleted while its row stays.
    let (r, _) = tampered(cluster, |_| "DELETE FROM pop_events WHERE stream = 'c'".into()).await;
    assert_eq!(r.first_break.expect("found").stream, "c");
    // A stream's events moved to another stream name: the first moved event no longer
    // matches its link (the digest covers the stream).
    let (r, p) =
        tampered(cluster, |_| "UPDATE pop_events SET stream = 'z' WHERE stream = 'c'".into()).await;
    located(&r, "z", 0, p[2][0]);
    // A deleted stream's recorded head hash removed.
    let (r, _) = tampered(cluster, |_| {
        "UPDATE pop_streams SET deleted_at = 1, head_hash = NULL WHERE name = 'c'; \
         DELETE FROM pop_events WHERE stream = 'c';"
            .into()
    })
    .await;
    assert!(r.first_break.expect("found").reason.contains("head hash"));
    // The checkpoints dropped whole, or the tombstones' table: broken, saying which
    // (auditor18: "could not check", with a message naming no table).
    for table in ["pop_checkpoints", "pop_pruned", "pop_schema"] {
        let (r, _) = tampered(cluster, |_| format!("DROP TABLE {table}")).await;
        let found = r.first_break.expect("found");
        assert!(found.reason.contains(&format!("no table {table}")), "{found}");
        assert_eq!(found.to_string(), found.reason, "said without a stream");
    }
    // pop_schema emptied, or given a second row: a break, not "could not check".
    for edit in ["DELETE FROM pop_schema", "INSERT INTO pop_schema SELECT version FROM pop_schema"]
    {
        let (r, _) = tampered(cluster, |_| edit.into()).await;
        let found = r.first_break.expect("found");
        assert!(found.reason.contains("pop_schema holds"), "{edit}: {found}");
    }
    // Hash rows added for a live stream, or for one that does not exist (auditor19).
    for (stream, says) in [("a", "which is not deleted"), ("nowhere", "does not exist")] {
        let (r, _) = tampered(cluster, |_| {
            format!(
                "INSERT INTO pop_pruned (tx_id, seq, stream, version, chain) \
                 SELECT max(tx_id), 900, '{stream}', 0, NULL FROM pop_events"
            )
        })
        .await;
        let found = r.first_break.expect("found");
        assert_eq!(found.stream, stream, "{found}");
        assert!(found.reason.contains(says), "{found}");
    }
    // A schema named after the user, first on the default search path, holding none of pop's
    // tables: they are still found where the store's queries find them (review-s37: verify
    // looked in `current_schema()` alone and called an intact store tampered).
    let (r, _) = tampered(cluster, |_| {
        "DO $$ BEGIN EXECUTE format('CREATE SCHEMA %I', current_user); END $$".into()
    })
    .await;
    assert!(r.is_intact(), "{r:?}");
}

#[tokio::test]
async fn of_two_edits_the_first_by_stream_and_version_is_reported_not_the_first_in_log_order() {
    let Some(cluster) = TestCluster::shared("of_two_edits_the_first_by_stream_and_version") else {
        return;
    };
    // In log order c's version 0 comes before b's version 2 (the last append); by (stream,
    // version) b's comes first, and that is the break reported.
    let (r, p) = tampered(cluster, |p| {
        format!(
            "UPDATE pop_events SET data = convert_to('{{\"n\":99}}', 'UTF8') WHERE {}; \
             UPDATE pop_events SET data = convert_to('{{\"n\":99}}', 'UTF8') WHERE {};",
            at(p[2][0]),
            at(p[1][2])
        )
    })
    .await;
    assert!(p[2][0] < p[1][2]);
    located(&r, "b", 2, p[1][2]);
    assert_eq!(r.events, 4 + 2, "a's events and b's before the break");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chains_stay_right_under_concurrent_group_commits_and_deletes() {
    let Some(cluster) = TestCluster::shared("chains_stay_right_under_concurrent_group_commits")
    else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    // Two stores on one database, as two replicas: their groups interleave on every stream.
    let one = Arc::new(PgStore::connect(&url, PgOptions::default()).await.unwrap());
    let two = Arc::new(PgStore::connect(&url, PgOptions::default()).await.unwrap());
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let store = if t % 2 == 0 { Arc::clone(&one) } else { Arc::clone(&two) };
        tasks.push(tokio::spawn(async move {
            for i in 0..20u32 {
                let stream = format!("s{}", (t + i) % 6);
                let events = (0..1 + i % 3).map(|k| event(t * 100 + i * 3 + k)).collect();
                store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.streams, 6);
    // A deleted stream (what the data reaper does) keeps its head and still verifies; the
    // others chain on.
    let version = one.read_stream("s0", 0, 10_000, Direction::Forwards).await.unwrap().len() as u64;
    one.delete_stream("s0", ExpectedVersion::Exact(version - 1)).await.unwrap();
    one.delete_stream("never", ExpectedVersion::NoStream).await.unwrap();
    two.append("s1", ExpectedVersion::Any, vec![event(9_999)]).await.unwrap();
    let after = pop_store::postgres::verify(&url).await.unwrap();
    assert!(after.is_intact(), "{after:?}");
    assert_eq!((after.streams, after.deleted_streams), (5, 2));
    assert_eq!(after.events, report.events - version + 1);
    one.close().await;
    two.close().await;
}

/// A deleted stream's hash rows, sealed by no checkpoint yet, still answer to its tombstone:
/// the last one deleted, or its link changed, is found (both passed, and the next seal signed
/// the gap).
#[tokio::test]
async fn a_deleted_streams_hash_rows_answer_to_its_tombstone() {
    let Some(cluster) = TestCluster::shared("a_deleted_streams_hash_rows_answer_to_its_tombstone")
    else {
        return;
    };
    for (edit, says) in [
        ("DELETE FROM pop_pruned WHERE stream = 'c' AND version = 1", "was deleted"),
        (
            "UPDATE pop_pruned SET chain = decode(repeat('00', 32), 'hex') \
             WHERE stream = 'c' AND version = 1",
            "was changed",
        ),
        // Moved (auditor20: each passed, was sealed, then made export refuse for good or
        // stopped every server from starting): past the cluster's transaction ids, onto an
        // event's position, before the row of an earlier version.
        (
            "UPDATE pop_pruned SET tx_id = 2000000000 WHERE stream = 'c' AND version = 1",
            "past the log's head",
        ),
        (
            "UPDATE pop_pruned SET (tx_id, seq) = (SELECT tx_id, seq FROM pop_events \
             ORDER BY tx_id DESC, seq DESC LIMIT 1) WHERE stream = 'c' AND version = 1",
            "a second entry at this position",
        ),
        (
            "UPDATE pop_pruned SET tx_id = 1, seq = 0 WHERE stream = 'c' AND version = 1",
            "not after the rows of its earlier versions",
        ),
    ] {
        let (url, _) = pristine(cluster).await;
        let store = PgStore::connect(&url, options()).await.unwrap();
        store.delete_stream("c", ExpectedVersion::Exact(1)).await.unwrap();
        store.close().await;
        let report = pop_store::postgres::verify(&url).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.deleted_streams, 1, "{report:?}");
        sql(&url, edit).await;
        let r = pop_store::postgres::verify(&url).await.unwrap();
        let b = r.first_break.as_ref().unwrap_or_else(|| panic!("{edit}: not detected: {r:?}"));
        // Two entries at one position: the second in the log's order is named, which may be
        // the event (PostgreSQL orders the tie either way).
        if !says.starts_with("a second entry") {
            assert_eq!(b.stream, "c", "{b}");
        }
        assert!(b.reason.contains(says), "{edit}: {b}");
        // Nor exported and signed (auditor21: export signed such logs, and their import
        // verified intact).
        let key = pop_store::commitment::CheckpointSigningKey::from_bytes(&[5; 32]);
        let mut out = Vec::new();
        let exported = pop_store::postgres::transfer::export_trusting(
            &url,
            Position::START,
            &key,
            None,
            None,
            &mut out,
            chrono::Utc::now(),
        )
        .await;
        assert!(
            matches!(exported, Err(pop_store::transfer::TransferError::SourceBroken(_))),
            "{edit}: exported: {exported:?}"
        );
    }
}

#[tokio::test]
async fn a_database_from_before_the_chain_is_migrated_and_verifies() {
    let Some(cluster) = TestCluster::shared("a_database_from_before_the_chain_is_migrated") else {
        return;
    };
    let (url, _) = pristine(cluster).await;
    // A version pop never commits beside its tables: changed outside pop (auditor54: told to
    // migrate, exit 1).
    sql(&url, "UPDATE pop_schema SET version = 0;").await;
    let report = pop_store::postgres::verify(&url).await.unwrap();
    let b = report.first_break.as_ref().expect("version 0 is a break");
    assert!(b.reason.contains("changed outside pop"), "{b}");
    // Back to schema 1: no chain columns, no checkpoint tables.
    sql(
        &url,
        "ALTER TABLE pop_events DROP COLUMN chain; ALTER TABLE pop_streams DROP COLUMN head_hash; \
         DROP TABLE pop_pruned; DROP TABLE pop_checkpoints; \
         UPDATE pop_schema SET version = 1;",
    )
    .await;
    // Not verified, and not to be migrated by default: a chain dropped outside pop looks the
    // same, and migrating would sign what the events hold now (auditor54).
    let report = pop_store::postgres::verify(&url).await.unwrap();
    let b = report.first_break.as_ref().expect("schema 1 is not verified");
    assert!(b.reason.contains("from before pop chained its events"), "{b}");
    let refused = PgStore::connect(&url, PgOptions::default()).await.expect_err("refused");
    let said = refused.to_string();
    assert!(said.contains("--chain-unchained-history") && said.contains("9 events"), "{said}");
    let trusted = PgOptions { chain_unchained: true, ..PgOptions::default() };
    let store = PgStore::connect(&url, trusted).await.unwrap();
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 9);
    store.append("b", ExpectedVersion::Exact(2), vec![event(7)]).await.unwrap();
    store.append("d", ExpectedVersion::NoStream, vec![event(8)]).await.unwrap();
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact() && report.events == 11, "{report:?}");
    store.close().await;
}
