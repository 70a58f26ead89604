//! What every timed process shares: the [`TimedProcess`] shape (a pure plan over its inputs
//! and an idempotent execute), the [`Cadence`] it runs at, and the one loop that runs any of
//! them ([`run_loop`]): paced by its interval (and, for the scheduler, woken by the change
//! feed), only once its inputs are ready, under its leader lock, bounded in time, with the
//! metrics and log line of what each cycle did. `pop serve` and `pop reap` start processes
//! only through [`spawn`] and [`once`].
//!
//! Leadership: the loop asks [`Leadership::try_lead`] for the process's [`name`](ProcessName)
//! and keeps the lock across cycles while it holds it (one lock request per leadership, not
//! per cycle: the scheduler cycles on every submission). A replica that does not lead asks
//! again at each tick, so when replicas come and go the process simply moves to wherever the
//! lock is free. With the embedded store the process itself is the only replica
//! ([`pop_store::ProcessLeadership`]: it only keeps two tasks of one process apart); with
//! PostgreSQL the backend takes a session-level advisory lock, and a lock lost mid-cycle (its
//! connection died) abandons the cycle — every action is idempotent, so the next leader simply
//! plans again.
//!
//! Metrics (the `metrics` facade; `pop serve` exports them at `/metrics`):
//! - `pop_process_cycles_total{process, dry_run}` — cycles run as leader;
//! - `pop_process_skipped_cycles_total{process, reason}` — `not_leader`, `not_ready`,
//!   `leader_error`, `leader_lost`;
//! - `pop_process_leader{process}` — 1 while this replica holds the lock;
//! - `pop_process_actions_total{process, outcome}` — what the cycles did, one outcome per
//!   action (`requeued`, `retried`, `reaped`, `deleted`, `queued`, `refused`, `skipped`,
//!   `error`, …);
//! - `pop_process_planned_total{process}` and `pop_process_cycle_seconds{process}`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pop_domain::Timestamp;
use pop_projections::Projections;
use pop_store::{Commands, EventStore, LeaderGuard, Leadership};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

/// The leader-lock names of the processes (one lock each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessName {
    Scheduler,
    Reclaimer,
    Retry,
    Data,
    Pods,
}

/// `pop_reclaimer_leases_waiting`: expired leases the reclaimer's last cycle left for their
/// holders to renew (after a start or an outage); 0 when none.
pub const LEASES_WAITING: &str = "pop_reclaimer_leases_waiting";

/// `pop_retry_agendas_out_of_attempts`: failed agendas the retry process's last cycle found
/// with no retry left (attempts used up, or a failure its executor called deterministic),
/// kept until the data reaper removes them: its rise is work failing for good (ops3am13).
pub const OUT_OF_ATTEMPTS: &str = "pop_retry_agendas_out_of_attempts";

impl ProcessName {
    /// The gauges only the replica that leads this process measures: they read 0 on the others
    /// (ops3am15: a replica that lost the retry lock kept its last count, so `max()` over the
    /// replicas never came down).
    fn leader_gauges(self) -> &'static [&'static str] {
        match self {
            ProcessName::Reclaimer => &[LEASES_WAITING],
            ProcessName::Retry => &[OUT_OF_ATTEMPTS],
            ProcessName::Scheduler | ProcessName::Data | ProcessName::Pods => &[],
        }
    }

    /// The name on the command line (`pop reap <name>`), in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessName::Scheduler => "scheduler",
            ProcessName::Reclaimer => "reclaimer",
            ProcessName::Retry => "retry",
            ProcessName::Data => "data",
            ProcessName::Pods => "pods",
        }
    }

    /// The name of the leader lock: `scheduler`, and `reaper:<name>` for the others.
    pub fn lock(self) -> String {
        match self {
            ProcessName::Scheduler => "scheduler".to_string(),
            other => format!("reaper:{}", other.as_str()),
        }
    }
}

/// How often and how much a process works: a cycle every `interval`, at most `batch_size`
/// actions planned per cycle, no new action started after `max_run_time`, and with `dry_run`
/// every action only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub interval: Duration,
    pub batch_size: usize,
    pub max_run_time: Duration,
    pub dry_run: bool,
}

