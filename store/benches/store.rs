//! Store benchmark: durable (fsync) SQLite on a temp file under /tmp, or (`--postgres`) a
//! durable throwaway PostgreSQL cluster it starts itself (a fresh database per measurement).
//!
//! - append throughput with 1, 16 and 256 concurrent appenders running agenda lifecycles (six
//!   single-event appends per stream: NoStream, then Exact(0..4)), in events/s;
//! - single-appender append latency, p50 and p99;
//! - append-to-subscriber latency, p50 and p99: one appender's events timed from the start of
//!   `append` until a subscriber (on a second store handle — another replica for PostgreSQL)
//!   receives them, while 16 other appenders load the store;
//! - `read_all` of the whole log, alone and with decoding (data into the domain's `AgendaEvent`,
//!   metadata into `EventMetadata`), in events/s;
//! - verification (`pop verify`) of a filled log, after sealing it into signed checkpoints,
//!   in events/s (and what the first seal of the whole log took);
//! - export (`pop export`) of a filled log to a file and import (`pop import`: every line
//!   verified, then one transaction) of that file into an empty store, in events/s (with
//!   `--postgres`: exported from and imported into PostgreSQL);
//! - (only with `--only hashing`, PostgreSQL) what the hash chain costs: append throughput at the largest
//!   `--appenders` count with the chain on and off (`PgOptions::hash_chain`), the two
//!   alternated run by run, and the ratio of the medians.
//!
//! `cargo bench -p pop-store --bench store -- [--append-events N] [--read-events N]
//! [--latency-appends N] [--appenders 1,16,256] [--runs 3] [--scale 10] [--normal] [--postgres]
//! [--pg-writers 4]
//! [--only append,latency,subscribe,verify,transfer,read,hashing]`
//!
//! Every figure is measured `--runs` times on a fresh store and the median printed. With
//! `--scale K` the whole table is repeated with K times the data.

/// The allocator the `pop` binary uses too, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../bench/cpu.rs"]
mod cpu;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pop_store::test_cluster::{ClusterDurability, TestCluster};
use pop_store::{
    Durability, EventMetadata, EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore, Position,
    SqliteOptions, SqliteStore, StoreError,
};
use uuid::Uuid;

use cpu::cpu_seconds;

/// Appends per agenda lifecycle: submitted, scheduled, started, two progress reports, done.
const LIFECYCLE: u64 = 6;
/// Events per `read_all` call. 1,000 (~0.7 MB) stays in the CPU caches between the reader
/// and the decoder; the store's maximum (10,000) was measured slower.
const READ_BATCH: usize = 1_000;
/// Batches read ahead of each decoder in the pipelined read.
const READ_AHEAD: usize = 4;
/// Decoding tasks: one per core of the benchmark machine.
const DECODERS: usize = 2;
/// Events per append while filling the store for the read benchmark (one lifecycle at once).
const FILL_APPENDERS: usize = 64;

#[derive(Debug, Clone)]
struct Args {
    append_events: u64,
    read_events: u64,
    latency_appends: u64,
    appenders: Vec<usize>,
    runs: usize,
    scale: u64,
    durability: Durability,
    /// Measure PostgreSQL instead of SQLite.
    postgres: bool,
    /// PostgreSQL writer tasks (`PgOptions::writers`).
    pg_writers: usize,
    /// Run only these parts: `append`, `latency`, `read`, `hashing` (all when empty).
    only: Vec<String>,
    /// Append with the hash chain off (the `hashing` part's baseline).
    unchained: bool,
    /// After each PostgreSQL latency run, print what the server spent per statement
    /// (`pg_stat_statements`; the cluster needs it preloaded, see [`STATEMENTS_SETTINGS`]).
    pg_statements: bool,
}

