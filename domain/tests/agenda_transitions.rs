//! Every processing-state transition of DOMAIN.md §3, allowed and refused, the lease rules of
//! §7 and the reclaimer of §9, as `check(given, when, then)` tables.

mod agenda_support;

use agenda_support::*;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaEvent, AgendaQueued, ProgressReport};
use pop_domain::{Aggregate, ErrorCode, EventCodec, ProcessingState, message};
use serde_json::json;

use ProcessingState::{Complete, Executing, Waiting};

fn two_ops() -> pop_domain::Agenda {
    agenda_of(&["a", "b"], json!({}))
}

/// Histories ending in each state of §3, named for the table.
fn in_state(name: &str) -> Vec<AgendaEvent> {
    let base = || vec![submit(two_ops()), queue(1), claim("w1", "l1", 2)];
    let commands = match name {
        "added" => vec![submit(two_ops())],
        "queued" => vec![submit(two_ops()), queue(1)],
        "scheduled" => base(),
        "executing" => {
            let mut c = base();
            c.push(report("w1", 10, ops(vec![executing("a", 50.0)])));
            c
        }
        "succeeded" | "failed" | "pending" => {
            let mut c = base();
            let outcome = if name == "succeeded" { succeeded("b") } else { failed("b") };
            c.push(report("w1", 10, ops(vec![succeeded("a"), outcome])));
            if name == "pending" {
                c.push(rerun(&["skipExecution"], 20));
            }
            c
        }
        "cancelled" => vec![submit(two_ops()), cancel(5)],
        other => panic!("no history for {other}"),
    };
    history(commands)
}

const ALL_STATES: [&str; 8] =
    ["added", "queued", "scheduled", "executing", "succeeded", "failed", "cancelled", "pending"];

fn state_label(name: &str) -> (ProcessingState, &'static str) {
    match name {
        "added" => (Waiting, "added"),
        "queued" => (Waiting, "queued"),
        "scheduled" => (Waiting, "scheduled"),
        "executing" => (Executing, "Running Operations"),
        "succeeded" => (Complete, "succeeded"),
        "failed" => (Complete, "failed"),
        "cancelled" => (Complete, "cancelled"),
        "pending" => (Waiting, "pending"),
        _ => unreachable!(),
    }
}

#[test]
fn the_histories_reach_the_states_they_are_named_for() {
    for name in ALL_STATES {
        let state = replay(&in_state(name));
        let (s, m) = state_label(name);
        assert_eq!((state.processing_state(), state.message()), (s, m), "{name}");
    }
}

/// One row: from which states a command is allowed; from every other state it must be refused
/// with CONFLICT. `command` builds the command at a time after every history.
struct Rule {
    command: fn() -> AgendaCommand,
    allowed_from: &'static [&'static str],
    then_types: &'static [&'static str],
}

