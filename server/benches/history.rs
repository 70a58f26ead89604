//! History-cliff benchmark (issue 18): does an agenda with a long history — 100,000 events in
//! its stream, a long-running job that reports often — cost more per report, per progress
//! read, at rebuild or at restart than a fresh one? Temporal caps a workflow's history at
//! 51,200 events; pop has no cap, so this is what has to hold instead.
//!
//! Through the public GraphQL API of a real `pop serve` on loopback (scheduler on): one
//! 5-operation agenda is submitted and claimed, then its stream is grown with operation reports
//! (`updateAgendaProgresses`, 100 reports of that one agenda per request, each its own command
//! and event). At each checkpoint (10, 1,000, 10,000, half of `--events`, `--events` events in
//! the stream) `--samples` single `updateAgendaProgress` calls (one in flight, each appending
//! one event) and as many `agendaProgress(id)` reads are timed, then up to 30
//! `agendaProgress(id, asOf: {position})` reads at the last report's position (each folds the
//! whole stream; the answer must equal the live one), and the server's RSS is read.
//! After the last checkpoint the server is stopped (SIGTERM) and `pop rebuild` replays the
//! log; then the server is started again on the same data and the time until it answers the
//! agenda's progress at the last position is taken.
//!
//! `cargo bench -p pop-server --bench history -- [options]` (`--durability full` fsyncs every
//! commit; the default, `normal`, measures the CPU cost per report without the disk's fsync
//! time, which does not depend on the history). `POP_BENCH_BIN` picks the server binary.
//! Without `--bench` (as `cargo test --benches` runs it) it does a small smoke run.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use support::{Api, SERVICE_TOKEN, USER_TOKEN, load_average, micros, ms};

#[derive(Debug, Parser)]
#[command(about = "pop history benchmark: cost per report and per read at 10 .. 100,000 events")]
struct Args {
    /// Events in the agenda's stream at the last checkpoint.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Timed reports (and timed reads) at each checkpoint.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Store durability of the server.
    #[arg(long, default_value = "normal")]
    durability: String,
    /// Set by `cargo bench`; without it a small smoke run replaces the defaults.
    #[arg(long, hide = true)]
    bench: bool,
}

const OPERATIONS: usize = 5;
const REPORTS_PER_REQUEST: u64 = 100;

const SUBMIT: &str = "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id } } }";
const WAIT_FOR_WORK: &str = "mutation { getAgenda(insightId: \"transcode\", count: 1, \
    waitSeconds: 5) { agenda { id } progress { id } lease { id } } }";
const UPDATE: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, \
    leaseId: $l) { position } }";
const UPDATE_MANY: &str = "mutation($r: [ReportInput!]!) { updateAgendaProgresses(reports: $r) \
    { index result { position } error { code message } } }";
const PROGRESS: &str = "query($id: String!, $p: String) { agendaProgress(id: $id, \
    atLeastPosition: $p) { id processingState percentComplete operationProgress { operation \
    percentComplete processingStateMessage } } }";

/// The same progress as it was at a log position, folded from the agenda's stream (issue 15:
/// as-of reads), at the position of the last report: it must equal the live answer.
const PROGRESS_AS_OF: &str = "query($id: String!, $p: String!) { agendaProgress(id: $id, \
    asOf: {position: $p}) { id processingState percentComplete operationProgress { operation \
    percentComplete processingStateMessage } } }";

/// Timed as-of reads per checkpoint at most: each folds the whole stream.
const AS_OF_SAMPLES: usize = 30;

