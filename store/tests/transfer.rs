//! Export and import of the log ([`pop_store::transfer`]): a log with interleaved streams, a
//! stream deleted by the data reaper (its `StreamReaped` record keeps its head), a tombstone of
//! a stream that never had events, and event data that is not one line of JSON, exported from
//! the embedded store, is a JSON Lines file of CloudEvents with a manifest first and a signed
//! checkpoint last; imported into an empty embedded store and into an empty PostgreSQL
//! database, every event comes back byte for byte with its commit time, the target verifies,
//! and the reaped stream still verifies there. A file with one byte of one event's data
//! changed, or with a line dropped, is refused with its line number, and the target stays
//! empty; a store that is not empty is refused; an export `--since` holds only the later
//! entries and is not importable.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pop_store::commitment::{CheckpointSigningKey, Sealer};
use pop_store::digest::{hex, stream_head};
use pop_store::transfer::{ExportReader, KeySource, TransferError};
use pop_store::{
    Direction, Durability, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    SqliteOptions, SqliteStore, fixed_clock,
};
use uuid::Uuid;

fn event(n: u32, data: Vec<u8>) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: format!("Type{}", n % 3),
        schema_version: 1 + n % 2,
        data,
        metadata: format!("{{\"actor\":\"user:u{n}\",\"cid\":\"c-{n}\"}}").into_bytes(),
    }
}

fn json(n: u32) -> Vec<u8> {
    format!("{{\"n\":{n},\"s\":\"caf\\u00e9 \u{e9}\"}}").into_bytes()
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(1_800_000_000_123_456).unwrap()
}

fn key(n: u8) -> CheckpointSigningKey {
    CheckpointSigningKey::from_bytes(&[n; 32])
}

/// The source log: streams a, b interleaved, an agenda deleted by the reaper with its record,
/// a tombstone without events, data that must travel as base64; sealed with `k`.
async fn source(dir: &Path, k: &CheckpointSigningKey) -> PathBuf {
    let path = dir.join("source.db");
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: fixed_clock(now()),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = SqliteStore::open(&path, options).await.unwrap();
    store
        .append("a", ExpectedVersion::NoStream, vec![event(1, json(1)), event(2, json(2))])
        .await
        .unwrap();
    store
        .append(
            "agenda-acme/x",
            ExpectedVersion::NoStream,
            vec![event(3, json(3)), event(4, json(4))],
        )
        .await
        .unwrap();
    // Not one line of JSON (a newline inside, whitespace around), and whitespace after.
    store
        .append(
            "b",
            ExpectedVersion::NoStream,
            vec![event(5, b" {\n  \"pretty\": true\n}\n".to_vec()), event(6, b"[1,2]\t".to_vec())],
        )
        .await
        .unwrap();
    store.append("a", ExpectedVersion::Exact(1), vec![event(7, json(7))]).await.unwrap();
    // The data reaper: the record with the stream's head, then the delete.
    let doomed = store.read_stream("agenda-acme/x", 0, 100, Direction::Forwards).await.unwrap();
    let record = serde_json::json!({
        "time": 1_800_000_000_000u64, "stream": "agenda-acme/x", "kind": "agenda",
        "objectId": "x", "customerId": "acme", "lastVersion": 1, "reason": "old",
        "headHash": hex(&stream_head(&doomed)),
    });
    store
        .append(
            "reaps-2027-01-15",
            ExpectedVersion::Any,
            vec![NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "StreamReaped".into(),
                schema_version: 1,
                data: serde_json::to_vec(&record).unwrap(),
                metadata: b"{\"actor\":\"system:data-reaper\"}".to_vec(),
            }],
        )
        .await
        .unwrap();
    store.delete_stream("agenda-acme/x", ExpectedVersion::Exact(1)).await.unwrap();
    store.delete_stream("never", ExpectedVersion::NoStream).await.unwrap();
    store.append("b", ExpectedVersion::Exact(1), vec![event(8, json(8))]).await.unwrap();
    Sealer::new(k.clone()).seal_all(&store, now()).await.unwrap().expect("sealed");
    let report = store.verify_with(Some(k.verifying_key())).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events, report.reaped_streams, report.deleted_streams), (7, 1, 2));
    store.close().await.unwrap();
    path
}

fn export(path: &Path, since: Position, k: &CheckpointSigningKey) -> Vec<u8> {
    let mut out = Vec::new();
    pop_store::sqlite::transfer::export(path, since, k, &mut out, now()).unwrap();
    out
}

