//! Decides what each agenda command causes, or why it is refused (DOMAIN.md §3, §4, §7–§9).
//! Pure: the state and the command are the only inputs. Every rule that could refuse lives
//! here, so `evolve` can apply any accepted event without checking.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};

use crate::error::ValidationErrors;
use crate::model::{
    Agenda, AgendaInsight, DiagnosticEvent, Operation, OperationProgress, ProcessingState,
    Timestamp, message,
};
use crate::params::Params;
use crate::text::{eq_ignore_case, fold_case};
use crate::validate::{
    MAX_PARAMS_ENTRIES, MAX_PAYLOAD_DEPTH, check_maximum_attempts, depth_exceeds, validate_agenda,
    validate_expansion,
};

use super::command::{AgendaCommand, OperationReport, ProgressReport};
use super::error::AgendaError;
use super::event::*;
use super::evolve::apply_operation_change;
use super::rerun::{RerunFlags, plan_rerun};
use super::state::{
    AgendaState, DEFAULT_MAXIMUM_ATTEMPTS, Lease, MAX_DIAGNOSTICS, RUNNING_MESSAGE,
    maximum_attempts,
};

type Decision = Result<Vec<AgendaEvent>, AgendaError>;

impl AgendaState {
    pub(super) fn decide_command(&self, command: &AgendaCommand) -> Decision {
        let now = ms(command.now());
        if let AgendaCommand::Submit { agenda, insight, .. } = command {
            return self.submit(agenda, insight, now);
        }
        if let AgendaCommand::TakeProgressId { agenda_id, .. } = command {
            return self.take_progress_id(agenda_id, now);
        }
        if !self.exists() {
            return Err(AgendaError::NotFound);
        }
        if self.reaped {
            return match command {
                AgendaCommand::Reap { .. } => Ok(Vec::new()),
                _ => Err(AgendaError::Reaped),
            };
        }
        match command {
            AgendaCommand::Submit { .. } | AgendaCommand::TakeProgressId { .. } => {
                Err(self.illegal(command.verb()))
            }
            AgendaCommand::Queue { .. } => self.queue(now),
            AgendaCommand::Claim { holder, lease_id, lease_expires, .. } => {
                self.claim(holder, lease_id, ms(*lease_expires), now)
            }
            AgendaCommand::ReportProgress { holder, lease_id, lease_expires, report, .. } => {
                self.report(holder, lease_id.as_deref(), ms(*lease_expires), report, now)
            }
            AgendaCommand::Expand { operations, params, .. } => {
                self.expand(operations, params, true, now)
            }
            AgendaCommand::Rerun { flags, .. } => self.rerun(flags, now),
            AgendaCommand::Retry { .. } => self.retry(now),
            AgendaCommand::Cancel { reason, .. } => self.cancel(reason.as_deref(), now),
            AgendaCommand::Reclaim { .. } => self.reclaim(now),
            AgendaCommand::Release { holder, lease_id, .. } => self.release(holder, lease_id, now),
            AgendaCommand::Reap { reason, cutoff, .. } => self.reap(reason, *cutoff, now),
        }
    }

    /// Only a COMPLETE agenda, or a `doNotRun` one waiting for ever (`added`, or `pending`
    /// after a rerun), not updated after `cutoff` (an age exactly at the bound is old enough)
    /// may be reaped.
    fn reap(&self, reason: &str, cutoff: Timestamp, now: Timestamp) -> Decision {
        if !self.is_complete() && !self.is_retired_record() {
            return Err(self.illegal("reap"));
        }
        let updated = self.progress.updated_time;
        if updated.is_some_and(|u| u > cutoff) {
            return Err(AgendaError::NotOldEnough { updated, cutoff });
        }
        Ok(vec![AgendaEvent::Reaped(AgendaReaped {
            time: now,
            reason: reason.to_string(),
            updated_time: updated,
        })])
    }

    /// Takes this stream's name as agenda `agenda_id`'s progress id (see [`super::key`]).
    fn take_progress_id(&self, agenda_id: &str, now: Timestamp) -> Decision {
        if let Some(existing) = self.agenda() {
            return Err(AgendaError::AlreadyExists { agenda_id: existing.id.clone() });
        }
        match self.progress_id_of.as_deref() {
            Some(owner) if owner == agenda_id => Ok(Vec::new()),
            Some(owner) => Err(AgendaError::ProgressIdTaken {
                id: String::new(),
                agenda_id: owner.to_string(),
            }),
            None if agenda_id.trim().is_empty() => Err(AgendaError::invalid(
                "agendaId",
                "the agenda taking the progress id is required",
            )),
            None => Ok(vec![AgendaEvent::ProgressIdTaken(ProgressIdTaken {
                time: now,
                agenda_id: agenda_id.to_string(),
            })]),
        }
    }

    fn submit(&self, agenda: &Agenda, insight: &AgendaInsight, now: Timestamp) -> Decision {
        if let Some(existing) = self.agenda() {
            return Err(AgendaError::AlreadyExists { agenda_id: existing.id.clone() });
        }
        if let Some(owner) = &self.progress_id_of {
            return Err(AgendaError::ProgressIdTaken {
                id: agenda.id.clone(),
                agenda_id: owner.clone(),
            });
        }
        let mut errors = ValidationErrors::new();
        if agenda.id.trim().is_empty() {
            errors.push("id", "the agenda id is required");
        }
        if agenda.progress_id.as_deref().is_none_or(|p| p.trim().is_empty()) {
            errors.push("progressId", "the agenda's progressId is required");
        }
        if insight.insight_id.trim().is_empty() {
            errors.push("agendaInsight.insightId", "the agenda must be bound to an insight");
        }
        if insight.resource_pool_id.trim().is_empty() {
            errors.push(
                "agendaInsight.resourcePoolId",
                "the agenda must be bound to a resource pool",
            );
        }
        // `validate_agenda` names a maximumAttempts that is not an integer.
        let maximum = maximum_attempts(&agenda.params).unwrap_or(DEFAULT_MAXIMUM_ATTEMPTS);
        if let Err(found) = validate_agenda(agenda) {
            merge(&mut errors, found);
        }
        errors.into_result()?;
        let mut agenda = agenda.clone();
        agenda.agenda_insight = Some(insight.clone());
        agenda.added_time = Some(now);
        agenda.updated_time = Some(now);
        Ok(vec![AgendaEvent::Submitted(AgendaSubmitted {
            time: now,
            agenda,
            maximum_attempts: maximum,
        })])
    }

    fn queue(&self, now: Timestamp) -> Decision {
        if !self.is(ProcessingState::Waiting, message::ADDED) {
            return Err(self.illegal("queue"));
        }
        if self.is_do_not_run() {
            return Err(AgendaError::DoNotRun);
        }
        Ok(vec![AgendaEvent::Queued(AgendaQueued { time: now })])
    }

    fn claim(
        &self,
        holder: &str,
        lease_id: &str,
        lease_expires: Timestamp,
        now: Timestamp,
    ) -> Decision {
        let mut errors = ValidationErrors::new();
        if holder.trim().is_empty() {
            errors.push("holder", "the lease holder is required");
        }
        if lease_id.trim().is_empty() {
            errors.push("leaseId", "the lease id is required");
        }
        check_lease_expires(lease_expires, now, &mut errors);
        errors.into_result()?;
        if !self.is_queued() {
            return Err(self.illegal("claim"));
        }
        Ok(vec![AgendaEvent::Claimed(AgendaClaimed {
            time: now,
            holder: holder.to_string(),
            lease_id: lease_id.to_string(),
            lease_expires,
        })])
    }