impl Args {
    fn runs_part(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

const USAGE: &str = "usage: cargo bench -p pop-store --bench store -- [--append-events N] \
[--read-events N] [--latency-appends N] [--appenders 1,16,256] [--runs 3] [--scale 10] [--normal] \
[--postgres] [--pg-writers 4] [--pg-statements] \
[--only append,latency,subscribe,verify,transfer,read,hashing]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        append_events: 120_000,
        read_events: 1_000_000,
        latency_appends: 3_000,
        appenders: vec![1, 16, 256],
        runs: 3,
        scale: 1,
        durability: Durability::Full,
        postgres: false,
        pg_writers: PgOptions::default().writers,
        only: Vec::new(),
        unchained: false,
        pg_statements: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| v.replace('_', "").parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "--append-events" => args.append_events = number(value()?)?,
            "--read-events" => args.read_events = number(value()?)?,
            "--latency-appends" => args.latency_appends = number(value()?)?,
            "--runs" => args.runs = number(value()?)?.max(1) as usize,
            "--scale" => args.scale = number(value()?)?.max(1),
            "--normal" => args.durability = Durability::Normal,
            "--postgres" => args.postgres = true,
            "--pg-writers" => args.pg_writers = number(value()?)?.max(1) as usize,
            "--pg-statements" => args.pg_statements = true,
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            "--appenders" => {
                args.appenders = value()?
                    .split(',')
                    .map(|v| v.parse().map_err(|e| format!("{v}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`; `cargo test --benches` may pass a filter.
            "--bench" => {}
            other if other.starts_with("--") => {
                return Err(format!("unknown option {other}\n{USAGE}"));
            }
            _ => {}
        }
    }
    Ok(args)
}

/// The encoded events of one real agenda lifecycle (three operations): submitted, queued,
/// claimed, progress reports, completed — decided by the domain itself, so the bytes and the
/// decode cost are those pop really writes and reads. Computed once; every stream reuses them
/// (the store neither compresses nor deduplicates, so this costs the same as distinct data).
fn lifecycle() -> &'static [(String, u32, Vec<u8>)] {
    static LIFECYCLE_EVENTS: std::sync::OnceLock<Vec<(String, u32, Vec<u8>)>> =
        std::sync::OnceLock::new();
    LIFECYCLE_EVENTS.get_or_init(|| {
        use pop_domain::agenda::{AgendaCommand, AgendaState, OperationReport, ProgressReport};
        use pop_domain::{Aggregate, EventCodec, ProcessingState};
        let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let agenda: pop_domain::Agenda = serde_json::from_value(serde_json::json!({
            "id": "0190f3a2-7b1c-7d2e-9f00-1234567890ab",
            "progressId": "0190f3a2-7b1c-7d2e-9f00-1234567890ac",
            "customerId": "customer-0042",
            "title": "nightly ingest",
            "linkId": "ingest-2026-11-27",
            "operations": [
                {"name": "probe", "type": "ffprobe", "payload": {"file": "s3://bucket/in.mov"}},
                {"name": "encode", "type": "ffmpeg", "payload": {"input": "@<probe.out::/streams>", "preset": "slow"}},
                {"name": "package", "type": "packager", "payload": {"video": "@<encode.out>"}}
            ]
        }))
        .unwrap_or_default();
        let holder = "worker-7".to_owned();
        let lease = "lease-1".to_owned();
        let report = |name: &str, state, msg: &str, pct| AgendaCommand::ReportProgress {
            holder: holder.clone(),
            lease_id: Some(lease.clone()),
            lease_expires: t(600),
            report: ProgressReport {
                operations: vec![OperationReport {
                    name: name.to_owned(),
                    state,
                    message: Some(msg.to_owned()),
                    percent: Some(pct),
                    started: Some(t(10)),
                    result_payload: (state == ProcessingState::Complete)
                        .then(|| serde_json::json!({"streams": ["video", "audio"], "duration": 5400.5})),
                    ..Default::default()
                }],
                ..Default::default()
            },
            now: t(20),
        };
        let commands = vec![
            AgendaCommand::Submit {
                agenda,
                insight: pop_domain::AgendaInsight {
                    resource_pool_id: "pool-1".into(),
                    insight_id: "insight-1".into(),
                },
                now: t(0),
            },
            AgendaCommand::Queue { now: t(1) },
            AgendaCommand::Claim {
                holder: holder.clone(),
                lease_id: lease.clone(),
                lease_expires: t(300),
                now: t(2),
            },
            report("probe", ProcessingState::Executing, "probing", 50.0),
            report("probe", ProcessingState::Complete, "succeeded", 100.0),
            report("encode", ProcessingState::Executing, "encoding", 40.0),
        ];
        let mut state = AgendaState::default();
        let mut out = Vec::new();
        for c in &commands {
            for e in state.decide(c).unwrap_or_default() {
                state.evolve(&e);
                out.push((e.event_type().to_owned(), e.schema_version(), e.encode().unwrap_or_default()));
            }
        }
        out
    })
}

/// ~150 bytes of metadata, as `EventMetadata` writes it.
fn metadata(stream: u64) -> Vec<u8> {
    let m = EventMetadata {
        customer_id: Some(format!("customer-{:04}", stream % 1000)),
        cid: Some(format!("cid-{stream:016}")),
        causation_id: Some(Uuid::from_u128(u128::from(stream) << 64 | 0xabcdef)),
        actor: Some("worker-7".to_owned()),
        command: None,
        traceparent: None,
        tracestate: None,
    };
    m.to_json().unwrap_or_default()
}

fn event(stream: u64, step: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: lifecycle()[step as usize % lifecycle().len()].0.clone(),
        schema_version: lifecycle()[step as usize % lifecycle().len()].1,
        data: lifecycle()[step as usize % lifecycle().len()].2.clone(),
        metadata: metadata(stream),
    }
}

/// The cluster of a `--postgres` run (durable: fsync and synchronous commit on).
static CLUSTER: std::sync::OnceLock<TestCluster> = std::sync::OnceLock::new();

/// A fresh, empty store of the backend under test.
struct Bench {
    store: Arc<dyn EventStore>,
    kind: Kind,
    /// Where the SQLite file lives; deleted on drop.
    _dir: Option<tempfile::TempDir>,
}

enum Kind {
    Sqlite(Arc<SqliteStore>),
    Postgres { store: Arc<PgStore>, url: String },
}

impl Bench {
    async fn close(&self) -> Result<(), StoreError> {
        match &self.kind {
            Kind::Sqlite(store) => store.close().await,
            Kind::Postgres { store, .. } => {
                store.close().await;
                Ok(())
            }
        }
    }

