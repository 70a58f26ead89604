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
