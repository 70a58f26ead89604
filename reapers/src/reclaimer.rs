//! The AgendaReclaimer (DOMAIN.md §9): agendas `scheduled` or EXECUTING whose lease expired
//! (`lease.expires <= now`; the lease is renewed by every report, so this is "no report for
//! the lease length") get `AgendaCommand::Reclaim`. The domain records the timeout
//! ("AgendaProgress timed out.") and requeues the agenda to `added` while attempts remain, else
//! ends it COMPLETE/failed; the scheduler then queues it again like any `added` agenda.
//!
//! [`plan`] is pure; [`execute`] is idempotent: a second run of the same actions is refused by
//! the domain (the agenda is no longer leased, or a newer lease has not expired) and counted as
//! [`ReclaimReport::refused`], never an error. [`run`] is the loop `pop serve` spawns.

use std::sync::Arc;
use std::time::Duration;

use pop_domain::Timestamp;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState};
use pop_projections::{Phase, ReadModels};
use pop_store::{Commands, EventMetadata, ExecuteError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::process::{Cadence, CycleReport, ProcessName, Services, TimedProcess};

/// How often the reclaimer looks for expired leases. The lease itself is `ApiConfig.lease`
/// (POP's `reclaimAge`, 5 min by default); a 30 s cycle reclaims an expired lease at most
/// 10 % of a default lease late, and a cycle is one in-memory scan of the leased agendas, so
/// running it more often than POP's 5 min costs next to nothing.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Most agendas reclaimed per cycle. When a whole resource pool dies, thousands of leases
/// expire together; 500 per 30 s cycle (1,000/min) drains them without crowding clients out
/// of the store's group commit (which takes up to 512 appends per transaction), and the
/// oldest expiries go first.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// Longest one cycle issues commands; the rest of its batch waits for the next cycle. Below
/// the interval so that cycles never pile up behind a slow store.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(20);

/// How long a cycle's read of the log head may take before the store counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `Reclaim` commands in flight at once (they share the store's group commit).
pub const MAX_CONCURRENT_RECLAIMS: usize = 64;

/// The actor recorded in the metadata of the reclaimer's events.
pub const ACTOR: &str = "system:reclaimer";

/// How the reclaimer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimerConfig {
    /// Interval, batch size, run-time bound and dry run.
    pub cadence: Cadence,
    /// Give every lease its length again after this process started (it runs beside the
    /// API the workers report to, which was down before: `pop serve`), as after a store
    /// outage ([`Commands::serving_for`]). Off for a reclaimer run alone (`pop reap`).
    pub grace_after_start: bool,
}

impl Default for ReclaimerConfig {
    fn default() -> ReclaimerConfig {
        ReclaimerConfig {
            cadence: Cadence {
                interval: DEFAULT_INTERVAL,
                batch_size: DEFAULT_BATCH_SIZE,
                max_run_time: DEFAULT_MAX_RUN_TIME,
                dry_run: false,
            },
            grace_after_start: false,
        }
    }
}

/// One agenda to reclaim, as the read model saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimAction {
    /// The agenda's stream key (customer-scoped): what the command addresses.
    pub key: String,
    pub agenda_id: String,
    pub customer_id: String,
    /// The lease holder that stopped reporting (`None`: a leased agenda without a lease).
    pub holder: Option<String>,
    /// When its lease expired (`None`: no lease at all, reclaimable at once).
    pub lease_expires: Option<Timestamp>,
}

/// What one [`execute`] did.
#[derive(Debug, Default)]
pub struct ReclaimReport {
    /// Actions given.
    pub planned: usize,
    /// Timed out and requeued to `added` (attempts remain).
    pub requeued: usize,
    /// Timed out and ended COMPLETE/failed (attempts used up).
    pub failed: usize,
    /// Refused by the domain because the agenda moved on (reported, renewed, completed,
    /// cancelled or already reclaimed), or kept changing under the command: nothing to do.
    pub refused: usize,
    /// Not attempted: the cycle's run time was used up (or dry run).
    pub skipped: usize,
    /// Commands that failed for another reason (the store, a codec); logged, retried next
    /// cycle.
    pub errors: Vec<ReclaimError>,
}