async fn read_all(log: &dyn EventStore) -> Vec<RecordedEvent> {
    log.read_all(Position::START, 1000).await.unwrap()
}

/// Everything of an event but its position, which is the store's own.
fn portable(events: &[RecordedEvent]) -> Vec<RecordedEvent> {
    events.iter().map(|e| RecordedEvent { position: Position::START, ..e.clone() }).collect()
}

fn lines(file: &[u8]) -> Vec<serde_json::Value> {
    file.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// An export reads a stopped store without creating anything beside it (see
/// `sqlite_tamper.rs`).
#[tokio::test]
async fn an_export_reads_a_stopped_store_without_creating_anything_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let path = source(dir.path(), &k).await;
    let expected = export(&path, Position::START, &k);
    let beside = ["source.db-wal", "source.db-shm"].map(|n| dir.path().join(n));
    assert!(beside.iter().all(|f| !f.exists()), "a clean stop leaves neither");
    let file = export(&path, Position::START, &k);
    assert!(beside.iter().all(|f| !f.exists()), "nothing was created beside the file");
    assert_eq!(lines(&file).len(), lines(&expected).len());
    assert_eq!(
        lines(&file)[1..lines(&file).len() - 1],
        lines(&expected)[1..lines(&expected).len() - 1]
    );
}

#[tokio::test]
async fn an_export_is_cloudevents_between_a_manifest_and_a_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let path = source(dir.path(), &k).await;
    let file = export(&path, Position::START, &k);
    let all = lines(&file);
    let manifest = &all[0];
    assert_eq!(manifest["kind"], "manifest");
    assert_eq!(manifest["formatVersion"], 1);
    assert_eq!(manifest["store"], "sqlite");
    assert_eq!(manifest["popVersion"], env!("CARGO_PKG_VERSION"));
    // 7 live events, 2 pruned hash rows of the reaped stream, 2 tombstones.
    assert_eq!((manifest["events"].as_u64(), manifest["pruned"].as_u64()), (Some(7), Some(2)));
    assert_eq!(manifest["tombstones"], 2);
    assert_eq!(
        (manifest["firstPosition"].as_str(), manifest["lastPosition"].as_str()),
        (Some("1"), Some("9"))
    );
    let public = hex(k.verifying_key().as_bytes());
    assert_eq!(manifest["publicKey"], public.as_str());
    assert_eq!(manifest["keyId"], pop_store::commitment::key_id(&k.verifying_key()).as_str());
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let events = read_all(&store).await;
    store.close().await.unwrap();
    let core = [
        "specversion",
        "id",
        "source",
        "subject",
        "type",
        "time",
        "datacontenttype",
        "data",
        "data_base64",
    ];
    let cloud: Vec<&serde_json::Value> =
        all[1..].iter().filter(|l| l.get("specversion").is_some()).collect();
    assert_eq!(cloud.len(), 7);
    for (line, e) in cloud.iter().zip(&events) {
        assert_eq!(line["specversion"], "1.0");
        assert_eq!(line["id"], e.event_id.to_string().as_str());
        assert_eq!(line["source"], "urn:pop:log");
        assert_eq!(line["subject"], &*e.stream);
        assert_eq!(line["type"], &*e.event_type);
        let time = DateTime::parse_from_rfc3339(line["time"].as_str().unwrap()).unwrap();
        assert_eq!(time.timestamp_micros(), e.recorded_at.timestamp_micros(), "the commit time");
        assert_eq!(line["popposition"], e.position.to_string().as_str());
        assert_eq!(line["popversion"], e.version);
        assert_eq!(line["popschemaversion"], e.schema_version);
        assert_eq!(line["popmetadata"].as_str().unwrap().as_bytes(), &e.metadata[..]);
        let actor = pop_store::EventMetadata::from_json(&e.metadata).unwrap().actor.unwrap();
        assert_eq!(line["popactor"], actor.as_str());
        assert_eq!(line["popdigest"].as_str().unwrap().len(), 64);
        assert_eq!(line["popchain"].as_str().unwrap().len(), 64);
        for name in line.as_object().unwrap().keys() {
            assert!(
                core.contains(&name.as_str())
                    || (name.len() <= 20
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
                "{name} is not a CloudEvents extension name"
            );
        }
        match line.get("data") {
            Some(data) => {
                assert_eq!(*data, serde_json::from_slice::<serde_json::Value>(&e.data).unwrap())
            }
            None => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(line["data_base64"].as_str().unwrap())
                    .unwrap();
                assert_eq!(bytes, e.data);
            }
        }
    }
    // The data is written as its exact bytes.
    let text = String::from_utf8_lossy(&file);
    assert!(text.contains("\"data\":{\"n\":1,\"s\":\"caf\\u00e9 \u{e9}\"}"), "{text}");
    assert_eq!(cloud.iter().filter(|l| l.get("data_base64").is_some()).count(), 2);
    let kinds: Vec<&str> = all.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["manifest", "pruned", "pruned", "tombstone", "tombstone", "checkpoint"]);
    let checkpoint = &all.last().unwrap()["checkpoint"];
    assert_eq!(
        (checkpoint["events"].as_u64(), checkpoint["position"].as_str()),
        (Some(9), Some("9"))
    );
    assert_eq!(all.last().unwrap()["signature"].as_str().unwrap().len(), 128);

    // Only the entries after position 5, with a checkpoint over them; not importable.
    let later = export(&path, Position::from_sequence(5), &k);
    let part = lines(&later);
    assert_eq!(part[0]["since"], "5");
    assert_eq!(part[0]["events"].as_u64().unwrap() + part[0]["pruned"].as_u64().unwrap(), 4);
    assert_eq!(part.last().unwrap()["checkpoint"]["after"], "5");
    assert_eq!(part.last().unwrap()["checkpoint"]["events"], 4);
    let partial = dir.path().join("part.jsonl");
    std::fs::write(&partial, &later).unwrap();
    let err = ExportReader::open(&partial, Some(k.verifying_key())).err().expect("refused");
    // The wrong file for an import, not a tampered one: no line blamed (auditor61 L3).
    assert_eq!(err.line(), None, "{err}");
    assert!(err.to_string().contains("holds part of the log"), "{err}");

    // A start that names no position of this log is refused as such (auditor30: a two-part
    // one was reported as a broken log; one past the end gave an empty export). Its head is
    // a start with nothing after it.
    let refused = |since: Position| {
        let mut out = Vec::new();
        pop_store::sqlite::transfer::export(&path, since, &k, &mut out, now())
            .expect_err("refused")
            .to_string()
    };
    let err = refused(Position::new(5, 1));
    assert!(err.contains("\"5/1\" is a two-part position"), "{err}");
    let err = refused(Position::from_sequence(99_999));
    assert!(err.contains("99999 is beyond the end of the log (9)"), "{err}");
    let last = lines(&export(&path, Position::from_sequence(9), &k));
    assert_eq!(last[0]["events"].as_u64().unwrap() + last[0]["pruned"].as_u64().unwrap(), 0);
}