    /// The lease check of every executor report: the agenda must be running under this
    /// holder's current lease. A lease that expired but was not yet reclaimed still counts:
    /// the late report is the best news the reclaimer could get.
    fn check_holder(&self, holder: &str, lease_id: Option<&str>) -> Result<&Lease, AgendaError> {
        if self.is_cancelled() {
            return Err(AgendaError::AgendaCancelled);
        }
        if self.is_complete() {
            return Err(AgendaError::AgendaComplete { message: self.message().to_string() });
        }
        let lease = match self.lease() {
            Some(lease) if self.is_leased() => lease,
            _ => {
                return Err(AgendaError::LeaseLost {
                    holder: holder.to_string(),
                    state: self.processing_state(),
                    message: self.message().to_string(),
                });
            }
        };
        if lease.holder != holder || lease_id.is_some_and(|id| id != lease.lease_id) {
            return Err(AgendaError::LeaseSuperseded {
                holder: holder.to_string(),
                lease_id: lease_id.map(str::to_string),
                current_holder: lease.holder.clone(),
                current_lease_id: lease.lease_id.clone(),
            });
        }
        Ok(lease)
    }

    fn report(
        &self,
        holder: &str,
        lease_id: Option<&str>,
        lease_expires: Timestamp,
        report: &ProgressReport,
        now: Timestamp,
    ) -> Decision {
        if self.is_complete() && !self.is_cancelled() {
            return self.late_report(holder, report, now);
        }
        self.check_holder(holder, lease_id)?;
        // An operation the agenda does not have is added to it by the report, as POP's server
        // made its progress on the fly: POP's executor reports the operations a generator
        // made without expanding the agenda (`logOnly`), and resends them with every report;
        // refusing the whole report lost every heartbeat until the running agenda was
        // reclaimed (popclient13 C13-1), and leaving the operation out let the agenda
        // complete while it still ran. The expansion is checked as any (names, the count).
        // Each item's operation, found once (the validation reads the same).
        let index = self.operation_index(report.operations.len());
        let found: Vec<Option<usize>> =
            report.operations.iter().map(|r| index.find(&r.name)).collect();
        // Where each unknown item is in the report (its errors are said there).
        let unknown_at: Vec<usize> = (0..found.len()).filter(|&i| found[i].is_none()).collect();
        let names: std::collections::HashSet<&str> = match self.agenda() {
            Some(a) if !unknown_at.is_empty() => {
                a.operations.iter().map(|o| o.name.as_str()).collect()
            }
            _ => std::collections::HashSet::new(),
        };
        let unknown: Vec<Operation> = unknown_at
            .iter()
            .map(|&i| &report.operations[i])
            .map(|r| {
                // Its generator, when the report names one of this agenda's operations (POP's
                // generated operations carry `generatedOperationParent`): a rerun that resets
                // the generator (or everything) then removes it, as any generated operation,
                // and the generator makes it again.
                let mut params = Params::default();
                let parent = crate::params::keys::GENERATED_OPERATION_PARENT;
                if let Some(generator) = r.params.get_str(parent).filter(|g| names.contains(g)) {
                    params.insert(parent, generator.to_string());
                }
                Operation {
                    name: r.name.clone(),
                    op_type: String::new(),
                    id: None,
                    payload: crate::payload::Payload::NULL,
                    params,
                }
            })
            .collect();
        // Past twice the customer's memory quota a report adds no operations (hostile42 H3: one
        // report grew an agenda from 8 operations to 998 while its customer was 53 times past
        // the quota): refused, as an expansion is then.
        if let (Some(quota), Some(&at)) = (&report.over_quota, unknown_at.first()) {
            return Err(AgendaError::invalid(
                format!("operationProgress[{at}].operation"),
                format!(
                    "{:?} is not an operation of this agenda, and a report adds none now: {quota}",
                    report.operations[at].name
                ),
            ));
        }
        if !unknown.is_empty() {
            let mut events =
                self.expand(&unknown, &Params::default(), false, now).map_err(|e| match e {
                    AgendaError::Invalid(mut errors) => {
                        // The expansion's fields (`operations[j].name`) are the report's
                        // (`operationProgress[i].operation`; hostile19: the error named a list
                        // the client never sent).
                        for e in &mut errors.errors {
                            e.field = report_field(&e.field, &unknown_at);
                        }
                        AgendaError::Invalid(errors)
                    }
                    other => other,
                })?;
            let mut expanded = self.clone();
            for event in &events {
                expanded.apply(event);
            }
            events.extend(expanded.report(holder, lease_id, lease_expires, report, now)?);
            return Ok(events);
        }
        // Results and params the agenda may not keep taken out, each with a diagnostic saying
        // why (`notes`: added after the executor's own, whole); diagnostics cut to its share.
        let max_text = self.diagnostic_text_bytes(report.over_quota.is_some());
        let sent = report;
        let fitted = self.fit_report(report, &found);
        let (report, notes, agenda_notes) = match &fitted {
            Some(f) => (&f.report, f.notes.as_slice(), f.agenda_notes.as_slice()),
            None => (report, &[][..], &[][..]),
        };
        let targets = self.validate_report(report, sent, &found, lease_expires, now)?;
        let lease_expires = self.renewed_until(lease_expires, now);

        // Work on a copy of the operations so the outcome is judged on the state the report
        // leads to, with the same code evolve runs.
        let mut operations = self.progress.operation_progress.clone();
        let mut changes = Vec::new();
        // Whether an operation changes state (what `log_quota_passed` always writes).
        let mut moved = false;
        // An entry that would move its operation back (COMPLETE to WAITING or EXECUTING,
        // EXECUTING to WAITING) in a report that changes something else is stale: two POP
        // executors of one agenda each send the whole progress they know, so each report holds
        // the other's operation as it last saw it (popclient61 M1: one of each pair was
        // refused whole, its operation's outcome and result lost, the agenda stalled for a
        // lease and ran the operation again). It is skipped and the rest taken. A report whose
        // every entry moves back, and that says nothing of the agenda (its outcome, diagnostics
        // or params), is refused for it as before: an executor told it cannot run an operation
        // again. One with an entry that does not move back, changed or not (the sender's own
        // operation, a heartbeat), is taken and renews the lease (repopclient61 F1: a whole-
        // progress heartbeat with nothing new was refused, the lease ran out mid-run).
        let mut stale = None;
        let mut current_entries = 0usize;
        for (i, (r, index)) in report.operations.iter().zip(targets).enumerate() {
            let Some(current) = operations.get_mut(index) else { continue };
            let attempt = self.operation_diagnostics_this_attempt(&current.operation);
            let mut change = match operation_change(current, r, now, attempt, max_text) {
                Ok(change) => change,
                Err(e) if r.state < current.processing_state => {
                    stale.get_or_insert(e.at_item(i));
                    continue;
                }
                Err(e) => return Err(e.at_item(i)),
            };
            current_entries += 1;
            let said: Vec<DiagnosticEvent> =
                notes.iter().filter(|(at, _)| *at == i).map(|(_, d)| d.clone()).collect();
            if !said.is_empty() {
                let whole = crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES;
                let mut fresh = new_diagnostics(&current.diagnostic_events, attempt, &said, whole);
                if let Some(change) = &change {
                    fresh.retain(|d| !change.diagnostics.contains(d));
                }
                if !fresh.is_empty() {
                    change.get_or_insert_with(|| kept(current)).diagnostics.extend(fresh);
                }
            }
            if let Some(change) = change {
                moved |= change.state != current.processing_state;
                apply_operation_change(current, &change, now);
                changes.push(change);
            }
        }
        let says_of_the_agenda = report.state == Some(ProcessingState::Complete)
            || !report.diagnostics.is_empty()
            || !report.params.is_empty();
        if let Some(stale) = stale
            && current_entries == 0
            && !says_of_the_agenda
        {
            return Err(stale);
        }

        let reported_complete = report.state == Some(ProcessingState::Complete);
        let reported_success =
            reported_complete && report.message.as_deref().is_some_and(message::is_succeeded);
        let all_succeeded = !operations.is_empty() && operations.iter().all(succeeded);
        if reported_success && !all_succeeded {
            let pending = operations.iter().find(|p| !succeeded(p));
            let detail = pending.map(|p| {
                format!(
                    "; operation {:?} is {}{}",
                    p.operation,
                    p.processing_state.as_str(),
                    p.processing_state_message
                        .as_ref()
                        .map(|m| format!("/{m}"))
                        .unwrap_or_default()
                )
            });
            return Err(AgendaError::invalid(
                "processingStateMessage",
                format!(
                    "the agenda is reported succeeded but not every operation succeeded{}",
                    detail.unwrap_or_default()
                ),
            ));
        }
        let any_running =
            operations.iter().any(|p| p.processing_state == ProcessingState::Executing);
        let any_failed = operations
            .iter()
            .any(|p| p.processing_state == ProcessingState::Complete && !succeeded(p));
        // §4.2: the executor's own failure (e.g. its pod was evicted after the last operation)
        // fails the agenda even when every operation succeeded.
        let outcome = if (reported_complete && !reported_success) || (any_failed && !any_running) {
            Some(message::FAILED)
        } else if all_succeeded {
            Some(message::SUCCEEDED)
        } else {
            None
        };

        if report.log_quota_passed
            && outcome.is_none()
            && !moved
            && self.processing_state() == ProcessingState::Executing
            && self.lease_renewed_within_fifth(now)
        {
            return Ok(Vec::new());
        }

        let executing_message = match (&report.message, reported_complete) {
            (Some(m), false) if is_free_text(m) => cut_message(m, max_text),
            _ if self.processing_state() == ProcessingState::Executing => {
                self.message().to_string()
            }
            _ => RUNNING_MESSAGE.to_string(),
        };
        let reported = AgendaProgressReported {
            time: now,
            holder: holder.to_string(),
            lease_expires,
            message: executing_message,
            started_time: match self.progress.started_time {
                Some(_) => None,
                None => Some(report.started.map(ms).unwrap_or(now)),
            },
            diagnostics: {
                let recorded = &self.progress.diagnostic_events;
                let mut fresh = new_diagnostics(
                    recorded,
                    self.attempt_diagnostics,
                    &report.diagnostics,
                    max_text,
                );
                let whole = crate::validate::MAX_DIAGNOSTIC_TEXT_BYTES;
                for note in new_diagnostics(recorded, self.attempt_diagnostics, agenda_notes, whole)
                {
                    if !fresh.contains(&note) {
                        fresh.push(note);
                    }
                }
                fresh
            },
            operations: changes,
            params: self.progress.params.merged_with(&self.reported_agenda_params(&report.params)),
        };
        let mut events: Vec<AgendaEvent> =
            in_parts(reported).into_iter().map(AgendaEvent::ProgressReported).collect();
        if let Some(outcome) = outcome {
            events.push(AgendaEvent::Completed(AgendaCompleted {
                time: now,
                message: outcome.to_string(),
                completed_time: report.completed.map(ms).unwrap_or(now),
                attempts_completed: self.progress.attempts_completed.saturating_add(1),
                cancelled_operations: unfinished(&operations),
            }));
        }
        Ok(events)
    }

