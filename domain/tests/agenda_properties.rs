//! Properties of the agenda aggregate over random command sequences (only accepted commands
//! are kept): replaying the stored events reproduces the state reached step by step, a
//! snapshot plus the tail equals the full replay, evolve is total on arbitrary events, and a
//! COMPLETE agenda leaves COMPLETE only through rerun or retry.

mod agenda_support;

use agenda_support::*;
use chrono::Duration;
use pop_domain::agenda::*;
use pop_domain::{
    Aggregate, DiagnosticEvent, EventCodec, Operation, Params, ProcessingState, Timestamp,
};
use proptest::prelude::*;
use serde_json::json;

const HOLDERS: [&str; 2] = ["w1", "w2"];
const LEASES: [&str; 3] = ["l1", "l2", "l3"];
/// Operation names a report may use: the agenda's, a generated one, a case variant, an unknown.
const NAMES: [&str; 6] = ["probe", "encode", "gen", "gen-1", "ENCODE", "ghost"];

/// probe; encode refs probe; gen (a generator) depends on encode.
fn the_agenda() -> pop_domain::Agenda {
    agenda_with(
        vec![
            op("probe", json!({"u": "s3://in"}), json!({})),
            op("encode", json!({"in": "@<probe.out>"}), json!({})),
            op(
                "gen",
                json!({}),
                json!({"dependsOn": "encode", "agenda.operation.generator": {"operationsJsonPointer": "/ops"}}),
            ),
        ],
        json!({"maximumAttempts": 2}),
    )
}

#[derive(Debug, Clone)]
enum Step {
    Submit,
    Queue,
    Claim {
        holder: usize,
        lease: usize,
    },
    Report {
        holder: usize,
        lease: Option<usize>,
        agenda: Option<(ProcessingState, bool)>,
        ops: Vec<OpStep>,
    },
    Expand {
        generated: usize,
    },
    /// Reports every operation of the submitted agenda COMPLETE, one failed unless `success`.
    Finish {
        success: bool,
    },
    Rerun {
        flags: usize,
    },
    Retry,
    Cancel,
    Reclaim,
    /// The holder hands the agenda back (refused unless it holds the current lease).
    Release {
        holder: usize,
        lease: usize,
    },
    /// The data reaper closes the agenda (refused unless COMPLETE); later steps are refused.
    Reap,
}

#[derive(Debug, Clone)]
struct OpStep {
    name: usize,
    state: ProcessingState,
    success: bool,
    percent: Option<u8>,
    diagnostic: bool,
}

fn state_strategy() -> impl Strategy<Value = ProcessingState> {
    prop_oneof![
        1 => Just(ProcessingState::Waiting),
        3 => Just(ProcessingState::Executing),
        3 => Just(ProcessingState::Complete),
    ]
}

fn op_step() -> impl Strategy<Value = OpStep> {
    // Mostly the agenda's own operations, sometimes a generated, case-variant or unknown name.
    let name = prop_oneof![6 => 0..3usize, 1 => 3..NAMES.len()];
    (name, state_strategy(), prop::bool::weighted(0.7), prop::option::of(0u8..=150), any::<bool>())
        .prop_map(|(name, state, success, percent, diagnostic)| OpStep {
            name,
            state,
            success,
            percent,
            diagnostic,
        })
}

fn mostly_w1() -> impl Strategy<Value = usize> {
    prop::bool::weighted(0.85).prop_map(|w1| if w1 { 0 } else { 1 })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => Just(Step::Submit),
        9 => Just(Step::Queue),
        9 => (mostly_w1(), 0..3usize).prop_map(|(holder, lease)| Step::Claim { holder, lease }),
        36 => (
            mostly_w1(),
            prop::option::weighted(0.2, 0..3usize),
            prop::option::weighted(0.2, (state_strategy(), any::<bool>())),
            prop::collection::vec(op_step(), 0..3)
        )
            .prop_map(|(holder, lease, agenda, ops)| Step::Report { holder, lease, agenda, ops }),
        3 => (0..3usize).prop_map(|generated| Step::Expand { generated }),
        9 => prop::bool::weighted(0.6).prop_map(|success| Step::Finish { success }),
        6 => (0..6usize).prop_map(|flags| Step::Rerun { flags }),
        6 => Just(Step::Retry),
        1 => Just(Step::Cancel),
        6 => Just(Step::Reclaim),
        3 => (mostly_w1(), 0..3usize).prop_map(|(holder, lease)| Step::Release { holder, lease }),
        1 => Just(Step::Reap),
    ]
}

