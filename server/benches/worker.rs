//! Worker throughput benchmark: agendas of 10 trivial operations (each runs `true` as a local
//! process; each refers to the previous one's output, so they run one after another) go
//! through one real `pop worker` against a real `pop serve` on loopback, and the benchmark
//! measures agendas/s and operations/s from the worker's start until every agenda is COMPLETE,
//! plus the worker's CPU.
//!
//! `cargo bench -p pop-server --bench worker -- [--agendas N] [--max-agendas N]
//! [--durability full|normal]`. The `N` agendas are submitted before the worker starts, so the
//! figure is the worker's drain rate with a full queue. Without `--bench` (as
//! `cargo test --benches` runs it) it does a small smoke run.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use serde_json::{Value, json};
use support::{Server, cpu_ticks, ticks_per_second};

#[derive(Debug, Parser)]
#[command(about = "pop worker throughput benchmark")]
struct Args {
    /// Agendas to run (10 operations each).
    #[arg(long, default_value_t = 300)]
    agendas: usize,
    /// The worker's `--max-agendas`.
    #[arg(long, default_value_t = 16)]
    max_agendas: usize,
    /// Store durability of the server.
    #[arg(long, default_value = "full")]
    durability: String,
    #[arg(long, hide = true)]
    bench: bool,
}

const OPS: usize = 10;
const DEADLINE: Duration = Duration::from_secs(600);

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
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
            bail!("{errors}");
        }
        Ok(body["data"].clone())
    }
}

fn agenda(i: usize) -> Value {
    let operations: Vec<Value> = (0..OPS)
        .map(|k| {
            let payload = if k == 0 {
                json!({"n": i})
            } else {
                json!({"prev": format!("@<op{}.out>", k - 1), "agenda": "@<pop.agendaId>"})
            };
            json!({"name": format!("op{k}"), "type": "noop", "payload": payload})
        })
        .collect();
    json!({"customerId": "acme", "title": format!("bench {i}"), "operations": operations})
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.agendas = 3;
        args.max_agendas = 2;
        println!("worker: smoke run (use `cargo bench` for the real one)");
    }
    ensure!(args.agendas > 0 && args.max_agendas > 0, "need work to do");
    tokio::time::timeout(DEADLINE, bench(&args))
        .await
        .map_err(|_| anyhow!("the benchmark did not finish in time"))?
}

async fn bench(args: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        &dir.path().join("data"),
        &["--durability", args.durability.as_str(), "--scheduler", "true"],
    )?;
    let api = Api {
        http: reqwest::Client::new(),
        url: format!("http://{}/graphql", server.addr),
        token: server.admin.clone(),
    };
    api.call(
        "mutation($v: JSON!) { createResourcePool(resourcePool: $v) { position } }",
        json!({"v": {"id": "farm", "customerId": "acme", "title": "Farm"}}),
    )
    .await?;
    api.call(
        "mutation($v: JSON!) { createCustomer(customer: $v) { position } }",
        json!({"v": {"id": "acme", "customerId": "acme", "title": "Acme", "resourcePoolId": "farm"}}),
    )
    .await?;
    let data = api
        .call(
            "mutation($v: JSON!) { createInsight(insight: $v) { position } }",
            json!({"v": {"id": "bench", "customerId": "acme", "title": "Bench",
                         "resourcePoolId": "farm", "queueSize": 1000,
                         "mappers": {"operationType": ["noop"]}}}),
        )
        .await?;
    let position = data["createInsight"]["position"].clone();
    for i in 0..args.agendas {
        api.call(
            "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { position } }",
            json!({"a": agenda(i), "p": position}),
        )
        .await
        .context("submitting")?;
    }

    let handlers = dir.path().join("handlers.toml");
    std::fs::write(
        &handlers,
        "[handlers.noop]\nkind = \"local\"\ncommand = [\"true\"]\ntimeout_seconds = 30\n",
    )?;
    let started = Instant::now();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_pop"))
        .args(["worker", "--server", &format!("http://{}", server.addr), "--token", &server.admin])
        .args(["--insight", "bench", "--handlers"])
        .arg(&handlers)
        .args(["--max-agendas", &args.max_agendas.to_string(), "--max-idle-ms", "200"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning pop worker")?;
    let worker_stat = format!("/proc/{}/stat", worker.id());
    let server_ticks = server.cpu_ticks();
    let mut worker_ticks = 0;
    let elapsed = loop {
        let data = api.call("{ insight(id: \"bench\") { waiting executing } }", json!({})).await?;
        let waiting = data["insight"]["waiting"].as_u64().unwrap_or(u64::MAX);
        let executing = data["insight"]["executing"].as_u64().unwrap_or(u64::MAX);
        worker_ticks = cpu_ticks(&worker_stat).max(worker_ticks);
        if waiting == 0 && executing == 0 {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let server_cpu = (server.cpu_ticks() - server_ticks) as f64 / ticks_per_second();
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    let _ = worker.wait();

    // Every agenda must have succeeded, or the figure means nothing.
    let mut succeeded = 0;
    let mut after: Option<String> = None;
    loop {
        let data = api
            .call(
                "query($a: String) { agendaProgressList(filter: {insightId: \"bench\"}, first: 500, after: $a) \
                 { items { processingStateMessage } endCursor hasNextPage } }",
                json!({"a": after}),
            )
            .await?;
        let page = &data["agendaProgressList"];
        succeeded += page["items"]
            .as_array()
            .map(|items| {
                items.iter().filter(|p| p["processingStateMessage"] == "succeeded").count()
            })
            .unwrap_or(0);
        if page["hasNextPage"] != json!(true) {
            break;
        }
        after = page["endCursor"].as_str().map(str::to_string);
    }
    ensure!(succeeded == args.agendas, "{succeeded} of {} agendas succeeded", args.agendas);
    let seconds = elapsed.as_secs_f64();
    let worker_cpu = worker_ticks as f64 / ticks_per_second();
    println!(
        "{} agendas x {OPS} operations in {seconds:.2} s: {:.1} agendas/s, {:.0} operations/s; \
         worker CPU {worker_cpu:.2} s ({:.2} ms per operation), server CPU {server_cpu:.2} s",
        args.agendas,
        args.agendas as f64 / seconds,
        (args.agendas * OPS) as f64 / seconds,
        worker_cpu * 1000.0 / (args.agendas * OPS) as f64,
    );
    println!(
        "RESULT agendas_per_s={:.1} ops_per_s={:.0} worker_cpu_ms_per_op={:.2}",
        args.agendas as f64 / seconds,
        (args.agendas * OPS) as f64 / seconds,
        worker_cpu * 1000.0 / (args.agendas * OPS) as f64
    );
    drop(server);
    Ok(())
}
