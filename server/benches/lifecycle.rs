//! Full-lifecycle benchmark: agendas flow through a real `pop serve` on loopback from
//! submission to completion — `submitAgenda`, the scheduler queueing it, `getAgenda` handing it
//! out under a lease, three `updateAgendaProgress` reports (one per operation, the last
//! completing the agenda) — and the benchmark measures completed agendas per second and claim
//! latency (submit acknowledged → handed out by `getAgenda`) p50/p99.
//!
//! Run it with `cargo bench -p pop-server --bench lifecycle -- [options]` (see `--help`), or
//! through `bench/lifecycle.sh`, which takes the median of three runs. It starts its own
//! release-built `pop serve` on a temp data dir (scheduler on, durable store by default),
//! creates a pool, a customer and an insight with a large queue, then for `--seconds`:
//! `--submitters` tasks submit 3-operation agendas while at most `--outstanding` are unfinished
//! (a closed loop, so the backlog stays bounded), and `--pullers` tasks loop `getAgenda` for as
//! many agendas as they have free execution slots (`--in-flight`, default 8, like a resource
//! pool's puller feeding its executors) and run each agenda they get to completion in its own
//! task. Every phase has a
//! deadline.
//!
//! With `--replicas N` it starts a durable throwaway PostgreSQL cluster and N `pop serve`
//! replicas on it (`--store`) instead of one embedded server, and spreads submitters and
//! pullers over the replicas (the scheduler runs on whichever holds its leader lock).
//!
//! With `--otlp` the servers export their traces (`--otlp-endpoint`) to an OTLP/gRPC sink in
//! the benchmark that counts spans: the cost of tracing when it is on, against the same run
//! without (the default: off, as `pop serve` is unless configured).
//!
//! With `--batch N` the work calls are the batched ones real pullers use: each puller claims up
//! to N agendas with one `getAgenda(count: N)`, then sends each of the three report steps of
//! all of them as one `updateAgendaProgresses` request (still one command per agenda); each
//! submitter sends 16 `submitAgenda` operations in one batched HTTP body (one command each).
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run instead, so
//! the benchmark cannot rot unnoticed.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pop_store::test_cluster::{ClusterDurability, TestCluster};
use serde_json::{Value, json};
use support::{SERVICE_TOKEN, Server, USER_TOKEN, ms};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "pop scheduling and hand-out lifecycle benchmark")]
struct Args {
    /// How long agendas are submitted and worked.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent `getAgenda` callers, each running what it gets to completion.
    #[arg(long, default_value_t = 16)]
    pullers: usize,
    /// Agendas each puller runs at once (it asks `getAgenda` for as many as it has free).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Concurrent submitters (each waits for its submit's answer before the next: with too
    /// few, submission and not hand-out would be what is measured).
    #[arg(long, default_value_t = 32)]
    submitters: usize,
    /// Most agendas submitted but not yet completed (the submitters wait past it).
    #[arg(long, default_value_t = 1_000)]
    outstanding: usize,
    /// The insight's `queueSize`.
    #[arg(long, default_value_t = 1_000)]
    queue_size: usize,
    /// Store durability of the server (`full` fsyncs every commit).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Run this many `pop serve` replicas on one throwaway PostgreSQL cluster (durable:
    /// fsync and synchronous commit on) instead of one server on the embedded store;
    /// submitters and pullers are spread over the replicas.
    #[arg(long, default_value_t = 0)]
    replicas: usize,
    /// Export the servers' traces over OTLP/gRPC to a sink in this process (which counts the
    /// spans and keeps nothing), to measure what tracing costs when it is on.
    #[arg(long)]
    otlp: bool,
    /// Batched work calls: pullers claim up to this many agendas per `getAgenda` (1..=100) and
    /// report each step of all of them in one `updateAgendaProgresses`; submitters send
    /// `SUBMIT_BATCH` submits per HTTP body. 0: one agenda per call (the default).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Longest the server start and seeding may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// How long after the end of the drive the in-flight work gets to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause of a puller that got nothing.
const IDLE_PAUSE: Duration = Duration::from_millis(2);

const SUBMIT: &str = "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
    { agenda { id } } }";
const GET_AGENDA: &str =
    "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) { agenda { id } } }";
