//! Rerun and retry (DOMAIN.md §8): the reset-set vectors, what reset, resumed and removed
//! operations look like afterwards, re-adding, and the bounds of the automatic retry.

mod agenda_support;

use std::collections::BTreeSet;

use agenda_support::*;
use pop_domain::agenda::{
    AgendaError, AgendaEvent, OperationReport, ProgressReport, RerunReset, reset_closure,
};
use pop_domain::{ErrorCode, ProcessingState, message};
use serde_json::json;

use ProcessingState::{Complete, Waiting};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn reset_vectors_of_section_8() {
    let agenda = rerun_vector_agenda();
    for (seeds, reset, removed) in [
        (vec!["3"], vec!["3", "5"], vec![]),
        (vec!["2"], vec!["2", "3"], vec!["4", "5"]),
        (vec!["1"], vec!["1", "2", "3"], vec!["4", "5"]),
    ] {
        let seeds: BTreeSet<String> = seeds.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            reset_closure(&agenda.operations, &seeds),
            (names(&reset), names(&removed)),
            "{seeds:?}"
        );
    }
}

/// The §8 agenda, run to COMPLETE/failed: 1, 2, 3 succeeded, 4 failed, 5 cancelled.
fn vector_agenda_failed() -> Vec<AgendaEvent> {
    let mut c = running(rerun_vector_agenda());
    c.push(report(
        "w1",
        10,
        ops(vec![succeeded("1"), succeeded("2"), succeeded("3"), failed("4")]),
    ));
    history(c)
}

#[test]
fn rerun_events_carry_the_vectors() {
    let given = vector_agenda_failed();
    for (flags, reset, resumed, removed) in [
        (vec!["operationsToReset=3"], vec!["3", "5"], vec!["4"], vec![]),
        (vec!["operationsToReset=2"], vec!["2", "3"], vec![], vec!["4", "5"]),
        (vec!["operationsToReset=1"], vec!["1", "2", "3"], vec![], vec!["4", "5"]),
        (vec!["resetAll"], vec!["1", "2", "3"], vec![], vec!["4", "5"]),
        (vec!["continue"], vec![], vec!["4", "5"], vec![]),
    ] {
        let events = pop_domain::Aggregate::decide(&replay(&given), &rerun(&flags, 20)).unwrap();
        let AgendaEvent::Rerun(e) = &events[0] else { panic!("{events:?}") };
        assert_eq!(
            (&e.reset_operations, &e.resumed_operations, &e.removed_operations),
            (&names(&reset), &names(&resumed), &names(&removed)),
            "{flags:?}"
        );
        assert!(matches!(events[1], AgendaEvent::Readded(_)));
    }
}

#[test]
fn reset_operations_are_cleared_removed_ones_dropped_and_the_agenda_readded() {
    let state = check(
        &vector_agenda_failed(),
        rerun(&["operationsToReset=2"], 20),
        Then::Types(vec!["AgendaRerun", "AgendaReadded"]),
    );
    assert!(state.is_schedulable());
    let op_names: Vec<_> =
        state.progress().operation_progress.iter().map(|p| &*p.operation).collect();
    assert_eq!(op_names, ["1", "2", "3"]);
    assert_eq!(state.agenda().unwrap().operations.len(), 3);
    let one = state.operation("1").unwrap();
    assert_eq!(
        (one.processing_state, one.result_payload.to_value()),
        (Complete, json!({"out": "1"})),
        "1 keeps its result"
    );
    let two = state.operation("2").unwrap();
    assert_eq!(
        (two.processing_state, two.processing_state_message.as_deref()),
        (Waiting, Some("pending"))
    );
    assert!(
        two.result_payload.is_null()
            && two.diagnostic_events.is_empty()
            && two.percent_complete.is_none()
    );
    assert_eq!(two.attempt_count, 1, "attempts over the operation's life are kept");
    assert_eq!(state.progress().percent_complete, Some(33.33));
    assert!(state.progress().completed_time.is_none());
}

#[test]
fn skip_execution_and_do_not_run_leave_the_agenda_pending() {
    let state = check(
        &vector_agenda_failed(),
        rerun(&["continue", "skipExecution"], 20),
        Then::Types(vec!["AgendaRerun"]),
    );
    assert!(state.is(Waiting, message::PENDING));
    assert!(!state.is_schedulable());
}

