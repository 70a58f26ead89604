//! Projections are deterministic functions of the log: for random command sequences, the
//! models built incrementally by a runner (snapshotting often, stopped midway and restarted
//! from its snapshot to tail the rest) hash the same as a rebuild from position 0, and as a
//! runner that never had a snapshot.
// Helpers outside `#[test]` functions unwrap too: in a test binary a failing fixture is a
// test bug, and the panic names it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use pop_domain::agenda::AgendaCommand;
use pop_domain::config::ConfigCommand;
use pop_domain::{Insight, Params, ResourcePool};
use pop_projections::{ProjectionError, Projections, Runner, RunnerConfig, rebuild};
use pop_store::EventStore;
use proptest::prelude::*;
use serde_json::json;
use support::*;
use tokio::sync::oneshot;

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Agenda(String, AgendaCommand),
    Insight(ConfigCommand<Insight>),
    Pool(ConfigCommand<ResourcePool>),
}

fn step(i: usize, kind: u8, k: u8, o: u8) -> Step {
    // Steps are 400 s apart, so every lease (300 s) has expired by the next step: reclaims
    // can succeed, and reports are late but still accepted, as the domain allows.
    let at = i as i64 * 400;
    let id = format!("ag{k}");
    let op = ["a", "b", "c"][o as usize % 3].to_string();
    let agenda_step = |command| Step::Agenda(id.clone(), command);
    match kind {
        0 => {
            let customer = format!("c{}", k % 2);
            let link = format!("L{}", k % 2);
            agenda_step(submit(
                agenda(&id, &customer, Some(&link), &["a", "b", "c"]),
                &format!("i{}", k % 2),
                at,
            ))
        }
        1 => agenda_step(queue(at)),
        2 => agenda_step(claim("w", at)),
        3 => agenda_step(report("w", at, vec![executing(&op, f64::from(o) * 10.0)])),
        4 => agenda_step(report("w", at, vec![succeeded(&op)])),
        5 => agenda_step(report("w", at, vec![failed(&op)])),
        6 => agenda_step(cancel(at)),
        7 => agenda_step(rerun(at)),
        8 => agenda_step(reclaim(at)),
        9 => agenda_step(AgendaCommand::Expand {
            operations: vec![op_named(&format!("g{i}"))],
            params: Params::new(),
            now: t(at),
        }),
        10 => {
            let pool = format!("pool-{}", o % 2);
            let object = insight(&format!("i{}", k % 2), "c0", &pool);
            Step::Insight(if o < 2 { create(object, at) } else { update(object, at) })
        }
        11 => Step::Insight(delete(&format!("i{}", k % 2), at)),
        _ => Step::Pool(create(pool(&format!("pool-{}", o % 2), "c0"), at)),
    }
}

fn op_named(name: &str) -> pop_domain::Operation {
    op(name, json!({"cmd": name}), json!({}))
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Weighted towards submissions and the happy path, so most agendas exist and move on.
    let kinds =
        prop::sample::select(vec![0u8, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    prop::collection::vec((kinds, 0u8..4, 0u8..4), 5..60).prop_map(|raw| {
        raw.into_iter().enumerate().map(|(i, (kind, k, o))| step(i, kind, k, o)).collect()
    })
}

/// Runs a step; refused commands are part of random histories and change nothing.
async fn run(log: &Log, step: &Step) -> bool {
    match step {
        Step::Agenda(id, command) => log.agenda(id, command.clone()).await.is_ok(),
        Step::Insight(command) => log.config(command.clone()).await.is_ok(),
        Step::Pool(command) => log.config(command.clone()).await.is_ok(),
    }
}

const PATIENCE: Duration = Duration::from_secs(30);

async fn until_caught_up(
    log: &Log,
    config: RunnerConfig,
) -> (Projections, oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), ProjectionError>>) {
    let (runner, handle) = Runner::start(log.dyn_store(), config).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    (handle, stop, task)
}

/// Returns how many steps were accepted, and the models' agendas by phase.
async fn check(
    history: Vec<Step>,
    split: usize,
    every: u64,
) -> (usize, Vec<pop_projections::Phase>) {
    let log = Log::open().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        snapshot_dir: Some(dir.path().to_path_buf()),
        snapshot_every_events: every,
        // Every few events whatever the models hold: what these tests exercise.
        snapshot_events_per_agenda: 0,
        ..RunnerConfig::default()
    };
    let split = split.min(history.len());

    // Incremental: a runner follows the first part live, snapshotting every few events …
    let (handle, stop, task) = until_caught_up(&log, config.clone()).await;
    let mut accepted = 0;
    for s in &history[..split] {
        accepted += usize::from(run(&log, s).await);
    }
    let head = log.store.head().await.unwrap();
    handle.wait_for(head, PATIENCE).await.unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // … the rest is written while it is down; a new runner resumes from the snapshot.
    for s in &history[split..] {
        accepted += usize::from(run(&log, s).await);
    }
    let head = log.store.head().await.unwrap();
    let (handle, stop, task) = until_caught_up(&log, config).await;
    handle.wait_for(head, PATIENCE).await.unwrap();
    let incremental = handle.read().fingerprint().unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // A rebuild from position 0, and a runner with no snapshot, agree.
    let rebuilt = rebuild(log.dyn_store(), |_| {}).await.unwrap();
    assert_eq!(rebuilt.position(), head);
    assert_eq!(incremental, rebuilt.fingerprint().unwrap(), "incremental vs rebuild");
    let (fresh, stop, task) = until_caught_up(&log, RunnerConfig::default()).await;
    fresh.wait_for(head, PATIENCE).await.unwrap();
    assert_eq!(fresh.read().fingerprint().unwrap(), incremental, "fresh runner vs incremental");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let phases = rebuilt.agendas().entries_by_id().iter().map(|e| e.phase()).collect();
    (accepted, phases)
}

proptest! {
    // Each case opens a SQLite store and runs three projections: a few dozen cases cover the
    // command mix without making the suite slow.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn incremental_snapshot_tail_and_rebuild_agree(
        history in steps(),
        split in 0usize..50,
        every in 1u64..8,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(history, split, every));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typical_history_agrees() {
    // Agenda 0 succeeds, 1 fails and is rerun and requeued, 2 is expanded and left
    // executing, 3 is cancelled; an insight moves between pools and is deleted.
    let plan: [&[(u8, u8, u8)]; 4] = [
        &[(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (4, 0, 1), (4, 0, 2)],
        &[(0, 1, 0), (1, 1, 0), (2, 1, 0), (5, 1, 1), (7, 1, 0), (1, 1, 0), (2, 1, 0), (8, 1, 0)],
        &[(0, 2, 0), (9, 2, 0), (1, 2, 0), (2, 2, 0), (3, 2, 2), (4, 2, 1)],
        &[(0, 3, 0), (6, 3, 0), (12, 0, 0), (12, 0, 1), (10, 0, 0), (10, 0, 3), (11, 0, 0)],
    ];
    let mut history = Vec::new();
    // Interleave the four plans step by step, as concurrent clients would.
    for round in 0..8 {
        for steps in plan {
            if let Some(&(kind, k, o)) = steps.get(round) {
                history.push(step(history.len(), kind, k, o));
            }
        }
    }
    let history_len = history.len();
    let (accepted, phases) = check(history, 14, 3).await;
    // The history exercises the read side: most steps are accepted, and agendas end in
    // several phases (settled and live ones).
    assert_eq!(accepted, history_len);
    use pop_projections::Phase::*;
    assert_eq!(phases, [Succeeded, Added, Executing, Cancelled]);
}
