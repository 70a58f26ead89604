//! Subscription fan-out benchmark: thousands of graphql-transport-ws subscribers on loopback
//! following agendas by id, while mutations change those agendas at a fixed rate; measures the
//! delivery latency of every update at every subscriber, the server's RSS and CPU.
//!
//! Run it with `cargo bench -p pop-server --bench fanout -- [options]` (see `--help`), or
//! through `bench/fanout.sh`, which raises the fd limit and takes the median of three runs.
//! It starts its own release-built `pop serve` on a temp data dir, seeds `--agendas` agendas,
//! opens `--subscribers` sockets (one `agendaProgress(id)` subscription each, spread evenly
//! over the agendas, each confirmed by its first item before the clock starts), then sends
//! `expandAgenda(operations: [], params: {t: <µs>})` — one event, the agenda's size unchanged —
//! round-robin over the agendas at `--rate` per second for `--seconds`. `t` is the send time on
//! this process's monotonic clock; a subscriber's latency is its receive time minus the `t` in
//! the update it got. Everything is bounded: connect, drive and drain phases have deadlines.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run instead, so
//! the benchmark cannot rot unnoticed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, ms, self_cpu_ticks, ticks_per_second};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Parser)]
#[command(about = "pop subscription fan-out benchmark")]
struct Args {
    /// WebSocket subscribers (one socket, one subscription each).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Agendas the subscribers follow (subscribers / agendas per agenda).
    #[arg(long, default_value_t = 1_000)]
    agendas: usize,
    /// Subscribers follow only the first N agendas (default: all); updates still go to every
    /// agenda, so the rest measure the cost of changes nobody follows.
    #[arg(long)]
    followed: Option<usize>,
    /// Updates (mutations) per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// How long updates are sent.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Store durability of the server (`full` fsyncs every commit).
    #[arg(long, default_value = "full")]
    durability: String,
    /// Sockets opened concurrently while connecting.
    #[arg(long, default_value_t = 200)]
    connect_parallel: usize,
    /// Most mutations in flight; past it the driver falls behind its schedule (reported).
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Longest the setup phases (server start, seeding, connecting) may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(180);
/// How long after the last mutation's answer the subscribers get to receive everything.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        // `cargo test --benches`: prove the code path end to end in a second or two.
        args.subscribers = 20;
        args.agendas = 4;
        args.rate = 50;
        args.seconds = 1;
        println!("fanout: smoke run (use `cargo bench` for the real one)");
    }
    let followed = args.followed.unwrap_or(args.agendas);
    ensure!((1..=args.agendas).contains(&followed), "need 1 <= followed <= agendas");
    ensure!(args.subscribers >= followed, "need at least one subscriber per followed agenda");
    ensure!(args.rate > 0 && args.seconds > 0, "need a rate and a duration");
    let run = tokio::time::timeout(
        SETUP_DEADLINE * 2 + Duration::from_secs(args.seconds),
        bench(&args, followed),
    );
    run.await.map_err(|_| anyhow!("the benchmark did not finish in time"))?
}