impl ReclaimReport {
    /// Agendas whose lease was ended.
    pub fn reclaimed(&self) -> usize {
        self.requeued + self.failed
    }
}

/// A reclaim command that failed for a reason other than the agenda having moved on.
#[derive(Debug, thiserror::Error)]
pub enum ReclaimError {
    #[error("reclaiming agenda {agenda_id:?} failed")]
    Execute {
        agenda_id: String,
        #[source]
        source: ExecuteError<AgendaError>,
    },
    #[error("a reclaim task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// The agendas to reclaim at `now`: `scheduled` or EXECUTING with `lease.expires <= now`,
/// oldest expiry first, at most `config.cadence.batch_size`. Pure: the same models and `now` give the
/// same plan.
pub fn plan(now: Timestamp, models: &ReadModels, config: &ReclaimerConfig) -> Vec<ReclaimAction> {
    plan_served(now, models, config, None).actions
}

/// [`plan`], leaving out the leases whose length (as claimed) is longer than `served`, how
/// long the store has served since it was last down or this process started
/// ([`Commands::serving_for`]): their holders could not renew them meanwhile (ops3am7: after
/// a restart or a database outage longer than the lease, every agenda in flight was
/// reclaimed within a second, and the workers still running them were refused and ran them
/// again). Also answers the expired leases left out ([`Planned`]).
pub fn plan_served(
    now: Timestamp,
    models: &ReadModels,
    config: &ReclaimerConfig,
    served: Option<Duration>,
) -> Planned {
    let mut waiting = 0;
    let mut soonest: Option<(String, Duration)> = None;
    let agendas = models.agendas();
    let mut found = Vec::new();
    for phase in [Phase::Scheduled, Phase::Executing] {
        for entry in agendas.in_phase(phase) {
            let state = match entry.state() {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(
                        agenda = entry.key(),
                        error = &*e.to_string(),
                        "reclaimer: skipping an unreadable agenda"
                    );
                    continue;
                }
            };
            if !state.lease_expired(now) {
                continue;
            }
            let lease = state.lease();
            let length = lease.and_then(|l| l.length_ms).and_then(|ms| u64::try_from(ms).ok());
            if let (Some(served), Some(length)) = (served, length)
                && served < Duration::from_millis(length)
            {
                waiting += 1;
                let left = Duration::from_millis(length) - served;
                if soonest.as_ref().is_none_or(|(_, s)| left < *s) {
                    soonest = Some((entry.key().to_string(), left));
                }
                continue;
            }
            found.push(ReclaimAction {
                key: entry.key().to_string(),
                agenda_id: entry.id().to_string(),
                customer_id: entry.customer_id().to_string(),
                holder: lease.map(|l| l.holder.clone()),
                lease_expires: lease.map(|l| l.expires),
            });
        }
    }
    found.sort_by(|a, b| (a.lease_expires, &a.key).cmp(&(b.lease_expires, &b.key)));
    let found = crate::process::in_turns(found, config.cadence.batch_size, |a| &a.customer_id);
    Planned { actions: found, waiting, soonest }
}

/// What [`plan_served`] planned, and the expired leases it left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub actions: Vec<ReclaimAction>,
    /// Expired leases waiting for the store to have served their length.
    pub waiting: usize,
    /// The one of them reclaimable first (its agenda) and how soon.
    pub soonest: Option<(String, Duration)>,
}

/// Issues `Reclaim { now }` for each action (at most [`MAX_CONCURRENT_RECLAIMS`] at once),
/// starting no new command after `deadline`. Idempotent: an agenda that moved on is refused by
/// the domain and counted in [`ReclaimReport::refused`].
pub async fn execute(
    commands: &Arc<Commands>,
    now: Timestamp,
    actions: &[ReclaimAction],
    deadline: Option<Instant>,
) -> ReclaimReport {
    let mut report = ReclaimReport { planned: actions.len(), ..ReclaimReport::default() };
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut started = 0;
    for action in actions {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        while tasks.len() >= MAX_CONCURRENT_RECLAIMS {
            if let Some(done) = tasks.join_next().await {
                count(&mut report, done);
            }
        }
        started += 1;
        let commands = Arc::clone(commands);
        let action = action.clone();
        tasks.spawn(async move { reclaim(&commands, now, action).await }.in_current_span());
    }
    while let Some(done) = tasks.join_next().await {
        count(&mut report, done);
    }
    report.skipped = actions.len() - started;
    report
}