    /// A report that reaches an agenda its operations' reports already completed (§4.2).
    /// POP's executor reports the operations, then the agenda's own outcome in a report of its
    /// own (`COMPLETE/succeeded`, or `COMPLETE/failed` with the reason and a stack trace), and
    /// sends again a report it got no answer to; POP took both. Such a report agrees with what
    /// happened — the same outcome, or no outcome but operations that all agree and one that
    /// completed (none changed; operations it never ran, reported WAITING, say nothing) — and
    /// is accepted: a no-op, or, for the first outcome report after the completion, the agenda
    /// diagnostics it adds ([`AgendaDiagnosticsAdded`]). A heartbeat is refused: an executor
    /// still running an agenda that ended must learn it. Only the holder of the lease the
    /// agenda completed under may send one ([`AgendaState::finished_by`]), until anything else
    /// happens to it. Anything else is refused as before: the agenda is already COMPLETE.
    fn late_report(&self, holder: &str, report: &ProgressReport, now: Timestamp) -> Decision {
        let refused = || AgendaError::AgendaComplete { message: self.message().to_string() };
        // Only from the executor the agenda completed under (its lease's holder), and only
        // until anything else happens to the agenda.
        if self.finished_by() != Some(holder) {
            return Err(refused());
        }
        // A result not kept when it was first reported is not kept when it comes again, and the
        // operation and the agenda it failed are failed in the report too (review-s49: the
        // outcome report of an agenda failed so was refused, its diagnostics lost).
        let index = self.operation_index(report.operations.len());
        let found: Vec<Option<usize>> =
            report.operations.iter().map(|r| index.find(&r.name)).collect();
        let fitted = self.fit_report(report, &found);
        let report = fitted.as_ref().map_or(report, |f| &f.report);
        let max_text = self.diagnostic_text_bytes(report.over_quota.is_some());
        let outcome_report = report.state == Some(ProcessingState::Complete);
        match report.state {
            // A report of operations sent again names one that completed; anything else (a
            // heartbeat, with or without its operations) is a stale executor's, which must hear
            // that the agenda ended and stop.
            None | Some(ProcessingState::Executing)
                if !report.operations.iter().any(|r| r.state == ProcessingState::Complete) =>
            {
                return Err(refused());
            }
            None | Some(ProcessingState::Executing) => {}
            Some(ProcessingState::Complete) => {
                let reported_success = report.message.as_deref().is_some_and(message::is_succeeded);
                if reported_success != self.is_succeeded() {
                    return Err(refused());
                }
            }
            Some(ProcessingState::Waiting) => return Err(refused()),
        }
        for r in &report.operations {
            let current = index
                .find(&r.name)
                .and_then(|i| self.progress.operation_progress.get(i))
                .ok_or_else(refused)?;
            // An operation the sender saw waiting or running, that finished since (another
            // executor's, in a whole-progress report): its view is stale, not a claim
            // (repopclient61 F2: the outcome report and its reason were refused).
            if r.state == ProcessingState::Waiting || r.state < current.processing_state {
                continue;
            }
            let attempt = self.operation_diagnostics_this_attempt(&current.operation);
            match operation_change(current, r, now, attempt, max_text) {
                Ok(None) => {}
                // The operation's outcome sent again with diagnostics of its own: after the
                // agenda completed they are not recorded (its diagnostics come once, below),
                // and the report is not refused for them (review-s42: a POP executor's late
                // outcome report was refused whole, and the agenda's reason in it lost).
                Ok(Some(change))
                    if change.params.is_none()
                        && change.state == current.processing_state
                        && change.message.as_deref()
                            == current.processing_state_message.as_deref() => {}
                _ => return Err(refused()),
            }
        }
        // Diagnostics come with the executor's outcome report, once per completion: a stream of
        // late reports must neither grow the log nor push the real reason out of the capped
        // list (nor keep the agenda from the data reaper by moving its updatedTime).
        if !outcome_report || self.late_diagnostics {
            return Ok(Vec::new());
        }
        let diagnostics = new_diagnostics(
            &self.progress.diagnostic_events,
            self.attempt_diagnostics,
            &report.diagnostics,
            max_text,
        );
        if diagnostics.is_empty() {
            return Ok(Vec::new());
        }
        // The agenda's own last diagnostic decides whether its executor called the failure
        // deterministic (`AgendaProgress::not_retryable`): these come last.
        let withdrew_retry = self.progress.retry_due()
            && diagnostics.last().is_some_and(crate::model::marked_not_retryable);
        Ok(vec![AgendaEvent::DiagnosticsAdded(AgendaDiagnosticsAdded {
            time: now,
            diagnostics,
            withdrew_retry,
        })])
    }

