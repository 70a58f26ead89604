//! Progress reporting for one agenda: the executor records changes here without waiting, and
//! one task sends them to the server, coalesced — every change goes out within `interval` of
//! being made, only the latest state of each operation is sent, a quiet agenda still renews
//! its lease every `heartbeat`, failed sends are retried with capped exponential backoff, and
//! the final report is sent (bounded by `final_deadline`) before [`Reporter::finish`] returns.
//!
//! Every report names the agenda's customer and the lease `getAgenda` answered (`leaseId`), so
//! the server refuses it once the agenda was reclaimed and claimed again, even by another
//! executor sharing this worker's token. The heartbeat is sized from that lease
//! ([`heartbeat_for`]): a third of its length at most, so a quiet agenda is renewed about three
//! times per lease whatever the server's `--lease` is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use pop_domain::model::{DiagnosticEvent, ProcessingState, message};

use pop_domain::model::Timestamp;

use crate::api::{ApiError, Lease, WorkApi};
use crate::handler::Progress;

/// Records progress of the named operation (see [`Reporter::progress_fn`]).
pub type ProgressFn = Arc<dyn Fn(&str, Progress) + Send + Sync>;

/// The agenda's message while its operations run.
pub const RUNNING_MESSAGE: &str = "Running Operations";

/// First pause after a failed send; doubled per failure up to [`MAX_RETRY_BACKOFF`].
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts to send a report.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// How reports are paced.
#[derive(Debug, Clone, Copy)]
pub struct ReportConfig {
    /// A change is sent at most this long after it was made (changes within it are merged).
    pub interval: Duration,
    /// An agenda with no change is still reported this often, renewing its lease.
    pub heartbeat: Duration,
    /// How long the final report is retried before it is given up (logged).
    pub final_deadline: Duration,
    /// How long the lease lasts after each report the server takes (the claim's length):
    /// a final report that completes the agenda is retried past `final_deadline` while the
    /// lease still holds, so a server back within it takes the finished work (ops3am53: a
    /// 65 s outage lost three finished agendas, each held out its lease and ran again as a
    /// new attempt). `None`: `final_deadline` alone.
    pub lease: Option<Duration>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(30),
            final_deadline: Duration::from_secs(60),
            lease: None,
        }
    }
}

/// Shortest heartbeat the worker uses, however short the lease.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

/// Reports per lease length a quiet agenda gets at least (one may be lost or slow).
pub const RENEWALS_PER_LEASE: u32 = 3;

/// The heartbeat for an agenda held under `lease` (read at `now`, this machine's clock), and a
/// warning when no heartbeat is safe: the configured heartbeat, shortened to a third of the
/// lease's remaining length. Unsafe are: no lease answered (a server that does not say; the
/// configured heartbeat is kept), a lease already over by this clock (clocks apart by more than
/// the lease), and a lease shorter than three [`MIN_HEARTBEAT`]s.
pub fn heartbeat_for(
    configured: Duration,
    lease: Option<&Lease>,
    now: Timestamp,
) -> (Duration, Option<String>) {
    let configured = configured.max(MIN_HEARTBEAT);
    let Some(lease) = lease else {
        return (
            configured,
            Some(format!(
                "the server answered no lease with the claim, so the heartbeat cannot be sized \
                 from it: quiet agendas renew their lease every {configured:?} (--heartbeat-ms), \
                 and the server's --lease must be {RENEWALS_PER_LEASE}x that or more, or they \
                 are reclaimed and run twice"
            )),
        );
    };
    let Some(left) = lease.left.or_else(|| (lease.expires - now).to_std().ok()) else {
        return (
            MIN_HEARTBEAT,
            Some(format!(
                "the lease {} expires at {} by the server's clock, already past by this \
                 machine's ({now}): the two clocks differ by more than the lease; renewing every \
                 {MIN_HEARTBEAT:?}",
                lease.id, lease.expires
            )),
        );
    };
    // The server said how long the lease has: this machine's clock does not size the heartbeat,
    // but one far off is said (its own times, a report's completedTime, are off as much).
    let skew = lease.left.and_then(|left| {
        let by_this_clock = (lease.expires - now).num_milliseconds();
        let apart = by_this_clock - i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
        (apart.abs() > CLOCK_SKEW_WARNING_MS).then(|| {
            format!(
                "this machine's clock is about {} s {} the server's (the lease {} has {left:?} \
                 left by the server's clock): the heartbeat is sized from the server's; set \
                 whichever clock is wrong right (the times this worker's reports carry are its \
                 own; a server whose clock stepped back runs on from its log's last commit time)",
                apart.abs() / 1000,
                if apart < 0 { "ahead of" } else { "behind" },
                lease.id
            )
        })
    });
    let third = left / RENEWALS_PER_LEASE;
    if third < MIN_HEARTBEAT {
        return (
            MIN_HEARTBEAT,
            Some(format!(
                "the server's lease lasts {left:?}, too short to renew {RENEWALS_PER_LEASE} \
                 times with a heartbeat of at least {MIN_HEARTBEAT:?}: raise the server's --lease"
            )),
        );
    }
    (configured.min(third), skew)
}

