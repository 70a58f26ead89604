//! What every timed process shares: the services it works through ([`Services`]), the
//! leader lock taken per cycle, the loop that paces cycles and bounds them, and the metrics and
//! log line of what a cycle did.
//!
//! Leadership: a process asks [`Leadership::try_lead`] for its [`name`](ProcessName) before
//! every cycle and drops the guard after it, so when replicas come and go the next cycle simply
//! runs wherever the lock is free. With the embedded store the process itself is the only
//! replica ([`pop_store::ProcessLeadership`]: it only keeps two tasks of one process apart);
//! with PostgreSQL the backend's implementation takes a session-level advisory lock, and a lock
//! lost mid-cycle (its connection died) abandons the cycle — every action is idempotent, so the
//! next leader simply plans again.
//!
//! Metrics (the `metrics` facade; `pop serve` exports them at `/metrics`):
//! - `pop_process_cycles_total{process, dry_run}` — cycles run as leader;
//! - `pop_process_skipped_cycles_total{process, reason}` — `not_leader`, `not_ready`,
//!   `leader_error`, `leader_lost`;
//! - `pop_process_actions_total{process, outcome}` — what the cycles did, one outcome per
//!   action (`requeued`, `retried`, `reaped`, `deleted`, `refused`, `skipped`, `error`, …);
//! - `pop_process_planned_total{process}` and `pop_process_cycle_seconds{process}`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pop_projections::Projections;
use pop_store::{Commands, EventStore, LeaderGuard, Leadership};
use tokio::time::{Instant, MissedTickBehavior};

/// The leader-lock names of the processes (one lock each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessName {
    Reclaimer,
    Retry,
    Data,
    Pods,
}

impl ProcessName {
    /// The name on the command line (`pop reap <name>`), in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessName::Reclaimer => "reclaimer",
            ProcessName::Retry => "retry",
            ProcessName::Data => "data",
            ProcessName::Pods => "pods",
        }
    }

    /// The name of the leader lock, `reaper:<name>`.
    pub fn lock(self) -> String {
        format!("reaper:{}", self.as_str())
    }
}

/// What the store-based processes work through: commands go through `executor`, plans read
/// `projections`, the data reaper deletes streams from `store`, and `leadership` elects one
/// replica per process.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn EventStore>,
    pub commands: Arc<Commands>,
    pub projections: Projections,
    pub leadership: Arc<dyn Leadership>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// What one cycle did, in the shape the loop needs for metrics and the log line.
pub trait CycleReport {
    /// Actions the plan produced.
    fn planned(&self) -> usize;
    /// `(outcome, count)` for every outcome of this process, zeros included.
    fn outcomes(&self) -> Vec<(&'static str, usize)>;
    /// Failures (not refusals): logged one by one.
    fn errors(&self) -> Vec<String>;
}

/// Records a finished cycle: metrics always, an info line when it planned anything, a warning
/// per error.
pub fn finish(process: ProcessName, dry_run: bool, report: &impl CycleReport, took: Duration) {
    let name = process.as_str();
    metrics::counter!("pop_process_cycles_total", "process" => name, "dry_run" => if dry_run { "true" } else { "false" })
        .increment(1);
    metrics::counter!("pop_process_planned_total", "process" => name)
        .increment(report.planned() as u64);
    metrics::histogram!("pop_process_cycle_seconds", "process" => name).record(took.as_secs_f64());
    let outcomes = report.outcomes();
    for (outcome, n) in &outcomes {
        if *n > 0 {
            metrics::counter!("pop_process_actions_total", "process" => name, "outcome" => *outcome)
                .increment(*n as u64);
        }
    }
    let errors = report.errors();
    if !errors.is_empty() {
        metrics::counter!("pop_process_actions_total", "process" => name, "outcome" => "error")
            .increment(errors.len() as u64);
    }
    for e in &errors {
        tracing::warn!(process = name, error = %e, "timed process: action failed");
    }
    if report.planned() > 0 || !errors.is_empty() {
        let summary: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o}={n}")).collect();
        tracing::info!(
            process = name,
            dry_run,
            planned = report.planned(),
            errors = errors.len(),
            took_ms = took.as_millis() as u64,
            "{name} cycle: {}",
            summary.join(" ")
        );
    }
}

fn skipped(process: ProcessName, reason: &'static str) {
    metrics::counter!("pop_process_skipped_cycles_total", "process" => process.as_str(), "reason" => reason)
        .increment(1);
}

/// Tries to take the process's leader lock; `None` (counted and logged) when another replica
/// has it or the backend cannot be asked.
pub async fn lead(leadership: &dyn Leadership, process: ProcessName) -> Option<LeaderGuard> {
    match leadership.try_lead(&process.lock()).await {
        Ok(Some(guard)) => Some(guard),
        Ok(None) => {
            tracing::debug!(process = process.as_str(), "another replica leads; skipping a cycle");
            skipped(process, "not_leader");
            None
        }
        Err(e) => {
            tracing::warn!(process = process.as_str(), error = %e, "cannot ask for leadership; skipping a cycle");
            skipped(process, "leader_error");
            None
        }
    }
}