const UPDATE: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { progress \
    { processingState processingStateMessage } } }";
const UPDATE_MANY: &str = "mutation($r: [ReportInput!]!) { updateAgendaProgresses(reports: $r) \
    { index result { progress { processingState processingStateMessage } } error { code message } } }";
/// Submits per batched HTTP body with `--batch` (the server's most operations per body).
const SUBMIT_BATCH: usize = 16;

const OPERATIONS: [&str; 3] = ["fetch", "encode", "publish"];

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // `cargo test --benches`: prove the code path end to end in a second or two.
        args.seconds = 1;
        args.pullers = 2;
        args.submitters = 2;
        args.outstanding = 20;
        args.queue_size = 10;
        println!("lifecycle: smoke run (use `cargo bench` for the real one)");
    }
    ensure!(args.seconds > 0 && args.pullers > 0 && args.submitters > 0, "need work to do");
    ensure!(args.outstanding > 0 && args.queue_size > 0, "need room for agendas");
    ensure!(args.batch <= 100, "--batch is at most 100 (getAgenda's count)");
    ensure!(
        args.batch == 0 || args.outstanding >= SUBMIT_BATCH,
        "--batch needs --outstanding of at least {SUBMIT_BATCH}"
    );
    let deadline = SETUP_DEADLINE + DRAIN_DEADLINE + Duration::from_secs(args.seconds + 30);
    tokio::time::timeout(deadline, bench(&args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish in time"))?
}

/// Submit acknowledgements and hand-outs meet here, whichever comes first.
#[derive(Default)]
struct Claims {
    pending: Mutex<HashMap<String, Seen>>,
    latency_micros: Mutex<Vec<u64>>,
}

enum Seen {
    Submitted(Instant),
    Claimed(Instant),
}

impl Claims {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, id: String, seen: Seen) {
        let earlier = Self::lock(&self.pending).remove(&id);
        let latency = match (earlier, seen) {
            (None, seen) => {
                Self::lock(&self.pending).insert(id, seen);
                return;
            }
            (Some(Seen::Submitted(s)), Seen::Claimed(c))
            | (Some(Seen::Claimed(c)), Seen::Submitted(s)) => c.saturating_duration_since(s),
            // The same side twice would be a bug in the benchmark; count nothing.
            _ => return,
        };
        Self::lock(&self.latency_micros).push(latency.as_micros() as u64);
    }
}

struct Shared {
    /// One client per server; submitter and puller `n` use `apis[n % len]`.
    apis: Vec<Api>,
    stop: AtomicBool,
    claims: Claims,
    outstanding: Semaphore,
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    get_calls: AtomicU64,
    empty_gets: AtomicU64,
}

