//! What one agenda keeps of its executors' reports, bounded in bytes: its operations' results,
//! the params reports add, its diagnostics and its free-text messages. A count cap alone let one
//! agenda of 61 operations hold 39 MB of diagnostics and one of 300 hold 150 MB of results
//! (hostile40 M1, M2): more than any answer can carry whole (16 MiB), held in memory while live.
//!
//! Nothing here refuses a report: POP's executor sends a refused report again with every later
//! one (it clears what it reports only after a success) and pop's worker stops on a refusal, so
//! a refusal stalls the agenda until its lease runs out, then it runs again to the same end, with
//! the reason nowhere the customer looks (popclient29: params past a bound did). What does not
//! fit is not kept, and a diagnostic on the operation says so ([`AgendaState::fit_report`]).
//! Diagnostics are cut to a length that shares [`DIAGNOSTIC_BYTES_PER_AGENDA`] among the
//! operations ([`AgendaState::diagnostic_text_bytes`]).

use serde_json::Value;

use crate::model::{
    DiagnosticEvent, OperationProgress, ProcessingState, Timestamp, message, status_code,
};
use crate::validate::json_bytes;

use super::command::{OperationReport, ProgressReport};
use super::state::{AgendaState, MAX_DIAGNOSTICS};

/// The most bytes (compact JSON) an agenda's operations keep of results together. A result that
/// would pass it is not kept (its operation failed, when the report completes it).
pub const MAX_RESULT_BYTES_PER_AGENDA: usize = 4 << 20;

/// The most bytes (compact JSON) an agenda's operations' params take together once reports have
/// added theirs (the definition's count). Params a report adds past it are not kept.
pub const MAX_PARAMS_BYTES_PER_AGENDA: usize = 1 << 20;

/// The most bytes (compact JSON) an agenda's definition takes once expansions have added to it
/// (a submission is bounded by the request's size, 2 MiB by default): with its progress, one
/// answer (16 MiB) carries it.
pub const MAX_DEFINITION_BYTES_PER_AGENDA: usize = 3 << 20;

/// The bytes an agenda's diagnostics share: each diagnostic's `message`, `stackTrace` and
/// `payload` are cut to what lets every operation (and the agenda) keep its
/// [`MAX_DIAGNOSTICS`] within it ([`AgendaState::diagnostic_text_bytes`]), but never below
/// [`MIN_DIAGNOSTIC_TEXT_BYTES`] (past ~750 operations the share is passed: ~5.6 MB at 1,000)
/// nor above [`crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES`].
pub const DIAGNOSTIC_BYTES_PER_AGENDA: usize = 4 << 20;

/// The shortest a diagnostic's text is cut to (as stored): its start and end around the note
/// of the cut. It is also what a free-text message keeps while its customer is past twice its
/// memory quota ([`ProgressReport::over_quota`]; no new diagnostic is kept then).
pub const MIN_DIAGNOSTIC_TEXT_BYTES: usize = 120;

/// The most bytes (as stored) an operation's or the agenda's free-text `processingStateMessage`
/// keeps while EXECUTING (review-s49: unbounded, 999 operations could hold 900 MB of them).
pub const MAX_MESSAGE_BYTES: usize = 512;

/// What a diagnostic takes beside its three texts (its time, its status code, at most
/// [`crate::validate::MAX_STATUS_CODE_BYTES`], and the field names), counted against
/// [`DIAGNOSTIC_BYTES_PER_AGENDA`].
const DIAGNOSTIC_OVERHEAD_BYTES: usize = 200;

/// What every diagnostic saying a result was not kept says ([`AgendaState::fit_report`]).
const NOT_KEPT: &str = "the result was not kept";

/// How the agenda's diagnostic saying its reports keep nothing new starts.
const KEPT_NOTHING_NEW: &str = "reports to this agenda keep no new results, params or diagnostics";

/// How the diagnostics that name a result's size start.
const RESULT_TAKES: &str = "the operation's resultPayload takes ";

