//! Issue 4's claim concurrency test, through the real HTTP API: 32 concurrent pullers against
//! 10,000 queued agendas. Every agenda is handed out exactly once (no duplicates, none
//! lost); some claimed agendas are never reported, their leases expire in the middle (the test
//! advances `now` past the lease and runs the AgendaReclaimer's `plan`/`execute` with it), a
//! scheduler pass requeues them, and they are handed out exactly once more. In the end every
//! agenda was handed out once plus once per reclaim, and all are COMPLETE/succeeded.
//!
//! Submission is concurrent, and the scheduler runs as explicit passes (no background task),
//! so each phase starts from a known queue. Durations are printed, never asserted.

// A broken fixture or an unexpected response shape should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use pop_api::ApiConfig;
use pop_projections::Phase;
use pop_reapers::ReclaimerConfig;
use pop_reapers::reclaimer::{execute, plan};
use pop_reapers::scheduler::{self, Memory};
use serde_json::json;
use support::*;

/// Agendas queued at once (the insight's `queueSize` is set to it): the figure. In a
/// debug build this takes about 95 s here (6,000: 38 s), because the first round's claims and
/// reports grow faster than linearly with the queue — a cost worth profiling in `getAgenda`,
/// kept visible here rather than hidden by a smaller test.
const AGENDAS: usize = 10_000;

/// Concurrent `getAgenda` callers.
const PULLERS: usize = 32;

/// `count` of each `getAgenda` call.
const PULL_COUNT: usize = 10;

/// Submissions in flight at once.
const SUBMITTERS: usize = 64;

/// In the first round each puller never reports every `ABANDON_EVERY`-th agenda it receives:
/// its "executor died".
const ABANDON_EVERY: usize = 8;

/// Scheduler passes tried before a queue that does not fill up fails the test.
const MAX_PASSES: usize = 100;

/// Pause after an empty `getAgenda` while the read models still show queued agendas.
const EMPTY_PAUSE: Duration = Duration::from_millis(10);

const GET_AGENDA: &str =
    "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) { agenda { id } } }";

const UPDATE: &str =
    "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position } }";

fn succeeded(id: &str) -> serde_json::Value {
    json!({"p": {"id": id, "processingState": "COMPLETE", "processingStateMessage": "succeeded",
    "operationProgress": [
        {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": "succeeded"},
        {"operation": "encode", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}
    ]}})
}

fn count_in(s: &TestServer, phase: Phase) -> usize {
    s.state.projections().read().agendas().count_in("transcode", phase)
}

/// Waits (bounded) until `phase` holds `n` agendas of `transcode`.
async fn wait_count(s: &TestServer, phase: Phase, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = count_in(s, phase);
        if now == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now} in {phase:?}, want {n}");
        tokio::time::sleep(EMPTY_PAUSE).await;
    }
}

/// Runs scheduler passes until `n` agendas are queued.
async fn fill_queue(s: &TestServer, memory: &mut Memory, n: usize) {
    let projections = s.state.projections();
    for _ in 0..MAX_PASSES {
        if let Some(position) = scheduler::pass(&s.commands, projections, memory).await {
            projections.wait_for(position, WAIT).await.unwrap();
        }
        if count_in(s, Phase::Queued) == n {
            return;
        }
    }
    panic!("{} queued after {MAX_PASSES} passes, want {n}", count_in(s, Phase::Queued));
}