    /// How to find the operations a report of `items` names ([`OperationIndex`]).
    fn operation_index(&self, items: usize) -> OperationIndex<'_> {
        let ops = &self.progress.operation_progress;
        if ops.len().saturating_mul(items) <= SCAN_PAIRS {
            return OperationIndex::Scan(ops);
        }
        let mut index = std::collections::HashMap::with_capacity(ops.len());
        for (i, p) in ops.iter().enumerate() {
            index.entry(fold_case(&p.operation)).or_insert(i);
        }
        OperationIndex::Map(index)
    }

    /// Until when a report at `now` renews the lease: `asked` (now + the server's lease), or
    /// now + the length of the lease as claimed when that is later. The holder sized its
    /// heartbeat from the lease it was handed: a server restarted with a shorter `--lease`
    /// renewed it for less than the next heartbeat, the reclaimer took it back while the
    /// executor still ran, and the agenda ran twice (ops3am5).
    /// Whether the lease was renewed (claimed, or by a written report) within the last fifth
    /// of its length before `now`: a report not written then leaves it at least four fifths of
    /// its length ahead (`ProgressReport::log_quota_passed`). False for a lease of unknown length.
    fn lease_renewed_within_fifth(&self, now: Timestamp) -> bool {
        let Some(lease) = &self.lease else { return false };
        let Some(length) = lease.length_ms.filter(|l| *l > 0) else { return false };
        let left = lease.expires.signed_duration_since(now).num_milliseconds();
        left > length - length / 5
    }

    fn renewed_until(&self, asked: Timestamp, now: Timestamp) -> Timestamp {
        // Checked: a length read from a log written elsewhere (an import) may be anything.
        let held = self
            .lease
            .as_ref()
            .and_then(|l| l.length_ms)
            .and_then(chrono::Duration::try_milliseconds)
            .and_then(|length| now.checked_add_signed(length));
        held.map_or(asked, |held| asked.max(held))
    }

    /// Input checks of a report, every problem listed. Returns the index of each reported
    /// operation in the agenda's progress list. `sent`: the report as sent, before results and
    /// params the agenda may not keep were taken out of `report` (an operation reported
    /// WAITING is judged on what it was sent with: review55 M1, a result too large to keep was
    /// dropped with a note about its size, and the report answered 200).
    fn validate_report(
        &self,
        report: &ProgressReport,
        sent: &ProgressReport,
        found: &[Option<usize>],
        lease_expires: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<usize>, AgendaError> {
        let mut errors = ValidationErrors::new();
        check_lease_expires(lease_expires, now, &mut errors);
        match (report.state, report.message.as_deref()) {
            (Some(ProcessingState::Complete), m) if m.is_none_or(|m| m.trim().is_empty()) => errors
                .push(
                    "processingStateMessage",
                    "a COMPLETE agenda needs processingStateMessage succeeded or failed",
                ),
            // As an operation's (hostile35: "success" failed the agenda, answered 200).
            (Some(ProcessingState::Complete), Some(m))
                if !(message::is_succeeded(m) || message::is_failed(m)) =>
            {
                errors.push(
                    "processingStateMessage",
                    format!(
                        "the agenda is COMPLETE with processingStateMessage {m:?}, which is \
                         neither succeeded nor failed{}",
                        cancel_hint(m)
                    ),
                )
            }
            _ => {}
        }
        if report.state == Some(ProcessingState::Waiting) {
            // An executor holds the agenda: it is EXECUTING until the executor reports it
            // COMPLETE. WAITING is the server's state for an agenda no executor holds, so a
            // report of it could only be ignored, which would hide the executor's mistake.
            errors.push(
                "processingState",
                "an executor reports an agenda EXECUTING or COMPLETE; WAITING is the server's state for an agenda no executor holds (operations may be reported WAITING)",
            );
        }
        check_reported_params(
            &self.progress.params,
            &self.reported_agenda_params(&report.params),
            report.params_bytes,
            None,
            &mut errors,
        );
        let mut seen = BTreeSet::new();
        let mut targets = Vec::with_capacity(report.operations.len());
        for (i, r) in report.operations.iter().enumerate() {
            let field = format!("operationProgress[{i}]");
            let found = found.get(i).copied().flatten();
            match found {
                Some(at) => targets.push(at),
                None => errors.push(
                    format!("{field}.operation"),
                    format!("{:?} is not an operation of this agenda", r.name),
                ),
            }
            if !seen.insert(fold_case(&r.name)) {
                errors.push(
                    format!("{field}.operation"),
                    format!("operation {:?} is reported twice in one report", r.name),
                );
            }
            let current = found.and_then(|i| self.progress.operation_progress.get(i));
            if let Some(current) = current {
                check_reported_params(
                    &current.params,
                    &r.params,
                    report.params_bytes,
                    Some((&field, &r.name)),
                    &mut errors,
                );
            }
            // An operation sent back as it is recorded (POP's executor echoes the whole
            // progress) is no new word, whatever a server before this rule recorded.
            let echoed = current.is_some_and(|c| {
                c.processing_state == ProcessingState::Complete
                    && c.processing_state_message.as_deref() == r.message.as_deref()
            });
            if r.percent.is_some_and(|p| !p.is_finite() || p < 0.0) {
                errors.push(
                    format!("{field}.percentComplete"),
                    format!("the percent of operation {:?} must be a number ≥ 0", r.name),
                );
            }
            if let Some(current) = current.filter(|c| {
                r.state == ProcessingState::Waiting
                    && c.processing_state == ProcessingState::Waiting
            }) {
                check_waiting_report(
                    &field,
                    sent.operations.get(i).unwrap_or(r),
                    current,
                    &mut errors,
                );
            }
            match (r.state, r.message.as_deref()) {
                (ProcessingState::Complete, m) if m.is_none_or(|m| m.trim().is_empty()) => errors.push(
                    format!("{field}.processingStateMessage"),
                    format!(
                        "operation {:?} is COMPLETE without processingStateMessage (succeeded or failed)",
                        r.name
                    ),
                ),
                // Any other word would count as a failure and record no reason (popclient23:
                // "success" and "done" failed agendas that answered 200; popclient24: so did
                // "cancelled", which only pop itself records, when it cancels).
                (ProcessingState::Complete, Some(m))
                    if !(echoed || message::is_succeeded(m) || message::is_failed(m)) =>
                {
                    errors.push(
                        format!("{field}.processingStateMessage"),
                        format!(
                            "operation {:?} is COMPLETE with processingStateMessage {m:?}, which \
                             is neither succeeded nor failed{}",
                            r.name,
                            cancel_hint(m)
                        ),
                    )
                }
                _ => {}
            }
        }
        errors.into_result()?;
        Ok(targets)
    }

    /// `bounded`: held to [`super::bounds::MAX_DEFINITION_BYTES_PER_AGENDA`] (an expansion a
    /// client asks for; the operations a report adds are not: they carry a name and at most
    /// their generator, and refusing them would refuse the report, which POP's executor sends
    /// again until the lease runs out).
    fn expand(
        &self,
        operations: &[Operation],
        params: &Params,
        bounded: bool,
        now: Timestamp,
    ) -> Decision {
        if self.is_complete() {
            return Err(self.illegal("expand"));
        }
        let Some(agenda) = self.agenda() else { return Err(AgendaError::NotFound) };
        let mut merged = agenda.params.clone();
        merged.merge(params);
        // The same expansion sent again: every operation is already the agenda's, exactly as
        // sent, and the params change nothing. Nothing to do, as for a report sent again (a
        // generator's resend after a lost answer: `pop worker` resends on a timeout, and on an
        // UNAVAILABLE whose commit may be stored; popclient61 M2: refused for names already
        // used, the generator failed and its agenda with it).
        // The agenda's operations by name, to find one sent again in constant time (review61b
        // L3: compared with each in turn). More than an agenda may hold is refused below.
        let existing: std::collections::HashMap<&str, &Operation> =
            if operations.len() <= crate::validate::MAX_OPERATIONS {
                agenda.operations.iter().map(|o| (o.name.as_str(), o)).collect()
            } else {
                Default::default()
            };
        let had = |o: &Operation| existing.get(o.name.as_str()).is_some_and(|e| *e == o);
        if !operations.is_empty() && operations.iter().all(had) && merged == agenda.params {
            return Ok(Vec::new());
        }
        // Sent again with more: the operations the agenda already has exactly as sent are
        // taken as added, the others added (repopclient61 F5: a resend with one operation more
        // was refused whole for the names already used). One of a used name and another
        // definition is refused as before.
        let fresh: Vec<Operation>;
        let operations = if operations.iter().any(had) {
            fresh = operations.iter().filter(|o| !had(o)).cloned().collect();
            &fresh[..]
        } else {
            operations
        };
        let mut errors = ValidationErrors::new();
        if let Err(found) = validate_expansion(agenda, operations) {
            merge(&mut errors, found);
        }
        let maximum = check_maximum_attempts(&merged, &mut errors);
        // The priority sent, not one stored before the rule (review-s43: an agenda accepted
        // with `"priority": 6.5` could no longer be expanded).
        crate::validate::check_priority(params, &mut errors);
        // The definition stays within what one answer carries beside its progress (hostile41
        // M1: expanded past 16 MiB, the agenda could no longer be read whole).
        if bounded && (!operations.is_empty() || !params.is_empty()) {
            let bytes = crate::validate::json_bytes(agenda)
                + crate::validate::json_bytes(operations)
                + crate::validate::json_bytes(params);
            if bytes > super::bounds::MAX_DEFINITION_BYTES_PER_AGENDA {
                errors.push(
                    "operations",
                    format!(
                        "the agenda's definition would take {bytes} bytes as JSON with these; \
                         an agenda's definition takes at most {}",
                        super::bounds::MAX_DEFINITION_BYTES_PER_AGENDA
                    ),
                );
            }
        }
        errors.into_result()?;
        if operations.is_empty() && params.is_empty() {
            // A generator that found nothing to add: nothing happened.
            return Ok(Vec::new());
        }
        Ok(vec![AgendaEvent::OperationsExpanded(OperationsExpanded {
            time: now,
            operations: operations.to_vec(),
            params: params.clone(),
            maximum_attempts: maximum,
        })])
    }

    /// Rerun is allowed from any COMPLETE agenda: §3 names failed and cancelled, and POP's main
    /// use of rerun is running (parts of) a succeeded agenda again. A running agenda must be
    /// cancelled first, so two executors never work on one agenda. An agenda a `skipExecution`
    /// rerun left parked (WAITING/pending, in no queue, held by no one) may be rerun too: that
    /// is how POP's clients start it later (popclient22: it stayed parked for good).
    fn rerun(&self, flags: &RerunFlags, now: Timestamp) -> Decision {
        if !self.is_complete() && !self.is_parked() {
            return Err(AgendaError::RerunWhileLive {
                state: self.processing_state(),
                message: self.message().to_string(),
            });
        }
        self.rerun_events(flags.clone(), now)
    }

    fn rerun_events(&self, flags: RerunFlags, now: Timestamp) -> Decision {
        let Some(agenda) = self.agenda() else { return Err(AgendaError::NotFound) };
        let plan = plan_rerun(&agenda.operations, &self.progress.operation_progress, &flags.reset)?;
        let readd = !flags.skip_execution && !self.is_do_not_run();
        let mut events = vec![AgendaEvent::Rerun(AgendaRerun {
            time: now,
            flags,
            reset_operations: plan.reset,
            resumed_operations: plan.resumed,
            removed_operations: plan.removed,
        })];
        if readd {
            events.push(AgendaEvent::Readded(AgendaReadded { time: now }));
        }
        Ok(events)
    }

    fn retry(&self, now: Timestamp) -> Decision {
        if !self.is_failed() {
            return Err(self.illegal("retry"));
        }
        if self.attempts_left() == 0 {
            return Err(AgendaError::NoAttemptsLeft {
                attempts_completed: self.progress.attempts_completed,
                maximum_attempts: self.maximum_attempts(),
            });
        }
        if self.progress.not_retryable() {
            return Err(AgendaError::NotRetryable);
        }
        let mut events = vec![AgendaEvent::RetryDecided(AgendaRetryDecided {
            time: now,
            attempt: self.progress.attempts_completed.saturating_add(1),
            maximum_attempts: self.maximum_attempts(),
        })];
        events.extend(self.rerun_events(RerunFlags::continue_(), now)?);
        Ok(events)
    }

    /// Ends an agenda that is not complete. **pop:** also a failed agenda whose automatic
    /// retry is still to come: that withdraws the retry (ops3am13: during a retry storm the
    /// only way to stop one agenda's retries was to restart the server without the retry
    /// process); the failed attempt stays the last one counted, and its operations as they
    /// ended.
    fn cancel(&self, reason: Option<&str>, now: Timestamp) -> Decision {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty()).map(str::to_string);
        if self.progress.retry_due() {
            return Ok(vec![AgendaEvent::Cancelled(AgendaCancelled {
                time: now,
                reason,
                attempts_completed: self.progress.attempts_completed,
                cancelled_operations: Vec::new(),
                withdrew_retry: true,
            })]);
        }
        if self.is_complete() {
            return Err(self.illegal("cancel"));
        }
        Ok(vec![AgendaEvent::Cancelled(AgendaCancelled {
            time: now,
            reason,
            attempts_completed: self.progress.attempts_completed.saturating_add(1),
            cancelled_operations: unfinished(&self.progress.operation_progress),
            withdrew_retry: false,
        })])
    }

    /// Ends an expired lease. The timed-out attempt counts as a completed attempt, so an agenda
    /// whose workers always die is requeued at most `maximumAttempts - 1` times and then fails;
    /// it is counted once, which is why the failure that may follow carries the same count.
    fn reclaim(&self, now: Timestamp) -> Decision {
        if !self.is_leased() {
            return Err(self.illegal("reclaim"));
        }
        if let Some(lease) = self.lease().filter(|l| l.expires > now) {
            return Err(AgendaError::LeaseNotExpired {
                holder: lease.holder.clone(),
                expires: lease.expires,
            });
        }
        let (holder, lease_id, lease_expires) = match self.lease() {
            Some(l) => (l.holder.clone(), l.lease_id.clone(), l.expires),
            None => (String::new(), String::new(), now),
        };
        let attempts_completed = self.progress.attempts_completed.saturating_add(1);
        let interrupted = self.executing_operations();
        let mut events = vec![AgendaEvent::TimedOut(AgendaTimedOut {
            time: now,
            holder,
            lease_id,
            lease_expires,
            attempts_completed,
            interrupted_operations: interrupted,
        })];
        if attempts_completed < self.maximum_attempts() {
            events.push(AgendaEvent::Requeued(AgendaRequeued { time: now }));
        } else {
            events.push(AgendaEvent::Completed(AgendaCompleted {
                time: now,
                message: message::FAILED.to_string(),
                completed_time: now,
                attempts_completed,
                cancelled_operations: unfinished(&self.progress.operation_progress),
            }));
        }
        Ok(events)
    }

    /// Hands the agenda back from its current lease holder (see the module doc). The lease id
    /// is required: unlike a POP report, a release always comes from a client that knows it.
    fn release(&self, holder: &str, lease_id: &str, now: Timestamp) -> Decision {
        let mut errors = ValidationErrors::new();
        if holder.trim().is_empty() {
            errors.push("holder", "the lease holder is required");
        }
        if lease_id.trim().is_empty() {
            errors.push("leaseId", "the lease id of the release is required");
        }
        errors.into_result()?;
        let lease = self.check_holder(holder, Some(lease_id))?;
        Ok(vec![AgendaEvent::Released(AgendaReleased {
            time: now,
            holder: lease.holder.clone(),
            lease_id: lease.lease_id.clone(),
            interrupted_operations: self.executing_operations(),
        })])
    }

    /// The operations running now: a timeout or a release interrupts them.
    fn executing_operations(&self) -> Vec<String> {
        self.progress
            .operation_progress
            .iter()
            .filter(|p| p.processing_state == ProcessingState::Executing)
            .map(|p| p.operation.to_string())
            .collect()
    }

    fn illegal(&self, command: &'static str) -> AgendaError {
        AgendaError::IllegalTransition {
            command,
            state: self.processing_state(),
            message: self.message().to_string(),
        }
    }
}

