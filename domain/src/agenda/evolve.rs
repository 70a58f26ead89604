//! Applies one agenda event to the state. Total: an event that does not fit (before the
//! submission, naming an unknown operation, a second submission) is absorbed, never a panic,
//! so any stored history replays. Projections call this same code.

use crate::model::{
    Agenda, AgendaProgress, DiagnosticEvent, Operation, OperationProgress, ProcessingState,
    Timestamp, marked_not_retryable, message,
};
use crate::params::keys;
use crate::payload::Payload;

use super::event::*;
use super::state::{AgendaState, Lease, MAX_DIAGNOSTICS, percent_complete};

impl AgendaState {
    pub(super) fn apply(&mut self, event: &AgendaEvent) {
        if let AgendaEvent::Submitted(e) = event {
            self.submitted(e);
            return;
        }
        if let AgendaEvent::ProgressIdTaken(e) = event {
            // Only on a stream that holds no agenda (the only event of such a stream).
            if self.agenda.is_none() {
                self.progress_id_of = Some(e.agenda_id.clone());
            }
            return;
        }
        if self.agenda.is_none() {
            return;
        }
        let time = event.time();
        // One late report's diagnostics per completion: anything else that happens to the
        // agenda (a rerun, a retry) opens the next.
        let late = matches!(event, AgendaEvent::DiagnosticsAdded(_));
        self.late_diagnostics = late;
        if !late {
            self.finished_by = None;
        }
        match event {
            AgendaEvent::Submitted(_) => {}
            AgendaEvent::Queued(_) => self.set_state(ProcessingState::Waiting, message::QUEUED),
            AgendaEvent::Claimed(e) => {
                self.set_state(ProcessingState::Waiting, message::SCHEDULED);
                self.lease = Some(Lease {
                    holder: e.holder.clone(),
                    lease_id: e.lease_id.clone(),
                    expires: e.lease_expires,
                    length_ms: Some((e.lease_expires - e.time).num_milliseconds()),
                });
            }
            AgendaEvent::ProgressReported(e) => self.progress_reported(e),
            AgendaEvent::Completed(e) => {
                self.set_state(ProcessingState::Complete, &e.message);
                self.progress.completed_time = Some(e.completed_time);
                self.progress.attempts_completed = e.attempts_completed;
                self.finished_by = self.lease.take().map(|l| l.holder);
                self.cancel_operations(&e.cancelled_operations, time);
            }
            AgendaEvent::OperationsExpanded(e) => self.expanded(e),
            AgendaEvent::Rerun(e) => self.rerun_applied(e),
            // Re-entry: a new place at the back of the insight's queue.
            AgendaEvent::Readded(_) | AgendaEvent::Requeued(_) => {
                self.set_state(ProcessingState::Waiting, message::ADDED);
                self.lease = None;
                self.entered = Some(time);
            }
            // The retry decision is for the audit trail; the rerun that follows changes state.
            AgendaEvent::RetryDecided(_) => {}
            // Closed for good; the progress stays as it was (times included) for the record.
            AgendaEvent::Reaped(_) => {
                self.reaped = true;
                self.lease = None;
                return;
            }
            AgendaEvent::Cancelled(e) => {
                self.set_state(ProcessingState::Complete, message::CANCELLED);
                self.progress.completed_time = Some(time);
                self.progress.attempts_completed = e.attempts_completed;
                self.lease = None;
                self.cancel_operations(&e.cancelled_operations, time);
                let reason = e.reason.as_deref().filter(|r| !r.trim().is_empty());
                let message = match (reason, e.withdrew_retry) {
                    (Some(reason), false) => Some(format!("Agenda cancelled: {reason}")),
                    (Some(reason), true) => {
                        Some(format!("{}: {reason}", message::CANCELLED_RETRY_WITHDRAWN))
                    }
                    (None, true) => Some(message::CANCELLED_RETRY_WITHDRAWN.to_string()),
                    (None, false) => None,
                };
                if let Some(message) = message {
                    let diagnostic =
                        DiagnosticEvent { message, time: Some(time), ..DiagnosticEvent::default() };
                    self.push_agenda_diagnostics([diagnostic]);
                }
            }
            AgendaEvent::TimedOut(e) => {
                self.lease = None;
                self.progress.attempts_completed = e.attempts_completed;
                let diagnostic = DiagnosticEvent {
                    message: message::TIMED_OUT.to_string(),
                    time: Some(time),
                    ..DiagnosticEvent::default()
                };
                self.push_agenda_diagnostics([diagnostic]);
                self.interrupt_operations(&e.interrupted_operations, time);
                self.new_attempt(&e.interrupted_operations);
            }
            AgendaEvent::ProgressIdTaken(_) => {}
            AgendaEvent::DiagnosticsAdded(e) => {
                self.push_agenda_diagnostics(e.diagnostics.iter().cloned());
            }
            AgendaEvent::Released(e) => {
                self.set_state(ProcessingState::Waiting, message::ADDED);
                self.lease = None;
                self.entered = Some(time);
                self.interrupt_operations(&e.interrupted_operations, time);
                self.new_attempt(&e.interrupted_operations);
            }
        }
        self.progress.percent_complete = Some(percent_complete(&self.progress.operation_progress));
        self.progress.updated_time = Some(time);
        if let Some(agenda) = self.agenda.as_mut() {
            agenda.updated_time = Some(time);
        }
    }