async fn bench(args: &Args) -> Result<()> {
    let dir = tempfile::tempdir().context("a temp dir")?;
    let sink = if args.otlp { Some(SpanSink::start().await?) } else { None };
    let otlp: Vec<String> = sink
        .as_ref()
        .map(|(_, e)| vec!["--otlp-endpoint".to_string(), e.clone()])
        .unwrap_or_default();
    let otlp: Vec<&str> = otlp.iter().map(String::as_str).collect();
    // Declared before the servers, so it is dropped (stopped) after them.
    let cluster = if args.replicas > 0 {
        let cluster =
            TestCluster::start("the lifecycle benchmark on PostgreSQL", ClusterDurability::Durable)
                .map_err(|e| anyhow!("starting PostgreSQL: {e}"))?
                .ok_or_else(|| anyhow!("no PostgreSQL binaries: cannot run --replicas"))?;
        Some(cluster)
    } else {
        None
    };
    let servers = match &cluster {
        None => vec![start_server(dir.path(), &args.durability, None, &otlp)?],
        Some(cluster) => {
            let url = cluster.create_database().await.context("a database")?;
            let mut servers = Vec::with_capacity(args.replicas);
            for n in 0..args.replicas {
                let replica = dir.path().join(format!("replica-{n}"));
                std::fs::create_dir_all(&replica).context("a replica dir")?;
                servers.push(start_server(&replica, &args.durability, Some(&url), &otlp)?);
            }
            servers
        }
    };
    let apis = servers.iter().map(Api::new).collect::<Result<Vec<_>>>()?;
    let seeded = tokio::time::timeout(SETUP_DEADLINE, apis[0].seed(args.queue_size))
        .await
        .context("seeding took too long")??;
    for api in &apis[1..] {
        tokio::time::timeout(SETUP_DEADLINE, api.wait_for_insight(&seeded))
            .await
            .context("a replica did not see the insight in time")??;
    }

    let shared = Arc::new(Shared {
        apis,
        stop: AtomicBool::new(false),
        claims: Claims::default(),
        outstanding: Semaphore::new(args.outstanding),
        submitted: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        get_calls: AtomicU64::new(0),
        empty_gets: AtomicU64::new(0),
    });

    let in_flight = args.in_flight.clamp(1, 8);
    let cpu = |servers: &[Server]| servers.iter().map(Server::cpu_ticks).sum::<u64>();
    let cpu_before = cpu(&servers);
    let start = Instant::now();
    let batch = args.batch;
    let submitters: Vec<_> = (0..args.submitters)
        .map(|n| {
            let shared = Arc::clone(&shared);
            if batch > 0 {
                tokio::spawn(batch_submitter(shared, n, seeded.clone()))
            } else {
                tokio::spawn(submitter(shared, n, seeded.clone()))
            }
        })
        .collect();
    let pullers: Vec<_> = (0..args.pullers)
        .map(|n| {
            let shared = Arc::clone(&shared);
            if batch > 0 {
                tokio::spawn(batch_puller(shared, n, batch))
            } else {
                tokio::spawn(puller(shared, n, in_flight))
            }
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let completed_at_end = shared.completed.load(Ordering::Relaxed);
    let drive = start.elapsed();
    let cpu_after = cpu(&servers);
    shared.stop.store(true, Ordering::Relaxed);
    // Unblock submitters waiting for room.
    shared.outstanding.close();

    let drain = async {
        for task in submitters.into_iter().chain(pullers) {
            task.await.context("a worker task")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(DRAIN_DEADLINE, drain)
        .await
        .context("the workers did not stop in time")??;
    let rss_peak = servers.iter().map(Server::hwm_kib).sum::<u64>();
    drop(servers);
    drop(cluster);

    let mut latency = std::mem::take(&mut *Claims::lock(&shared.claims.latency_micros));
    latency.sort_unstable();
    let rate = completed_at_end as f64 / drive.as_secs_f64();
    let cores = cpu_after.saturating_sub(cpu_before) as f64 / 100.0 / drive.as_secs_f64();
    let failed = shared.failed.load(Ordering::Relaxed);
    let gets = shared.get_calls.load(Ordering::Relaxed);
    println!(
        "lifecycle: {} submitted, {completed_at_end} completed in {drive:.1?} ({rate:.0} agendas/s, \
         {:.0} API calls/s), {failed} failed calls; {gets} getAgenda calls ({} empty)",
        shared.submitted.load(Ordering::Relaxed),
        rate * 5.0,
        shared.empty_gets.load(Ordering::Relaxed),
    );
    println!(
        "lifecycle: claim latency (submit acknowledged -> handed out) over {} agendas: p50 {:.1} ms \
         p90 {:.1} ms p99 {:.1} ms max {:.1} ms; server {cores:.2} cores, RSS peak {} MiB",
        latency.len(),
        ms(&latency, 0.50),
        ms(&latency, 0.90),
        ms(&latency, 0.99),
        ms(&latency, 1.0),
        rss_peak / 1024,
    );
    println!(
        "RESULT agendas_per_s={rate:.0} completed={completed_at_end} seconds={:.1} claim_p50_ms={:.2} \
         claim_p99_ms={:.2} server_cores={cores:.2} per_core={:.0} rss_peak_mib={} failed={failed} \
         spans={} batch={batch}",
        drive.as_secs_f64(),
        ms(&latency, 0.50),
        ms(&latency, 0.99),
        if cores > 0.0 { rate / cores } else { 0.0 },
        rss_peak / 1024,
        sink.as_ref().map_or(0, |(s, _)| s.spans.load(Ordering::Relaxed)),
    );
    if let Some((sink, _)) = &sink {
        ensure!(sink.spans.load(Ordering::Relaxed) > 0, "--otlp: no span reached the sink");
    }
    ensure!(failed == 0, "{failed} calls failed");
    ensure!(completed_at_end > 0, "no agenda completed");
    Ok(())
}

/// Submits agendas while there is room, recording each acknowledgement's time.
async fn submitter(shared: Arc<Shared>, n: usize, seeded: String) {
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(permit) = shared.outstanding.acquire().await else { break };
        // Returned when the agenda completes (see `puller`).
        permit.forget();
        match shared.apis[n % shared.apis.len()].submit(n, i, &seeded).await {
            Ok(id) => {
                shared.submitted.fetch_add(1, Ordering::Relaxed);
                shared.claims.record(id, Seen::Submitted(Instant::now()));
            }
            Err(e) => {
                shared.outstanding.add_permits(1);
                if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("lifecycle: a submit failed: {e:#}");
                }
            }
        }
        i += 1;
    }
}

/// `--batch`: submits `SUBMIT_BATCH` agendas per HTTP body (a GraphQL batch: each operation
/// its own `submitAgenda`, one command each) while there is room for all of them.
async fn batch_submitter(shared: Arc<Shared>, n: usize, seeded: String) {
    let mut i = 0u64;
    let k = SUBMIT_BATCH as u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(permits) = shared.outstanding.acquire_many(k).await else { break };
        // Returned as each agenda completes (see `batch_puller`).
        permits.forget();
        match shared.apis[n % shared.apis.len()].submit_many(n, i, SUBMIT_BATCH, &seeded).await {
            Ok(ids) => {
                let now = Instant::now();
                shared.submitted.fetch_add(ids.len() as u64, Ordering::Relaxed);
                shared.outstanding.add_permits(SUBMIT_BATCH - ids.len());
                for id in ids {
                    shared.claims.record(id, Seen::Submitted(now));
                }
            }
            Err(e) => {
                shared.outstanding.add_permits(SUBMIT_BATCH);
                if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("lifecycle: a batch of submits failed: {e:#}");
                }
            }
        }
        i += SUBMIT_BATCH as u64;
    }
}