/// A parked agenda (a `skipExecution` rerun) is started by a later rerun, as POP's clients do
/// (popclient22: every later rerun was refused and nothing else re-adds it).
#[test]
fn a_rerun_starts_an_agenda_a_skip_execution_rerun_parked() {
    let given = history_after(&vector_agenda_failed(), vec![rerun(&["skipExecution"], 20)]);
    assert!(replay(&given).is_parked());
    let state =
        check(&given, rerun(&["continue"], 30), Then::Types(vec!["AgendaRerun", "AgendaReadded"]));
    assert!(state.is_schedulable());
}

#[test]
fn operations_to_reset_must_exist() {
    check(
        &vector_agenda_failed(),
        rerun(&["operationsToReset=2,nine"], 20),
        Then::Refused(ErrorCode::Validation, "\"nine\""),
    );
}

#[test]
fn a_running_agenda_must_be_cancelled_before_a_rerun() {
    let given = history(running(rerun_vector_agenda()));
    check(
        &given,
        rerun(&[], 20),
        Then::Refused(
            ErrorCode::Conflict,
            "cannot rerun an agenda that is WAITING/scheduled: it is queued or running; cancel it \
             first",
        ),
    );
}

#[test]
fn continue_keeps_succeeded_results_and_resumes_the_rest() {
    let state = check(
        &vector_agenda_failed(),
        rerun(&["continue"], 20),
        Then::Types(vec!["AgendaRerun", "AgendaReadded"]),
    );
    assert_eq!(state.operation("3").unwrap().processing_state, Complete);
    let four = state.operation("4").unwrap();
    assert_eq!((four.processing_state, four.diagnostic_events.len()), (Waiting, 1));
    assert_eq!(state.progress().percent_complete, Some(60.0));
}

#[test]
fn retry_is_a_continue_rerun_with_its_own_decision_event() {
    let given = vector_agenda_failed();
    let state = check(
        &given,
        retry(30),
        Then::Types(vec!["AgendaRetryDecided", "AgendaRerun", "AgendaReadded"]),
    );
    let events = pop_domain::Aggregate::decide(&replay(&given), &retry(30)).unwrap();
    let AgendaEvent::RetryDecided(d) = &events[0] else { panic!() };
    assert_eq!((d.attempt, d.maximum_attempts), (2, 3));
    let AgendaEvent::Rerun(r) = &events[1] else { panic!() };
    assert_eq!(r.flags.reset, RerunReset::Continue);
    assert!(state.is_schedulable());
    // Only failed agendas are retried: a cancellation is a person's decision.
    check(
        &history(vec![submit(agenda_of(&["a"], json!({}))), cancel(5)]),
        retry(30),
        Then::Refused(ErrorCode::Conflict, "cannot retry an agenda that is COMPLETE/cancelled"),
    );
}

/// pop: cancelling a failed agenda whose retry is still to come withdraws the retry
/// (ops3am13); one with no attempts left, or cancelled, stays refused.
#[test]
fn cancel_withdraws_a_retry_still_to_come() {
    let given = failed_times(json!({"maximumAttempts": 3}), 1);
    let before = replay(&given);
    assert!(before.can_retry());
    let state = check(&given, cancel(150), Then::Types(vec!["AgendaCancelled"]));
    assert!(state.is_cancelled());
    // The record says the retry was withdrawn (auditor26 A3: it read as any other cancel).
    let events = pop_domain::Aggregate::decide(&before, &cancel(150)).unwrap();
    let AgendaEvent::Cancelled(e) = &events[0] else { panic!("{events:?}") };
    assert!(e.withdrew_retry, "{e:?}");
    assert_eq!(
        state.progress().diagnostic_events.last().map(|d| d.message.as_str()),
        Some("Agenda cancelled, its retry withdrawn: customer asked")
    );
    assert_eq!(state.progress().attempts_completed, 1, "the failed attempt was counted once");
    assert_eq!(state.progress().operation_progress, before.progress().operation_progress);
    let mut cancelled = given.clone();
    cancelled.extend(pop_domain::Aggregate::decide(&replay(&given), &cancel(150)).unwrap());
    check(
        &cancelled,
        retry(10_000),
        Then::Refused(ErrorCode::Conflict, "cannot retry an agenda that is COMPLETE/cancelled"),
    );
    check(
        &cancelled,
        cancel(10_001),
        Then::Refused(ErrorCode::Conflict, "cannot cancel an agenda that is COMPLETE/cancelled"),
    );
    check(
        &failed_times(json!({"maximumAttempts": 1}), 1),
        cancel(150),
        Then::Refused(ErrorCode::Conflict, "cannot cancel an agenda that is COMPLETE/failed"),
    );
}