    fn submitted(&mut self, e: &AgendaSubmitted) {
        // A second submission cannot be decided; if a corrupt log holds one, the first wins.
        if self.agenda.is_some() {
            return;
        }
        let agenda = &e.agenda;
        let progress_id = agenda.progress_id.clone().unwrap_or_else(|| agenda.id.clone());
        let operation_progress = agenda
            .operations
            .iter()
            .map(|op| new_operation_progress(&progress_id, agenda, op, e.time))
            .collect();
        self.progress = AgendaProgress {
            id: progress_id,
            cid: agenda.cid.clone(),
            customer_id: agenda.customer_id.clone(),
            title: agenda.title.clone(),
            agenda_id: agenda.id.clone(),
            link_id: agenda.link_id.clone(),
            external_id: agenda.params.get_text(keys::EXTERNAL_ID),
            processing_state: ProcessingState::Waiting,
            processing_state_message: Some(message::ADDED.to_string()),
            percent_complete: Some(0.0),
            operation_progress,
            diagnostic_events: Vec::new(),
            attempts_completed: 0,
            maximum_attempts: e.maximum_attempts,
            started_time: None,
            completed_time: None,
            params: agenda.params.clone(),
            agenda_insight: agenda.agenda_insight.clone(),
            added_time: Some(e.time),
            updated_time: Some(e.time),
        };
        self.progress.percent_complete = Some(percent_complete(&self.progress.operation_progress));
        self.agenda = Some(agenda.clone());
        self.lease = None;
        self.entered = Some(e.time);
    }

    fn progress_reported(&mut self, e: &AgendaProgressReported) {
        self.set_state(ProcessingState::Executing, &e.message);
        if let Some(lease) = self.lease.as_mut() {
            lease.expires = e.lease_expires;
        }
        if e.started_time.is_some() {
            self.progress.started_time = e.started_time;
        }
        self.push_agenda_diagnostics(e.diagnostics.iter().cloned());
        if let Some(params) = &e.params {
            self.progress.params = params.clone();
        }
        for change in &e.operations {
            if let Some(p) = self
                .progress
                .operation_progress
                .iter_mut()
                .find(|p| *p.operation == *change.operation)
            {
                apply_operation_change(p, change, e.time);
                if let Some(n) = self.operation_attempt_diagnostics.get_mut(&*p.operation) {
                    *n = (*n + change.diagnostics.len()).min(p.diagnostic_events.len());
                }
            }
        }
    }

    fn expanded(&mut self, e: &OperationsExpanded) {
        let Some(agenda) = self.agenda.as_mut() else { return };
        for op in &e.operations {
            // Names are unique (decide validated); a duplicate in a corrupt log is dropped.
            if agenda.operations.iter().any(|o| o.name == op.name) {
                continue;
            }
            self.progress.operation_progress.push(new_operation_progress(
                &self.progress.id,
                agenda,
                op,
                e.time,
            ));
            agenda.operations.push(op.clone());
        }
        agenda.params.merge(&e.params);
        // Merged into the progress's too, which keeps what reports added to them.
        self.progress.params.merge(&e.params);
        self.progress.external_id = agenda.params.get_text(keys::EXTERNAL_ID);
        self.progress.maximum_attempts = e.maximum_attempts;
    }

    fn rerun_applied(&mut self, e: &AgendaRerun) {
        self.set_state(ProcessingState::Waiting, message::PENDING);
        self.lease = None;
        self.progress.started_time = None;
        self.progress.completed_time = None;
        if let Some(agenda) = self.agenda.as_mut() {
            agenda.operations.retain(|op| !e.removed_operations.contains(&op.name));
        }
        self.progress
            .operation_progress
            .retain(|p| !e.removed_operations.iter().any(|n| **n == *p.operation));
        let time = e.time;
        for p in self.operations_named(&e.reset_operations) {
            to_pending(p, time);
            p.diagnostic_events.clear();
        }
        for name in &e.reset_operations {
            self.operation_attempt_diagnostics.remove(name);
        }
        // The diagnostics of the agenda and of a resumed operation run on across attempts; an
        // executor's NOT_RETRYABLE was said of the attempt it ended, so it must not stay the
        // last word (it would keep the next attempt's failure from being retried, and the
        // cancel rule from seeing its retry; auditor28: an operation's, when the rerun's own
        // failure came without a diagnostic).
        let marker = || DiagnosticEvent {
            message: message::RERUN_AFTER_NOT_RETRYABLE.to_string(),
            time: Some(time),
            ..DiagnosticEvent::default()
        };
        for p in self.operations_named(&e.resumed_operations) {
            to_pending(p, time);
            if p.diagnostic_events.last().is_some_and(marked_not_retryable) {
                push_diagnostics(&mut p.diagnostic_events, [marker()]);
            }
        }
        if self.progress.diagnostic_events.last().is_some_and(marked_not_retryable) {
            push_diagnostics(&mut self.progress.diagnostic_events, [marker()]);
        }
        self.new_attempt(&e.resumed_operations);
    }