    /// A second handle on the same storage: another replica for PostgreSQL; the same store
    /// for SQLite (one process owns the file).
    async fn replica(&self) -> Result<Arc<dyn EventStore>, StoreError> {
        match &self.kind {
            Kind::Sqlite(store) => Ok(store.clone()),
            Kind::Postgres { url, .. } => {
                Ok(Arc::new(PgStore::connect(url, PgOptions::default()).await?))
            }
        }
    }
}

async fn open(args: &Args) -> Result<Bench, StoreError> {
    if args.postgres {
        let cluster = CLUSTER.get().ok_or(StoreError::Closed)?;
        let url = cluster.create_database().await?;
        let options = PgOptions {
            writers: args.pg_writers,
            pool_size: args.pg_writers + 12,
            hash_chain: !args.unchained,
            ..PgOptions::default()
        };
        let store = Arc::new(PgStore::connect(&url, options).await?);
        return Ok(Bench { store: store.clone(), kind: Kind::Postgres { store, url }, _dir: None });
    }
    let dir = tempdir()?;
    let options = SqliteOptions { durability: args.durability, ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(dir.path().join("bench.db"), options).await?);
    Ok(Bench { store: store.clone(), kind: Kind::Sqlite(store), _dir: Some(dir) })
}

fn tempdir() -> Result<tempfile::TempDir, StoreError> {
    tempfile::tempdir_in("/tmp").map_err(|e| StoreError::backend("temp dir", e))
}

/// One appender: lifecycles on fresh streams until `events` are appended. Returns the
/// duration of every append when `latencies` is set.
async fn run_lifecycles(
    store: Arc<dyn EventStore>,
    appender: u64,
    events: u64,
    latencies: bool,
) -> Result<Vec<Duration>, StoreError> {
    let mut times = Vec::new();
    let mut done = 0;
    let mut stream_no = 0u64;
    while done < events {
        let id = appender << 32 | stream_no;
        let stream = format!("agenda-{id:016x}");
        for step in 0..LIFECYCLE.min(events - done) {
            let expected = if step == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(step - 1)
            };
            let e = event(id, step);
            let start = Instant::now();
            store.append(&stream, expected, vec![e]).await?;
            if latencies {
                times.push(start.elapsed());
            }
            done += 1;
        }
        stream_no += 1;
    }
    Ok(times)
}

/// Events per second with `appenders` concurrent appenders.
async fn append_throughput(args: &Args, appenders: usize, events: u64) -> Result<f64, StoreError> {
    let bench = open(args).await?;
    let store = bench.store.clone();
    let per = events.div_ceil(appenders as u64);
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders as u64)
        .map(|a| tokio::spawn(run_lifecycles(store.clone(), a, per, false)))
        .collect();
    for t in tasks {
        t.await.map_err(|e| StoreError::backend("appender task", e))??;
    }
    let elapsed = start.elapsed();
    bench.close().await?;
    Ok((per * appenders as u64) as f64 / elapsed.as_secs_f64())
}

async fn append_latency(args: &Args, appends: u64) -> Result<(Duration, Duration), StoreError> {
    let bench = open(args).await?;
    let stats = match &bench.kind {
        Kind::Postgres { url, .. } if args.pg_statements => Some(Statements::reset(url).await?),
        _ => None,
    };
    let times = run_lifecycles(bench.store.clone(), 0, appends, true).await?;
    if let Some(stats) = stats {
        stats.print(appends).await?;
    }
    bench.close().await?;
    Ok(p50_p99(times, "appends"))
}

/// The cluster settings `--pg-statements` needs.
const STATEMENTS_SETTINGS: &str =
    "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on";

/// `pg_stat_statements` of one bench database: where the server's time per append goes.
struct Statements(tokio_postgres::Client);