#[test]
fn every_command_is_allowed_exactly_from_the_states_of_section_3() {
    let rules = [
        Rule { command: || queue(100), allowed_from: &["added"], then_types: &["AgendaQueued"] },
        Rule {
            command: || claim("w9", "l9", 100),
            allowed_from: &["queued"],
            then_types: &["AgendaClaimed"],
        },
        Rule {
            // A report that changes something (a late one that agrees with a completed
            // agenda is taken as a no-op: `a_late_report_that_agrees_with_the_outcome_is_taken`).
            command: || report("w1", 100, ops(vec![executing("a", 60.0)])),
            allowed_from: &["scheduled", "executing"],
            then_types: &["AgendaProgressReported"],
        },
        Rule {
            // pop: "failed" here has its retry still to come, which the cancel withdraws
            // (`cancel_withdraws_a_retry_still_to_come`).
            command: || cancel(100),
            allowed_from: &["added", "queued", "scheduled", "executing", "pending", "failed"],
            then_types: &["AgendaCancelled"],
        },
        Rule {
            // pop: and "pending", where a skipExecution rerun parks an agenda, in no queue and
            // held by no one, for a later rerun to start (popclient22).
            command: || rerun(&[], 100),
            allowed_from: &["succeeded", "failed", "cancelled", "pending"],
            then_types: &["AgendaRerun", "AgendaReadded"],
        },
        Rule {
            command: || retry(100),
            allowed_from: &["failed"],
            then_types: &["AgendaRetryDecided", "AgendaRerun", "AgendaReadded"],
        },
        Rule {
            // Leases of the histories expire at t(302) or t(310).
            command: || reclaim(1000),
            allowed_from: &["scheduled", "executing"],
            then_types: &["AgendaTimedOut", "AgendaRequeued"],
        },
        Rule {
            command: || expand(vec![op("c", json!({}), json!({}))], 100),
            allowed_from: &["added", "queued", "scheduled", "executing", "pending"],
            then_types: &["OperationsExpanded"],
        },
        Rule {
            command: || release("w1", "l1", 100),
            allowed_from: &["scheduled", "executing"],
            then_types: &["AgendaReleased"],
        },
        Rule { command: || submit(two_ops()), allowed_from: &[], then_types: &[] },
    ];
    for rule in &rules {
        for from in ALL_STATES {
            let given = in_state(from);
            let when = (rule.command)();
            let verb = when.verb();
            let result = replay(&given).decide(&when);
            if rule.allowed_from.contains(&from) {
                let types: Vec<_> = match &result {
                    Ok(events) => events.iter().map(pop_domain::EventCodec::event_type).collect(),
                    Err(e) => panic!("{verb} from {from} refused: {e}"),
                };
                assert_eq!(types, rule.then_types, "{verb} from {from}");
            } else {
                match result {
                    Err(e) => assert_eq!(e.code(), ErrorCode::Conflict, "{verb} from {from}: {e}"),
                    Ok(events) => panic!("{verb} from {from} accepted: {events:?}"),
                }
            }
        }
    }
}

#[test]
fn every_command_on_a_missing_agenda_is_not_found() {
    for when in [
        queue(1),
        claim("w1", "l1", 1),
        report("w1", 1, ProgressReport::default()),
        expand(vec![], 1),
        rerun(&[], 1),
        retry(1),
        cancel(1),
        reclaim(1),
        release("w1", "l1", 1),
    ] {
        check(&[], when, Then::Error(AgendaError::NotFound));
    }
    assert_eq!(AgendaError::NotFound.code(), ErrorCode::NotFound);
}

#[test]
fn submission_records_a_waiting_added_agenda_with_waiting_operations() {
    let state = check(&[], submit(two_ops()), Then::Types(vec!["AgendaSubmitted"]));
    let p = state.progress();
    assert_eq!(
        (p.processing_state, p.processing_state_message.as_deref()),
        (Waiting, Some("added"))
    );
    assert_eq!(p.id, "progress-1");
    assert_eq!(p.agenda_id, "agenda-1");
    assert_eq!(p.customer_id, "acme");
    assert_eq!(p.maximum_attempts, 3);
    assert_eq!(p.percent_complete, Some(0.0));
    assert_eq!(p.agenda_insight, Some(insight()));
    assert_eq!(p.added_time, Some(t(0)));
    let ids: Vec<_> = p.operation_progress.iter().map(|o| &*o.id).collect();
    assert_eq!(ids, ["progress-1-a", "progress-1-b"]);
    assert!(p.operation_progress.iter().all(|o| o.processing_state == Waiting
        && &*o.customer_id == "acme"
        && &*o.agenda_progress_id == "progress-1"));
    assert!(state.is_schedulable());
    assert_eq!(state.agenda().and_then(|a| a.agenda_insight.clone()), Some(insight()));
}

#[test]
fn submission_is_validated_and_only_once() {
    let given = history(vec![submit(two_ops())]);
    check(&given, submit(two_ops()), Then::Refused(ErrorCode::Conflict, "already exists"));

    let mut bad = agenda_of(&["a", "A"], json!({"maximumAttempts": "often"}));
    bad.progress_id = None;
    let state = check(&[], submit(bad), Then::Refused(ErrorCode::Validation, "progressId"));
    assert!(!state.exists());
    let Err(AgendaError::Invalid(errors)) =
        replay(&[]).decide(&submit(agenda_of(&["a", "A"], json!({"maximumAttempts": "often"}))))
    else {
        panic!("expected validation errors")
    };
    let fields: Vec<_> = errors.errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"params.maximumAttempts"), "{fields:?}");
    assert!(fields.iter().any(|f| f.starts_with("operations[1]")), "{fields:?}");
}

