//! The AgendaReclaimer against a real embedded store and the real projections runner:
//! `run_once` in dry-run changes nothing; a real cycle requeues an expired `scheduled` agenda
//! and fails one whose attempts are used up, leaves a live lease alone, and a repeat finds
//! nothing; the loop reclaims on its own and stops on shutdown. Times are fixed instants
//! passed in as `now`; waits are bounded, never asserted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pop_domain::agenda::{AgendaCommand, AgendaState};
use pop_domain::{Agenda, AgendaInsight, Operation, Params, Timestamp};
use pop_projections::{Phase, Projections, Runner, RunnerConfig};
use pop_reapers::process::{self, TimedProcess};
use pop_reapers::reclaimer::{ReclaimReport, Reclaimer};
use pop_reapers::{ReclaimerConfig, Services};
use pop_store::{
    Commands, EventMetadata, EventStore, ProcessLeadership, SqliteOptions, SqliteStore,
};
use tokio::sync::oneshot;

/// Longest a test waits for the projections or the loop.
const WAIT: Duration = Duration::from_secs(20);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_timestamp(secs, 0).unwrap()
}

struct Fixture {
    store: Arc<dyn EventStore>,
    commands: Arc<Commands>,
    projections: Projections,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(dir.path().join("pop.db"), SqliteOptions::default()).await.unwrap(),
    );
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    Fixture { commands: Arc::new(Commands::new(Arc::clone(&store))), store, projections, _dir: dir }
}

/// One reclaimer cycle at `now` (plan, then execute unless a dry run).
async fn run_once(f: &Fixture, now: Timestamp, config: &ReclaimerConfig) -> ReclaimReport {
    process::cycle(&mut Reclaimer::new(f.services(), config.clone()), now).await
}

impl Fixture {
    fn services(&self) -> Services {
        Services {
            store: Arc::clone(&self.store),
            commands: Arc::clone(&self.commands),
            projections: self.projections.clone(),
            leadership: Arc::new(ProcessLeadership::default()),
        }
    }

    async fn agenda(&self, id: &str, command: AgendaCommand) {
        let done = self
            .commands
            .execute::<AgendaState>(id, &EventMetadata::default(), &command)
            .await
            .unwrap();
        if let Some(p) = done.position {
            self.projections.wait_for(p, WAIT).await.unwrap();
        }
    }

    /// Submits `id` (with `maximumAttempts`), queues it and has "worker" claim it at `at`
    /// with a lease until `expires`.
    async fn claimed(&self, id: &str, maximum_attempts: u32, at: i64, expires: i64) {
        let mut params = Params::new();
        params.insert("maximumAttempts", maximum_attempts);
        let agenda = Agenda {
            id: id.to_string(),
            customer_id: "acme".to_string(),
            progress_id: Some(id.to_string()),
            operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
            params,
            ..Agenda::default()
        };
        let insight = AgendaInsight {
            resource_pool_id: "pool-1".to_string(),
            insight_id: "transcode".to_string(),
        };
        self.agenda(id, AgendaCommand::Submit { agenda, insight, now: t(1) }).await;
        self.agenda(id, AgendaCommand::Queue { now: t(2) }).await;
        let claim = AgendaCommand::Claim {
            holder: "worker".to_string(),
            lease_id: format!("lease-{id}"),
            lease_expires: t(expires),
            now: t(at),
        };
        self.agenda(id, claim).await;
    }

    fn phase(&self, id: &str) -> Phase {
        self.projections.read().agenda_entry(id).unwrap().phase()
    }

    async fn wait_phase(&self, id: &str, phase: Phase) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.phase(id) != phase {
            assert!(tokio::time::Instant::now() < deadline, "{id} is {:?}", self.phase(id));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_cycle_requeues_or_fails_expired_leases_and_is_idempotent() {
    let f = fixture().await;
    f.claimed("retryable", 3, 100, 400).await;
    f.claimed("last-attempt", 1, 100, 400).await;
    f.claimed("live", 3, 100, 500).await;

    let dry = {
        let mut c = ReclaimerConfig::default();
        c.cadence.dry_run = true;
        c
    };
    let report = run_once(&f, t(400), &dry).await;
    assert_eq!((report.planned, report.skipped, report.reclaimed()), (2, 2, 0));
    assert_eq!(f.phase("retryable"), Phase::Scheduled);

    let config = ReclaimerConfig::default();
    let report = run_once(&f, t(400), &config).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.planned, report.requeued, report.failed), (2, 1, 1));
    f.wait_phase("retryable", Phase::Added).await;
    f.wait_phase("last-attempt", Phase::Failed).await;
    assert_eq!(f.phase("live"), Phase::Scheduled);
    let state = f.projections.read().agenda_state("retryable").unwrap().unwrap();
    let diagnostics = &state.progress().diagnostic_events;
    assert!(
        diagnostics.iter().any(|d| d.message == "AgendaProgress timed out."),
        "{diagnostics:?}"
    );

    // Again at the same instant: nothing left to do.
    let report = run_once(&f, t(400), &config).await;
    assert_eq!((report.planned, report.errors.len()), (0, 0));
}

#[tokio::test]
async fn the_loop_reclaims_on_its_own_and_stops_on_shutdown() {
    let f = fixture().await;
    f.claimed("a", 3, 100, 400).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let config = {
        let mut c = ReclaimerConfig::default();
        c.cadence.interval = Duration::from_millis(10);
        c
    };
    let reclaimer = Reclaimer::new(f.services(), config);
    let leadership = Arc::clone(&f.services().leadership);
    assert!(!reclaimer.cadence().dry_run);
    let task = process::spawn(reclaimer, leadership, || t(1_000), async move {
        let _ = stopped.await;
    });
    f.wait_phase("a", Phase::Added).await;
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