/// What a report changes in one operation, or `None` when it changes nothing (POP executors
/// resend every entry with every report). Operations only move WAITING → EXECUTING → COMPLETE;
/// a resent COMPLETE with the same outcome is accepted and changes nothing.
/// `attempt`: how many of the operation's newest diagnostics its current attempt recorded
/// (`None`: all), the ones a resent diagnostic is looked for among.
fn operation_change(
    current: &OperationProgress,
    r: &OperationReport,
    now: Timestamp,
    attempt: Option<usize>,
    max_text: usize,
) -> Result<Option<OperationProgressChanged>, AgendaError> {
    use ProcessingState::{Complete, Executing, Waiting};
    let refuse = || AgendaError::OperationTransition {
        operation: current.operation.to_string(),
        from: current.processing_state,
        from_message: current.processing_state_message.as_deref().map(str::to_string),
        to: r.state,
        to_message: r
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| r.state == Complete && !m.is_empty())
            .map(str::to_string),
        at: None,
    };
    let params = current.params.merged_with(&r.params);
    let starts = match (current.processing_state, r.state) {
        // Params and diagnostics are recorded; anything of a run was refused when the report
        // was checked (`check_waiting_report`).
        // Its diagnostics are compared with every one it holds, not the current attempt's
        // alone: an operation waiting has made none this attempt, and a POP executor echoing
        // the progress it was handed after a retry sends the earlier attempts' back (reprobe55
        // M1: each was recorded again).
        (Waiting, Waiting) => {
            let diagnostics =
                new_diagnostics(&current.diagnostic_events, None, &r.diagnostics, max_text);
            if params.is_none() && diagnostics.is_empty() {
                return Ok(None);
            }
            return Ok(Some(OperationProgressChanged { diagnostics, params, ..kept(current) }));
        }
        (Waiting, Executing | Complete) => true,
        (Executing, Executing | Complete) => false,
        (Complete, Complete) => {
            let same = match (&current.processing_state_message, &r.message) {
                (Some(a), Some(b)) => eq_ignore_case(a.trim(), b.trim()),
                _ => false,
            };
            if !same {
                return Err(refuse());
            }
            // A resent outcome keeps the first result (later operations read it), but the
            // diagnostics it adds are recorded (popclient21: a resend's new diagnostic was
            // answered 200 and dropped).
            let diagnostics =
                new_diagnostics(&current.diagnostic_events, attempt, &r.diagnostics, max_text);
            if params.is_none() && diagnostics.is_empty() {
                return Ok(None);
            }
            return Ok(Some(OperationProgressChanged { diagnostics, params, ..kept(current) }));
        }
        (Executing, Waiting) | (Complete, Waiting | Executing) => return Err(refuse()),
    };
    let started = r.started.map(ms).unwrap_or(now);
    let message = r
        .message
        .as_deref()
        .filter(|m| r.state == Complete || is_free_text(m))
        .map(|m| if r.state == Complete { m.to_string() } else { cut_message(m, max_text) });
    let is_success = r.state == Complete && message.as_deref().is_some_and(message::is_succeeded);
    let percent = if is_success {
        Some(100.0)
    } else {
        r.percent.map(super::state::round_percent).or(current.percent_complete)
    };
    let result_payload = r
        .result_payload
        .clone()
        .filter(|v| !v.is_null() && *v != current.result_payload)
        .unwrap_or_default();
    let change = OperationProgressChanged {
        operation: current.operation.to_string(),
        state: r.state,
        message: if r.state == Executing && message.is_none() {
            current.processing_state_message.as_deref().map(str::to_string).filter(|_| !starts)
        } else {
            message
        },
        percent,
        diagnostics: new_diagnostics(&current.diagnostic_events, attempt, &r.diagnostics, max_text),
        result_payload,
        attempt_count: if starts {
            current.attempt_count.saturating_add(1)
        } else {
            current.attempt_count
        },
        // `startedTime` is the first start over the operation's life (DOMAIN.md §2: the seed's
        // meaning); `attemptTime` the start of the current attempt.
        attempt_time: if starts { Some(started) } else { current.attempt_time },
        started_time: current.started_time.or(Some(started)),
        completed_time: if r.state == Complete {
            Some(r.completed.map(ms).unwrap_or(now))
        } else {
            None
        },
        params,
    };
    let unchanged = change.state == current.processing_state
        && change.message.as_deref() == current.processing_state_message.as_deref()
        && change.percent == current.percent_complete
        && change.diagnostics.is_empty()
        && change.result_payload.is_null()
        && change.completed_time == current.completed_time
        && change.params.is_none();
    Ok(if unchanged { None } else { Some(change) })
}

