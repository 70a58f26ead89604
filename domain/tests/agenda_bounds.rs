//! What one agenda keeps of its reports is bounded in bytes (hostile40 M1, M2): its operations'
//! results and params together, and its diagnostics, whose texts are cut to the agenda's share.
//! A result past a bound is not kept, with a diagnostic saying why, and fails the operation it
//! completes; a report is never refused whole for it.

mod agenda_support;

use agenda_support::*;
use pop_domain::agenda::{
    AgendaEvent, AgendaState, DIAGNOSTIC_BYTES_PER_AGENDA, MAX_DEFINITION_BYTES_PER_AGENDA,
    MAX_PARAMS_BYTES_PER_AGENDA, MAX_RESULT_BYTES_PER_AGENDA, MIN_DIAGNOSTIC_TEXT_BYTES,
    OperationReport, ProgressReport,
};
use pop_domain::model::status_code::NOT_RETRYABLE;
use pop_domain::validate::{MAX_DIAGNOSTIC_TEXT_BYTES, json_bytes};
use pop_domain::{Aggregate, DiagnosticEvent, ProcessingState};
use serde_json::{Value, json};

use ProcessingState::{Complete, Executing, Waiting};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("o{i}")).collect()
}

fn running_agenda(n: usize) -> Vec<AgendaEvent> {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    history(running(agenda_of(&refs, json!({}))))
}

fn with_result(mut op: OperationReport, result: Value) -> OperationReport {
    op.result_payload = Some(result);
    op
}

fn limited(operations: Vec<OperationReport>) -> ProgressReport {
    ProgressReport { payload_bytes: Some(512 << 10), ..ops(operations) }
}

fn diagnostics_of(state: &AgendaState) -> usize {
    let agenda = state.progress().diagnostic_events.iter().map(json_bytes).sum::<usize>();
    agenda
        + state
            .progress()
            .operation_progress
            .iter()
            .flat_map(|p| p.diagnostic_events.iter())
            .map(json_bytes)
            .sum::<usize>()
}

/// A result sent as JSON text is measured as stored, a JSON string (review-s45b: by its text,
/// one of control characters passed and was too large to store); the diagnostic names the
/// text's size too (popclient26). Completing the operation, it fails it, and an agenda
/// reported succeeded with it fails.
#[test]
fn a_result_sent_as_text_is_measured_as_stored_and_said_so() {
    let given = running_agenda(1);
    let text = "\"q\",".repeat(250); // 1,000 bytes of text, 1,502 as a JSON string
    let sent = |max: usize| ProgressReport {
        state: Some(Complete),
        message: Some("succeeded".into()),
        payload_bytes: Some(max),
        ..ops(vec![with_result(succeeded("o0"), Value::String(text.clone()))])
    };
    let fits = state_after(&given, sent(1_502));
    assert_eq!(op_state(&fits, "o0"), (Complete, "succeeded".into()));
    assert!(!fits.operation("o0").unwrap().result_payload.is_null());

    let over = state_after(&given, sent(1_501));
    assert_eq!(op_state(&over, "o0"), (Complete, "failed".into()));
    assert_eq!(over.progress().processing_state_message.as_deref(), Some("failed"));
    let op = over.operation("o0").unwrap();
    assert!(op.result_payload.is_null());
    let said = &op.diagnostic_events[0];
    assert!(
        said.message.contains("1502 bytes as JSON (a JSON string of 1000 bytes of text"),
        "{}",
        said.message
    );
    assert!(said.message.ends_with("and the operation failed"), "{}", said.message);
    assert_eq!(said.status_code.as_deref(), Some(NOT_RETRYABLE));
}

