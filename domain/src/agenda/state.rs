//! The agenda aggregate's state: the agenda as submitted (and expanded), its POP AgendaProgress
//! with one OperationProgress per operation, and the current lease. It is exactly what the read
//! side shows, so projections reuse `evolve` instead of re-implementing it; it serialises to
//! JSON for snapshots.

use serde::{Deserialize, Serialize};

use crate::model::{Agenda, AgendaProgress, OperationProgress, ProcessingState, Timestamp};
use crate::model::{epoch_ms, message};
use crate::params::{Params, keys, value_as_i64};
use crate::text::eq_ignore_case;

/// `maximumAttempts` when the agenda's params do not say (DOMAIN.md §2).
pub const DEFAULT_MAXIMUM_ATTEMPTS: u32 = 3;
pub use crate::model::MAXIMUM_ATTEMPTS_LIMIT;
/// Diagnostics kept per agenda and per operation, newest last. Executors attach log lines to
/// diagnostics and reruns add more; the cap bounds their count while the full history stays in
/// the event log. Their bytes are bounded by cutting their texts to the agenda's share
/// ([`super::bounds::DIAGNOSTIC_BYTES_PER_AGENDA`]; hostile40 M1: ten of 64 KiB on each of 61
/// operations made an agenda of 39 MB that no answer could carry).
pub const MAX_DIAGNOSTICS: usize = 10;
/// The agenda's `processingStateMessage` while EXECUTING when the executor gives none (POP's
/// own text).
pub const RUNNING_MESSAGE: &str = "Running Operations";

/// Who holds a `scheduled` or EXECUTING agenda, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(rename = "holder")]
    pub holder: String,
    #[serde(rename = "leaseId")]
    pub lease_id: String,
    #[serde(rename = "expires", with = "epoch_ms")]
    pub expires: Timestamp,
    /// How long the lease was when claimed, in milliseconds: a renewal lasts at least as long
    /// ([`AgendaState::renewed_until`]). `None` in states folded before it was kept.
    #[serde(rename = "lengthMs", default, skip_serializing_if = "Option::is_none")]
    pub length_ms: Option<i64>,
}

/// One agenda stream folded. `Default` is the empty stream (no agenda yet).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgendaState {
    #[serde(rename = "agenda", default, skip_serializing_if = "Option::is_none")]
    pub(super) agenda: Option<Agenda>,
    #[serde(rename = "progress", default)]
    pub(super) progress: AgendaProgress,
    #[serde(rename = "lease", default, skip_serializing_if = "Option::is_none")]
    pub(super) lease: Option<Lease>,
    /// When the agenda last entered its insight's waiting line: its submission, or its
    /// re-entry after a rerun, a retry, a reclaim or a release ("a new ReadyAgenda at now", as
    /// POP did). The scheduler orders and ages by it; `addedTime` stays the creation time.
    #[serde(
        rename = "enteredTime",
        default,
        with = "crate::model::epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) entered: Option<Timestamp>,
    /// When this stream's name is not an agenda but the progress id of one of the customer's
    /// agendas: that agenda's id.
    #[serde(rename = "progressIdOf", default, skip_serializing_if = "Option::is_none")]
    pub(super) progress_id_of: Option<String>,
    /// Closed by the data reaper: no command applies any more.
    #[serde(rename = "reaped", default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) reaped: bool,
    /// A late report already added its diagnostics since the agenda completed (only one may:
    /// the executor's own outcome report, not a stream of them).
    #[serde(rename = "lateDiagnostics", default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) late_diagnostics: bool,
    /// The holder of the lease the agenda completed under, until anything else happens to it:
    /// the executor whose late report (its own outcome, after the operations' reports completed
    /// the agenda) is taken. Not kept in the read models' settled form
    /// ([`AgendaState::forget_finisher`]).
    #[serde(rename = "finishedBy", default, skip_serializing_if = "Option::is_none")]
    pub(super) finished_by: Option<String>,
    /// How many of the agenda's newest diagnostics its current attempt recorded, counted from a
    /// rerun, retry, reclaim or hand-back on (`None`: not counted, as before any: all are
    /// this attempt's). A report's diagnostics are de-duplicated against these only
    /// (auditor27: a retried attempt failing with the same diagnostic as the attempt before
    /// had it dropped as a resend, and the log held no reason for that failure).
    #[serde(rename = "attemptDiagnostics", default, skip_serializing_if = "Option::is_none")]
    pub(super) attempt_diagnostics: Option<usize>,
    /// The same for each operation resumed or interrupted since its diagnostics were last
    /// cleared, by name.
    #[serde(
        rename = "operationAttemptDiagnostics",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub(super) operation_attempt_diagnostics: std::collections::BTreeMap<String, usize>,
}

impl AgendaState {
    /// The agenda as submitted and expanded; `None` before submission.
    pub fn agenda(&self) -> Option<&Agenda> {
        self.agenda.as_ref()
    }