/// How far this machine's clock may be from the server's before the worker says so.
const CLOCK_SKEW_WARNING_MS: i64 = 2_000;

/// Which agenda a [`Reporter`] reports for, and under which lease.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The AgendaProgress id (see [`crate::api::Claimed::progress_id`]).
    pub progress_id: String,
    pub agenda_id: String,
    pub customer_id: String,
    /// The lease id `getAgenda` answered, sent as the report's `leaseId`.
    pub lease_id: Option<String>,
}

/// The latest known state of one operation, as POP's OperationProgress JSON.
#[derive(Debug, Clone, Default)]
struct OpRecord {
    state: ProcessingState,
    message: Option<String>,
    percent: Option<f64>,
    result: Value,
    diagnostics: Vec<DiagnosticEvent>,
}

#[derive(Debug, Default)]
struct Pending {
    ops: BTreeMap<String, OpRecord>,
    dirty: BTreeSet<String>,
    diagnostics: Vec<DiagnosticEvent>,
    /// The agenda's own state and message for the next report.
    agenda: Option<(ProcessingState, String)>,
    final_requested: bool,
    /// Reports carry one result each: a report with several was too large for the server
    /// (review-s45b: failing every result of it failed small ones beside the large one).
    one_result: bool,
    /// [`Reporter::flush`] calls waiting for what was pending to reach the server.
    flushes: Vec<oneshot::Sender<()>>,
    /// A report is being sent (taken from here, not yet answered).
    in_flight: bool,
    /// The reporting task has ended (final report sent, refused, or given up): nothing more
    /// will be sent, so a flush answers at once.
    closed: bool,
}