/// What the store-based processes work through: commands go through `commands`, plans read
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

/// A timed process (DOMAIN.md §9, and the scheduler of §7): each cycle reads its inputs and
/// runs a pure `plan(now, inputs, config)` (the module's free `plan` function), then an
/// idempotent `execute` of the actions, which issues ordinary domain commands. The loop that
/// runs it — pacing, readiness, the leader lock, dry runs, the run-time bound, metrics — is
/// [`run_loop`], the same for every process.
#[async_trait]
pub trait TimedProcess: Send + 'static {
    type Action: Send + Sync + 'static;
    type Report: CycleReport + Send + 'static;

    fn name(&self) -> ProcessName;

    fn cadence(&self) -> Cadence;

    /// Whether the inputs can be trusted yet (the read-model processes: the projections have
    /// caught up with the log). Cycles before that are skipped.
    fn ready(&self) -> bool {
        true
    }

    /// Reads the inputs and plans the cycle at `now` (pure given the inputs). A failure to
    /// read the inputs is the cycle's report.
    async fn plan(&mut self, now: Timestamp) -> Result<Vec<Self::Action>, Self::Report>;

    /// Executes `actions`, starting none after `deadline`. Idempotent: an action whose object
    /// moved on is refused by the domain and counted, never an error.
    async fn execute(
        &mut self,
        now: Timestamp,
        actions: Vec<Self::Action>,
        deadline: Instant,
    ) -> Self::Report;

    /// A dry run's report: each action logged, none executed (all counted as skipped).
    fn dry_run(&self, actions: &[Self::Action]) -> Self::Report;

    /// Resolves when the process should run before its interval is up (the scheduler: a
    /// change that can make room in a queue). The default never resolves.
    async fn woken(&mut self) {
        std::future::pending::<()>().await;
    }

    /// Whether a cycle that did something is logged at debug rather than info (the
    /// scheduler cycles on every submission).
    fn quiet(&self) -> bool {
        false
    }

    /// Runs at every tick of the interval, whether or not this replica leads or its inputs
    /// are ready (the reclaimer: a probe of the store, so it sees an outage while it cannot
    /// lead). The default does nothing.
    async fn tick(&mut self) {}
}

/// One cycle of `process` at `now`: plan, then (unless a dry run) execute within the
/// cadence's maximum run time.
/// A cycle is a `pass` span (`crate::trace`).
pub async fn cycle<P: TimedProcess>(process: &mut P, now: Timestamp) -> P::Report {
    let span = crate::trace::pass(process.name());
    async {
        let actions = match process.plan(now).await {
            Ok(actions) => actions,
            Err(report) => return report,
        };
        let cadence = process.cadence();
        if cadence.dry_run {
            return process.dry_run(&actions);
        }
        process.execute(now, actions, Instant::now() + cadence.max_run_time).await
    }
    .instrument(span)
    .await
}

/// Records a finished cycle: metrics always, a log line when it planned anything, a warning
/// per error.
/// At most `batch` of `found` (in the order each customer's are due), taken in turns between
/// customers: each customer's first due, then each one's second, and so on, customers in the
/// order of their first. A cycle takes a batch, so taking them by due time alone let one
/// customer's thousands go first (hostile57 M1: 6,000 leases of one tenant expired at once
/// held another's expired lease 58 s, twelve reclaimer cycles, where one was due).
pub fn in_turns<T>(found: Vec<T>, batch: usize, customer: impl Fn(&T) -> &str) -> Vec<T> {
    if found.len() <= batch {
        return found;
    }
    let mut queues: Vec<std::collections::VecDeque<T>> = Vec::new();
    let mut queue_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in found {
        let at = match queue_of.get(customer(&item)) {
            Some(&at) => at,
            None => {
                queue_of.insert(customer(&item).to_owned(), queues.len());
                queues.push(std::collections::VecDeque::new());
                queues.len() - 1
            }
        };
        queues[at].push_back(item);
    }
    let mut taken = Vec::with_capacity(batch);
    while taken.len() < batch {
        let before = taken.len();
        for queue in &mut queues {
            if taken.len() == batch {
                break;
            }
            taken.extend(queue.pop_front());
        }
        if taken.len() == before {
            break;
        }
    }
    taken
}

