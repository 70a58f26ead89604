//! The executor and reporter against a fake API and in-process handlers: what reaches the
//! server, in which order, and what happens on refusals, transient failures and shutdown.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::watch;

use pop_domain::Params;
use pop_domain::model::{Agenda, Operation, Timestamp};
use pop_worker::api::{ApiError, Claimed, Lease, WorkApi};
use pop_worker::execute::{ExecConfig, ExecEnv, Outcome, execute};
use pop_worker::handler::{Failure, Handler, OperationContext, Progress, ProgressSink, Registry};
use pop_worker::report::{ReportConfig, Reporter, Target};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Report(Value),
    Expand(Vec<String>, Value),
    /// agenda, customer, lease
    Release(String, String, String),
}

#[derive(Default)]
struct FakeApi {
    calls: Mutex<Vec<Call>>,
    /// Errors to answer the next reports with, in order.
    report_errors: Mutex<Vec<ApiError>>,
    /// Errors to answer the next reports of a COMPLETE agenda with, in order.
    outcome_errors: Mutex<Vec<ApiError>>,
    /// The `processingStateMessage` the server answers a COMPLETE report with, if it says.
    recorded: Mutex<Option<String>>,
    /// Refuses a report carrying a result as too large (HTTP 413).
    refuse_results: std::sync::atomic::AtomicBool,
    /// Refuses a report carrying two results or more as too large.
    refuse_two_results: std::sync::atomic::AtomicBool,
    /// How many reports were refused as too large.
    refused_too_large: std::sync::atomic::AtomicUsize,
}

impl FakeApi {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn reports(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter_map(|c| if let Call::Report(r) = c { Some(r) } else { None })
            .collect()
    }
}

#[async_trait]
impl WorkApi for FakeApi {
    async fn get_agenda(&self, _: &str, _: usize, _: Duration) -> Result<Vec<Claimed>, ApiError> {
        Ok(Vec::new())
    }
    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        let results = report["operationProgress"]
            .as_array()
            .map_or(0, |ops| ops.iter().filter(|o| !o["resultPayload"].is_null()).count());
        let refuse = (results > 0 && self.refuse_results.load(std::sync::atomic::Ordering::SeqCst))
            || (results > 1 && self.refuse_two_results.load(std::sync::atomic::Ordering::SeqCst));
        if refuse {
            self.refused_too_large.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(ApiError::Refused {
                code: pop_worker::api::TOO_LARGE.into(),
                message: "the request body is larger than the limit of 2097152 bytes".into(),
            });
        }
        let error = {
            let mut errors = self.report_errors.lock().unwrap();
            if errors.is_empty() { None } else { Some(errors.remove(0)) }
        };
        let error = error.or_else(|| {
            let mut errors = self.outcome_errors.lock().unwrap();
            let outcome = report["processingState"] == "COMPLETE";
            (outcome && !errors.is_empty()).then(|| errors.remove(0))
        });
        self.calls.lock().unwrap().push(Call::Report(report.clone()));
        error.map_or(Ok(()), Err)
    }
    async fn update_progress_recorded(&self, report: &Value) -> Result<Option<String>, ApiError> {
        self.update_progress(report).await?;
        let complete = report["processingState"] == "COMPLETE";
        Ok(self.recorded.lock().unwrap().clone().filter(|_| complete))
    }
    async fn expand(
        &self,
        _: &str,
        _: &str,
        ops: &[Operation],
        params: &Params,
    ) -> Result<(), ApiError> {
        let names = ops.iter().map(|o| o.name.clone()).collect();
        self.calls.lock().unwrap().push(Call::Expand(names, json!(params)));
        Ok(())
    }
    async fn release(&self, agenda: &str, customer: &str, lease: &str) -> Result<(), ApiError> {
        let call = Call::Release(agenda.into(), customer.into(), lease.into());
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

/// Echoes its payload; `{"fail": true}` fails; `{"interrupted": true}` is stopped by a signal
/// (after its sleep); `{"sleep_ms": n}` sleeps; `{"chatty": n}` sends
/// n progress updates first.
struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn run(&self, ctx: OperationContext, progress: ProgressSink) -> Result<Value, Failure> {
        for i in 0..ctx.payload["chatty"].as_u64().unwrap_or(0) {
            progress(Progress { percent: Some(i as f64), message: None });
        }
        if let Some(ms) = ctx.payload["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if ctx.payload["fail"] == json!(true) {
            return Err(Failure::with_payload("told to fail", json!({"log": ["x"]})));
        }
        if ctx.payload["interrupted"] == json!(true) {
            return Err(Failure::new("sh failed: signal: 15 (SIGTERM)").interrupted());
        }
        Ok(ctx.payload)
    }
}