    /// The POP AgendaProgress (empty before submission).
    pub fn progress(&self) -> &AgendaProgress {
        &self.progress
    }

    /// Whether the data reaper closed this agenda (its stream is being deleted).
    pub fn is_reaped(&self) -> bool {
        self.reaped
    }

    /// The holder of the lease the agenda completed under (see the field), while nothing else
    /// happened to it since.
    pub fn finished_by(&self) -> Option<&str> {
        self.finished_by.as_deref()
    }

    /// Forgets [`Self::finished_by`]: what the read models keep of a finished agenda (only the
    /// write side decides late reports; a name per finished agenda is memory).
    pub fn forget_finisher(&mut self) {
        self.finished_by = None;
    }

    /// How many of operation `name`'s newest diagnostics its current attempt recorded (see
    /// the field; `None`: all of them).
    pub(super) fn operation_diagnostics_this_attempt(&self, name: &str) -> Option<usize> {
        self.operation_attempt_diagnostics.get(name).copied()
    }

    /// The agenda whose progress id this stream's name is, when it is one (not an agenda).
    pub fn progress_id_of(&self) -> Option<&str> {
        self.progress_id_of.as_deref()
    }

    /// This state as a worker is shown it under progress id `progress_id` (a resource pool's
    /// worker is handed [`super::pool_progress_id`]): the agenda's `progressId`, the
    /// AgendaProgress `id`, and each OperationProgress's `agendaProgressId` and `id` name it.
    /// Nothing else changes; the stream keeps the customer's own id.
    pub fn shown_as(&self, progress_id: &str) -> AgendaState {
        let mut shown = self.clone();
        if let Some(agenda) = &mut shown.agenda {
            agenda.progress_id = Some(progress_id.to_string());
        }
        shown.progress.show_as(progress_id);
        shown
    }

    /// The current lease: only while `scheduled` or EXECUTING.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When the agenda last entered its insight's waiting line (see the field); its
    /// `addedTime` for a state folded before this was recorded.
    pub fn entered_time(&self) -> Option<Timestamp> {
        self.entered.or_else(|| self.agenda.as_ref().and_then(|a| a.added_time))
    }

    pub fn exists(&self) -> bool {
        self.agenda.is_some()
    }

    pub fn processing_state(&self) -> ProcessingState {
        self.progress.processing_state
    }

    /// The `processingStateMessage`, empty when there is none.
    pub fn message(&self) -> &str {
        self.progress.processing_state_message.as_deref().unwrap_or("")
    }

    /// Whether the agenda is in `state` with `message` (compared case-insensitively).
    pub fn is(&self, state: ProcessingState, message: &str) -> bool {
        self.exists() && self.processing_state() == state && eq_ignore_case(self.message(), message)
    }

    pub fn is_complete(&self) -> bool {
        self.exists() && self.processing_state() == ProcessingState::Complete
    }

    pub fn is_succeeded(&self) -> bool {
        self.is_complete() && message::is_succeeded(self.message())
    }

    pub fn is_failed(&self) -> bool {
        self.is_complete() && message::is_failed(self.message())
    }

    pub fn is_cancelled(&self) -> bool {
        self.is_complete() && message::is_cancelled(self.message())
    }

    /// `params.doNotRun` is present: kept for record, never scheduled.
    pub fn is_do_not_run(&self) -> bool {
        self.agenda.as_ref().is_some_and(|a| a.params.contains(keys::DO_NOT_RUN))
    }

    /// A `doNotRun` agenda that only waits: WAITING/added (never queued) or WAITING/pending
    /// (rerun, never re-added). Nothing will ever move it, so the data reaper retires it by the
    /// same age rule as a COMPLETE agenda.
    pub fn is_retired_record(&self) -> bool {
        self.is_do_not_run()
            && (self.is(ProcessingState::Waiting, message::ADDED)
                || self.is(ProcessingState::Waiting, message::PENDING))
    }

    /// WAITING/pending: reset by a rerun that did not re-add it (`skipExecution`, or a
    /// `doNotRun` agenda), so in no queue and held by no one until a rerun starts it. (A rerun
    /// that re-adds the agenda commits its re-entry with it: no agenda rests pending between.)
    pub fn is_parked(&self) -> bool {
        self.exists() && self.is(ProcessingState::Waiting, message::PENDING)
    }

    /// WAITING/added and not `doNotRun`: the scheduler may queue it.
    pub fn is_schedulable(&self) -> bool {
        self.is(ProcessingState::Waiting, message::ADDED) && !self.is_do_not_run()
    }

    /// WAITING/queued: `getAgenda` may hand it out.
    pub fn is_queued(&self) -> bool {
        self.is(ProcessingState::Waiting, message::QUEUED)
    }