const RERUN_FLAGS: [&[&str]; 6] = [
    &[],
    &["continue"],
    &["operationsToReset=encode"],
    &["operationsToReset=gen", "skipExecution"],
    &["operationsToReset=ghost"],
    &["resetAll", "skipExecution"],
];

/// A step as a command at `now` (`nanos` exercise the millisecond truncation).
fn command(step: &Step, now: Timestamp) -> AgendaCommand {
    let later = |secs| now + Duration::seconds(secs);
    match step {
        Step::Submit => AgendaCommand::Submit { agenda: the_agenda(), insight: insight(), now },
        Step::Queue => AgendaCommand::Queue { now },
        Step::Claim { holder, lease } => AgendaCommand::Claim {
            holder: HOLDERS[*holder].into(),
            lease_id: LEASES[*lease].into(),
            lease_expires: later(300),
            now,
        },
        Step::Report { holder, lease, agenda, ops } => AgendaCommand::ReportProgress {
            holder: HOLDERS[*holder].into(),
            lease_id: lease.map(|l| LEASES[l].to_string()),
            lease_expires: later(300),
            now,
            report: ProgressReport {
                state: agenda.map(|(s, _)| s),
                message: agenda.map(|(_, ok)| if ok { "succeeded" } else { "failed" }.to_string()),
                diagnostics: vec![],
                started: None,
                completed: None,
                params: Default::default(),
                params_bytes: Some(256 << 10),
                payload_bytes: Some(512 << 10),
                over_quota: None,
                log_quota_passed: false,
                operations: ops
                    .iter()
                    .map(|o| OperationReport {
                        name: NAMES[o.name].into(),
                        state: o.state,
                        message: match o.state {
                            ProcessingState::Complete if o.success => Some("succeeded".into()),
                            ProcessingState::Complete => Some("failed".into()),
                            _ => None,
                        },
                        percent: o.percent.map(f64::from),
                        diagnostics: if o.diagnostic {
                            vec![DiagnosticEvent {
                                message: "log".into(),
                                time: Some(now),
                                ..Default::default()
                            }]
                        } else {
                            vec![]
                        },
                        result_payload: (o.state == ProcessingState::Complete)
                            .then(|| json!({"ok": o.success})),
                        started: None,
                        completed: None,
                        // Reported params exercise the merge on replay and in snapshots.
                        params: o
                            .percent
                            .map(|p| serde_json::from_value(json!({"seen": p})).unwrap_or_default())
                            .unwrap_or_default(),
                    })
                    .collect(),
            },
        },
        Step::Expand { generated } => AgendaCommand::Expand {
            operations: vec![Operation {
                name: format!("gen-{generated}"),
                op_type: "shell".into(),
                id: None,
                payload: json!({"in": "@<encode.out>"}).into(),
                params: params(json!({"generatedOperationParent": "gen"})),
            }],
            params: Params::new(),
            now,
        },
        Step::Rerun { flags } => AgendaCommand::Rerun {
            flags: RerunFlags::parse(RERUN_FLAGS[*flags]).expect("the listed flags parse"),
            now,
        },
        Step::Finish { success } => AgendaCommand::ReportProgress {
            holder: HOLDERS[0].into(),
            lease_id: None,
            lease_expires: later(300),
            now,
            report: ProgressReport {
                operations: NAMES[..3]
                    .iter()
                    .enumerate()
                    .map(|(i, name)| OperationReport {
                        name: name.to_string(),
                        state: ProcessingState::Complete,
                        message: Some(
                            if *success || i != 1 { "succeeded" } else { "failed" }.into(),
                        ),
                        ..OperationReport::default()
                    })
                    .collect(),
                ..ProgressReport::default()
            },
        },
        Step::Retry => AgendaCommand::Retry { now },
        Step::Cancel => AgendaCommand::Cancel { reason: None, now },
        // The reclaimer comes late enough for any lease to have expired.
        Step::Reclaim => AgendaCommand::Reclaim { now: later(10_000) },
        Step::Release { holder, lease } => AgendaCommand::Release {
            holder: HOLDERS[*holder].into(),
            lease_id: LEASES[*lease].into(),
            now,
        },
        Step::Reap => {
            AgendaCommand::Reap { reason: "old".into(), cutoff: later(-1), now: later(1) }
        }
    }
}