/// Imports `file` into a fresh embedded store; the error, and the events the store holds.
async fn import_sqlite(
    dir: &Path,
    file: &Path,
    k: &CheckpointSigningKey,
) -> (Result<(), TransferError>, PathBuf) {
    let target = dir.join(format!("{}.db", Uuid::new_v4()));
    let result = ExportReader::open(file, Some(k.verifying_key())).and_then(|r| {
        pop_store::sqlite::transfer::import(&target, r).map(|s| {
            assert_eq!(s.key_source, KeySource::Pinned);
        })
    });
    (result, target)
}

/// Rows the store at `target` holds (0 when no file was even created).
fn count(target: &Path) -> i64 {
    if !target.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(target).unwrap();
    conn.query_row("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM streams) + (SELECT count(*) FROM pruned)", [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn an_export_imports_into_an_empty_store_and_verifies_there() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let path = source(dir.path(), &k).await;
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, export(&path, Position::START, &k)).unwrap();
    let source_store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    let expected = read_all(&source_store).await;
    source_store.close().await.unwrap();

    let (result, target) = import_sqlite(dir.path(), &file, &k).await;
    result.unwrap();
    let report = SqliteStore::verify_file(&target).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events, report.reaped_streams, report.deleted_streams), (7, 1, 2));
    let store = SqliteStore::open(&target, SqliteOptions::default()).await.unwrap();
    assert_eq!(
        portable(&read_all(&store).await),
        portable(&expected),
        "byte for byte, with commit times"
    );
    assert!(
        store.read_stream("agenda-acme/x", 0, 10, Direction::Forwards).await.is_err(),
        "still deleted"
    );
    assert!(store.read_stream("never", 0, 10, Direction::Forwards).await.is_err(), "still deleted");
    // Sealed by the target's own key, the imported log verifies against it.
    let target_key = key(9);
    let sealed = Sealer::new(target_key.clone()).seal_all(&store, now()).await.unwrap().unwrap();
    assert_eq!(sealed.events, 9);
    let report = store.verify_with(Some(target_key.verifying_key())).await.unwrap();
    assert!(report.is_intact() && report.checkpoints.checkpoints == 1, "{report:?}");
    store.close().await.unwrap();

    // Not into a store that holds anything.
    let reader = ExportReader::open(&file, Some(k.verifying_key())).unwrap();
    let err = pop_store::sqlite::transfer::import(&target, reader).expect_err("refused");
    assert!(matches!(err, TransferError::NotEmpty(_)), "{err}");

    // A file signed by another key than the one pinned.
    let (result, target) = import_sqlite(dir.path(), &file, &key(8)).await;
    assert!(result.is_err());
    assert_eq!(count(&target), 0, "nothing imported");

    // Into PostgreSQL, then out of it again.
    let Some(cluster) = pop_store::test_cluster::TestCluster::shared("import into PostgreSQL")
    else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    let reader = ExportReader::open(&file, Some(k.verifying_key())).unwrap();
    let summary = pop_store::postgres::transfer::import(&url, reader).await.unwrap();
    assert_eq!((summary.events, summary.pruned, summary.tombstones), (7, 2, 2));
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.events, report.reaped_streams, report.deleted_streams), (7, 1, 2));
    let pg = pop_store::PgStore::connect(&url, pop_store::PgOptions::default()).await.unwrap();
    assert_eq!(portable(&read_all(&pg).await), portable(&expected));
    assert!(pg.read_stream("agenda-acme/x", 0, 10, Direction::Forwards).await.is_err());
    let sealed = Sealer::new(key(9)).seal_all(&pg, now()).await.unwrap().unwrap();
    assert_eq!(sealed.events, 9);
    let report =
        pop_store::postgres::verify_with(&url, Some(key(9).verifying_key())).await.unwrap();
    assert!(report.is_intact() && report.checkpoints.checkpoints == 1, "{report:?}");
    pg.close().await;
    let reader = ExportReader::open(&file, Some(k.verifying_key())).unwrap();
    let err = pop_store::postgres::transfer::import(&url, reader).await.expect_err("refused");
    assert!(matches!(err, TransferError::NotEmpty(_)), "{err}");
    let mut out = Vec::new();
    let beyond = Position::new(u64::from(u32::MAX), 1);
    let err = pop_store::postgres::transfer::export(&url, beyond, &key(9), &mut out, now())
        .await
        .expect_err("a start past the log's end is refused");
    assert!(
        err.to_string().contains("is beyond the end of the log (its last entry is at"),
        "{err}"
    );
    let mut out = Vec::new();
    let again =
        pop_store::postgres::transfer::export(&url, Position::START, &key(9), &mut out, now())
            .await
            .unwrap();
    assert_eq!(
        (again.manifest.store.as_str(), again.manifest.events, again.manifest.pruned),
        ("postgres", 7, 2)
    );
    let from_pg = dir.path().join("from-pg.jsonl");
    std::fs::write(&from_pg, &out).unwrap();
    let (result, back) = import_sqlite(dir.path(), &from_pg, &key(9)).await;
    result.unwrap();
    let store = SqliteStore::open(&back, SqliteOptions::default()).await.unwrap();
    assert_eq!(portable(&read_all(&store).await), portable(&expected), "PostgreSQL -> embedded");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_tampered_export_is_refused_with_its_line_and_nothing_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(7);
    let path = source(dir.path(), &k).await;
    let text = String::from_utf8(export(&path, Position::START, &k)).unwrap();
    let original: Vec<&str> = text.lines().collect();
    let write = |name: &str, lines: &[String]| {
        let file = dir.path().join(name);
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        file
    };
    let owned: Vec<String> = original.iter().map(|l| (*l).to_owned()).collect();

    // One byte of one event's data (a's third event, `"n":7`).
    let at = owned.iter().position(|l| l.contains("\"n\":7")).unwrap();
    let mut edited = owned.clone();
    edited[at] = edited[at].replacen("\"n\":7", "\"n\":8", 1);
    let (result, target) = import_sqlite(dir.path(), &write("byte.jsonl", &edited), &k).await;
    let err = result.expect_err("refused");
    assert_eq!(err.line(), Some(at as u64 + 1), "{err}");
    assert!(err.to_string().contains("stream \"a\" version 2"), "{err}");
    assert_eq!(count(&target), 0, "the target stays empty");
    assert!(!target.with_extension("db.importing").exists(), "the staging file is removed");

    // The actor a line shows its readers (popactor) forged: it repeats popmetadata's actor,
    // which the digest covers, so a differing one was edited.
    let mut forged = owned.clone();
    let (prefix, _) = forged[at].split_once(",\"popactor\":").expect("an event with an actor");
    forged[at] = format!("{prefix},\"popactor\":\"user:someone-else\"}}");
    let (result, target) = import_sqlite(dir.path(), &write("actor.jsonl", &forged), &k).await;
    let err = result.expect_err("refused");
    assert_eq!(err.line(), Some(at as u64 + 1), "{err}");
    assert!(err.to_string().contains("popactor \"user:someone-else\""), "{err}");
    assert_eq!(count(&target), 0, "the target stays empty");

    // A dropped line: a's second event is gone, seen at a's next event.
    let mut dropped = owned.clone();
    assert!(dropped[2].contains("\"subject\":\"a\",") && dropped[2].contains("\"popversion\":1,"));
    dropped.remove(2);
    let next_a = dropped.iter().position(|l| l.contains("\"n\":7")).unwrap();
    let (result, target) = import_sqlite(dir.path(), &write("dropped.jsonl", &dropped), &k).await;
    let err = result.expect_err("refused");
    assert_eq!(err.line(), Some(next_a as u64 + 1), "{err}");
    assert!(err.to_string().contains("an event is missing"), "{err}");
    assert_eq!(count(&target), 0, "the target stays empty");

    // The last event of a stream dropped: only the checkpoint's stream list shows it, at the
    // line where the event was.
    let last_b = owned.iter().rposition(|l| l.contains("\"subject\":\"b\"")).unwrap();
    let mut cut = owned.clone();
    cut.remove(last_b);
    let (result, target) = import_sqlite(dir.path(), &write("cut.jsonl", &cut), &k).await;
    let err = result.expect_err("refused");
    assert_eq!(err.line(), Some(last_b as u64 + 1), "{err}");
    assert!(err.to_string().contains("stream \"b\""), "{err}");
    assert_eq!(count(&target), 0);

    // A tombstone dropped: the reap record's head has nothing to hold to.
    let mut no_tomb = owned.clone();
    let t = no_tomb
        .iter()
        .position(|l| l.contains("\"kind\":\"tombstone\"") && l.contains("agenda-acme/x"))
        .unwrap();
    no_tomb.remove(t);
    let (result, target) = import_sqlite(dir.path(), &write("tomb.jsonl", &no_tomb), &k).await;
    let err = result.expect_err("refused");
    assert!(err.to_string().contains("tombstone is gone"), "{err}");
    assert!(err.line().is_some(), "{err}");
    assert_eq!(count(&target), 0);

    // A tombstone's version edited or removed: the hash rows its stream kept disagree, as
    // `pop verify` finds in a store (auditor17: it imported, and the store then failed verify).
    let t = owned
        .iter()
        .position(|l| l.contains("\"kind\":\"tombstone\"") && l.contains("agenda-acme/x"))
        .unwrap();
    assert!(owned[t].contains("\"popversion\":1"), "{}", owned[t]);
    for (name, line) in [
        ("tombv.jsonl", owned[t].replacen("\"popversion\":1", "\"popversion\":2", 1)),
        ("tombv0.jsonl", owned[t].replacen("\"popversion\":1", "\"popversion\":0", 1)),
        ("tombnov.jsonl", owned[t].replacen(",\"popversion\":1", "", 1)),
    ] {
        assert_ne!(line, owned[t], "{name}: the edit applies");
        let mut edited = owned.clone();
        edited[t] = line;
        let (result, target) = import_sqlite(dir.path(), &write(name, &edited), &k).await;
        let err = result.expect_err("refused");
        assert!(err.to_string().contains("agenda-acme/x"), "{name}: {err}");
        assert_eq!(count(&target), 0, "{name}: the target stays empty");
    }

    // One event's id copied onto another's line (ids are not covered by the digests): said as
    // such, not as the storage engine's constraint (auditor30).
    let event_lines: Vec<usize> =
        (0..owned.len()).filter(|i| owned[*i].contains("\"specversion\"")).collect();
    let id_of = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let (first, second) = (event_lines[0], event_lines[1]);
    let mut twice = owned.clone();
    twice[second] = twice[second].replacen(&id_of(&owned[second]), &id_of(&owned[first]), 1);
    let twice = write("twice.jsonl", &twice);
    let (result, target) = import_sqlite(dir.path(), &twice, &k).await;
    let err = result.expect_err("refused").to_string();
    assert!(err.contains("holds one event id on two lines"), "{err}");
    assert_eq!(count(&target), 0);

    // The checkpoint line dropped.
    let mut headless = owned.clone();
    headless.pop();
    let (result, target) = import_sqlite(dir.path(), &write("nocp.jsonl", &headless), &k).await;
    assert!(result.expect_err("refused").to_string().contains("checkpoint"));
    assert_eq!(count(&target), 0);

    // Into PostgreSQL: refused, and the database holds no pop rows.
    let Some(cluster) =
        pop_store::test_cluster::TestCluster::shared("a refused import into PostgreSQL")
    else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    let reader =
        ExportReader::open(&write("byte2.jsonl", &edited), Some(k.verifying_key())).unwrap();
    let err = pop_store::postgres::transfer::import(&url, reader).await.expect_err("refused");
    assert_eq!(err.line(), Some(at as u64 + 1), "{err}");
    let reader = ExportReader::open(&twice, Some(k.verifying_key())).unwrap();
    let err = pop_store::postgres::transfer::import(&url, reader).await.expect_err("refused");
    let first_id = id_of(&owned[first]);
    assert!(
        err.to_string().contains(&format!("holds one event id on two lines ({first_id})")),
        "{err}"
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let rows: i64 = client
        .query_one("SELECT (SELECT count(*) FROM pop_events) + (SELECT count(*) FROM pop_streams) + (SELECT count(*) FROM pop_pruned)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing committed");
    drop(client);
    let _ = driver.await;
}

