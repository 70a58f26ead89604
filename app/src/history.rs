//! Who did what to an agenda: its stream as a timeline (`agendaHistory`, `pop audit`). Each
//! entry is one event with when it was committed, who caused it (the actor: role and
//! principal, or `system:<process>` for the timed processes), under which correlation id and
//! command, and the agenda's state and percent right after it, folded with the domain's
//! `evolve` exactly as the read models fold it; plus the diagnostics the event added, and what
//! it did to each operation it changed (state, message, diagnostics).
//!
//! Visibility is that of the agenda's event page (`agendaEvents`): the caller's customers, or
//! the lease holder; the stream is read from the write side, so a just-submitted agenda's
//! history is there before the projections have it. A deleted (reaped) agenda has none.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use pop_domain::ProcessingState;
use pop_domain::agenda::{AgendaEvent, AgendaState};
use pop_domain::{Aggregate, DiagnosticEvent};
use pop_projections::{Decoded, DomainEvent};
use pop_store::{Direction, EventMetadata, Position, StoreError};

use crate::App;
use crate::asof::MAX_AS_OF_EVENTS;
use crate::caller::{Action, Caller};
use crate::error::{self, AppError, AppResult};
use crate::limits::MAX_EVENT_PAGE_SIZE;
use crate::resolve::Named;

/// One event of an agenda's history, with the state it left.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub position: Position,
    pub version: u64,
    /// When it took effect: the earliest time an as-of read by time shows it
    /// ([`crate::asof::shown_from`]; auditor61 M1: the commit time was shown, and an as-of
    /// read a microsecond before a row already held its change).
    pub time: DateTime<Utc>,
    /// When the store committed it.
    pub committed_time: DateTime<Utc>,
    pub event_type: String,
    /// `<role>:<principal>` or `system:<process>`; `None` for events written without one.
    pub actor: Option<String>,
    pub cid: Option<String>,
    pub causation_id: Option<Uuid>,
    /// The use case or command that appended the event.
    pub command: Option<String>,
    pub processing_state: ProcessingState,
    pub processing_state_message: Option<String>,
    pub percent_complete: Option<f64>,
    /// The agenda's attempts completed after the event, and its most (auditor25: which
    /// attempt a report, a timeout or a retry belonged to was in the raw events only).
    pub attempts_completed: u32,
    pub maximum_attempts: u32,
    /// The agenda's diagnostics this event added.
    pub diagnostics: Vec<DiagnosticEvent>,
    /// The operations whose state, message or diagnostics this event changed (operations it
    /// added — a submission, an expansion — are not listed), in the agenda's order.
    pub operations: Vec<OperationStep>,
    /// The operations this event added (a submission's, an expansion's), by name: the percent
    /// after an expansion falls, and this says why (auditor17).
    pub added_operations: Vec<String>,
    /// The operations this event removed (a rerun drops what generators added; auditor29:
    /// they were re-added later with no word of their removal), by name.
    pub removed_operations: Vec<String>,
}

/// What one event did to one operation: its state and message after it, and the diagnostics
/// it added (a failure's reason is there).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStep {
    pub operation: String,
    pub processing_state: ProcessingState,
    pub processing_state_message: Option<String>,
    pub diagnostics: Vec<DiagnosticEvent>,
}

/// What a step compares of an operation, as it was before an event.
struct Before {
    state: ProcessingState,
    message: Option<Box<str>>,
    diagnostics: Vec<DiagnosticEvent>,
}

/// The operations an event touches, as they were before it (`None`: not there yet): only
/// those, and only what a step compares (not their payloads and results), so a history costs
/// what its events touch.
fn touched_before(state: &AgendaState, event: &AgendaEvent) -> Vec<(String, Option<Before>)> {
    let operations = &state.progress().operation_progress;
    pop_projections::change::operations_touched(event)
        .into_iter()
        .map(|name| {
            let was = operations.iter().find(|p| *p.operation == *name).map(|p| Before {
                state: p.processing_state,
                message: p.processing_state_message.clone(),
                diagnostics: p.diagnostic_events.clone(),
            });
            (name, was)
        })
        .collect()
}