/// A generator: its output lists one operation that refers to the generator's own output.
struct Gen;

#[async_trait]
impl Handler for Gen {
    async fn run(&self, _: OperationContext, _: ProgressSink) -> Result<Value, Failure> {
        Ok(
            json!({"ops": [{"name": "g1", "type": "echo", "payload": {"seed": "@<gen.out::/seed>"}}],
                  "seed": 7, "p": {"k": "v"}}),
        )
    }
}

fn op(name: &str, payload: Value, params: Value) -> Operation {
    Operation {
        name: name.into(),
        op_type: "echo".into(),
        id: None,
        payload: payload.into(),
        params: serde_json::from_value(params).unwrap(),
    }
}

fn env(api: Arc<FakeApi>, grace: Duration) -> ExecEnv {
    let mut registry = Registry::with_builtins();
    registry.insert("echo", Arc::new(Echo));
    registry.insert("gen", Arc::new(Gen));
    ExecEnv {
        api,
        registry: Arc::new(registry),
        config: ExecConfig {
            max_parallel: 4,
            report: ReportConfig {
                interval: Duration::from_millis(20),
                heartbeat: Duration::from_secs(60),
                final_deadline: Duration::from_secs(10),
                lease: None,
            },
            shutdown_grace: grace,
        },
    }
}

/// A claim under lease `lease-1`, which lasts `lease` from now.
fn claimed_for(ops: Vec<Operation>, lease: Duration) -> Claimed {
    let now = Timestamp::from(std::time::SystemTime::now());
    Claimed {
        lease: Some(Lease { id: "lease-1".into(), expires: now + lease, left: None }),
        ..claimed(ops)
    }
}

/// A claim under a five-minute lease.
fn claimed(ops: Vec<Operation>) -> Claimed {
    let now = Timestamp::from(std::time::SystemTime::now());
    Claimed {
        lease: Some(Lease {
            id: "lease-1".into(),
            expires: now + Duration::from_secs(300),
            left: None,
        }),
        agenda: Agenda {
            id: "ag".into(),
            customer_id: "c".into(),
            operations: ops,
            ..Agenda::default()
        },
        progress: None,
        traceparent: None,
        tracestate: None,
    }
}

fn no_shutdown() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// The last reported state of each operation, merged over all reports.
fn final_states(reports: &[Value]) -> BTreeMap<String, String> {
    let mut states = BTreeMap::new();
    for r in reports {
        for o in r["operationProgress"].as_array().unwrap() {
            let m = o["processingStateMessage"].as_str().unwrap_or("");
            let state = format!("{}/{m}", o["processingState"].as_str().unwrap());
            states.insert(o["operation"].as_str().unwrap().to_string(), state);
        }
    }
    states
}

/// Every reported entry of one operation, in order.
fn entries(reports: &[Value], name: &str) -> Vec<Value> {
    reports
        .iter()
        .flat_map(|r| r["operationProgress"].as_array().unwrap().clone())
        .filter(|o| o["operation"] == name)
        .collect()
}