/// An operation reported WAITING that is WAITING has not run, so it has no result, progress or
/// times of a run: one that says otherwise is refused, each field named, rather than dropped
/// without a word (popclient54 L4: a result sent with WAITING was answered 200 and lost). What
/// is recorded is sent back as it is (POP's executor echoes the progress it was handed), and a
/// percent of 0 says nothing.
fn check_waiting_report(
    field: &str,
    r: &OperationReport,
    current: &OperationProgress,
    errors: &mut ValidationErrors,
) {
    let hint = "report the operation EXECUTING or COMPLETE with what it did";
    if r.result_payload.as_ref().is_some_and(|v| !v.is_null() && current.result_payload != *v) {
        errors.push(
            format!("{field}.resultPayload"),
            format!(
                "operation {:?} is reported WAITING with a resultPayload: an operation that has \
                 not run has no result; {hint}",
                r.name
            ),
        );
    }
    if r.percent.is_some_and(|p| p > 0.0 && Some(p) != current.percent_complete) {
        errors.push(
            format!("{field}.percentComplete"),
            format!(
                "operation {:?} is reported WAITING at {}%: an operation that has not run has \
                 made no progress; {hint}",
                r.name,
                r.percent.unwrap_or_default()
            ),
        );
    }
    for (name, sent, recorded) in [
        ("startedTime", r.started, current.started_time),
        ("completedTime", r.completed, current.completed_time),
    ] {
        if sent.is_some_and(|t| Some(ms(t)) != recorded.map(ms)) {
            errors.push(
                format!("{field}.{name}"),
                format!(
                    "operation {:?} is reported WAITING with a {name} it does not have: an \
                     operation that has not run has no times of a run; {hint}",
                    r.name
                ),
            );
        }
    }
}