/// What one puller did: every agenda handed to it, and the ones it never reported (with the
/// token that holds them).
#[derive(Default)]
struct Pulled {
    handed: Vec<String>,
    abandoned: Vec<(String, &'static str)>,
}

/// `PULLERS` concurrent pullers drain the queue; with `abandon`, each one never reports every
/// `ABANDON_EVERY`-th agenda it receives and reports the others COMPLETE/succeeded.
async fn drain(s: &Arc<TestServer>, abandon: bool) -> Pulled {
    let mut pullers = Vec::new();
    for n in 0..PULLERS {
        let s = Arc::clone(s);
        let token = if n % 2 == 0 { ACME_SERVICE } else { ACME_SERVICE_2 };
        pullers.push(tokio::spawn(async move {
            let mut mine = Pulled::default();
            loop {
                let data =
                    s.ok(token, GET_AGENDA, json!({"i": "transcode", "n": PULL_COUNT})).await;
                let got = data["getAgenda"].as_array().cloned().unwrap();
                if got.is_empty() {
                    if count_in(&s, Phase::Queued) == 0 {
                        return mine;
                    }
                    tokio::time::sleep(EMPTY_PAUSE).await;
                    continue;
                }
                for g in got {
                    let id = g["agenda"]["id"].as_str().unwrap().to_string();
                    mine.handed.push(id.clone());
                    if abandon && mine.handed.len() % ABANDON_EVERY == 0 {
                        mine.abandoned.push((id, token));
                    } else {
                        s.ok(token, UPDATE, succeeded(&id)).await;
                    }
                }
            }
        }));
    }
    let mut all = Pulled::default();
    for p in pullers {
        let mine = p.await.unwrap();
        all.handed.extend(mine.handed);
        all.abandoned.extend(mine.abandoned);
    }
    all
}

fn assert_exactly_once(handed: &[String], expected: &BTreeSet<String>, what: &str) {
    let mut seen = BTreeMap::<&str, usize>::new();
    for id in handed {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "{what}: handed out more than once: {twice:?}");
    let got: BTreeSet<String> = seen.keys().map(|id| id.to_string()).collect();
    let lost: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(lost.is_empty() && extra.is_empty(), "{what}: lost {lost:?}, unexpected {extra:?}");
    assert_eq!(handed.len(), expected.len(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn every_agenda_is_handed_out_once_plus_once_per_reclaim() {
    let started = Instant::now();
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    s.ok(
        ADMIN,
        "mutation($i: JSON!) { updateInsight(insight: $i) { position } }",
        json!({"i": {
            "id": "transcode", "customerId": "ops", "title": "Transcode",
            "resourcePoolId": "pool-1", "queueSize": AGENDAS, "isGlobal": true,
            "mappers": {"operationType": ["ffmpeg"]}
        }}),
    )
    .await;
    let s = Arc::new(s);

    // Submit concurrently, then queue everything with scheduler passes.
    let submitted: BTreeSet<String> = futures::stream::iter(0..AGENDAS)
        .map(|i| {
            let (s, seeded) = (Arc::clone(&s), seeded.clone());
            async move { s.submit(ACME, "acme", &format!("l-{i}"), &seeded).await.0 }
        })
        .buffer_unordered(SUBMITTERS)
        .collect()
        .await;
    assert_eq!(submitted.len(), AGENDAS);
    let mut memory = Memory::default();
    fill_queue(&s, &mut memory, AGENDAS).await;
    let queued_at = started.elapsed();

    // Round 1: every agenda handed out exactly once; some are never reported.
    let round1 = drain(&s, true).await;
    assert_exactly_once(&round1.handed, &submitted, "round 1");
    let abandoned: BTreeSet<String> = round1.abandoned.iter().map(|(id, _)| id.clone()).collect();
    assert!(!abandoned.is_empty());
    wait_count(&s, Phase::Succeeded, AGENDAS - abandoned.len()).await;
    wait_count(&s, Phase::Scheduled, abandoned.len()).await;
    let round1_at = started.elapsed();

    // The leases still hold now: nothing to reclaim.
    let config = ReclaimerConfig::default();
    assert!(plan(Utc::now(), &s.state.projections().read(), &config).is_empty());

    // The lease expires: `now` moves past it, and the reclaimer takes the abandoned agendas
    // back, a batch at a time.
    let lease = chrono::Duration::from_std(s.state.config().lease).unwrap();
    let later = Utc::now() + lease + chrono::Duration::seconds(1);
    let mut reclaimed = BTreeSet::new();
    let mut first_batch = None;
    loop {
        let actions = plan(later, &s.state.projections().read(), &config);
        if actions.is_empty() {
            break;
        }
        assert!(actions.len() <= config.cadence.batch_size);
        let report = execute(&s.commands, later, &actions, None).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.requeued, report.failed, report.refused), (actions.len(), 0, 0));
        reclaimed.extend(actions.iter().map(|a| a.agenda_id.clone()));
        first_batch.get_or_insert(actions);
        wait_count(&s, Phase::Scheduled, abandoned.len() - reclaimed.len()).await;
    }
    assert_eq!(reclaimed, abandoned, "exactly the unreported agendas are reclaimed");
    // Idempotent: the same actions again change nothing and are no error.
    let again = first_batch.unwrap();
    let report = execute(&s.commands, later, &again, None).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.reclaimed(), report.refused), (0, again.len()));

    // The dead executor's late report is rejected.
    let (id, token) = &round1.abandoned[0];
    let e = s.err(token, UPDATE, succeeded(id)).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");

    // Round 2: a scheduler pass requeues them; each is handed out exactly once more.
    fill_queue(&s, &mut memory, abandoned.len()).await;
    let round2 = drain(&s, false).await;
    assert_exactly_once(&round2.handed, &abandoned, "round 2");
    assert_eq!(round1.handed.len() + round2.handed.len(), AGENDAS + reclaimed.len());

    // All COMPLETE/succeeded; a reclaimed agenda has used two attempts.
    wait_count(&s, Phase::Succeeded, AGENDAS).await;
    let models = s.state.projections().read();
    for id in &submitted {
        let key = models.agendas().with_id(id).next().unwrap().key().to_string();
        let state = models.agenda_state(&key).unwrap().unwrap();
        assert!(state.is_succeeded(), "{id}: {:?}", state.progress());
        let attempts = if abandoned.contains(id) { 2 } else { 1 };
        assert_eq!(state.progress().attempts_completed, attempts, "{id}");
    }
    eprintln!(
        "claims_concurrency: {AGENDAS} agendas, {PULLERS} pullers, {} reclaimed; queued after {queued_at:?}, round 1 done after {round1_at:?}, all done after {:?}",
        reclaimed.len(),
        started.elapsed()
    );
}