impl Statements {
    async fn reset(url: &str) -> Result<Statements, StoreError> {
        let fail = |e| StoreError::backend("pg_stat_statements", e);
        let (client, connection) =
            tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(fail)?;
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                 SELECT pg_stat_statements_reset();",
            )
            .await
            .map_err(fail)?;
        Ok(Statements(client))
    }

    /// Per statement of this database: calls per append, and the mean planning and execution
    /// time per call; then the server's total per append.
    async fn print(&self, appends: u64) -> Result<(), StoreError> {
        let fail = |e| StoreError::backend("pg_stat_statements", e);
        let rows = self
            .0
            .query(
                "SELECT regexp_replace(left(query, 70), '\\s+', ' ', 'g'), calls, \
                        total_plan_time, total_exec_time \
                 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query NOT LIKE '%pg_stat_statements%' \
                 ORDER BY total_plan_time + total_exec_time DESC LIMIT 16",
                &[],
            )
            .await
            .map_err(fail)?;
        let per = appends.max(1) as f64;
        println!("  server time per statement ({appends} appends; µs per call, calls per append)");
        let mut total = 0.0;
        for row in rows {
            let query: String = row.try_get(0).map_err(fail)?;
            let calls: i64 = row.try_get(1).map_err(fail)?;
            let plan: f64 = row.try_get(2).map_err(fail)?;
            let exec: f64 = row.try_get(3).map_err(fail)?;
            let calls_f = calls.max(1) as f64;
            total += (plan + exec) * 1e3 / per;
            println!(
                "    {:>7.2} calls  plan {:>7.1}  exec {:>7.1}  {query}",
                calls as f64 / per,
                plan * 1e3 / calls_f,
                exec * 1e3 / calls_f
            );
        }
        println!("    server total per append: {total:.1} µs");
        // Every lookup of the writers is by a unique key: the log is never scanned whole
        // (stats of the last second may still be unflushed).
        let scans = self
            .0
            .query_one(
                "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables \
                 WHERE relname = 'pop_events'",
                &[],
            )
            .await
            .map_err(fail)?;
        let (seq, idx): (i64, i64) =
            (scans.try_get(0).map_err(fail)?, scans.try_get(1).map_err(fail)?);
        println!("    pop_events scans so far: {seq} sequential, {idx} by index");
        Ok(())
    }
}