#[test]
fn do_not_run_agendas_are_recorded_but_never_queued() {
    let given = history(vec![submit(agenda_of(&["a"], json!({"doNotRun": "true"})))]);
    let state = replay(&given);
    assert!(state.is(Waiting, message::ADDED));
    assert!(!state.is_schedulable());
    check(&given, queue(1), Then::Error(AgendaError::DoNotRun));
}

#[test]
fn queue_and_claim_record_time_and_lease() {
    let given = history(vec![submit(two_ops())]);
    check(&given, queue(7), Then::Events(vec![AgendaEvent::Queued(AgendaQueued { time: t(7) })]));
    let given = history(vec![submit(two_ops()), queue(1)]);
    let state = check(&given, claim("w1", "l1", 2), Then::Types(vec!["AgendaClaimed"]));
    assert!(state.is(Waiting, message::SCHEDULED));
    let lease = state.lease().unwrap();
    assert_eq!(
        (lease.holder.as_str(), lease.lease_id.as_str(), lease.expires),
        ("w1", "l1", t(302))
    );
    // A lease that is already over is bad input.
    let when = AgendaCommand::Claim {
        holder: "w1".into(),
        lease_id: "l1".into(),
        lease_expires: t(2),
        now: t(2),
    };
    check(&given, when, Then::Refused(ErrorCode::Validation, "leaseExpires"));
}