impl Pending {
    /// Whether the next report should go out without waiting to gather more.
    fn urgent(&self) -> bool {
        self.final_requested || !self.flushes.is_empty()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

/// Records one agenda's progress and sends it; see the module docs.
pub struct Reporter {
    shared: Arc<Shared>,
    task: JoinHandle<Result<Option<String>, ApiError>>,
    refused: watch::Receiver<Option<ApiError>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// Starts reporting for `progress_id`; the first report (EXECUTING) goes out at once, so
    /// the agenda leaves `scheduled` and its lease is renewed.
    pub fn start(api: Arc<dyn WorkApi>, target: Target, config: ReportConfig) -> Reporter {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                agenda: Some((ProcessingState::Executing, RUNNING_MESSAGE.to_string())),
                ..Pending::default()
            }),
            notify: Notify::new(),
        });
        let (refused_tx, refused) = watch::channel(None);
        // In the agenda's span and trace context: its reports join the agenda's trace.
        let reporting = run(api, shared.clone(), target, config, refused_tx).in_current_span();
        let task = tokio::spawn(crate::trace::scope(crate::trace::current(), reporting));
        Reporter { shared, task, refused }
    }

    fn update(&self, urgent: bool, f: impl FnOnce(&mut Pending)) {
        {
            let mut pending = lock(&self.shared.pending);
            f(&mut pending);
            if urgent {
                pending.final_requested = true;
            }
        }
        self.shared.notify.notify_one();
    }

    fn op(&self, name: &str, f: impl FnOnce(&mut OpRecord)) {
        self.update(false, |p| {
            f(p.ops.entry(name.to_string()).or_default());
            p.dirty.insert(name.to_string());
        });
    }

    /// The operation started.
    pub fn started(&self, name: &str) {
        self.op(name, |r| {
            r.state = ProcessingState::Executing;
            r.percent = Some(0.0);
        });
    }

    /// A running operation's progress.
    pub fn progress(&self, name: &str, percent: Option<f64>, text: Option<String>) {
        self.progress_fn()(name, Progress { percent, message: text });
    }

    pub fn succeeded(&self, name: &str, output: Value) {
        self.op(name, |r| {
            r.state = ProcessingState::Complete;
            r.message = Some(message::SUCCEEDED.to_string());
            r.percent = Some(100.0);
            r.result = output;
        });
    }

    pub fn failed(&self, name: &str, diagnostic: DiagnosticEvent) {
        self.op(name, |r| {
            r.state = ProcessingState::Complete;
            r.message = Some(message::FAILED.to_string());
            r.diagnostics.push(diagnostic);
        });
    }

    /// [`Reporter::progress`] as a cloneable function, for handler tasks.
    pub fn progress_fn(&self) -> ProgressFn {
        let shared = self.shared.clone();
        Arc::new(move |name: &str, Progress { percent, message: text }: Progress| {
            {
                let mut p = lock(&shared.pending);
                let r = p.ops.entry(name.to_string()).or_default();
                if r.state == ProcessingState::Complete {
                    return;
                }
                r.state = ProcessingState::Executing;
                if percent.is_some() {
                    r.percent = percent;
                }
                if text.is_some() {
                    r.message = text;
                }
                p.dirty.insert(name.to_string());
            }
            shared.notify.notify_one();
        })
    }

    /// A diagnostic of the agenda itself.
    pub fn diagnostic(&self, diagnostic: DiagnosticEvent) {
        self.update(false, |p| p.diagnostics.push(diagnostic));
    }

    /// Set when the server refused a report for good (lease lost, agenda cancelled or
    /// complete): the executor should stop.
    pub fn refused(&self) -> watch::Receiver<Option<ApiError>> {
        self.refused.clone()
    }

    /// Sends what is recorded at once, without waiting to gather more, and resolves once the
    /// server has it (at once when nothing is pending; dropped when the server refuses it).
    /// The executor calls it before expanding an agenda, so that the history shows the
    /// operations that fed a generator succeed before the operations it generated appear.
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            let idle =
                !pending.in_flight && pending.dirty.is_empty() && pending.diagnostics.is_empty();
            if pending.closed || idle {
                let _ = tx.send(());
                return rx;
            }
            pending.flushes.push(tx);
        }
        self.shared.notify.notify_one();
        rx
    }

    /// Sends everything recorded plus the agenda's final state (`COMPLETE` with `succeeded` or
    /// `failed`, or an EXECUTING message when the agenda is handed back unfinished) and waits
    /// until the server has it, the final deadline passes, or the server refuses.
    /// Sends the final report; answers the agenda's `processingStateMessage` as the server
    /// recorded it, when it said (a COMPLETE report of "succeeded" is recorded failed when an
    /// operation's result was over the server's payload limit).
    pub async fn finish(
        self,
        state: ProcessingState,
        text: &str,
    ) -> Result<Option<String>, ApiError> {
        let text = text.to_string();
        self.update(true, move |p| p.agenda = Some((state, text)));
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ApiError::Transient(format!("the reporter task ended: {e}"))),
        }
    }
}

impl Pending {
    /// Whether operation `name` has a result waiting to be reported.
    fn holds_result(&self, name: &str) -> bool {
        self.ops.get(name).is_some_and(|r| !r.result.is_null())
    }