/// Append-to-subscriber latency: a probe appender's events timed from the start of `append`
/// until a subscriber on a second handle receives them, under the load of 16 appenders.
async fn subscriber_latency(args: &Args, probes: u64) -> Result<(Duration, Duration), StoreError> {
    const LOAD_APPENDERS: u64 = 16;
    let bench = open(args).await?;
    let reader = bench.replica().await?;
    let mut subscription = reader.subscribe_all(bench.store.head().await?);
    let started = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let probe_ids = Arc::clone(&started);
    let receiver = tokio::spawn(async move {
        let mut times = Vec::with_capacity(probes as usize);
        while (times.len() as u64) < probes {
            let Some(event) = subscription.next().await else { break };
            let event = event?;
            let at = Instant::now();
            let start = probe_ids.lock().ok().and_then(|mut m| m.remove(&event.event_id));
            if let Some(start) = start {
                times.push(at.saturating_duration_since(start));
            }
        }
        Ok::<_, StoreError>(times)
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (1..=LOAD_APPENDERS)
        .map(|a| {
            let (store, stop) = (bench.store.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut round = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    run_lifecycles(store.clone(), a << 16 | round, LIFECYCLE, false).await?;
                    round += 1;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    let stream = "probe".to_owned();
    for i in 0..probes {
        let e = event(0, i);
        if let Ok(mut m) = started.lock() {
            m.insert(e.event_id, Instant::now());
        }
        let expected =
            if i == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(i - 1) };
        bench.store.append(&stream, expected, vec![e]).await?;
        // Spread the probes out a little, as requests would be.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let times = receiver.await.map_err(|e| StoreError::backend("subscriber task", e))??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        t.await.map_err(|e| StoreError::backend("load task", e))??;
    }
    bench.close().await?;
    Ok(p50_p99(times, "deliveries"))
}

/// The p50 and p99 of `times`, after a line with their mean and tail (`what` they time): the
/// throughput of one appender is 1 / its mean, not 1 / its p50.
fn p50_p99(mut times: Vec<Duration>, what: &str) -> (Duration, Duration) {
    let total: Duration = times.iter().sum();
    times.sort();
    let at =
        |q: f64| times.get(((times.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let slow: Duration = times.iter().filter(|t| **t >= Duration::from_millis(1)).sum();
    println!(
        "  ({what}: mean {:.0} µs, p90 {:.0}, p99.9 {:.0}, max {:.0} µs; of 1 ms or more: {}, \
         {:.0}% of the time)",
        total.as_secs_f64() * 1e6 / times.len().max(1) as f64,
        at(0.90).as_secs_f64() * 1e6,
        at(0.999).as_secs_f64() * 1e6,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
        times.iter().filter(|t| **t >= Duration::from_millis(1)).count(),
        100.0 * slow.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE),
    );
    (at(0.50), at(0.99))
}

/// A store holding `events` lifecycle events, written in lifecycle-sized appends.
async fn filled_store(args: &Args, events: u64) -> Result<Bench, StoreError> {
    let bench = open(args).await?;
    let store = bench.store.clone();
    let streams = events.div_ceil(LIFECYCLE);
    let per = streams.div_ceil(FILL_APPENDERS as u64);
    let tasks: Vec<_> = (0..FILL_APPENDERS as u64)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                for s in (a * per)..((a + 1) * per).min(streams) {
                    let count = LIFECYCLE.min(events - s * LIFECYCLE);
                    let batch = (0..count).map(|step| event(s, step)).collect();
                    store
                        .append(&format!("agenda-{s:016x}"), ExpectedVersion::NoStream, batch)
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| StoreError::backend("fill task", e))??;
    }
    Ok(bench)
}

/// Reads the whole log; with `decode`, parses every event on [`DECODERS`] tasks while the
/// next batches are read (decoding is per event and parallel; a projection folds the decoded
/// batches in order afterwards). Returns events/s and the number of events.
async fn read_all(store: &Arc<dyn EventStore>, decode: bool) -> Result<(f64, u64), StoreError> {
    let start = Instant::now();
    let mut senders = Vec::new();
    let mut decoders = Vec::new();
    for _ in 0..DECODERS {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<pop_store::RecordedEvent>>(READ_AHEAD);
        senders.push(tx);
        decoders.push(tokio::spawn(async move {
            let mut count = 0u64;
            let mut checksum = 0u64;
            while let Some(batch) = rx.recv().await {
                count += batch.len() as u64;
                if decode {
                    checksum = checksum.wrapping_add(decode_batch(&batch)?);
                }
            }
            std::hint::black_box(checksum);
            Ok::<_, StoreError>(count)
        }));
    }
    let mut after = Position::START;
    for turn in 0.. {
        let batch = store.read_all(after, READ_BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        if senders[turn % DECODERS].send(batch).await.is_err() {
            break;
        }
    }
    drop(senders);
    let mut count = 0;
    for d in decoders {
        count += d.await.map_err(|e| StoreError::backend("decoder task", e))??;
    }
    Ok((count as f64 / start.elapsed().as_secs_f64(), count))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn show(values: &[f64], unit: &str) -> String {
    let runs: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
    format!("{:>12.0} {unit:<5} runs: {}", median(values.to_vec()), runs.join(" "))
}

async fn table(args: &Args, scale: u64) -> Result<(), StoreError> {
    let append_events = args.append_events * scale;
    let read_events = args.read_events * scale;
    let latency_appends = args.latency_appends * scale;
    println!("\n== scale ×{scale} ==");
    println!("{:<44} {:>12}", "figure", "median");
    let appenders = if args.runs_part("append") { args.appenders.clone() } else { Vec::new() };
    for appenders in appenders {
        // A single fsync-bound appender would take minutes on the full count.
        let events =
            if appenders == 1 { latency_appends.min(append_events) } else { append_events };
        let mut values = Vec::new();
        for _ in 0..args.runs {
            values.push(append_throughput(args, appenders, events).await?);
        }
        let label = format!("append, {appenders} appenders, {events} events");
        println!("{label:<44} {}", show(&values, "ev/s"));
    }
    // Only when asked for: it doubles the append runs.
    if args.postgres && args.only.iter().any(|p| p == "hashing") {
        let appenders = args.appenders.iter().copied().max().unwrap_or(256);
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            on.push(append_throughput(args, appenders, append_events).await?);
            let baseline = Args { unchained: true, ..args.clone() };
            off.push(append_throughput(&baseline, appenders, append_events).await?);
        }
        let label = |what| format!("append, {appenders} appenders, chain {what}");
        println!("{:<44} {}", label("on"), show(&on, "ev/s"));
        println!("{:<44} {}", label("off"), show(&off, "ev/s"));
        println!(
            "{:<44} {:>12.3}",
            "chain on / off (medians)",
            median(on.clone()) / median(off.clone()).max(f64::MIN_POSITIVE)
        );
    }
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let latency_runs = if args.runs_part("latency") { args.runs } else { 0 };
    for _ in 0..latency_runs {
        let (p50, p99) = append_latency(args, latency_appends).await?;
        p50s.push(p50.as_secs_f64() * 1e6);
        p99s.push(p99.as_secs_f64() * 1e6);
    }
    if latency_runs > 0 {
        println!(
            "{:<44} {}",
            format!("append latency p50, {latency_appends} appends"),
            show(&p50s, "µs")
        );
        println!(
            "{:<44} {}",
            format!("append latency p99, {latency_appends} appends"),
            show(&p99s, "µs")
        );
    }
    let subscribe_runs = if args.runs_part("subscribe") { args.runs } else { 0 };
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for _ in 0..subscribe_runs {
        let (p50, p99) = subscriber_latency(args, latency_appends.min(2_000)).await?;
        p50s.push(p50.as_secs_f64() * 1e6);
        p99s.push(p99.as_secs_f64() * 1e6);
    }
    if subscribe_runs > 0 {
        let label = |q| format!("append-to-subscriber {q}, 16 loaders");
        println!("{:<44} {}", label("p50"), show(&p50s, "µs"));
        println!("{:<44} {}", label("p99"), show(&p99s, "µs"));
    }
    if args.runs_part("verify") {
        verify(args, read_events).await?;
    }
    if args.runs_part("transfer") {
        transfer(args, read_events).await?;
    }
    if !args.runs_part("read") {
        return Ok(());
    }

    let fill = Instant::now();
    let bench = filled_store(args, read_events).await?;
    let store = bench.store.clone();
    println!(
        "{:<44} {:>12.1} s",
        format!("(filling {read_events} events, 6 per append)"),
        fill.elapsed().as_secs_f64()
    );
    for (decode, label) in [(false, "read_all"), (true, "read_all + decode")] {
        let mut values = Vec::new();
        let mut per_cpu = Vec::new();
        let mut count = 0;
        for _ in 0..args.runs {
            let cpu = cpu_seconds();
            let (rate, n) = read_all(&store, decode).await?;
            if let (Some(before), Some(after)) = (cpu, cpu_seconds()) {
                per_cpu.push(n as f64 / (after - before).max(0.01));
            }
            values.push(rate);
            count = n;
        }
        println!("{:<44} {}", format!("{label}, {count} events"), show(&values, "ev/s"));
        if !per_cpu.is_empty() {
            println!("{:<44} {}", "  the same, CPU cost (all threads)", show(&per_cpu, "ev/CPU-s"));
        }
    }
    // Decoding alone, on one thread, from events already in memory: the CPU cost a
    // projection pays per event on top of the read.
    let sample = store.read_all(Position::START, READ_BATCH).await?;
    let mut values = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        let sum = decode_batch(&sample)?;
        std::hint::black_box(sum);
        values.push(sample.len() as f64 / start.elapsed().as_secs_f64());
    }
    println!(
        "{:<44} {}",
        format!("decode only, 1 thread, {} events", sample.len()),
        show(&values, "ev/s")
    );
    bench.close().await?;
    Ok(())
}

/// Seals a filled store's log into signed checkpoints once (timed: what a first seal of an
/// existing log costs), then verifies it `--runs` times: digests, chains, stream heads, and
/// every checkpoint's signature, count, log hash and stream list — what `pop verify` does.
async fn verify(args: &Args, events: u64) -> Result<(), StoreError> {
    use pop_store::commitment::{CheckpointSigningKey, LogCommitment, Sealer};
    let fill = Instant::now();
    let bench = filled_store(args, events).await?;
    println!(
        "{:<44} {:>12.1} s",
        format!("(filling {events} events, 6 per append)"),
        fill.elapsed().as_secs_f64()
    );
    let key = CheckpointSigningKey::from_bytes(&[7; 32]);
    let commitment: &dyn LogCommitment = match &bench.kind {
        Kind::Sqlite(store) => store.as_ref(),
        Kind::Postgres { store, .. } => store.as_ref(),
    };
    let start = Instant::now();
    Sealer::new(key.clone())
        .seal_all(commitment, chrono::Utc::now())
        .await
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sealed = events as f64 / start.elapsed().as_secs_f64();
    println!(
        "{:<44} {}",
        format!("seal (first, whole log), {events} events"),
        show(&[sealed], "ev/s")
    );
    let (mut values, mut per_cpu) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let cpu = cpu_seconds();
        let start = Instant::now();
        let report = match &bench.kind {
            Kind::Sqlite(store) => store.verify_with(Some(key.verifying_key())).await?,
            Kind::Postgres { url, .. } => {
                pop_store::postgres::verify_with(url, Some(key.verifying_key())).await?
            }
        };
        let elapsed = start.elapsed();
        if !report.is_intact()
            || report.events != events
            || report.checkpoints.sealed_entries != events
        {
            return Err(StoreError::Corrupt(format!("verification failed: {report:?}")));
        }
        values.push(events as f64 / elapsed.as_secs_f64());
        if let (Some(before), Some(after)) = (cpu, cpu_seconds()) {
            per_cpu.push(events as f64 / (after - before).max(0.01));
        }
    }
    println!(
        "{:<44} {}",
        format!("verify (chains + checkpoints), {events} events"),
        show(&values, "ev/s")
    );
    if !per_cpu.is_empty() {
        // This process only (the PostgreSQL backends are not counted).
        println!("{:<44} {}", "  the same, client CPU cost", show(&per_cpu, "ev/CPU-s"));
    }
    // `pop verify` on the embedded store also runs SQLite's check of the file's structure
    // (`SqliteStore::check_file`, PRAGMA integrity_check) beside the walk, on another thread: alone
    // here, so its cost shows apart.
    if let Kind::Sqlite(store) = &bench.kind {
        let mut values = Vec::new();
        for _ in 0..args.runs {
            let path = store.path().to_path_buf();
            let start = Instant::now();
            let problems = tokio::task::spawn_blocking(move || SqliteStore::check_file(&path, 5))
                .await
                .map_err(|e| StoreError::backend("file check", e))??;
            if !problems.is_empty() {
                return Err(StoreError::Corrupt(format!("file check: {problems:?}")));
            }
            values.push(events as f64 / start.elapsed().as_secs_f64());
        }
        println!(
            "{:<44} {}",
            format!("file check (integrity_check, alone), {events} events"),
            show(&values, "ev/s")
        );
        // Both as `pop verify` runs them (server/src/verify_cmd.rs): the walk of the file,
        // opened read-only (its write-ahead log read first), and SQLite's check of it, side by
        // side on two blocking threads. The command's figure less its process start and key.
        let mut values = Vec::new();
        for _ in 0..args.runs {
            let path = store.path().to_path_buf();
            let start = Instant::now();
            let check = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || SqliteStore::check_file(&path, 5))
            };
            let trust =
                pop_store::commitment::Trust { key: Some(key.verifying_key()), witness: None };
            let walk = tokio::task::spawn_blocking(move || {
                SqliteStore::verify_file_trusting(&path, trust)
            });
            let joined = |e| StoreError::backend("verify", e);
            let report = walk.await.map_err(joined)??;
            let problems = check.await.map_err(joined)??;
            if !report.is_intact() || report.events != events || !problems.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "verification failed: {report:?} {problems:?}"
                )));
            }
            values.push(events as f64 / start.elapsed().as_secs_f64());
        }
        println!(
            "{:<44} {}",
            format!("walk + file check side by side, {events} events"),
            show(&values, "ev/s")
        );
    }
    bench.close().await
}

