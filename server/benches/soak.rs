//! Soak (issue 19): a real `pop serve` under a mixed load for an hour — submits, claims,
//! reports (some of them failures, which the retry process takes up), cancels, reruns, reads
//! and lists, subscriptions on WebSockets, and the data reaper deleting what finished — then a
//! drain and three verdicts, each of which fails the run (non-zero exit):
//!
//! - **memory**: RSS must level off — the highest RSS of the last quarter at most 1.25x that
//!   of the second quarter plus 32 MiB (the first quarter is warm-up: caches fill);
//! - **latency**: the p99 of the timed calls (submit, report, cancel, rerun, read, list) must
//!   not drift — the median p99 of the last three windows at most 2x that of the first three
//!   after the warm-up window;
//! - **invariant**: after the drain every agenda that was submitted and acknowledged is
//!   either listed exactly once, finished (cancelled when its cancel was acknowledged), or
//!   was reaped, which only an agenda older than the reap age may be.
//!
//! `bench/soak.sh` runs it (`cargo bench -p pop-server --bench soak -- --minutes 60`). Without
//! `--bench` (as `cargo test --benches` runs it) a 20-second smoke run replaces the defaults.
//! `POP_BENCH_BIN` picks the server binary. The load average is printed with every window: a
//! soak shares the machine, and a drift verdict means little on a machine that got busier.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Api, SERVICE_TOKEN, USER_TOKEN, load_average, micros, ms};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(about = "pop soak: an hour of mixed load, then memory, latency and invariant verdicts")]
struct Args {
    /// Length of the load phase.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Length of one latency window.
    #[arg(long, default_value_t = 5)]
    window_minutes: u64,
    /// Agendas submitted per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// WebSocket subscribers (each follows every change of the customer's agendas).
    #[arg(long, default_value_t = 5)]
    subscribers: usize,
    /// Store durability of the server (`full` fsyncs every commit, as in production).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Set by `cargo bench`; without it a short smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

const SUBMIT: &str = "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id } } }";
const GET_AGENDA: &str = "mutation { getAgenda(insightId: \"transcode\", count: 5, \
    waitSeconds: 1) { agenda { id } progress { id } lease { id } } }";
const REPORT: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, \
    leaseId: $l) { position } }";
const CANCEL: &str =
    "mutation($id: String!) { cancelAgenda(agendaId: $id, reason: \"soak\") { position } }";
const RERUN: &str = "mutation($id: String!) { rerunAgenda(agendaId: $id, params: [\"resetAll\"]) \
    { position } }";
const READ: &str = "query($id: String!) { agendaProgress(id: $id) { processingState \
    percentComplete operationProgress { operation processingState } } }";
const LIST: &str = "{ agendas(first: 20, filter: {customerId: \"acme\", newestFirst: true}) \
    { items { id } } }";
const STATS: &str = "{ agendaStats { waiting executing } }";
const PAGE: &str = "query($after: String) { agendaProgressList(first: 500, after: $after, \
    filter: {customerId: \"acme\"}) { items { agendaId processingState processingStateMessage } \
    endCursor hasNextPage } }";
const OPERATIONS: [&str; 3] = ["probe", "encode", "package"];

/// What the load tasks share.
struct Shared {
    api: Api,
    start: Instant,
    window: Duration,
    stop: AtomicBool,
    /// Timed call latencies (µs) per window.
    latencies: Mutex<Vec<Vec<u64>>>,
    /// Calls that failed other than by a refusal the load expects.
    errors: AtomicU64,
    /// Acknowledged submits: id → when.
    submitted: Mutex<HashMap<String, Instant>>,
    /// Acknowledged cancels.
    cancelled: Mutex<HashSet<String>>,
    /// Agendas a worker completed (candidates for a rerun).
    completed: Mutex<Vec<String>>,
    /// Subscription messages received, and sockets that closed under the subscribers.
    updates: AtomicU64,
    socket_closes: AtomicU64,
}