/// A change that records nothing new: what a change of only params or diagnostics starts from.
fn kept(current: &OperationProgress) -> OperationProgressChanged {
    OperationProgressChanged {
        operation: current.operation.to_string(),
        state: current.processing_state,
        message: current.processing_state_message.as_deref().map(str::to_string),
        percent: current.percent_complete,
        diagnostics: Vec::new(),
        result_payload: serde_json::Value::Null,
        attempt_count: current.attempt_count,
        attempt_time: current.attempt_time,
        started_time: current.started_time,
        completed_time: current.completed_time,
        params: None,
    }
}

/// Whether an executor's message may stand as EXECUTING text: not blank and not one of the
/// messages of §3 that mean another state. `EXECUTING/failed` would read as a failure to
/// anything that looks at messages only, such as the ProgressSummary of §4.3.
fn is_free_text(m: &str) -> bool {
    const RESERVED: [&str; 7] = [
        message::ADDED,
        message::QUEUED,
        message::SCHEDULED,
        message::PENDING,
        message::SUCCEEDED,
        message::FAILED,
        message::CANCELLED,
    ];
    !m.trim().is_empty() && !RESERVED.iter().any(|r| eq_ignore_case(m.trim(), r))
}

fn succeeded(p: &OperationProgress) -> bool {
    p.processing_state == ProcessingState::Complete
        && p.processing_state_message.as_deref().is_some_and(message::is_succeeded)
}

/// Operations that have not finished: a completion cancels them.
fn unfinished(operations: &[OperationProgress]) -> Vec<String> {
    operations
        .iter()
        .filter(|p| p.processing_state != ProcessingState::Complete)
        .map(|p| p.operation.to_string())
        .collect()
}

/// The report's field for a field of the expansion of its unknown items (`unknown_at`: where
/// each is in the report): `operations[j]…` is `operationProgress[i].operation`, the count
/// (`operations`) is `operationProgress`.
fn report_field(field: &str, unknown_at: &[usize]) -> String {
    let item = field
        .strip_prefix("operations[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(j, _)| j.parse::<usize>().ok())
        .and_then(|j| unknown_at.get(j));
    match item {
        Some(i) => format!("operationProgress[{i}].operation"),
        None => "operationProgress".to_string(),
    }
}

/// Most (operation, reported item) pairs compared one by one ([`OperationIndex::Scan`]); past
/// it the names are folded once into a map.
const SCAN_PAIRS: usize = 256;

/// Where each operation of an agenda is in its progress list, by name (case-insensitively; the
/// first of a name): a scan for the small agendas and reports of nearly every call (no
/// allocation), a map of folded names past [`SCAN_PAIRS`] (hostile19: a report of 1,000 long
/// non-ASCII names took 12 s of a runtime thread, comparing every pair with two allocations).
enum OperationIndex<'a> {
    Scan(&'a [OperationProgress]),
    Map(std::collections::HashMap<String, usize>),
}

impl OperationIndex<'_> {
    fn find(&self, name: &str) -> Option<usize> {
        match self {
            OperationIndex::Scan(ops) => {
                ops.iter().position(|p| eq_ignore_case(&p.operation, name))
            }
            OperationIndex::Map(index) => index.get(&fold_case(name)).copied(),
        }
    }
}