/// A report with what the agenda may not keep taken out, and the diagnostics saying so: each
/// with the index of the operation in the report it belongs to. The decision adds these after
/// the executor's own, whole (they are short) and once (a report sent again says the same).
pub(super) struct Fitted {
    pub report: ProgressReport,
    pub notes: Vec<(usize, DiagnosticEvent)>,
    /// The agenda's own (past the customer's quota: one saying the report kept nothing new).
    pub agenda_notes: Vec<DiagnosticEvent>,
}

impl Fitted {
    /// `report` as sent, nothing taken out yet.
    fn of(report: &ProgressReport) -> Fitted {
        Fitted { report: report.clone(), notes: Vec::new(), agenda_notes: Vec::new() }
    }
}

/// The bytes one operation keeps of what its executors reported (as compact JSON): its result,
/// params, diagnostics and message. [`AgendaState::kept_bytes`] sums them. (The agenda's own
/// message is not counted: it is cut to [`MAX_MESSAGE_BYTES`], and the queue's events change it.)
pub fn operation_kept_bytes(p: &OperationProgress) -> usize {
    p.result_payload.as_json().len()
        + json_bytes(&p.params)
        + p.diagnostic_events.iter().map(json_bytes).sum::<usize>()
        + p.processing_state_message.as_deref().map_or(0, str::len)
}

impl AgendaState {
    /// The bytes it keeps of what its executors reported (results, params, diagnostics and the
    /// operations' messages, as compact JSON): what it holds in memory beside its definition
    /// while live, counted for the customer's memory quota.
    pub fn kept_bytes(&self) -> usize {
        self.agenda_kept_bytes()
            + self.progress.operation_progress.iter().map(operation_kept_bytes).sum::<usize>()
    }

    /// The part of [`AgendaState::kept_bytes`] that is the agenda's own: its diagnostics, and
    /// its params when reports changed them.
    pub fn agenda_kept_bytes(&self) -> usize {
        self.progress.diagnostic_events.iter().map(json_bytes).sum::<usize>()
            + self.reported_params_bytes()
    }

    /// The bytes of its operations' results (what [`MAX_RESULT_BYTES_PER_AGENDA`] bounds).
    pub fn result_bytes(&self) -> usize {
        self.progress.operation_progress.iter().map(|p| p.result_payload.as_json().len()).sum()
    }