impl Shared {
    /// One timed call; refusals named in `expected` are not errors.
    async fn timed(
        &self,
        token: &str,
        query: &str,
        vars: Value,
        expected: &[&str],
    ) -> Option<Value> {
        let began = Instant::now();
        let result = self.api.call(token, query, vars).await;
        let took = micros(began.elapsed());
        let window =
            (began.duration_since(self.start).as_secs_f64() / self.window.as_secs_f64()) as usize;
        {
            let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
            while l.len() <= window {
                l.push(Vec::new());
            }
            l[window].push(took);
        }
        match result {
            Ok(data) => Some(data),
            Err(e) => {
                let text = e.to_string();
                if !expected.iter().any(|code| text.contains(code)) {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "soak: a call failed: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
                None
            }
        }
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    let (total, window, reap_age) = if args.bench {
        (Duration::from_secs(args.minutes * 60), Duration::from_secs(args.window_minutes * 60), 600)
    } else {
        args.rate = 5.0;
        args.subscribers = 2;
        (Duration::from_secs(20), Duration::from_secs(4), 5)
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args, total, window, reap_age))
}

async fn run(args: Args, total: Duration, window: Duration, reap_age: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let reap_age_arg = format!("{reap_age}s");
    let server = support::start_with_tokens(
        dir.path(),
        &args.durability,
        &[
            "--lease",
            "30",
            "--reclaim-interval",
            "5",
            "--retry-interval",
            "2",
            "--retry-backoff",
            "1",
            "--retry-jitter-percent",
            "0",
            "--data-reap-interval",
            "30",
            "--agenda-reap-age",
            &reap_age_arg,
        ],
    )?;
    let api = Api::new(&server, Duration::from_secs(30))?;
    api.seed(&[("transcode", "ffmpeg", 10_000)]).await?;
    println!(
        "soak: {} s of load, windows of {} s, {} agendas/s, {} subscribers, durability {}, \
         reap age {reap_age} s, load average {}",
        total.as_secs(),
        window.as_secs(),
        args.rate,
        args.subscribers,
        args.durability,
        load_average()
    );
    let shared = Arc::new(Shared {
        api,
        start: Instant::now(),
        window,
        stop: AtomicBool::new(false),
        latencies: Mutex::new(Vec::new()),
        errors: AtomicU64::new(0),
        submitted: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(HashSet::new()),
        completed: Mutex::new(Vec::new()),
        updates: AtomicU64::new(0),
        socket_closes: AtomicU64::new(0),
    });
    let drained = Arc::new(AtomicBool::new(false));
    let mut load = vec![
        tokio::spawn(submitter(Arc::clone(&shared), args.rate)),
        tokio::spawn(reader(Arc::clone(&shared))),
        tokio::spawn(rerunner(Arc::clone(&shared))),
    ];
    let workers: Vec<_> =
        (0..2).map(|_| tokio::spawn(worker(Arc::clone(&shared), Arc::clone(&drained)))).collect();
    let ws_url = format!("ws://{}/graphql/ws", server.addr);
    let subscribers: Vec<_> = (0..args.subscribers)
        .map(|_| {
            tokio::spawn(subscriber(Arc::clone(&shared), Arc::clone(&drained), ws_url.clone()))
        })
        .collect();

    // RSS every 10 s (every second in the smoke run), and a line per window.
    let mut rss: Vec<(Duration, u64)> = Vec::new();
    let sample = if total < Duration::from_secs(60) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    let mut next_window = window;
    while shared.start.elapsed() < total {
        tokio::time::sleep(sample).await;
        rss.push((shared.start.elapsed(), server.rss_kib()));
        if shared.start.elapsed() >= next_window {
            let l = shared.latencies.lock().unwrap_or_else(|e| e.into_inner());
            let i = (next_window.as_secs() / window.as_secs()).saturating_sub(1) as usize;
            if let Some(w) = l.get(i) {
                let mut w = w.clone();
                w.sort_unstable();
                println!(
                    "window {i}: {} calls, p50 {:.2} ms, p99 {:.2} ms, RSS {} MiB, {} agendas, \
                     {} updates, {} errors, load {}",
                    w.len(),
                    ms(&w, 0.5),
                    ms(&w, 0.99),
                    server.rss_kib() / 1024,
                    shared.submitted.lock().unwrap_or_else(|e| e.into_inner()).len(),
                    shared.updates.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed),
                    load_average()
                );
            }
            next_window += window;
        }
    }
    shared.stop.store(true, Ordering::Release);
    for task in load.drain(..) {
        task.await??;
    }