/// The agenda's results are bounded together: each within the limit on one, the one that
/// would take them past [`MAX_RESULT_BYTES_PER_AGENDA`] is not kept and fails its operation
/// (NOT_RETRYABLE: the same handler makes the same result); an interim result is only dropped,
/// the operation goes on. A result that replaces an interim one counts only what it adds.
#[test]
fn an_agendas_results_are_bounded_together() {
    let n = 20;
    let mut events = running_agenda(n);
    let big = |c: char| json!({ "out": c.to_string().repeat(400 << 10) });
    let per = json_bytes(&big('x'));
    let fit = MAX_RESULT_BYTES_PER_AGENDA / per;
    assert!(fit < n - 2, "the test needs operations past the bound");
    // o0 holds an interim result first, replaced by its final one below.
    events = history_after(
        &events,
        vec![report("w1", 5, limited(vec![with_result(executing("o0", 50.0), big('i'))]))],
    );
    for i in 0..fit {
        let name = format!("o{i}");
        events = history_after(
            &events,
            vec![report(
                "w1",
                10 + i as i64,
                limited(vec![with_result(succeeded(&name), big('x'))]),
            )],
        );
    }
    let state = replay(&events);
    assert!(state.result_bytes() <= MAX_RESULT_BYTES_PER_AGENDA);
    for i in 0..fit {
        assert_eq!(op_state(&state, &format!("o{i}")), (Complete, "succeeded".into()), "o{i}");
    }

    // The next one passes the bound: not kept, the operation failed, the reason recorded.
    let next = format!("o{fit}");
    let after = state_after(&events, limited(vec![with_result(succeeded(&next), big('y'))]));
    assert_eq!(op_state(&after, &next), (Complete, "failed".into()));
    let op = after.operation(&next).unwrap();
    assert!(op.result_payload.is_null());
    let said = &op.diagnostic_events[0];
    assert!(
        said.message
            .contains(&format!("past the {MAX_RESULT_BYTES_PER_AGENDA} bytes an agenda keeps")),
        "{}",
        said.message
    );
    assert_eq!(said.status_code.as_deref(), Some(NOT_RETRYABLE));
    assert_eq!(after.result_bytes(), state.result_bytes());
    // Sent again (POP's executor after a timeout), the same report is taken and adds nothing.
    let sent = || limited(vec![with_result(succeeded(&next), big('y'))]);
    let failed_once = history_after(&events, vec![report("w1", 50, sent())]);
    let resent = replay(&failed_once).decide(&report("w1", 51, sent())).unwrap();
    for event in resent {
        let AgendaEvent::ProgressReported(e) = event else { panic!("{event:?}") };
        assert!(e.operations.is_empty() && e.diagnostics.is_empty(), "{e:?}");
    }

    // An interim result past it is dropped, and the operation runs on.
    let interim =
        state_after(&events, limited(vec![with_result(executing(&next, 10.0), big('y'))]));
    assert_eq!(interim.operation(&next).unwrap().processing_state, Executing);
    assert!(interim.operation(&next).unwrap().result_payload.is_null());
    assert!(!interim.operation(&next).unwrap().diagnostic_events[0].message.contains("failed"));

    // A small result still fits.
    let small =
        state_after(&events, limited(vec![with_result(succeeded(&next), json!({"ok": 1}))]));
    assert_eq!(op_state(&small, &next), (Complete, "succeeded".into()));
}

