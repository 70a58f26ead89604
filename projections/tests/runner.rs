//! The runner against a real SQLite log: the change feed (content, order, lag signalling),
//! read-your-writes (`wait_for`), readiness, snapshots (written, reloaded, rejected when
//! corrupt), skipped events, and stopping loudly at an event that does not decode.
// Helpers outside `#[test]` functions unwrap too: in a test binary a failing fixture is a
// test bug, and the panic names it.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use pop_domain::{Insight, ProcessingState};
use pop_projections::snapshot::{self, Unusable};
use pop_projections::{
    ChangeKind, Phase, ProjectionError, Projections, ReadModels, Runner, RunnerConfig, rebuild,
};
use pop_store::{EventStore, Position};
use support::*;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Long enough never to fire in a healthy test; the tests never assert on time.
const PATIENCE: Duration = Duration::from_secs(30);

struct Running {
    handle: Projections,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ProjectionError>>,
}

impl Running {
    async fn stop(self) -> Result<(), ProjectionError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

async fn start(log: &Log, config: RunnerConfig) -> Running {
    let (runner, handle) = Runner::start(log.dyn_store(), config).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    Running { handle, stop, task }
}

fn snapshots_in(dir: &Path, every: u64) -> RunnerConfig {
    RunnerConfig {
        snapshot_dir: Some(dir.to_path_buf()),
        snapshot_every_events: every,
        // Every few events whatever the models hold: what these tests exercise.
        snapshot_events_per_agenda: 0,
        ..RunnerConfig::default()
    }
}

async fn rebuilt(log: &Log) -> ReadModels {
    rebuild(log.dyn_store(), |_| {}).await.unwrap()
}

#[tokio::test]
async fn the_change_feed_reports_each_applied_event_after_it_is_readable() {
    let log = Log::open().await.unwrap();
    let running = start(&log, RunnerConfig::default()).await;
    let mut feed = running.handle.subscribe_changes();

    log.config(create(customer("acme"), 0)).await.unwrap();
    log.config(create(pool("pool-1", "acme"), 1)).await.unwrap();
    log.agenda("a", submit(agenda("a", "acme", Some("L"), &["x", "y"]), "insight-1", 2))
        .await
        .unwrap();
    log.agenda("a", queue(3)).await.unwrap();
    log.config(create(insight("insight-1", "acme", "pool-1"), 4)).await.unwrap();
    let last = log.agenda("a", claim("w", 5)).await.unwrap();

    let mut seen = Vec::new();
    loop {
        let change = feed.recv().await.unwrap();
        // The contract: by the time a change arrives, the models show it.
        assert!(running.handle.applied() >= change.position);
        if change.kind == ChangeKind::Agenda {
            assert!(running.handle.read().agenda_entry(&change.id).is_some());
        }
        let done = change.position == last;
        seen.push(change);
        if done {
            break;
        }
    }
    let summary: Vec<_> = seen.iter().map(|c| (c.kind, c.id.to_string(), c.event_type)).collect();
    assert_eq!(
        summary,
        [
            (ChangeKind::Customer, "acme".to_string(), "CustomerCreated"),
            (ChangeKind::ResourcePool, "pool-1".to_string(), "ResourcePoolCreated"),
            (ChangeKind::Agenda, "a".to_string(), "AgendaSubmitted"),
            (ChangeKind::Agenda, "a".to_string(), "AgendaQueued"),
            (ChangeKind::Insight, "insight-1".to_string(), "InsightCreated"),
            // The pool's computed insightIds changed with the insight.
            (ChangeKind::ResourcePool, "pool-1".to_string(), "InsightMoved"),
            (ChangeKind::Agenda, "a".to_string(), "AgendaClaimed"),
        ]
    );
    let positions: Vec<_> = seen.iter().map(|c| c.position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted, "log order");
    let submitted = &seen[2];
    assert_eq!(submitted.customer_id.as_ref(), "acme");
    assert_eq!(submitted.progress_id.as_deref(), Some("pa"));
    assert_eq!(submitted.link_id.as_deref(), Some("L"));
    assert_eq!(submitted.insight_id.as_deref(), Some("insight-1"));
    assert_eq!(submitted.operations, ["x", "y"]);
    assert_eq!(seen[6].phase, Some(Phase::Scheduled));
    assert_eq!(seen[6].processing_state, Some(ProcessingState::Waiting));
    assert_eq!(running.handle.read().resource_pool("pool-1").unwrap().insight_ids, ["insight-1"]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_that_lags_is_told_and_resynchronises_from_the_models() {
    let log = Log::open().await.unwrap();
    let config = RunnerConfig { change_feed_capacity: 4, ..RunnerConfig::default() };
    let running = start(&log, config).await;
    let mut feed = running.handle.subscribe_changes();
    let mut last = Position::START;
    for i in 0..10 {
        last = log.config(create(customer(&format!("c{i}")), i)).await.unwrap();
    }
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    match feed.recv().await {
        Err(broadcast::error::RecvError::Lagged(missed)) => assert_eq!(missed, 6),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    // Resynchronise: the models hold everything the missed changes announced …
    assert_eq!(
        running
            .handle
            .read()
            .customers(&pop_projections::Visibility::All, None, 100, |_| true)
            .items
            .len(),
        10
    );
    // … and the feed goes on with the newest changes it kept.
    let next = feed.recv().await.unwrap();
    assert_eq!(next.id.as_ref(), "c6");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn wait_for_returns_once_the_position_is_applied() {
    let log = Log::open().await.unwrap();
    let running = start(&log, RunnerConfig::default()).await;
    let position =
        log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    running.handle.wait_for(position, PATIENCE).await.unwrap();
    assert!(running.handle.read().agenda_entry("a").is_some(), "read your own write");
    // Already there: returns at once.
    running.handle.wait_for(Position::START, Duration::ZERO).await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_for_gives_up_after_its_timeout() {
    let handle = Projections::with_models(ReadModels::new());
    let err =
        handle.wait_for(Position::from_sequence(5), Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.wanted, Position::from_sequence(5));
    assert_eq!(err.applied, Position::START);
    assert_eq!(err.waited, Duration::from_secs(2));
    // Whatever the caller asks, the wait is bounded.
    let err =
        handle.wait_for(Position::from_sequence(5), Duration::from_secs(3600)).await.unwrap_err();
    assert_eq!(err.waited, pop_projections::runner::MAX_WAIT);
}

#[tokio::test]
async fn readiness_turns_true_once_the_start_head_is_applied() {
    let log = Log::open().await.unwrap();
    for i in 0..5 {
        log.config(create(customer(&format!("c{i}")), i)).await.unwrap();
    }
    let head = log.store.head().await.unwrap();
    let running = start(&log, RunnerConfig::default()).await;
    let mut ready = running.handle.watch_caught_up();
    ready.wait_for(|r| *r).await.unwrap();
    assert!(running.handle.applied() >= head);
    assert!(running.handle.caught_up());
    running.stop().await.unwrap();

    // An empty log is current at once.
    let empty = Log::open().await.unwrap();
    let running = start(&empty, RunnerConfig::default()).await;
    running.handle.watch_caught_up().wait_for(|r| *r).await.unwrap();
    running.stop().await.unwrap();
}

#[tokio::test]
async fn skipped_events_are_counted_and_move_the_position() {
    let log = Log::open().await.unwrap();
    let running = start(&log, RunnerConfig::default()).await;
    log.raw("reaper-1", "ObjectsReaped", 1, b"{}").await.unwrap();
    log.raw("agenda-a", "AgendaTeleported", 1, b"{}").await.unwrap();
    let last = log.raw("agenda-a", "AgendaTeleported", 1, b"{}").await.unwrap();
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    assert_eq!(running.handle.skipped_events(), 3);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_known_event_that_does_not_decode_stops_the_runner_loudly() {
    let log = Log::open().await.unwrap();
    let good =
        log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    let bad = log.raw("agenda-a", "AgendaQueued", 1, b"{\"time\":\"soon\"}").await.unwrap();
    log.agenda("b", submit(agenda("b", "acme", None, &["x"]), "insight-1", 1)).await.unwrap();
    let (runner, handle) = Runner::start(log.dyn_store(), RunnerConfig::default()).await;
    let err = runner.run(std::future::pending()).await.unwrap_err();
    match &err {
        ProjectionError::Decode(e) => assert_eq!(e.position, bad),
        other => panic!("{other:?}"),
    }
    assert!(
        std::error::Error::source(&err).unwrap().to_string().contains(&format!("position {bad}"))
    );
    // Everything before the bad event was applied, nothing after it.
    assert_eq!(handle.applied(), good);
    assert!(handle.read().agenda_entry("b").is_none());
}

/// A busy history: config, agendas through several phases, a rerun, a cancel.
async fn history(log: &Log, from: i64) -> Position {
    let t0 = from * 100;
    log.config(create(customer(&format!("c{from}")), t0)).await.unwrap();
    log.config(create(insight(&format!("i{from}"), "acme", "pool-1"), t0)).await.unwrap();
    let mut last = Position::START;
    for k in 0..4 {
        let id = format!("{from}-{k}");
        let names = ["x", "y", "z"];
        log.agenda(&id, submit(agenda(&id, "acme", Some("L"), &names), "insight-1", t0 + k))
            .await
            .unwrap();
        let steps = lifecycle(&names, t0 + k);
        let take = [2, 4, 8, 8][k as usize];
        for command in steps.into_iter().take(take) {
            last = log.agenda(&id, command).await.unwrap();
        }
    }
    log.agenda(&format!("{from}-3"), rerun(t0 + 50)).await.unwrap();
    last.max(log.agenda(&format!("{from}-1"), cancel(t0 + 60)).await.unwrap())
}

#[tokio::test]
async fn snapshots_are_written_and_a_restart_resumes_from_them() {
    let log = Log::open().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = start(&log, snapshots_in(dir.path(), 7)).await;
    let last = history(&log, 1).await;
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    running.stop().await.unwrap();

    // Shutdown wrote a snapshot at the applied position, equal to a rebuild.
    let loaded = snapshot::load(dir.path()).unwrap();
    assert_eq!(loaded.position(), log.store.head().await.unwrap());
    assert_eq!(loaded.fingerprint().unwrap(), rebuilt(&log).await.fingerprint().unwrap());

    // A restart starts from the snapshot, then tails what came after.
    let (runner, handle) = Runner::start(log.dyn_store(), snapshots_in(dir.path(), 7)).await;
    assert_eq!(handle.applied(), loaded.position(), "resumed from the checkpoint");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let last = history(&log, 2).await;
    handle.wait_for(last, PATIENCE).await.unwrap();
    let expected = rebuilt(&log).await.fingerprint().unwrap();
    assert_eq!(handle.read().fingerprint().unwrap(), expected);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_corrupt_torn_or_outdated_snapshot_is_rejected_and_the_models_rebuilt() {
    let log = Log::open().await.unwrap();
    history(&log, 1).await;
    let models = rebuilt(&log).await;
    let dir = tempfile::tempdir().unwrap();
    let info = snapshot::save(dir.path(), &models).unwrap();
    assert_eq!(info.position, models.position());
    let path = snapshot::path_in(dir.path());
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    flipped[40] ^= 0x20;
    let mut outdated = good.clone();
    outdated[8] = outdated[8].wrapping_add(1);
    // Bytes 12..20 are the fingerprint of the dictionary the settled agendas are compressed
    // with.
    let mut other_dictionary = good.clone();
    other_dictionary[13] ^= 0x01;
    type Expected = fn(&Unusable) -> bool;
    let cases: Vec<(Vec<u8>, Expected)> = vec![
        (flipped, |u| matches!(u, Unusable::Checksum { .. })),
        (good[..good.len() - 100].to_vec(), |u| {
            matches!(u, Unusable::Length { .. } | Unusable::Checksum { .. })
        }),
        (good[..10].to_vec(), |u| matches!(u, Unusable::NotASnapshot(_))),
        (b"garbage that is long enough to hold a header".to_vec(), |u| {
            matches!(u, Unusable::NotASnapshot(_))
        }),
        (outdated, |u| matches!(u, Unusable::Version { .. })),
        (other_dictionary, |u| matches!(u, Unusable::Dictionary { .. })),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let why = snapshot::load(dir.path()).unwrap_err();
        assert!(expected(&why), "{why}");
        // The runner starts from position 0 and rebuilds to the same models.
        let running = start(&log, snapshots_in(dir.path(), 1_000_000)).await;
        assert_eq!(running.handle.applied(), Position::START);
        running.handle.watch_caught_up().wait_for(|r| *r).await.unwrap();
        assert_eq!(running.handle.read().fingerprint().unwrap(), models.fingerprint().unwrap());
        running.stop().await.unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(snapshot::load(dir.path()), Err(Unusable::Missing(_))));
}

/// A store restored from an older backup under a newer snapshot (a newcomer found this
/// following the README's restore steps): the snapshot is past the log's head, so applying
/// on from it would skip the store's next events — acknowledged writes never shown — and
/// keep agendas the log no longer holds. The runner drops it and rebuilds from the log.
#[tokio::test]
async fn a_snapshot_past_the_end_of_the_log_is_dropped_and_the_models_rebuilt() {
    let newer = Log::open().await.unwrap();
    history(&newer, 1).await;
    history(&newer, 2).await;
    let dir = tempfile::tempdir().unwrap();
    snapshot::save(dir.path(), &rebuilt(&newer).await).unwrap();

    let restored = Log::open().await.unwrap();
    history(&restored, 1).await;
    assert!(restored.store.head().await.unwrap() < newer.store.head().await.unwrap());
    let running = start(&restored, snapshots_in(dir.path(), 1_000_000)).await;
    assert_eq!(running.handle.applied(), Position::START, "the snapshot was not used");
    // Moved aside at once: a crash before the next snapshot cannot load it again.
    assert!(matches!(snapshot::load(dir.path()), Err(Unusable::Missing(_))));
    // The writes after the restore are all applied, as a rebuild of the log has them.
    let last = history(&restored, 3).await;
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    let expected = rebuilt(&restored).await.fingerprint().unwrap();
    assert_eq!(running.handle.read().fingerprint().unwrap(), expected);
    running.stop().await.unwrap();
}

/// Another store's snapshot in the data directory (copied, or a restore of another store that
/// ends past it) is not used: its agendas were never in this log (ops3am4: it was served, and
/// the scheduler queued its agendas into this log).
#[tokio::test]
async fn another_stores_snapshot_is_dropped_and_the_models_rebuilt() {
    let other = Log::open().await.unwrap();
    history(&other, 7).await;
    let dir = tempfile::tempdir().unwrap();
    snapshot::save(dir.path(), &rebuilt(&other).await).unwrap();

    let this = Log::open().await.unwrap();
    history(&this, 1).await;
    history(&this, 2).await;
    assert!(this.store.head().await.unwrap() >= other.store.head().await.unwrap());
    let running = start(&this, snapshots_in(dir.path(), 1_000_000)).await;
    assert_eq!(running.handle.applied(), Position::START, "the snapshot was not used");
    assert!(matches!(snapshot::load(dir.path()), Err(Unusable::Missing(_))), "moved aside");
    let last = history(&this, 3).await;
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    let expected = rebuilt(&this).await.fingerprint().unwrap();
    assert_eq!(running.handle.read().fingerprint().unwrap(), expected);
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_timer_writes_after_quiet_traffic() {
    let log = Log::open().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RunnerConfig {
        snapshot_interval: Duration::from_secs(60),
        ..snapshots_in(dir.path(), 1_000_000)
    };
    let running = start(&log, config).await;
    let last = log.config(create(customer("acme"), 0)).await.unwrap();
    // No timeout here: with paused time, a timer could fire while the store works on its own
    // threads, which the runtime does not count as busy.
    running.handle.watch_applied().wait_for(|p| *p >= last).await.unwrap();
    // Paused time: sleeping moves the clock instantly once every task is idle.
    let mut waited = 0;
    while snapshot::load(dir.path()).is_err() && waited < 10 {
        tokio::time::sleep(Duration::from_secs(61)).await;
        tokio::task::yield_now().await;
        waited += 1;
    }
    let loaded = snapshot::load(dir.path()).unwrap();
    assert_eq!(loaded.position(), last);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn insights_moving_between_pools_survive_a_snapshot() {
    let log = Log::open().await.unwrap();
    log.config(create(pool("pool-1", "acme"), 0)).await.unwrap();
    log.config(create(pool("pool-2", "acme"), 0)).await.unwrap();
    log.config(create(insight("i1", "acme", "pool-1"), 1)).await.unwrap();
    log.config(update(insight("i1", "acme", "pool-2"), 2)).await.unwrap();
    log.config(delete::<Insight>("i1", 3)).await.unwrap();
    log.config(create(insight("i2", "acme", "pool-1"), 4)).await.unwrap();
    let models = rebuilt(&log).await;
    let dir = tempfile::tempdir().unwrap();
    snapshot::save(dir.path(), &models).unwrap();
    let loaded = snapshot::load(dir.path()).unwrap();
    assert_eq!(loaded.resource_pool("pool-1").unwrap().insight_ids, ["i2"]);
    assert!(loaded.resource_pool("pool-2").unwrap().insight_ids.is_empty());
    assert_eq!(loaded.fingerprint().unwrap(), models.fingerprint().unwrap());
}

/// A snapshot that fails on a full disk removes its temporary file (the space it took) and
/// leaves the previous snapshot as it was. The full disk is real: the temporary file's name
/// links to Linux's `/dev/full`, where every write fails with ENOSPC.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_snapshot_that_fails_on_a_full_disk_removes_its_temporary_file() {
    let log = Log::open().await.unwrap();
    history(&log, 1).await;
    let models = rebuilt(&log).await;
    let dir = tempfile::tempdir().unwrap();
    let before = snapshot::save(dir.path(), &ReadModels::new()).unwrap();
    let temp = dir.path().join("projections.snapshot.tmp");
    std::os::unix::fs::symlink("/dev/full", &temp).unwrap();

    let e = snapshot::save(dir.path(), &models).expect_err("no room on /dev/full");
    assert!(format!("{e:?}").contains("StorageFull") || e.to_string().contains("space"), "{e:?}");
    assert!(std::fs::symlink_metadata(&temp).is_err(), "the temporary file is still there");
    let kept = snapshot::load(dir.path()).unwrap();
    assert_eq!(kept.position(), before.position, "the previous snapshot stays");
}

/// Issue 19, item 4: a process past its memory budget does not stop (nor, restarted, crash
/// again): the runner turns degraded, says why, holds live agendas compressed and folds them
/// the same.
#[tokio::test]
async fn past_its_memory_budget_the_runner_carries_on_degraded() {
    let log = Log::open().await.unwrap();
    log.config(create(customer("acme"), 0)).await.unwrap();
    for id in ["a", "b"] {
        log.agenda(id, submit(agenda(id, "acme", None, &["x", "y"]), "insight-1", 1))
            .await
            .unwrap();
    }
    // Any process is past a budget of one byte.
    let config = RunnerConfig { memory_budget: Some(1), ..RunnerConfig::default() };
    let running = start(&log, config).await;
    let mut last = log.agenda("a", queue(2)).await.unwrap();
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    let why = running.handle.degraded().expect("degraded");
    assert!(why.contains("memory budget"), "{why}");
    {
        let models = running.handle.read();
        let a = models.agenda_entry("a").unwrap();
        assert!(a.is_live() && a.is_settled(), "a live agenda held compressed");
        assert_eq!(a.phase(), pop_projections::Phase::Queued);
    }
    for command in [claim("w1", 3), report("w1", 4, vec![executing("x", 50.0)])] {
        last = log.agenda("a", command).await.unwrap();
    }
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    let progress = running.handle.read().agenda_entry("a").unwrap().progress().unwrap();
    assert_eq!(progress.processing_state, ProcessingState::Executing);
    // The same models as a fold without a budget.
    let served = running.handle.read().fingerprint().unwrap();
    assert_eq!(served, rebuilt(&log).await.fingerprint().unwrap());
    running.stop().await.unwrap();

    // Without a budget nothing is degraded.
    let running = start(&log, RunnerConfig::default()).await;
    running.handle.wait_for(last, PATIENCE).await.unwrap();
    assert_eq!(running.handle.degraded(), None);
    running.stop().await.unwrap();
}

/// A snapshot's cost grows with the models, so snapshots by count grow with them too: the
/// default takes one every 100,000 events while the models are small, and every 4 events
/// per agenda held once that is more (a million agendas: every 4,000,000 events).
#[test]
fn snapshots_by_count_grow_with_the_models() {
    let config = RunnerConfig::default();
    assert_eq!(config.snapshot_threshold(0), 100_000);
    assert_eq!(config.snapshot_threshold(25_000), 100_000);
    assert_eq!(config.snapshot_threshold(100_000), 400_000);
    assert_eq!(config.snapshot_threshold(1_000_000), 4_000_000);
    let fixed = RunnerConfig { snapshot_events_per_agenda: 0, ..RunnerConfig::default() };
    assert_eq!(fixed.snapshot_threshold(1_000_000), 100_000);
}