/// One `getAgenda` for up to `count` agendas: their ids and when they came, or `None` when
/// the call failed or handed out nothing (each counted).
async fn get_some(shared: &Shared, api: &Api, count: i32) -> Option<(Vec<String>, Instant)> {
    shared.get_calls.fetch_add(1, Ordering::Relaxed);
    match api.get_agenda(count).await {
        Ok(ids) if ids.is_empty() => {
            shared.empty_gets.fetch_add(1, Ordering::Relaxed);
            None
        }
        Ok(ids) => Some((ids, Instant::now())),
        Err(e) => {
            if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("lifecycle: getAgenda failed: {e:#}");
            }
            None
        }
    }
}

/// `--batch`: claims up to `batch` agendas with one `getAgenda`, then runs all of them
/// together, each report step of all of them in one `updateAgendaProgresses` request.
async fn batch_puller(shared: Arc<Shared>, n: usize, batch: usize) {
    let api = &shared.apis[n % shared.apis.len()];
    let count = i32::try_from(batch).unwrap_or(100);
    while !shared.stop.load(Ordering::Relaxed) {
        let Some((ids, claimed)) = get_some(&shared, api, count).await else {
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        };
        for id in &ids {
            shared.claims.record(id.clone(), Seen::Claimed(claimed));
        }
        match work_many(api, &ids).await {
            Ok(()) => {
                shared.completed.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("lifecycle: working a batch of {} failed: {e:#}", ids.len());
                }
            }
        }
        shared.outstanding.add_permits(ids.len());
    }
}

/// The three report steps of [`work`] for every agenda of `ids`, one request per step; every
/// item must succeed and the last step must complete every agenda.
async fn work_many(api: &Api, ids: &[String]) -> Result<()> {
    for (i, operation) in OPERATIONS.iter().enumerate() {
        let reports: Vec<Value> =
            ids.iter().map(|id| json!({"agendaProgress": report(id, i, operation)})).collect();
        let data = api.call(SERVICE_TOKEN, UPDATE_MANY, json!({"r": reports})).await?;
        let items = data["updateAgendaProgresses"]
            .as_array()
            .ok_or_else(|| anyhow!("not a list: {data}"))?;
        ensure!(items.len() == ids.len(), "{} answers to {} reports", items.len(), ids.len());
        for (item, id) in items.iter().zip(ids) {
            ensure!(item["error"].is_null(), "report on {id} failed: {}", item["error"]);
            if i + 1 == OPERATIONS.len() {
                let p = &item["result"]["progress"];
                if p["processingState"] != "COMPLETE" || p["processingStateMessage"] != "succeeded"
                {
                    bail!("agenda {id} did not complete: {p}");
                }
            }
        }
    }
    Ok(())
}