/// The reported diagnostics not already recorded (POP executors resend their whole list),
/// the newest [`MAX_DIAGNOSTICS`] at most, times truncated like every stored time, texts cut to
/// `max_text` bytes ([`AgendaState::diagnostic_text_bytes`]). A reported diagnostic is known
/// for a recorded one however short that was cut ([`crate::validate::is_cut_of`]; review-s49,
/// popclient29: an agenda that gained operations cut shorter, and every resent diagnostic was
/// recorded again).
///
/// Only the newest [`MAX_DIAGNOSTICS`] reported ones are looked at: no more can be kept, and
/// de-duplicating is quadratic (diagnostics are compared whole; they hold JSON, which has no
/// hash), so a report of 40,000 would cost seconds of CPU. Truncating first also means that
/// a resent list whose newest entries are already recorded adds nothing, rather than
/// bringing back older entries that were dropped from the stored ten.
///
/// An untimed diagnostic is new unless the current attempt recorded it (`this_attempt`: how many
/// of the newest recorded are the current attempt's; auditor27: a retried attempt failing with
/// the first one's words had them dropped); a timed one unless any attempt did (auditor28: an
/// executor that sends back the list it read — POP hands a handler its last progress — doubled
/// the earlier attempts' entries).
fn new_diagnostics(
    recorded: &[DiagnosticEvent],
    this_attempt: Option<usize>,
    reported: &[DiagnosticEvent],
    max_text: usize,
) -> Vec<DiagnosticEvent> {
    let attempt = super::state::newest(recorded, this_attempt);
    let newest = &reported[reported.len().saturating_sub(MAX_DIAGNOSTICS)..];
    let mut fresh: Vec<DiagnosticEvent> = Vec::new();
    for d in newest {
        let d = DiagnosticEvent { time: d.time.map(ms), ..d.clone() };
        let seen = if d.time.is_some() { recorded } else { attempt };
        if seen.iter().any(|r| crate::validate::is_cut_of(r, &d)) {
            continue;
        }
        let mut d = d;
        crate::validate::cut_diagnostic(&mut d, max_text);
        if !fresh.contains(&d) {
            fresh.push(d);
        }
    }
    let excess = fresh.len().saturating_sub(MAX_DIAGNOSTICS);
    fresh.drain(..excess);
    fresh
}

/// The most bytes (JSON) one `AgendaProgressReported` event takes when its report can be cut
/// into parts: under the store's limit of 1 MiB per event (`pop_store::limits`, held together
/// by a compile-time assertion of the application layer), with room for an operation change
/// larger than a part (one that passes 1 MiB alone, its result, diagnostics and params
/// together, is refused by the store).
pub const REPORT_PART_BYTES: usize = 768 << 10;

/// A report's event, or, when it is larger than [`REPORT_PART_BYTES`], the same in parts
/// (popclient27: two results each within the limit on a result were refused together, as one
/// event over 1 MiB; POP's executor sent the same report again, and the agenda failed when its
/// attempts ran out). The first part carries the agenda's diagnostics and start; each carries
/// whole operation changes, in order. Applied in turn they make the state the one event would.
fn in_parts(reported: AgendaProgressReported) -> Vec<AgendaProgressReported> {
    if crate::validate::json_bytes(&reported) <= REPORT_PART_BYTES {
        return vec![reported];
    }
    let mut part = reported;
    let changes = std::mem::take(&mut part.operations);
    let mut size = crate::validate::json_bytes(&part);
    let mut parts = Vec::new();
    for change in changes {
        let bytes = crate::validate::json_bytes(&change) + 1;
        // A part that holds anything (the agenda's diagnostics too) is closed before it would
        // pass the bound (review-s47: diagnostics and the first change together did).
        let holds =
            !part.operations.is_empty() || !part.diagnostics.is_empty() || part.params.is_some();
        if holds && size + bytes > REPORT_PART_BYTES {
            let next = AgendaProgressReported {
                time: part.time,
                holder: part.holder.clone(),
                lease_expires: part.lease_expires,
                message: part.message.clone(),
                started_time: None,
                diagnostics: Vec::new(),
                operations: Vec::new(),
                params: None,
            };
            parts.push(std::mem::replace(&mut part, next));
            size = crate::validate::json_bytes(&part);
        }
        size += bytes;
        part.operations.push(change);
    }
    parts.push(part);
    parts
}

/// A free-text `processingStateMessage` as kept: at most [`super::bounds::MAX_MESSAGE_BYTES`]
/// as stored (no more than a diagnostic's text keeps: `max_text`), its start and end around a
/// note of the cut.
fn cut_message(m: &str, max_text: usize) -> String {
    let mut m = m.to_string();
    crate::text::cut_middle_json(&mut m, max_text.min(super::bounds::MAX_MESSAGE_BYTES));
    m
}

/// What an executor's `cancelled` is told: only pop cancels, when someone cancels the agenda.
fn cancel_hint(word: &str) -> &'static str {
    if message::is_cancelled(word) {
        " (an executor does not cancel: cancel the agenda, and pop records its operations cancelled)"
    } else {
        ""
    }
}

/// Reported params must stay within the bounds a submission has: the merged map at most
/// [`MAX_PARAMS_ENTRIES`] entries and `max_bytes` bytes, no value nested deeper than
/// [`MAX_PAYLOAD_DEPTH`].
fn check_reported_params(
    current: &Params,
    reported: &Params,
    max_bytes: Option<usize>,
    operation: Option<(&str, &str)>,
    errors: &mut ValidationErrors,
) {
    // `operation`: the report's field of the operation and its name; `None`, the agenda's own.
    // Said only when there is something to say (a report of 1,000 operations made two
    // strings an operation for nothing).
    let field = || match operation {
        Some((field, _)) => format!("{field}.params"),
        None => "params".to_string(),
    };
    let subject = || match operation {
        Some((_, name)) => format!("operation {name:?}"),
        None => "the agenda".to_string(),
    };
    // Only a report that changes the map, and only one that makes it larger past the bound:
    // POP's executor echoes an operation's params with every report, and params already past
    // it (grown before this check, or kept under a lower --max-params-bytes) must not lock the
    // agenda out (review-s47).
    let merged = max_bytes.and_then(|max| Some((max, current.merged_with(reported)?)));
    if let Some((max, merged)) = merged {
        let bytes = crate::validate::json_bytes(&merged);
        if bytes > max && bytes > crate::validate::json_bytes(current) {
            errors.push(
                field(),
                format!(
                    "{}'s params would take {bytes} bytes as JSON with \
                     these merged into the ones it has; at most {max} are allowed (the \
                     server's --max-params-bytes)",
                    subject()
                ),
            );
        }
    }
    let added = reported.iter().filter(|(key, _)| current.get(key).is_none()).count();
    if current.len() + added > MAX_PARAMS_ENTRIES {
        errors.push(
            field(),
            format!(
                "{} would have {} params; at most {MAX_PARAMS_ENTRIES} are allowed",
                subject(),
                current.len() + added
            ),
        );
    }
    for (key, value) in reported.iter() {
        if depth_exceeds(value, MAX_PAYLOAD_DEPTH) {
            errors.push(
                format!("{}.{key}", field()),
                format!(
                    "{} reports param {key:?} nested deeper than {MAX_PAYLOAD_DEPTH} levels",
                    subject()
                ),
            );
        }
    }
}

fn check_lease_expires(lease_expires: Timestamp, now: Timestamp, errors: &mut ValidationErrors) {
    if lease_expires <= now {
        errors.push(
            "leaseExpires",
            format!(
                "the lease must expire after now ({}), not at {}",
                now.to_rfc3339(),
                lease_expires.to_rfc3339()
            ),
        );
    }
}

fn merge(into: &mut ValidationErrors, from: ValidationErrors) {
    for e in from.errors {
        into.push(e.field, e.message);
    }
    into.omitted += from.omitted;
}

/// Times are stored as epoch milliseconds; truncating here makes a decoded event equal the
/// event that was decided, so a replay from the store equals the state the writer saw.
pub(super) fn ms(t: Timestamp) -> Timestamp {
    Utc.timestamp_millis_opt(t.timestamp_millis()).single().unwrap_or(t)
}