    // Drain: the workers finish what is queued; the retry process takes up the failures.
    let until = Instant::now() + Duration::from_secs(180);
    loop {
        let stats = shared.api.call(USER_TOKEN, STATS, json!({})).await?;
        let s = &stats["agendaStats"];
        if s["waiting"] == 0 && s["executing"] == 0 {
            break;
        }
        ensure!(Instant::now() < until, "not drained within 180 s: {stats}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drained.store(true, Ordering::Release);
    for task in workers.into_iter().chain(subscribers) {
        task.await??;
    }

    // The invariant.
    let mut listed: HashMap<String, String> = HashMap::new();
    let mut after = Value::Null;
    loop {
        let data = shared.api.call(USER_TOKEN, PAGE, json!({"after": after})).await?;
        let page = &data["agendaProgressList"];
        for item in page["items"].as_array().context("a page of progress")? {
            let id = item["agendaId"].as_str().context("an id")?.to_string();
            // A finished agenda is COMPLETE; its message says how (succeeded, failed, cancelled).
            let state = match item["processingState"].as_str().context("a state")? {
                "COMPLETE" => item["processingStateMessage"].as_str().unwrap_or("").to_string(),
                other => other.to_string(),
            };
            ensure!(listed.insert(id.clone(), state).is_none(), "{id} is listed twice");
        }
        if page["hasNextPage"] != true {
            break;
        }
        after = page["endCursor"].clone();
    }
    let submitted = shared.submitted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let cancelled = shared.cancelled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = Instant::now();
    let (mut reaped, mut by_state) = (0u64, HashMap::<String, u64>::new());
    for (id, when) in &submitted {
        match listed.get(id) {
            Some(state) => {
                ensure!(
                    matches!(state.as_str(), "succeeded" | "failed" | "cancelled"),
                    "{id} ended {state}, not terminal"
                );
                ensure!(
                    !cancelled.contains(id) || state == "cancelled",
                    "{id}: cancelled, yet {state}"
                );
                *by_state.entry(state.clone()).or_default() += 1;
            }
            None => {
                ensure!(
                    now.duration_since(*when) > Duration::from_secs(reap_age),
                    "{id} is lost: submitted {:?} ago, younger than the reap age",
                    now.duration_since(*when)
                );
                reaped += 1;
            }
        }
    }
    let unexpected: Vec<&String> =
        listed.keys().filter(|id| !submitted.contains_key(*id)).collect();
    ensure!(unexpected.is_empty(), "unexpected agendas listed: {unexpected:?}");

    // The verdicts.
    let latencies = shared.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let p99s: Vec<f64> = latencies
        .iter()
        .map(|w| {
            let mut w = w.clone();
            w.sort_unstable();
            ms(&w, 0.99)
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let full = p99s.len().saturating_sub(usize::from(p99s.len() > 1)); // the last may be partial
    let first = median(p99s.iter().skip(1).take(3).copied().collect());
    let last = median(p99s[..full].iter().rev().take(3).copied().collect());
    let drift = if first > 0.0 { last / first } else { 0.0 };
    let quarter = |q: usize| {
        let n = rss.len();
        rss[n * q / 4..(n * (q + 1) / 4).max(n * q / 4 + 1).min(n)]
            .iter()
            .map(|r| r.1)
            .max()
            .unwrap_or(0)
    };
    let (second, fourth) = (quarter(1), quarter(3));
    let rss_bound = second as f64 * 1.25 + 32.0 * 1024.0;
    println!(
        "soak: {} agendas acknowledged ({by_state:?}, {reaped} reaped), {} cancels, {} \
         subscription updates, {} socket closes, {} errors",
        submitted.len(),
        cancelled.len(),
        shared.updates.load(Ordering::Relaxed),
        shared.socket_closes.load(Ordering::Relaxed),
        shared.errors.load(Ordering::Relaxed)
    );
    println!(
        "RESULT p99_first_ms={first:.2} p99_last_ms={last:.2} drift={drift:.2} \
         rss_q2_mib={} rss_q4_mib={} rss_end_mib={} agendas={} errors={}",
        second / 1024,
        fourth / 1024,
        rss.last().map_or(0, |r| r.1) / 1024,
        submitted.len(),
        shared.errors.load(Ordering::Relaxed)
    );
    ensure!(shared.errors.load(Ordering::Relaxed) == 0, "calls failed unexpectedly");
    ensure!(drift <= 2.0, "p99 drifted {drift:.2}x (from {first:.2} to {last:.2} ms)");
    ensure!(
        fourth as f64 <= rss_bound,
        "RSS kept growing: {} MiB in the last quarter against {} MiB in the second",
        fourth / 1024,
        second / 1024
    );
    ensure!(shared.updates.load(Ordering::Relaxed) > 0, "the subscribers got nothing");
    Ok(())
}

/// Submits `rate` agendas a second; every 20th is cancelled at once
/// (a cancel that comes after a worker finished it is refused, and not an error).
async fn submitter(shared: Arc<Shared>, rate: f64) -> Result<()> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let id = format!("soak-{n}");
        let operations: Vec<Value> = OPERATIONS
            .iter()
            .map(|name| json!({"name": name, "type": "ffmpeg", "payload": {"n": n, "step": name}}))
            .collect();
        let agenda = json!({
            "id": id, "customerId": "acme", "linkId": format!("link-{}", n % 50),
            "title": "soak", "params": {"maximumAttempts": 2}, "operations": operations
        });
        if shared.timed(USER_TOKEN, SUBMIT, json!({"a": agenda}), &[]).await.is_some() {
            shared
                .submitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), Instant::now());
            if n % 20 == 5 {
                let s = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A cancel may come after the agenda finished: refused, and not an error.
                    if s.timed(USER_TOKEN, CANCEL, json!({"id": id}), &["CONFLICT"]).await.is_some()
                    {
                        s.cancelled.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                    }
                });
            }
        }
        n += 1;
        next += period;
        tokio::time::sleep_until(next.into()).await;
    }
    Ok(())
}