/// Fails the one-operation agenda `attempts` times, retrying in between.
fn failed_times(agenda_params: serde_json::Value, attempts: u32) -> Vec<AgendaEvent> {
    let mut c = vec![submit(agenda_of(&["a"], agenda_params))];
    for i in 0..attempts as i64 {
        let at = i * 100;
        if i > 0 {
            c.push(retry(at));
        }
        c.extend([
            queue(at + 1),
            claim("w1", "l", at + 2),
            report("w1", at + 3, ops(vec![failed("a")])),
        ]);
    }
    history(c)
}

#[test]
fn retries_stop_at_maximum_attempts() {
    for (agenda_params, maximum) in [
        (json!({}), 3),
        (json!({"maximumAttempts": 5}), 5),
        (json!({"maximumAttempts": "5"}), 5),
        (json!({"maximumAttempts": 50}), 20),
        (json!({"maximumAttempts": "0"}), 1),
    ] {
        let given = failed_times(agenda_params.clone(), maximum);
        let state = replay(&given);
        assert_eq!(state.progress().maximum_attempts, maximum, "{agenda_params}");
        assert_eq!(state.progress().attempts_completed, maximum);
        assert!(!state.can_retry());
        check(
            &given,
            retry(10_000),
            Then::Error(AgendaError::NoAttemptsLeft {
                attempts_completed: maximum,
                maximum_attempts: maximum,
            }),
        );
        if maximum > 1 {
            let before = failed_times(agenda_params.clone(), maximum - 1);
            assert!(replay(&before).can_retry(), "{agenda_params}");
            check(
                &before,
                retry(10_000),
                Then::Types(vec!["AgendaRetryDecided", "AgendaRerun", "AgendaReadded"]),
            );
        }
    }
    assert_eq!(
        AgendaError::NoAttemptsLeft { attempts_completed: 3, maximum_attempts: 3 }.code(),
        ErrorCode::Conflict
    );
}

#[test]
fn re_entry_is_a_new_place_in_the_queue_and_added_time_stays_the_creation_time() {
    let submitted = state_of(vec![submit(agenda_of(&["a"], json!({})))]);
    assert_eq!(submitted.entered_time(), Some(t(0)));
    let failed = || {
        let mut c = running(agenda_of(&["a"], json!({})));
        c.push(report("w1", 10, ops(vec![failed("a")])));
        c
    };
    let entered_after = |extra: Vec<pop_domain::agenda::AgendaCommand>| {
        let mut c = failed();
        c.extend(extra);
        let state = state_of(c);
        assert_eq!(state.progress().added_time, Some(t(0)), "addedTime is the creation time");
        assert_eq!(state.agenda().and_then(|a| a.added_time), Some(t(0)));
        state.entered_time()
    };
    assert_eq!(entered_after(vec![rerun(&[], 100)]), Some(t(100)), "rerun");
    assert_eq!(entered_after(vec![retry(200)]), Some(t(200)), "retry");
    assert_eq!(
        entered_after(vec![rerun(&["skipExecution"], 100)]),
        Some(t(0)),
        "pending is not in the queue"
    );
    let requeued = state_of(vec![
        submit(agenda_of(&["a"], json!({}))),
        queue(1),
        claim("w1", "l1", 2),
        reclaim(400),
    ]);
    assert_eq!(requeued.entered_time(), Some(t(400)), "requeued by the reclaimer");
    let released = state_of(vec![
        submit(agenda_of(&["a"], json!({}))),
        queue(1),
        claim("w1", "l1", 2),
        pop_domain::agenda::AgendaCommand::Release {
            holder: "w1".into(),
            lease_id: "l1".into(),
            now: t(50),
        },
    ]);
    assert_eq!(released.entered_time(), Some(t(50)), "released by its holder");
    // Queueing and claiming do not move it.
    let claimed =
        state_of(vec![submit(agenda_of(&["a"], json!({}))), queue(30), claim("w1", "l1", 40)]);
    assert_eq!(claimed.entered_time(), Some(t(0)));
}