/// The operations `touched` names that were not there before the event and are now.
fn added_operations(touched: &[(String, Option<Before>)], state: &AgendaState) -> Vec<String> {
    let after = &state.progress().operation_progress;
    touched
        .iter()
        .filter(|(name, was)| was.is_none() && after.iter().any(|p| *p.operation == **name))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The operations `touched` names that were there before the event and are not now.
fn removed_operations(touched: &[(String, Option<Before>)], state: &AgendaState) -> Vec<String> {
    let after = &state.progress().operation_progress;
    touched
        .iter()
        .filter(|(name, was)| was.is_some() && !after.iter().any(|p| *p.operation == **name))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The diagnostics an event appended to a list that read `before` and reads `after` now. A
/// report carries the ones it adds (`carried`: how many; review-s41b: a full list of ten
/// `boom`s with one more `boom` reads as it did), and they are the newest; the diagnostics an
/// event makes itself (a cancel's reason, a timeout, a rerun's mark) are told by position: a
/// list appends and keeps its newest, so `after` is a tail of `before` followed by the new
/// ones. Never "the ones `before` lacks" (auditor28: a later attempt's diagnostic equal to an
/// earlier one's was recorded and not shown); a list an event cleared (a reset) gives what it
/// holds now.
fn appended<'a>(
    before: &[DiagnosticEvent],
    after: &'a [DiagnosticEvent],
    carried: Option<usize>,
) -> &'a [DiagnosticEvent] {
    if let Some(n) = carried {
        return &after[after.len().saturating_sub(n)..];
    }
    let kept = (0..=before.len())
        .find(|&from| after.starts_with(&before[from..]))
        .map_or(0, |from| before.len() - from);
    &after[kept..]
}

/// How many diagnostics a report carries for the agenda, and for each operation it names.
fn carried(event: &AgendaEvent) -> (Option<usize>, Vec<(String, usize)>) {
    match event {
        AgendaEvent::ProgressReported(e) => (
            Some(e.diagnostics.len()),
            e.operations.iter().map(|c| (c.operation.clone(), c.diagnostics.len())).collect(),
        ),
        AgendaEvent::DiagnosticsAdded(e) => (Some(e.diagnostics.len()), Vec::new()),
        _ => (None, Vec::new()),
    }
}

/// The [`OperationStep`]s of the operations `touched` names, against their state now.
fn operation_steps(
    touched: Vec<(String, Option<Before>)>,
    state: &AgendaState,
    carried: &[(String, usize)],
) -> Vec<OperationStep> {
    let after = &state.progress().operation_progress;
    touched
        .into_iter()
        .filter_map(|(name, was)| {
            // Added by this event (a submission, an expansion) or removed by it (a rerun):
            // not a step of it (`added_operations`, `removed_operations`).
            let was = was?;
            let now = after.iter().find(|p| *p.operation == *name)?;
            let count = carried.iter().filter(|(n, _)| *n == name).map(|(_, c)| c).sum();
            let by_report = carried.iter().any(|(n, _)| *n == name).then_some(count);
            let diagnostics =
                appended(&was.diagnostics, &now.diagnostic_events, by_report).to_vec();
            let changed = was.state != now.processing_state
                || was.message != now.processing_state_message
                || !diagnostics.is_empty();
            changed.then(|| OperationStep {
                operation: now.operation.to_string(),
                processing_state: now.processing_state,
                processing_state_message: now
                    .processing_state_message
                    .as_deref()
                    .map(str::to_string),
                diagnostics,
            })
        })
        .collect()
}

/// A page of a history: entries after `after` (a stream version), and whether more follow.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
    /// The last entry's version: `after` for the next page.
    pub end_cursor: Option<String>,
    pub more: bool,
}

const READ_BATCH: usize = 1_000;