/// Claims and works: an EXECUTING report, then COMPLETE — succeeded, or for every 25th agenda
/// on its first attempt here, failed (the retry process runs it again).
async fn worker(shared: Arc<Shared>, drained: Arc<AtomicBool>) -> Result<()> {
    let mut failed_once: HashSet<String> = HashSet::new();
    while !drained.load(Ordering::Acquire) {
        let Ok(data) = shared.api.call(SERVICE_TOKEN, GET_AGENDA, json!({})).await else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for got in data["getAgenda"].as_array().cloned().unwrap_or_default() {
            let id = got["agenda"]["id"].as_str().unwrap_or_default().to_string();
            let n: u64 = id.trim_start_matches("soak-").parse().unwrap_or(0);
            let fail = n % 25 == 3 && failed_once.insert(id.clone());
            let lease = got["lease"]["id"].clone();
            let progress = got["progress"]["id"].clone();
            let executing = json!({
                "id": progress, "processingState": "EXECUTING", "percentComplete": 50,
                "operationProgress": [{"operation": "probe", "processingState": "COMPLETE",
                    "processingStateMessage": "succeeded", "percentComplete": 100}]
            });
            // A cancelled agenda refuses reports (CONFLICT): the worker drops it.
            let expected = ["CONFLICT", "NOT_FOUND"];
            if shared
                .timed(SERVICE_TOKEN, REPORT, json!({"p": executing, "l": lease}), &expected)
                .await
                .is_none()
            {
                continue;
            }
            // A failure is COMPLETE with the message `failed` (POP's convention).
            let message = if fail { "failed" } else { "succeeded" };
            let operations: Vec<Value> = OPERATIONS
                .iter()
                .map(|o| {
                    json!({"operation": o, "processingState": "COMPLETE",
                    "processingStateMessage": message, "percentComplete": 100})
                })
                .collect();
            let done = json!({"id": progress, "processingState": "COMPLETE",
                "processingStateMessage": message, "operationProgress": operations});
            if shared
                .timed(SERVICE_TOKEN, REPORT, json!({"p": done, "l": lease}), &expected)
                .await
                .is_some()
                && !fail
            {
                let mut c = shared.completed.lock().unwrap_or_else(|e| e.into_inner());
                c.push(id);
                let excess = c.len().saturating_sub(1_000);
                c.drain(..excess);
            }
        }
    }
    Ok(())
}

