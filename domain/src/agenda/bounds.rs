//! What one agenda keeps of its executors' reports, bounded in bytes: its operations' results
//! and params together, and its diagnostics. A count cap alone let one agenda of 61 operations
//! hold 39 MB of diagnostics and one of 300 hold 150 MB of results (hostile40 M1, M2): more
//! than any answer can carry whole (16 MiB), and held in memory while it is live.
//!
//! Results are judged before the report is decided ([`AgendaState::fit_results`]): one past a
//! bound is not kept, with a diagnostic saying why, as a result past `--max-payload-bytes`
//! always was. Diagnostics are cut to a length that makes every operation's ten fit the
//! agenda's share ([`AgendaState::diagnostic_text_bytes`]).

use serde_json::Value;

use crate::model::{DiagnosticEvent, ProcessingState, message, status_code};
use crate::validate::json_bytes;

use super::command::{OperationReport, ProgressReport};
use super::state::{AgendaState, MAX_DIAGNOSTICS};

/// The most bytes (compact JSON) an agenda's operations keep of results and params together.
/// A report that would pass it has the result not kept (its operation failed, when the report
/// completes it); params that would are refused.
pub const MAX_REPORTED_BYTES_PER_AGENDA: usize = 6 << 20;

/// The bytes an agenda's diagnostics share: each diagnostic's `message`, `stackTrace` and
/// `payload` are cut to what lets every operation (and the agenda) keep its
/// [`MAX_DIAGNOSTICS`] within it ([`AgendaState::diagnostic_text_bytes`]), but never below
/// [`MIN_DIAGNOSTIC_TEXT_BYTES`] nor above [`crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES`].
pub const DIAGNOSTIC_BYTES_PER_AGENDA: usize = 4 << 20;

/// The shortest a diagnostic's text is cut to: its start and end around the note of the cut.
/// It is also what a diagnostic keeps while its customer is past its memory quota
/// ([`ProgressReport::over_quota`]).
pub const MIN_DIAGNOSTIC_TEXT_BYTES: usize = 200;

/// What every diagnostic saying a result was not kept says ([`AgendaState::fit_results`]).
const NOT_KEPT: &str = "the result was not kept";

/// What a diagnostic takes beside its three texts (its time, status code and the field names),
/// counted against [`DIAGNOSTIC_BYTES_PER_AGENDA`].
const DIAGNOSTIC_OVERHEAD_BYTES: usize = 160;

impl AgendaState {
    /// The bytes its operations keep of results and params, as compact JSON: what
    /// [`MAX_REPORTED_BYTES_PER_AGENDA`] bounds.
    pub fn reported_bytes(&self) -> usize {
        self.progress
            .operation_progress
            .iter()
            .map(|p| p.result_payload.as_json().len() + json_bytes(&p.params))
            .sum()
    }

    /// The bytes it keeps of what its executors reported (results, params and every
    /// diagnostic, as compact JSON): what it holds in memory beside its definition while live,
    /// counted for the customer's memory quota.
    pub fn kept_bytes(&self) -> usize {
        let diagnostics = |list: &[DiagnosticEvent]| list.iter().map(json_bytes).sum::<usize>();
        self.reported_bytes()
            + diagnostics(&self.progress.diagnostic_events)
            + self
                .progress
                .operation_progress
                .iter()
                .map(|p| diagnostics(&p.diagnostic_events))
                .sum::<usize>()
    }

    /// How many bytes each text of a new diagnostic keeps: the agenda's share
    /// ([`DIAGNOSTIC_BYTES_PER_AGENDA`]) over its operations and itself, ten each, three texts
    /// a diagnostic; within [`MIN_DIAGNOSTIC_TEXT_BYTES`]..=[`crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES`].
    /// While the customer is past its memory quota, the least.
    pub(super) fn diagnostic_text_bytes(&self, report: &ProgressReport) -> usize {
        if report.over_quota.is_some() {
            return MIN_DIAGNOSTIC_TEXT_BYTES;
        }
        let holders = self.progress.operation_progress.len() + 1;
        let each = DIAGNOSTIC_BYTES_PER_AGENDA / (holders * MAX_DIAGNOSTICS);
        (each.saturating_sub(DIAGNOSTIC_OVERHEAD_BYTES) / 3)
            .clamp(MIN_DIAGNOSTIC_TEXT_BYTES, crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES)
    }

