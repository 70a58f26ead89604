//! Executor reports (DOMAIN.md §7): the agenda percent of §4.1 computed from operations, the
//! agenda state of §4.2, operation transitions, attempt counting, diagnostics and expansion.

mod agenda_support;

use agenda_support::*;
use pop_domain::agenda::{AgendaError, OperationReport, ProgressReport};
use pop_domain::{Aggregate, DiagnosticEvent, ErrorCode, ProcessingState};
use serde_json::json;

use ProcessingState::{Complete, Executing, Waiting};

const TEN: [&str; 10] = ["o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9", "o10"];

/// Ten operations, the first five succeeded, under w1's lease.
fn five_of_ten_done() -> Vec<pop_domain::agenda::AgendaEvent> {
    let mut commands = running(agenda_of(&TEN, json!({})));
    commands.push(report("w1", 10, ops(TEN[..5].iter().map(|n| succeeded(n)).collect())));
    history(commands)
}

#[test]
fn percent_vectors_of_section_4_1_through_real_reports() {
    // (0, 1, 0) → 0
    let state = check(
        &history(running(agenda_of(&["only"], json!({})))),
        report("w1", 10, ops(vec![executing("only", 0.0)])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(state.progress().percent_complete, Some(0.0));

    let given = five_of_ten_done();
    assert_eq!(replay(&given).progress().percent_complete, Some(50.0), "(5, 10, 0) → 50");
    for (percent, expected) in [(50.0, 55.0), (0.0, 50.0), (100.0, 60.0), (150.0, 60.0)] {
        let state = check(
            &given,
            report("w1", 20, ops(vec![executing("o6", percent)])),
            Then::Types(vec!["AgendaProgressReported"]),
        );
        assert_eq!(state.progress().percent_complete, Some(expected), "o6 at {percent}");
        assert_eq!(state.operation("o6").unwrap().percent_complete, Some(percent));
    }
}

#[test]
fn the_executors_own_percent_and_state_are_not_trusted() {
    // An executor claiming COMPLETE/succeeded with work left is refused, naming the operation.
    let given = five_of_ten_done();
    let claim_done = ProgressReport {
        state: Some(Complete),
        message: Some("succeeded".into()),
        ..ProgressReport::default()
    };
    let e = replay(&given).decide(&report("w1", 20, claim_done)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert!(e.to_string().contains("\"o6\" is WAITING"), "{e}");
}

#[test]
fn an_agenda_level_waiting_report_is_refused_naming_the_field() {
    let given = five_of_ten_done();
    let waiting = ProgressReport { state: Some(Waiting), ..ProgressReport::default() };
    let Err(AgendaError::Invalid(errors)) = replay(&given).decide(&report("w1", 20, waiting))
    else {
        panic!("expected a validation error")
    };
    let fields: Vec<_> = errors.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["processingState"]);
    assert!(errors.errors[0].message.contains("WAITING"), "{errors:?}");
    // EXECUTING, and no state at all, are still "working".
    for state in [Some(Executing), None] {
        let still = ProgressReport { state, ..ProgressReport::default() };
        assert!(replay(&given).decide(&report("w1", 20, still)).is_ok(), "{state:?}");
    }
}

#[test]
fn every_operation_succeeded_completes_the_agenda_as_succeeded() {
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let state = check(
        &given,
        report("w1", 10, ops(vec![succeeded("a"), succeeded("b")])),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert!(state.is_succeeded());
    assert_eq!(state.progress().percent_complete, Some(100.0));
    assert_eq!(state.progress().attempts_completed, 1);
    assert_eq!(state.progress().completed_time, Some(t(10)));
    assert!(state.lease().is_none());
    let a = state.operation("a").unwrap();
    assert_eq!(a.percent_complete, Some(100.0), "succeeded forces 100");
    assert_eq!(a.result_payload, json!({"out": "a"}));
    assert_eq!(
        (a.attempt_count, a.attempt_time, a.started_time, a.completed_time),
        (1, Some(t(10)), Some(t(10)), Some(t(10)))
    );
}

#[test]
fn a_failed_operation_fails_the_agenda_once_nothing_runs() {
    let given = history(running(agenda_of(&["a", "b", "c"], json!({}))));
    // b still runs: the agenda keeps EXECUTING.
    let state = check(
        &given,
        report("w1", 10, ops(vec![failed("a"), executing("b", 40.0)])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(state.processing_state(), Executing);
    assert_eq!(state.progress().percent_complete, Some(46.67), "(1 × 100 + 40) / 3");
    // b ends: nothing runs, a failed → COMPLETE/failed, c (never started) is cancelled.
    let mut given = given;
    given.extend(
        replay(&given)
            .decide(&report("w1", 10, ops(vec![failed("a"), executing("b", 40.0)])))
            .unwrap(),
    );
    let state = check(
        &given,
        report("w1", 20, ops(vec![succeeded("b")])),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert!(state.is_failed());
    assert_eq!(op_state(&state, "c"), (Complete, "cancelled".into()));
    assert_eq!(state.progress().percent_complete, Some(66.67), "cancelled c is not done");
    assert_eq!(state.operation("a").unwrap().diagnostic_events[0].message, "a exited with 1");
}

#[test]
fn an_executor_reporting_failure_fails_the_agenda() {
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let failure = ProgressReport {
        state: Some(Complete),
        message: Some("failed".into()),
        diagnostics: vec![DiagnosticEvent { message: "pod evicted".into(), ..Default::default() }],
        operations: vec![executing("a", 10.0)],
        ..ProgressReport::default()
    };
    let state = check(
        &given,
        report("w1", 10, failure),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert!(state.is_failed());
    assert_eq!(op_state(&state, "a"), (Complete, "cancelled".into()));
    assert_eq!(state.progress().diagnostic_events[0].message, "pod evicted");
}

#[test]
fn an_executor_failure_wins_over_succeeded_operations() {
    let given = history(running(agenda_of(&["a"], json!({}))));
    let failure = ProgressReport {
        state: Some(Complete),
        message: Some("FAILED".into()),
        operations: vec![succeeded("a")],
        ..ProgressReport::default()
    };
    let state = check(
        &given,
        report("w1", 10, failure),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert!(state.is_failed());
    assert_eq!(state.progress().percent_complete, Some(100.0));
}

#[test]
fn outcome_messages_are_not_executing_text() {
    // `EXECUTING/failed` would read as a failure to §4.3's summary.
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let odd = ProgressReport {
        state: Some(Executing),
        message: Some("failed".into()),
        ..ProgressReport::default()
    };
    let state = check(&given, report("w1", 10, odd), Then::Types(vec!["AgendaProgressReported"]));
    assert_eq!(state.message(), "Running Operations");
    let fine =
        ProgressReport { message: Some("encoding 2 of 5".into()), ..ProgressReport::default() };
    let state = check(&given, report("w1", 10, fine), Then::Types(vec!["AgendaProgressReported"]));
    assert_eq!(state.message(), "encoding 2 of 5");
}

#[test]
fn operations_only_move_forward() {
    let given = {
        let mut c = running(agenda_of(&["a", "b"], json!({})));
        c.push(report("w1", 10, ops(vec![succeeded("a"), executing("b", 5.0)])));
        history(c)
    };
    // Resending what is already recorded changes nothing: no operation entries in the event.
    let state = replay(&given);
    let events =
        state.decide(&report("w1", 11, ops(vec![succeeded("a"), executing("b", 5.0)]))).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &events[0] else { panic!() };
    assert!(e.operations.is_empty(), "{e:?}");
    // Backwards or a changed outcome is a conflict naming the operation.
    for (r, text) in [
        (executing("a", 50.0), "operation \"a\" cannot go from COMPLETE/succeeded to EXECUTING"),
        (failed("a"), "operation \"a\" cannot go from COMPLETE/succeeded to COMPLETE/failed"),
        (
            OperationReport { name: "b".into(), state: Waiting, ..Default::default() },
            "\"b\" cannot go from EXECUTING to WAITING",
        ),
    ] {
        check(&given, report("w1", 12, ops(vec![r])), Then::Refused(ErrorCode::Conflict, text));
    }
    // The refusal names the entry of the report at fault (popclient59 L2: no field).
    let waiting_b = OperationReport { name: "b".into(), state: Waiting, ..Default::default() };
    let sent = ops(vec![executing("a", 50.0), waiting_b]);
    let refused = state.decide(&report("w1", 12, sent)).unwrap_err();
    assert_eq!(refused.field().as_deref(), Some("operationProgress[0].processingState"));
    // Beside an entry as recorded (a whole-progress heartbeat of another executor, nothing
    // new), a stale one is skipped and the heartbeat taken: it renews the lease
    // (repopclient61 F1, review61b M2: refused, the lease ran out mid-run).
    let heartbeat = ops(vec![executing("a", 50.0), executing("b", 5.0)]);
    let taken = state.decide(&report("w1", 12, heartbeat)).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &taken[0] else { panic!() };
    assert!(e.operations.is_empty() && e.lease_expires > t(10), "{e:?}");
}

/// Two executors of one agenda each send the whole progress they know: each report holds the
/// other's operation as it last saw it. Such a stale entry (an operation moved back) is skipped
/// when the report changes something else, and the rest is taken (popclient61 M1: one of each
/// pair was refused whole, its operation's outcome and result lost, the agenda stalled for a
/// lease and the operation ran again). A changed outcome is still refused, whatever else the
/// report holds.
#[test]
fn a_stale_entry_beside_fresh_ones_is_skipped_and_the_rest_taken() {
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let waiting =
        |name: &str| OperationReport { name: name.into(), state: Waiting, ..Default::default() };
    // Executor 1 finishes a; executor 2, which still saw a WAITING, then finishes b.
    let after_one =
        history_after(&given, vec![report("w1", 10, ops(vec![succeeded("a"), waiting("b")]))]);
    let state = check(
        &after_one,
        report("w1", 11, ops(vec![waiting("a"), succeeded("b")])),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert_eq!(op_state(&state, "a"), (Complete, "succeeded".into()));
    assert_eq!(op_state(&state, "b"), (Complete, "succeeded".into()));
    assert_eq!(state.operation("a").unwrap().result_payload, json!({"out": "a"}));
    assert!(state.is_succeeded(), "{:?}", state.progress());
    // A changed outcome beside a fresh entry is refused.
    let running_b = history_after(&given, vec![report("w1", 10, ops(vec![succeeded("a")]))]);
    check(
        &running_b,
        report("w1", 11, ops(vec![failed("a"), executing("b", 10.0)])),
        Then::Refused(ErrorCode::Conflict, "cannot go from COMPLETE/succeeded to COMPLETE/failed"),
    );
}

/// An operation reported WAITING that has not run: what says it ran (a result, a percent, times
/// it does not have) is refused, each field named, not dropped without a word (popclient54 L4);
/// its diagnostics and params are recorded; its recorded values sent back as they are, and a
/// percent of 0, change nothing.
#[test]
fn a_waiting_operation_reported_with_a_run_is_refused_and_its_diagnostics_kept() {
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let waiting =
        |name: &str| OperationReport { name: name.into(), state: Waiting, ..Default::default() };
    let mut with_result = waiting("b");
    with_result.result_payload = Some(json!({"out": 1}));
    with_result.percent = Some(40.0);
    with_result.started = Some(t(5));
    let state = replay(&given);
    let e =
        state.decide(&report("w1", 10, ops(vec![executing("a", 5.0), with_result]))).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation, "{e}");
    let AgendaError::Invalid(errors) = &e else { panic!("{e:?}") };
    let fields: Vec<&str> = errors.errors.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "operationProgress[1].resultPayload",
            "operationProgress[1].percentComplete",
            "operationProgress[1].startedTime"
        ],
        "{e}"
    );
    assert!(e.to_string().contains("\"b\" is reported WAITING with a resultPayload"), "{e}");
    // A diagnostic of an operation still waiting is recorded; a percent of 0 says nothing.
    let mut noted = waiting("b");
    noted.percent = Some(0.0);
    noted.diagnostics =
        vec![DiagnosticEvent { message: "input not there yet".into(), ..Default::default() }];
    let state = check(
        &given,
        report("w1", 10, ops(vec![executing("a", 5.0), noted.clone()])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    let b = state.operation("b").unwrap();
    assert_eq!(op_state(&state, "b").0, Waiting);
    let messages: Vec<&str> = b.diagnostic_events.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, ["input not there yet"]);
    // A plain WAITING echo changes nothing.
    let events = state.decide(&report("w1", 11, ops(vec![waiting("b")]))).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &events[0] else { panic!() };
    assert!(e.operations.is_empty(), "{e:?}");
}

/// After a retry, a POP executor echoes the progress it was handed: an operation back to
/// WAITING with an earlier attempt's diagnostics (no time, as executors send them) records
/// none of them again (reprobe55 M1: each echo doubled them).
#[test]
fn an_echo_of_a_waiting_operations_earlier_diagnostics_records_nothing() {
    let mut commands = running(agenda_of(&["a"], json!({"maximumAttempts": 3})));
    commands.push(report("w1", 10, ops(vec![failed("a")])));
    commands.extend([retry(11), queue(12), claim("w2", "l2", 13)]);
    let given = history(commands);
    let state = replay(&given);
    let a = state.operation("a").unwrap();
    assert_eq!(a.processing_state, Waiting);
    assert_eq!(a.diagnostic_events.len(), 1);
    let echo = OperationReport {
        name: "a".into(),
        state: Waiting,
        diagnostics: a
            .diagnostic_events
            .iter()
            .map(|d| DiagnosticEvent { time: None, ..d.clone() })
            .collect(),
        ..Default::default()
    };
    let events = state.decide(&report("w2", 14, ops(vec![echo]))).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &events[0] else { panic!() };
    assert!(e.operations.is_empty(), "{e:?}");
}

/// A resent outcome keeps the operation's first result (later operations read it) but records
/// the diagnostics it adds (popclient21: answered 200, the new diagnostic was dropped); a plain
/// resend changes nothing.
#[test]
fn a_resent_outcome_keeps_the_result_and_adds_its_new_diagnostics() {
    let given = {
        let mut c = running(agenda_of(&["a", "b"], json!({})));
        c.push(report("w1", 10, ops(vec![succeeded("a"), executing("b", 5.0)])));
        history(c)
    };
    let mut resent = succeeded("a");
    resent.result_payload = Some(json!({"out": "another"}));
    resent.diagnostics =
        vec![DiagnosticEvent { message: "warning: low bitrate".into(), ..Default::default() }];
    let state = check(
        &given,
        report("w1", 11, ops(vec![resent.clone()])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    let a = state.operation("a").unwrap();
    assert_eq!(a.result_payload, json!({"out": "a"}), "the first result stays");
    assert_eq!(op_state(&state, "a"), (Complete, "succeeded".into()));
    let messages: Vec<&str> = a.diagnostic_events.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages, ["warning: low bitrate"]);
    // Sent once more, the diagnostic is a resend: nothing changes.
    let mut given = given;
    given.extend(replay(&given).decide(&report("w1", 11, ops(vec![resent.clone()]))).unwrap());
    let events = replay(&given).decide(&report("w1", 12, ops(vec![resent]))).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &events[0] else { panic!() };
    assert!(e.operations.is_empty(), "{e:?}");
}

#[test]
fn report_input_is_validated_listing_every_problem() {
    let given = history(running(agenda_of(&["a", "b"], json!({}))));
    let bad = ops(vec![
        executing("nope", 1.0),
        executing("a", -1.0),
        executing("A", 3.0),
        OperationReport { name: "b".into(), state: Complete, ..Default::default() },
    ]);
    let Err(AgendaError::Invalid(errors)) = replay(&given).decide(&report("w1", 10, bad)) else {
        panic!("expected a validation error")
    };
    let fields: Vec<_> = errors.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "operationProgress[1].percentComplete",
            "operationProgress[2].operation",
            "operationProgress[3].processingStateMessage"
        ]
    );
    assert!(errors.errors[1].message.contains("reported twice"), "{errors:?}");
    // COMPLETE says succeeded or failed (any case); another word would fail the
    // agenda with no reason recorded (popclient23: "success" answered 200 and failed it).
    let b_complete = |word: &str| {
        let reported = OperationReport {
            name: "b".into(),
            state: Complete,
            message: Some(word.into()),
            ..Default::default()
        };
        replay(&given).decide(&report("w1", 10, ops(vec![reported])))
    };
    // "cancelled" too: only pop records it, when the agenda is cancelled (popclient24: it
    // failed the agenda with a retry due and no reason).
    for word in ["success", "done", " succeeded", "cancelled"] {
        let Err(AgendaError::Invalid(errors)) = b_complete(word) else {
            panic!("{word:?}: expected a validation error")
        };
        assert_eq!(errors.errors[0].field, "operationProgress[0].processingStateMessage");
        assert!(errors.errors[0].message.contains(&format!("{word:?}")), "{errors:?}");
    }
    // The agenda's own word too (hostile35).
    let mut whole = ops(vec![]);
    whole.state = Some(Complete);
    whole.message = Some("done".into());
    let Err(AgendaError::Invalid(errors)) = replay(&given).decide(&report("w1", 10, whole)) else {
        panic!("an agenda COMPLETE with \"done\" is refused")
    };
    assert_eq!(errors.errors[0].field, "processingStateMessage", "{errors:?}");
    assert!(errors.errors[0].message.contains("\"done\""), "{errors:?}");
    for word in ["Succeeded", "FAILED", "failed"] {
        assert!(b_complete(word).is_ok(), "{word}");
    }
}

/// An operation recorded COMPLETE with another word (by a server before that was refused) and
/// sent back as recorded is no new word: POP's executor echoes the whole progress with each
/// report, and refusing the echo would stall the agenda's other operations.
#[test]
fn an_operation_echoed_as_recorded_is_not_refused_for_its_word() {
    use pop_domain::agenda::AgendaEvent;
    let mut c = running(agenda_of(&["a", "b"], json!({})));
    c.push(report("w1", 10, ops(vec![succeeded("a"), executing("b", 5.0)])));
    let mut given = history(c);
    for event in &mut given {
        if let AgendaEvent::ProgressReported(e) = event {
            for o in e.operations.iter_mut().filter(|o| o.operation == "a") {
                o.message = Some("done".into());
            }
        }
    }
    let mut echoed = succeeded("a");
    echoed.message = Some("done".into());
    let next = report("w1", 11, ops(vec![echoed.clone(), executing("b", 50.0)]));
    assert!(replay(&given).decide(&next).is_ok(), "the echo of what is recorded is taken");
    // A new word is still refused.
    echoed.name = "b".into();
    let Err(AgendaError::Invalid(_)) = replay(&given).decide(&report("w1", 11, ops(vec![echoed])))
    else {
        panic!("b COMPLETE with \"done\" is a new word")
    };
}

/// A report naming an operation the agenda does not have (POP's executor reports what a
/// generator made without expanding the agenda, `logOnly`, and resends it with every report)
/// adds it, as POP's server made its progress on the fly: the rest is taken, and the agenda
/// does not complete while that operation runs.
#[test]
fn an_operation_the_agenda_lacks_is_added_by_the_report_that_names_it() {
    use pop_domain::agenda::AgendaEvent;
    let mut events = history(running(agenda_of(&["a", "gen"], json!({}))));
    // POP's generated operations name their generator: kept, so a rerun of it removes them.
    let mut generated = pop_domain::params::Params::default();
    generated.insert("generatedOperationParent", "gen");
    let g1 = OperationReport { params: generated, ..executing("g.1", 10.0) };
    let r = ops(vec![succeeded("a"), succeeded("gen"), g1]);
    let taken = replay(&events).decide(&report("w1", 10, r)).unwrap();
    let AgendaEvent::OperationsExpanded(added) = &taken[0] else { panic!("{taken:?}") };
    assert_eq!(added.operations.len(), 1);
    assert_eq!(added.operations[0].name, "g.1");
    assert_eq!(added.operations[0].generated_by(), Some("gen"));
    let AgendaEvent::ProgressReported(e) = &taken[1] else { panic!("{taken:?}") };
    assert_eq!(e.operations.len(), 3, "{e:?}");
    assert_eq!(taken.len(), 2, "not completed while g.1 runs: {taken:?}");
    events.extend(taken);
    // A heartbeat without operations completes nothing either.
    let taken = replay(&events).decide(&report("w1", 11, ops(vec![]))).unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    events.extend(taken);
    // Sent again with the next report, now COMPLETE: known, and the agenda succeeds.
    let taken = replay(&events).decide(&report("w1", 12, ops(vec![succeeded("g.1")]))).unwrap();
    assert!(matches!(taken.last(), Some(AgendaEvent::Completed(_))), "{taken:?}");
    events.extend(taken);
    let state = replay(&events);
    assert_eq!(state.operation("g.1").unwrap().processing_state, Complete);
    assert!(state.is_succeeded());
    // A name no operation may have is refused, naming the field.
    let given = history(running(agenda_of(&["a"], json!({}))));
    let Err(AgendaError::Invalid(errors)) =
        replay(&given).decide(&report("w1", 10, ops(vec![executing("bad\u{7}name", 1.0)])))
    else {
        panic!("expected a validation error")
    };
    assert_eq!(errors.errors[0].field, "operationProgress[0].operation", "{errors:?}");
    // Its place in the report, not in the list of added operations (hostile19).
    let two = ops(vec![executing("a", 1.0), executing("Mm", 1.0), executing("mM", 1.0)]);
    let Err(AgendaError::Invalid(errors)) = replay(&given).decide(&report("w1", 10, two)) else {
        panic!("expected a validation error")
    };
    assert_eq!(errors.errors[0].field, "operationProgress[2].operation", "{errors:?}");
}

#[test]
fn names_match_case_insensitively_and_diagnostics_are_not_duplicated() {
    let given = history(running(agenda_of(&["Encode"], json!({}))));
    let d =
        DiagnosticEvent { message: "warming up".into(), time: Some(t(9)), ..Default::default() };
    let r = OperationReport { diagnostics: vec![d.clone()], ..executing("encode", 10.0) };
    let mut events = given.clone();
    events.extend(replay(&events).decide(&report("w1", 10, ops(vec![r.clone()]))).unwrap());
    // POP executors resend the whole list: the same diagnostic is not added twice.
    let r2 = OperationReport { percent: Some(20.0), ..r };
    events.extend(replay(&events).decide(&report("w1", 11, ops(vec![r2]))).unwrap());
    let state = replay(&events);
    let p = state.operation("Encode").unwrap();
    assert_eq!(p.diagnostic_events, vec![d]);
    assert_eq!(p.percent_complete, Some(20.0));
    assert_eq!(p.attempt_count, 1, "one start, not one per report");
}

#[test]
fn attempt_count_grows_each_time_an_operation_starts() {
    // a fails, the agenda is retried with `continue`, a starts again.
    let mut c = running(agenda_of(&["a"], json!({})));
    c.extend([
        report("w1", 10, ops(vec![executing("a", 10.0)])),
        report("w1", 20, ops(vec![failed("a")])),
        retry(30),
        queue(31),
        claim("w2", "l2", 32),
        report("w2", 40, ops(vec![executing("a", 10.0)])),
    ]);
    let state = state_of(c);
    let a = state.operation("a").unwrap();
    assert_eq!((a.attempt_count, a.attempt_time), (2, Some(t(40))));
    assert_eq!(a.diagnostic_events.len(), 1, "the last failure stays visible after continue");
}

#[test]
fn expand_appends_waiting_operations_and_merges_params() {
    let given = history(running(agenda_of(&["gen"], json!({"keep": 1}))));
    let new = vec![
        op("gen-1", json!({"in": "@<gen.out::/0>"}), json!({"generatedOperationParent": "gen"})),
        op("gen-2", json!({}), json!({"generatedOperationParent": "gen"})),
    ];
    let when = pop_domain::agenda::AgendaCommand::Expand {
        operations: new,
        params: params(json!({"maximumAttempts": "7", "externalId": "ext-9"})),
        now: t(15),
    };
    let state = check(&given, when, Then::Types(vec!["OperationsExpanded"]));
    let names: Vec<_> = state.progress().operation_progress.iter().map(|p| &*p.id).collect();
    assert_eq!(names, ["progress-1-gen", "progress-1-gen-1", "progress-1-gen-2"]);
    assert_eq!(state.agenda().unwrap().operations.len(), 3);
    assert_eq!(state.progress().maximum_attempts, 7);
    assert_eq!(state.progress().external_id.as_deref(), Some("ext-9"));
    assert_eq!(state.progress().params.get_i64("keep"), Some(1));
    // Colliding names are refused by validation, naming the operation.
    check(
        &history(running(agenda_of(&["gen"], json!({})))),
        expand(vec![op("GEN", json!({}), json!({}))], 16),
        Then::Refused(ErrorCode::Validation, "GEN"),
    );
    // Generated operations keep the agenda running until they succeed too.
    let mut events = given.clone();
    events.extend(
        replay(&events).decide(&expand(vec![op("gen-1", json!({}), json!({}))], 15)).unwrap(),
    );
    let state = check(
        &events,
        report("w1", 20, ops(vec![succeeded("gen")])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(state.processing_state(), Executing);
    assert_eq!(state.progress().percent_complete, Some(50.0));
}

#[test]
fn an_empty_expansion_changes_nothing() {
    check(
        &history(running(agenda_of(&["gen"], json!({})))),
        expand(vec![], 15),
        Then::Types(vec![]),
    );
}

#[test]
fn a_five_operation_agenda_stays_small() {
    // The read model targets ≤ 4 KiB per five-operation agenda; the state is that model.
    let mut c = running(agenda_of(
        &["probe", "encode-hd", "encode-sd", "package", "publish"],
        json!({"externalId": "asset-42"}),
    ));
    c.push(report(
        "w1",
        10,
        ops(vec![succeeded("probe"), executing("encode-hd", 40.0), executing("encode-sd", 35.0)]),
    ));
    let json = serde_json::to_vec(&state_of(c)).unwrap();
    assert!(json.len() <= 4096, "{} bytes: {}", json.len(), String::from_utf8_lossy(&json));
}

#[test]
fn operation_progress_params_are_copied_from_the_operation_at_submit_and_expand() {
    let agenda = agenda_with(
        vec![op("encode", json!({}), json!({"preset": "hd", "dependsOn": ""}))],
        json!({}),
    );
    let given = history(running(agenda));
    let state = replay(&given);
    let encode = state.operation("encode").unwrap();
    assert_eq!(encode.params, params(json!({"preset": "hd", "dependsOn": ""})));

    let generated = op("encode-2", json!({}), json!({"generatedOperationParent": "encode"}));
    let state = check(&given, expand(vec![generated], 15), Then::Types(vec!["OperationsExpanded"]));
    assert_eq!(
        state.operation("encode-2").unwrap().params,
        params(json!({"generatedOperationParent": "encode"}))
    );
}

#[test]
fn params_an_executor_reports_are_merged_not_dropped() {
    let agenda = agenda_with(vec![op("encode", json!({}), json!({"preset": "hd"}))], json!({}));
    let given = history(running(agenda));
    let with_params = |percent: f64, reported: serde_json::Value| OperationReport {
        params: params(reported),
        ..executing("encode", percent)
    };
    let state = check(
        &given,
        report("w1", 10, ops(vec![with_params(10.0, json!({"node": "gpu-3", "preset": "uhd"}))])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(
        state.operation("encode").unwrap().params,
        params(json!({"preset": "uhd", "node": "gpu-3"})),
        "reported keys win, the others stay"
    );
    // A report that changes nothing but params is still recorded, and survives a replay.
    let mut events = given.clone();
    events.extend(
        replay(&events)
            .decide(&report("w1", 10, ops(vec![with_params(10.0, json!({"node": "gpu-3"}))])))
            .unwrap(),
    );
    let state = check(
        &events,
        report("w1", 11, ops(vec![with_params(10.0, json!({"frames": 1200}))])),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(
        state.operation("encode").unwrap().params,
        params(json!({"preset": "hd", "node": "gpu-3", "frames": 1200}))
    );
}

#[test]
fn operation_started_time_is_the_first_start_and_attempt_time_the_current_one() {
    // a starts at 10 and fails; the retry starts it again at 40.
    let mut c = running(agenda_of(&["a"], json!({})));
    c.extend([
        report("w1", 10, ops(vec![executing("a", 10.0)])),
        report("w1", 20, ops(vec![failed("a")])),
        retry(30),
        queue(31),
        claim("w2", "l2", 32),
        report("w2", 40, ops(vec![executing("a", 10.0)])),
    ]);
    let a = state_of(c.clone()).operation("a").cloned().unwrap();
    assert_eq!((a.started_time, a.attempt_time), (Some(t(10)), Some(t(40))));
    // A lease timeout interrupts the second attempt; the third starts at 1000.
    c.extend([reclaim(900), queue(901), claim("w3", "l3", 902)]);
    let a = state_of(c.clone()).operation("a").cloned().unwrap();
    assert_eq!(a.started_time, Some(t(10)), "kept while the operation waits again");
    c.push(report("w3", 1000, ops(vec![executing("a", 10.0)])));
    let a = state_of(c).operation("a").cloned().unwrap();
    assert_eq!((a.started_time, a.attempt_time, a.attempt_count), (Some(t(10)), Some(t(1000)), 3));
}

#[test]
fn operation_progress_has_the_common_cid_and_title() {
    let mut agenda = agenda_of(&["a"], json!({}));
    agenda.cid = Some("cid-42".to_string());
    let given = history(running(agenda));
    let state = check(
        &given,
        expand(vec![op("b", json!({}), json!({}))], 15),
        Then::Types(vec!["OperationsExpanded"]),
    );
    for name in ["a", "b"] {
        let entry = serde_json::to_value(state.operation(name).unwrap()).unwrap();
        assert_eq!(entry["cid"], json!("cid-42"), "{name}: the agenda's cid, as POP set it");
    }
    // POP objects carry both; they are read and written back.
    let pop: pop_domain::OperationProgress = serde_json::from_value(json!({
        "id": "p-a", "cid": "c1", "title": "Encode", "operation": "a", "processingState": "WAITING"
    }))
    .unwrap();
    let back = serde_json::to_value(&pop).unwrap();
    assert_eq!((&back["cid"], &back["title"]), (&json!("c1"), &json!("Encode")));
}

/// A large report of a large agenda is matched through folded names (one fold per name, not
/// per pair): the same answers as the scan of small ones, case-insensitively, non-ASCII too.
#[test]
fn a_large_report_matches_names_as_a_small_one() {
    let names: Vec<String> = (0..40).map(|i| format!("Étape-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let events = history(running(agenda_of(&refs, json!({}))));
    let reported: Vec<OperationReport> =
        names.iter().map(|n| executing(&n.to_uppercase(), 10.0)).collect();
    let taken = replay(&events).decide(&report("w1", 10, ops(reported))).unwrap();
    let pop_domain::agenda::AgendaEvent::ProgressReported(e) = &taken[0] else { panic!() };
    assert_eq!(e.operations.len(), 40, "every name matched: {taken:?}");
    // The same name twice, in two cases, is still refused.
    let mut twice: Vec<OperationReport> = names.iter().map(|n| executing(n, 10.0)).collect();
    twice.push(executing(&names[3].to_lowercase(), 20.0));
    let Err(AgendaError::Invalid(errors)) = replay(&events).decide(&report("w1", 11, ops(twice)))
    else {
        panic!("expected a validation error")
    };
    assert!(errors.errors[0].message.contains("reported twice"), "{errors:?}");
}

/// A report larger than one event may be (two results each within the limit on a result,
/// together over 1 MiB: popclient27) is recorded in parts, each within
/// [`pop_domain::agenda::REPORT_PART_BYTES`], the agenda's diagnostics and start in the first,
/// the completion after the last; the state they make is the one a single event would make.
#[test]
fn a_report_too_large_for_one_event_is_recorded_in_parts_to_the_same_state() {
    use pop_domain::agenda::{AgendaEvent, REPORT_PART_BYTES};
    use pop_domain::codec::EventCodec;
    let given = history(running(agenda_of(&["a", "b", "c"], json!({}))));
    let big = |name: &str, fill: char| OperationReport {
        result_payload: Some(json!({ "out": fill.to_string().repeat(400 << 10) })),
        ..succeeded(name)
    };
    let whole = ProgressReport {
        state: Some(Complete),
        message: Some("succeeded".into()),
        diagnostics: vec![DiagnosticEvent { message: "agenda note".into(), ..Default::default() }],
        ..ops(vec![big("a", 'x'), big("b", 'y'), big("c", 'z')])
    };
    let events = replay(&given).decide(&report("w1", 20, whole)).unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            "AgendaProgressReported",
            "AgendaProgressReported",
            "AgendaProgressReported",
            "AgendaCompleted"
        ],
        "each 400 KiB result in a part of its own"
    );
    for (i, e) in events.iter().enumerate() {
        let AgendaEvent::ProgressReported(part) = e else { continue };
        let bytes = serde_json::to_vec(part).unwrap().len();
        assert!(bytes <= REPORT_PART_BYTES, "part {i} takes {bytes} bytes");
        assert_eq!(part.diagnostics.is_empty(), i > 0, "diagnostics only in the first part");
        assert_eq!(part.started_time.is_some(), i == 0, "the start only in the first part");
    }
    let mut all = given.clone();
    all.extend(events);
    let state = replay(&all);
    assert_eq!(state.processing_state(), Complete);
    assert_eq!(state.message(), "succeeded");
    for (name, fill) in [("a", 'x'), ("b", 'y'), ("c", 'z')] {
        let op = state.operation(name).unwrap();
        assert_eq!(op_state(&state, name), (Complete, "succeeded".to_string()));
        assert_eq!(op.result_payload.to_value()["out"].as_str().map(str::len), Some(400 << 10));
        assert!(op.result_payload.to_value()["out"].as_str().unwrap().starts_with(fill));
    }
    assert_eq!(state.progress().diagnostic_events.len(), 1);
    assert!(state.progress().started_time.is_some());

    // A small report stays one event.
    let small = ops(vec![succeeded("a")]);
    let events = replay(&given).decide(&report("w1", 20, small)).unwrap();
    assert_eq!(events.len(), 1);
}

/// The bytes of an operation's params are bounded once a report's are merged in, not only
/// the report's own map (popclient27: four reports of 200 KiB each made 800 KB of params).
#[test]
fn reported_params_are_bounded_in_bytes_once_merged() {
    let given = history(running(agenda_of(&["a"], json!({}))));
    let with_params = |key: &str| ProgressReport {
        params_bytes: Some(256 << 10),
        ..ops(vec![OperationReport {
            params: params(json!({ key: "p".repeat(100 << 10) })),
            ..executing("a", 10.0)
        }])
    };
    let all = history_after(
        &given,
        vec![report("w1", 20, with_params("k1")), report("w1", 21, with_params("k2"))],
    );
    let Err(AgendaError::Invalid(errors)) =
        replay(&all).decide(&report("w1", 22, with_params("k3")))
    else {
        panic!("a third 100 KiB param is past 256 KiB merged")
    };
    assert_eq!(errors.errors[0].field, "operationProgress[0].params", "{errors:?}");
    assert!(errors.errors[0].message.contains("262144"), "{errors:?}");
    // The same key again replaces its value: the merged map does not grow.
    assert!(replay(&all).decide(&report("w1", 22, with_params("k2"))).is_ok());

    // Params already past the bound (grown before it was checked, or under a higher limit):
    // an echo of them, or a report that does not grow them, is taken; one that grows them is
    // not (review-s47: every echo was refused, and the agenda could not be reported on).
    let unchecked = |key: &str| ProgressReport { params_bytes: None, ..with_params(key) };
    let past = history_after(
        &given,
        vec![
            report("w1", 20, unchecked("k1")),
            report("w1", 21, unchecked("k2")),
            report("w1", 22, unchecked("k3")),
        ],
    );
    let echo = ProgressReport {
        params_bytes: Some(256 << 10),
        ..ops(vec![OperationReport {
            params: replay(&past).operation("a").unwrap().params.clone(),
            ..executing("a", 20.0)
        }])
    };
    assert!(replay(&past).decide(&report("w1", 23, echo)).is_ok(), "an echo is taken");
    assert!(replay(&past).decide(&report("w1", 23, with_params("k3"))).is_ok(), "no growth");
    assert!(replay(&past).decide(&report("w1", 23, with_params("k4"))).is_err(), "growth");
}

/// The agenda's diagnostics and the first change that would pass a part together go in parts
/// of their own (review-s47: the first part held both, past what one event may hold).
#[test]
fn a_reports_diagnostics_and_a_large_change_go_in_parts_of_their_own() {
    use pop_domain::agenda::{AgendaEvent, REPORT_PART_BYTES};
    let given = history(running(agenda_of(&["a"], json!({}))));
    let diagnostics = (0..10)
        .map(|i| DiagnosticEvent {
            message: format!("{i}{}", "m".repeat(32_000)),
            stack_trace: Some("t".repeat(32_000)),
            ..Default::default()
        })
        .collect();
    let report_of = ProgressReport {
        diagnostics,
        ..ops(vec![OperationReport {
            result_payload: Some(json!({ "out": "x".repeat(400 << 10) })),
            ..executing("a", 50.0)
        }])
    };
    let events = replay(&given).decide(&report("w1", 20, report_of)).unwrap();
    let parts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgendaEvent::ProgressReported(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].operations.is_empty() && parts[0].diagnostics.len() == 10);
    assert!(parts[1].diagnostics.is_empty() && parts[1].operations.len() == 1);
    for p in parts {
        assert!(serde_json::to_vec(p).unwrap().len() <= REPORT_PART_BYTES);
    }
}

/// A report's agenda-level params (POP's `AgendaProgress.params`) are merged into the agenda
/// progress's, reported keys winning, as an operation's are into its own (popclient53: they
/// were dropped without a word); the definition keeps its own, an echo changes nothing, and
/// the merged map is bounded as an operation's is.
#[test]
fn reported_agenda_params_are_merged_into_the_progress() {
    let given = history(running(agenda_of(&["a"], json!({}))));
    let with = |sent: serde_json::Value| ProgressReport {
        params: params(sent),
        params_bytes: Some(256 << 10),
        ..ops(vec![executing("a", 10.0)])
    };
    let after = history_after(&given, vec![report("w1", 20, with(json!({"node": "n1", "k": 1})))]);
    let state = replay(&after);
    assert_eq!(state.progress().params, params(json!({"node": "n1", "k": 1})));
    assert_eq!(state.agenda().unwrap().params, params(json!({})), "the definition's stay");
    assert!(state.kept_bytes() > replay(&given).kept_bytes(), "counted for the quota");

    // Merged: a later report's keys win, the others stay.
    let later = history_after(&after, vec![report("w1", 21, with(json!({"node": "n2"})))]);
    assert_eq!(replay(&later).progress().params, params(json!({"node": "n2", "k": 1})));

    // The definition's own keys are not taken from a report: an executor echoes the params it
    // was handed, stale once an updateAgenda changed them (review-s51b M1).
    let defined = history(running(agenda_of(&["a"], json!({"tier": "gold"}))));
    let echo = with(json!({"tier": "silver", "node": "n1"}));
    let state = replay(&history_after(&defined, vec![report("w1", 20, echo)]));
    assert_eq!(state.progress().params, params(json!({"tier": "gold", "node": "n1"})));

    // An echo of what it holds records no change of them.
    let echo = with(json!({"node": "n1", "k": 1}));
    let events = replay(&after).decide(&report("w1", 21, echo)).unwrap();
    assert!(
        events.iter().all(|e| !matches!(e, pop_domain::agenda::AgendaEvent::ProgressReported(p) if p.params.is_some())),
        "{events:?}"
    );

    // Bounded once merged, named as the report's field.
    let big = |key: &str| with(json!({ key: "p".repeat(100 << 10) }));
    let grown =
        history_after(&given, vec![report("w1", 20, big("k1")), report("w1", 21, big("k2"))]);
    let Err(AgendaError::Invalid(errors)) = replay(&grown).decide(&report("w1", 22, big("k3")))
    else {
        panic!("a third 100 KiB param is past 256 KiB merged")
    };
    assert_eq!(errors.errors[0].field, "params", "{errors:?}");
    assert!(errors.errors[0].message.contains("the agenda's params"), "{errors:?}");

    // Past twice the customer's quota, a report keeps no new params of the agenda either.
    let over = ProgressReport { over_quota: Some("over".into()), ..with(json!({"new": true})) };
    let state = replay(&history_after(&after, vec![report("w1", 21, over)]));
    assert_eq!(state.progress().params, params(json!({"node": "n1", "k": 1})));
}

/// The same expansion sent again (a generator's resend after a lost answer: `pop worker`
/// resends on a timeout) changes nothing and is not refused (popclient61 M2: refused for names
/// already used, the generator failed and its agenda with it). One whose operation differs
/// from the one of that name is refused as before.
#[test]
fn the_same_expansion_sent_again_changes_nothing() {
    let given = history(running(agenda_of(&["split"], json!({}))));
    let parts = vec![op("part-1", json!({"n": 1}), json!({})), op("join", json!({}), json!({}))];
    let after = history_after(&given, vec![expand(parts.clone(), 10)]);
    check(&after, expand(parts.clone(), 11), Then::Types(vec![]));
    // Sent again with one more: that one is added, the others were (repopclient61 F5: refused
    // whole for the names already used).
    let mut more = parts;
    more.push(op("part-2", json!({"n": 2}), json!({})));
    let state = check(&after, expand(more, 11), Then::Types(vec!["OperationsExpanded"]));
    let names: Vec<&str> =
        state.agenda().unwrap().operations.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["split", "part-1", "join", "part-2"]);
    check(
        &after,
        expand(vec![op("part-1", json!({"n": 2}), json!({}))], 12),
        Then::Refused(ErrorCode::Validation, "already used"),
    );
}