/// Runs the steps from an empty stream (starting with a submission), keeping accepted
/// commands. Returns (command, state before, events, state after) per accepted step.
fn run(
    steps: &[Step],
    nanos: &[u32],
) -> Vec<(AgendaCommand, AgendaState, Vec<AgendaEvent>, AgendaState)> {
    let mut state = AgendaState::default();
    let mut out = Vec::new();
    let all = std::iter::once(&Step::Submit).chain(steps);
    for (i, step) in all.enumerate() {
        let at =
            t(i as i64 * 20) + Duration::nanoseconds(i64::from(nanos.get(i).copied().unwrap_or(0)));
        let when = command(step, at);
        let Ok(events) = state.decide(&when) else { continue };
        let before = state.clone();
        for e in &events {
            state.evolve(e);
        }
        out.push((when, before, events, state.clone()));
    }
    out
}

fn invariants(state: &AgendaState) -> Result<(), TestCaseError> {
    let Some(agenda) = state.agenda() else { return Ok(()) };
    let p = state.progress();
    let names: Vec<_> = agenda.operations.iter().map(|o| o.name.as_str()).collect();
    let progress_names: Vec<_> = p.operation_progress.iter().map(|o| &*o.operation).collect();
    prop_assert_eq!(names, progress_names, "one progress entry per operation, in order");
    let percent = p.percent_complete.unwrap_or(-1.0);
    prop_assert!((0.0..=100.0).contains(&percent), "percent {}", percent);
    prop_assert_eq!(state.lease().is_some(), state.is_leased(), "a lease exactly while leased");
    if state.processing_state() != ProcessingState::Complete {
        let outcome = ["succeeded", "failed", "cancelled"].contains(&state.message());
        prop_assert!(!outcome, "{:?}/{}", state.processing_state(), state.message());
    }
    if state.is_succeeded() {
        prop_assert_eq!(percent, 100.0);
    }
    if state.is_complete() {
        prop_assert!(
            p.operation_progress.iter().all(|o| o.processing_state == ProcessingState::Complete)
        );
    }
    prop_assert!(p.attempts_completed <= 2 || !state.can_retry(), "retries are bounded");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_stored_events_reproduces_the_state(
        steps in prop::collection::vec(step(), 0..40),
        nanos in prop::collection::vec(0u32..1_000_000_000, 41),
    ) {
        let accepted = run(&steps, &nanos);
        let Some((_, _, _, last)) = accepted.last() else { return Ok(()) };
        let events: Vec<AgendaEvent> = accepted.iter().flat_map(|(_, _, e, _)| e.clone()).collect();
        prop_assert_eq!(&AgendaState::replay(&events), last);
        // Through the codec, as the store will hand them back.
        let decoded: Vec<AgendaEvent> = events
            .iter()
            .map(|e| AgendaEvent::decode(e.event_type(), e.schema_version(), &e.encode().unwrap()).unwrap())
            .collect();
        prop_assert_eq!(&decoded, &events);
        prop_assert_eq!(&AgendaState::replay(&decoded), last);
        for (_, _, _, after) in &accepted {
            invariants(after)?;
        }
    }

    #[test]
    fn a_snapshot_plus_the_tail_equals_the_full_replay(
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let accepted = run(&steps, &[]);
        let events: Vec<AgendaEvent> = accepted.iter().flat_map(|(_, _, e, _)| e.clone()).collect();
        let full = AgendaState::replay(&events);
        for split in 0..=events.len() {
            let head = AgendaState::replay(&events[..split]);
            let snapshot: AgendaState = serde_json::from_slice(&serde_json::to_vec(&head).unwrap()).unwrap();
            prop_assert_eq!(&snapshot, &head, "snapshot at {}", split);
            let mut state = snapshot;
            for e in &events[split..] {
                state.evolve(e);
            }
            prop_assert_eq!(&state, &full, "split at {}", split);
        }
    }

    #[test]
    fn a_complete_agenda_leaves_complete_only_by_rerun_or_retry(
        steps in prop::collection::vec(step(), 0..60),
    ) {
        for (when, before, _, after) in run(&steps, &[]) {
            if before.is_complete() && !after.is_complete() {
                prop_assert!(
                    matches!(when, AgendaCommand::Rerun { .. } | AgendaCommand::Retry { .. }),
                    "{} left COMPLETE", when.verb()
                );
            }
            if before.is_complete() {
                // The one cancel a complete agenda takes withdraws a failed agenda's retry
                // still to come: it stays complete, cancelled, its attempts and operations
                // as they were.
                if matches!(when, AgendaCommand::Cancel { .. }) && before != after {
                    prop_assert!(before.can_retry() && !before.progress().not_retryable());
                    prop_assert!(after.is_cancelled());
                    prop_assert_eq!(
                        after.progress().attempts_completed,
                        before.progress().attempts_completed
                    );
                    prop_assert_eq!(
                        &after.progress().operation_progress,
                        &before.progress().operation_progress
                    );
                }
                // A late report is taken only when it agrees with the outcome (POP's executor
                // reports the agenda's outcome after its operations): only the agenda's
                // diagnostics may grow, never on a cancelled agenda.
                if matches!(when, AgendaCommand::ReportProgress { .. }) {
                    prop_assert!(!before.is_cancelled(), "a report accepted on a cancelled agenda");
                    prop_assert!(after.is_complete() && after.message() == before.message());
                    prop_assert_eq!(
                        &after.progress().operation_progress,
                        &before.progress().operation_progress
                    );
                    prop_assert_eq!(
                        after.progress().attempts_completed,
                        before.progress().attempts_completed
                    );
                    prop_assert!(
                        after.progress().diagnostic_events.len()
                            >= before.progress().diagnostic_events.len()
                    );
                }
            }
        }
    }

    #[test]
    fn evolve_never_panics_on_arbitrary_events(events in prop::collection::vec(arbitrary_event(), 0..30)) {
        let mut state = AgendaState::default();
        for e in &events {
            state.evolve(e);
            // Whatever it absorbed still snapshots.
            let json = serde_json::to_vec(&state).unwrap();
            let _: AgendaState = serde_json::from_slice(&json).unwrap();
        }
    }
}