/// Params reported past the agenda's bound (each operation's within its own) are not kept, and
/// the operation says so; the report is taken (popclient29: refused, POP's executor sent it
/// again until the lease ran out). An echo is not growth. Results filling their own bound do
/// not starve params (review-s49).
#[test]
fn reported_params_past_the_agendas_bound_are_not_kept() {
    let n = 40;
    let mut events = running_agenda(n);
    let param = |c: char| params(json!({ "log": c.to_string().repeat(200 << 10) }));
    let with_params = |name: &str, c: char| {
        limited(vec![OperationReport { params: param(c), ..executing(name, 10.0) }])
    };
    // Results at their own bound first.
    let big = json!({ "out": "r".repeat(400 << 10) });
    for i in 0..(MAX_RESULT_BYTES_PER_AGENDA / json_bytes(&big)) {
        let sent =
            limited(vec![with_result(executing(&format!("o{}", n - 1 - i), 5.0), big.clone())]);
        events = history_after(&events, vec![report("w1", 5, sent)]);
    }
    let mut i = 0;
    loop {
        let name = format!("o{i}");
        let state = replay(&events);
        let new = state.decide(&report("w1", 10 + i as i64, with_params(&name, 'p'))).unwrap();
        let after = replay(&[events.clone(), new.clone()].concat());
        let op = after.operation(&name).unwrap();
        if op.params.is_empty() {
            let said = &op.diagnostic_events[0].message;
            assert!(
                said.contains(&format!(
                    "past the {MAX_PARAMS_BYTES_PER_AGENDA} bytes an agenda keeps"
                )),
                "{said}"
            );
            assert!(after.params_bytes() <= MAX_PARAMS_BYTES_PER_AGENDA);
            assert_eq!(op.processing_state, Executing, "the operation goes on");
            // Sent again, the same report says nothing more.
            let again =
                after.decide(&report("w1", 11 + i as i64, with_params(&name, 'p'))).unwrap();
            for event in again {
                let AgendaEvent::ProgressReported(e) = event else { panic!("{event:?}") };
                assert!(e.operations.is_empty(), "{e:?}");
            }
            // The echo of params already held is taken, and changes nothing.
            assert!(after.decide(&report("w1", 100, with_params("o0", 'p'))).is_ok());
            assert!(i >= 3, "params were kept up to their bound: {i}");
            return;
        }
        events.extend(new);
        i += 1;
        assert!(i < n, "params grew past the agenda's bound");
    }
}

/// Diagnostics are cut to the agenda's share: one of 61 operations sent ten diagnostics of 32
/// KiB of message and 32 KiB of stack trace each on every operation (hostile40 M1: 39 MB, past
/// what any answer carries) keeps them within [`DIAGNOSTIC_BYTES_PER_AGENDA`]; an agenda of one
/// operation keeps the whole 32 KiB of each text.
#[test]
fn diagnostics_are_cut_to_the_agendas_share() {
    let diagnostic = |op: &str, k: usize| DiagnosticEvent {
        message: format!("{op} attempt {k} {}", "m".repeat(MAX_DIAGNOSTIC_TEXT_BYTES)),
        stack_trace: Some(format!("{op} {k} {}", "s".repeat(MAX_DIAGNOSTIC_TEXT_BYTES))),
        ..DiagnosticEvent::default()
    };
    let n = 61;
    let mut events = running_agenda(n);
    for i in 0..n {
        let name = format!("o{i}");
        let op = OperationReport {
            diagnostics: (0..10).map(|k| diagnostic(&name, k)).collect(),
            ..executing(&name, 10.0)
        };
        events = history_after(&events, vec![report("w1", 10 + i as i64, limited(vec![op]))]);
    }
    let agenda_level = ProgressReport {
        diagnostics: (0..10).map(|k| diagnostic("agenda", k)).collect(),
        ..limited(Vec::new())
    };
    events = history_after(&events, vec![report("w1", 100, agenda_level)]);
    let state = replay(&events);
    assert_eq!(state.operation("o60").unwrap().diagnostic_events.len(), 10);
    let kept = diagnostics_of(&state);
    assert!(kept <= DIAGNOSTIC_BYTES_PER_AGENDA, "{kept} > {DIAGNOSTIC_BYTES_PER_AGENDA}");
    assert!(kept > DIAGNOSTIC_BYTES_PER_AGENDA / 2, "{kept}: the share is used");
    // Each keeps its start and end around the note of the cut.
    let first = &state.operation("o0").unwrap().diagnostic_events[0];
    assert!(first.message.starts_with("o0 attempt 0 m") && first.message.ends_with('m'));
    assert!(first.message.contains("bytes cut: pop keeps at most"), "{}", &first.message[..100]);
    // The same report sent again adds nothing: its diagnostics are cut the same way.
    let again = OperationReport {
        diagnostics: (0..10).map(|k| diagnostic("o0", k)).collect(),
        ..executing("o0", 10.0)
    };
    let resent = state.decide(&report("w1", 101, limited(vec![again]))).unwrap();
    for event in resent {
        let AgendaEvent::ProgressReported(e) = event else { panic!("{event:?}") };
        assert!(e.operations.is_empty() && e.diagnostics.is_empty(), "{e:?}");
    }

    // One operation: the whole 32 KiB of each text.
    let one = history_after(
        &running_agenda(1),
        vec![report(
            "w1",
            10,
            limited(vec![OperationReport {
                diagnostics: vec![diagnostic("o0", 0)],
                ..executing("o0", 10.0)
            }]),
        )],
    );
    let one = replay(&one);
    let kept = &one.operation("o0").unwrap().diagnostic_events[0];
    assert!(kept.message.len() <= MAX_DIAGNOSTIC_TEXT_BYTES);
    assert!(kept.message.len() > MAX_DIAGNOSTIC_TEXT_BYTES - 8, "{}", kept.message.len());
    assert!(kept.message.contains(&format!("pop keeps at most {MAX_DIAGNOSTIC_TEXT_BYTES} bytes")));
}