pub fn finish(
    process: ProcessName,
    dry_run: bool,
    quiet: bool,
    report: &impl CycleReport,
    took: Duration,
) {
    let name = process.as_str();
    metrics::counter!("pop_process_cycles_total", "process" => name, "dry_run" => if dry_run { "true" } else { "false" })
        .increment(1);
    metrics::counter!("pop_process_planned_total", "process" => name)
        .increment(report.planned() as u64);
    metrics::histogram!("pop_process_cycle_seconds", "process" => name).record(took.as_secs_f64());
    let outcomes = report.outcomes();
    // Every outcome, 0 included: its series exists from the first cycle.
    for (outcome, n) in &outcomes {
        metrics::counter!("pop_process_actions_total", "process" => name, "outcome" => *outcome)
            .increment(*n as u64);
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
        let took_ms = took.as_millis() as u64;
        let (planned, errors) = (report.planned(), errors.len());
        if quiet && errors == 0 {
            tracing::debug!(
                process = name,
                dry_run,
                planned,
                took_ms,
                "{name} cycle: {}",
                summary.join(" ")
            );
        } else {
            tracing::info!(
                process = name,
                dry_run,
                planned,
                errors,
                took_ms,
                "{name} cycle: {}",
                summary.join(" ")
            );
        }
    }
}

/// Inputs that stopped following the log are no ground to lead on: the lock, if held, goes to
/// a replica whose inputs do (ops3am20: a replica with stopped projections kept every lock).
fn give_up(process: ProcessName, guard: &mut Option<LeaderGuard>) {
    if guard.take().is_some() {
        tracing::warn!(
            process = process.as_str(),
            "inputs not ready (the read models do not follow the log): leadership given up"
        );
        leading(process, false);
    }
}

/// `guard`, the outcome of asking for `process`'s lock, said in the log and on
/// `pop_process_leader`.
fn took(process: ProcessName, guard: Option<LeaderGuard>) -> Option<LeaderGuard> {
    if guard.is_some() {
        tracing::info!(process = process.as_str(), lock = %process.lock(), "this replica leads");
    }
    leading(process, guard.is_some());
    guard
}

/// How soon a process whose inputs were not ready asks again.
const NOT_READY_RETRY: Duration = Duration::from_millis(200);

/// How often a replica that does not lead a process asks for its lock between ticks (when the
/// process's interval is longer).
const LEAD_RETRY: Duration = Duration::from_secs(15);

/// `pop_process_leader{process}`: whether this replica holds the process's leader lock.
fn leading(process: ProcessName, leads: bool) {
    metrics::gauge!("pop_process_leader", "process" => process.as_str()).set(if leads {
        1.0
    } else {
        0.0
    });
    if !leads {
        for gauge in process.leader_gauges() {
            metrics::gauge!(*gauge).set(0.0);
        }
    }
}

fn skipped(process: ProcessName, reason: &'static str) {
    metrics::counter!("pop_process_skipped_cycles_total", "process" => process.as_str(), "reason" => reason)
        .increment(1);
}

/// Why a cycle is skipped ([`skipped`]).
const SKIP_REASONS: [&str; 4] = ["not_leader", "not_ready", "leader_error", "leader_lost"];

/// The process's counters at 0 from its start, so an alert or a panel over them finds a series
/// before the first skip or action (newcomer57 L5: `pop_process_skipped_cycles_total` was on
/// `/metrics` only after a skip, `pop_process_actions_total` only after an action).
fn counters_at_zero(process: ProcessName) {
    let name = process.as_str();
    for reason in SKIP_REASONS {
        metrics::counter!("pop_process_skipped_cycles_total", "process" => name, "reason" => reason)
            .increment(0);
    }
    metrics::counter!("pop_process_actions_total", "process" => name, "outcome" => "error")
        .increment(0);
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
            tracing::warn!(process = process.as_str(), error = %pop_domain::error::ErrorChain(&e), "cannot ask for leadership; skipping a cycle");
            skipped(process, "leader_error");
            None
        }
    }
}