    /// The params a report adds to the agenda progress's: those its definition does not hold.
    /// An executor echoes the AgendaProgress it was handed, whose params were the definition's
    /// then; taken, a stale echo undid an `updateAgenda` that changed them (review-s51b M1).
    /// The definition's params change by expansion alone.
    pub(super) fn reported_agenda_params<'a>(
        &self,
        reported: &'a crate::params::Params,
    ) -> std::borrow::Cow<'a, crate::params::Params> {
        match self.agenda() {
            Some(agenda) if reported.iter().any(|(key, _)| agenda.params.get(key).is_some()) => {
                std::borrow::Cow::Owned(
                    reported
                        .iter()
                        .filter(|(key, _)| agenda.params.get(key).is_none())
                        .map(|(key, value)| (key.clone(), value.clone()))
                        .collect(),
                )
            }
            _ => std::borrow::Cow::Borrowed(reported),
        }
    }

    /// The bytes of its operations' params and of what reports added to its own (what
    /// [`MAX_PARAMS_BYTES_PER_AGENDA`] bounds).
    pub fn params_bytes(&self) -> usize {
        self.reported_params_bytes()
            + self.progress.operation_progress.iter().map(|p| json_bytes(&p.params)).sum::<usize>()
    }

    /// The bytes of the agenda progress's params when reports changed them from the
    /// definition's (then held beside them), else none.
    fn reported_params_bytes(&self) -> usize {
        match &self.agenda {
            Some(agenda) if agenda.params != self.progress.params => {
                json_bytes(&self.progress.params)
            }
            _ => 0,
        }
    }

    /// How many bytes each text of a new diagnostic keeps (as stored): the agenda's share
    /// ([`DIAGNOSTIC_BYTES_PER_AGENDA`]) over its operations and itself, ten each, three texts
    /// a diagnostic; within [`MIN_DIAGNOSTIC_TEXT_BYTES`]..=[`crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES`].
    /// While the customer is past its memory quota, the least (what free-text messages keep
    /// then).
    pub(super) fn diagnostic_text_bytes(&self, over_quota: bool) -> usize {
        if over_quota {
            return MIN_DIAGNOSTIC_TEXT_BYTES;
        }
        let holders = self.progress.operation_progress.len() + 1;
        let each = DIAGNOSTIC_BYTES_PER_AGENDA / (holders * MAX_DIAGNOSTICS);
        (each.saturating_sub(DIAGNOSTIC_OVERHEAD_BYTES) / 3)
            .clamp(MIN_DIAGNOSTIC_TEXT_BYTES, crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES)
    }

    /// The report with every result and params the agenda may not keep taken out, with the
    /// diagnostics saying why, or `None` when it keeps all of them. `found` is where each of
    /// the report's operations is in the agenda.
    ///
    /// A result is not kept when it is larger than one may be ([`ProgressReport::payload_bytes`])
    /// or when it would take the agenda's results past [`MAX_RESULT_BYTES_PER_AGENDA`]; past the
    /// customer's memory quota nothing new is kept ([`AgendaState::keep_nothing_new`]). An
    /// operation reported COMPLETE with such a result is recorded COMPLETE/failed, and an agenda
    /// reported succeeded with it failed; an interim result of a running operation is only
    /// dropped. A
    /// completed operation's result sent again is not looked at (it keeps its first), but one
    /// that was not kept, sent again (POP's executor after a timeout, or its outcome report),
    /// is failed again, without a second diagnostic. Params a report adds past
    /// [`MAX_PARAMS_BYTES_PER_AGENDA`] are not kept; the operation goes on.
    pub(super) fn fit_report(
        &self,
        report: &ProgressReport,
        found: &[Option<usize>],
    ) -> Option<Fitted> {
        let carries = |r: &OperationReport| {
            r.result_payload.as_ref().is_some_and(|v| !v.is_null()) || !r.params.is_empty()
        };
        if let Some(quota) = &report.over_quota {
            return self.keep_nothing_new(report, found, quota);
        }
        let agenda_params = self.reported_agenda_params(&report.params);
        if !report.operations.iter().any(carries) && agenda_params.is_empty() {
            return None;
        }
        // Measured only when a report would grow them (POP echoes both with every report).
        let (mut results, mut params): (Option<usize>, Option<usize>) = (None, None);
        let mut fitted: Option<Fitted> = None;
        let mut failed = false;
        if let Some(grows) = agenda_params_growth(&self.progress.params, &agenda_params) {
            let total = params.get_or_insert_with(|| self.params_bytes());
            if *total + grows > MAX_PARAMS_BYTES_PER_AGENDA {
                let fitted = take(&mut fitted, report);
                fitted.report.params = crate::params::Params::default();
                fitted.agenda_notes.push(params_not_kept(report.completed));
            } else {
                *total += grows;
            }
        }
        for (i, r) in report.operations.iter().enumerate() {
            let Some(current) = found
                .get(i)
                .copied()
                .flatten()
                .and_then(|at| self.progress.operation_progress.get(at))
            else {
                continue;
            };
            if let Some(grows) = params_growth(current, r) {
                let total = params.get_or_insert_with(|| self.params_bytes());
                if *total + grows > MAX_PARAMS_BYTES_PER_AGENDA {
                    let fitted = take(&mut fitted, report);
                    fitted.report.operations[i].params = crate::params::Params::default();
                    fitted.notes.push((i, params_not_kept(r.completed)));
                } else {
                    *total += grows;
                }
            }
            let Some(result) = r.result_payload.as_ref().filter(|v| !v.is_null()) else {
                continue;
            };
            if current.processing_state == ProcessingState::Complete {
                if r.state == ProcessingState::Complete
                    && self.failed_for_result(current, result, report)
                {
                    let fitted = take(&mut fitted, report);
                    let sent = &mut fitted.report.operations[i];
                    sent.result_payload = None;
                    sent.message = Some(message::FAILED.to_string());
                    failed = true;
                }
                continue;
            }
            let held = current.result_payload.as_json();
            let bytes = json_bytes(result);
            // The result it holds, sent again (a heartbeat carrying its interim result).
            if held.len() == bytes && crate::payload::Payload::from_value(result).as_json() == held
            {
                continue;
            }
            let why = match report.payload_bytes {
                Some(max) if bytes > max => Some(too_large(result, bytes, max)),
                _ => {
                    let total = results.get_or_insert_with(|| self.result_bytes());
                    // Saturating: an operation named twice in one report (refused after this)
                    // would take its recorded result off twice.
                    let after = (*total + bytes).saturating_sub(held.len());
                    if after > MAX_RESULT_BYTES_PER_AGENDA {
                        Some(Why {
                            // Said of the report alone: the same report sent again says the
                            // same, and is kept once.
                            text: format!(
                                "{RESULT_TAKES}{bytes} bytes as JSON, which would take the \
                                 agenda's results past the {MAX_RESULT_BYTES_PER_AGENDA} bytes \
                                 an agenda keeps: {NOT_KEPT}"
                            ),
                            final_: true,
                        })
                    } else {
                        *total = after;
                        None
                    }
                }
            };
            if let Some(why) = why {
                let fitted = take(&mut fitted, report);
                let (completes, note) = not_kept(&mut fitted.report.operations[i], why);
                fitted.notes.push((i, note));
                failed |= completes;
            }
        }
        let mut fitted = fitted?;
        if failed {
            fail_agenda(&mut fitted.report);
        }
        Some(fitted)
    }

    /// [`AgendaState::fit_report`] while the customer is past twice its memory quota: the
    /// report keeps no new result, params, diagnostic or free-text message (review-s49b: ten
    /// diagnostics of 540 B on each of 1,000 operations still grew, ~110 times the quota);
    /// states and outcomes still change, so the agendas finish and free what they hold. An
    /// operation reported COMPLETE with a new result is failed (the result its next ones read
    /// is missing). The agenda keeps one diagnostic saying why, once an attempt.
    fn keep_nothing_new(
        &self,
        report: &ProgressReport,
        found: &[Option<usize>],
        quota: &str,
    ) -> Option<Fitted> {
        let mut fitted = Fitted::of(report);
        let mut dropped = !fitted.report.diagnostics.is_empty()
            || agenda_params_growth(
                &self.progress.params,
                &self.reported_agenda_params(&report.params),
            )
            .is_some();
        let mut failed = false;
        fitted.report.diagnostics.clear();
        fitted.report.params = crate::params::Params::default();
        // No new free text either (review-s49c: 120 bytes on every operation of agendas
        // expanded to 1,000 still grew past the quota); an outcome's word stays.
        if fitted.report.state != Some(ProcessingState::Complete) {
            fitted.report.message = None;
        }
        for (i, r) in fitted.report.operations.iter_mut().enumerate() {
            if r.state != ProcessingState::Complete {
                r.message = None;
            }
            let current = found
                .get(i)
                .copied()
                .flatten()
                .and_then(|at| self.progress.operation_progress.get(at));
            dropped |=
                !r.diagnostics.is_empty() || current.is_some_and(|c| params_growth(c, r).is_some());
            r.diagnostics.clear();
            r.params = crate::params::Params::default();
            let Some(result) = r.result_payload.take().filter(|v| !v.is_null()) else { continue };
            match current {
                // A completed operation keeps its first result; one failed for it is failed
                // again.
                Some(c) if c.processing_state == ProcessingState::Complete => {
                    if r.state == ProcessingState::Complete
                        && self.failed_for_result(c, &result, report)
                    {
                        r.message = Some(message::FAILED.to_string());
                        failed = true;
                    }
                }
                // The result it holds, sent again: nothing new.
                Some(c)
                    if c.result_payload.as_json().len() == json_bytes(&result)
                        && crate::payload::Payload::from_value(&result).as_json()
                            == c.result_payload.as_json() =>
                {
                    r.result_payload = Some(result);
                }
                _ => {
                    dropped = true;
                    if r.state == ProcessingState::Complete {
                        r.message = Some(message::FAILED.to_string());
                        failed = true;
                    }
                }
            }
        }
        if failed {
            fail_agenda(&mut fitted.report);
        }
        if dropped {
            fitted.agenda_notes.push(DiagnosticEvent {
                message: format!(
                    "{KEPT_NOTHING_NEW} (an operation completed with a new result is failed): \
                     {quota}"
                ),
                ..DiagnosticEvent::default()
            });
        }
        Some(fitted)
    }

    /// Whether `current`, COMPLETE, is failed for the result `result` sent again: it holds no
    /// result and has failed, and the result is past the limit on one, or its current attempt
    /// holds pop's diagnostic saying its result was not kept (review-s49: any diagnostic of any
    /// attempt was too wide).
    fn failed_for_result(
        &self,
        current: &OperationProgress,
        result: &Value,
        report: &ProgressReport,
    ) -> bool {
        if !current.result_payload.is_null()
            || !current.processing_state_message.as_deref().is_some_and(message::is_failed)
        {
            return false;
        }
        if report.payload_bytes.is_some_and(|max| json_bytes(result) > max) {
            return true;
        }
        let attempt = self.operation_diagnostics_this_attempt(&current.operation);
        let said = super::state::newest(&current.diagnostic_events, attempt).iter().any(|d| {
            (d.message.starts_with(RESULT_TAKES) || d.message.starts_with(NOT_KEPT))
                && d.message.contains(NOT_KEPT)
        });
        // Past the quota the agenda says it once, for all its operations.
        said || super::state::newest(&self.progress.diagnostic_events, self.attempt_diagnostics)
            .iter()
            .any(|d| d.message.starts_with(KEPT_NOTHING_NEW))
    }
}

