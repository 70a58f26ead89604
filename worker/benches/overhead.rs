//! The worker's own cost per operation: agendas of 10 operations in a chain (each refers to
//! the previous one's output) run through the real executor, reporter and handlers against an
//! API that answers at once, so what is measured is the worker, not the server.
//!
//! For each handler kind it prints the median, over `RUNS` runs, of the wall time per operation
//! inside an agenda, the handler's own time per call measured by calling the same handler
//! directly the same number of times, and their difference: the worker's overhead per
//! operation (target ≤ 5 ms).
//!
//! `cargo bench -p pop-worker --bench overhead` (release). Without `--bench` (as
//! `cargo test --benches` runs it) it does one small run, so it cannot rot unnoticed.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;

use pop_domain::Params;
use pop_domain::model::{Agenda, Operation};
use pop_worker::api::{ApiError, Claimed, WorkApi};
use pop_worker::execute::{ExecConfig, ExecEnv, execute};
use pop_worker::handler::{Failure, Handler, OperationContext, ProgressSink, Registry};
use pop_worker::local::LocalProcess;
use pop_worker::report::ReportConfig;

struct InstantApi;

#[async_trait]
impl WorkApi for InstantApi {
    async fn get_agenda(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Claimed>, ApiError> {
        Ok(Vec::new())
    }
    async fn update_progress(&self, _: &Value) -> Result<(), ApiError> {
        Ok(())
    }
    async fn expand(&self, _: &str, _: &str, _: &[Operation], _: &Params) -> Result<(), ApiError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Returns its payload at once: the executor's cost alone.
struct InProcess;

#[async_trait]
impl Handler for InProcess {
    async fn run(&self, ctx: OperationContext, _: ProgressSink) -> Result<Value, Failure> {
        Ok(ctx.payload)
    }
}

const OPS: usize = 10;

fn chain(op_type: &str) -> Vec<Operation> {
    (0..OPS)
        .map(|i| Operation {
            name: format!("op{i}"),
            op_type: op_type.into(),
            id: None,
            payload: if i == 0 {
                json!({"n": 0}).into()
            } else {
                json!({"prev": format!("@<op{}.out>", i - 1), "agenda": "@<pop.agendaId>"}).into()
            },
            params: Params::new(),
        })
        .collect()
}

fn ctx(payload: Value) -> OperationContext {
    OperationContext {
        agenda_id: "bench".into(),
        customer_id: "c".into(),
        insight_id: "i".into(),
        resource_pool_id: "p".into(),
        operation_name: "op".into(),
        operation_type: "t".into(),
        payload,
        params: Params::new(),
    }
}

/// (wall per operation inside agendas, handler's own time per call), in microseconds.
async fn measure(env: &ExecEnv, op_type: &str, agendas: usize) -> (f64, f64) {
    let (_stop, shutdown) = watch::channel(false);
    let started = Instant::now();
    for a in 0..agendas {
        let claimed = Claimed {
            agenda: Agenda {
                id: format!("ag{a}"),
                customer_id: "c".into(),
                operations: chain(op_type),
                ..Agenda::default()
            },
            progress: None,
            lease: None,
            traceparent: None,
            tracestate: None,
        };
        let outcome = execute(env, claimed, None, shutdown.clone()).await;
        assert_eq!(outcome, pop_worker::execute::Outcome::Succeeded);
    }
    let per_op = started.elapsed().as_secs_f64() * 1e6 / (agendas * OPS) as f64;
    let handler = env.registry.get(op_type).unwrap();
    let sink: ProgressSink = Arc::new(|_| {});
    let started = Instant::now();
    for _ in 0..agendas * OPS {
        handler.run(ctx(json!({"prev": {"n": 0}, "agenda": "bench"})), sink.clone()).await.unwrap();
    }
    let own = started.elapsed().as_secs_f64() * 1e6 / (agendas * OPS) as f64;
    (per_op, own)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (runs, agendas) = if bench { (5, 100) } else { (1, 3) };
    let mut registry = Registry::with_builtins();
    registry.insert("inproc", Arc::new(InProcess));
    registry.insert(
        "true",
        Arc::new(LocalProcess {
            program: "true".into(),
            args: Vec::new(),
            env: Default::default(),
            working_dir: None,
            timeout: Duration::from_secs(10),
        }),
    );
    let env = ExecEnv {
        api: Arc::new(InstantApi),
        registry: Arc::new(registry),
        config: ExecConfig {
            max_parallel: 8,
            report: ReportConfig::default(),
            shutdown_grace: Duration::from_secs(1),
        },
    };
    for op_type in ["inproc", "true"] {
        let mut walls = Vec::new();
        let mut owns = Vec::new();
        let mut overheads = Vec::new();
        for _ in 0..runs {
            let (wall, own) = measure(&env, op_type, agendas).await;
            walls.push(wall);
            owns.push(own);
            overheads.push(wall - own);
        }
        println!(
            "{op_type:>7}: {agendas} agendas x {OPS} chained operations, median of {runs} runs: \
             {:.0} µs per operation in an agenda, {:.0} µs handler alone, overhead {:.0} µs \
             per operation (target ≤ 5000 µs)",
            median(walls),
            median(owns),
            median(overheads)
        );
    }
}
