//! Hand-out latency benchmark (issue 18): how soon an idle worker that waits for work
//! (`getAgenda` with `waitSeconds`) gets an agenda submitted while it waits, through the
//! public GraphQL API of a real `pop serve` on loopback (scheduler on, durable store).
//!
//! Each sample: a `getAgenda(count: 1, waitSeconds: 20)` is sent as the service token and
//! given a few milliseconds to start waiting; then a one-operation agenda is submitted as the
//! user token. Measured, on the benchmark's clock: *submit → claim* = from just before the
//! submit request is sent until the waiting `getAgenda` answers with that agenda (what
//! graphile-worker's add → start measures), and *ack → claim* = from the submit's answer to the
//! claim's. The path in between is the server's. Since the hand-out at submission
//! (`app/src/handout.rs`) it is one append holding the submission, its `Queue` and the waiting
//! call's `Claim` — one fsync'd commit with `--durability full`; before, it was the
//! submission's append, the projections, the change feed waking the scheduler, its `Queue`
//! append, the feed waking the waiting call, the claim's append — three. After each sample the
//! agenda is completed (one report, not timed) and the next sample starts after `--pause-ms`.
//!
//! The backlog: `--backlog` agendas of a second insight sit queued for the whole run (nobody
//! takes them), so the read models, the queues and the scheduler's passes carry other work.
//!
//! `cargo bench -p pop-server --bench handout -- [options]`, or `bench/handout.sh` (median of
//! three runs). `POP_BENCH_BIN` picks the server binary (see `support::pop_binary`). Without
//! `--bench` (as `cargo test --benches` runs it) it does a small smoke run.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use support::{Api, SERVICE_TOKEN, USER_TOKEN, load_average, micros, ms};