/// A final report the server takes but records otherwise (an operation's result over its
/// --max-payload-bytes fails the operation) is the outcome the server recorded (ops3am23: the
/// worker logged and counted it succeeded).
#[tokio::test]
async fn a_success_the_server_recorded_failed_is_a_failure() {
    let api = Arc::new(FakeApi::default());
    *api.recorded.lock().unwrap() = Some("failed".into());
    let (_stop, shutdown) = no_shutdown();
    let ops = vec![op("a", json!({"x": 1}), json!({}))];
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    let Outcome::Failed(why) = outcome else { panic!("{outcome:?}") };
    assert!(why.contains("the server recorded the agenda failed, not succeeded"), "{why}");
    // Recorded as sent: the outcome it was.
    let api = Arc::new(FakeApi::default());
    *api.recorded.lock().unwrap() = Some("SUCCEEDED".into());
    let (_stop, shutdown) = no_shutdown();
    let ops = vec![op("a", json!({"x": 1}), json!({}))];
    let outcome = execute(&env(api, Duration::ZERO), claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn a_generator_expands_before_it_is_reported_succeeded_and_its_operations_run() {
    let api = Arc::new(FakeApi::default());
    let generator = json!({"agenda.operation.generator":
        {"operationsJsonPointer": "/ops", "paramsJsonPointer": "/p"}});
    let mut generator = op("gen", json!({}), generator);
    generator.op_type = "gen".into();
    let ops = vec![generator];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let calls = api.calls();
    let expand_at = calls.iter().position(|c| matches!(c, Call::Expand(..))).unwrap();
    assert_eq!(calls[expand_at], Call::Expand(vec!["g1".into()], json!({"k": "v"})));
    let gen_succeeded_at = calls
        .iter()
        .position(|c| match c {
            Call::Report(r) => final_states(std::slice::from_ref(r))
                .get("gen")
                .is_some_and(|s| s == "COMPLETE/succeeded"),
            Call::Expand(..) | Call::Release(..) => false,
        })
        .unwrap();
    assert!(expand_at < gen_succeeded_at, "{calls:#?}");
    let reports = api.reports();
    let last = reports.last().unwrap();
    assert_eq!(last["processingState"], "COMPLETE");
    assert_eq!(last["processingStateMessage"], "succeeded");
    assert_eq!(final_states(&reports).get("g1").unwrap(), "COMPLETE/succeeded");
    let g1 = entries(&reports, "g1");
    assert_eq!(g1.last().unwrap()["resultPayload"], json!({"seed": 7}));
}

/// The success of the operations that fed a generator reaches the server before the
/// operations it generated: with reports gathered for seconds, `first`'s success was still
/// pending when `gen` expanded the agenda, so the history showed `g1` before `first` succeeded
/// (a newcomer's audit of the tour's fanout read so).
#[tokio::test]
async fn what_fed_a_generator_is_reported_before_its_expansion() {
    let api = Arc::new(FakeApi::default());
    let generator = json!({"agenda.operation.generator":
        {"operationsJsonPointer": "/ops", "paramsJsonPointer": "/p"}});
    let mut generator = op("gen", json!({"after": "@<first.out::/x>"}), generator);
    generator.op_type = "gen".into();
    let ops = vec![op("first", json!({"x": 1}), json!({})), generator];
    let mut slow = env(api.clone(), Duration::ZERO);
    slow.config.report.interval = Duration::from_secs(5);
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&slow, claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let calls = api.calls();
    let expand_at = calls.iter().position(|c| matches!(c, Call::Expand(..))).unwrap();
    let first_succeeded_at = calls
        .iter()
        .position(|c| match c {
            Call::Report(r) => final_states(std::slice::from_ref(r))
                .get("first")
                .is_some_and(|s| s == "COMPLETE/succeeded"),
            Call::Expand(..) | Call::Release(..) => false,
        })
        .unwrap();
    assert!(first_succeeded_at < expand_at, "{calls:#?}");
}

/// A flush answers at once once nothing more can be sent (the server refused the agenda's
/// reports: cancelled, lease lost): an expansion waited out its whole bound for it.
#[tokio::test]
async fn a_flush_after_the_reports_were_refused_answers_at_once() {
    let api = Arc::new(FakeApi::default());
    api.report_errors.lock().unwrap().push(ApiError::Refused {
        code: "CONFLICT".into(),
        message: "agenda was cancelled".into(),
    });
    let config = ReportConfig {
        interval: Duration::from_secs(5),
        heartbeat: Duration::from_secs(60),
        final_deadline: Duration::from_secs(10),
        lease: None,
    };
    let target = Target { progress_id: "p".into(), agenda_id: "ag".into(), ..Target::default() };
    let reporter = Reporter::start(api.clone(), target, config);
    let mut refused = reporter.refused();
    tokio::time::timeout(Duration::from_secs(5), refused.wait_for(Option::is_some))
        .await
        .expect("the first report is refused")
        .unwrap();
    reporter.started("x");
    let flushed = tokio::time::timeout(Duration::from_millis(500), reporter.flush()).await;
    assert!(flushed.is_ok(), "the flush waited for a reporter that has ended");
    assert_eq!(api.reports().len(), 1, "{:#?}", api.calls());
}

#[tokio::test]
async fn a_failure_stops_unstarted_operations_and_fails_with_diagnostics() {
    let api = Arc::new(FakeApi::default());
    let ops = vec![
        op("a", json!({"fail": true}), json!({})),
        op("b", json!({"x": "@<a.out>"}), json!({})),
    ];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains('a')), "{outcome:?}");
    let reports = api.reports();
    let states = final_states(&reports);
    assert_eq!(states.get("a").unwrap(), "COMPLETE/failed");
    assert!(!states.contains_key("b"), "b never started: {states:?}");
    let last = reports.last().unwrap();
    assert_eq!(last["processingState"], "COMPLETE");
    assert_eq!(last["processingStateMessage"], "failed");
    let a = entries(&reports, "a");
    let failed = a.last().unwrap();
    assert_eq!(failed["diagnosticEvents"][0]["message"], "told to fail");
    assert_eq!(failed["diagnosticEvents"][0]["payload"], json!({"log": ["x"]}));
}