/// While the customer is past its memory quota, a result is not kept (retryable: a later
/// attempt may find room) and a diagnostic keeps the least of its texts.
#[test]
fn past_the_customers_quota_nothing_more_is_kept() {
    let given = running_agenda(3);
    let quota = "customer \"acme\"'s live agendas hold more than twice its quota of 50 bytes";
    let over = |sent: ProgressReport| ProgressReport { over_quota: Some(quota.into()), ..sent };
    let sent = over(limited(vec![
        with_result(succeeded("o0"), json!({"out": "x".repeat(1_000)})),
        OperationReport {
            diagnostics: vec![DiagnosticEvent {
                message: "e".repeat(5_000),
                ..DiagnosticEvent::default()
            }],
            ..failed("o1")
        },
        OperationReport {
            params: params(json!({"node": "n1"})),
            message: Some("m".repeat(5_000)),
            ..executing("o2", 10.0)
        },
    ]));
    let events = history_after(&given, vec![report("w1", 50, sent.clone())]);
    let state = replay(&events);
    // States change (the agenda can finish); nothing new is kept.
    assert_eq!(op_state(&state, "o0"), (Complete, "failed".into()));
    assert_eq!(op_state(&state, "o1"), (Complete, "failed".into()));
    for name in ["o0", "o1", "o2"] {
        let op = state.operation(name).unwrap();
        assert!(op.result_payload.is_null() && op.diagnostic_events.is_empty(), "{op:?}");
        assert!(op.params.get("node").is_none(), "{:?}", op.params);
    }
    let message = state.operation("o2").unwrap().processing_state_message.as_deref();
    assert!(!message.is_some_and(|m| m.contains("mmm")), "no new free text: {message:?}");
    // The agenda says why, once: the same report sent again adds nothing.
    let said = &state.progress().diagnostic_events;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].message.ends_with(quota), "{}", said[0].message);
    for event in state.decide(&report("w1", 51, sent)).unwrap() {
        let AgendaEvent::ProgressReported(e) = event else { panic!("{event:?}") };
        assert!(e.operations.is_empty() && e.diagnostics.is_empty(), "{e:?}");
    }

    // A report names operations the agenda does not have: past the quota it adds none, and is
    // refused naming the field (hostile42 H3).
    let adding = over(limited(vec![executing("o2", 20.0), executing("generated", 1.0)]));
    let Err(pop_domain::agenda::AgendaError::Invalid(errors)) =
        state.decide(&report("w1", 52, adding))
    else {
        panic!("operations were added past the quota")
    };
    assert_eq!(errors.errors[0].field, "operationProgress[1].operation", "{errors:?}");
    assert!(errors.errors[0].message.ends_with(quota), "{errors:?}");

    // An interim result it already holds, sent again within the quota or past it, changes
    // nothing.
    let heartbeat = || limited(vec![with_result(executing("o0", 10.0), json!({"partial": 1}))]);
    let held = history_after(&given, vec![report("w1", 50, heartbeat())]);
    for sent in [heartbeat(), over(heartbeat())] {
        for event in replay(&held).decide(&report("w1", 51, sent)).unwrap() {
            let AgendaEvent::ProgressReported(e) = event else { panic!("{event:?}") };
            assert!(e.operations.is_empty() && e.diagnostics.is_empty(), "{e:?}");
        }
    }
}