/// Loops `getAgenda` for as many agendas as it has free execution slots (`--in-flight`, like a
/// resource pool's puller feeding its executors) and runs every agenda it gets to completion
/// in its own task, so one puller's agendas execute concurrently.
async fn puller(shared: Arc<Shared>, n: usize, in_flight: usize) {
    let api = &shared.apis[n % shared.apis.len()];
    let slots = Arc::new(Semaphore::new(in_flight));
    let budget = u32::try_from(in_flight).unwrap_or(u32::MAX);
    while !shared.stop.load(Ordering::Relaxed) {
        // Wait for at least one free slot, then ask for as many agendas as are free.
        let Ok(first) = Arc::clone(&slots).acquire_owned().await else { break };
        let free = slots.available_permits();
        let count = (free + 1).min(8);
        let Some((ids, claimed)) = get_some(&shared, api, count as i32).await else {
            drop(first);
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        };
        let mut first = Some(first);
        for id in ids {
            shared.claims.record(id.clone(), Seen::Claimed(claimed));
            // The first agenda takes the slot waited for; the others take free ones (there
            // are as many as were asked for, and only this task takes slots).
            let permit = match first.take() {
                Some(permit) => permit,
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let api = &shared.apis[n % shared.apis.len()];
                match work(api, &id).await {
                    Ok(()) => {
                        shared.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("lifecycle: working {id} failed: {e:#}");
                        }
                    }
                }
                shared.outstanding.add_permits(1);
                drop(permit);
            });
        }
    }
    // Wait for this puller's agendas to finish.
    let _ = slots.acquire_many(budget).await;
}

/// Report step `i` on agenda `id`: `operation` complete (the first step also sets the agenda
/// executing).
fn report(id: &str, i: usize, operation: &str) -> Value {
    let mut report = json!({"id": id, "operationProgress": [
        {"operation": operation, "processingState": "COMPLETE", "processingStateMessage": "succeeded"}
    ]});
    if i == 0 {
        report["processingState"] = json!("EXECUTING");
        report["processingStateMessage"] = json!("Running Operations");
    }
    report
}

/// Three progress reports, one per operation; the last completes the agenda.
async fn work(api: &Api, id: &str) -> Result<()> {
    let mut last = Value::Null;
    for (i, operation) in OPERATIONS.iter().enumerate() {
        let report = report(id, i, operation);
        last = api.call(SERVICE_TOKEN, UPDATE, json!({"p": report})).await?;
    }
    let p = &last["updateAgendaProgress"]["progress"];
    if p["processingState"] != "COMPLETE" || p["processingStateMessage"] != "succeeded" {
        bail!("agenda {id} did not complete: {p}");
    }
    Ok(())
}

/// Starts `pop serve` with the scheduler on and the bench's tokens, under `dir` (on the
/// PostgreSQL `store` when given).
fn start_server(
    dir: &Path,
    durability: &str,
    store: Option<&str>,
    otlp: &[&str],
) -> Result<Server> {
    let mut extra = otlp.to_vec();
    if let Some(url) = store {
        extra.extend(["--store", url]);
    }
    support::start_with_tokens(dir, durability, &extra)
}

/// An OTLP/gRPC trace collector that counts the spans it is sent and keeps none (`--otlp`).
#[derive(Clone, Default)]
struct SpanSink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl SpanSink {
    /// Starts it on a free loopback port; the endpoint to give `pop serve`.
    async fn start() -> Result<(SpanSink, String)> {
        let sink = SpanSink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = TraceServiceServer::new(sink.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("lifecycle: the span sink stopped: {e}");
            }
        });
        Ok((sink, format!("http://{addr}")))
    }
}

/// The GraphQL calls the benchmark makes.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
    admin: String,
}