enum Outcome {
    Requeued,
    Failed,
    Refused,
    Error(ReclaimError),
}

fn count(report: &mut ReclaimReport, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok(Outcome::Requeued) => report.requeued += 1,
        Ok(Outcome::Failed) => report.failed += 1,
        Ok(Outcome::Refused) => report.refused += 1,
        Ok(Outcome::Error(e)) => report.errors.push(e),
        Err(e) => report.errors.push(ReclaimError::Task(e)),
    }
}

async fn reclaim(commands: &Commands, now: Timestamp, action: ReclaimAction) -> Outcome {
    let metadata = EventMetadata {
        customer_id: Some(action.customer_id.clone()),
        cid: Some(uuid::Uuid::new_v4().to_string()),
        causation_id: Some(uuid::Uuid::new_v4()),
        actor: Some(ACTOR.to_string()),
        command: Some("reclaim".to_string()),
        traceparent: None,
        tracestate: None,
    };
    let command = AgendaCommand::Reclaim { now };
    let execute = commands.execute::<AgendaState>(&action.key, &metadata, &command);
    match crate::trace::on_agenda(commands, &action.key, "reclaim", execute).await {
        Ok(done) if done.state.is_failed() => {
            tracing::info!(
                agenda = &*action.key,
                cid = metadata.cid.as_deref().unwrap_or("-"),
                holder = action.holder.as_deref().unwrap_or("-"),
                "reclaimer: lease expired, attempts used up: failed"
            );
            Outcome::Failed
        }
        Ok(_) => {
            tracing::info!(
                agenda = &*action.key,
                cid = metadata.cid.as_deref().unwrap_or("-"),
                holder = action.holder.as_deref().unwrap_or("-"),
                "reclaimer: lease expired: requeued"
            );
            Outcome::Requeued
        }
        Err(ExecuteError::Refused(e)) => {
            tracing::debug!(
                agenda = &*action.key,
                reason = &*e.to_string(),
                "reclaimer: agenda moved on"
            );
            Outcome::Refused
        }
        Err(ExecuteError::Conflict { .. }) => {
            tracing::debug!(agenda = &*action.key, "reclaimer: agenda kept changing");
            Outcome::Refused
        }
        Err(source) => Outcome::Error(ReclaimError::Execute { agenda_id: action.key, source }),
    }
}

/// The reclaimer as a [`TimedProcess`]: plans from the read models, reclaims through the
/// store's commands.
#[derive(Debug)]
pub struct Reclaimer {
    services: Services,
    config: ReclaimerConfig,
    clock: ClockWatch,
}

impl Reclaimer {
    pub fn new(services: Services, config: ReclaimerConfig) -> Reclaimer {
        Reclaimer { services, config, clock: ClockWatch::default() }
    }
}

/// How far the wall clock may run ahead of the monotonic one between two cycles before it
/// counts as stepped: NTP slews by at most 0.05 %, a step is seconds or more.
const CLOCK_STEP_TOLERANCE: Duration = Duration::from_secs(2);

/// Forward steps of the wall clock that leases are stamped with, seen between two cycles
/// against this process's monotonic clock (ops3am18: an NTP step, or a VM resumed, expired
/// at once the leases live workers had just renewed; the agendas were run twice, or failed
/// with their attempts used up). After a step, a lease waits for its length on the monotonic
/// clock, as after an outage: its holder renews it meanwhile, if it is there.
#[derive(Debug, Default)]
struct ClockWatch {
    last: Option<(Timestamp, Instant)>,
    stepped: Option<Instant>,
}