/// The fitted report, made from `report` the first time something is taken out of it.
fn take<'a>(fitted: &'a mut Option<Fitted>, report: &ProgressReport) -> &'a mut Fitted {
    fitted.get_or_insert_with(|| Fitted::of(report))
}

/// An agenda reported succeeded whose operation was just failed for its result has failed:
/// said as it stands, the report would be refused whole (review-s36b).
fn fail_agenda(report: &mut ProgressReport) {
    if report.state == Some(ProcessingState::Complete)
        && report.message.as_deref().is_some_and(message::is_succeeded)
    {
        report.message = Some(message::FAILED.to_string());
    }
}

/// How many bytes the params `r` reports add to `current`'s, when they add any.
fn params_growth(current: &OperationProgress, r: &OperationReport) -> Option<usize> {
    agenda_params_growth(&current.params, &r.params)
}

/// How many bytes `reported` params add to `current` ones, when they add any.
fn agenda_params_growth(
    current: &crate::params::Params,
    reported: &crate::params::Params,
) -> Option<usize> {
    if reported.is_empty() {
        return None;
    }
    let merged = current.merged_with(reported)?;
    Some(json_bytes(&merged).saturating_sub(json_bytes(current))).filter(|&n| n > 0)
}

/// The diagnostic saying the params a report sent were not kept (the same for any params, so
/// a report sent again says nothing new).
fn params_not_kept(time: Option<Timestamp>) -> DiagnosticEvent {
    DiagnosticEvent {
        message: format!(
            "the reported params were not kept: they would take the agenda's params (the \
             definition's included) past the {MAX_PARAMS_BYTES_PER_AGENDA} bytes an agenda keeps"
        ),
        time,
        ..DiagnosticEvent::default()
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
            "{RESULT_TAKES}{bytes} bytes as JSON{sent_as_text}; at most {max} are allowed (the \
             server's --max-payload-bytes): {NOT_KEPT}"
        ),
        final_: true,
    }
}

/// Takes the result out of `r`; reported COMPLETE, the operation fails (`true`). Returns that
/// and the diagnostic saying why.
fn not_kept(r: &mut OperationReport, why: Why) -> (bool, DiagnosticEvent) {
    r.result_payload = None;
    let completes = r.state == ProcessingState::Complete;
    if completes {
        r.message = Some(message::FAILED.to_string());
    }
    let note = DiagnosticEvent {
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
    };
    (completes, note)
}