    /// `scheduled` or EXECUTING: held under a lease.
    pub fn is_leased(&self) -> bool {
        self.is(ProcessingState::Waiting, message::SCHEDULED)
            || (self.exists() && self.processing_state() == ProcessingState::Executing)
    }

    /// Whether the reclaimer may end the lease at `now`.
    pub fn lease_expired(&self, now: Timestamp) -> bool {
        self.is_leased() && self.lease.as_ref().is_none_or(|l| l.expires <= now)
    }

    /// The effective attempt bound: `min(20, maximumAttempts)`.
    pub fn maximum_attempts(&self) -> u32 {
        self.progress.maximum_attempts.clamp(1, MAXIMUM_ATTEMPTS_LIMIT)
    }

    /// Attempts that may still start after the ones already completed.
    pub fn attempts_left(&self) -> u32 {
        self.maximum_attempts().saturating_sub(self.progress.attempts_completed)
    }

    /// COMPLETE/failed with attempts left: the automatic retry applies.
    pub fn can_retry(&self) -> bool {
        self.is_failed() && self.attempts_left() > 0
    }

    /// The progress of one operation, by name (case-insensitively).
    pub fn operation(&self, name: &str) -> Option<&OperationProgress> {
        self.progress.operation_progress.iter().find(|p| eq_ignore_case(&p.operation, name))
    }
}

/// `params.maximumAttempts` read leniently (`"5"` and `5`), default 3, clamped to 1..=20.
/// `Err` holds the value when it is present but not an integer.
pub fn maximum_attempts(params: &Params) -> Result<u32, String> {
    match params.get(keys::MAXIMUM_ATTEMPTS) {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_MAXIMUM_ATTEMPTS),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(DEFAULT_MAXIMUM_ATTEMPTS),
        Some(v) => match value_as_i64(v) {
            Some(n) => Ok(n.clamp(1, i64::from(MAXIMUM_ATTEMPTS_LIMIT)) as u32),
            None => Err(v.to_string()),
        },
    }
}

/// DOMAIN.md §4.1: `total > 0 ? (completed × 100 + Σ min(100, p) over EXECUTING) / total : 0`.
pub fn percent_from_counts(completed: usize, total: usize, executing_sum: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    round_percent((completed as f64 * 100.0 + executing_sum) / total as f64)
}

/// §4.1 over operation progress. `completed` counts operations that finished by running
/// (succeeded or failed); operations cancelled before they ran count as not done, so a failed
/// or cancelled agenda shows how much work actually happened.
pub fn percent_complete(operations: &[OperationProgress]) -> f64 {
    let completed = operations
        .iter()
        .filter(|p| p.processing_state == ProcessingState::Complete)
        .filter(|p| !p.processing_state_message.as_deref().is_some_and(message::is_cancelled))
        .count();
    let executing_sum: f64 = operations
        .iter()
        .filter(|p| p.processing_state == ProcessingState::Executing)
        .map(|p| p.percent_complete.unwrap_or(0.0).clamp(0.0, 100.0))
        .sum();
    percent_from_counts(completed, operations.len(), executing_sum)
}

/// Percents are kept to two decimals: enough for any progress bar, and a two-decimal value
/// survives a JSON round trip exactly, so a snapshot equals the state it was taken from.
pub fn round_percent(p: f64) -> f64 {
    if p.is_finite() { (p * 100.0).round() / 100.0 } else { 0.0 }
}

/// The newest `count` of `list` (all of it when not counted).
pub(super) fn newest<T>(list: &[T], count: Option<usize>) -> &[T] {
    match count {
        Some(n) => &list[list.len().saturating_sub(n)..],
        None => list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percent_vectors_of_domain_4_1() {
        assert_eq!(percent_from_counts(0, 1, 0.0), 0.0);
        assert_eq!(percent_from_counts(5, 10, 50.0), 55.0);
        assert_eq!(percent_from_counts(5, 10, 0.0), 50.0);
        assert_eq!(percent_from_counts(5, 10, 100.0), 60.0);
        assert_eq!(percent_from_counts(0, 0, 0.0), 0.0);
        assert_eq!(percent_from_counts(1, 3, 0.0), 33.33);
    }

    #[test]
    fn maximum_attempts_is_lenient_and_bounded() {
        let p = |v: serde_json::Value| -> Params {
            serde_json::from_value(json!({ "maximumAttempts": v })).unwrap()
        };
        assert_eq!(maximum_attempts(&Params::new()), Ok(3));
        assert_eq!(maximum_attempts(&p(json!(5))), Ok(5));
        assert_eq!(maximum_attempts(&p(json!("5"))), Ok(5));
        assert_eq!(maximum_attempts(&p(json!(50))), Ok(20));
        assert_eq!(maximum_attempts(&p(json!(0))), Ok(1));
        assert_eq!(maximum_attempts(&p(json!(null))), Ok(3));
        assert!(maximum_attempts(&p(json!("often"))).is_err());
    }
}