/// A report too large for the server (413) is sent again without the results it carried, their
/// operations failed for good (ops3am24: the whole report was lost, and the agenda waited out
/// its lease on every attempt).
#[tokio::test]
async fn a_report_too_large_for_the_server_goes_again_without_its_results() {
    let api = Arc::new(FakeApi::default());
    api.refuse_results.store(true, std::sync::atomic::Ordering::SeqCst);
    *api.recorded.lock().unwrap() = Some("failed".into());
    let (_stop, shutdown) = no_shutdown();
    let ops = vec![op("a", json!({"big": "x"}), json!({}))];
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let reports = api.reports();
    assert_eq!(final_states(&reports).get("a").unwrap(), "COMPLETE/failed");
    let a = entries(&reports, "a").last().cloned().unwrap();
    assert!(a["resultPayload"].is_null(), "{a}");
    assert_eq!(a["diagnosticEvents"][0]["statusCode"], "NOT_RETRYABLE", "{a}");
    assert!(a["diagnosticEvents"][0]["message"].as_str().unwrap().contains("was not kept"), "{a}");
    assert_eq!(reports.last().unwrap()["processingStateMessage"], "failed");
}

/// Results too large for the server together go one a report, none failed (review-s45b: a
/// small result beside a large one was failed with it).
#[tokio::test]
async fn results_too_large_together_go_one_a_report() {
    let api = Arc::new(FakeApi::default());
    api.refuse_two_results.store(true, std::sync::atomic::Ordering::SeqCst);
    let ops = vec![op("a", json!({"x": 1}), json!({})), op("b", json!({"y": 2}), json!({}))];
    // Reports gather for a while: both results would go in one.
    let mut slow = env(api.clone(), Duration::ZERO);
    slow.config.report.interval = Duration::from_secs(2);
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&slow, claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(api.refused_too_large.load(std::sync::atomic::Ordering::SeqCst), 1, "one refusal");
    let reports = api.reports();
    let states = final_states(&reports);
    assert_eq!(states.get("a").unwrap(), "COMPLETE/succeeded", "{reports:#?}");
    assert_eq!(states.get("b").unwrap(), "COMPLETE/succeeded", "{reports:#?}");
    assert_eq!(reports.last().unwrap()["processingStateMessage"], "succeeded");
}

/// A result too large for a worker to send fails its operation here, for good, and what
/// depends on it does not run (review-s45b: the reporter dropped it, the executor ran on).
#[tokio::test]
async fn a_result_too_large_to_send_fails_its_operation_at_once() {
    let api = Arc::new(FakeApi::default());
    let big = "x".repeat(pop_worker::execute::MAX_RESULT_BYTES);
    let ops = vec![
        op("a", json!({"blob": big}), json!({})),
        op("b", json!({"x": "@<a.out>"}), json!({})),
    ];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let reports = api.reports();
    let states = final_states(&reports);
    assert_eq!(states.get("a").unwrap(), "COMPLETE/failed");
    assert!(!states.contains_key("b"), "b never started: {states:?}");
    let a = entries(&reports, "a").last().cloned().unwrap();
    assert_eq!(a["diagnosticEvents"][0]["statusCode"], "NOT_RETRYABLE", "{a}");
    assert!(a["resultPayload"].is_null());
}

/// A reference its upstream's output does not hold fails the operation NOT_RETRYABLE: a retry
/// keeps that output, so it would fail the same (newcomer19: retried through every backoff).
#[tokio::test]
async fn a_reference_to_a_missing_output_is_not_retried() {
    let api = Arc::new(FakeApi::default());
    let ops = vec![
        op("a", json!({"x": 1}), json!({})),
        op("b", json!({"y": "@<a.out::/nope>"}), json!({})),
    ];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let reports = api.reports();
    assert_eq!(final_states(&reports).get("b").unwrap(), "COMPLETE/failed");
    let failed = entries(&reports, "b").last().cloned().unwrap();
    let diagnostic = &failed["diagnosticEvents"][0];
    assert!(diagnostic["message"].as_str().unwrap().contains("resolving the payload"), "{failed}");
    assert_eq!(diagnostic["statusCode"], "NOT_RETRYABLE", "{failed}");
}