async fn bench(args: &Args, followed: usize) -> Result<()> {
    let dir = tempfile::tempdir().context("a temp dir")?;
    let server = Server::start(dir.path(), &["--durability", args.durability.as_str()])?;
    let client = Api::new(&server)?;
    let base = Instant::now();

    // Seed: config, then the agendas (concurrently, so they share group commits).
    let seeded = client.seed().await?;
    let ids: Vec<String> = futures::stream::iter(0..args.agendas)
        .map(|i| client.submit(i, &seeded))
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let rss_idle = server.rss_kib();

    // Connect: every subscriber confirmed by its first item (the current state).
    let started = Instant::now();
    let url = format!("ws://{}/graphql/ws", server.addr);
    let sockets: Vec<(usize, Socket)> = tokio::time::timeout(
        SETUP_DEADLINE,
        futures::stream::iter(0..args.subscribers)
            .map(|i| {
                let url = url.clone();
                let token = server.admin.clone();
                let agenda = i % followed;
                let id = ids[agenda].clone();
                async move { subscribe(&url, &token, &id).await.map(|ws| (agenda, ws)) }
            })
            .buffer_unordered(args.connect_parallel)
            .collect::<Vec<_>>(),
    )
    .await
    .context("connecting the subscribers took too long")?
    .into_iter()
    .collect::<Result<_>>()?;
    let rss_connected = server.rss_kib();
    println!(
        "fanout: {} subscribers on {followed} of {} agendas connected in {:.1?}; server RSS {} MiB idle, {} MiB connected",
        sockets.len(),
        ids.len(),
        started.elapsed(),
        rss_idle / 1024,
        rss_connected / 1024
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let received = Arc::new(AtomicU64::new(0));
    let mut per_agenda = vec![0u64; ids.len()];
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|(agenda, ws)| {
            per_agenda[agenda] += 1;
            tokio::spawn(read_updates(ws, stop_rx.clone(), base, Arc::clone(&received)))
        })
        .collect();

    // Drive: mutation `n` is due at start + n / rate.
    let cpu_before = (server.cpu_ticks(), self_cpu_ticks());
    let drive_start = Instant::now();
    let total = args.rate * args.seconds;
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight));
    let mut sent = Vec::with_capacity(total as usize);
    let mut behind = Duration::ZERO;
    for n in 0..total {
        let due = drive_start + Duration::from_secs_f64(n as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&in_flight).acquire_owned().await.context("the semaphore")?;
        behind = behind.max(due.elapsed());
        let agenda = (n % ids.len() as u64) as usize;
        let client = client.clone();
        let id = ids[agenda].clone();
        sent.push(tokio::spawn(async move {
            let t = base.elapsed().as_micros() as u64;
            let answered = client.expand(&id, t).await;
            drop(permit);
            answered.map(|()| (agenda, base.elapsed().as_micros() as u64 - t))
        }));
    }
    let mut acked = vec![0u64; ids.len()];
    let mut ack_latency = Vec::with_capacity(sent.len());
    let mut failed = 0u64;
    for task in sent {
        match task.await.context("a mutation task")? {
            Ok((agenda, micros)) => {
                acked[agenda] += 1;
                ack_latency.push(micros);
            }
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("fanout: a mutation failed: {e:#}");
                }
            }
        }
    }
    let drive_time = drive_start.elapsed();
    let cpu_after = (server.cpu_ticks(), self_cpu_ticks());
    let rss_peak = server.rss_kib();

    // Drain: wait (bounded) until every acknowledged update reached every subscriber.
    let expected: u64 = acked.iter().zip(&per_agenda).map(|(a, s)| a * s).sum();
    let drain_deadline = Instant::now() + DRAIN_DEADLINE;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    let mut latency = Vec::with_capacity(expected as usize);
    let mut lagged = 0u64;
    let mut closed = 0u64;
    for reader in readers {
        let stats = reader.await.context("a subscriber task")?;
        latency.extend(stats.latency_micros);
        lagged += stats.lagged;
        closed += u64::from(stats.closed);
    }
    let hwm = server.hwm_kib();
    drop(server);

    latency.sort_unstable();
    ack_latency.sort_unstable();
    let ticks = ticks_per_second();
    let cores = |before: u64, after: u64| {
        (after.saturating_sub(before)) as f64 / ticks / drive_time.as_secs_f64()
    };
    let achieved = (ack_latency.len() as f64) / drive_time.as_secs_f64();
    println!(
        "fanout: sent {total} updates in {drive_time:.1?} ({achieved:.0}/s acknowledged, {failed} failed, \
         at most {behind:.1?} behind schedule); ack p50 {:.1} ms p99 {:.1} ms",
        ms(&ack_latency, 0.50),
        ms(&ack_latency, 0.99)
    );
    println!(
        "fanout: {} of {expected} deliveries ({lagged} lagged signals, {closed} sockets closed early); \
         delivery latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
        latency.len(),
        ms(&latency, 0.50),
        ms(&latency, 0.90),
        ms(&latency, 0.99),
        ms(&latency, 1.0)
    );
    println!(
        "fanout: CPU during the drive: server {:.2} cores, this client {:.2} cores; server RSS {} MiB \
         at the end of the drive, peak {} MiB",
        cores(cpu_before.0, cpu_after.0),
        cores(cpu_before.1, cpu_after.1),
        rss_peak / 1024,
        hwm / 1024
    );
    println!(
        "RESULT subscribers={} agendas={} followed={followed} rate={} seconds={} achieved_rate={achieved:.0} \
         deliveries={} expected={expected} lagged={lagged} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} \
         ack_p99_ms={:.2} rss_idle_mib={} rss_connected_mib={} rss_peak_mib={} server_cores={:.2} \
         client_cores={:.2}",
        args.subscribers,
        args.agendas,
        args.rate,
        args.seconds,
        latency.len(),
        ms(&latency, 0.50),
        ms(&latency, 0.99),
        ms(&latency, 1.0),
        ms(&ack_latency, 0.99),
        rss_idle / 1024,
        rss_connected / 1024,
        hwm / 1024,
        cores(cpu_before.0, cpu_after.0),
        cores(cpu_before.1, cpu_after.1),
    );
    ensure!(failed == 0, "{failed} mutations failed");
    ensure!(
        latency.len() as u64 + lagged > 0 && closed == 0,
        "subscribers lost their sockets ({closed}) or got nothing"
    );
    Ok(())
}