/// The state after `given` and a report of w1's at t=50.
fn state_after(given: &[AgendaEvent], sent: ProgressReport) -> AgendaState {
    replay(&history_after(given, vec![report("w1", 50, sent)]))
}

/// The largest agenda keeps what one answer carries (the API's budget,
/// `pop_api::config::MAX_RESPONSE_BYTES`, 16 MiB), its definition included: every operation it
/// may have, a definition of 2 MB, results and params at the agenda's bounds, ten diagnostics on
/// each operation and the agenda whose every text (status codes too) is control characters
/// (six bytes each as stored; review-s49), and free-text messages of them.
#[test]
fn the_largest_agenda_keeps_what_one_answer_carries() {
    let n = pop_domain::validate::MAX_OPERATIONS - 1;
    let names = names(n);
    let operations = names
        .iter()
        .map(|name| op(name, json!({"in": "i".repeat(1_000)}), json!({"p": "p".repeat(1_000)})))
        .collect();
    let mut events = history(running(agenda_with(operations, json!({}))));
    let control = |k: usize| "\u{1}".repeat(1_000 + k);
    let diagnostic = |op: &str, k: usize| DiagnosticEvent {
        message: format!("{op} attempt {k} {}", control(k)),
        stack_trace: Some(control(k)),
        payload: json!({"log": control(k)}),
        time: Some(t(5)),
        status_code: Some(control(k)),
    };
    let result = json!({"out": "r".repeat(MAX_RESULT_BYTES_PER_AGENDA / n)});
    for chunk in names.chunks(50) {
        let reported = chunk
            .iter()
            .map(|name| OperationReport {
                diagnostics: (0..10).map(|k| diagnostic(name, k)).collect(),
                message: Some(control(0)),
                params: params(json!({"more": "q".repeat(2_000)})),
                ..with_result(executing(name, 10.0), result.clone())
            })
            .collect();
        let mut sent = limited(reported);
        sent.diagnostics = (0..10).map(|k| diagnostic("agenda", k)).collect();
        sent.message = Some(control(0));
        events = history_after(&events, vec![report("w1", 10, sent)]);
    }
    let state = replay(&events);
    let o0 = state.operation("o0").unwrap();
    assert_eq!(o0.diagnostic_events.len(), 10);
    assert!(json_bytes(&o0.diagnostic_events[0].message) - 2 <= MIN_DIAGNOSTIC_TEXT_BYTES);
    assert!(state.result_bytes() <= MAX_RESULT_BYTES_PER_AGENDA);
    let definition = serde_json::to_vec(state.agenda().unwrap()).unwrap().len();
    let progress = serde_json::to_vec(state.progress()).unwrap().len();
    assert!(definition > 2_000_000, "{definition}");
    assert!(definition + progress <= 16 << 20, "{definition} + {progress}");
}

/// A result not kept, then the executor's own outcome report calling the agenda succeeded (POP
/// reports the operations, then the agenda's outcome, and sends a report again after a
/// timeout): taken, the operation and the agenda failed as they are, the outcome's own
/// diagnostics added once (review-s49: refused AGENDA_COMPLETE, its diagnostics lost).
#[test]
fn an_outcome_report_after_a_result_not_kept_is_taken() {
    let given = running_agenda(2);
    let result = json!({"out": "r".repeat(2_000)});
    let operations = || vec![with_result(succeeded("o0"), result.clone()), succeeded("o1")];
    // A limit on one result that this one passes.
    let tight = |sent: ProgressReport| ProgressReport { payload_bytes: Some(1_000), ..sent };
    let failed = history_after(&given, vec![report("w1", 20, tight(limited(operations())))]);
    let state = replay(&failed);
    assert_eq!(state.progress().processing_state_message.as_deref(), Some("failed"));
    assert_eq!(op_state(&state, "o0"), (Complete, "failed".into()));
    // The same report again, then the outcome report with a diagnostic of its own.
    let again = state.decide(&report("w1", 21, tight(limited(operations())))).unwrap();
    assert!(again.is_empty(), "{again:?}");
    let outcome = ProgressReport {
        state: Some(Complete),
        message: Some("succeeded".into()),
        diagnostics: vec![DiagnosticEvent { message: "done".into(), ..DiagnosticEvent::default() }],
        ..tight(limited(operations()))
    };
    let added = state.decide(&report("w1", 22, outcome)).unwrap();
    assert_eq!(added.len(), 1, "{added:?}");
    let AgendaEvent::DiagnosticsAdded(e) = &added[0] else { panic!("{added:?}") };
    assert_eq!(e.diagnostics[0].message, "done");
}