impl Api {
    fn new(server: &Server) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .build()?,
            url: format!("http://{}/graphql", server.addr),
            admin: server.admin.clone(),
        })
    }

    async fn call(&self, token: &str, query: &str, variables: Value) -> Result<Value> {
        let body: Value = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(body["data"].clone())
    }

    /// Pool, customer `acme` and a global insight taking `ffmpeg` operations with a queue of
    /// `queue_size`; the last position.
    async fn seed(&self, queue_size: usize) -> Result<String> {
        let admin = self.admin.clone();
        self.call(
            &admin,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await?;
        self.call(
            &admin,
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "acme", "title": "Acme", "resourcePoolId": "pool-1"}}),
        )
        .await?;
        let data = self
            .call(
                &admin,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": queue_size, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await?;
        let position = data["createInsight"]["position"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no position: {data}"))?;
        // The pullers' first `getAgenda` must find the insight: wait for the read models.
        let data = self
            .call(
                SERVICE_TOKEN,
                "query($p: String) { insight(id: \"transcode\", atLeastPosition: $p) { id } }",
                json!({"p": position}),
            )
            .await?;
        ensure!(data["insight"]["id"] == "transcode", "the insight is not visible: {data}");
        Ok(position)
    }

    /// Waits until this server's read models show the insight (written through another
    /// replica at `position`).
    async fn wait_for_insight(&self, position: &str) -> Result<()> {
        let data = self
            .call(
                SERVICE_TOKEN,
                "query($p: String) { insight(id: \"transcode\", atLeastPosition: $p) { id } }",
                json!({"p": position}),
            )
            .await?;
        ensure!(data["insight"]["id"] == "transcode", "the insight is not visible: {data}");
        Ok(())
    }

    /// One 3-operation agenda; its id once acknowledged.
    async fn submit(&self, submitter: usize, i: u64, after: &str) -> Result<String> {
        let agenda = lifecycle_agenda(submitter, i);
        let data = self.call(USER_TOKEN, SUBMIT, json!({"a": agenda, "p": after})).await?;
        data["submitAgenda"]["agenda"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no agenda id: {data}"))
    }

    /// `k` agendas in one batched HTTP body (`k` `submitAgenda` operations); the ids of those
    /// acknowledged (a refused one is reported once and left out).
    async fn submit_many(
        &self,
        submitter: usize,
        first: u64,
        k: usize,
        after: &str,
    ) -> Result<Vec<String>> {
        let body: Vec<Value> = (0..k as u64)
            .map(|j| {
                let agenda = lifecycle_agenda(submitter, first + j);
                json!({"query": SUBMIT, "variables": {"a": agenda, "p": after}})
            })
            .collect();
        let answers: Vec<Value> = self
            .http
            .post(&self.url)
            .bearer_auth(USER_TOKEN)
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        ensure!(answers.len() == k, "{} answers to a batch of {k}", answers.len());
        let mut ids = Vec::with_capacity(k);
        for answer in &answers {
            if let Some(errors) = answer.get("errors") {
                bail!("GraphQL errors in a batch: {errors}");
            }
            let id = answer["data"]["submitAgenda"]["agenda"]["id"]
                .as_str()
                .ok_or_else(|| anyhow!("no agenda id: {answer}"))?;
            ids.push(id.to_string());
        }
        Ok(ids)
    }
    /// Up to `count` agenda ids handed out to the service token.
    async fn get_agenda(&self, count: i32) -> Result<Vec<String>> {
        let data =
            self.call(SERVICE_TOKEN, GET_AGENDA, json!({"i": "transcode", "n": count})).await?;
        let list = data["getAgenda"].as_array().ok_or_else(|| anyhow!("not a list: {data}"))?;
        list.iter()
            .map(|g| {
                g["agenda"]["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no id: {g}"))
            })
            .collect()
    }
}

/// The benchmark's 3-operation agenda number `i` of `submitter`.
fn lifecycle_agenda(submitter: usize, i: u64) -> Value {
    let operations: Vec<Value> = OPERATIONS
        .iter()
        .map(|name| json!({"name": name, "type": "ffmpeg", "payload": {"n": i}}))
        .collect();
    json!({
        "customerId": "acme",
        "linkId": format!("life-{submitter}"),
        "title": format!("lifecycle {submitter}/{i}"),
        "operations": operations,
    })
}
