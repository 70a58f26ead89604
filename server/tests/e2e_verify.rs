//! `pop verify` as a child process: a data directory written by `pop demo` verifies intact
//! (exit 0); after one byte of one event is changed in the file, it names the stream, version
//! and position of the break and exits non-zero.

#![allow(clippy::unwrap_used)]

mod support;

use support::pop_command;

#[test]
fn pop_verify_passes_an_intact_store_and_names_the_first_break() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = pop_command().args(["demo", "--data-dir"]).arg(&data).output().unwrap();
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));

    let out = pop_command().args(["verify", "--data-dir"]).arg(&data).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("intact"), "{stdout}");

    let conn = rusqlite::Connection::open(data.join("pop.db")).unwrap();
    let (position, name, version): (i64, String, i64) = conn
        .query_row(
            "SELECT e.position, s.name, e.version FROM events e JOIN streams s ON s.id = e.stream_id \
             WHERE s.name LIKE 'agenda-%' AND e.version = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    conn.execute(
        "UPDATE events SET data = CAST(replace(CAST(data AS TEXT), '\"', ' \"') AS BLOB) WHERE position = ?1",
        [position],
    )
    .unwrap();
    drop(conn);
    let out = pop_command().args(["verify", "--data-dir"]).arg(&data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered store passed");
    let expected = format!("TAMPERED: stream {name:?} version {version} position {position}");
    assert!(stderr.contains(&expected), "want {expected:?} in:\n{stderr}");
}

/// `pop verify --store postgres://…`: a log written by the PostgreSQL store verifies intact;
/// after one event's data is changed in its table, the break is named and the exit is
/// non-zero.
#[tokio::test]
async fn pop_verify_checks_a_postgres_store() {
    use pop_store::test_cluster::TestCluster;
    use pop_store::{EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore};

    let Some(cluster) = TestCluster::shared("pop_verify_checks_a_postgres_store") else { return };
    let url = cluster.create_database().await.unwrap();
    let store = PgStore::connect(&url, PgOptions::default()).await.unwrap();
    for (stream, n) in [("agenda-acme/a", 3u32), ("agenda-acme/b", 2)] {
        let events = (0..n)
            .map(|i| NewEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "Noted".into(),
                schema_version: 1,
                data: format!("{{\"i\":{i}}}").into_bytes(),
                metadata: b"{}".to_vec(),
            })
            .collect();
        store.append(stream, ExpectedVersion::NoStream, events).await.unwrap();
    }
    let position =
        store.read_stream("agenda-acme/a", 1, 1, pop_store::Direction::Forwards).await.unwrap()[0]
            .position;
    store.close().await;

    let verify = |url: String| {
        tokio::task::spawn_blocking(move || {
            pop_command().args(["verify", "--store", &url]).output().unwrap()
        })
    };
    let out = verify(url.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("checked 5 events, 2 streams") && stdout.contains("intact"),
        "{stdout}"
    );

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client
        .execute(
            "UPDATE pop_events SET data = convert_to('{\"i\":7}', 'UTF8') \
             WHERE stream = 'agenda-acme/a' AND version = 1",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    let out = verify(url).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a tampered store passed");
    let expected = format!("TAMPERED: stream \"agenda-acme/a\" version 1 position {position}");
    assert!(stderr.contains(&expected), "want {expected:?} in:\n{stderr}");
}