    /// The report with every result the agenda may not keep taken out, each with a diagnostic
    /// saying why, or `None` when it keeps all of them. A result is not kept when it is larger
    /// than one may be ([`ProgressReport::payload_bytes`]), when the customer is past its memory
    /// quota ([`ProgressReport::over_quota`]), or when it would take the agenda's results and
    /// params past [`MAX_REPORTED_BYTES_PER_AGENDA`]. An operation reported COMPLETE with such a
    /// result is recorded COMPLETE/failed, and an agenda reported succeeded with it failed.
    ///
    /// Refusing the whole report stalled the agenda: POP's executor sends a refused report again
    /// with every later one (it clears what it reports only after a success) and pop's worker
    /// stops on a refusal, so the agenda waited for its lease to run out, then ran again to the
    /// same end, with the reason nowhere the customer looks. An interim result of a running
    /// operation is only dropped: the operation goes on.
    pub(super) fn fit_results(
        &self,
        report: &ProgressReport,
        found: &[Option<usize>],
    ) -> Option<ProgressReport> {
        let carries = |r: &OperationReport| r.result_payload.as_ref().is_some_and(|v| !v.is_null());
        if !report.operations.iter().any(carries) {
            return None;
        }
        let mut kept = self.reported_bytes();
        let mut fitted: Option<ProgressReport> = None;
        let mut failed = false;
        for (i, at) in found.iter().enumerate() {
            let Some(r) = report.operations.get(i).filter(|r| carries(r)) else { continue };
            let current = at.and_then(|at| self.progress.operation_progress.get(at));
            let Some(result) = &r.result_payload else { continue };
            let bytes = json_bytes(result);
            // A COMPLETE operation keeps its first result (a resend's is not looked at). One
            // whose result was not kept is sent again (POP's executor, after a timeout): it is
            // the report that was taken, failed as it was then, and said once already.
            let replaces = match current {
                Some(c) if c.processing_state == ProcessingState::Complete => {
                    let failed_for_it = c.result_payload.is_null()
                        && c.processing_state_message.as_deref().is_some_and(message::is_failed)
                        && c.diagnostic_events.iter().any(|d| d.message.contains(NOT_KEPT));
                    if failed_for_it && r.state == ProcessingState::Complete {
                        let fitted = fitted.get_or_insert_with(|| report.clone());
                        if let Some(r) = fitted.operations.get_mut(i) {
                            r.result_payload = None;
                            r.message = Some(message::FAILED.to_string());
                            failed = true;
                        }
                    }
                    continue;
                }
                Some(c) => c.result_payload.as_json().len(),
                None => 0,
            };
            let why = if report.payload_bytes.is_some_and(|max| bytes > max) {
                Some(too_large(result, bytes, report.payload_bytes.unwrap_or_default()))
            } else if let Some(quota) = &report.over_quota {
                Some(Why {
                    text: format!("{NOT_KEPT} ({bytes} bytes as JSON): {quota}"),
                    final_: false,
                })
            } else if kept - replaces + bytes > MAX_REPORTED_BYTES_PER_AGENDA {
                Some(Why {
                    // Said of the report alone: the same report sent again says the same.
                    text: format!(
                        "the operation's resultPayload takes {bytes} bytes as JSON, which would \
                         take the agenda's results and params past the \
                         {MAX_REPORTED_BYTES_PER_AGENDA} bytes an agenda keeps: {NOT_KEPT}"
                    ),
                    final_: true,
                })
            } else {
                None
            };
            let Some(why) = why else {
                kept = kept - replaces + bytes;
                continue;
            };
            let fitted = fitted.get_or_insert_with(|| report.clone());
            let Some(r) = fitted.operations.get_mut(i) else { continue };
            failed |= not_kept(r, why);
        }
        let mut fitted = fitted?;
        // An agenda reported succeeded whose operation was just failed for its result has
        // failed: said as it stands, the report would be refused whole (review-s36b).
        if failed
            && fitted.state == Some(ProcessingState::Complete)
            && fitted.message.as_deref().is_some_and(message::is_succeeded)
        {
            fitted.message = Some(message::FAILED.to_string());
        }
        Some(fitted)
    }
}

