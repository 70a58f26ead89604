//! A million agendas (issue 18): one release `pop serve` holding `--finished` finished and
//! `--live` live agendas of five operations. Measures the time to ready on the first start
//! (catch-up from an empty read model) and on restarts from the snapshot, the server's memory
//! (VmRSS, VmHWM) at each point, `agendaProgress(id)` p50/p99 on random ids against the same
//! with 1,000 agendas (both servers up at once, measured in alternating blocks), and the first
//! page of the agenda list filtered by customer and state (GraphQL `agendas`; REST
//! `GET /pop/agenda`, which filters by customer only: it has no state parameter).
//!
//! ```sh
//! cargo bench -p pop-server --bench million -- --finished 1000000 --live 10000
//! cargo bench -p pop-server --bench million -- --finished 100000 --live 1000   # quick
//! ```
//!
//! **Seeding.** A million agendas through HTTP would take hours (each lifecycle is 13
//! commands), so the data dir is written directly through the store, with events decided by
//! the domain as the server's commands would decide them (submit, queue, claim, a 50 % and a
//! succeeded report per operation; a live agenda stops before its last operation's success,
//! still claimed under a lease that outlives the benchmark). Each agenda's whole history is
//! appended as one write (the read side sees the same events; the log is not interleaved the
//! way a busy server interleaves it), with many writers so the store group-commits, and with
//! SQLite `synchronous=NORMAL` for the seeding only (the server then runs with the
//! durability `--durability` names, `full` by default). Times are recent (the data reaper's
//! age is not reached) and leases far ahead (the reclaimer has nothing to take).
//!
//! `--data-dir` keeps (and reuses, when it already holds a store) the seeded data, so a
//! second invocation skips the seeding; a reused dir keeps its snapshot, so its "first start"
//! is then a restart. Without `--bench` (as `cargo test --benches` runs it) it does a small
//! smoke run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use pop_domain::agenda::{AgendaCommand, AgendaState, OperationReport, ProgressReport};
use pop_domain::config::{ConfigAggregate, ConfigCommand, ConfigObject};
use pop_domain::{
    Agenda, AgendaInsight, Aggregate, Customer, EventCodec, Insight, Operation, Params,
    ProcessingState, ResourcePool,
};
use pop_store::{
    Durability, EventMetadata, EventStore, ExpectedVersion, NewEvent, SqliteOptions, SqliteStore,
};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Api, Server, load_average, micros, ms};

#[derive(Debug, Parser)]
#[command(about = "pop with a million agendas: memory, restart, progress and list latency")]
struct Args {
    /// Finished (COMPLETE) agendas of five operations.
    #[arg(long, default_value_t = 1_000_000)]
    finished: usize,
    /// Live (EXECUTING, claimed) agendas of five operations.
    #[arg(long, default_value_t = 10_000)]
    live: usize,
    /// Customers the agendas are spread over.
    #[arg(long, default_value_t = 100)]
    customers: usize,
    /// Agendas of the comparison server (`agendaProgress` at this size is the baseline).
    #[arg(long, default_value_t = 1_000)]
    small: usize,
    /// Timed `agendaProgress(id)` requests per server.
    #[arg(long, default_value_t = 4_000)]
    samples: usize,
    /// Timed first pages per list query.
    #[arg(long, default_value_t = 200)]
    list_samples: usize,
    /// Restarts from the snapshot (the median is reported).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Durability of the server (not of the seeding, which uses `normal`).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Keep the seeded data here (reused when it already holds a store); else a temp dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Concurrent appenders while seeding.
    #[arg(long, default_value_t = 256)]
    writers: usize,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

const OPERATIONS: [&str; 5] = ["fetch", "probe", "transcode", "package", "publish"];
const INSIGHT: &str = "insight-1";
const POOL: &str = "pool-1";
/// How long a start may take before the benchmark gives up on it.
const START_LIMIT: Duration = Duration::from_secs(3_600);
/// How long a stop (which writes the last snapshot) may take.
const STOP_LIMIT: Duration = Duration::from_secs(1_200);
/// `agendaProgress` requests per block; the two servers alternate blocks.
const BLOCK: usize = 200;

const PROGRESS: &str = "query($id: String!) { agendaProgress(id: $id) { id processingState \
    percentComplete operationProgress { operation processingState percentComplete } } }";
const LIST: &str = "query($f: AgendaFilter) { agendas(filter: $f, first: 50) { items { id \
    customerId title addedTime } hasNextPage } }";
/// The same filter on the progress list (what the dashboard's table shows), which shows the
/// state each item is in.
const PROGRESS_LIST: &str = "query($f: AgendaFilter) { agendaProgressList(filter: $f, first: 50) \
    { items { id customerId processingState percentComplete } hasNextPage } }";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.finished = 300;
        args.live = 30;
        args.small = 100;
        args.customers = 10;
        args.samples = 100;
        args.list_samples = 10;
        args.restarts = 1;
        println!("million: smoke run (use `cargo bench` for the real one)");
    }
    ensure!(args.customers > 0 && args.samples > 0 && args.list_samples > 0, "need positive sizes");
    bench(&args).await
}

