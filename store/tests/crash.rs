//! Crash test: a child process appends with several concurrent appenders (so appends are
//! group-committed) and prints every acknowledged append; the parent kills it with SIGKILL at a
//! random moment, reopens the store, and checks that every acknowledged event is there and the
//! log is whole (ordered, versions contiguous). Twenty kills on the same file, so recovery of
//! an already recovered store is exercised too.
//!
//! The child is this test binary re-executed (`--exact crash_child_appender`) with
//! [`CHILD_ENV`] naming the database; without it that test does nothing.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pop_store::{
    Direction, Durability, EventStore, ExpectedVersion, NewEvent, Position, SqliteOptions,
    SqliteStore,
};
use uuid::Uuid;

/// Set in the child: the database it appends to.
const CHILD_ENV: &str = "POP_STORE_CRASH_CHILD_DB";
/// Set in the child: the run number, to keep stream names of different runs apart.
const RUN_ENV: &str = "POP_STORE_CRASH_RUN";
const RUNS: u32 = 20;
const APPENDERS: usize = 8;
/// Kill window after the child reports it is appending.
/// How long a child may take to open the store before the test gives up on it.
const CHILD_START_GUARD: Duration = Duration::from_secs(60);
const KILL_AFTER_MS: std::ops::Range<u64> = 20..400;

/// One acknowledged append as the child printed it.
#[derive(Debug)]
struct Ack {
    stream: String,
    version: u64,
    position: Position,
    event_ids: Vec<Uuid>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let stream = parts.next()?.to_owned();
    let version = parts.next()?.parse().ok()?;
    let position = parts.next()?.parse().ok()?;
    let event_ids = parts.next()?.split(',').map(|id| id.parse().ok()).collect::<Option<_>>()?;
    Some(Ack { stream, version, position, event_ids })
}

/// xorshift64*: enough randomness for kill times without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn in_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }
}

#[test]
fn crash_child_appender() {
    let Ok(db) = std::env::var(CHILD_ENV) else {
        return; // Not re-executed by the crash test: nothing to do.
    };
    let run: u32 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let options = SqliteOptions { durability: Durability::Full, ..SqliteOptions::default() };
        let store = std::sync::Arc::new(SqliteStore::open(&db, options).await.unwrap());
        println!("READY");
        std::io::stdout().flush().unwrap();
        let mut tasks = Vec::new();
        for appender in 0..APPENDERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("crash-{run}-{appender}");
                let mut version: Option<u64> = None;
                for i in 0u64.. {
                    // Mostly small appends, now and then a large one that spans many pages.
                    let count = if i % 50 == 49 { 200 } else { 1 + (i % 3) as usize };
                    let events: Vec<NewEvent> = (0..count)
                        .map(|n| NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "CrashTested".into(),
                            schema_version: 1,
                            data: format!(r#"{{"appender":{appender},"i":{i},"n":{n}}}"#)
                                .into_bytes(),
                            metadata: br#"{"actor":"crash-test"}"#.to_vec(),
                        })
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let r = store.append(&stream, expected, events).await.unwrap();
                    version = Some(r.version);
                    let line =
                        format!("ACK {stream} {} {} {}\n", r.version, r.position, ids.join(","));
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Reopens the store and checks it against every acknowledgement so far.
/// `fresh`: where this run's acknowledgements start in `acks` (those are also looked up
/// through `read_stream`; older ones were already).
async fn verify(db: &Path, acks: &[Ack], fresh: usize) -> usize {
    let store = SqliteStore::open(db, SqliteOptions::default()).await.unwrap();
    // The whole log: ordered, no duplicates, versions contiguous per stream.
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, 5_000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.position;
        all.extend(batch);
    }
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for pair in all.windows(2) {
        assert!(pair[0].position < pair[1].position, "log out of order");
    }
    let mut by_id = HashMap::new();
    for e in &all {
        let next = next_version.entry(&*e.stream).or_insert(0);
        assert_eq!(e.version, *next, "stream {} has a gap", e.stream);
        *next += 1;
        assert!(by_id.insert(e.event_id, e).is_none(), "event {} twice", e.event_id);
    }
    assert_eq!(store.head().await.unwrap(), all.last().map_or(Position::START, |e| e.position));

    for ack in acks {
        let first = ack.version + 1 - ack.event_ids.len() as u64;
        for (i, id) in ack.event_ids.iter().enumerate() {
            let e = by_id.get(id).unwrap_or_else(|| panic!("acknowledged event {id} is lost"));
            assert_eq!(&*e.stream, ack.stream.as_str());
            assert_eq!(e.version, first + i as u64);
        }
        let last = by_id[ack.event_ids.last().unwrap()];
        assert_eq!(last.position, ack.position, "position of an acknowledged append");
    }
    for ack in &acks[fresh..] {
        let stream =
            store.read_stream(&ack.stream, ack.version, 1, Direction::Forwards).await.unwrap();
        assert_eq!(stream[0].event_id, *ack.event_ids.last().unwrap());
    }
    store.close().await.unwrap();
    all.len()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
        ^ u64::from(std::process::id());
    println!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut acks = Vec::new();

    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_appender", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, &db)
            .env(RUN_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            // Read until the pipe closes; a line cut by the kill is not an acknowledgement.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The harness may print "test crash_child_appender ... " on the same line.
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else if let Some(ack) = parse_ack(&line) {
                    acks.push(ack);
                }
            }
            acks
        });
        // Wait until the child has opened the store (recovery done) and starts appending. The
        // guard only turns a child that never starts into a failure instead of a hang.
        if ready_rx.recv_timeout(CHILD_START_GUARD).is_err() {
            child.kill().unwrap();
            panic!("run {run}: the child never opened the store");
        }
        std::thread::sleep(Duration::from_millis(rng.in_range(KILL_AFTER_MS)));
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        let new_acks = reader.join().unwrap();
        let acked_now = new_acks.len();
        let fresh = acks.len();
        acks.extend(new_acks);
        let events = runtime.block_on(verify(&db, &acks, fresh));
        println!(
            "run {run}: {acked_now} appends acknowledged; log has {events} events, all intact"
        );
    }
    assert!(!acks.is_empty(), "the child never acknowledged an append");
}