/// review-s40c F3: an executor's agenda-level NOT_RETRYABLE was said of the attempt it ended. A
/// user's rerun runs the agenda again; when that attempt fails for a retryable reason, its
/// retry is due (and a cancel withdraws it), though the old diagnostic stays in the list.
#[test]
fn a_rerun_ends_an_earlier_attempts_not_retryable() {
    use pop_domain::model::status_code::NOT_RETRYABLE;
    let deterministic =
        ProgressReport { diagnostics: vec![no_handler()], ..ops(vec![failed("a")]) };
    let first = history(vec![
        submit(agenda_of(&["a"], json!({"maximumAttempts": 3}))),
        queue(1),
        claim("w1", "l", 2),
        report("w1", 3, deterministic),
    ]);
    let state = replay(&first);
    assert!(state.progress().not_retryable() && !state.progress().retry_due());
    let given = history_after(
        &first,
        vec![
            rerun(&["resetAll"], 10),
            queue(11),
            claim("w1", "l2", 12),
            report("w1", 13, ops(vec![failed("a")])),
        ],
    );
    let state = replay(&given);
    assert_eq!(state.progress().attempts_completed, 2);
    let diagnostics = &state.progress().diagnostic_events;
    assert_eq!(diagnostics[0].status_code.as_deref(), Some(NOT_RETRYABLE), "the record stays");
    assert_eq!(
        diagnostics.last().map(|d| d.message.as_str()),
        Some(message::RERUN_AFTER_NOT_RETRYABLE)
    );
    assert!(!state.progress().not_retryable(), "{diagnostics:?}");
    assert!(state.progress().retry_due());
    check(
        &given,
        retry(100),
        Then::Types(vec!["AgendaRetryDecided", "AgendaRerun", "AgendaReadded"]),
    );
}

/// auditor27: a retried attempt that fails with the same diagnostic as the attempt before
/// records it (it was dropped as a resend, and the log held no reason for that failure); a
/// resend within one attempt still adds nothing.
#[test]
fn a_retried_attempt_records_a_diagnostic_equal_to_the_last_attempts() {
    let given = failed_times(json!({"maximumAttempts": 3}), 2);
    let state = replay(&given);
    assert_eq!(state.progress().attempts_completed, 2);
    let op = &state.progress().operation_progress[0];
    let messages: Vec<&str> = op.diagnostic_events.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, ["a exited with 1", "a exited with 1"], "one per attempt");
    // The executor resends its report after the outcome: nothing new.
    check(&given, report("w1", 150, ops(vec![failed("a")])), Then::Types(vec![]));
    // The agenda's own diagnostics alike, across a reclaim.
    let agenda_level = |at: i64| {
        report(
            "w1",
            at,
            ProgressReport {
                diagnostics: vec![pop_domain::DiagnosticEvent {
                    message: "node lost".into(),
                    ..Default::default()
                }],
                ..ops(vec![executing("a", 10.0)])
            },
        )
    };
    let mut c = vec![submit(agenda_of(&["a"], json!({"maximumAttempts": 3}))), queue(1)];
    c.extend([
        claim("w1", "l", 2),
        agenda_level(3),
        reclaim(400),
        queue(401),
        claim("w1", "l2", 402),
        agenda_level(403),
    ]);
    let state = replay(&history(c));
    let messages: Vec<&str> =
        state.progress().diagnostic_events.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, ["node lost", message::TIMED_OUT, "node lost"]);
}

/// auditor28 F2: an operation's NOT_RETRYABLE was said of the attempt it ended too. After a
/// `continue` rerun resumes the operation (keeping its diagnostics), a failure of the rerun
/// that comes without a diagnostic is retried.
#[test]
fn a_continue_rerun_ends_an_operations_earlier_not_retryable() {
    let deterministic = OperationReport { diagnostics: vec![no_handler()], ..failed("a") };
    let first = history(vec![
        submit(agenda_of(&["a"], json!({"maximumAttempts": 3}))),
        queue(1),
        claim("w1", "l", 2),
        report("w1", 3, ops(vec![deterministic])),
    ]);
    assert!(!replay(&first).progress().retry_due());
    let silent = OperationReport { diagnostics: vec![], ..failed("a") };
    let given = history_after(
        &first,
        vec![
            rerun(&["continue"], 10),
            queue(11),
            claim("w1", "l2", 12),
            report("w1", 13, ops(vec![silent])),
        ],
    );
    let state = replay(&given);
    let op = &state.progress().operation_progress[0];
    assert_eq!(
        op.diagnostic_events.last().map(|d| d.message.as_str()),
        Some(message::RERUN_AFTER_NOT_RETRYABLE),
        "{op:?}"
    );
    assert!(state.progress().retry_due(), "{:?}", state.progress());
}