impl App {
    /// The history of the agenda `named` names for the caller, from after stream version
    /// `after`, at most `first` entries (default and at most [`MAX_EVENT_PAGE_SIZE`]); `None`
    /// when there is no such agenda the caller may see.
    pub async fn agenda_history(
        &self,
        caller: &Caller,
        named: Named<'_>,
        after: Option<&str>,
        first: Option<i64>,
    ) -> AppResult<Option<History>> {
        caller
            .run(Action::Read, None, async |caller| {
                let first = match first {
                    None => MAX_EVENT_PAGE_SIZE,
                    Some(n) if n >= 1 && n as u64 <= MAX_EVENT_PAGE_SIZE as u64 => n as usize,
                    Some(n) => {
                        return Err(AppError::invalid(
                            "first",
                            format!("{n} is outside 1..={MAX_EVENT_PAGE_SIZE}"),
                        ));
                    }
                };
                let after = after
                    .map(|a| {
                        a.trim().parse::<u64>().map_err(|_| {
                            AppError::invalid("after", format!("{a:?} is not a stream version"))
                        })
                    })
                    .transpose()?;
                let key = match self.resolve(caller, named).await {
                    Ok(key) => key,
                    Err(e) if e.code == crate::Code::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                if !self.sees_agenda_of(caller, named.id, &key).await? {
                    return Ok(None);
                }
                self.history_of(&key, after, first).await
            })
            .await
    }

    /// Folds the stream keyed `key` from its start, keeping the entries after `after`.
    async fn history_of(
        &self,
        key: &str,
        after: Option<u64>,
        first: usize,
    ) -> AppResult<Option<History>> {
        let stream = pop_domain::aggregate::stream_name(pop_domain::agenda::CATEGORY, key);
        let mut state = AgendaState::default();
        let mut entries = Vec::new();
        let mut more = false;
        let mut from = 0u64;
        let mut folded = 0usize;
        // When the events so far took effect: an as-of read by time stops at the first event
        // it leaves out, so an event is shown no earlier than the one before it.
        let mut effect: Option<DateTime<Utc>> = None;
        'read: loop {
            let batch = match self
                .store()
                .read_stream(&stream, from, READ_BATCH, Direction::Forwards)
                .await
            {
                Ok(batch) => batch,
                Err(StoreError::StreamDeleted { .. }) => return Ok(None),
                Err(e) => return Err(error::store(&format!("agenda stream {key:?}"), &e)),
            };
            let Some(last) = batch.last() else { break };
            from = last.version.saturating_add(1);
            for event in &batch {
                if entries.len() == first {
                    more = true;
                    break 'read;
                }
                folded += 1;
                if folded > MAX_AS_OF_EVENTS {
                    return Err(AppError::bad_request(format!(
                        "the agenda has more than {MAX_AS_OF_EVENTS} events; its history is \
                         folded at most that far"
                    )));
                }
                let shown = after.is_none_or(|a| event.version > a);
                let before =
                    if shown { state.progress().diagnostic_events.clone() } else { Vec::new() };
                let mut touched = Vec::new();
                let mut by_report = (None, Vec::new());
                let mut own_time = None;
                match pop_projections::decode(event) {
                    Ok(Decoded::Event { event: DomainEvent::Agenda(e), .. }) => {
                        if shown {
                            touched = touched_before(&state, &e);
                            by_report = carried(&e);
                        }
                        own_time = Some(e.time());
                        state.evolve(&e);
                    }
                    Ok(_) => {}
                    Err(e) => return Err(AppError::internal("folding an agenda's history", &e)),
                }
                let took_effect = crate::asof::shown_from(event, own_time);
                let took_effect = effect.map_or(took_effect, |before| before.max(took_effect));
                effect = Some(took_effect);
                if !shown {
                    continue;
                }
                let metadata = EventMetadata::from_json(&event.metadata).unwrap_or_default();
                let progress = state.progress();
                entries.push(HistoryEntry {
                    position: event.position,
                    version: event.version,
                    time: took_effect,
                    committed_time: event.recorded_at,
                    event_type: event.event_type.to_string(),
                    actor: metadata.actor,
                    cid: metadata.cid,
                    causation_id: metadata.causation_id,
                    command: metadata.command,
                    processing_state: progress.processing_state,
                    processing_state_message: progress.processing_state_message.clone(),
                    percent_complete: progress.percent_complete,
                    attempts_completed: progress.attempts_completed,
                    maximum_attempts: progress.maximum_attempts,
                    diagnostics: appended(&before, &progress.diagnostic_events, by_report.0)
                        .to_vec(),
                    added_operations: added_operations(&touched, &state),
                    removed_operations: removed_operations(&touched, &state),
                    operations: operation_steps(touched, &state, &by_report.1),
                });
            }
        }
        if folded == 0 {
            return Ok(None);
        }
        let end_cursor = entries.last().map(|e| e.version.to_string());
        Ok(Some(History { entries, end_cursor, more }))
    }
}

#[cfg(test)]
mod tests {
    use super::appended;
    use pop_domain::DiagnosticEvent;

    /// What `appended` finds, by message.
    fn added(before: &[&str], after: &[&str]) -> Vec<String> {
        let list = |ms: &[&str]| -> Vec<DiagnosticEvent> {
            ms.iter()
                .map(|m| DiagnosticEvent { message: (*m).into(), ..DiagnosticEvent::default() })
                .collect()
        };
        appended(&list(before), &list(after), None).iter().map(|d| d.message.clone()).collect()
    }

    /// What an event appended, told by position, not by "not there before" (auditor28: a
    /// later attempt's diagnostic equal to an earlier one's was recorded and not shown).
    #[test]
    fn what_an_event_appended_is_told_by_position() {
        assert_eq!(added(&["x"], &["x", "x"]), ["x"]);
        assert_eq!(added(&["y", "x"], &["y", "x", "y", "x"]), ["y", "x"]);
        assert!(added(&["x"], &["x"]).is_empty());
        // The list keeps its newest: the oldest went as the new came.
        assert_eq!(added(&["x", "y"], &["y", "z"]), ["z"]);
        // A list an event cleared (a reset), and one that was empty.
        assert!(added(&["x"], &[]).is_empty());
        assert_eq!(added(&[], &["z"]), ["z"]);
        // What a report carries is what it appended, even to a full list of the same.
        let full: Vec<DiagnosticEvent> = (0..10)
            .map(|_| DiagnosticEvent { message: "boom".into(), ..DiagnosticEvent::default() })
            .collect();
        assert_eq!(appended(&full, &full, Some(1)).len(), 1);
        assert!(appended(&full, &full, None).is_empty(), "by position it cannot tell");
    }
}