#[test]
fn only_the_current_lease_holder_may_report() {
    let given = in_state("scheduled");
    check(
        &given,
        report("w2", 10, ProgressReport::default()),
        Then::Error(AgendaError::LeaseSuperseded {
            holder: "w2".into(),
            lease_id: None,
            current_holder: "w1".into(),
            current_lease_id: "l1".into(),
        }),
    );
    check(
        &given,
        report_with_lease("w1", "l0", 10),
        Then::Refused(ErrorCode::Conflict, "superseded"),
    );
    let state = check(
        &given,
        report_with_lease("w1", "l1", 10),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(state.processing_state(), Executing);
    assert_eq!(state.message(), "Running Operations");
    assert_eq!(state.lease().unwrap().expires, t(310), "each report renews the lease");
    assert_eq!(state.progress().started_time, Some(t(10)));
}

/// A report renews the lease for at least as long as it was when claimed: the holder sized
/// its heartbeat from it, and a server restarted with a shorter lease renewed it for less than
/// the next heartbeat, so the reclaimer took it back from a running executor (ops3am5). A
/// longer lease asked for is taken.
#[test]
fn a_renewal_lasts_at_least_as_long_as_the_lease_claimed() {
    let given = in_state("scheduled"); // claimed at 2 for 300 s
    let shorter = AgendaCommand::ReportProgress {
        holder: "w1".into(),
        lease_id: Some("l1".into()),
        lease_expires: t(30 + 6),
        report: ProgressReport::default(),
        now: t(30),
    };
    let state = check(&given, shorter, Then::Types(vec!["AgendaProgressReported"]));
    assert_eq!(state.lease().unwrap().expires, t(330), "renewed for the claimed 300 s");
    let longer = AgendaCommand::ReportProgress {
        holder: "w1".into(),
        lease_id: Some("l1".into()),
        lease_expires: t(30 + 900),
        report: ProgressReport::default(),
        now: t(30),
    };
    let state = check(&given, longer, Then::Types(vec!["AgendaProgressReported"]));
    assert_eq!(state.lease().unwrap().expires, t(930));
}

#[test]
fn reports_on_queued_or_added_agendas_have_lost_their_lease() {
    for from in ["added", "queued", "pending"] {
        check(
            &in_state(from),
            report("w1", 100, ProgressReport::default()),
            Then::Refused(ErrorCode::Conflict, "no longer holds"),
        );
    }
}

#[test]
fn reports_after_cancel_complete_and_reclaim_are_rejected() {
    let mut given = in_state("executing");
    given.extend(replay(&given).decide(&cancel(20)).unwrap());
    check(
        &given,
        report("w1", 30, ProgressReport::default()),
        Then::Error(AgendaError::AgendaCancelled),
    );

    // A completed agenda refuses a report that disagrees with it (see
    // `a_late_report_that_agrees_with_the_outcome_is_taken` for one that agrees).
    let says = |state, message: &str| ProgressReport {
        state: Some(state),
        message: Some(message.into()),
        ..ProgressReport::default()
    };
    check(
        &in_state("succeeded"),
        report("w1", 30, says(Complete, "failed")),
        Then::Error(AgendaError::AgendaComplete { message: "succeeded".into() }),
    );
    check(
        &in_state("failed"),
        report("w1", 30, says(Complete, "succeeded")),
        Then::Error(AgendaError::AgendaComplete { message: "failed".into() }),
    );
    check(
        &in_state("succeeded"),
        report("w1", 30, ops(vec![executing("a", 50.0)])),
        Then::Error(AgendaError::AgendaComplete { message: "succeeded".into() }),
    );

    // Reclaimed and requeued: the old holder lost its lease ...
    let given = history(vec![submit(two_ops()), queue(1), claim("w1", "l1", 2), reclaim(400)]);
    let state = replay(&given);
    assert!(state.is(Waiting, message::ADDED));
    check(
        &given,
        report("w1", 401, ProgressReport::default()),
        Then::Refused(ErrorCode::Conflict, "no longer holds"),
    );
    // ... and once another worker claims it, the old lease is superseded, even by the same
    // worker under its old lease id.
    let given = history(vec![
        submit(two_ops()),
        queue(1),
        claim("w1", "l1", 2),
        reclaim(400),
        queue(401),
        claim("w1", "l2", 402),
    ]);
    check(
        &given,
        report_with_lease("w1", "l1", 403),
        Then::Refused(ErrorCode::Conflict, "superseded"),
    );
    check(&given, report_with_lease("w1", "l2", 403), Then::Types(vec!["AgendaProgressReported"]));
}

#[test]
fn a_late_report_before_the_reclaimer_ran_is_accepted() {
    // The lease expired at t(302) but nobody reclaimed it: still the current lease.
    check(
        &in_state("scheduled"),
        report("w1", 900, ProgressReport::default()),
        Then::Types(vec!["AgendaProgressReported"]),
    );
}

#[test]
fn cancel_completes_with_cancelled_and_cancels_unfinished_operations() {
    let state = check(&in_state("executing"), cancel(20), Then::Types(vec!["AgendaCancelled"]));
    assert!(state.is_cancelled());
    assert!(state.lease().is_none());
    assert_eq!(state.progress().attempts_completed, 1);
    assert_eq!(state.progress().completed_time, Some(t(20)));
    assert_eq!(op_state(&state, "a"), (Complete, "cancelled".into()));
    assert_eq!(op_state(&state, "b"), (Complete, "cancelled".into()));
    assert_eq!(state.progress().percent_complete, Some(0.0), "cancelled work is not done work");
    assert!(state.progress().diagnostic_events[0].message.contains("customer asked"));
}

#[test]
fn reclaim_needs_an_expired_lease() {
    check(
        &in_state("scheduled"),
        reclaim(301),
        Then::Error(AgendaError::LeaseNotExpired { holder: "w1".into(), expires: t(302) }),
    );
    let state = check(
        &in_state("scheduled"),
        reclaim(302),
        Then::Types(vec!["AgendaTimedOut", "AgendaRequeued"]),
    );
    assert!(state.is_schedulable());
    assert!(state.lease().is_none());
    let diagnostic = &state.progress().diagnostic_events[0];
    assert_eq!(diagnostic.message, "AgendaProgress timed out.");
    assert_eq!(diagnostic.time, Some(t(302)));
    assert_eq!(state.progress().attempts_completed, 1);
}

#[test]
fn reclaim_interrupts_executing_operations() {
    let given = in_state("executing");
    let state = check(&given, reclaim(1000), Then::Types(vec!["AgendaTimedOut", "AgendaRequeued"]));
    assert_eq!(op_state(&state, "a"), (Waiting, "pending".into()));
    assert_eq!(state.operation("a").unwrap().attempt_count, 1, "the attempt stays counted");
    assert_eq!(state.progress().percent_complete, Some(0.0));
}

#[test]
fn a_worker_that_always_dies_fails_the_agenda_after_maximum_attempts() {
    for (agenda_params, attempts) in
        [(json!({}), 3), (json!({"maximumAttempts": 1}), 1), (json!({"maximumAttempts": "5"}), 5)]
    {
        let mut commands = vec![submit(agenda_of(&["a"], agenda_params.clone()))];
        let mut at = 0;
        for _ in 0..attempts - 1 {
            commands.extend([queue(at + 1), claim("w1", "l", at + 2), reclaim(at + 400)]);
            at += 1000;
        }
        commands.extend([queue(at + 1), claim("w1", "l", at + 2)]);
        let given = history(commands);
        assert_eq!(replay(&given).progress().attempts_completed, attempts - 1);
        let state = check(
            &given,
            reclaim(at + 400),
            Then::Types(vec!["AgendaTimedOut", "AgendaCompleted"]),
        );
        assert!(state.is_failed(), "{agenda_params}");
        assert_eq!(state.progress().attempts_completed, attempts, "counted once, not twice");
        assert_eq!(op_state(&state, "a"), (Complete, "cancelled".into()));
        let mut given = given;
        given.extend(replay(&given).decide(&reclaim(at + 400)).unwrap());
        check(
            &given,
            retry(at + 500),
            Then::Error(AgendaError::NoAttemptsLeft {
                attempts_completed: attempts,
                maximum_attempts: attempts,
            }),
        );
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let e = replay(&in_state("queued")).decide(&queue(5)).unwrap_err();
    assert_eq!(e.to_string(), "cannot queue an agenda that is WAITING/queued");
    let e = replay(&in_state("succeeded")).decide(&cancel(50)).unwrap_err();
    assert_eq!(e.to_string(), "cannot cancel an agenda that is COMPLETE/succeeded");
}

fn reap(cutoff: i64, at: i64) -> AgendaCommand {
    AgendaCommand::Reap { reason: "old".to_string(), cutoff: t(cutoff), now: t(at) }
}

#[test]
fn only_complete_agendas_updated_at_or_before_the_cutoff_are_reaped() {
    // Completed at 10: a cutoff exactly at its updatedTime reaps it, an earlier one does not.
    for name in ["succeeded", "failed", "cancelled"] {
        let given = in_state(name);
        let updated =
            replay(&given).progress().updated_time.expect("a finished agenda has an updatedTime");
        let updated = (updated - t(0)).num_seconds();
        check(&given, reap(updated, 1_000), Then::Types(vec!["AgendaReaped"]));
        check(
            &given,
            reap(updated - 1, 1_000),
            Then::Refused(ErrorCode::Conflict, "after the reap cutoff"),
        );
    }
    for name in ["added", "queued", "scheduled", "executing", "pending"] {
        check(
            &in_state(name),
            reap(10_000, 10_000),
            Then::Refused(ErrorCode::Conflict, "cannot reap"),
        );
    }
}

#[test]
fn a_reaped_agenda_takes_no_more_commands_and_a_repeat_reap_changes_nothing() {
    let mut given = in_state("failed");
    given.extend(history_from(&given, reap(10_000, 10_000)));
    let state = replay(&given);
    assert!(state.is_reaped());
    assert_eq!(state.progress().processing_state_message.as_deref(), Some("failed"));
    check(&given, reap(10_000, 10_001), Then::Types(vec![]));
    check(&given, retry(10_002), Then::Error(AgendaError::Reaped));
    check(&given, rerun(&[], 10_002), Then::Refused(ErrorCode::NotFound, "reaped"));
}

/// The events `command` causes after `given`.
fn history_from(given: &[AgendaEvent], command: AgendaCommand) -> Vec<AgendaEvent> {
    replay(given).decide(&command).expect("the command is accepted")
}

fn release(holder: &str, lease: &str, at: i64) -> AgendaCommand {
    AgendaCommand::Release { holder: holder.to_string(), lease_id: lease.to_string(), now: t(at) }
}

#[test]
fn release_hands_the_agenda_back_at_once_keeping_its_progress() {
    // a succeeded, b runs when w1 shuts down and releases its lease (long before it expires).
    let given = history(vec![
        submit(two_ops()),
        queue(1),
        claim("w1", "l1", 2),
        report("w1", 10, ops(vec![succeeded("a"), executing("b", 40.0)])),
    ]);
    let state = check(&given, release("w1", "l1", 20), Then::Types(vec!["AgendaReleased"]));
    assert!(state.is(Waiting, message::ADDED), "back to be scheduled at once");
    assert!(state.is_schedulable());
    assert!(state.lease().is_none());
    assert_eq!(state.progress().attempts_completed, 0, "a release consumes no attempt");
    assert_eq!(op_state(&state, "a"), (Complete, "succeeded".into()), "results kept");
    assert_eq!(state.operation("a").unwrap().result_payload, json!({"out": "a"}));
    assert_eq!(op_state(&state, "b"), (Waiting, "pending".into()), "b starts again");
    assert_eq!(state.operation("b").unwrap().attempt_count, 1);
    assert!(state.progress().diagnostic_events.is_empty(), "not a timeout");
    // The next executor takes it from the queue and resumes: only b is left to run.
    let mut events = given;
    events.extend(replay(&events).decide(&release("w1", "l1", 20)).unwrap());
    let state = check(
        &history_after(&events, vec![queue(21), claim("w2", "l2", 22)]),
        report("w2", 30, ops(vec![succeeded("b")])),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert!(state.is_succeeded());
    assert_eq!(state.progress().attempts_completed, 1);
}

#[test]
fn release_is_refused_like_a_report_from_anyone_but_the_current_lease() {
    let given = in_state("executing");
    check(&given, release("w2", "l1", 20), Then::Refused(ErrorCode::Conflict, "leased to holder"));
    check(&given, release("w1", "l0", 20), Then::Refused(ErrorCode::Conflict, "superseded"));
    check(&given, release("w1", " ", 20), Then::Refused(ErrorCode::Validation, "leaseId"));
    for from in ["added", "queued", "pending"] {
        check(
            &in_state(from),
            release("w1", "l1", 100),
            Then::Refused(ErrorCode::Conflict, "no longer holds"),
        );
    }
    check(
        &in_state("succeeded"),
        release("w1", "l1", 100),
        Then::Error(AgendaError::AgendaComplete { message: "succeeded".into() }),
    );
    // Reclaimed and claimed again by the same worker under a new lease: the old lease is gone.
    let given = history(vec![
        submit(two_ops()),
        queue(1),
        claim("w1", "l1", 2),
        reclaim(400),
        queue(401),
        claim("w1", "l2", 402),
    ]);
    check(&given, release("w1", "l1", 403), Then::Refused(ErrorCode::Conflict, "superseded"));
    check(&given, release("w1", "l2", 403), Then::Types(vec!["AgendaReleased"]));
}

#[test]
fn a_stale_executors_report_under_a_superseded_lease_id_is_a_conflict_and_changes_nothing() {
    // w1's lease l1 expired and was reclaimed; w1 (same token name) claimed again as l2. A late
    // report of the first attempt, failing an operation, must not fail the second.
    let given = history(vec![
        submit(two_ops()),
        queue(1),
        claim("w1", "l1", 2),
        reclaim(400),
        queue(401),
        claim("w1", "l2", 402),
    ]);
    let stale = AgendaCommand::ReportProgress {
        holder: "w1".into(),
        lease_id: Some("l1".into()),
        lease_expires: t(700),
        report: ops(vec![failed("a")]),
        now: t(403),
    };
    let state = check(&given, stale, Then::Refused(ErrorCode::Conflict, "superseded"));
    assert!(state.is(Waiting, message::SCHEDULED), "unchanged");
    assert_eq!(state.lease().map(|l| l.lease_id.as_str()), Some("l2"));
}

/// The history `given` followed by `commands`.
fn history_after(given: &[AgendaEvent], commands: Vec<AgendaCommand>) -> Vec<AgendaEvent> {
    let mut events = given.to_vec();
    for command in commands {
        events.extend(history_from(&events, command));
    }
    events
}

#[test]
fn a_do_not_run_agenda_that_only_waits_is_reaped_by_age_like_a_complete_one() {
    let record = || submit(agenda_of(&["a"], json!({"doNotRun": "true"})));
    check(&history(vec![record()]), reap(0, 1_000), Then::Types(vec!["AgendaReaped"]));
    check(
        &history(vec![record()]),
        reap(-1, 1_000),
        Then::Refused(ErrorCode::Conflict, "after the reap cutoff"),
    );
    // Rerun as a record it stays pending, never re-added: also retired.
    let mut c = running(agenda_of(&["a"], json!({})));
    c.push(AgendaCommand::Expand {
        operations: vec![],
        params: params(json!({"doNotRun": true})),
        now: t(5),
    });
    c.push(report("w1", 10, ops(vec![succeeded("a")])));
    check(&history(c.clone()), rerun(&[], 20), Then::Types(vec!["AgendaRerun"]));
    let mut pending = history(c);
    pending.extend(history_from(&pending, rerun(&[], 20)));
    check(&pending, reap(20, 1_000), Then::Types(vec!["AgendaReaped"]));
    // Waiting work without doNotRun is never reaped.
    check(
        &in_state("added"),
        reap(10_000, 10_000),
        Then::Refused(ErrorCode::Conflict, "cannot reap"),
    );
}

fn take(agenda_id: &str, at: i64) -> AgendaCommand {
    AgendaCommand::TakeProgressId { agenda_id: agenda_id.into(), now: t(at) }
}

#[test]
fn a_progress_id_is_taken_once_per_customer_and_then_no_agenda_has_that_id() {
    // Free: taken by "x"; again by "x" (a re-sent submission) changes nothing.
    let taken = history_from(&[], take("x", 1));
    assert_eq!(types_of(&taken), ["ProgressIdTaken"]);
    check(&taken, take("x", 2), Then::Types(vec![]));
    // Another agenda cannot take it, nor be submitted under that id.
    let state = replay(&taken);
    let e = state.decide(&take("y", 2)).unwrap_err();
    assert!(
        matches!(&e, AgendaError::ProgressIdTaken { agenda_id, .. } if agenda_id == "x"),
        "{e}"
    );
    assert_eq!(e.code(), ErrorCode::Conflict);
    let e = state.decide(&submit(two_ops())).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Conflict, "{e}");
    // A name that is an agenda's id cannot be taken as a progress id.
    let agenda = history_from(&[], submit(two_ops()));
    assert!(matches!(
        replay(&agenda).decide(&take("y", 3)),
        Err(AgendaError::AlreadyExists { .. })
    ));
    // A taken name is not an agenda: every agenda command finds nothing there.
    assert!(!state.exists());
    check(&taken, cancel(3), Then::Error(AgendaError::NotFound));
}

fn types_of(events: &[AgendaEvent]) -> Vec<&'static str> {
    events.iter().map(pop_domain::EventCodec::event_type).collect()
}

/// POP's executor reports the operations, and then the agenda's own outcome in a report of its
/// own — after the operations' reports already completed the agenda (§4.2) — and sends again a
/// report it got no answer to. Such a late report agrees with what happened and is taken: a
/// no-op, or the agenda diagnostics it adds (a failure's reason and stack trace); POP took it,
/// and a 409 made POP's executor count a finished run as failed.
#[test]
fn a_late_report_that_agrees_with_the_outcome_is_taken() {
    let final_report =
        |message: &str, diagnostics: Vec<pop_domain::DiagnosticEvent>| ProgressReport {
            state: Some(Complete),
            message: Some(message.into()),
            diagnostics,
            ..ProgressReport::default()
        };
    // The outcome alone, and the operations' report sent again: nothing to record.
    check(
        &in_state("succeeded"),
        report("w1", 30, final_report("succeeded", vec![])),
        Then::Types(vec![]),
    );
    check(
        &in_state("succeeded"),
        report("w1", 30, ops(vec![succeeded("a"), succeeded("b")])),
        Then::Types(vec![]),
    );
    // A bare heartbeat is a stale executor's: it must hear that the agenda ended.
    check(
        &in_state("succeeded"),
        report("w1", 30, ProgressReport::default()),
        Then::Error(AgendaError::AgendaComplete { message: "succeeded".into() }),
    );
    // A failure's reason: added to the agenda's diagnostics, nothing else changes.
    let reason = pop_domain::DiagnosticEvent {
        message: "transcode failed: exit status 1".into(),
        stack_trace: Some("java.lang.RuntimeException\n\tat Executor.run".into()),
        ..pop_domain::DiagnosticEvent::default()
    };
    let given = in_state("failed");
    let before = replay(&given);
    let mut late = final_report("failed", vec![reason.clone()]);
    // With the operation's own report, as the executor has it: it agrees. Beside it, another
    // operation as the executor last saw it, running, which finished since: a stale view, not
    // a claim (repopclient61 F2: the outcome report and its reason were refused).
    let mut with_stale = late.clone();
    with_stale.operations = vec![executing("a", 10.0), failed("b")];
    let events = replay(&given).decide(&report("w1", 30, with_stale)).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type(), "AgendaDiagnosticsAdded");
    late.operations = vec![failed("b")];
    let events = replay(&given).decide(&report("w1", 30, late.clone())).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type(), "AgendaDiagnosticsAdded");
    let mut after_events = given.clone();
    after_events.extend(events);
    let after = replay(&after_events);
    assert!(after.is(Complete, message::FAILED));
    assert_eq!(after.progress().operation_progress, before.progress().operation_progress);
    assert_eq!(after.progress().attempts_completed, before.progress().attempts_completed);
    assert!(after.progress().diagnostic_events.contains(&reason), "{:?}", after.progress());
    // Sent again: already there, a no-op; and another outcome report with other diagnostics
    // adds nothing more (one per completion: no stream of them, no pushing the reason out).
    check(&after_events, report("w1", 40, late), Then::Types(vec![]));
    let other = pop_domain::DiagnosticEvent { message: "spam".into(), ..reason.clone() };
    check(
        &after_events,
        report("w1", 50, final_report("failed", vec![other])),
        Then::Types(vec![]),
    );
    // A heartbeat that lists operations but completes none is a stale executor's: refused.
    let mut heartbeat =
        ops(vec![pop_domain::agenda::OperationReport { state: Waiting, ..succeeded("a") }]);
    heartbeat.state = Some(Executing);
    check(
        &in_state("succeeded"),
        report("w1", 30, heartbeat),
        Then::Error(AgendaError::AgendaComplete { message: "succeeded".into() }),
    );
    // Only from the executor the agenda completed under: another holder's is refused.
    check(
        &in_state("failed"),
        report("w2", 30, final_report("failed", vec![])),
        Then::Error(AgendaError::AgendaComplete { message: "failed".into() }),
    );
    assert_eq!(replay(&in_state("failed")).finished_by(), Some("w1"));
    // And only until anything else happens to the agenda (here a rerun).
    let mut rerun_given = in_state("failed");
    rerun_given.extend(replay(&rerun_given).decide(&rerun(&["continue"], 40)).unwrap());
    assert_eq!(replay(&rerun_given).finished_by(), None);
    // A cancelled agenda still refuses every report.
    check(
        &in_state("cancelled"),
        report("w1", 30, final_report("failed", vec![])),
        Then::Error(AgendaError::AgendaCancelled),
    );
}