/// The loop every process runs: a cycle every `interval` (the first at once), each only when
/// `ready()` (the projections caught up) and under the process's leader lock, which is released
/// after the cycle. Returns when `shutdown` resolves, abandoning a cycle in progress (actions
/// are idempotent); a cycle whose lock is lost is abandoned too.
pub async fn run_loop<R, F, Fut>(
    process: ProcessName,
    leadership: Arc<dyn Leadership>,
    interval: Duration,
    dry_run: bool,
    ready: impl Fn() -> bool,
    mut cycle: F,
    shutdown: impl Future<Output = ()>,
) where
    R: CycleReport,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        if !ready() {
            tracing::debug!(
                process = process.as_str(),
                "projections not caught up; skipping a cycle"
            );
            skipped(process, "not_ready");
            continue;
        }
        let Some(mut guard) = lead(leadership.as_ref(), process).await else { continue };
        let started = Instant::now();
        let report = tokio::select! {
            () = &mut shutdown => return,
            () = guard.lost() => {
                tracing::warn!(process = process.as_str(), "leader lock lost mid-cycle; abandoned");
                skipped(process, "leader_lost");
                continue;
            }
            report = cycle() => report,
        };
        drop(guard);
        finish(process, dry_run, &report, started.elapsed());
    }
}

/// One cycle under the leader lock, for `pop reap <name> --once`: `None` when another replica
/// leads (the caller reports it and exits successfully: the leader does the work).
pub async fn once<R, Fut>(
    process: ProcessName,
    leadership: &dyn Leadership,
    dry_run: bool,
    cycle: Fut,
) -> Option<R>
where
    R: CycleReport,
    Fut: Future<Output = R>,
{
    let guard = lead(leadership, process).await?;
    let started = Instant::now();
    let report = cycle.await;
    drop(guard);
    finish(process, dry_run, &report, started.elapsed());
    Some(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use pop_store::ProcessLeadership;
    use tokio::sync::oneshot;

    use super::*;

    struct Nothing;

    impl CycleReport for Nothing {
        fn planned(&self) -> usize {
            0
        }
        fn outcomes(&self) -> Vec<(&'static str, usize)> {
            Vec::new()
        }
        fn errors(&self) -> Vec<String> {
            Vec::new()
        }
    }

    /// Runs the loop on paused time for `ticks` intervals and returns how many cycles ran.
    async fn cycles_in(leadership: Arc<dyn Leadership>, ready: bool, ticks: u32) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let (stop, stopped) = oneshot::channel::<()>();
        let interval = Duration::from_secs(60);
        let task = tokio::spawn(async move {
            run_loop(
                ProcessName::Retry,
                leadership,
                interval,
                false,
                move || ready,
                || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { Nothing }
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        });
        // The first cycle runs at once, then one per interval.
        tokio::time::sleep(interval * ticks + Duration::from_secs(1)).await;
        stop.send(()).unwrap();
        task.await.unwrap();
        count.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_runs_at_once_and_then_every_interval() {
        let n = cycles_in(Arc::new(ProcessLeadership::default()), true, 3).await;
        assert_eq!(n, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_cycle_runs_before_the_projections_are_ready() {
        let n = cycles_in(Arc::new(ProcessLeadership::default()), false, 3).await;
        assert_eq!(n, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_cycle_runs_while_another_replica_leads() {
        let leadership = Arc::new(ProcessLeadership::default());
        let other = leadership.try_lead(&ProcessName::Retry.lock()).await.unwrap().unwrap();
        let n = cycles_in(leadership.clone(), true, 3).await;
        assert_eq!(n, 0);
        drop(other);
        let n = cycles_in(leadership, true, 1).await;
        assert_eq!(n, 2, "the lock is free again: cycles resume");
    }

    /// A backend whose lock is lost (its connection died) while a cycle runs.
    struct Flaky {
        lose: tokio::sync::watch::Sender<bool>,
    }

    #[async_trait::async_trait]
    impl Leadership for Flaky {
        async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, pop_store::StoreError> {
            self.lose.send_replace(false);
            Ok(Some(LeaderGuard::new(name, self.lose.subscribe(), Box::new(()))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_whose_lock_is_lost_is_abandoned_and_the_next_one_runs() {
        let (lose, _) = tokio::sync::watch::channel(false);
        let leadership = Arc::new(Flaky { lose: lose.clone() });
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run_loop(
                ProcessName::Data,
                leadership,
                Duration::from_secs(60),
                false,
                || true,
                || {
                    let (s, f) = (Arc::clone(&s), Arc::clone(&f));
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        // A long cycle: the lock is lost 10 s into it.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        f.fetch_add(1, Ordering::SeqCst);
                        Nothing
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        lose.send_replace(true);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (1, 0));
        // The next tick takes the lock again and, left alone, the cycle completes.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (2, 1));
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn once_reports_none_when_another_replica_leads() {
        let leadership = ProcessLeadership::default();
        let _other = leadership.try_lead("reaper:data").await.unwrap().unwrap();
        assert!(once(ProcessName::Data, &leadership, false, async { Nothing }).await.is_none());
        let free = ProcessLeadership::default();
        assert!(once(ProcessName::Data, &free, false, async { Nothing }).await.is_some());
    }
}