/// Where the data dirs live: `--data-dir` (kept), else a temp dir (removed at the end).
struct Dirs {
    _temp: Option<tempfile::TempDir>,
    big: PathBuf,
    small: PathBuf,
}

fn dirs(args: &Args) -> Result<Dirs> {
    let (temp, root) = match &args.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().context("a temp dir")?;
            let root = temp.path().to_path_buf();
            (Some(temp), root)
        }
    };
    let dirs = Dirs {
        _temp: temp,
        big: root.join(format!("big-{}-{}", args.finished, args.live)),
        small: root.join(format!("small-{}", args.small)),
    };
    Ok(dirs)
}

async fn bench(args: &Args) -> Result<()> {
    println!(
        "million: {} finished + {} live agendas of 5 operations over {} customers; server \
         durability {}; load average {}",
        args.finished,
        args.live,
        args.customers,
        args.durability,
        load_average()
    );
    let dirs = dirs(args)?;
    let now = Utc::now();
    // 1 % of the small server's agendas are live, as in the big one.
    let small_live = (args.small * args.live / (args.finished + args.live).max(1)).max(1);
    for (dir, finished, live) in [
        (&dirs.small, args.small - small_live.min(args.small), small_live),
        (&dirs.big, args.finished, args.live),
    ] {
        if dir.join("data/pop.db").exists() {
            println!("million: reusing the store in {}", dir.display());
            continue;
        }
        let t = Instant::now();
        let events = seed(&dir.join("data"), finished, live, args, now).await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "million: seeded {} ({finished} finished, {live} live, {events} events) in {secs:.1} s \
             ({:.0} events/s); store {}",
            dir.display(),
            events as f64 / secs,
            mib(file_bytes(&dir.join("data")))
        );
    }

    // The big server: first start (catch-up without a snapshot, unless a reused dir has one).
    let had_snapshot = snapshot_file(&dirs.big).exists();
    let (big, first) = start(&dirs.big, args).await?;
    println!(
        "million: first start ({}): ready in {:.2} s; RSS {} HWM {}",
        if had_snapshot {
            "from the reused dir's snapshot"
        } else {
            "no snapshot: catch-up from the log"
        },
        first.as_secs_f64(),
        kib(big.rss_kib()),
        kib(big.hwm_kib())
    );
    let api = Api::new(&big, Duration::from_secs(120))?;
    let ids = Ids { finished: args.finished, live: args.live };
    check_answers(&api, &ids).await?;
    let stopped = stop(big)?;
    println!(
        "million: stopped in {:.2} s (writes the last snapshot); snapshot {}",
        stopped.as_secs_f64(),
        mib(file_bytes(&snapshot_file(&dirs.big)))
    );

    // Restarts from the snapshot.
    let mut restarts = Vec::new();
    let mut server = None;
    for i in 0..args.restarts.max(1) {
        if let Some(previous) = server.take() {
            let stopped = stop(previous)?;
            println!("million: stopped in {:.2} s", stopped.as_secs_f64());
        }
        let (big, ready) = start(&dirs.big, args).await?;
        println!(
            "million: restart {}: ready in {:.2} s; RSS {} HWM {}",
            i + 1,
            ready.as_secs_f64(),
            kib(big.rss_kib()),
            kib(big.hwm_kib())
        );
        restarts.push(ready.as_secs_f64());
        server = Some(big);
    }
    let big = server.context("no restart")?;
    let rss_ready = big.rss_kib();
    let hwm_ready = big.hwm_kib();
    let big_api = Api::new(&big, Duration::from_secs(120))?;
    check_answers(&big_api, &ids).await?;

    // The small server beside it, for agendaProgress at 1,000 agendas.
    let (small, small_ready) = start(&dirs.small, args).await?;
    let small_api = Api::new(&small, Duration::from_secs(120))?;
    let small_ids = Ids { finished: args.small - small_live.min(args.small), live: small_live };
    check_answers(&small_api, &small_ids).await?;
    println!(
        "million: small server ({} agendas) ready in {:.2} s; RSS {}",
        args.small,
        small_ready.as_secs_f64(),
        kib(small.rss_kib())
    );

    let load_before = load_average();
    // Warm both up (connections, caches), then alternate blocks.
    progress_block(&big_api, &ids, BLOCK, 1).await?;
    progress_block(&small_api, &small_ids, BLOCK, 2).await?;
    let (mut at_big, mut at_small) = (Vec::new(), Vec::new());
    let mut seed = 3u64;
    while at_big.len() < args.samples {
        let n = BLOCK.min(args.samples - at_big.len());
        at_small.extend(progress_block(&small_api, &small_ids, n, seed).await?);
        at_big.extend(progress_block(&big_api, &ids, n, seed + 1).await?);
        seed += 2;
    }
    at_big.sort_unstable();
    at_small.sort_unstable();
    let lists = list_latencies(&big_api, args).await?;
    let load_after = load_average();
    let rss_queried = big.rss_kib();
    let hwm_queried = big.hwm_kib();
    drop(small);
    let stopped = stop(big)?;

    let restart = median(restarts.clone());
    let (big_p50, big_p99) = (ms(&at_big, 0.50), ms(&at_big, 0.99));
    let (small_p50, small_p99) = (ms(&at_small, 0.50), ms(&at_small, 0.99));
    println!(
        "million: agendaProgress(id) at {} agendas p50 {big_p50:.3} ms p99 {big_p99:.3} ms; at {} \
         agendas p50 {small_p50:.3} ms p99 {small_p99:.3} ms; p99 ratio {:.2} (target <= 1), \
         {} samples each; load average {load_before} -> {load_after}",
        args.finished + args.live,
        args.small,
        big_p99 / small_p99,
        at_big.len()
    );
    for (name, sorted) in &lists {
        println!(
            "million: first page, {name}: p50 {:.2} ms p99 {:.2} ms (target < 50 ms)",
            ms(sorted, 0.50),
            ms(sorted, 0.99)
        );
    }
    println!(
        "million: RSS at ready {} (HWM {}), after the queries {} (HWM {}); target 2 GiB: {:.2}x",
        kib(rss_ready),
        kib(hwm_ready),
        kib(rss_queried),
        kib(hwm_queried),
        rss_queried as f64 / (2.0 * 1024.0 * 1024.0)
    );
    println!(
        "million: restart to ready {restart:.2} s (median of {:?}); target 10 s: {:.2}x; first \
         start {:.2} s; last stop {:.2} s",
        restarts.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>(),
        restart / 10.0,
        first.as_secs_f64(),
        stopped.as_secs_f64()
    );
    let list_p99 = |name: &str| {
        lists.iter().find(|(n, _)| n.starts_with(name)).map_or(f64::NAN, |(_, s)| ms(s, 0.99))
    };
    println!(
        "RESULT agendas={} first_start_s={:.2} restart_s={restart:.2} rss_ready_mib={} \
         hwm_ready_mib={} rss_queried_mib={} progress_p99_ms={big_p99:.3} \
         progress_small_p99_ms={small_p99:.3} progress_p99_ratio={:.2} \
         list_graphql_complete_p99_ms={:.2} list_graphql_executing_p99_ms={:.2} \
         list_rest_p99_ms={:.2} snapshot_mib={}",
        args.finished + args.live,
        first.as_secs_f64(),
        rss_ready / 1024,
        hwm_ready / 1024,
        rss_queried / 1024,
        big_p99 / small_p99,
        list_p99("GraphQL agendas(customerId, COMPLETE"),
        list_p99("GraphQL agendas(customerId, EXECUTING"),
        list_p99("REST"),
        file_bytes(&snapshot_file(&dirs.big)) >> 20
    );
    Ok(())
}