/// A diagnostic sent again is known for the one recorded however short the agenda cut it then:
/// after operations were added (which shortens the cut) and across the customer's quota
/// (review-s49, popclient29: each was recorded again, pushing the executor's own out).
#[test]
fn a_resent_diagnostic_is_kept_once_whatever_the_cut() {
    let given = running_agenda(5);
    let trace = |k: usize| DiagnosticEvent {
        message: format!("failure {k}"),
        stack_trace: Some(format!("at Foo.bar({k})\n").repeat(2_000)),
        time: if k.is_multiple_of(2) { Some(t(5)) } else { None },
        ..DiagnosticEvent::default()
    };
    let sent = |extra: &[&str], over: bool| ProgressReport {
        over_quota: over.then(|| "past the quota".to_string()),
        ..limited(
            std::iter::once(OperationReport {
                diagnostics: (0..3).map(trace).collect(),
                ..executing("o0", 10.0)
            })
            .chain(extra.iter().map(|name| executing(name, 1.0)))
            .collect(),
        )
    };
    let mut events = history_after(&given, vec![report("w1", 20, sent(&[], false))]);
    let first = replay(&events).operation("o0").unwrap().diagnostic_events.clone();
    assert_eq!(first.len(), 3);
    // Operations added by a report (POP's generated ones), the list sent again with it.
    let added = ["g1", "g2", "g3", "g4", "g5", "g6"];
    events = history_after(&events, vec![report("w1", 21, sent(&added, false))]);
    // Then past the quota (the shortest cut), then back under it.
    events = history_after(&events, vec![report("w1", 22, sent(&added, true))]);
    events = history_after(&events, vec![report("w1", 23, sent(&added, false))]);
    let state = replay(&events);
    assert_eq!(state.progress().operation_progress.len(), 11);
    assert_eq!(state.operation("o0").unwrap().diagnostic_events, first);
}

/// An expansion that would take the definition past [`MAX_DEFINITION_BYTES_PER_AGENDA`] is
/// refused, naming the field (hostile41 M1: expanded past 16 MiB, the agenda could no longer be
/// read whole); the operations a report adds are not (review-s49b).
#[test]
fn a_definition_is_bounded_but_a_report_adding_operations_is_taken() {
    let given = running_agenda(1);
    let large = op("large", json!({"in": "x".repeat(MAX_DEFINITION_BYTES_PER_AGENDA)}), json!({}));
    let Err(pop_domain::agenda::AgendaError::Invalid(errors)) =
        replay(&given).decide(&expand(vec![large], 20))
    else {
        panic!("an expansion past the bound was taken")
    };
    assert_eq!(errors.errors[0].field, "operations", "{errors:?}");
    assert!(
        errors.errors[0].message.contains("an agenda's definition takes at most"),
        "{errors:?}"
    );
    let small = op("small", json!({"in": "x"}), json!({}));
    assert!(replay(&given).decide(&expand(vec![small], 20)).is_ok());

    // The operations a report adds are not held to it (refusing them would refuse the report).
    let large = "x".repeat(MAX_DEFINITION_BYTES_PER_AGENDA - 2_000);
    let near =
        history_after(&given, vec![expand(vec![op("near", json!({"in": large}), json!({}))], 21)]);
    let added = limited((0..50).map(|k| executing(&format!("generated-{k}"), 1.0)).collect());
    let state = state_after(&near, added);
    assert_eq!(state.progress().operation_progress.len(), 52);
}