/// Exports a filled log to a file `--runs` times, and imports that file into a fresh empty
/// store `--runs` times (each import reads, parses and verifies every line, then commits once):
/// what `pop export` and `pop import` do, in events/s.
async fn transfer(args: &Args, events: u64) -> Result<(), StoreError> {
    use pop_store::commitment::CheckpointSigningKey;
    use pop_store::transfer::{ExportReader, TransferError};
    let failed = |e: TransferError| StoreError::Corrupt(e.to_string());
    let fill = Instant::now();
    let bench = filled_store(args, events).await?;
    println!(
        "{:<44} {:>12.1} s",
        format!("(filling {events} events, 6 per append)"),
        fill.elapsed().as_secs_f64()
    );
    let key = CheckpointSigningKey::from_bytes(&[7; 32]);
    let dir = tempdir()?;
    let file = dir.path().join("export.jsonl");
    let mut exports = Vec::new();
    // Events per CPU-second of the whole process (every thread): on a shared machine the
    // wall-clock rate swings with the load, the CPU a run takes much less.
    let (mut export_cpu, mut check_cpu, mut import_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let per_cpu = |n: u64, before: Option<f64>, out: &mut Vec<f64>| {
        if let (Some(before), Some(after)) = (before, cpu_seconds()) {
            out.push(n as f64 / (after - before).max(0.01));
        }
    };
    for _ in 0..args.runs {
        let out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).map_err(|e| StoreError::backend("export file", e))?,
        );
        let start = Instant::now();
        let cpu = cpu_seconds();
        let summary = match &bench.kind {
            Kind::Sqlite(store) => {
                let (path, key) = (store.path().to_path_buf(), key.clone());
                tokio::task::spawn_blocking(move || {
                    pop_store::sqlite::transfer::export(
                        &path,
                        Position::START,
                        &key,
                        out,
                        chrono::Utc::now(),
                    )
                })
                .await
                .map_err(|e| StoreError::backend("export task", e))?
            }
            Kind::Postgres { url, .. } => {
                pop_store::postgres::transfer::export(
                    url,
                    Position::START,
                    &key,
                    out,
                    chrono::Utc::now(),
                )
                .await
            }
        }
        .map_err(failed)?;
        exports.push(summary.manifest.events as f64 / start.elapsed().as_secs_f64());
        per_cpu(summary.manifest.events, cpu, &mut export_cpu);
        if summary.manifest.events != events {
            return Err(StoreError::Corrupt(format!("exported {}", summary.manifest.events)));
        }
    }
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "{:<44} {}",
        format!("export, {events} events ({} MiB)", bytes >> 20),
        show(&exports, "ev/s")
    );
    println!("{:<44} {}", "  the same, CPU cost (all threads)", show(&export_cpu, "ev/CPU-s"));
    // The file checked alone (read, parse, verify every line; nothing written): the part of an
    // import that is not the store's, as the import reads it (`read_parallel`, one parsing
    // thread per core).
    let mut checks = Vec::new();
    let parsers = std::thread::available_parallelism().map_or(2, |n| n.get());
    for _ in 0..args.runs {
        let start = Instant::now();
        let cpu = cpu_seconds();
        let reader = ExportReader::open(&file, Some(key.verifying_key())).map_err(failed)?;
        let mut n = 0u64;
        reader
            .read_parallel(parsers, |items| {
                n += items
                    .iter()
                    .filter(|i| matches!(i, pop_store::transfer::Item::Entry(_)))
                    .count() as u64;
                Ok(())
            })
            .map_err(failed)?;
        checks.push(n as f64 / start.elapsed().as_secs_f64());
        per_cpu(n, cpu, &mut check_cpu);
    }
    println!("{:<44} {}", format!("check the file alone, {events} events"), show(&checks, "ev/s"));
    println!("{:<44} {}", "  the same, CPU cost (all threads)", show(&check_cpu, "ev/CPU-s"));
    let mut imports = Vec::new();
    for run in 0..args.runs {
        let start = Instant::now();
        let cpu = cpu_seconds();
        let reader = ExportReader::open(&file, Some(key.verifying_key())).map_err(failed)?;
        let summary = match &bench.kind {
            Kind::Sqlite(_) => {
                let target = dir.path().join(format!("import-{run}.db"));
                let summary = tokio::task::spawn_blocking(move || {
                    pop_store::sqlite::transfer::import(&target, reader)
                })
                .await
                .map_err(|e| StoreError::backend("import task", e))?;
                let done = start.elapsed();
                let _ = std::fs::remove_file(dir.path().join(format!("import-{run}.db")));
                summary.map(|s| (s, done))
            }
            Kind::Postgres { .. } => {
                let cluster = CLUSTER.get().ok_or(StoreError::Closed)?;
                let url = cluster.create_database().await?;
                pop_store::postgres::transfer::import(&url, reader)
                    .await
                    .map(|s| (s, start.elapsed()))
            }
        }
        .map_err(failed)?;
        if summary.0.events != events {
            return Err(StoreError::Corrupt(format!("imported {}", summary.0.events)));
        }
        imports.push(events as f64 / summary.1.as_secs_f64());
        per_cpu(events, cpu, &mut import_cpu);
    }
    println!(
        "{:<44} {}",
        format!("import (verify + commit), {events} events"),
        show(&imports, "ev/s")
    );
    println!("{:<44} {}", "  the same, CPU cost (all threads)", show(&import_cpu, "ev/CPU-s"));
    bench.close().await
}