impl ClockWatch {
    /// Notes the wall clock's `now` read at `at`; the step, if it moved forward by more
    /// than the monotonic time since the last reading allows.
    fn observe(&mut self, now: Timestamp, at: Instant) -> Option<Duration> {
        let last = self.last.replace((now, at));
        let (then, was) = last?;
        let wall = (now - then).to_std().unwrap_or_default();
        let monotonic = at.saturating_duration_since(was);
        let step = wall.checked_sub(monotonic).filter(|s| *s > CLOCK_STEP_TOLERANCE)?;
        self.stepped = Some(at);
        Some(step)
    }

    /// `served` no longer than the time since the last step.
    fn served(&self, served: Option<Duration>, at: Instant) -> Option<Duration> {
        match self.stepped {
            None => served,
            Some(step) => {
                let since = at.saturating_duration_since(step);
                Some(served.map_or(since, |s| s.min(since)))
            }
        }
    }
}

#[async_trait::async_trait]
impl TimedProcess for Reclaimer {
    type Action = ReclaimAction;
    type Report = ReclaimReport;

    fn name(&self) -> ProcessName {
        ProcessName::Reclaimer
    }
    fn cadence(&self) -> Cadence {
        self.config.cadence
    }
    fn ready(&self) -> bool {
        self.services.projections.following()
    }
    /// A read of the head at every tick, led or not, ready or not: an outage is seen, and its
    /// end, even when this process wrote nothing meanwhile and could not lead during it (its
    /// leader lock is lost with the database; ops3am8: the probe ran only under the lock, so
    /// the replica that took the lead back after an outage reclaimed at once what live
    /// workers still ran).
    async fn tick(&mut self) {
        let commands = &self.services.commands;
        match tokio::time::timeout(PROBE_TIMEOUT, self.services.store.head()).await {
            Ok(Ok(_)) => commands.note_probe(Ok(())),
            Ok(Err(e)) => commands.note_probe(Err(&e)),
            // No answer in time counts as none at all.
            Err(_) => commands.note_probe(Err(&pop_store::StoreError::Closed)),
        }
    }

    async fn plan(&mut self, now: Timestamp) -> Result<Vec<ReclaimAction>, ReclaimReport> {
        let commands = &self.services.commands;
        let at = Instant::now();
        if let Some(step) = self.clock.observe(now, at) {
            tracing::warn!(
                step_secs = step.as_secs(),
                "reclaimer: the wall clock stepped forward; expired leases wait for their \
                 length again (their holders renew them if they are there)"
            );
        }
        let served = self.clock.served(commands.serving_for(self.config.grace_after_start), at);
        let models = self.services.projections.read();
        let planned = plan_served(now, &models, &self.config, served);
        metrics::gauge!(crate::process::LEASES_WAITING).set(planned.waiting as f64);
        if let Some((first, left)) = &planned.soonest {
            let since = match self.config.grace_after_start {
                true => "since it was last down, this server started or the wall clock stepped",
                false => "since it was last down or the wall clock stepped",
            };
            tracing::info!(
                waiting = planned.waiting,
                served_secs = served.map_or(0, |s| s.as_secs()),
                first = &*first.to_string(),
                reclaimable_in_secs = left.as_secs(),
                "reclaimer: expired leases wait until the store has served for their length {since} \
                 (their holders could not renew them meanwhile); a holder that reports keeps \
                 its agenda"
            );
        }
        Ok(planned.actions)
    }
    async fn execute(
        &mut self,
        now: Timestamp,
        actions: Vec<ReclaimAction>,
        deadline: Instant,
    ) -> ReclaimReport {
        execute(&self.services.commands, now, &actions, Some(deadline)).await
    }
    fn dry_run(&self, actions: &[ReclaimAction]) -> ReclaimReport {
        for a in actions {
            tracing::info!(agenda = &*a.key, holder = a.holder.as_deref().unwrap_or("-"), lease_expires = ?a.lease_expires, "reclaimer (dry run): would reclaim");
        }
        ReclaimReport { planned: actions.len(), skipped: actions.len(), ..ReclaimReport::default() }
    }
}