/// An operation reported WAITING is judged on what it was sent with: a result too large to
/// keep is refused as a result of an operation that has not run, not dropped with a note about
/// its size and the report answered (review55 M1).
#[test]
fn a_waiting_operation_with_a_result_too_large_to_keep_is_refused_as_waiting() {
    let given = running_agenda(2);
    let waiting = OperationReport { name: "o1".into(), state: Waiting, ..Default::default() };
    let big = with_result(waiting, json!({"blob": "x".repeat(4_000)}));
    let tight =
        ProgressReport { payload_bytes: Some(1_000), ..limited(vec![executing("o0", 5.0), big]) };
    let e = replay(&given).decide(&report("w1", 20, tight)).unwrap_err();
    assert!(e.to_string().contains("is reported WAITING with a resultPayload"), "{e}");
}

/// Past its customer's log quota a report that moves nothing (no state changes, no operation
/// added) is not written while the lease was renewed in the last fifth of its length (reprobe58
/// M2: a token holding one live agenda wrote 4.5 MB of heartbeats in 10 s past the quota); what
/// moves the agenda is always written, so it finishes; below the quota every report is.
#[test]
fn past_the_log_quota_a_heartbeat_is_written_once_per_fifth_of_the_lease() {
    // Claimed at 2 for 300 s: a report renews it to its time + 300.
    let given = running_agenda(3);
    let passed = |sent: ProgressReport| ProgressReport { log_quota_passed: true, ..sent };
    let at = |when: i64, sent: ProgressReport| report("w1", when, sent);
    // The first report starts the agenda and an operation: written.
    let given = history_after(&given, vec![at(3, passed(ops(vec![executing("o0", 10.0)])))]);
    assert_eq!(op_state(&replay(&given), "o0").0, Executing);
    // A heartbeat a second later: nothing written, the lease as it was.
    for sent in [
        ops(vec![executing("o0", 20.0)]),
        ProgressReport {
            diagnostics: vec![DiagnosticEvent {
                message: "still going".into(),
                ..DiagnosticEvent::default()
            }],
            message: Some("Running step 2".into()),
            ..ProgressReport::default()
        },
        ProgressReport { params: params(json!({"node": "n2"})), ..ProgressReport::default() },
    ] {
        check(&given, at(4, passed(sent.clone())), Then::Types(vec![]));
        // Below the quota the same report is written.
        check(&given, at(4, sent), Then::Types(vec!["AgendaProgressReported"]));
    }
    // An operation completing, or one starting, is written at once.
    let done = check(
        &given,
        at(5, passed(ops(vec![succeeded("o0")]))),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(op_state(&done, "o0"), (Complete, "succeeded".into()));
    let given = history_after(
        &given,
        vec![
            at(5, passed(ops(vec![succeeded("o0")]))),
            at(6, passed(ops(vec![executing("o1", 1.0)]))),
        ],
    );
    // Renewed at 6 to 306: until 66 (less than four fifths left) a heartbeat is not written,
    // from then on it is, and renews the lease.
    check(&given, at(65, passed(ops(vec![executing("o1", 50.0)]))), Then::Types(vec![]));
    let renewed = check(
        &given,
        at(67, passed(ops(vec![executing("o1", 50.0)]))),
        Then::Types(vec!["AgendaProgressReported"]),
    );
    assert_eq!(renewed.operation("o1").unwrap().percent_complete, Some(50.0));
    assert_eq!(renewed.lease().map(|l| l.expires), Some(t(367)));
    // The agenda's outcome is written too.
    let state = check(
        &given,
        at(
            7,
            passed(ProgressReport {
                state: Some(Complete),
                message: Some("failed".into()),
                ..ProgressReport::default()
            }),
        ),
        Then::Types(vec!["AgendaProgressReported", "AgendaCompleted"]),
    );
    assert_eq!(state.progress().processing_state, Complete);
}