/// auditor28 F3: an executor that sends back the list it read (POP hands a handler its last
/// progress) repeats the earlier attempts' timed diagnostics: the same time is the same
/// diagnostic, whatever the attempt, and is kept once.
#[test]
fn a_timed_diagnostic_sent_back_in_a_later_attempt_is_kept_once() {
    let timed = |message: &str, at: i64| pop_domain::DiagnosticEvent {
        message: message.into(),
        time: Some(t(at)),
        ..Default::default()
    };
    let first = OperationReport { diagnostics: vec![timed("exit 1", 3)], ..failed("a") };
    let echoed = OperationReport {
        diagnostics: vec![timed("exit 1", 3), timed("exit 2", 13)],
        ..executing("a", 10.0)
    };
    let given = history(vec![
        submit(agenda_of(&["a"], json!({"maximumAttempts": 3}))),
        queue(1),
        claim("w1", "l", 2),
        report("w1", 3, ops(vec![first])),
        retry(10),
        queue(11),
        claim("w1", "l2", 12),
        report("w1", 13, ops(vec![echoed])),
    ]);
    let state = replay(&given);
    let messages: Vec<&str> = state.progress().operation_progress[0]
        .diagnostic_events
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages, ["exit 1", "exit 2"]);
}

/// An executor's diagnostic calling its failure deterministic.
fn no_handler() -> pop_domain::DiagnosticEvent {
    pop_domain::DiagnosticEvent {
        message: "no handler".into(),
        status_code: Some(pop_domain::model::status_code::NOT_RETRYABLE.into()),
        ..Default::default()
    }
}

/// popclient20, review-s41d: an executor's outcome report after the report that completed the
/// agenda, calling the failure NOT_RETRYABLE, takes the due retry away, and its event says so;
/// one that says nothing of it, or comes where no retry was due, does not.
#[test]
fn a_late_outcome_report_calling_the_failure_deterministic_withdraws_the_retry() {
    let outcome = |diagnostics| ProgressReport {
        state: Some(Complete),
        message: Some("failed".into()),
        diagnostics,
        ..ProgressReport::default()
    };
    let withdrew = |given: &[AgendaEvent], diagnostics| {
        let events =
            pop_domain::Aggregate::decide(&replay(given), &report("w1", 200, outcome(diagnostics)))
                .unwrap();
        let [AgendaEvent::DiagnosticsAdded(e)] = events.as_slice() else { panic!("{events:?}") };
        e.withdrew_retry
    };
    let due = failed_times(json!({"maximumAttempts": 3}), 1);
    assert!(replay(&due).progress().retry_due());
    assert!(withdrew(&due, vec![no_handler()]));
    let plain = pop_domain::DiagnosticEvent { message: "exit 1".into(), ..Default::default() };
    assert!(!withdrew(&due, vec![plain]));
    let last = failed_times(json!({"maximumAttempts": 1}), 1);
    assert!(!withdrew(&last, vec![no_handler()]), "no retry was due");
    let state = replay(&history_after(&due, vec![report("w1", 200, outcome(vec![no_handler()]))]));
    assert!(!state.progress().retry_due());
    // The operation's outcome sent again in it, with a diagnostic of its own, does not refuse
    // the report (review-s42: the whole report was refused, and the agenda's reason lost).
    let mut with_operation = outcome(vec![no_handler()]);
    with_operation.operations = vec![OperationReport {
        name: "a".into(),
        state: Complete,
        message: Some("failed".into()),
        diagnostics: vec![pop_domain::DiagnosticEvent {
            message: "encoder: no such codec".into(),
            ..Default::default()
        }],
        ..Default::default()
    }];
    let events =
        pop_domain::Aggregate::decide(&replay(&due), &report("w1", 200, with_operation)).unwrap();
    let [AgendaEvent::DiagnosticsAdded(e)] = events.as_slice() else { panic!("{events:?}") };
    assert!(e.withdrew_retry, "{e:?}");
}