/// Whether the holder of `guard` may act now: with a backend whose locks are leases, its
/// fencing token must still be the current tenure's (checked before every cycle, so a holder
/// that was paused past its lease never starts a cycle on a lock another replica now holds;
/// a lease lost during a cycle abandons it through [`LeaderGuard::lost`]). Counted as
/// `leader_lost` when refused, `leader_error` when the store cannot be asked.
async fn fenced_in(leadership: &dyn Leadership, process: ProcessName, guard: &LeaderGuard) -> bool {
    let Some(token) = guard.fencing_token() else { return true };
    match leadership.admits(guard.name(), token).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(
                process = process.as_str(),
                token,
                "fencing token superseded: this replica no longer leads"
            );
            skipped(process, "leader_lost");
            false
        }
        Err(e) => {
            tracing::warn!(process = process.as_str(), error = %e, "cannot check the fencing token; skipping a cycle");
            skipped(process, "leader_error");
            false
        }
    }
}

/// The loop every process runs: a cycle every `cadence().interval` (the first at once), and
/// whenever the process is [`woken`](TimedProcess::woken); each only when the process is
/// [`ready`](TimedProcess::ready) and under its leader lock, which the loop keeps across
/// cycles until it is lost (then the cycle in progress is abandoned and the loop asks again at
/// the next tick). `now` comes from `clock`. Returns when `shutdown` resolves, abandoning a
/// cycle in progress (actions are idempotent) and releasing the lock.
pub async fn run_loop<P: TimedProcess>(
    mut process: P,
    leadership: Arc<dyn Leadership>,
    clock: impl Fn() -> Timestamp + Send + Sync,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let name = process.name();
    let mut ticker =
        tokio::time::interval(process.cadence().interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut guard: Option<LeaderGuard> = None;
    leading(name, false);
    counters_at_zero(name);
    // When a replica that does not lead asks for the lock again between its ticks.
    let asks_between_ticks = process.cadence().interval > LEAD_RETRY;
    let mut next_ask = Instant::now() + LEAD_RETRY;
    loop {
        // A lock lost between cycles is noticed at once, so `pop_process_leader` never says a
        // replica leads while none does (review-s35b: until the next tick, up to 4 h).
        // A leader looks as often whether its inputs still follow the log (review-s43: the
        // data reaper's lock stayed up to its 4 h tick with its read models stopped).
        let asks = asks_between_ticks;
        let lost = async {
            match guard.as_mut() {
                Some(held) => held.lost().await,
                None => std::future::pending::<()>().await,
            }
        };
        // Without the lock, it is asked for every LEAD_RETRY, not only at the ticks: after a
        // store blip ended every replica's lock, none led the data reaper (4 h ticks) for
        // hours and `pop_process_leader` summed to 0, the documented alert (ops3am3). Only the
        // lock: the cycle waits for its tick.
        let ask = async {
            if asks {
                tokio::time::sleep_until(next_ask).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let woken = tokio::select! {
            () = &mut shutdown => return,
            () = lost => {
                tracing::warn!(process = name.as_str(), "leader lock lost between cycles");
                guard = None;
                leading(name, false);
                next_ask = Instant::now() + LEAD_RETRY;
                continue;
            }
            () = ask => {
                next_ask = Instant::now() + LEAD_RETRY;
                if guard.is_some() {
                    if !process.ready() {
                        give_up(name, &mut guard);
                    }
                    continue;
                }
                if !process.ready() {
                    continue;
                }
                // Not a cycle skipped when another replica leads (the metric counts cycles),
                // and a store that cannot be asked is said at the ticks, not every 15 s; the
                // ask ends at a stop (review-s36b).
                let lock = name.lock();
                let asked = tokio::select! {
                    () = &mut shutdown => return,
                    asked = leadership.try_lead(&lock) => asked,
                };
                match asked {
                    Ok(Some(held)) => guard = took(name, Some(held)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(process = name.as_str(), error = %e, "cannot ask for leadership between ticks");
                    }
                }
                continue;
            }
            _ = ticker.tick() => false,
            () = process.woken() => true,
        };
        if !woken {
            process.tick().await;
        }
        if !process.ready() {
            tracing::debug!(process = name.as_str(), "inputs not ready; skipping a cycle");
            skipped(name, "not_ready");
            give_up(name, &mut guard);
            // Asked again soon, not a whole interval later: a start whose read models were
            // still loading at the first tick left the reclaimer 30 s and the data reaper up
            // to 4 h without a cycle or a leader (newcomer4).
            ticker.reset_after(NOT_READY_RETRY.min(process.cadence().interval));
            continue;
        }
        // A replica that does not lead asks again at its ticks only: wake-ups come with every
        // change, and asking is a round trip to the store.
        if guard.is_none() && woken {
            continue;
        }
        if guard.is_none() {
            guard = took(name, lead(leadership.as_ref(), name).await);
        }
        let Some(held) = guard.as_mut() else { continue };
        if !fenced_in(leadership.as_ref(), name, held).await {
            guard = None;
            leading(name, false);
            continue;
        }
        let started = Instant::now();
        let report = tokio::select! {
            () = &mut shutdown => return,
            () = held.lost() => {
                tracing::warn!(process = name.as_str(), "leader lock lost mid-cycle; abandoned");
                skipped(name, "leader_lost");
                guard = None;
                leading(name, false);
                continue;
            }
            report = cycle(&mut process, clock()) => report,
        };
        finish(name, process.cadence().dry_run, process.quiet(), &report, started.elapsed());
    }
}

/// Starts [`run_loop`] on the current runtime.
pub fn spawn<P: TimedProcess>(
    process: P,
    leadership: Arc<dyn Leadership>,
    clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(run_loop(process, leadership, clock, shutdown))
}

/// One cycle at `now` under the leader lock, for `pop reap <name> --once`: `None` when another
/// replica leads (the caller reports it and exits successfully: the leader does the work).
pub async fn once<P: TimedProcess>(
    process: &mut P,
    leadership: &dyn Leadership,
    now: Timestamp,
) -> Option<P::Report> {
    let name = process.name();
    let guard = lead(leadership, name).await?;
    if !fenced_in(leadership, name, &guard).await {
        return None;
    }
    let started = Instant::now();
    let report = cycle(process, now).await;
    drop(guard);
    finish(name, process.cadence().dry_run, process.quiet(), &report, started.elapsed());
    Some(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use chrono::Utc;
    use pop_store::ProcessLeadership;

    #[test]
    fn a_batch_is_taken_in_turns_between_customers() {
        // b's thousands due first, then a's one, then c's two: a and c are in the first batch.
        let mut due: Vec<(&str, u32)> = (0..1000).map(|i| ("b", i)).collect();
        due.extend([("a", 1000), ("c", 1001), ("c", 1002)]);
        let taken = super::in_turns(due.clone(), 5, |d| d.0);
        assert_eq!(taken, [("b", 0), ("a", 1000), ("c", 1001), ("b", 1), ("c", 1002)]);
        // Each customer's in the order they are due; all of them when they fit.
        assert_eq!(super::in_turns(due[..3].to_vec(), 5, |d| d.0), due[..3]);
        let all = super::in_turns(due.clone(), 2000, |d| d.0);
        assert_eq!(all.len(), due.len());
    }
    use tokio::sync::{mpsc, oneshot};

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

    /// A process that counts its cycles; each takes `work` (paused time) to execute, and a
    /// message on `wake` wakes it.
    struct Counting {
        name: ProcessName,
        ready: Arc<AtomicBool>,
        started: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        work: Duration,
        wake: Option<mpsc::Receiver<()>>,
    }

    impl Counting {
        fn new(name: ProcessName, ready: bool) -> Counting {
            Counting {
                name,
                ready: Arc::new(AtomicBool::new(ready)),
                started: Arc::default(),
                finished: Arc::default(),
                work: Duration::ZERO,
                wake: None,
            }
        }
    }

    #[async_trait]
    impl TimedProcess for Counting {
        type Action = ();
        type Report = Nothing;
        fn name(&self) -> ProcessName {
            self.name
        }
        fn cadence(&self) -> Cadence {
            Cadence {
                interval: Duration::from_secs(60),
                batch_size: 1,
                max_run_time: Duration::from_secs(600),
                dry_run: false,
            }
        }
        fn ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
        async fn plan(&mut self, _now: Timestamp) -> Result<Vec<()>, Nothing> {
            Ok(vec![()])
        }
        async fn execute(&mut self, _now: Timestamp, _: Vec<()>, _: Instant) -> Nothing {
            self.started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.work).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Nothing
        }
        fn dry_run(&self, _: &[()]) -> Nothing {
            Nothing
        }
        async fn woken(&mut self) {
            let woken = match self.wake.as_mut() {
                Some(rx) => rx.recv().await.is_some(),
                None => false,
            };
            if !woken {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `process` on paused time for `ticks` intervals and returns how many cycles ran.
    async fn cycles_in(leadership: Arc<dyn Leadership>, ready: bool, ticks: u32) -> usize {
        let process = Counting::new(ProcessName::Retry, ready);
        let count = Arc::clone(&process.finished);
        let (stop, stopped) = oneshot::channel::<()>();
        let interval = process.cadence().interval;
        let task = spawn(process, leadership, Utc::now, async move {
            let _ = stopped.await;
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
    async fn no_cycle_runs_before_the_inputs_are_ready() {
        let n = cycles_in(Arc::new(ProcessLeadership::default()), false, 3).await;
        assert_eq!(n, 0);
    }

    /// Inputs that become ready after the first tick (read models still loading at start) get
    /// a cycle soon after, not a whole interval later (the data reaper's is 4 h).
    #[tokio::test(start_paused = true)]
    async fn a_cycle_runs_soon_after_the_inputs_become_ready() {
        let process = Counting::new(ProcessName::Retry, false);
        let (ready, count) = (Arc::clone(&process.ready), Arc::clone(&process.finished));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, Arc::new(ProcessLeadership::default()), Utc::now, async move {
            let _ = stopped.await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count.load(Ordering::SeqCst), 0);
        ready.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "a cycle within a second of being ready");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// Inputs that stop following the log (stopped projections) give the lock up, so a
    /// replica whose inputs do follow it takes over (ops3am20: the stopped one kept every lock).
    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_inputs_stop_being_ready_gives_the_lock_up() {
        let leadership = Arc::new(ProcessLeadership::default());
        let lock = ProcessName::Retry.lock();
        let process = Counting::new(ProcessName::Retry, true);
        let (ready, count) = (Arc::clone(&process.ready), Arc::clone(&process.finished));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, leadership.clone(), Utc::now, async move {
            let _ = stopped.await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(leadership.try_lead(&lock).await.unwrap().is_none(), "it leads");
        ready.store(false, Ordering::SeqCst);
        // Between the ticks (review-s43: the data reaper's is 4 h), not at the next one.
        let interval = Counting::new(ProcessName::Retry, true).cadence().interval;
        assert!(LEAD_RETRY + Duration::from_secs(1) < interval);
        tokio::time::sleep(LEAD_RETRY + Duration::from_secs(1)).await;
        let other = leadership.try_lead(&lock).await.unwrap();
        assert!(other.is_some(), "the lock was given up");
        tokio::time::sleep(interval).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "no cycle on inputs not ready");
        drop(other);
        stop.send(()).unwrap();
        task.await.unwrap();
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

    /// A replica that did not lead takes the lock soon after it is free, not at its next tick
    /// (the data reaper's is 4 h: after a store blip no replica led it, and the alert on
    /// `pop_process_leader` fired, for hours), and runs no cycle before that tick.
    #[tokio::test(start_paused = true)]
    async fn a_free_lock_is_taken_between_ticks_and_the_cycle_waits_for_its_tick() {
        let leadership = Arc::new(ProcessLeadership::default());
        let lock = ProcessName::Data.lock();
        let other = leadership.try_lead(&lock).await.unwrap().unwrap();
        let process = Counting::new(ProcessName::Data, true);
        let count = Arc::clone(&process.finished);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, leadership.clone(), Utc::now, async move {
            let _ = stopped.await;
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(other);
        tokio::time::sleep(LEAD_RETRY + Duration::from_secs(1)).await;
        assert!(leadership.try_lead(&lock).await.unwrap().is_none(), "the process took the lock");
        assert_eq!(count.load(Ordering::SeqCst), 0, "no cycle before the tick");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "the tick's cycle ran under the lock");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// A backend whose lock is lost (its connection died) while a cycle runs; counts requests.
    struct Flaky {
        lose: tokio::sync::watch::Sender<bool>,
        asked: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Leadership for Flaky {
        async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, pop_store::StoreError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.lose.send_replace(false);
            Ok(Some(LeaderGuard::new(name, self.lose.subscribe(), Box::new(()))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_whose_lock_is_lost_is_abandoned_and_the_next_one_runs() {
        let (lose, _) = tokio::sync::watch::channel(false);
        let leadership = Arc::new(Flaky { lose: lose.clone(), asked: AtomicUsize::new(0) });
        let mut process = Counting::new(ProcessName::Data, true);
        // A long cycle: the lock is lost 10 s into it.
        process.work = Duration::from_secs(30);
        let (started, finished) = (Arc::clone(&process.started), Arc::clone(&process.finished));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, leadership.clone(), Utc::now, async move {
            let _ = stopped.await;
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        lose.send_replace(true);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (1, 0));
        // The next tick takes the lock again and, left alone, the cycle completes.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (2, 1));
        assert_eq!(leadership.asked.load(Ordering::SeqCst), 2, "asked once per leadership");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_runs_a_cycle_before_the_interval_under_the_lock_already_held() {
        let (lose, _) = tokio::sync::watch::channel(false);
        let leadership = Arc::new(Flaky { lose, asked: AtomicUsize::new(0) });
        let mut process = Counting::new(ProcessName::Scheduler, true);
        let (wake, woken) = mpsc::channel(4);
        process.wake = Some(woken);
        let finished = Arc::clone(&process.finished);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, leadership.clone(), Utc::now, async move {
            let _ = stopped.await;
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the first cycle runs at once");
        for _ in 0..3 {
            wake.send(()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(finished.load(Ordering::SeqCst), 4, "each wake-up ran a cycle");
        assert_eq!(leadership.asked.load(Ordering::SeqCst), 1, "the lock is kept across cycles");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// A lease backend whose tenure moved on behind the holder's back: it hands out a guard
    /// with token 1 but admits only token 2 from the second request on.
    struct Superseded {
        asked: AtomicUsize,
        checked: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Leadership for Superseded {
        async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, pop_store::StoreError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let (lose, lost) = tokio::sync::watch::channel(false);
            Ok(Some(LeaderGuard::new(name, lost, Box::new(lose)).with_fencing_token(1)))
        }

        async fn admits(&self, _name: &str, token: u64) -> Result<bool, pop_store::StoreError> {
            let checks = self.checked.fetch_add(1, Ordering::SeqCst);
            Ok(token == 1 && checks == 0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_whose_fencing_token_was_superseded_runs_no_cycle() {
        let leadership =
            Arc::new(Superseded { asked: AtomicUsize::new(0), checked: AtomicUsize::new(0) });
        let process = Counting::new(ProcessName::Retry, true);
        let (started, finished) = (Arc::clone(&process.started), Arc::clone(&process.finished));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = spawn(process, leadership.clone(), Utc::now, async move {
            let _ = stopped.await;
        });
        // First tick: token admitted, one cycle. Every later tick: refused before acting,
        // the guard is dropped and leadership asked again.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!((started.load(Ordering::SeqCst), finished.load(Ordering::SeqCst)), (1, 1));
        let (asked, checked) =
            (leadership.asked.load(Ordering::SeqCst), leadership.checked.load(Ordering::SeqCst));
        assert!(checked >= 3, "checked before every cycle: {checked}");
        assert!(asked >= 2, "a refused holder asks for leadership again: {asked}");
        let mut once_process = Counting::new(ProcessName::Retry, true);
        assert!(once(&mut once_process, leadership.as_ref(), Utc::now()).await.is_none());
        assert_eq!(once_process.started.load(Ordering::SeqCst), 0, "once is fenced too");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn once_reports_none_when_another_replica_leads() {
        let leadership = ProcessLeadership::default();
        let _other = leadership.try_lead("reaper:data").await.unwrap().unwrap();
        let mut process = Counting::new(ProcessName::Data, true);
        assert!(once(&mut process, &leadership, Utc::now()).await.is_none());
        let free = ProcessLeadership::default();
        assert!(once(&mut process, &free, Utc::now()).await.is_some());
    }
}
