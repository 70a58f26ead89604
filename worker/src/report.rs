//! Progress reporting for one agenda: the executor records changes here without waiting, and
//! one task sends them to the server, coalesced — every change goes out within `interval` of
//! being made, only the latest state of each operation is sent, a quiet agenda still renews
//! its lease every `heartbeat`, failed sends are retried with capped exponential backoff, and
//! the final report is sent (bounded by `final_deadline`) before [`Reporter::finish`] returns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use pop_domain::model::{DiagnosticEvent, ProcessingState, message};

use crate::api::{ApiError, WorkApi};
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
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            interval: Duration::from_millis(250),
            heartbeat: Duration::from_secs(30),
            final_deadline: Duration::from_secs(60),
        }
    }
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
}

struct Shared {
    pending: Mutex<Pending>,
    notify: Notify,
}

/// Records one agenda's progress and sends it; see the module docs.
pub struct Reporter {
    shared: Arc<Shared>,
    task: JoinHandle<Result<(), ApiError>>,
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
    pub fn start(
        api: Arc<dyn WorkApi>,
        progress_id: String,
        agenda_id: String,
        config: ReportConfig,
    ) -> Reporter {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                agenda: Some((ProcessingState::Executing, RUNNING_MESSAGE.to_string())),
                ..Pending::default()
            }),
            notify: Notify::new(),
        });
        let (refused_tx, refused) = watch::channel(None);
        let task =
            tokio::spawn(run(api, shared.clone(), progress_id, agenda_id, config, refused_tx));
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

    /// Sends everything recorded plus the agenda's final state (`COMPLETE` with `succeeded` or
    /// `failed`, or an EXECUTING message when the agenda is handed back unfinished) and waits
    /// until the server has it, the final deadline passes, or the server refuses.
    pub async fn finish(self, state: ProcessingState, text: &str) -> Result<(), ApiError> {
        let text = text.to_string();
        self.update(true, move |p| p.agenda = Some((state, text)));
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ApiError::Transient(format!("the reporter task ended: {e}"))),
        }
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
    progress_id: &str,
    agenda_id: &str,
) -> (Value, BTreeSet<String>, Vec<DiagnosticEvent>, bool) {
    let dirty = std::mem::take(&mut pending.dirty);
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
    let is_final = pending.final_requested;
    let (state, text) =
        pending.agenda.clone().unwrap_or((ProcessingState::Executing, RUNNING_MESSAGE.to_string()));
    let mut report = json!({
        "id": progress_id,
        "agendaId": agenda_id,
        "processingState": state.as_str(),
        "processingStateMessage": text,
        "operationProgress": operations,
    });
    if !diagnostics.is_empty() {
        report["diagnosticEvents"] = json!(diagnostics);
    }
    (report, dirty, diagnostics, is_final)
}

/// A hint for a refusal that says the lease is gone: the server's API does not tell the worker
/// how long a lease lasts, so a `pop serve --lease` shorter than the heartbeat (plus a slow
/// operation that reports nothing) shows up only here, as a reclaimed agenda run twice.
pub fn lease_hint(error: &ApiError, heartbeat: Duration) -> Option<String> {
    match error {
        ApiError::Refused { code, message } if code == "CONFLICT" && message.contains("lease") => {
            Some(format!(
                "the lease ran out or was taken over; a quiet agenda is reported only every \
                 {heartbeat:?} (--heartbeat-ms), so the server's --lease must be well above that \
                 (3x or more), or quiet agendas are reclaimed and run twice"
            ))
        }
        _ => None,
    }
}

async fn run(
    api: Arc<dyn WorkApi>,
    shared: Arc<Shared>,
    progress_id: String,
    agenda_id: String,
    config: ReportConfig,
    refused: watch::Sender<Option<ApiError>>,
) -> Result<(), ApiError> {
    let mut backoff = FIRST_RETRY_BACKOFF;
    let mut final_started: Option<tokio::time::Instant> = None;
    // The first report goes out at once.
    let mut due_now = true;
    loop {
        if !due_now {
            let urgent = lock(&shared.pending).final_requested;
            if !urgent {
                // Wait for a change or the heartbeat, then let changes gather for `interval`
                // unless the final report was asked for meanwhile.
                let changed =
                    tokio::time::timeout(config.heartbeat, shared.notify.notified()).await.is_ok();
                if changed && !lock(&shared.pending).final_requested {
                    let _ = tokio::time::timeout(config.interval, async {
                        loop {
                            shared.notify.notified().await;
                            if lock(&shared.pending).final_requested {
                                break;
                            }
                        }
                    })
                    .await;
                }
            }
        }
        due_now = false;
        let (report, dirty, diagnostics, is_final) =
            take_report(&mut lock(&shared.pending), &progress_id, &agenda_id);
        if is_final && final_started.is_none() {
            final_started = Some(tokio::time::Instant::now());
        }
        match api.update_progress(&report).await {
            Ok(()) => {
                backoff = FIRST_RETRY_BACKOFF;
                if is_final {
                    return Ok(());
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(agenda = %agenda_id, error = %e, retry_in = ?backoff, "progress report failed; retrying");
                {
                    let mut pending = lock(&shared.pending);
                    pending.dirty.extend(dirty);
                    let newer = std::mem::take(&mut pending.diagnostics);
                    pending.diagnostics = diagnostics;
                    pending.diagnostics.extend(newer);
                }
                if final_started.is_some_and(|t| t.elapsed() >= config.final_deadline) {
                    tracing::error!(agenda = %agenda_id, error = %e, "giving up on the final report");
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                due_now = true;
            }
            Err(e) => {
                // Lease lost, agenda cancelled or already complete (the server completes an
                // agenda itself once every operation succeeded or one failed and nothing
                // runs), or a report the server rejects: sending it again cannot help.
                if is_final && e.code() == Some("CONFLICT") {
                    tracing::debug!(agenda = %agenda_id, error = %e, "final report refused");
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
        let cancelled =
            ApiError::Refused { code: "CONFLICT".into(), message: "agenda was cancelled".into() };
        assert_eq!(lease_hint(&cancelled, Duration::from_secs(30)), None);
        let down = ApiError::Transient("lease server down".into());
        assert_eq!(lease_hint(&down, Duration::from_secs(30)), None);
    }
}