    /// Adds diagnostics to the agenda's own, counting them to the current attempt.
    fn push_agenda_diagnostics(&mut self, new: impl IntoIterator<Item = DiagnosticEvent>) {
        let mut added = 0;
        let new = new.into_iter().inspect(|_| added += 1);
        push_diagnostics(&mut self.progress.diagnostic_events, new);
        if let Some(n) = self.attempt_diagnostics.as_mut() {
            *n = (*n + added).min(self.progress.diagnostic_events.len());
        }
    }

    /// A new attempt of the agenda and of the operations `named` (resumed or interrupted: they
    /// keep their earlier diagnostics) starts: their reports' diagnostics are new from here.
    fn new_attempt(&mut self, named: &[String]) {
        self.attempt_diagnostics = Some(0);
        for name in named {
            self.operation_attempt_diagnostics.insert(name.clone(), 0);
        }
    }

    fn set_state(&mut self, state: ProcessingState, message: &str) {
        self.progress.processing_state = state;
        self.progress.processing_state_message = Some(message.to_string());
    }

    /// Operations whose attempt was cut short (lease timeout, release) wait to start again.
    /// `startedTime` (the first start) stays; the next start sets `attemptTime`.
    fn interrupt_operations(&mut self, names: &[String], time: Timestamp) {
        for p in self.operations_named(names) {
            p.processing_state = ProcessingState::Waiting;
            p.processing_state_message = Some(message::PENDING.into());
            p.percent_complete = None;
            p.updated_time = Some(time);
        }
    }

    fn cancel_operations(&mut self, names: &[String], time: Timestamp) {
        for p in self.operations_named(names) {
            p.processing_state = ProcessingState::Complete;
            p.processing_state_message = Some(message::CANCELLED.into());
            p.completed_time = Some(time);
            p.updated_time = Some(time);
        }
    }

    fn operations_named<'a>(
        &'a mut self,
        names: &'a [String],
    ) -> impl Iterator<Item = &'a mut OperationProgress> + 'a {
        self.progress
            .operation_progress
            .iter_mut()
            .filter(|p| names.iter().any(|n| **n == *p.operation))
    }
}

/// A fresh WAITING progress entry for a new operation of `agenda`, its params copied from the
/// operation (as POP did).
fn new_operation_progress(
    progress_id: &str,
    agenda: &Agenda,
    operation: &Operation,
    time: Timestamp,
) -> OperationProgress {
    OperationProgress {
        id: OperationProgress::id_for(progress_id, &operation.name).into(),
        cid: agenda.cid.as_deref().map(Box::from),
        customer_id: agenda.customer_id.as_str().into(),
        agenda_progress_id: progress_id.into(),
        operation: operation.name.as_str().into(),
        params: operation.params.clone(),
        processing_state: ProcessingState::Waiting,
        added_time: Some(time),
        updated_time: Some(time),
        ..OperationProgress::default()
    }
}

/// WAITING/pending, ready to run again: output and completion of the last run cleared. The
/// attempt count and `startedTime` stay: they count every start over the operation's life and
/// record the first one; the next start sets `attemptTime`.
fn to_pending(p: &mut OperationProgress, time: Timestamp) {
    p.processing_state = ProcessingState::Waiting;
    p.processing_state_message = Some(message::PENDING.into());
    p.percent_complete = None;
    p.result_payload = Payload::NULL;
    p.completed_time = None;
    p.updated_time = Some(time);
}

/// Sets an operation's progress to the values a report produced. Shared by `decide` (to see the
/// outcome of a report before emitting it) and `evolve`, so both agree by construction.
pub(super) fn apply_operation_change(
    p: &mut OperationProgress,
    change: &OperationProgressChanged,
    time: Timestamp,
) {
    p.processing_state = change.state;
    p.processing_state_message = change.message.as_deref().map(Box::from);
    p.percent_complete = change.percent;
    p.attempt_count = change.attempt_count;
    p.attempt_time = change.attempt_time;
    p.started_time = change.started_time;
    p.completed_time = change.completed_time;
    if let Some(params) = &change.params {
        p.params = params.clone();
    }
    if !change.result_payload.is_null() {
        p.result_payload = Payload::from_value(&change.result_payload);
    }
    push_diagnostics(&mut p.diagnostic_events, change.diagnostics.iter().cloned());
    p.updated_time = Some(time);
}

/// Appends diagnostics, keeping the newest [`MAX_DIAGNOSTICS`].
fn push_diagnostics(
    list: &mut Vec<DiagnosticEvent>,
    new: impl IntoIterator<Item = DiagnosticEvent>,
) {
    list.extend(new);
    if list.len() > MAX_DIAGNOSTICS {
        let excess = list.len() - MAX_DIAGNOSTICS;
        list.drain(..excess);
    }
}
