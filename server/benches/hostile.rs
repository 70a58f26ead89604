//! Cost bounds (issue 19): what the worst requests one ordinary user token may send cost a
//! real release `pop serve`, in memory and in time, and how long `/healthz` waits meanwhile.
//!
//! Run it with `cargo bench -p pop-server --bench hostile -- [options]` (see `--help`). It
//! starts its own `pop serve` (durability full, a token file with a user of customer `acme`),
//! submits `--agendas` agendas whose one operation carries a payload of `--payload-bytes`
//! (the 20 agendas of 0.86 MB), then measures, each case `--runs` times:
//!
//! - **amplification**: one request of 40 aliases of `agendas(first: 500) { items { operations
//!   { payload } } }` (before the limits: the server OOM-killed at 2 GiB);
//! - **the largest page that is answered**: `agendas(first: N)` with payloads, N the most
//!   agendas whose payloads fit the 16 MiB response budget, twice at once (the default number
//!   of expensive requests one principal may run at once), so the figure is the worst one
//!   token can cost in one go;
//! - **the CPU freeze**: two batches of 16 queries × 1,000 `progressSummary` aliases at once
//!   (before the limits: 93–100 s each, `/healthz` waited 92.7 s), and two requests at once of
//!   the most `progressSummary` aliases the cost limit admits, over a linkId of
//!   `--link-agendas` agendas;
//! - **stalled sockets**: `--stalled` WebSocket clients that subscribe to an agenda with
//!   0.5 MB params 30 times each and then read nothing (before the limits: 30 of them
//!   OOM-killed the server in 8 s).
//!
//! For each case: the answer's status and error code, how long it took, the server's peak
//! RSS above its level before the case (VmHWM, reset through `/proc/PID/clear_refs` before
//! each case), and the slowest `/healthz` answer while it ran (probed every 20 ms from a
//! thread of its own with blocking sockets). Medians over the runs are printed as a table.
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run instead.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Api, Server, USER_TOKEN, load_average, start_with_tokens};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(about = "pop cost bounds: the worst requests of one user token")]
struct Args {
    /// Agendas seeded, each with one operation carrying the payload below.
    #[arg(long, default_value_t = 20)]
    agendas: usize,
    /// Bytes of each seeded agenda's payload.
    #[arg(long, default_value_t = 860_000)]
    payload_bytes: usize,
    /// Small agendas sharing the linkId the `progressSummary` cases read.
    #[arg(long, default_value_t = 1_000)]
    link_agendas: usize,
    /// Stalled WebSocket clients.
    #[arg(long, default_value_t = 30)]
    stalled: usize,
    /// Bytes of the params of the agenda the stalled clients follow.
    #[arg(long, default_value_t = 500_000)]
    stalled_params_bytes: usize,
    /// Times each case runs (the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one case cost.
#[derive(Clone, Debug)]
struct Cost {
    outcome: String,
    took: Duration,
    peak_above_kib: u64,
    slowest_healthz: Duration,
}

/// One HTTP/1.1 GET over a blocking socket; the status and how long the answer took.
fn blocking_get(addr: &str, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, t.elapsed());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, t.elapsed());
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, t.elapsed())
}

/// Probes `/healthz` every 20 ms until stopped; the slowest answer (a failed one counts as
/// a minute).
fn probe(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let (status, took) = blocking_get(&addr, "/healthz");
            worst = worst.max(if status == 200 { took } else { Duration::from_secs(60) });
            std::thread::sleep(Duration::from_millis(20));
        }
        worst
    })
}

/// Resets the server's peak RSS (VmHWM) to its current RSS (Linux `clear_refs` value 5).
fn reset_peak(server: &Server) -> Result<()> {
    std::fs::write(format!("/proc/{}/clear_refs", server.child.id()), "5")
        .context("resetting VmHWM through /proc/PID/clear_refs")
}

/// Runs `case` with the peak reset before it and `/healthz` probed while it runs.
async fn measure<F, Fut>(server: &Server, case: F) -> Result<Cost>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    // Let memory freed by the last case go back first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reset_peak(server)?;
    let before = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(server.addr.clone(), Arc::clone(&stop));
    let started = Instant::now();
    let outcome = case().await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let slowest_healthz = prober.join().map_err(|_| anyhow::anyhow!("the prober panicked"))?;
    Ok(Cost {
        outcome: outcome?,
        took,
        peak_above_kib: server.hwm_kib().saturating_sub(before),
        slowest_healthz,
    })
}

/// POSTs `body` as the user; the status and the error codes of the answer (or `ok`).
async fn post(api: &Api, body: &Value) -> Result<String> {
    let response = api.http.post(&api.url).bearer_auth(USER_TOKEN).json(body).send().await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let answers = match &answer {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let mut codes: Vec<String> = answers
        .iter()
        .map(|a| match a["errors"][0]["extensions"]["code"].as_str() {
            Some(code) => code.to_string(),
            None if a["data"].is_object() => "ok".to_string(),
            None => "no answer".to_string(),
        })
        .collect();
    codes.dedup();
    Ok(format!("{status} {} ({} KiB)", codes.join("+"), bytes.len() >> 10))
}

fn aliases(n: usize, field: &str) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: {field}")).collect();
    format!("{{ {} }}", fields.join(" "))
}