/// What one checkpoint measured.
struct Checkpoint {
    events: u64,
    report_p50: f64,
    report_p99: f64,
    read_p50: f64,
    read_p99: f64,
    as_of_p50: f64,
    as_of_p99: f64,
    rss_kib: u64,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.events = 400;
        args.samples = 20;
        println!("history: smoke run (use `cargo bench` for the real one)");
    }
    ensure!(args.samples > 0 && args.events >= 10, "need samples and events");
    // ~1 ms a report with durability normal, ~10 with full on this machine; generous.
    let deadline = Duration::from_secs(300 + args.events / 20);
    tokio::time::timeout(deadline, bench(&args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish in time"))?
}

/// The agenda under test and its lease.
struct Claimed {
    progress_id: String,
    lease_id: String,
}

/// Report `k`: one operation's percent and message change, so each report is one event.
fn report(claimed: &Claimed, k: u64) -> Value {
    let operation = format!("op{}", k % OPERATIONS as u64);
    let percent = ((k / OPERATIONS as u64) % 9_900) as f64 / 100.0;
    json!({"id": claimed.progress_id, "operationProgress": [{
        "operation": operation, "processingState": "EXECUTING",
        "processingStateMessage": format!("step {k}"), "percentComplete": percent
    }]})
}

async fn bench(args: &Args) -> Result<()> {
    let dir = tempfile::tempdir().context("a temp dir")?;
    let server = support::start_with_tokens(dir.path(), &args.durability, &[])?;
    let api = Api::new(&server, Duration::from_secs(60))?;
    api.seed(&[("transcode", "ffmpeg", 10)]).await.context("seeding")?;
    let operations: Vec<Value> = (0..OPERATIONS)
        .map(|i| json!({"name": format!("op{i}"), "type": "ffmpeg", "payload": {"n": i}}))
        .collect();
    let agenda = json!({"customerId": "acme", "title": "long history", "operations": operations});
    let data = api.call(USER_TOKEN, SUBMIT, json!({"a": agenda})).await.context("submitting")?;
    let agenda_id = data["submitAgenda"]["agenda"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no agenda id: {data}"))?;
    let claimed = loop {
        let data = api.call(SERVICE_TOKEN, WAIT_FOR_WORK, json!({})).await.context("claiming")?;
        if let Some(got) = data["getAgenda"].as_array().and_then(|l| l.first()) {
            ensure!(got["agenda"]["id"] == agenda_id.as_str(), "claimed another agenda: {got}");
            break Claimed {
                progress_id: got["progress"]["id"].as_str().unwrap_or_default().to_string(),
                lease_id: got["lease"]["id"].as_str().unwrap_or_default().to_string(),
            };
        }
    };
    // The stream so far: submitted, queued, claimed (the exact count does not matter; each
    // report below adds exactly one event, which every answer's position proves).
    let mut events: u64 = 3;
    let mut k: u64 = 0;
    let mut last_position = String::new();
    let mut checkpoints: Vec<u64> = [10, 1_000, 10_000, args.events / 2, args.events]
        .into_iter()
        .filter(|&c| c <= args.events)
        .collect();
    checkpoints.dedup();
    let load_before = load_average();
    let started = Instant::now();
    let mut measured = Vec::new();
    for checkpoint in checkpoints {
        while events < checkpoint {
            let n = (checkpoint - events).min(REPORTS_PER_REQUEST);
            let reports: Vec<Value> = (0..n)
                .map(|i| json!({"agendaProgress": report(&claimed, k + i), "leaseId": claimed.lease_id}))
                .collect();
            let data = api
                .call(SERVICE_TOKEN, UPDATE_MANY, json!({"r": reports}))
                .await
                .context("a batch of reports")?;
            for item in data["updateAgendaProgresses"].as_array().into_iter().flatten() {
                match item["result"]["position"].as_str() {
                    Some(p) => last_position = p.to_string(),
                    None => bail!("a report appended nothing: {item}"),
                }
            }
            k += n;
            events += n;
        }
        let at = events;
        let mut reports = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let body = json!({"p": report(&claimed, k), "l": claimed.lease_id});
            let t = Instant::now();
            let data = api.call(SERVICE_TOKEN, UPDATE, body).await.context("a timed report")?;
            reports.push(micros(t.elapsed()));
            last_position = data["updateAgendaProgress"]["position"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("a timed report appended nothing: {data}"))?;
            k += 1;
            events += 1;
        }
        let mut reads = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            let t = Instant::now();
            let data = api
                .call(USER_TOKEN, PROGRESS, json!({"id": agenda_id, "p": last_position}))
                .await
                .context("a timed read")?;
            reads.push(micros(t.elapsed()));
            ensure!(data["agendaProgress"]["id"].is_string(), "no progress: {data}");
        }
        let live = api
            .call(USER_TOKEN, PROGRESS, json!({"id": agenda_id, "p": last_position}))
            .await?["agendaProgress"]
            .clone();
        let mut as_of = Vec::with_capacity(AS_OF_SAMPLES);
        for _ in 0..args.samples.min(AS_OF_SAMPLES) {
            let t = Instant::now();
            let data = api
                .call(USER_TOKEN, PROGRESS_AS_OF, json!({"id": agenda_id, "p": last_position}))
                .await
                .context("a timed as-of read")?;
            as_of.push(micros(t.elapsed()));
            ensure!(data["agendaProgress"] == live, "as-of {data} is not the live {live}");
        }
        as_of.sort_unstable();
        reports.sort_unstable();
        reads.sort_unstable();
        let point = Checkpoint {
            events: at,
            report_p50: ms(&reports, 0.50),
            report_p99: ms(&reports, 0.99),
            read_p50: ms(&reads, 0.50),
            read_p99: ms(&reads, 0.99),
            as_of_p50: ms(&as_of, 0.50),
            as_of_p99: ms(&as_of, 0.99),
            rss_kib: server.rss_kib(),
        };
        println!(
            "history: {:>7} events: report p50 {:.3} ms p99 {:.3} ms; agendaProgress p50 {:.3} \
             ms p99 {:.3} ms; as-of agendaProgress p50 {:.3} ms p99 {:.3} ms; server RSS {} KiB \
             ({:.0} s in)",
            point.events,
            point.report_p50,
            point.report_p99,
            point.read_p50,
            point.read_p99,
            point.as_of_p50,
            point.as_of_p99,
            point.rss_kib,
            started.elapsed().as_secs_f64()
        );
        measured.push(point);
    }
    let load_after = load_average();
    // What the last read shows is what a restart must show again.
    let before = api
        .call(USER_TOKEN, PROGRESS, json!({"id": agenda_id, "p": last_position}))
        .await?["agendaProgress"]
        .clone();
    drop(server);

    let data_dir = dir.path().join("data");
    let t = Instant::now();
    let rebuild = Command::new(support::pop_binary())
        .arg("rebuild")
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .context("running pop rebuild")?;
    let rebuild_secs = t.elapsed().as_secs_f64();
    let out = String::from_utf8_lossy(&rebuild.stdout);
    ensure!(rebuild.status.success(), "pop rebuild failed: {out}");
    let rebuilt = out.lines().find(|l| l.starts_with("rebuilt to position")).unwrap_or_default();

    let t = Instant::now();
    let server = support::start_with_tokens(dir.path(), &args.durability, &[])?;
    let api = Api::new(&server, Duration::from_secs(60))?;
    let after = api
        .call(USER_TOKEN, PROGRESS, json!({"id": agenda_id, "p": last_position}))
        .await?["agendaProgress"]
        .clone();
    let restart_secs = t.elapsed().as_secs_f64();
    ensure!(after == before, "after the restart the progress differs: {after} vs {before}");
    drop(server);

    println!(
        "history: durability {}, {} samples per checkpoint; load average before {load_before}, \
         after {load_after}",
        args.durability, args.samples
    );
    println!(
        "history: pop rebuild {rebuild_secs:.2} s ({rebuilt}); restart to answering {restart_secs:.2} s"
    );
    let (first, last) = match (measured.first(), measured.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("no checkpoint measured"),
    };
    println!(
        "RESULT events={} report_p50_first_ms={:.3} report_p50_last_ms={:.3} report_ratio={:.2} \
         read_p50_first_ms={:.3} read_p50_last_ms={:.3} read_ratio={:.2} rss_first_kib={} \
         rss_last_kib={} rebuild_s={rebuild_secs:.2} restart_s={restart_secs:.2} \
         as_of_p50_at_10000_ms={:.3} as_of_p50_last_ms={:.3}",
        last.events,
        first.report_p50,
        last.report_p50,
        last.report_p50 / first.report_p50,
        first.read_p50,
        last.read_p50,
        last.read_p50 / first.read_p50,
        first.rss_kib,
        last.rss_kib,
        measured.iter().find(|m| m.events >= 10_000).map_or(f64::NAN, |m| m.as_of_p50),
        last.as_of_p50,
    );
    Ok(())
}