/// Why a result is not kept, and whether running the operation again would make it again
/// (`final_`: the diagnostic says NOT_RETRYABLE).
struct Why {
    text: String,
    final_: bool,
}

/// A result past `--max-payload-bytes`: measured as stored — a result sent as JSON text (POP's
/// executor types it a String) is kept as a JSON string, its escapes included (review-s45b) —
/// and said with the text's size too (popclient26).
fn too_large(result: &Value, bytes: usize, max: usize) -> Why {
    let sent_as_text = match result {
        Value::String(text) => format!(
            " (a JSON string of {} bytes of text, as POP's executor sends a result: its \
             quotes and backslashes count twice)",
            text.len()
        ),
        _ => String::new(),
    };
    Why {
        text: format!(
            "the operation's resultPayload takes {bytes} bytes as JSON{sent_as_text}; at most \
             {max} are allowed (the server's --max-payload-bytes): {NOT_KEPT}"
        ),
        final_: true,
    }
}

/// Takes the result out of `r` with a diagnostic saying why; reported COMPLETE, the operation
/// fails (returns `true`).
fn not_kept(r: &mut OperationReport, why: Why) -> bool {
    r.result_payload = None;
    let completes = r.state == ProcessingState::Complete;
    if completes {
        r.message = Some(message::FAILED.to_string());
    }
    r.diagnostics.push(DiagnosticEvent {
        message: format!(
            "{}{}",
            why.text,
            if completes { " and the operation failed" } else { "" }
        ),
        // The same handler makes the same result: a rerun after the limit was raised runs it
        // again. A quota is another matter: a retry may find room.
        status_code: why.final_.then(|| status_code::NOT_RETRYABLE.to_string()),
        // The report's own time, not the server's: the same report sent again (after a
        // timeout, or a heartbeat carrying the same interim result) makes the same diagnostic,
        // which the attempt keeps once (popclient26: each resend added a copy, and ten pushed
        // the executor's own diagnostics out).
        time: r.completed,
        ..DiagnosticEvent::default()
    });
    completes
}

/// The report with every diagnostic's texts cut to `max` bytes
/// ([`crate::validate::cut_diagnostic`]), or `None` when none is longer. Cut before the domain
/// compares them with the ones recorded (the same report sent again is then the same
/// diagnostics, kept once), and before the server adds its own, which are kept whole.
pub(super) fn cut_diagnostics(report: &ProgressReport, max: usize) -> Option<ProgressReport> {
    let long = |d: &DiagnosticEvent| {
        d.message.len() > max
            || d.stack_trace.as_ref().is_some_and(|t| t.len() > max)
            || (!d.payload.is_null() && json_bytes(&d.payload) > max)
    };
    let lists = || {
        std::iter::once(&report.diagnostics).chain(report.operations.iter().map(|r| &r.diagnostics))
    };
    if !lists().flatten().any(long) {
        return None;
    }
    let mut cut = report.clone();
    let lists = std::iter::once(&mut cut.diagnostics)
        .chain(cut.operations.iter_mut().map(|r| &mut r.diagnostics));
    for d in lists.flatten() {
        crate::validate::cut_diagnostic(d, max);
    }
    Some(cut)
}
