//! `pop export` and `pop import` as child processes: a data directory written by `pop demo`
//! is exported, imported into a new embedded store and into PostgreSQL (the migration path),
//! and on each target `pop verify` passes (against the checkpoint the import sealed) and
//! `pop rebuild` prints the source's fingerprint. A file with one byte of one event's data
//! changed, or with a line dropped, is refused with its line number, and the target holds no
//! event.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Output;

use support::pop_command;

fn run(args: &[&str], dirs: &[(&str, &Path)]) -> Output {
    let mut cmd = pop_command();
    cmd.args(args);
    for (flag, dir) in dirs {
        cmd.arg(flag).arg(dir);
    }
    cmd.output().unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The fingerprint `pop rebuild` prints.
fn fingerprint(stdout: &str) -> String {
    let at = stdout.find("fingerprint ").unwrap_or_else(|| panic!("no fingerprint: {stdout}"));
    stdout[at + 12..at + 28].to_owned()
}

/// A source data directory with two demo agendas (13 events, then 10: the configuration
/// exists), and its export.
fn exported(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let src = dir.join("src");
    for _ in 0..2 {
        ok(&run(&["demo"], &[("--data-dir", &src)]), "pop demo");
    }
    let file = dir.join("export.jsonl");
    let out = run(&["export"], &[("--data-dir", &src), ("--out", &file)]);
    ok(&out, "pop export");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 23 events"), "{out:?}");
    let rebuilt = ok(&run(&["rebuild"], &[("--data-dir", &src)]), "pop rebuild (source)");
    (src, file, fingerprint(&rebuilt))
}

#[tokio::test]
async fn an_export_imported_elsewhere_verifies_and_rebuilds_to_the_same_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (src, file, expected) = exported(dir.path());
    let key = std::fs::read_to_string(src.join("checkpoint.key")).unwrap();
    let public = {
        use pop_store::commitment::parse_signing_key;
        let k = parse_signing_key(&key).unwrap().verifying_key();
        pop_store::digest::hex(k.as_bytes())
    };

    // Embedded -> embedded, the file checked against the source's public key.
    let dst = dir.path().join("dst");
    let out =
        run(&["import", file.to_str().unwrap(), "--public-key", &public], &[("--data-dir", &dst)]);
    let stdout = ok(&out, "pop import");
    assert!(stdout.contains("23 events"), "{stdout}");
    assert!(stdout.contains("sealed checkpoint 1 over 23 entries"), "{stdout}");
    assert!(!stdout.contains("WARNING"), "{stdout}");
    let verified = ok(&run(&["verify"], &[("--data-dir", &dst)]), "pop verify (target)");
    assert!(verified.contains("checked 23 events"), "{verified}");
    assert!(verified.contains("checked 1 signed checkpoint over 23 log entries"), "{verified}");
    assert!(verified.trim_end().ends_with("intact"), "{verified}");
    let rebuilt = ok(&run(&["rebuild"], &[("--data-dir", &dst)]), "pop rebuild (target)");
    assert_eq!(fingerprint(&rebuilt), expected, "{rebuilt}");
    // Into it again: refused, it is not empty.
    let again = run(&["import", file.to_str().unwrap()], &[("--data-dir", &dst)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"), "{again:?}");

    // Embedded -> PostgreSQL: the migration path.
    use pop_store::test_cluster::TestCluster;
    let Some(cluster) = TestCluster::shared("pop import into PostgreSQL") else { return };
    let url = cluster.create_database().await.unwrap();
    let pg_dir = dir.path().join("pg");
    let key_file = src.join("checkpoint.key");
    let (file2, url2, pg_dir2, key2) =
        (file.clone(), url.clone(), pg_dir.clone(), key_file.clone());
    let (refused, stdout) = tokio::task::spawn_blocking(move || {
        // Without the servers' key: refused before anything is written (ops3am6: a key made
        // here signed it, and servers with theirs refused to seal it for good).
        let refused = run(
            &["import", file2.to_str().unwrap(), "--store", &url2],
            &[("--data-dir", &pg_dir2)],
        );
        let out = run(
            &["import", file2.to_str().unwrap(), "--store", &url2],
            &[("--data-dir", &pg_dir2), ("--checkpoint-key", &key2)],
        );
        (refused, ok(&out, "pop import --store postgres://… --checkpoint-key"))
    })
    .await
    .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--checkpoint-key") && said.contains("nothing was imported"), "{said}");
    assert!(!pg_dir.join("checkpoint.key").exists(), "no key was made");
    assert!(!stdout.contains("WARNING"), "the key pinned the file's signature: {stdout}");
    assert!(stdout.contains("sealed checkpoint 1 over 23 entries"), "{stdout}");
    let (url3, pg_dir3) = (url.clone(), pg_dir.clone());
    let (verified, rebuilt) = tokio::task::spawn_blocking(move || {
        let args: [(&str, &Path); 2] = [("--data-dir", &pg_dir3), ("--checkpoint-key", &key_file)];
        let v = ok(&run(&["verify", "--store", &url3], &args), "verify pg");
        let r = ok(&run(&["rebuild", "--store", &url3], &[]), "rebuild pg");
        (v, r)
    })
    .await
    .unwrap();
    assert!(verified.contains("checked 23 events"), "{verified}");
    assert!(verified.contains("checked 1 signed checkpoint over 23 log entries"), "{verified}");
    assert!(verified.trim_end().ends_with("intact"), "{verified}");
    assert_eq!(fingerprint(&rebuilt), expected, "{rebuilt}");
    // Without --checkpoint-key, beside another store's data directory: its key is read by
    // default, and the refusal says so and what to name (newcomer14: it advised a handover).
    let other = dir.path().join("other");
    let (url4, other2) = (url.clone(), other.clone());
    let (verify, export) = tokio::task::spawn_blocking(move || {
        ok(&run(&["demo"], &[("--data-dir", &other2)]), "pop demo (another store)");
        // Its own export makes its key.
        let own = other2.join("own.jsonl");
        ok(&run(&["export"], &[("--data-dir", &other2), ("--out", &own)]), "pop export (own)");
        let out = other2.join("pg.jsonl");
        (
            run(&["verify", "--store", &url4], &[("--data-dir", &other2)]),
            run(&["export", "--store", &url4], &[("--data-dir", &other2), ("--out", &out)]),
        )
    })
    .await
    .unwrap();
    let key_path = other.join("checkpoint.key").display().to_string();
    for (what, out) in [("verify", &verify), ("export", &export)] {
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {said}");
        assert!(
            said.contains(&format!("the key checked with is {key_path}, read by default"))
                && said.contains("--checkpoint-key <their key file>"),
            "{what}: {said}"
        );
    }
}

#[test]
fn a_tampered_export_is_refused_with_its_line_and_the_store_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (_, file, _) = exported(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let events_in = |dir: &Path| -> i64 {
        let path = dir.join("pop.db");
        if !path.exists() {
            return 0;
        }
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap_or(0)
    };

    // One byte of one event's data (the first agenda's completion message).
    let at = lines.iter().position(|l| l.contains("\"succeeded\"")).unwrap();
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[at] = edited[at].replacen("\"succeeded\"", "\"succeedeD\"", 1);
    let bad = dir.path().join("byte.jsonl");
    std::fs::write(&bad, edited.join("\n") + "\n").unwrap();
    let target = dir.path().join("t1");
    let out = run(&["import", bad.to_str().unwrap()], &[("--data-dir", &target)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 4, as `pop verify` on a tampered log (auditor59 M2: 1, as for a missing file).
    assert_eq!(out.status.code(), Some(4), "a tampered file: {stderr}");
    assert!(stderr.contains(&format!("line {}:", at + 1)), "want line {} in {stderr}", at + 1);
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(events_in(&target), 0);

    // A line dropped from the middle of an agenda's stream.
    let mut dropped: Vec<&str> = lines.clone();
    let victim = lines.iter().position(|l| l.contains("\"type\":\"AgendaClaimed\"")).unwrap();
    dropped.remove(victim);
    let bad = dir.path().join("dropped.jsonl");
    std::fs::write(&bad, dropped.join("\n") + "\n").unwrap();
    let target = dir.path().join("t2");
    let out = run(&["import", bad.to_str().unwrap()], &[("--data-dir", &target)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "a file with a line dropped: {stderr}");
    assert!(stderr.contains("line ") && stderr.contains("an event is missing"), "{stderr}");
    assert_eq!(events_in(&target), 0);
    // Nothing was written: no store file, no staging file, and no lock file left behind; the
    // directory made for the import is gone (a refused import left `pop.lock` in it).
    assert!(!target.exists(), "{:?}", std::fs::read_dir(&target).map(|d| d.count()));
    // Parents it made go as well (review-s51 L3: `new/` stayed when `new/pop-data` went).
    let nested = dir.path().join("new");
    let out = run(&["import", bad.to_str().unwrap()], &[("--data-dir", &nested.join("pop-data"))]);
    assert!(!out.status.success(), "a file with a line dropped was imported");
    assert!(!nested.exists(), "{:?}", std::fs::read_dir(&nested).map(|d| d.count()));

    // Into a directory that was there before: it stays, with nothing of the import's.
    let existing = dir.path().join("t3");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), "mine").unwrap();
    let out = run(&["import", bad.to_str().unwrap()], &[("--data-dir", &existing)]);
    assert!(!out.status.success(), "a file with a line dropped was imported");
    let left: Vec<_> = std::fs::read_dir(&existing)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pop.db"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(std::fs::read_to_string(existing.join("notes.txt")).unwrap(), "mine");
}

/// A mistyped --data-dir is refused before anything is made: no directory, no signing key, no
/// empty --out file (ops3am: all three were left behind, then "no embedded store").
#[test]
fn an_export_of_a_data_dir_that_holds_no_store_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("pop-dta");
    let file = dir.path().join("export.jsonl");
    let out = run(&["export"], &[("--data-dir", &typo), ("--out", &file)]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no embedded store"), "{out:?}");
    assert!(!typo.exists(), "a directory was made");
    assert!(!file.exists(), "an --out file was left");
}

/// A source log that does not verify is not exported, and the export ends as `pop verify`
/// does on it: TAMPERED, exit 4 (auditor59 M2: exit 1, as for a disk that could not be read,
/// and no word "TAMPERED"), with nothing left at --out. A missing file to import is exit 1.
#[test]
fn an_export_of_a_tampered_log_ends_as_verify_does() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _, _) = exported(dir.path());
    let conn = rusqlite::Connection::open(src.join("pop.db")).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET data = CAST(replace(CAST(data AS TEXT), '\"', ' \"') AS BLOB) \
             WHERE position = (SELECT max(position) FROM events)",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let file = dir.path().join("again.jsonl");
    let out = run(&["export"], &[("--data-dir", &src), ("--out", &file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("TAMPERED") && stderr.contains("does not verify"), "{stderr}");
    assert!(!file.exists(), "an --out file was left");
    let verify = run(&["verify"], &[("--data-dir", &src)]);
    assert_eq!(verify.status.code(), Some(4), "{verify:?}");
    // A file whose checkpoint line was edited or cut away is not intact either (reaudit59
    // L4: exit 1, "error:", as for a file that could not be read).
    let (_, file, _) = exported(&dir.path().join("second"));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (last, body) = lines.split_last().unwrap();
    let edited =
        last.replacen("\"events\":", "\"events\": ", 1).replacen("\"seq\":1", "\"seq\":2", 1);
    for (name, content) in [
        ("checkpoint-edited.jsonl", format!("{}\n{edited}\n", body.join("\n"))),
        ("checkpoint-cut.jsonl", format!("{}\n", body.join("\n"))),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, content).unwrap();
        let out = run(
            &["import", bad.to_str().unwrap()],
            &[("--data-dir", &dir.path().join(name).with_extension("d"))],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{name}: {stderr}");
        assert!(stderr.contains("NOT INTACT") && stderr.contains("checkpoint"), "{name}: {stderr}");
    }
    let missing = dir.path().join("nothing-here.jsonl");
    let out = run(&["import", missing.to_str().unwrap()], &[("--data-dir", &dir.path().join("t"))]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The wrong file (no export at all) is a file that cannot be imported, exit 1, not a
    // tampered export, exit 4 (auditor61 L3: a tokens file was NOT INTACT, "page someone").
    let tokens = dir.path().join("tokens.json");
    std::fs::write(&tokens, "{\"tokens\": []}\n").unwrap();
    let out = run(&["import", tokens.to_str().unwrap()], &[("--data-dir", &dir.path().join("t"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not an export") && !stderr.contains("NOT INTACT"), "{stderr}");
}

/// An import whose PostgreSQL cannot be reached says why (it said only "connecting to
/// PostgreSQL", where every other verb names the cause).
#[test]
fn an_import_that_cannot_reach_its_store_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (src, file, _) = exported(dir.path());
    let out = pop_command()
        .arg("import")
        .arg(&file)
        .args(["--store", "postgres://pop@127.0.0.1:1/pop", "--checkpoint-key"])
        .arg(src.join("checkpoint.key"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("import refused, nothing was imported"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "the cause: {stderr}");
}

/// A store whose checkpoint key lives outside its data directory (imported, or served, with
/// `--checkpoint-key`): `pop export` without the key is refused naming the flag, and writes no
/// key of its own there (auditor32: it wrote a new key, and `pop verify` of the same store,
/// which read that key by default, then said TAMPERED). With the key, it exports.
#[test]
fn an_export_without_the_stores_key_writes_no_key_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (src, file, _) = exported(dir.path());
    let key = src.join("checkpoint.key");
    let dst = dir.path().join("dst");
    let out = run(
        &["import", file.to_str().unwrap()],
        &[("--data-dir", &dst), ("--checkpoint-key", &key)],
    );
    ok(&out, "pop import --checkpoint-key");
    let own_key = dst.join("checkpoint.key");
    assert!(!own_key.exists());
    let verified = ok(&run(&["verify"], &[("--data-dir", &dst)]), "pop verify (no key)");
    assert!(verified.trim_end().ends_with("intact"), "{verified}");

    let out_file = dir.path().join("again.jsonl");
    let refused = run(&["export"], &[("--data-dir", &dst), ("--out", &out_file)]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("give that file with --checkpoint-key"), "{said}");
    assert!(!said.contains("--public-key"), "export has no --public-key: {said}");
    assert!(!own_key.exists(), "a key was written: {said}");
    assert!(!out_file.exists());
    let verified = ok(&run(&["verify"], &[("--data-dir", &dst)]), "pop verify (after)");
    assert!(verified.trim_end().ends_with("intact"), "{verified}");

    let out =
        run(&["export"], &[("--data-dir", &dst), ("--out", &out_file), ("--checkpoint-key", &key)]);
    ok(&out, "pop export --checkpoint-key");
    assert!(!own_key.exists());
}