/// A graphql-transport-ws client that subscribes and then reads nothing.
async fn stalled_client(
    addr: &str,
    subscriptions: usize,
    progress_id: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {USER_TOKEN}")}});
    ws.send(Message::text(init.to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => break,
            Some(Ok(Message::Text(text))) => bail!("before the ack: {text}"),
            Some(Ok(_)) => {}
            other => bail!("no connection_ack: {other:?}"),
        }
    }
    let query = "subscription($id: String!) { agendaProgress(id: $id) { position progress { id params } } }";
    for i in 0..subscriptions {
        let subscribe = json!({"id": format!("s{i}"), "type": "subscribe",
            "payload": {"query": query, "variables": {"id": progress_id}}});
        ws.send(Message::text(subscribe.to_string())).await?;
    }
    Ok(ws)
}

fn median_cost(costs: &[Cost]) -> Cost {
    let mut took: Vec<Duration> = costs.iter().map(|c| c.took).collect();
    let mut peak: Vec<u64> = costs.iter().map(|c| c.peak_above_kib).collect();
    let mut healthz: Vec<Duration> = costs.iter().map(|c| c.slowest_healthz).collect();
    took.sort();
    peak.sort_unstable();
    healthz.sort();
    let mut outcomes: Vec<String> = costs.iter().map(|c| c.outcome.clone()).collect();
    outcomes.dedup();
    Cost {
        outcome: outcomes.join(" / "),
        took: took[took.len() / 2],
        peak_above_kib: peak[peak.len() / 2],
        slowest_healthz: healthz[healthz.len() / 2],
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.agendas = 4;
        args.payload_bytes = 100_000;
        args.stalled = 3;
        args.link_agendas = 20;
        args.runs = 1;
        println!("hostile: smoke run (use `cargo bench` for the real one)");
    }
    let dir = tempfile::tempdir()?;
    // The payload and params limits (512 and 256 KiB by default) would refuse these agendas
    // at the door; raised, what is measured is the bounds behind them.
    let raised = ["--max-payload-bytes", "1048576", "--max-params-bytes", "1048576"];
    let server = start_with_tokens(dir.path(), "full", &raised)?;
    let api = Api::new(&server, Duration::from_secs(300))?;
    let after = api.seed(&[("transcode", "ffmpeg", 1000)]).await?;
    let blob = "x".repeat(args.payload_bytes);
    for i in 0..args.agendas {
        api.call(
            USER_TOKEN,
            "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { position } }",
            json!({"a": {"id": format!("big-{i}"), "customerId": "acme", "linkId": "big",
                "operations": [{"name": "only", "type": "ffmpeg", "payload": {"blob": blob}}]},
                "p": after}),
        )
        .await
        .with_context(|| format!("seeding big-{i}"))?;
    }
    for i in 0..args.link_agendas {
        api.call(
            USER_TOKEN,
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
            json!({"a": {"id": format!("hot-{i}"), "customerId": "acme", "linkId": "hot",
                "operations": [{"name": "a", "type": "ffmpeg", "payload": {}},
                    {"name": "b", "type": "ffmpeg", "payload": {}, "dependsOn": ["a"]}]}}),
        )
        .await
        .with_context(|| format!("seeding hot-{i}"))?;
    }
    let data = api
        .call(
            USER_TOKEN,
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
            json!({"a": {"id": "stall-1", "customerId": "acme", "linkId": "stall",
                "params": {"blob": "p".repeat(args.stalled_params_bytes)},
                "operations": [{"name": "only", "type": "ffmpeg", "payload": {}}]}}),
        )
        .await?;
    let position = data["submitAgenda"]["position"].as_str().context("a position")?.to_string();
    let data = api
        .call(
            USER_TOKEN,
            "query($p: String) { agenda(id: \"stall-1\", atLeastPosition: $p) { progressId } }",
            json!({"p": position}),
        )
        .await?;
    let progress_id = data["agenda"]["progressId"].as_str().context("a progress id")?.to_string();
    println!(
        "hostile: {} agendas of {} B payload seeded; server RSS {} MiB; load average {}",
        args.agendas,
        args.payload_bytes,
        server.rss_kib() >> 10,
        load_average()
    );

    // The most agendas whose payloads fit the response budget, as one page.
    let fits = ((pop_api::config::MAX_RESPONSE_BYTES as f64 * 0.97) / args.payload_bytes as f64)
        .floor()
        .clamp(1.0, args.agendas as f64) as usize;
    // The most progressSummary aliases one request may have: the cost limit decides.
    let summaries = |n: usize| json!({"query": aliases(n, "progressSummary(linkId: \"hot\") { processingState }")});
    let mut allowed = 1_000;
    loop {
        let answer = post(&api, &summaries(allowed)).await?;
        if answer.contains(" ok ") {
            break;
        }
        ensure!(answer.contains("QUERY_TOO_COSTLY"), "{allowed} summaries: {answer}");
        ensure!(allowed > 10, "not even 10 summaries are admitted: {answer}");
        allowed -= 10;
    }
    let mut table: Vec<(String, Vec<Cost>)> = Vec::new();
    for _ in 0..args.runs {
        let mut row = Vec::new();
        let amplification = json!({"query":
            aliases(40, "agendas(first: 500) { items { operations { payload } } }")});
        row.push((
            "40 aliases × agendas(first: 500) with payloads".to_string(),
            measure(&server, || post(&api, &amplification)).await?,
        ));
        let page = json!({"query": format!(
            "{{ agendas(first: {fits}, filter: {{linkId: \"big\"}}) {{ items {{ id operations {{ payload }} }} }} }}")});
        row.push((
            format!("2 at once × the largest answered page ({fits} agendas with payloads)"),
            measure(&server, || async {
                let (a, b) = tokio::join!(post(&api, &page), post(&api, &page));
                Ok(format!("{}; {}", a?, b?))
            })
            .await?,
        ));
        let batch = Value::Array(vec![
            json!({"query": aliases(1_000, "progressSummary(linkId: \"big\") { processingState }")});
            16
        ]);
        row.push((
            "2 at once × a batch of 16 × 1,000 progressSummary aliases".to_string(),
            measure(&server, || async {
                let (a, b) = tokio::join!(post(&api, &batch), post(&api, &batch));
                Ok(format!("{}; {}", a?, b?))
            })
            .await?,
        ));
        let most = summaries(allowed);
        row.push((
            format!(
                "2 at once × {allowed} progressSummary aliases (the most the cost limit admits) over a linkId of {} agendas",
                args.link_agendas
            ),
            measure(&server, || async {
                let (a, b) = tokio::join!(post(&api, &most), post(&api, &most));
                Ok(format!("{}; {}", a?, b?))
            })
            .await?,
        ));
        let stalled = args.stalled;
        let addr = server.addr.clone();
        let id = progress_id.clone();
        row.push((
            format!(
                "{stalled} stalled sockets × 30 subscriptions of a {} kB-params agenda",
                args.stalled_params_bytes / 1000
            ),
            measure(&server, || async {
                let mut clients = Vec::new();
                for _ in 0..stalled {
                    clients.push(stalled_client(&addr, 30, &id).await?);
                }
                // They read nothing for a while: the server queues for them up to its bound
                // per connection, then closes them.
                tokio::time::sleep(Duration::from_secs(3)).await;
                // Then they read to the close frame, which says why.
                let mut closed = 0;
                for ws in &mut clients {
                    let until = Instant::now() + Duration::from_secs(30);
                    loop {
                        let left = until.saturating_duration_since(Instant::now());
                        match tokio::time::timeout(left, ws.next()).await {
                            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                                if u16::from(frame.code) == 1013 {
                                    closed += 1;
                                }
                                break;
                            }
                            Ok(Some(Ok(_))) => {}
                            _ => break,
                        }
                    }
                }
                drop(clients);
                ensure!(
                    closed == stalled,
                    "{closed} of {stalled} stalled sockets closed with 1013"
                );
                Ok(format!("{stalled} closed with 1013"))
            })
            .await?,
        ));
        for (name, cost) in row {
            match table.iter_mut().find(|(n, _)| *n == name) {
                Some((_, costs)) => costs.push(cost),
                None => table.push((name, vec![cost])),
            }
        }
    }
    println!("hostile: load average {} after the runs", load_average());
    println!(
        "\n| request (one user token) | answer | time (median of {}) | server peak RSS above before | slowest /healthz meanwhile |",
        args.runs
    );
    println!("|---|---|---|---|---|");
    for (name, costs) in &table {
        let m = median_cost(costs);
        let runs: Vec<String> =
            costs.iter().map(|c| format!("{} MiB", c.peak_above_kib >> 10)).collect();
        println!(
            "| {name} | {} | {:.2} s | {} MiB ({}) | {:.0} ms |",
            m.outcome,
            m.took.as_secs_f64(),
            m.peak_above_kib >> 10,
            runs.join(" / "),
            m.slowest_healthz.as_secs_f64() * 1000.0
        );
    }
    if let Some((_, costs)) = table.iter().find(|(n, _)| n.contains("stalled")) {
        let m = median_cost(costs);
        println!(
            "\nhostile: memory per stalled socket: {} KiB (bound: {} KiB queued per connection)",
            m.peak_above_kib / args.stalled.max(1) as u64,
            pop_api::ws::MAX_QUEUED_BYTES >> 10
        );
    }
    Ok(())
}
