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

/// An agenda `id` of one operation of type `op_type`, handed out without a lease.
fn claimed(id: String, op_type: &str) -> Claimed {
    Claimed {
        agenda: Agenda {
            id,
            customer_id: "c".into(),
            operations: vec![Operation {
                name: "only".into(),
                op_type: op_type.into(),
                id: None,
                payload: json!({}).into(),
                params: Params::new(),
            }],
            ..Agenda::default()
        },
        progress: None,
        lease: None,
        traceparent: None,
        tracestate: None,
    }
}

#[derive(Default)]
struct Queue {
    left: Mutex<Vec<String>>,
    claims_in_flight: AtomicUsize,
    max_claims_in_flight: AtomicUsize,
    completed: Mutex<Vec<String>>,
}

#[async_trait]
impl WorkApi for Queue {
    async fn get_agenda(
        &self,
        _: &str,
        count: usize,
        _: Duration,
    ) -> Result<Vec<Claimed>, ApiError> {
        let now = self.claims_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_claims_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let ids: Vec<String> = {
            let mut left = self.left.lock().unwrap();
            let n = count.min(left.len());
            left.drain(..n).collect()
        };
        self.claims_in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(ids.into_iter().map(|id| claimed(id, "busy")).collect())
    }
    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        if report["processingState"] == "COMPLETE" {
            self.completed.lock().unwrap().push(report["id"].as_str().unwrap().to_string());
        }
        Ok(())
    }
    async fn expand(&self, _: &str, _: &str, _: &[Operation], _: &Params) -> Result<(), ApiError> {
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

/// A queue that honours `getAgenda`'s wait (as the server does): an empty queue holds the call
/// until work arrives or the wait is over. Records the wait of every call, and which call
/// handed out each agenda.
#[derive(Default)]
struct WaitingQueue {
    left: Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
    /// The wait each call asked for, in call order.
    calls: Mutex<Vec<Duration>>,
    /// (agenda id, index of the call that handed it out).
    handed: Mutex<Vec<(String, usize)>>,
    /// Answer at once whatever the wait (a server that cannot wait).
    ignore_wait: bool,
    /// Agendas reported COMPLETE.
    completed: AtomicUsize,
}

impl WaitingQueue {
    fn take(&self, count: usize, call: usize) -> Vec<String> {
        let mut left = self.left.lock().unwrap();
        let n = count.min(left.len());
        let ids: Vec<String> = left.drain(..n).collect();
        self.handed.lock().unwrap().extend(ids.iter().map(|id| (id.clone(), call)));
        ids
    }
}

#[async_trait]
impl WorkApi for WaitingQueue {
    async fn get_agenda(
        &self,
        _: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, ApiError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(wait);
            calls.len() - 1
        };
        let deadline = tokio::time::Instant::now() + wait;
        let ids = loop {
            let arrived = self.arrived.notified();
            let ids = self.take(count, call);
            if !ids.is_empty() || self.ignore_wait {
                break ids;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break Vec::new();
            }
        };
        Ok(ids.into_iter().map(|id| claimed(id, "log")).collect())
    }
    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        if report["processingState"] == "COMPLETE" {
            self.completed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    async fn expand(&self, _: &str, _: &str, _: &[Operation], _: &Params) -> Result<(), ApiError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

fn waiting_env(api: Arc<WaitingQueue>) -> ExecEnv {
    ExecEnv {
        api,
        registry: Arc::new(Registry::with_builtins()),
        config: ExecConfig {
            max_parallel: 1,
            report: ReportConfig { interval: Duration::from_millis(5), ..ReportConfig::default() },
            shutdown_grace: Duration::from_secs(1),
        },
    }
}

/// Bound on every wait of these tests for something that should happen.
const BOUND: Duration = Duration::from_secs(10);

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Idle-worker hand-out (issue 18): after an empty answer the puller asks the server to wait
/// for work, and work that arrives meanwhile is handed out by that same waiting call — no
/// pause, no second poll (the backoff here is ten minutes, so a pause would fail the test).
/// On shutdown the waiting call is abandoned and the puller ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_puller_waits_for_work_and_claims_it_with_the_waiting_call() {
    let queue = Arc::new(WaitingQueue::default());
    let config = PullConfig {
        insights: vec!["a".into()],
        max_agendas: 2,
        wait_for_work: Duration::from_secs(20),
        min_idle_backoff: Duration::from_secs(600),
        max_idle_backoff: Duration::from_secs(600),
        ..PullConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let puller = tokio::spawn(run(waiting_env(queue.clone()), config, shutdown));
    // The first call does not wait; once it came back empty the next one waits.
    until("the puller never asked to wait", || {
        queue.calls.lock().unwrap().iter().any(|w| *w == Duration::from_secs(20))
    })
    .await;
    let calls = queue.calls.lock().unwrap().clone();
    assert_eq!(calls, vec![Duration::ZERO, Duration::from_secs(20)]);
    queue.left.lock().unwrap().push("new".into());
    queue.arrived.notify_waiters();
    until("the waiting call did not hand out the new agenda", || {
        !queue.handed.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*queue.handed.lock().unwrap(), vec![("new".to_string(), 1)]);
    until("the agenda did not complete", || queue.completed.load(Ordering::SeqCst) == 1).await;
    // Idle again: the puller waits again (without a pause in between).
    until("the puller did not wait again", || queue.calls.lock().unwrap().len() >= 3).await;
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(BOUND, puller).await.expect("shutdown waited for the wait");
    let stats = stats.unwrap();
    assert_eq!((stats.claimed, stats.succeeded), (1, 1));
}

/// A server that answers a waiting call at once (it cannot wait) does not turn the puller into
/// a busy loop: it pauses with backoff as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_wait_gets_the_backoff_not_a_busy_loop() {
    let queue = Arc::new(WaitingQueue { ignore_wait: true, ..WaitingQueue::default() });
    let config = PullConfig {
        insights: vec!["a".into()],
        wait_for_work: Duration::from_secs(20),
        min_idle_backoff: Duration::from_millis(100),
        max_idle_backoff: Duration::from_millis(200),
        ..PullConfig::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let puller = tokio::spawn(run(waiting_env(queue.clone()), config, shutdown));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = queue.calls.lock().unwrap().len();
    // With pauses of 100–200 ms that is a handful of calls; a busy loop makes thousands.
    assert!((2..=20).contains(&calls), "{calls} calls in 500 ms");
    stop.send(true).unwrap();
    tokio::time::timeout(BOUND, puller).await.unwrap().unwrap();
}

/// A server that no longer takes the worker's token.
struct Revoked {
    asked: AtomicUsize,
    /// The refusal's code.
    code: &'static str,
}

#[async_trait]
impl WorkApi for Revoked {
    async fn get_agenda(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Claimed>, ApiError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Err(ApiError::Refused { code: self.code.into(), message: "not with this token".into() })
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

/// A refused token ends the puller at once, saying why (ops3am3: a revoked token's worker kept
/// asking every 5 s for ever, and its supervisor saw it running); so does a token whose role
/// may not take work (newcomer6: a user's token, likewise).
#[tokio::test(start_paused = true)]
async fn a_refused_token_stops_the_puller() {
    for code in ["UNAUTHENTICATED", "FORBIDDEN"] {
        refused_token_stops_the_puller(code).await;
    }
}

async fn refused_token_stops_the_puller(code: &'static str) {
    let api = Arc::new(Revoked { asked: AtomicUsize::new(0), code });
    let env = ExecEnv {
        api: api.clone(),
        registry: Arc::new(Registry::with_builtins()),
        config: ExecConfig {
            max_parallel: 1,
            report: ReportConfig::default(),
            shutdown_grace: Duration::from_secs(1),
        },
    };
    let config = PullConfig { insights: vec!["a".into()], ..PullConfig::default() };
    let (_stop, stopped) = watch::channel(false);
    let stats = tokio::time::timeout(Duration::from_secs(60), run(env, config, stopped))
        .await
        .expect("the puller stopped by itself");
    let refusal = stats.token_refused.expect("the refusal is reported");
    assert!(refusal.contains(code), "{refusal}");
    assert_eq!(api.asked.load(Ordering::SeqCst), 1, "asked once");
}

/// A server that hands out one agenda and then takes no report (down): a stopping worker does
/// not wait for its last report beyond the shutdown grace and a margin, though the agenda's
/// lease would let it retry for minutes (dash54: still retrying 52 s after SIGTERM, past the
/// grace of 20 s; only SIGKILL stopped it).
struct Down {
    handed: AtomicUsize,
}

#[async_trait]
impl WorkApi for Down {
    async fn get_agenda(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Claimed>, ApiError> {
        if self.handed.fetch_add(1, Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Vec::new());
        }
        let expires = pop_domain::Timestamp::from(std::time::SystemTime::now())
            + chrono::Duration::minutes(10);
        let lease = pop_worker::api::Lease {
            id: "l1".into(),
            expires,
            left: Some(Duration::from_secs(600)),
        };
        Ok(vec![Claimed { lease: Some(lease), ..claimed("held".into(), "log") }])
    }
    async fn update_progress(&self, _: &Value) -> Result<(), ApiError> {
        Err(ApiError::Transient("connection refused".into()))
    }
    async fn expand(&self, _: &str, _: &str, _: &[Operation], _: &Params) -> Result<(), ApiError> {
        Ok(())
    }
    async fn release(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        Err(ApiError::Transient("connection refused".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_stopping_worker_leaves_last_reports_a_down_server_does_not_take_past_its_grace() {
    let api = Arc::new(Down { handed: AtomicUsize::new(0) });
    let grace = Duration::from_secs(2);
    let env = ExecEnv {
        api: api.clone(),
        registry: Arc::new(Registry::with_builtins()),
        config: ExecConfig {
            max_parallel: 1,
            report: ReportConfig { interval: Duration::from_millis(5), ..ReportConfig::default() },
            shutdown_grace: grace,
        },
    };
    let config = PullConfig { insights: vec!["a".into()], max_agendas: 1, ..PullConfig::default() };
    let (stop, shutdown) = watch::channel(false);
    let puller = tokio::spawn(run(env, config, shutdown));
    while api.handed.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::time::Instant::now();
    stop.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(300), puller).await.unwrap().unwrap();
    let took = stopped.elapsed();
    assert!(took <= grace + pop_worker::puller::STOP_MARGIN + Duration::from_secs(1), "{took:?}");
    assert_eq!((stats.claimed, stats.abandoned), (1, 1), "{stats:?}");
}