#[derive(Debug, Parser)]
#[command(about = "pop hand-out latency benchmark: submit -> claim by a waiting worker")]
struct Args {
    /// Samples (one agenda each, one after another).
    #[arg(long, default_value_t = 400)]
    samples: usize,
    /// Agendas of another insight kept queued during the run.
    #[arg(long, default_value_t = 64)]
    backlog: usize,
    /// Pause between samples (graphile-worker's latency run adds a job every 25 ms).
    #[arg(long, default_value_t = 25)]
    pause_ms: u64,
    /// Time a waiting `getAgenda` gets to reach the server before the submit.
    #[arg(long, default_value_t = 5)]
    settle_ms: u64,
    /// Store durability of the server (`full` fsyncs every commit).
    #[arg(long, default_value = "full")]
    durability: String,
    /// After the run, read each sample's events (`agendaEvents`) and print where the time went:
    /// the commands' decision times and the store's commit stamps, against the benchmark's
    /// wall clock (same machine). For finding the hops, not for the headline figures.
    #[arg(long)]
    breakdown: bool,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

const SUBMIT: &str = "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id } } }";
const WAIT_FOR_WORK: &str = "mutation($i: String!) { getAgenda(insightId: $i, count: 1, \
    waitSeconds: 20) { agenda { id } progress { id } lease { id } } }";
const EVENTS: &str = "query($a: String!) { agendaEvents(agendaId: $a, customerId: \"acme\", first: 10) \
    { items { type time data } } }";
const UPDATE: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, \
    leaseId: $l) { progress { processingState } } }";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.samples = 5;
        args.backlog = 4;
        println!("handout: smoke run (use `cargo bench` for the real one)");
    }
    ensure!(args.samples > 0, "need samples");
    let deadline = Duration::from_secs(120 + u64::try_from(args.samples).unwrap_or(u64::MAX / 2));
    tokio::time::timeout(deadline, bench(&args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish in time"))?
}

async fn bench(args: &Args) -> Result<()> {
    let dir = tempfile::tempdir().context("a temp dir")?;
    let server = support::start_with_tokens(dir.path(), &args.durability, &[])?;
    let api = Api::new(&server, Duration::from_secs(60))?;
    // `work` (type `job`) is measured; nobody takes `backlog`'s agendas (type `later`).
    api.seed(&[("backlog", "later", 1000), ("work", "job", 1000)]).await.context("seeding")?;
    for i in 0..args.backlog {
        api.submit("backlog", i).await.context("a backlog agenda")?;
    }
    let load_before = load_average();
    let mut from_submit = Vec::with_capacity(args.samples);
    let mut from_ack = Vec::with_capacity(args.samples);
    // (agenda id, wall clock µs just before the submit, when the claim answered).
    let mut walls: Vec<(String, i64, i64)> = Vec::new();
    for i in 0..args.samples {
        let waiter = {
            let api = api.clone();
            tokio::spawn(async move {
                let data = api.call(SERVICE_TOKEN, WAIT_FOR_WORK, json!({"i": "work"})).await;
                (data, Instant::now(), chrono::Utc::now().timestamp_micros())
            })
        };
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
        ensure!(
            !waiter.is_finished(),
            "sample {i}: the waiting getAgenda answered before any work"
        );
        let sent_wall = chrono::Utc::now().timestamp_micros();
        let sent = Instant::now();
        let id = api.submit("work", i).await.context("a submit")?;
        let acked = Instant::now();
        let (data, claimed_at, claimed_wall) = waiter.await.context("the waiting task")?;
        let data = data.context("the waiting getAgenda")?;
        let claimed = &data["getAgenda"][0];
        if claimed["agenda"]["id"] != id.as_str() {
            bail!("sample {i}: submitted {id}, the waiting getAgenda answered {data}");
        }
        if args.breakdown {
            walls.push((id.clone(), sent_wall, claimed_wall));
        }
        from_submit.push(micros(claimed_at - sent));
        from_ack.push(micros(claimed_at.saturating_duration_since(acked)));
        api.complete(claimed).await.with_context(|| format!("completing {id}"))?;
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
    }
    let load_after = load_average();
    if args.breakdown {
        breakdown(&api, &walls).await.context("the breakdown")?;
    }
    drop(server);
    from_submit.sort_unstable();
    from_ack.sort_unstable();
    println!(
        "handout: {} samples, backlog {} queued on another insight, durability {}; load average \
         before {load_before}, after {load_after}",
        args.samples, args.backlog, args.durability
    );
    for (name, sorted) in [("submit -> claim", &from_submit), ("ack -> claim", &from_ack)] {
        println!(
            "handout: {name}: p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms",
            ms(sorted, 0.50),
            ms(sorted, 0.90),
            ms(sorted, 0.99),
            ms(sorted, 1.0)
        );
    }
    println!(
        "RESULT p50_ms={:.3} p99_ms={:.3} ack_p50_ms={:.3} ack_p99_ms={:.3} samples={}",
        ms(&from_submit, 0.50),
        ms(&from_submit, 0.99),
        ms(&from_ack, 0.50),
        ms(&from_ack, 0.99),
        args.samples
    );
    Ok(())
}

/// Prints the median of each hop over the samples (see `--breakdown`): from the submit sent
/// to each event's decision (`data.time`, the command's `now`) and commit stamp (`time`, the
/// store's `recorded_at`, taken when the write starts, before its fsync).
async fn breakdown(api: &Api, walls: &[(String, i64, i64)]) -> Result<()> {
    let mut marks: Vec<(&str, Vec<u64>)> = vec![
        ("submit decided", Vec::new()),
        ("submit stamped", Vec::new()),
        ("queue decided", Vec::new()),
        ("queue stamped", Vec::new()),
        ("claim decided", Vec::new()),
        ("claim stamped", Vec::new()),
        ("claim answered", Vec::new()),
    ];
    // `data.time` is epoch ms (the events' JSON); `time` an RFC 3339 string with µs.
    let micros_of = |v: &Value| -> Option<i64> {
        match v.as_i64() {
            Some(epoch_ms) => epoch_ms.checked_mul(1000),
            None => {
                chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.timestamp_micros())
            }
        }
    };
    for (id, sent, answered) in walls {
        let data = api.call(USER_TOKEN, EVENTS, json!({"a": id})).await?;
        let items = data["agendaEvents"]["items"].as_array().cloned().unwrap_or_default();
        let find = |kind: &str| items.iter().find(|e| e["type"] == kind).cloned();
        let mut at = Vec::new();
        for kind in ["AgendaSubmitted", "AgendaQueued", "AgendaClaimed"] {
            let event = find(kind).with_context(|| format!("{id}: no {kind} in {items:?}"))?;
            at.push(micros_of(&event["data"]["time"]));
            at.push(micros_of(&event["time"]));
        }
        at.push(Some(*answered));
        for ((_, values), t) in marks.iter_mut().zip(at) {
            if let Some(t) = t {
                values.push(u64::try_from(t - sent).unwrap_or(0));
            }
        }
    }
    for (name, values) in &mut marks {
        values.sort_unstable();
        println!(
            "breakdown: submit sent -> {name}: p50 {:.2} ms p90 {:.2} ms ({} samples)",
            ms(values, 0.50),
            ms(values, 0.90),
            values.len()
        );
    }
    Ok(())
}

impl Api {
    /// One one-operation agenda for insight `work` (type `job`) or `backlog` (type `later`);
    /// its id once acknowledged.
    async fn submit(&self, insight: &str, i: usize) -> Result<String> {
        let operation_type = if insight == "work" { "job" } else { "later" };
        let agenda = json!({
            "customerId": "acme",
            "title": format!("handout {insight} {i}"),
            "operations": [{"name": "only", "type": operation_type, "payload": {"n": i}}],
        });
        let data = self.call(USER_TOKEN, SUBMIT, json!({"a": agenda})).await?;
        data["submitAgenda"]["agenda"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no agenda id: {data}"))
    }

    /// Completes a claimed agenda with one report under its lease.
    async fn complete(&self, claimed: &Value) -> Result<()> {
        let report = json!({
            "id": claimed["progress"]["id"],
            "processingState": "COMPLETE",
            "processingStateMessage": "succeeded",
            "operationProgress": [{"operation": "only", "processingState": "COMPLETE",
                "processingStateMessage": "succeeded", "percentComplete": 100}],
        });
        let data = self
            .call(SERVICE_TOKEN, UPDATE, json!({"p": report, "l": claimed["lease"]["id"]}))
            .await?;
        let state = &data["updateAgendaProgress"]["progress"]["processingState"];
        ensure!(state == "COMPLETE", "not complete: {data}");
        Ok(())
    }
}
