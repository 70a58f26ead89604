//! The puller against a fake API that hands out a fixed number of agendas: every agenda runs
//! exactly once, never more than `max_agendas` at a time, with at most
//! `max_concurrent_claims` `getAgenda` calls in flight, and shutdown ends it.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;

use pop_domain::Params;
use pop_domain::model::{Agenda, Operation};
use pop_worker::api::{ApiError, Claimed, WorkApi};
use pop_worker::execute::{ExecConfig, ExecEnv};
use pop_worker::handler::{Failure, Handler, OperationContext, ProgressSink, Registry};
use pop_worker::puller::{PullConfig, run};
use pop_worker::report::ReportConfig;

#[derive(Default)]
struct Queue {
    left: Mutex<Vec<String>>,
    claims_in_flight: AtomicUsize,
    max_claims_in_flight: AtomicUsize,
    completed: Mutex<Vec<String>>,
}

#[async_trait]
impl WorkApi for Queue {
    async fn get_agenda(&self, _: &str, count: usize) -> Result<Vec<Claimed>, ApiError> {
        let now = self.claims_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_claims_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ids: Vec<String> = {
            let mut left = self.left.lock().unwrap();
            let n = count.min(left.len());
            left.drain(..n).collect()
        };
        self.claims_in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(ids
            .into_iter()
            .map(|id| Claimed {
                agenda: Agenda {
                    id,
                    customer_id: "c".into(),
                    operations: vec![Operation {
                        name: "only".into(),
                        op_type: "busy".into(),
                        id: None,
                        payload: json!({}),
                        params: Params::new(),
                    }],
                    ..Agenda::default()
                },
                progress: None,
                lease: None,
            })
            .collect())
    }
    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        if report["processingState"] == "COMPLETE" {
            self.completed.lock().unwrap().push(report["id"].as_str().unwrap().to_string());
        }
        Ok(())
    }
    async fn expand(&self, _: &str, _: &[Operation], _: &Params) -> Result<(), ApiError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Takes a little while and counts how many run at once.
struct Busy {
    running: AtomicUsize,
    max_running: AtomicUsize,
}

#[async_trait]
impl Handler for Busy {
    async fn run(&self, _: OperationContext, _: ProgressSink) -> Result<Value, Failure> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(json!(null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agenda_runs_once_within_the_limits_and_shutdown_ends_the_puller() {
    let queue = Arc::new(Queue::default());
    *queue.left.lock().unwrap() = (0..60).map(|i| format!("ag{i}")).collect();
    let busy = Arc::new(Busy { running: AtomicUsize::new(0), max_running: AtomicUsize::new(0) });
    let mut registry = Registry::with_builtins();
    registry.insert("busy", busy.clone());
    let env = ExecEnv {
        api: queue.clone(),
        registry: Arc::new(registry),
        config: ExecConfig {
            max_parallel: 4,
            report: ReportConfig { interval: Duration::from_millis(5), ..ReportConfig::default() },
            shutdown_grace: Duration::from_secs(1),
        },
    };
    let config = PullConfig {
        insights: vec!["a".into(), "b".into()],
        max_agendas: 6,
        max_concurrent_claims: 3,
        min_idle_backoff: Duration::from_millis(5),
        max_idle_backoff: Duration::from_millis(20),
        ..PullConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let puller = tokio::spawn(run(env, config, shutdown));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while queue.completed.lock().unwrap().len() < 60 {
        assert!(tokio::time::Instant::now() < deadline, "not every agenda completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), puller).await.unwrap().unwrap();
    assert_eq!((stats.claimed, stats.succeeded), (60, 60));
    let mut completed = queue.completed.lock().unwrap().clone();
    completed.sort();
    completed.dedup();
    assert_eq!(completed.len(), 60, "each agenda completed exactly once");
    assert!(busy.max_running.load(Ordering::SeqCst) <= 6, "at most max_agendas at once");
    assert!(queue.max_claims_in_flight.load(Ordering::SeqCst) <= 3);
}