/// Opens one socket, subscribes to `agendaProgress(id)` and waits for its first item.
async fn subscribe(url: &str, token: &str, id: &str) -> Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    // Small buffers: the updates are a few hundred bytes, and 10,000 sockets with the default
    // 128 KiB each would measure the client's allocator, not the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("a WebSocket handshake")?;
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}),
    ))
    .await?;
    ws.send(send(json!({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($id: String!) { agendaProgress(id: $id) { position lagged progress { params } } }",
        "variables": {"id": id}
    }})))
    .await?;
    loop {
        let message = ws.next().await.ok_or_else(|| anyhow!("closed while subscribing"))??;
        let Message::Text(text) = message else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("connection_ack") => {}
            Some("next") => return Ok(ws),
            Some("ping") => ws.send(send(json!({"type": "pong"}))).await?,
            _ => bail!("unexpected answer while subscribing: {v}"),
        }
    }
}

#[derive(Default)]
struct ReaderStats {
    latency_micros: Vec<u64>,
    lagged: u64,
    closed: bool,
}

/// Reads updates until told to stop; each update's latency is now minus its `t`.
async fn read_updates(
    mut ws: Socket,
    mut stop: watch::Receiver<bool>,
    base: Instant,
    received: Arc<AtomicU64>,
) -> ReaderStats {
    let mut stats = ReaderStats::default();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            m = ws.next() => m,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => {
                stats.closed = true;
                break;
            }
        };
        let now = base.elapsed().as_micros() as u64;
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        if v["type"] == "ping" {
            let _ = ws.send(Message::text(json!({"type": "pong"}).to_string())).await;
            continue;
        }
        let update = &v["payload"]["data"]["agendaProgress"];
        if update["lagged"] == true {
            stats.lagged += 1;
            continue;
        }
        if let Some(t) = update["progress"]["params"]["t"].as_u64() {
            stats.latency_micros.push(now.saturating_sub(t));
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = ws.close(None).await;
    stats
}

/// The GraphQL calls the benchmark makes, as the generated admin.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    fn new(server: &Server) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .build()?,
            url: format!("http://{}/graphql", server.addr),
            token: server.admin.clone(),
        })
    }

    async fn call(&self, query: &str, variables: Value) -> Result<Value> {
        let body: Value = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
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

    async fn seed(&self) -> Result<String> {
        self.call(
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await?;
        self.call(
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "acme", "title": "Acme", "resourcePoolId": "pool-1"}}),
        )
        .await?;
        let data = self
            .call(
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": 5, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await?;
        data["createInsight"]["position"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no position: {data}"))
    }

    async fn submit(&self, i: usize, after: &str) -> Result<String> {
        let agenda = json!({
            "customerId": "acme",
            "linkId": format!("fan-{}", i % 100),
            "title": format!("fan-out {i}"),
            "operations": [
                {"name": "probe", "type": "ffmpeg", "payload": {"src": format!("in-{i}.mp4")}},
                {"name": "encode", "type": "ffmpeg", "payload": "@<probe.out::/streams>"}
            ]
        });
        let data = self
            .call(
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
                 { agenda { id } } }",
                json!({"a": agenda, "p": after}),
            )
            .await?;
        data["submitAgenda"]["agenda"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no agenda id: {data}"))
    }

    /// One update: merges `{t}` into the agenda's params (one event, no new operation).
    async fn expand(&self, id: &str, t: u64) -> Result<()> {
        self.call(
            "mutation($id: String!, $t: JSON!) { expandAgenda(agendaId: $id, operations: [], \
             params: $t) { position } }",
            json!({"id": id, "t": {"t": t}}),
        )
        .await
        .map(|_| ())
    }
}