impl CycleReport for ReclaimReport {
    fn planned(&self) -> usize {
        self.planned
    }
    fn outcomes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("requeued", self.requeued),
            ("failed", self.failed),
            ("refused", self.refused),
            ("skipped", self.skipped),
        ]
    }
    fn errors(&self) -> Vec<String> {
        self.errors.iter().map(|e| pop_domain::error::ErrorChain(e).to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use pop_domain::agenda::{OperationReport, ProgressReport};
    use pop_domain::{Agenda, AgendaInsight, Aggregate, Operation, ProcessingState};
    use pop_projections::{Decoded, DomainEvent};
    use pop_store::Position;

    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_timestamp(secs, 0).unwrap()
    }

    /// A forward step of the wall clock between two cycles restarts the window a lease waits
    /// for its length in (ops3am18); the clocks moving together, or the wall going back, do
    /// not.
    #[test]
    fn a_forward_step_of_the_wall_clock_restarts_the_served_window() {
        let secs = Duration::from_secs;
        let mut watch = ClockWatch::default();
        let at = Instant::now();
        assert_eq!(watch.observe(t(1000), at), None);
        assert_eq!(watch.observe(t(1031), at + secs(30)), None, "within the tolerance");
        assert_eq!(watch.served(Some(secs(500)), at + secs(30)), Some(secs(500)));
        assert_eq!(watch.served(None, at + secs(30)), None);
        assert_eq!(watch.observe(t(1336), at + secs(35)), Some(secs(300)));
        assert_eq!(watch.served(Some(secs(500)), at + secs(45)), Some(secs(10)));
        assert_eq!(watch.served(None, at + secs(45)), Some(secs(10)));
        assert_eq!(watch.observe(t(900), at + secs(50)), None, "a step back is not one forward");
        assert_eq!(watch.served(Some(secs(500)), at + secs(345)), Some(secs(310)));
    }

    fn submit(id: &str, at: i64) -> AgendaCommand {
        AgendaCommand::Submit {
            agenda: Agenda {
                id: id.to_string(),
                customer_id: "acme".to_string(),
                progress_id: Some(format!("p{id}")),
                operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
                ..Agenda::default()
            },
            insight: AgendaInsight {
                resource_pool_id: "pool-1".to_string(),
                insight_id: "transcode".to_string(),
            },
            now: t(at),
        }
    }

    fn claim(at: i64, expires: i64) -> AgendaCommand {
        AgendaCommand::Claim {
            holder: "worker".to_string(),
            lease_id: format!("lease-{at}"),
            lease_expires: t(expires),
            now: t(at),
        }
    }

    fn report(at: i64, expires: i64, state: ProcessingState, message: &str) -> AgendaCommand {
        AgendaCommand::ReportProgress {
            holder: "worker".to_string(),
            lease_id: None,
            lease_expires: t(expires),
            report: ProgressReport {
                operations: vec![OperationReport {
                    name: "probe".to_string(),
                    state,
                    message: Some(message.to_string()),
                    ..OperationReport::default()
                }],
                ..ProgressReport::default()
            },
            now: t(at),
        }
    }

    /// Read models of agendas decided in memory:
    /// - `queued`: in the queue, no lease;
    /// - `b`: claimed at 100, lease until 400 (`scheduled`);
    /// - `c`: claimed at 100, a report at 200 renewed the lease until 500 (EXECUTING);
    /// - `d`: claimed at 50, lease until 350 (`scheduled`);
    /// - `done`: claimed, then succeeded (no lease left).
    fn models() -> ReadModels {
        let histories: Vec<(&str, Vec<AgendaCommand>)> = vec![
            ("queued", vec![submit("queued", 1), AgendaCommand::Queue { now: t(2) }]),
            ("b", vec![submit("b", 1), AgendaCommand::Queue { now: t(2) }, claim(100, 400)]),
            (
                "c",
                vec![
                    submit("c", 1),
                    AgendaCommand::Queue { now: t(2) },
                    claim(100, 400),
                    report(200, 500, ProcessingState::Executing, "Running"),
                ],
            ),
            ("d", vec![submit("d", 1), AgendaCommand::Queue { now: t(2) }, claim(50, 350)]),
            (
                "done",
                vec![
                    submit("done", 1),
                    AgendaCommand::Queue { now: t(2) },
                    claim(10, 310),
                    report(20, 320, ProcessingState::Complete, "succeeded"),
                ],
            ),
        ];
        let mut models = ReadModels::new();
        let mut position = 0;
        for (id, commands) in histories {
            let mut state = AgendaState::default();
            for command in &commands {
                for event in state.decide(command).unwrap() {
                    state.evolve(&event);
                    position += 1;
                    let decoded = Decoded::Event {
                        id: id.to_string(),
                        event: DomainEvent::Agenda(event),
                        stored: 0,
                    };
                    models.apply(Position::from_sequence(position), &decoded, None).unwrap();
                }
            }
        }
        models
    }

    fn ids(actions: &[ReclaimAction]) -> Vec<&str> {
        actions.iter().map(|a| a.agenda_id.as_str()).collect()
    }

    #[test]
    fn nothing_is_reclaimed_before_a_lease_expires() {
        let m = models();
        assert!(plan(t(349), &m, &ReclaimerConfig::default()).is_empty());
    }

    #[test]
    fn a_lease_expiring_exactly_now_is_reclaimed_a_newer_one_is_not() {
        let m = models();
        let config = ReclaimerConfig::default();
        assert_eq!(ids(&plan(t(350), &m, &config)), ["d"]);
        assert_eq!(ids(&plan(t(399), &m, &config)), ["d"]);
        assert_eq!(ids(&plan(t(400), &m, &config)), ["d", "b"]);
        // A report renews the lease: `c` (EXECUTING) only expires at 500.
        assert_eq!(ids(&plan(t(499), &m, &config)), ["d", "b"]);
        assert_eq!(ids(&plan(t(500), &m, &config)), ["d", "b", "c"]);
    }

    #[test]
    fn actions_name_the_holder_and_the_expiry() {
        let m = models();
        let actions = plan(t(500), &m, &ReclaimerConfig::default());
        let c = actions.iter().find(|a| a.agenda_id == "c").unwrap();
        assert_eq!(c.customer_id, "acme");
        assert_eq!(c.holder.as_deref(), Some("worker"));
        assert_eq!(c.lease_expires, Some(t(500)));
    }

    #[test]
    fn the_batch_takes_the_oldest_expiries_first() {
        let m = models();
        let config = {
            let mut c = ReclaimerConfig::default();
            c.cadence.batch_size = 2;
            c
        };
        assert_eq!(ids(&plan(t(10_000), &m, &config)), ["d", "b"]);
        let none = {
            let mut c = ReclaimerConfig::default();
            c.cadence.batch_size = 0;
            c
        };
        assert!(plan(t(10_000), &m, &none).is_empty());
    }

    #[test]
    fn after_an_outage_or_a_start_expired_leases_get_their_length_again() {
        let m = models();
        let config = ReclaimerConfig::default();
        // Every lease was claimed for 300 s: the store served for less, so none is taken.
        let none = plan_served(t(500), &m, &config, Some(Duration::from_secs(299)));
        assert!(none.actions.is_empty());
        assert_eq!(none.waiting, 3);
        assert_eq!(none.soonest.map(|(_, left)| left), Some(Duration::from_secs(1)));
        let all = plan_served(t(500), &m, &config, Some(Duration::from_secs(300)));
        assert_eq!((ids(&all.actions), all.waiting), (vec!["d", "b", "c"], 0));
        assert_eq!(plan_served(t(500), &m, &config, None).actions, all.actions);
    }

    #[test]
    fn plan_is_a_function_of_its_inputs() {
        let m = models();
        let config = ReclaimerConfig::default();
        assert_eq!(plan(t(450), &m, &config), plan(t(450), &models(), &config));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = ReclaimerConfig::default();
        assert_eq!(c.cadence.interval, Duration::from_secs(30));
        assert_eq!(c.cadence.batch_size, 500);
        assert!(c.cadence.max_run_time < c.cadence.interval);
        assert!(!c.cadence.dry_run);
    }
}