    /// Puts back what a report that did not get through carried, for the next one: its
    /// operations, its diagnostics (before any newer), and the flushes waiting on it.
    fn put_back(
        &mut self,
        dirty: BTreeSet<String>,
        diagnostics: Vec<DiagnosticEvent>,
        flushes: Vec<oneshot::Sender<()>>,
    ) {
        self.dirty.extend(dirty);
        let newer = std::mem::take(&mut self.diagnostics);
        self.diagnostics = diagnostics;
        self.diagnostics.extend(newer);
        self.flushes.extend(flushes);
    }
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding this lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Builds the next report from what is pending (taking the dirty entries); `None` when there
/// is nothing to say and no heartbeat is due.
fn take_report(
    pending: &mut Pending,
    target: &Target,
) -> (Value, BTreeSet<String>, Vec<DiagnosticEvent>, bool) {
    let mut dirty = std::mem::take(&mut pending.dirty);
    // One result a report when they came too large together: the others wait for the next,
    // and this one is not the final (the agenda stays EXECUTING until they are all sent).
    if pending.one_result {
        let later: BTreeSet<String> =
            dirty.iter().filter(|n| pending.holds_result(n)).skip(1).cloned().collect();
        dirty.retain(|n| !later.contains(n));
        pending.dirty.extend(later);
    }
    let deferred = !pending.dirty.is_empty();
    let operations: Vec<Value> = dirty
        .iter()
        .filter_map(|name| pending.ops.get(name).map(|r| (name, r)))
        .map(|(name, r)| {
            let mut o = json!({"operation": name, "processingState": r.state.as_str()});
            if let Some(m) = &r.message {
                o["processingStateMessage"] = json!(m);
            }
            if let Some(p) = r.percent {
                o["percentComplete"] = json!(p);
            }
            if !r.result.is_null() {
                o["resultPayload"] = r.result.clone();
            }
            if !r.diagnostics.is_empty() {
                o["diagnosticEvents"] = json!(r.diagnostics);
            }
            o
        })
        .collect();
    let diagnostics = std::mem::take(&mut pending.diagnostics);
    let is_final = pending.final_requested && !deferred;
    let running = (ProcessingState::Executing, RUNNING_MESSAGE.to_string());
    let (state, text) = match &pending.agenda {
        Some(agenda) if !deferred => agenda.clone(),
        _ => running,
    };
    let mut report = json!({
        "id": target.progress_id,
        "agendaId": target.agenda_id,
        "processingState": state.as_str(),
        "processingStateMessage": text,
        "operationProgress": operations,
    });
    if !diagnostics.is_empty() {
        report["diagnosticEvents"] = json!(diagnostics);
    }
    if !target.customer_id.is_empty() {
        report["customerId"] = json!(target.customer_id);
    }
    if let Some(lease) = &target.lease_id {
        report["leaseId"] = json!(lease);
    }
    (report, dirty, diagnostics, is_final)
}

/// A hint for a refusal that says the lease is gone: the heartbeat is sized from the lease
/// ([`heartbeat_for`]), so this means a report did not get through in time (a worker paused,
/// a network cut), or a server that answers no lease has a `--lease` too short for it.
pub fn lease_hint(error: &ApiError, heartbeat: Duration) -> Option<String> {
    match error {
        ApiError::Refused { code, message } if code == "CONFLICT" && message.contains("lease") => {
            Some(format!(
                "the lease ran out or was taken over: another executor (or this one) may run \
                 this agenda now. Either a user cancelled or reran it meanwhile (`pop events` \
                 shows it), or no report reached the server for a whole lease, though quiet \
                 agendas were reported every {heartbeat:?} (a paused worker, a network cut, or \
                 a --lease under 3x that)"
            ))
        }
        _ => None,
    }
}

async fn run(
    api: Arc<dyn WorkApi>,
    shared: Arc<Shared>,
    target: Target,
    config: ReportConfig,
    refused: watch::Sender<Option<ApiError>>,
) -> Result<Option<String>, ApiError> {
    let ended = send_reports(api, shared.clone(), target, config, refused).await;
    // Nothing more goes out: flushes waiting now, or asked for later, answer at once.
    let mut pending = lock(&shared.pending);
    pending.closed = true;
    pending.flushes.clear();
    ended
}

async fn send_reports(
    api: Arc<dyn WorkApi>,
    shared: Arc<Shared>,
    target: Target,
    config: ReportConfig,
    refused: watch::Sender<Option<ApiError>>,
) -> Result<Option<String>, ApiError> {
    let mut backoff = FIRST_RETRY_BACKOFF;
    let mut final_started: Option<tokio::time::Instant> = None;
    // When the server last took a report (renewing the lease), the claim at first.
    let mut taken_at = tokio::time::Instant::now();
    // The first report goes out at once.
    let mut due_now = true;
    loop {
        if !due_now {
            let urgent = lock(&shared.pending).urgent();
            if !urgent {
                // Wait for a change or the heartbeat, then let changes gather for `interval`
                // unless the final report or a flush was asked for meanwhile.
                let changed =
                    tokio::time::timeout(config.heartbeat, shared.notify.notified()).await.is_ok();
                if changed && !lock(&shared.pending).urgent() {
                    let _ = tokio::time::timeout(config.interval, async {
                        loop {
                            shared.notify.notified().await;
                            if lock(&shared.pending).urgent() {
                                break;
                            }
                        }
                    })
                    .await;
                }
            }
        }
        // (Every answer below says whether the next report is due at once.)
        let (report, dirty, diagnostics, is_final, completes, flushes) = {
            let mut pending = lock(&shared.pending);
            let flushes = std::mem::take(&mut pending.flushes);
            let (report, dirty, diagnostics, is_final) = take_report(&mut pending, &target);
            pending.in_flight = true;
            let completes = matches!(pending.agenda, Some((ProcessingState::Complete, _)));
            (report, dirty, diagnostics, is_final, completes, flushes)
        };
        let agenda_id = &target.agenda_id;
        if is_final && final_started.is_none() {
            final_started = Some(tokio::time::Instant::now());
        }
        let sent = api.update_progress_recorded(&report).await;
        lock(&shared.pending).in_flight = false;
        match sent {
            Ok(recorded) => {
                backoff = FIRST_RETRY_BACKOFF;
                taken_at = tokio::time::Instant::now();
                for flushed in flushes {
                    let _ = flushed.send(());
                }
                // Flushes asked for while this report was on its way wanted it through; with
                // nothing new pending they are answered by it too.
                let mut pending = lock(&shared.pending);
                if pending.dirty.is_empty() && pending.diagnostics.is_empty() {
                    for flushed in pending.flushes.drain(..) {
                        let _ = flushed.send(());
                    }
                }
                // Results held back (one a report) go next, at once; progress alone waits as
                // usual (review-s45c: it went back to back).
                due_now =
                    pending.one_result && pending.dirty.iter().any(|n| pending.holds_result(n));
                drop(pending);
                if is_final {
                    return Ok(recorded);
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(agenda = %agenda_id, error = %e, retry_in = ?backoff, "progress report failed; retrying");
                // The flushes still wait: they are answered by the send that gets through.
                lock(&shared.pending).put_back(dirty, diagnostics, flushes);
                // A final report that completes the agenda is worth its lease: the work is done.
                let lease_holds =
                    completes && config.lease.is_some_and(|lease| taken_at.elapsed() < lease);
                if final_started.is_some_and(|t| t.elapsed() >= config.final_deadline)
                    && !lease_holds
                {
                    tracing::error!(
                        agenda = %agenda_id,
                        error = %e,
                        "giving up on the final report: the server did not take it within {:?}{}; \
                         once the agenda's lease runs out the server's reclaimer takes it back \
                         and it runs again (an attempt)",
                        config.final_deadline,
                        if completes && config.lease.is_some() { " nor its lease" } else { "" }
                    );
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                due_now = true;
            }
            // Too large for the server to take in one request (ops3am24: a result of 2-8 MiB
            // lost the whole report, the agenda waited out its lease, each attempt the same).
            // Several results: sent again one a report. One: it is not kept, its operation
            // failed for good, and the report goes again without it (the executor keeps
            // results small enough for the server's default limit: this is for a smaller one).
            Err(e) if e.code() == Some(crate::api::TOO_LARGE) => {
                // The results of the report refused, not of the operations as they are now
                // (one may have finished meanwhile: review-s45c).
                let with_result: Vec<String> = report["operationProgress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|o| !o["resultPayload"].is_null())
                    .filter_map(|o| o["operation"].as_str().map(str::to_owned))
                    .collect();
                let mut pending = lock(&shared.pending);
                if with_result.len() > 1 && !pending.one_result {
                    pending.one_result = true;
                    tracing::warn!(
                        agenda = %agenda_id,
                        results = with_result.len(),
                        error = %e,
                        "a report too large for the server: its results go one a report"
                    );
                } else if let [name] = with_result.as_slice()
                    && let Some(r) = pending.ops.get_mut(name)
                {
                    let bytes = pop_domain::validate::json_bytes(&r.result);
                    r.result = Value::Null;
                    r.state = ProcessingState::Complete;
                    r.message = Some(message::FAILED.to_string());
                    r.diagnostics.push(DiagnosticEvent {
                        message: format!(
                            "the operation's result takes {bytes} bytes as JSON, more than the \
                             server takes in one request ({e}): the result was not kept"
                        ),
                        status_code: Some(pop_domain::model::status_code::NOT_RETRYABLE.into()),
                        time: Some(chrono::Utc::now()),
                        ..DiagnosticEvent::default()
                    });
                    tracing::warn!(
                        agenda = %agenda_id,
                        operation = %name,
                        error = %e,
                        "a result too large for the server: not kept, its operation failed"
                    );
                    // An agenda said succeeded now has a failed operation.
                    if let Some((ProcessingState::Complete, said)) = &mut pending.agenda
                        && said == message::SUCCEEDED
                    {
                        *said = message::FAILED.to_string();
                    }
                } else {
                    drop(pending);
                    tracing::warn!(agenda = %agenda_id, error = %e, "progress report refused");
                    let _ = refused.send(Some(e.clone()));
                    return Err(e);
                }
                pending.put_back(dirty, diagnostics, flushes);
                drop(pending);
                due_now = true;
            }
            Err(e) => {
                // Lease lost, agenda cancelled or already complete (the server completes an
                // agenda itself once every operation succeeded or one failed and nothing
                // runs), or a report the server rejects: sending it again cannot help.
                if is_final && e.code() == Some("CONFLICT") {
                    tracing::debug!(agenda = %agenda_id, error = %e, "final report refused");
                } else if e.is_cancelled() {
                    // A user's cancel is no fault of the worker's: said as what it is.
                    tracing::info!(agenda = %agenda_id, "agenda cancelled; stopping its operations");
                } else if let Some(hint) = lease_hint(&e, config.heartbeat) {
                    tracing::warn!(agenda = %agenda_id, error = %e, hint, "progress report refused");
                } else {
                    tracing::warn!(agenda = %agenda_id, error = %e, "progress report refused");
                }
                let _ = refused.send(Some(e.clone()));
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_refusal_names_the_heartbeat_and_other_errors_get_no_hint() {
        let lost = ApiError::Refused {
            code: "CONFLICT".into(),
            message: "holder \"w\" no longer holds the agenda's lease (the agenda is queued/x)"
                .into(),
        };
        let hint = lease_hint(&lost, Duration::from_secs(30)).expect("a hint");
        assert!(hint.contains("30s") && hint.contains("--lease"), "{hint}");
        // A user's cancel and rerun ends a lease too (newcomer5: the hint named only a pause
        // or a network cut).
        assert!(hint.contains("cancelled or reran"), "{hint}");
        let cancelled =
            ApiError::Refused { code: "CONFLICT".into(), message: "agenda was cancelled".into() };
        assert_eq!(lease_hint(&cancelled, Duration::from_secs(30)), None);
        let down = ApiError::Transient("lease server down".into());
        assert_eq!(lease_hint(&down, Duration::from_secs(30)), None);
    }

    fn lease(now: Timestamp, ms: i64) -> Lease {
        let by = Duration::from_millis(ms.unsigned_abs());
        Lease { id: "l1".into(), expires: if ms >= 0 { now + by } else { now - by }, left: None }
    }

    #[test]
    fn the_heartbeat_is_a_third_of_the_lease_at_most_and_only_unsafe_settings_warn() {
        let now = Timestamp::from(std::time::SystemTime::now());
        let thirty = Duration::from_secs(30);
        // The default lease (5 min): the configured 30 s heartbeat fits, no warning.
        assert_eq!(heartbeat_for(thirty, Some(&lease(now, 300_000)), now), (thirty, None));
        // A machine whose clock is 600 s ahead of the server's: sized from the lease's length
        // as the server answered it, not renewed every 100 ms (ops3am10), and said once.
        let ahead = Lease { left: Some(Duration::from_secs(300)), ..lease(now, -300_000) };
        let (every, warning) = heartbeat_for(thirty, Some(&ahead), now);
        assert_eq!(every, thirty);
        assert!(warning.is_some_and(|w| w.contains("600 s ahead of the server's")));
        // A 2 s lease: every 666 ms, still no warning (the settings are safe).
        let (every, warning) = heartbeat_for(thirty, Some(&lease(now, 2_000)), now);
        assert_eq!((every.as_millis(), warning), (666, None));
        // Too short to renew three times; already over by this clock; no lease at all.
        let (every, warning) = heartbeat_for(thirty, Some(&lease(now, 200)), now);
        assert_eq!(every, MIN_HEARTBEAT);
        assert!(warning.unwrap().contains("raise the server's --lease"));
        let (every, warning) = heartbeat_for(thirty, Some(&lease(now, -5)), now);
        assert_eq!(every, MIN_HEARTBEAT);
        assert!(warning.unwrap().contains("clocks differ"));
        let (every, warning) = heartbeat_for(thirty, None, now);
        assert_eq!(every, thirty);
        assert!(warning.unwrap().contains("--heartbeat-ms"));
    }
}