/// Reads one recent agenda's progress and the newest page of the list, ten times a second.
async fn reader(shared: Arc<Shared>) -> Result<()> {
    let mut i = 0usize;
    while !shared.stop.load(Ordering::Acquire) {
        let id = {
            let s = shared.submitted.lock().unwrap_or_else(|e| e.into_inner());
            s.keys().nth(i % s.len().max(1)).cloned()
        };
        if let Some(id) = id {
            // Reaped by now, perhaps: NOT_FOUND is an answer.
            shared.timed(USER_TOKEN, READ, json!({"id": id}), &["NOT_FOUND"]).await;
        }
        shared.timed(USER_TOKEN, LIST, json!({}), &[]).await;
        i = i.wrapping_add(7919);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Reruns a recently completed agenda every two seconds (resetAll): it runs again.
async fn rerunner(shared: Arc<Shared>) -> Result<()> {
    while !shared.stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let id = shared.completed.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(id) = id {
            // Reaped meanwhile (NOT_FOUND), or already rerun (CONFLICT): fine.
            shared.timed(USER_TOKEN, RERUN, json!({"id": id}), &["CONFLICT", "NOT_FOUND"]).await;
        }
    }
    Ok(())
}

/// Follows every change of customer `acme`'s agendas over graphql-transport-ws, reconnecting
/// (and counting it) when the socket closes.
async fn subscriber(shared: Arc<Shared>, drained: Arc<AtomicBool>, url: String) -> Result<()> {
    while !drained.load(Ordering::Acquire) {
        let mut request = url.as_str().into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.context("a WebSocket")?;
        let send = |v: Value| Message::text(v.to_string());
        ws.send(send(json!({"type": "connection_init",
            "payload": {"authorization": format!("Bearer {USER_TOKEN}")}})))
            .await?;
        ws.send(send(json!({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { agendaProgressByCustomer(customerId: \"acme\") { position lagged progress { processingState } } }"
        }}))).await?;
        loop {
            let message = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if drained.load(Ordering::Acquire) { return Ok(()); }
                    continue;
                }
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(&text)?;
                    match v["type"].as_str() {
                        Some("next") => {
                            shared.updates.fetch_add(1, Ordering::Relaxed);
                        }
                        Some("ping") => ws.send(send(json!({"type": "pong"}))).await?,
                        Some("connection_ack") => {}
                        other => {
                            return Err(anyhow!("unexpected subscription message {other:?}: {v}"));
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    shared.socket_closes.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    Ok(())
}