/// Any event with any content, in any order: names unknown to the agenda, counts at their
/// limits, events before the submission or after completion.
fn arbitrary_event() -> impl Strategy<Value = AgendaEvent> {
    let name = prop::sample::select(vec!["probe", "encode", "gen", "gen-1", "ghost", ""])
        .prop_map(String::from);
    let names = prop::collection::vec(name.clone(), 0..4);
    let time = (0i64..10_000).prop_map(t);
    let count = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()];
    let change = (name.clone(), state_strategy(), prop::option::of(-5.0f64..500.0), count.clone())
        .prop_map(|(operation, state, percent, attempt_count)| OperationProgressChanged {
            operation,
            state,
            message: Some("x".into()),
            percent,
            diagnostics: vec![DiagnosticEvent::default(); 12],
            result_payload: json!({"r": 1}),
            attempt_count,
            attempt_time: None,
            started_time: None,
            completed_time: None,
            params: percent.map(|p| serde_json::from_value(json!({"p": p})).unwrap_or_default()),
        });
    prop_oneof![
        (time.clone(), count.clone()).prop_map(|(time, maximum_attempts)| {
            AgendaEvent::Submitted(AgendaSubmitted { time, agenda: the_agenda(), maximum_attempts })
        }),
        time.clone().prop_map(|time| AgendaEvent::Queued(AgendaQueued { time })),
        time.clone().prop_map(|time| AgendaEvent::Claimed(AgendaClaimed {
            time,
            holder: "w".into(),
            lease_id: "l".into(),
            lease_expires: time
        })),
        (time.clone(), prop::collection::vec(change, 0..4)).prop_map(|(time, operations)| {
            AgendaEvent::ProgressReported(AgendaProgressReported {
                time,
                holder: "w".into(),
                lease_expires: time,
                message: "m".into(),
                started_time: Some(time),
                diagnostics: vec![DiagnosticEvent::default(); 11],
                operations,
                params: None,
            })
        }),
        (time.clone(), count.clone(), names.clone()).prop_map(
            |(time, attempts_completed, cancelled_operations)| {
                AgendaEvent::Completed(AgendaCompleted {
                    time,
                    message: "failed".into(),
                    completed_time: time,
                    attempts_completed,
                    cancelled_operations,
                })
            }
        ),
        (time.clone(), name.clone()).prop_map(|(time, name)| AgendaEvent::OperationsExpanded(
            OperationsExpanded {
                time,
                operations: vec![op(&name, json!({}), json!({})), op(&name, json!({}), json!({}))],
                params: params(json!({"doNotRun": true})),
                maximum_attempts: 0,
            }
        )),
        (time.clone(), names.clone(), names.clone(), names.clone()).prop_map(
            |(time, reset, resumed, removed)| {
                AgendaEvent::Rerun(AgendaRerun {
                    time,
                    flags: RerunFlags::default(),
                    reset_operations: reset,
                    resumed_operations: resumed,
                    removed_operations: removed,
                })
            }
        ),
        time.clone().prop_map(|time| AgendaEvent::Readded(AgendaReadded { time })),
        (time.clone(), count.clone()).prop_map(|(time, attempt)| AgendaEvent::RetryDecided(
            AgendaRetryDecided { time, attempt, maximum_attempts: attempt }
        )),
        (time.clone(), count.clone(), names.clone()).prop_map(
            |(time, attempts_completed, cancelled_operations)| {
                let withdrew_retry = cancelled_operations.is_empty();
                AgendaEvent::Cancelled(AgendaCancelled {
                    time,
                    reason: Some("r".into()),
                    attempts_completed,
                    cancelled_operations,
                    withdrew_retry,
                })
            }
        ),
        (time.clone(), count, names.clone()).prop_map(
            |(time, attempts_completed, interrupted_operations)| {
                AgendaEvent::TimedOut(AgendaTimedOut {
                    time,
                    holder: "w".into(),
                    lease_id: "l".into(),
                    lease_expires: time,
                    attempts_completed,
                    interrupted_operations,
                })
            }
        ),
        time.clone().prop_map(|time| AgendaEvent::Requeued(AgendaRequeued { time })),
        (time.clone(), names).prop_map(|(time, interrupted_operations)| {
            AgendaEvent::Released(AgendaReleased {
                time,
                holder: "w".into(),
                lease_id: "l".into(),
                interrupted_operations,
            })
        }),
        time.prop_map(|time| AgendaEvent::Reaped(AgendaReaped {
            time,
            reason: "old".into(),
            updated_time: Some(time),
        })),
    ]
}