/// A PostgreSQL log written by two replicas whose commits are out of time order across
/// streams (clock offsets, lock waits), moved to the embedded store by export and import:
/// verify there holds the embedded writer's rule (commit times rise with positions) only after
/// what the import brought (auditor24, review-s39: the documented migration ended TAMPERED).
#[tokio::test]
async fn a_postgres_log_out_of_time_order_imports_into_the_embedded_store_and_verifies() {
    let Some(cluster) = pop_store::test_cluster::TestCluster::shared("import out of time order")
    else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    let replica = |at: DateTime<Utc>| pop_store::PgOptions {
        clock: pop_store::fixed_clock(at),
        database_clock: false,
        ..pop_store::PgOptions::default()
    };
    let ahead = pop_store::PgStore::connect(&url, replica(now())).await.unwrap();
    let behind = pop_store::PgStore::connect(&url, replica(now() - chrono::Duration::seconds(30)))
        .await
        .unwrap();
    ahead.append("a", ExpectedVersion::NoStream, vec![event(1, b"{}".to_vec())]).await.unwrap();
    behind.append("b", ExpectedVersion::NoStream, vec![event(2, b"{}".to_vec())]).await.unwrap();
    let k = key(5);
    Sealer::new(k.clone()).seal_all(&ahead, now()).await.unwrap().expect("sealed");
    ahead.close().await;
    behind.close().await;
    let mut out = Vec::new();
    pop_store::postgres::transfer::export(&url, Position::START, &k, &mut out, now())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("from-pg.jsonl");
    std::fs::write(&file, &out).unwrap();
    let (result, target) = import_sqlite(dir.path(), &file, &k).await;
    result.unwrap();
    let report = SqliteStore::verify_file(&target).unwrap();
    assert!(report.is_intact(), "{report:?}");
    // Written on there by its own writer: still checked.
    let store = SqliteStore::open(&target, SqliteOptions::default()).await.unwrap();
    store.append("c", ExpectedVersion::NoStream, vec![event(3, b"{}".to_vec())]).await.unwrap();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(&target).unwrap();
    let n = conn
        .execute(
            "UPDATE events SET recorded_at = recorded_at - 86400000000 WHERE stream_id = \
             (SELECT id FROM streams WHERE name = 'c')",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let report = SqliteStore::verify_file(&target).unwrap();
    let found = report.first_break.expect("a native event backdated");
    assert_eq!(found.stream, "c", "{found}");
}