/// The decode a projection does: data into the domain's `AgendaEvent` through the versioned
/// codec, metadata into `EventMetadata`.
fn decode_batch(batch: &[pop_store::RecordedEvent]) -> Result<u64, StoreError> {
    use pop_domain::EventCodec;
    let mut sum = 0u64;
    for e in batch {
        let event =
            pop_domain::agenda::AgendaEvent::decode(&e.event_type, e.schema_version, &e.data)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let meta = EventMetadata::from_json(&e.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sum += event.event_type().len() as u64 + meta.actor.map_or(0, |a| a.len() as u64);
    }
    Ok(sum)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("store bench: {e}");
            std::process::exit(2);
        }
    };
    if args.postgres {
        let extra = if args.pg_statements { STATEMENTS_SETTINGS } else { "" };
        let what = "the PostgreSQL store benchmark";
        match TestCluster::start_with_settings(what, ClusterDurability::Durable, extra) {
            Ok(Some(cluster)) => {
                let _ = CLUSTER.set(cluster);
            }
            Ok(None) => std::process::exit(1),
            Err(e) => {
                eprintln!("store bench: starting PostgreSQL failed: {e}");
                std::process::exit(1);
            }
        }
        println!(
            "pop-store bench: PostgreSQL (throwaway durable cluster, fsync on, synchronous_commit \
             on), {} runs per figure (median)",
            args.runs
        );
    } else {
        println!(
            "pop-store bench: SQLite, durability {:?}, files under /tmp, {} runs per figure (median)",
            args.durability, args.runs
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("store bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    let scales: Vec<u64> = if args.scale > 1 { vec![1, args.scale] } else { vec![1] };
    for scale in scales {
        if let Err(e) = runtime.block_on(table(&args, scale)) {
            eprintln!("store bench failed: {e}");
            std::process::exit(1);
        }
    }
}
