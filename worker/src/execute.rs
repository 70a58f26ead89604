//! The executor: runs one claimed agenda to its end. It feeds the pure [`Plan`] with handler
//! outcomes, starts what the plan says is ready (up to `max_parallel`, and within the
//! insight's operation limit), expands the agenda through the API when a generator succeeds,
//! and records every change with the [`Reporter`]. An agenda handed back on shutdown is
//! released under its lease (`releaseAgenda`), so the next worker can take it at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use pop_domain::Params;
use pop_domain::model::{
    DiagnosticEvent, Operation, ProcessingState, Timestamp, message, status_code,
};
use pop_domain::params::keys;
use pop_domain::references::normalize_pointer;

use crate::api::{ApiError, Claimed, WorkApi};
use crate::handler::{Failure, OperationContext, Progress, ProgressSink, Registry};
use crate::plan::{Plan, Status, deadlock_message};
use crate::report::{ReportConfig, Reporter, Target, heartbeat_for};

/// How often an expansion is tried when the server cannot be reached.
const EXPAND_ATTEMPTS: u32 = 5;

/// How long after a handler was stopped by a signal ([`Failure::interrupted`]) the worker's own
/// shutdown may still begin for the handler to count as stopped with it (one signal to a
/// whole process group or service reaches the handler and the worker at once, in either
/// order).
const SIGNAL_SPREAD: Duration = Duration::from_secs(1);
/// How long an expansion waits for the pending progress report to reach the server first.
const FLUSH_BEFORE_EXPAND: Duration = Duration::from_secs(2);