#[tokio::test]
async fn progress_is_coalesced_and_transient_failures_are_retried() {
    let api = Arc::new(FakeApi::default());
    *api.report_errors.lock().unwrap() =
        vec![ApiError::Transient("down".into()), ApiError::Transient("still down".into())];
    let ops = vec![op("a", json!({"chatty": 500, "sleep_ms": 100}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let reports = api.reports();
    assert!(reports.len() < 20, "500 progress updates went out as {} reports", reports.len());
    assert_eq!(reports.last().unwrap()["processingStateMessage"], "succeeded");
    assert_eq!(final_states(&reports).get("a").unwrap(), "COMPLETE/succeeded");
}

/// A final report that completes the agenda is retried past the final deadline while the
/// lease still holds: a server back within the lease takes the finished work (ops3am53: a 65 s
/// outage lost three finished agendas, each held out its 5-minute lease and ran again as a new
/// attempt). A hand-back is not: the lease is the reclaimer's then anyway.
#[tokio::test]
async fn a_completing_final_report_is_retried_while_the_lease_holds() {
    let api = Arc::new(FakeApi::default());
    // ~3 s of backoff (0.1 + 0.2 + 0.4 + 0.8 + 1.6), ten times the final deadline below.
    *api.outcome_errors.lock().unwrap() =
        (0..5).map(|i| ApiError::Transient(format!("down {i}"))).collect();
    let mut env = env(api.clone(), Duration::ZERO);
    env.config.report.final_deadline = Duration::from_millis(300);
    let ops = vec![op("a", json!({}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env, claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let reports = api.reports();
    let finals = reports.iter().filter(|r| r["processingState"] == "COMPLETE").count();
    assert_eq!(finals, 6, "five refused, the sixth taken: {reports:#?}");

    // With no lease known, the final deadline alone bounds it.
    let api = Arc::new(FakeApi::default());
    *api.outcome_errors.lock().unwrap() =
        (0..5).map(|i| ApiError::Transient(format!("down {i}"))).collect();
    let mut env = self::env(api.clone(), Duration::ZERO);
    env.config.report.final_deadline = Duration::from_millis(300);
    let ops = vec![op("a", json!({}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let unleased = Claimed { lease: None, ..claimed(ops) };
    let outcome = execute(&env, unleased, None, shutdown).await;
    assert_ne!(outcome, Outcome::Succeeded);
    let finals = api.reports().iter().filter(|r| r["processingState"] == "COMPLETE").count();
    assert!(finals < 6, "{finals} final reports after the deadline");
}

#[tokio::test]
async fn a_refused_report_stops_the_execution() {
    let api = Arc::new(FakeApi::default());
    *api.report_errors.lock().unwrap() =
        vec![ApiError::Refused { code: "CONFLICT".into(), message: "lease lost".into() }];
    let ops = vec![op("a", json!({"sleep_ms": 5000}), json!({}))];
    let started = std::time::Instant::now();
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Refused(ref m) if m.contains("lease lost")), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "the running handler was stopped");
}

/// A report refused because a user cancelled the agenda stops it as a cancel, not as a
/// refusal (the worker's summary counted a user's cancel as refused: newcomer3).
#[tokio::test]
async fn a_cancel_met_by_a_report_stops_the_execution_as_cancelled() {
    let api = Arc::new(FakeApi::default());
    *api.report_errors.lock().unwrap() = vec![ApiError::Refused {
        code: "CONFLICT".into(),
        // The domain's refusal of a report to a cancelled agenda (AgendaError::AgendaCancelled),
        // as the API answers it.
        message: "agenda \"ag\": agenda was cancelled".into(),
    }];
    let ops = vec![op("a", json!({"sleep_ms": 5000}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert_eq!(outcome, Outcome::Cancelled);
}

/// An outcome report that finds the agenda already complete is the same outcome only when
/// the server says the same (ops3am19: the reclaimer had failed the agenda while its handler
/// ran, and the worker logged and counted it succeeded).
#[tokio::test]
async fn an_outcome_the_server_already_decided_otherwise_is_not_taken_for_this_one() {
    for (server_says, want_succeeded) in [("failed", false), ("succeeded", true)] {
        let api = Arc::new(FakeApi::default());
        *api.outcome_errors.lock().unwrap() = vec![ApiError::Refused {
            code: "CONFLICT".into(),
            message: format!("agenda \"ag\": agenda is already COMPLETE/{server_says}"),
        }];
        let ops = vec![op("a", json!({}), json!({}))];
        let (_stop, shutdown) = no_shutdown();
        let outcome =
            execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
        assert_eq!(outcome == Outcome::Succeeded, want_succeeded, "{server_says}: {outcome:?}");
        if !want_succeeded {
            assert!(
                matches!(&outcome, Outcome::Refused(m) if m.contains("COMPLETE/failed")),
                "{outcome:?}"
            );
        }
    }
}

/// A handler stopped by the signal that stops the worker (a service manager signals the whole
/// group; the worker hears it a moment after the handler died, or before) is not a failed
/// operation: the agenda is handed back (ops3am7: it was recorded failed, an attempt used).
/// Stopped so while the worker goes on, it is a failure as ever.
#[tokio::test]
async fn a_handler_stopped_with_the_worker_hands_the_agenda_back() {
    let api = Arc::new(FakeApi::default());
    let ops = vec![op("long", json!({"interrupted": true, "sleep_ms": 100}), json!({}))];
    let (stop, shutdown) = watch::channel(false);
    let stopping = env(api.clone(), Duration::from_secs(5));
    let run = tokio::spawn(async move { execute(&stopping, claimed(ops), None, shutdown).await });
    // The handler dies first; the worker's own signal comes 300 ms later.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::HandedBack);
    let reports = api.reports();
    assert!(final_states(&reports).get("long").is_none_or(|s| !s.starts_with("COMPLETE")));
    let calls = api.calls();
    assert_eq!(calls.last().unwrap(), &Call::Release("ag".into(), "c".into(), "lease-1".into()));

    let ops = vec![op("long", json!({"interrupted": true}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
}

#[tokio::test]
async fn shutdown_hands_the_agenda_back_with_a_final_report() {
    let api = Arc::new(FakeApi::default());
    let ops =
        vec![op("quick", json!({}), json!({})), op("long", json!({"sleep_ms": 10_000}), json!({}))];
    let (stop, shutdown) = watch::channel(false);
    let env = env(api.clone(), Duration::from_millis(200));
    let run = tokio::spawn(async move { execute(&env, claimed(ops), None, shutdown).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), run).await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::HandedBack);
    let reports = api.reports();
    let last = reports.last().unwrap();
    assert_eq!(last["processingState"], "EXECUTING");
    assert_eq!(last["processingStateMessage"], "worker stopping; handing the agenda back");
    assert_eq!(final_states(&reports).get("quick").unwrap(), "COMPLETE/succeeded");
    // Then released under its lease, after the final report, so nobody waits for the expiry.
    let calls = api.calls();
    assert_eq!(
        calls.last().unwrap(),
        &Call::Release("ag".into(), "c".into(), "lease-1".into()),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn every_report_names_the_customer_and_the_lease() {
    let api = Arc::new(FakeApi::default());
    let ops = vec![op("a", json!({}), json!({})), op("b", json!({"fail": true}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let outcome = execute(&env(api.clone(), Duration::ZERO), claimed(ops), None, shutdown).await;
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    let reports = api.reports();
    assert!(reports.len() >= 2, "{reports:#?}");
    for r in &reports {
        assert_eq!((&r["leaseId"], &r["customerId"]), (&json!("lease-1"), &json!("c")), "{r:#}");
    }
    // A failed agenda is not handed back: nothing is released.
    assert!(!api.calls().iter().any(|c| matches!(c, Call::Release(..))));
}

#[tokio::test]
async fn a_quiet_agenda_is_reported_within_a_third_of_a_short_lease() {
    let api = Arc::new(FakeApi::default());
    // The configured heartbeat is a minute; the lease lasts 600 ms, so the heartbeat is 200 ms.
    let ops = vec![op("quiet", json!({"sleep_ms": 1500}), json!({}))];
    let (_stop, shutdown) = no_shutdown();
    let claim = claimed_for(ops, Duration::from_millis(600));
    let outcome = execute(&env(api.clone(), Duration::ZERO), claim, None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let heartbeats = api
        .reports()
        .iter()
        .filter(|r| r["operationProgress"].as_array().is_some_and(Vec::is_empty))
        .count();
    assert!(heartbeats >= 2, "{heartbeats} reports without changes in 1.5 s: {:#?}", api.reports());
}