// ---- seeding ----------------------------------------------------------------------------------

/// The agenda ids of one seeded data dir: `a<i>` for i in 0..finished (finished), then the
/// live ones; progress ids are `p<id>`.
struct Ids {
    finished: usize,
    live: usize,
}

fn agenda_id(i: usize) -> String {
    format!("a{i:08}")
}

fn customer_of(i: usize, customers: usize) -> String {
    format!("customer-{}", i % customers)
}

/// Writes the config objects and `finished + live` agendas into a new store in `data_dir`.
/// Returns the number of events written.
async fn seed(
    data_dir: &Path,
    finished: usize,
    live: usize,
    args: &Args,
    now: DateTime<Utc>,
) -> Result<u64> {
    std::fs::create_dir_all(data_dir)?;
    // NORMAL for the seeding only: the benchmark measures the server, not this.
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock: pop_store::system_clock(),
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store = Arc::new(SqliteStore::open(data_dir.join("pop.db"), options).await?);
    let count = finished + live;
    // Agenda i was submitted at `start + 3i ms`: the whole history ends before `now`.
    let start = now - chrono::Duration::milliseconds(3 * count as i64 + 60_000);
    let at = |ms: i64| start + chrono::Duration::milliseconds(ms);
    let lease_until = now + chrono::Duration::days(7);

    let mut events = 0u64;
    let pool = ResourcePool {
        id: POOL.to_string(),
        customer_id: "ops".to_string(),
        title: Some(POOL.to_string()),
        ..ResourcePool::default()
    };
    events += config(&*store, pool, at(0)).await?;
    let insight = Insight {
        id: INSIGHT.to_string(),
        customer_id: "ops".to_string(),
        title: "Insight 1".to_string(),
        resource_pool_id: POOL.to_string(),
        queue_size: 10,
        is_global: true,
        ..Insight::default()
    };
    events += config(&*store, insight, at(0)).await?;
    for c in 0..args.customers {
        let customer = Customer {
            id: customer_of(c, args.customers),
            customer_id: customer_of(c, args.customers),
            title: format!("Customer {c}"),
            resource_pool_id: Some(POOL.to_string()),
            ..Customer::default()
        };
        events += config(&*store, customer, at(0)).await?;
    }

    let customers = args.customers;
    let started = Instant::now();
    let mut written = futures::stream::iter(0..count)
        .map(|i| {
            let store = Arc::clone(&store);
            async move {
                let customer = customer_of(i, customers);
                let history = history(i, &customer, i >= finished, &at, lease_until)?;
                let stream =
                    format!("agenda-{}", pop_domain::agenda::key(&customer, &agenda_id(i)));
                append(&*store, &stream, &history, &customer).await
            }
        })
        .buffer_unordered(args.writers.max(1));
    let mut done = 0usize;
    while let Some(n) = written.next().await {
        events += n?;
        done += 1;
        if done.is_multiple_of(100_000) {
            println!(
                "million: seeding: {done}/{count} agendas ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(written);
    store.close().await?;
    Ok(events)
}

/// Decides one config object's creation and appends it.
async fn config<T: ConfigObject>(
    store: &dyn EventStore,
    object: T,
    now: DateTime<Utc>,
) -> Result<u64>
where
    ConfigAggregate<T>: Aggregate<Command = ConfigCommand<T>>,
{
    let stream = format!("{}-{}", ConfigAggregate::<T>::CATEGORY, object.id());
    let customer = object.customer_id().to_string();
    let command = ConfigCommand::Create { object, now, cid: "seed".to_string() };
    let events = ConfigAggregate::<T>::default().decide(&command)?;
    append(store, &stream, &events, &customer).await
}

/// The events of agenda `i`'s life, decided by the domain one command at a time.
fn history(
    i: usize,
    customer: &str,
    live: bool,
    at: &impl Fn(i64) -> DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<pop_domain::agenda::AgendaEvent>> {
    let id = agenda_id(i);
    let t0 = 3 * i as i64;
    let agenda = Agenda {
        id: id.clone(),
        customer_id: customer.to_string(),
        title: Some(format!("agenda {id}")),
        progress_id: Some(format!("p{id}")),
        link_id: Some(format!("batch-{}", i / 10)),
        operations: OPERATIONS
            .iter()
            .map(|n| Operation {
                name: n.to_string(),
                op_type: "shell".to_string(),
                id: None,
                payload: json!({"cmd": format!("run {n}")}).into(),
                params: Params::default(),
            })
            .collect(),
        params: serde_json::from_value(json!({"externalId": format!("ext-{id}")}))
            .unwrap_or_default(),
        ..Agenda::default()
    };
    let report = |ms: i64, operation: OperationReport| AgendaCommand::ReportProgress {
        holder: "worker-1".to_string(),
        lease_id: None,
        lease_expires: lease_until,
        report: ProgressReport { operations: vec![operation], ..ProgressReport::default() },
        now: at(ms),
    };
    let insight =
        AgendaInsight { resource_pool_id: POOL.to_string(), insight_id: INSIGHT.to_string() };
    let mut commands = vec![
        AgendaCommand::Submit { agenda, insight, now: at(t0) },
        AgendaCommand::Queue { now: at(t0) },
        AgendaCommand::Claim {
            holder: "worker-1".to_string(),
            lease_id: format!("lease-{id}"),
            lease_expires: lease_until,
            now: at(t0 + 1),
        },
    ];
    for name in OPERATIONS {
        commands.push(report(
            t0 + 1,
            OperationReport {
                name: name.to_string(),
                state: ProcessingState::Executing,
                percent: Some(50.0),
                ..OperationReport::default()
            },
        ));
        commands.push(report(
            t0 + 2,
            OperationReport {
                name: name.to_string(),
                state: ProcessingState::Complete,
                message: Some("succeeded".to_string()),
                result_payload: Some(json!({"out": format!("{name} done"), "size": 1024})),
                ..OperationReport::default()
            },
        ));
    }
    if live {
        // Stops before the last operation's success: EXECUTING, still claimed.
        commands.pop();
    }
    let mut state = AgendaState::default();
    let mut events = Vec::new();
    for command in &commands {
        let decided = state.decide(command)?;
        for e in &decided {
            state.evolve(e);
        }
        events.extend(decided);
    }
    Ok(events)
}

/// Appends `events` as one write of a new stream, with the metadata the server writes.
async fn append<E: EventCodec>(
    store: &dyn EventStore,
    stream: &str,
    events: &[E],
    customer: &str,
) -> Result<u64> {
    let metadata = EventMetadata {
        customer_id: Some(customer.to_string()),
        cid: Some("seed".to_string()),
        ..EventMetadata::default()
    }
    .to_json()?;
    let new = NewEvent::encode_all(events, &metadata)?;
    store.append(stream, ExpectedVersion::NoStream, new).await?;
    Ok(events.len() as u64)
}

// ---- the server -------------------------------------------------------------------------------

fn snapshot_file(dir: &Path) -> PathBuf {
    dir.join("data/snapshots").join(pop_projections::snapshot::SNAPSHOT_FILE)
}

/// Starts `pop serve` on `dir/data` and waits until `/readyz` answers 200: the server and the
/// time from the spawn to ready.
async fn start(dir: &Path, args: &Args) -> Result<(Server, Duration)> {
    let t = Instant::now();
    let server = support::start_with_tokens_within(dir, &args.durability, &[], START_LIMIT)?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/readyz", server.addr);
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            break;
        }
        ensure!(t.elapsed() < START_LIMIT, "pop serve was not ready in {START_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((server, t.elapsed()))
}

/// SIGTERM, then waits (bounded) for the exit: how long the stop took.
fn stop(mut server: Server) -> Result<Duration> {
    let t = Instant::now();
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).stdout(Stdio::null()).status()?;
    while t.elapsed() < STOP_LIMIT {
        if let Some(status) = server.child.try_wait()? {
            ensure!(status.success(), "pop serve exited with {status}");
            return Ok(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("pop serve did not stop in {STOP_LIMIT:?}")
}

/// The first and last finished and live agendas answer with the state they were seeded in.
async fn check_answers(api: &Api, ids: &Ids) -> Result<()> {
    let mut expect = vec![(0, "COMPLETE")];
    if ids.finished > 0 {
        expect.push((ids.finished - 1, "COMPLETE"));
    }
    if ids.live > 0 {
        expect.push((ids.finished, "EXECUTING"));
        expect.push((ids.finished + ids.live - 1, "EXECUTING"));
    }
    for (i, state) in expect {
        let id = format!("p{}", agenda_id(i));
        let data = api.call(ADMIN_TOKEN, PROGRESS, json!({"id": id})).await?;
        let got = &data["agendaProgress"]["processingState"];
        ensure!(got == state, "agenda {id}: {got} is not {state}: {data}");
    }
    Ok(())
}

/// A small deterministic generator (xorshift) for the random ids.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `n` `agendaProgress(id)` requests on random agendas, one at a time: microseconds each.
async fn progress_block(api: &Api, ids: &Ids, n: usize, seed: u64) -> Result<Vec<u64>> {
    let total = (ids.finished + ids.live) as u64;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let i = (next(&mut state) % total) as usize;
        let id = format!("p{}", agenda_id(i));
        let t = Instant::now();
        let data = api.call(ADMIN_TOKEN, PROGRESS, json!({"id": id})).await?;
        out.push(micros(t.elapsed()));
        ensure!(data["agendaProgress"]["id"] == id.as_str(), "no progress for {id}: {data}");
    }
    Ok(out)
}

/// First pages of 50, filtered by a random customer (and state, where the API has it).
async fn list_latencies(api: &Api, args: &Args) -> Result<Vec<(String, Vec<u64>)>> {
    let mut out = Vec::new();
    let mut state = 0xA5A5_5A5A_1234_5678u64;
    for (name, query, field) in
        [("agendas", LIST, "agendas"), ("agendaProgressList", PROGRESS_LIST, "agendaProgressList")]
    {
        for processing_state in ["COMPLETE", "EXECUTING"] {
            let mut times = Vec::with_capacity(args.list_samples);
            for _ in 0..args.list_samples {
                let customer = customer_of(next(&mut state) as usize, args.customers);
                let filter = json!({"customerId": customer, "processingState": processing_state});
                let t = Instant::now();
                let data = api.call(ADMIN_TOKEN, query, json!({"f": filter})).await?;
                times.push(micros(t.elapsed()));
                let items = data[field]["items"].as_array().context("no items")?;
                ensure!(
                    items.len() == 50 || (!items.is_empty() && data[field]["hasNextPage"] == false),
                    "a short first page of {processing_state} agendas of {customer}: {data}"
                );
                ensure!(
                    items.iter().all(|a| a["customerId"] == customer.as_str()),
                    "an agenda of another customer: {data}"
                );
                ensure!(
                    field == "agendas"
                        || items.iter().all(|a| a["processingState"] == processing_state),
                    "an agenda of another state: {data}"
                );
            }
            times.sort_unstable();
            out.push((format!("GraphQL {name}(customerId, {processing_state})"), times));
        }
    }
    let base = api.url.trim_end_matches("/graphql").to_string();
    let mut times = Vec::with_capacity(args.list_samples);
    for _ in 0..args.list_samples {
        let customer = customer_of(next(&mut state) as usize, args.customers);
        let url = format!("{base}/pop/agenda?byCustomerId={customer}&limit=50");
        let t = Instant::now();
        let response = api.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        times.push(micros(t.elapsed()));
        ensure!(status.is_success(), "GET {url}: {status} {body}");
        ensure!(body.to_string().contains(&customer), "GET {url}: no agenda of {customer}");
    }
    times.sort_unstable();
    out.push(("REST GET /pop/agenda?byCustomerId (no state filter in REST)".to_string(), times));
    Ok(out)
}

// ---- figures ----------------------------------------------------------------------------------

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn kib(k: u64) -> String {
    format!("{:.0} MiB", k as f64 / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The bytes of a file, or of every file under a directory.
fn file_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| file_bytes(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