/// How executions behave.
#[derive(Debug, Clone, Copy)]
pub struct ExecConfig {
    /// Most operations of one agenda running at once.
    pub max_parallel: usize,
    pub report: ReportConfig,
    /// On shutdown, how long running operations may still finish before they are stopped and
    /// the agenda is handed back.
    pub shutdown_grace: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            max_parallel: 8,
            report: ReportConfig::default(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// What an execution needs besides the agenda.
#[derive(Clone)]
pub struct ExecEnv {
    pub api: Arc<dyn WorkApi>,
    pub registry: Arc<Registry>,
    pub config: ExecConfig,
}

impl std::fmt::Debug for ExecEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecEnv").field("config", &self.config).finish_non_exhaustive()
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// The agenda failed; the diagnostic says why.
    Failed(String),
    /// The server refused our reports (lease lost, complete): work stopped.
    Refused(String),
    /// A user cancelled the agenda (the server said so when it refused a report or an
    /// expansion): work stopped, no fault of the worker's.
    Cancelled,
    /// Shutdown came before the agenda finished: what finished was reported, the rest is left
    /// to the reclaimer and the next worker (which resumes without re-running it).
    HandedBack,
}

/// A diagnostic of this worker's, with the time it was made (dash8: each attempt's equal
/// failure read the same, with no time to tell them apart).
fn diagnostic(message: impl Into<String>, payload: Value) -> DiagnosticEvent {
    DiagnosticEvent {
        message: message.into(),
        payload,
        time: Some(chrono::Utc::now()),
        ..DiagnosticEvent::default()
    }
}

/// The diagnostic of a failed operation, logged (one line: why it failed is in the worker's
/// log too) and marked `NOT_RETRYABLE` when the failure is deterministic.
fn failed(agenda: &str, operation: &str, f: Failure) -> DiagnosticEvent {
    tracing::warn!(
        agenda,
        operation,
        not_retryable = f.not_retryable,
        "operation failed: {}",
        f.message
    );
    diagnostic_of(f)
}

/// The diagnostic of a failed operation, marked `NOT_RETRYABLE` when the failure is
/// deterministic.
fn diagnostic_of(f: Failure) -> DiagnosticEvent {
    DiagnosticEvent {
        status_code: f.not_retryable.then(|| status_code::NOT_RETRYABLE.to_string()),
        ..diagnostic(f.message, f.payload)
    }
}

/// The largest result (compact JSON bytes) a worker sends: twice what a server keeps by
/// default (`--max-payload-bytes`, 512 KiB), far within its request limit (8 MiB).
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// Runs `claimed` to its end. `shutdown` turning true stops starting operations; running ones
/// get `shutdown_grace` to finish. `insight_slots` bounds the operations running at once for
/// the agenda's insight across every agenda of this worker.
pub async fn execute(
    env: &ExecEnv,
    claimed: Claimed,
    insight_slots: Option<Arc<Semaphore>>,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let progress_id = claimed.progress_id();
    let lease = claimed.lease;
    let agenda = claimed.agenda;
    let mut plan = Plan::new(&agenda.id, &agenda.operations, claimed.progress.as_ref());
    // The puller warns (once) about a lease no heartbeat fits; here it is only sized.
    let now = Timestamp::from(std::time::SystemTime::now());
    let (heartbeat, _) = heartbeat_for(env.config.report.heartbeat, lease.as_ref(), now);
    let target = Target {
        progress_id,
        agenda_id: agenda.id.clone(),
        customer_id: agenda.customer_id.clone(),
        lease_id: lease.as_ref().map(|l| l.id.clone()),
    };
    let reporter = Reporter::start(
        env.api.clone(),
        target.clone(),
        ReportConfig {
            heartbeat,
            lease: lease.as_ref().and_then(|l| {
                l.left.or_else(|| {
                    (l.expires - Timestamp::from(std::time::SystemTime::now())).to_std().ok()
                })
            }),
            ..env.config.report
        },
    );
    let end = |reporter: Reporter, status: Status, shutting_down: bool| {
        finish(env.api.as_ref(), &target, reporter, status, shutting_down)
    };
    let mut refused = reporter.refused();
    let insight = agenda.agenda_insight.clone().unwrap_or_default();
    let mut running: JoinSet<(String, Result<Value, Failure>)> = JoinSet::new();
    let mut stopping_since: Option<tokio::time::Instant> = None;

    loop {
        if let Some(e) = refused.borrow().clone() {
            running.abort_all();
            return refusal(&e);
        }
        let shutting_down = *shutdown.borrow();
        if shutting_down && stopping_since.is_none() {
            stopping_since = Some(tokio::time::Instant::now());
        }
        // Start what is ready (nothing once a failure or deadlock is known, or on shutdown).
        if !shutting_down && !plan.is_stopping() {
            let free = env.config.max_parallel.saturating_sub(plan.running());
            for name in plan.ready(free) {
                let Some(op) = plan.operation(&name).cloned() else { continue };
                plan.start(&name);
                let payload = match plan.resolved_payload(&name) {
                    Ok(p) => p,
                    Err(e) => {
                        plan.fail(&name);
                        // The outputs it reads are kept by a retry (which continues from
                        // what succeeded), so the same reference fails again: deterministic
                        // (newcomer19: a missing field was retried through every backoff).
                        let f = Failure::new(format!("resolving the payload: {e}")).not_retryable();
                        reporter.failed(&name, failed(&agenda.id, &name, f));
                        continue;
                    }
                };
                let Some(handler) = env.registry.get(&op.op_type) else {
                    plan.fail(&name);
                    let types: Vec<&str> = env.registry.types().collect();
                    let f = Failure::new(format!(
                        "no handler for operation type {:?} (this worker runs {})",
                        op.op_type,
                        types.join(", ")
                    ))
                    .not_retryable();
                    reporter.failed(&name, failed(&agenda.id, &name, f));
                    continue;
                };
                let ctx = OperationContext {
                    agenda_id: agenda.id.clone(),
                    customer_id: agenda.customer_id.clone(),
                    insight_id: insight.insight_id.clone(),
                    resource_pool_id: insight.resource_pool_id.clone(),
                    operation_name: name.clone(),
                    operation_type: op.op_type.clone(),
                    payload,
                    params: op.params.clone(),
                };
                let sink: ProgressSink = {
                    let shared = reporter.progress_fn();
                    let name = name.clone();
                    Arc::new(move |p: Progress| shared(&name, p))
                };
                let slots = insight_slots.clone();
                let span =
                    tracing::info_span!("operation", operation = %name, r#type = %op.op_type);
                let work = crate::trace::current();
                let run = async move {
                    // Closed only if the semaphore is dropped, which the puller never does.
                    let _permit = match slots {
                        Some(s) => s.acquire_owned().await.ok(),
                        None => None,
                    };
                    // EXECUTING only once it holds a slot of its insight.
                    sink(Progress { percent: Some(0.0), message: None });
                    let result = handler.run(ctx, sink).await;
                    (name, result)
                };
                running.spawn(crate::trace::scope(work, run.instrument(span)));
            }
        }

        let status = plan.status();
        if plan.running() == 0 && (status.is_finished() || shutting_down) {
            return end(reporter, status, shutting_down).await;
        }

        let grace_left = stopping_since
            .map(|t| env.config.shutdown_grace.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::MAX);
        tokio::select! {
            joined = running.join_next(), if plan.running() > 0 => {
                let Some(joined) = joined else { continue };
                let (name, result) = match joined {
                    Ok(r) => r,
                    Err(e) => {
                        // A handler panicked: the operation is unknown here, so stop.
                        tracing::error!(agenda = %agenda.id, error = %e, "a handler task failed");
                        running.abort_all();
                        reporter.diagnostic(diagnostic(format!("a handler crashed: {e}"), Value::Null));
                        return end(reporter, Status::Failed { failed: Vec::new() }, false).await;
                    }
                };
                let result = result.and_then(|output| {
                    // Too large to send, it would make every report of the agenda too large
                    // for the server (review-s45b: the operations after it ran, and the agenda
                    // waited out its lease): failed here, for good.
                    let bytes = pop_domain::validate::json_bytes(&output);
                    if bytes > MAX_RESULT_BYTES {
                        return Err(Failure::new(format!(
                            "the result takes {bytes} bytes as JSON, more than a worker sends \
                             ({MAX_RESULT_BYTES}: a server keeps a result of at most its \
                             --max-payload-bytes, 512 KiB by default): it was not kept"
                        ))
                        .not_retryable());
                    }
                    Ok(output)
                });
                match result {
                    Ok(output) => {
                        match expand_if_generator(env.api.as_ref(), &reporter, &mut plan, &agenda.customer_id, &name, &output).await {
                            Ok(()) => {
                                plan.succeed(&name, output.clone());
                                reporter.succeeded(&name, output);
                            }
                            Err(not_expanded) => {
                                plan.fail(&name);
                                let diagnostic = match not_expanded {
                                    NotExpanded::Cancelled(f) => diagnostic_of(f),
                                    NotExpanded::Failed(f) => failed(&agenda.id, &name, f),
                                };
                                reporter.failed(&name, diagnostic);
                            }
                        }
                    }
                    Err(f) => {
                        // Stopped by the signal that stops this worker too (a service
                        // manager signals the whole group; ours may come a moment later):
                        // not a failure of the operation, which the next worker runs.
                        let stopping = f.interrupted
                            && (*shutdown.borrow()
                                || tokio::time::timeout(SIGNAL_SPREAD, shutdown.wait_for(|s| *s))
                                    .await
                                    .is_ok_and(|r| r.is_ok()));
                        if stopping {
                            tracing::info!(agenda = %agenda.id, operation = %name, "the handler was stopped with the worker: handed back, not failed");
                            plan.abandon(&name);
                        } else {
                            plan.fail(&name);
                            reporter.failed(&name, failed(&agenda.id, &name, f));
                        }
                    }
                }
            }
            _ = refused.changed() => {}
            _ = shutdown.changed(), if !shutting_down => {}
            _ = tokio::time::sleep(grace_left), if stopping_since.is_some() => {
                tracing::warn!(agenda = %agenda.id, running = plan.running(), "shutdown grace over; stopping running operations");
                running.abort_all();
                while running.join_next().await.is_some() {}
                return end(reporter, plan.status(), true).await;
            }
        }
    }
}

async fn finish(
    api: &dyn WorkApi,
    target: &Target,
    reporter: Reporter,
    status: Status,
    shutting_down: bool,
) -> Outcome {
    let (state, text, outcome) = match &status {
        Status::Succeeded => (ProcessingState::Complete, message::SUCCEEDED, Outcome::Succeeded),
        Status::Failed { failed } => {
            let why = format!("operation(s) {} failed", failed.join(", "));
            (ProcessingState::Complete, message::FAILED, Outcome::Failed(why))
        }
        Status::Deadlocked { blocked } => {
            let why = deadlock_message(blocked);
            reporter.diagnostic(diagnostic(
                why.clone(),
                json!({"blocked": blocked.iter().map(|b| &b.operation).collect::<Vec<_>>()}),
            ));
            (ProcessingState::Complete, message::FAILED, Outcome::Failed(why))
        }
        Status::Working => {
            debug_assert!(shutting_down);
            // Said before the release: it is the last report, and it must not claim a
            // hand-back the release may not reach (newcomer17: killed between the two, the
            // agenda read "handed back" and stayed held for a whole lease).
            (
                ProcessingState::Executing,
                "worker stopping; handing the agenda back",
                Outcome::HandedBack,
            )
        }
    };
    match reporter.finish(state, text).await {
        Ok(_) if outcome == Outcome::HandedBack => {
            // What finished is reported; hand the rest back now rather than at lease expiry.
            // A refusal only means the lease is gone already: the reclaimer has it.
            if let Some(lease) = &target.lease_id {
                match api.release(&target.agenda_id, &target.customer_id, lease).await {
                    Ok(()) => tracing::info!(agenda = %target.agenda_id, "released"),
                    Err(e) => {
                        tracing::warn!(agenda = %target.agenda_id, error = %e, "release refused")
                    }
                }
            }
            outcome
        }
        // Taken, but recorded otherwise: said as the server has it (ops3am23: a result over
        // the server's --max-payload-bytes fails its operation, and the worker logged and
        // counted the agenda succeeded).
        Ok(Some(recorded))
            if state == ProcessingState::Complete && !recorded.eq_ignore_ascii_case(text) =>
        {
            let why = format!(
                "the server recorded the agenda {recorded}, not {text} (an operation's result \
                 over its --max-payload-bytes, say): `pop progress {}` says why",
                target.agenda_id
            );
            tracing::warn!(agenda = %target.agenda_id, "{why}");
            Outcome::Failed(why)
        }
        Ok(_) => outcome,
        // The server completes an agenda itself once its operations decide it, so a final
        // report can find it already complete with the same outcome — only the same one
        // (ops3am19: failed by the reclaimer while its handler ran, it was logged succeeded).
        Err(ApiError::Refused { code, message: m })
            if code == "CONFLICT"
                && state == ProcessingState::Complete
                && m.to_lowercase().contains(&format!("already complete/{text}")) =>
        {
            outcome
        }
        Err(e) => refusal(&e),
    }
}

/// What a refusal of the agenda's reports means for it: a user's cancel, or a refusal.
fn refusal(e: &crate::api::ApiError) -> Outcome {
    if e.is_cancelled() { Outcome::Cancelled } else { Outcome::Refused(e.to_string()) }
}

/// Why a generator's operations were not added to its agenda.
enum NotExpanded {
    /// A user cancelled the agenda meanwhile: logged at INFO where it was met, as when a report
    /// meets it (`report.rs`), not as the operation's failure.
    Cancelled(Failure),
    Failed(Failure),
}

impl From<Failure> for NotExpanded {
    fn from(f: Failure) -> Self {
        NotExpanded::Failed(f)
    }
}

/// When `name` is a generator (`params["agenda.operation.generator"]`), adds the operations
/// found at its `operationsJsonPointer` (each stamped `generatedOperationParent`) and the
/// params at `paramsJsonPointer` to the agenda through the API, then to the plan, so they run
/// in this execution. This happens before the generator is reported succeeded: the server
/// completes an agenda whose operations all succeeded, and it must not do so before the new
/// operations exist.
async fn expand_if_generator(
    api: &dyn WorkApi,
    reporter: &Reporter,
    plan: &mut Plan,
    customer_id: &str,
    name: &str,
    output: &Value,
) -> Result<(), NotExpanded> {
    let Some(spec) = plan.operation(name).and_then(|op| op.params.get(keys::GENERATOR)).cloned()
    else {
        return Ok(());
    };
    let at = |key: &str| -> Option<&Value> {
        let pointer = spec.get(key)?.as_str()?;
        match normalize_pointer(pointer) {
            Some(p) => output.pointer(&p),
            None => Some(output),
        }
    };
    let operations: Vec<Operation> = match at("operationsJsonPointer") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Failure::with_payload(
                format!("generator output: the operations are not a list of operations: {e}"),
                v.clone(),
            )
        })?,
    };
    let params: Params = match at("paramsJsonPointer") {
        None | Some(Value::Null) => Params::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Failure::with_payload(
                format!("generator output: the params are not an object: {e}"),
                v.clone(),
            )
        })?,
    };
    let new: Vec<Operation> = operations
        .into_iter()
        .filter(|op| !plan.contains(&op.name))
        .map(|mut op| {
            op.params.insert(keys::GENERATED_OPERATION_PARENT, name);
            op
        })
        .collect();
    if new.is_empty() && params.is_empty() {
        return Ok(());
    }
    // What the generator's inputs reported (their success, pending in the reporter) reaches the
    // server first, so the agenda's history does not show the generated operations before the
    // operations that fed the generator succeeded (a newcomer's audit of the tour's fanout read
    // so). Bounded: a server that does not answer the report does not hold the expansion.
    let _ = tokio::time::timeout(FLUSH_BEFORE_EXPAND, reporter.flush()).await;
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match api.expand(plan.agenda_id(), customer_id, &new, &params).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < EXPAND_ATTEMPTS => {
                tracing::warn!(error = %e, "expanding the agenda failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(e) => {
                let failure = Failure::with_payload(
                    format!("the server refused the generated operations: {e}"),
                    json!({"operations": new}),
                );
                if e.is_cancelled() {
                    tracing::info!(
                        agenda = plan.agenda_id(),
                        "agenda cancelled; stopping its operations"
                    );
                    return Err(NotExpanded::Cancelled(failure));
                }
                return Err(failure.into());
            }
        }
    }
    plan.add_operations(&new);
    Ok(())
}
