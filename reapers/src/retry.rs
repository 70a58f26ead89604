//! AgendaRetry (DOMAIN.md §8, §9): an agenda that ended COMPLETE/failed while
//! `attemptsCompleted < min(20, maximumAttempts)` is rerun with `continue` by
//! `AgendaCommand::Retry`, whose `AgendaRetryDecided` event makes each decision visible in the
//! agenda's history. **pop:** not at once, as POP did, but after an exponential backoff with
//! jitter, so a failing dependency is not hammered by every agenda at the same instant.
//!
//! The delay before retry number `n` (the agenda has `n` attempts behind it) is
//! `min(max, initial × multiplier^(n-1))`, spread by ±`jitter_percent` % and capped at `max`,
//! counted from the agenda's `completedTime`. The jitter is not random: it is derived from a
//! hash (FNV-1a) of the agenda id and `n`, so [`plan`] stays a pure function of its inputs and
//! two replicas plan the same instant, while agendas that failed together still spread out.
//!
//! [`execute`] is idempotent: a second `Retry` of an agenda that is no longer failed, or has no
//! attempts left, is refused by the domain and counted, never an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pop_domain::Timestamp;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState, MAXIMUM_ATTEMPTS_LIMIT};
use pop_projections::{Phase, ReadModels};
use pop_store::{Commands, EventMetadata, ExecuteError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::process::{Cadence, CycleReport, ProcessName, Services, TimedProcess};

pub use pop_domain::backoff::Backoff;

/// How often the retry process looks for failed agendas that are due. Short, because the
/// backoff (not the interval) says when a retry is due; a cycle is one scan of the failed
/// agendas in memory.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Most agendas retried per cycle: like the reclaimer's, a mass failure drains at 3,000/min
/// without crowding clients out of the store's group commit; the earliest due go first.
pub const DEFAULT_BATCH_SIZE: usize = 500;

/// Longest one cycle issues commands; below the interval so cycles never pile up.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(8);

/// `Retry` commands in flight at once.
pub const MAX_CONCURRENT_RETRIES: usize = 64;

/// The actor recorded in the metadata of the retry's events.
pub const ACTOR: &str = "system:retry";

/// How the retry process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Interval, batch size, run-time bound and dry run.
    pub cadence: Cadence,
    pub backoff: Backoff,
    /// The server's memory quotas per customer, which a due retry waits for. `None`: not
    /// checked (a retry process run alone does not know them).
    pub quotas: Option<MemoryQuotas>,
}

/// The server's memory quotas per customer, as a due retry heeds them: a retry makes its
/// agenda live again, its results included, and what the new attempt's reports keep the
/// agenda holds when it finishes again, so a retry waits while its customer is at either quota,
/// as a user's rerun is refused (review-s49c: retries brought failed agendas back past the live
/// quota; hostile50 H1: retries took finished agendas to 6.2 times the retained quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryQuotas {
    /// `--max-live-bytes-per-customer`: waits while the customer's live agendas hold this or
    /// more.
    pub live_bytes: u64,
    /// `--max-retained-bytes-per-customer`: waits while its finished agendas hold more.
    pub retained_bytes: u64,
}

impl MemoryQuotas {
    /// Whether `customer` (one customer's visibility) is at either quota in `models`.
    fn reached(&self, models: &ReadModels, customer: &pop_projections::Visibility) -> bool {
        let agendas = models.agendas();
        agendas.live_bytes(customer) >= self.live_bytes
            || agendas.retained_bytes(customer) > self.retained_bytes
    }
}

impl Default for RetryConfig {
    fn default() -> RetryConfig {
        RetryConfig {
            cadence: Cadence {
                interval: DEFAULT_INTERVAL,
                batch_size: DEFAULT_BATCH_SIZE,
                max_run_time: DEFAULT_MAX_RUN_TIME,
                dry_run: false,
            },
            backoff: Backoff::default(),
            quotas: None,
        }
    }
}

/// One agenda to retry, as the read model saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAction {
    /// The agenda's stream key (customer-scoped): what the command addresses.
    pub key: String,
    pub agenda_id: String,
    pub customer_id: String,
    /// Attempts completed so far; the retry starts attempt `attempts_completed + 1`.
    pub attempts_completed: u32,
    /// `min(20, maximumAttempts)`.
    pub maximum_attempts: u32,
    /// When the backoff after the last attempt ends.
    pub due: Timestamp,
}

/// What one [`execute`] did.
#[derive(Debug, Default)]
pub struct RetryReport {
    pub planned: usize,
    /// Rerun with `continue` (back to `added`, or `pending` for `doNotRun` agendas).
    pub retried: usize,
    /// Refused by the domain: no longer failed, no attempts left, or kept changing.
    pub refused: usize,
    /// Not attempted: the cycle's run time was used up (or dry run).
    pub skipped: usize,
    pub errors: Vec<RetryError>,
}

/// A retry that failed for a reason other than the agenda having moved on.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("retrying agenda {agenda_id:?} failed")]
    Execute {
        agenda_id: String,
        #[source]
        source: ExecuteError<AgendaError>,
    },
    #[error("a retry task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Failed agendas a cycle found without attempts left, by their `updatedTime`. Such an agenda
/// can only become retryable through an event, and every event moves `updatedTime`, so the next
/// cycle decodes only the failed agendas that are new or changed — not the thousands of
/// exhausted ones kept until the data reaper removes them. A full scan every
/// [`FULL_SCAN_EVERY`] cycles bounds what a same-millisecond change could hide.
#[derive(Debug, Default)]
pub struct ExhaustedMemo {
    seen: HashMap<String, i64>,
    cycles: u32,
}

/// Cycles between full scans of the failed agendas (10 min at the default interval).
pub const FULL_SCAN_EVERY: u32 = 60;

/// The agendas to retry at `now`: COMPLETE/failed with attempts left whose backoff ended at or
/// before `now`, earliest due first, at most `config.cadence.batch_size`. Pure.
pub fn plan(now: Timestamp, models: &ReadModels, config: &RetryConfig) -> Vec<RetryAction> {
    plan_with(now, models, config, &mut ExhaustedMemo::default())
}

/// [`plan`] with a memo of the exhausted agendas carried from cycle to cycle; the result is
/// the same as [`plan`]'s, only cheaper.
pub fn plan_with(
    now: Timestamp,
    models: &ReadModels,
    config: &RetryConfig,
    memo: &mut ExhaustedMemo,
) -> Vec<RetryAction> {
    memo.cycles = memo.cycles.wrapping_add(1);
    if memo.cycles.is_multiple_of(FULL_SCAN_EVERY) {
        memo.seen.clear();
    }
    let mut exhausted = HashMap::with_capacity(memo.seen.len());
    let mut found = Vec::new();
    for entry in models.agendas().in_phase(Phase::Failed) {
        if memo.seen.get(entry.key()) == Some(&entry.updated_ms()) {
            exhausted.insert(entry.key().to_string(), entry.updated_ms());
            continue;
        }
        let progress = match entry.progress() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    agenda = entry.key(),
                    error = &*e.to_string(),
                    "retry: skipping an unreadable agenda"
                );
                continue;
            }
        };
        let maximum = progress.maximum_attempts.clamp(1, MAXIMUM_ATTEMPTS_LIMIT);
        // Out of attempts, or a failure its executor called deterministic: nothing to retry.
        if !progress.retry_due() {
            exhausted.insert(entry.key().to_string(), entry.updated_ms());
            continue;
        }
        // Due, but its customer deleted (review60 M1: retried, a deleted customer's agenda was
        // handed out again; a customer's delete is refused while these are to come, one
        // racing it is caught here) or gone entirely, its tombstone reaped (review61 L1).
        if models.customer(entry.customer_id()).is_none() {
            tracing::warn!(
                agenda = entry.key(),
                customer = entry.customer_id(),
                "retry: not retrying an agenda whose customer was deleted"
            );
            exhausted.insert(entry.key().to_string(), entry.updated_ms());
            continue;
        }
        // Due (review-s45c), but bound to an insight since deleted, or one that no longer takes
        // its customer (another customer's under the same id now): retried, it would wait for
        // good, or run on another customer's workers (popclient26, hostile38).
        if let Some(insight) =
            entry.insight_id().filter(|i| !models.insight_takes(i, entry.customer_id()))
        {
            tracing::warn!(
                agenda = entry.key(),
                insight,
                "retry: not retrying an agenda whose insight was deleted or no longer takes its \
                 customer (it would not run where it was submitted to); submit the agenda anew \
                 (an insight that takes it again is seen within ten minutes)"
            );
            exhausted.insert(entry.key().to_string(), entry.updated_ms());
            continue;
        }
        let ended = progress.completed_time.or(progress.updated_time).unwrap_or(now);
        let due = config.backoff.due_after(entry.key(), ended, progress.attempts_completed);
        if due > now {
            continue;
        }
        let customer = pop_projections::Visibility::from_ids([entry.customer_id()]);
        if let Some(quotas) = &config.quotas
            && quotas.reached(models, &customer)
        {
            tracing::debug!(
                agenda = entry.key(),
                "retry: waiting, its customer is at a memory quota"
            );
            continue;
        }
        found.push(RetryAction {
            key: entry.key().to_string(),
            agenda_id: entry.id().to_string(),
            customer_id: entry.customer_id().to_string(),
            attempts_completed: progress.attempts_completed,
            maximum_attempts: maximum,
            due,
        });
    }
    memo.seen = exhausted;
    found.sort_by(|a, b| (a.due, &a.key).cmp(&(b.due, &b.key)));
    crate::process::in_turns(found, config.cadence.batch_size, |a| &a.customer_id)
}

/// Issues `Retry { now }` for each action (at most [`MAX_CONCURRENT_RETRIES`] at once),
/// starting no new command after `deadline`. Idempotent.
pub async fn execute(
    commands: &Arc<Commands>,
    now: Timestamp,
    actions: &[RetryAction],
    deadline: Option<Instant>,
) -> RetryReport {
    let mut report = RetryReport { planned: actions.len(), ..RetryReport::default() };
    let mut tasks: JoinSet<Result<bool, RetryError>> = JoinSet::new();
    let mut started = 0;
    for action in actions {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        while tasks.len() >= MAX_CONCURRENT_RETRIES {
            if let Some(done) = tasks.join_next().await {
                count(&mut report, done);
            }
        }
        started += 1;
        let commands = Arc::clone(commands);
        let action = action.clone();
        tasks.spawn(async move { retry(&commands, now, action).await }.in_current_span());
    }
    while let Some(done) = tasks.join_next().await {
        count(&mut report, done);
    }
    report.skipped = actions.len() - started;
    report
}

fn count(report: &mut RetryReport, done: Result<Result<bool, RetryError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(true)) => report.retried += 1,
        Ok(Ok(false)) => report.refused += 1,
        Ok(Err(e)) => report.errors.push(e),
        Err(e) => report.errors.push(RetryError::Task(e)),
    }
}

/// `Ok(true)`: retried; `Ok(false)`: refused because the agenda moved on.
async fn retry(
    commands: &Commands,
    now: Timestamp,
    action: RetryAction,
) -> Result<bool, RetryError> {
    let metadata = EventMetadata {
        customer_id: Some(action.customer_id.clone()),
        cid: Some(uuid::Uuid::new_v4().to_string()),
        causation_id: Some(uuid::Uuid::new_v4()),
        actor: Some(ACTOR.to_string()),
        command: Some("retry".to_string()),
        traceparent: None,
        tracestate: None,
    };
    let command = AgendaCommand::Retry { now };
    let execute = commands.execute::<AgendaState>(&action.key, &metadata, &command);
    match crate::trace::on_agenda(commands, &action.key, "retry", execute).await {
        Ok(_) => {
            tracing::info!(
                agenda = &*action.key,
                cid = metadata.cid.as_deref().unwrap_or("-"),
                attempt = action.attempts_completed + 1,
                maximum = action.maximum_attempts,
                "retry: failed agenda rerun (continue)"
            );
            Ok(true)
        }
        Err(ExecuteError::Refused(e)) => {
            tracing::debug!(
                agenda = &*action.key,
                reason = &*e.to_string(),
                "retry: agenda moved on"
            );
            Ok(false)
        }
        Err(ExecuteError::Conflict { .. }) => Ok(false),
        Err(source) => Err(RetryError::Execute { agenda_id: action.key, source }),
    }
}

/// The retry process as a [`TimedProcess`]: plans from the read models (remembering failed
/// agendas with no attempts left in its [`ExhaustedMemo`]), retries through the store's
/// commands.
#[derive(Debug)]
pub struct Retry {
    services: Services,
    config: RetryConfig,
    memo: ExhaustedMemo,
}

impl Retry {
    pub fn new(services: Services, config: RetryConfig) -> Retry {
        Retry { services, config, memo: ExhaustedMemo::default() }
    }
}

#[async_trait::async_trait]
impl TimedProcess for Retry {
    type Action = RetryAction;
    type Report = RetryReport;

    fn name(&self) -> ProcessName {
        ProcessName::Retry
    }
    fn cadence(&self) -> Cadence {
        self.config.cadence
    }
    fn ready(&self) -> bool {
        self.services.projections.following()
    }
    async fn plan(&mut self, now: Timestamp) -> Result<Vec<RetryAction>, RetryReport> {
        let actions =
            plan_with(now, &self.services.projections.read(), &self.config, &mut self.memo);
        metrics::gauge!(crate::process::OUT_OF_ATTEMPTS).set(self.memo.seen.len() as f64);
        Ok(actions)
    }
    async fn execute(
        &mut self,
        now: Timestamp,
        actions: Vec<RetryAction>,
        deadline: Instant,
    ) -> RetryReport {
        execute(&self.services.commands, now, &actions, Some(deadline)).await
    }
    fn dry_run(&self, actions: &[RetryAction]) -> RetryReport {
        for a in actions {
            tracing::info!(agenda = &*a.key, attempt = a.attempts_completed + 1, maximum = a.maximum_attempts, due = %a.due, "retry (dry run): would retry");
        }
        RetryReport { planned: actions.len(), skipped: actions.len(), ..RetryReport::default() }
    }
}

impl CycleReport for RetryReport {
    fn planned(&self) -> usize {
        self.planned
    }
    fn outcomes(&self) -> Vec<(&'static str, usize)> {
        vec![("retried", self.retried), ("refused", self.refused), ("skipped", self.skipped)]
    }
    fn errors(&self) -> Vec<String> {
        self.errors.iter().map(|e| pop_domain::error::ErrorChain(e).to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use pop_domain::agenda::{OperationReport, ProgressReport};
    use pop_domain::{Agenda, AgendaInsight, Aggregate, Operation, Params, ProcessingState};
    use pop_projections::{Decoded, DomainEvent};
    use pop_store::Position;

    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_timestamp(secs, 0).unwrap()
    }

    /// An agenda that failed `failures` times (each claim at `10 * k`, failure at `10 * k + 5`
    /// except the last, which fails at `failed_at`), retried in between.
    fn history(id: &str, maximum: u32, failures: u32, failed_at: i64) -> Vec<AgendaCommand> {
        let mut params = Params::new();
        params.insert("maximumAttempts", maximum);
        let agenda = Agenda {
            id: id.to_string(),
            customer_id: "acme".to_string(),
            progress_id: Some(id.to_string()),
            operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
            params,
            ..Agenda::default()
        };
        let insight =
            AgendaInsight { resource_pool_id: "pool".to_string(), insight_id: "i".to_string() };
        let mut commands = vec![AgendaCommand::Submit { agenda, insight, now: t(1) }];
        for k in 1..=i64::from(failures) {
            let at = if k == i64::from(failures) { failed_at } else { 10 * k + 5 };
            commands.push(AgendaCommand::Queue { now: t(10 * k) });
            commands.push(AgendaCommand::Claim {
                holder: "w".to_string(),
                lease_id: format!("l{k}"),
                lease_expires: t(at + 300),
                now: t(10 * k),
            });
            commands.push(AgendaCommand::ReportProgress {
                holder: "w".to_string(),
                lease_id: None,
                lease_expires: t(at + 300),
                report: ProgressReport {
                    operations: vec![OperationReport {
                        name: "probe".to_string(),
                        state: ProcessingState::Complete,
                        message: Some("failed".to_string()),
                        ..OperationReport::default()
                    }],
                    ..ProgressReport::default()
                },
                now: t(at),
            });
            if k < i64::from(failures) {
                commands.push(AgendaCommand::Retry { now: t(at) });
            }
        }
        commands
    }

    /// The insight `i` the agendas are bound to, created or deleted at `position`.
    fn insight_event(models: &mut ReadModels, position: u64, deleted: bool) {
        use pop_domain::config::ConfigEvent;
        let object = pop_domain::model::Insight {
            id: "i".to_string(),
            customer_id: "acme".to_string(),
            resource_pool_id: "pool".to_string(),
            ..Default::default()
        };
        let event = if deleted {
            ConfigEvent::Deleted { object, time: t(0) }
        } else {
            ConfigEvent::Created { object, time: t(0) }
        };
        let decoded =
            Decoded::Event { id: "i".to_string(), event: DomainEvent::Insight(event), stored: 0 };
        models.apply(Position::from_sequence(position), &decoded, None).unwrap();
    }

    /// acme's customer object at `position` (`deleted`: its tombstone).
    fn customer_event(models: &mut ReadModels, position: u64, deleted: bool) {
        use pop_domain::config::ConfigEvent;
        let object = pop_domain::model::Customer {
            id: "acme".to_string(),
            customer_id: "acme".to_string(),
            ..Default::default()
        };
        let event = if deleted {
            ConfigEvent::Deleted { object, time: t(1) }
        } else {
            ConfigEvent::Created { object, time: t(0) }
        };
        let decoded = Decoded::Event {
            id: "acme".to_string(),
            event: DomainEvent::Customer(event),
            stored: 0,
        };
        models.apply(Position::from_sequence(position), &decoded, None).unwrap();
    }

    fn models(histories: Vec<(&str, Vec<AgendaCommand>)>) -> ReadModels {
        let mut models = ReadModels::new();
        customer_event(&mut models, 1, false);
        insight_event(&mut models, 2, false);
        let mut position = 2;
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

    fn ids(actions: &[RetryAction]) -> Vec<&str> {
        actions.iter().map(|a| a.agenda_id.as_str()).collect()
    }

    fn no_jitter() -> RetryConfig {
        RetryConfig {
            backoff: Backoff { jitter_percent: 0, ..Backoff::default() },
            ..RetryConfig::default()
        }
    }

    /// `history` whose last failure carries a diagnostic with `status_code`.
    fn marked(id: &str, status_code: &str) -> Vec<AgendaCommand> {
        let mut commands = history(id, 3, 1, 100);
        for command in commands.iter_mut().rev() {
            if let AgendaCommand::ReportProgress { report, .. } = command {
                report.operations[0].diagnostics = vec![pop_domain::DiagnosticEvent {
                    message: "no handler for operation type \"x\"".to_string(),
                    status_code: Some(status_code.to_string()),
                    ..Default::default()
                }];
                break;
            }
        }
        commands
    }

    #[test]
    fn a_failure_marked_not_retryable_is_not_retried_and_refuses_a_retry() {
        use pop_domain::model::status_code::NOT_RETRYABLE;
        let m = models(vec![
            ("deterministic", marked("deterministic", NOT_RETRYABLE)),
            ("errno", marked("errno", "ENOENT")),
        ]);
        assert_eq!(ids(&plan(t(100_000), &m, &no_jitter())), ["errno"]);
        // The rule is the domain's: a retry command is refused too.
        let mut state = AgendaState::default();
        for command in marked("deterministic", NOT_RETRYABLE) {
            for event in state.decide(&command).unwrap() {
                state.evolve(&event);
            }
        }
        let refused = state.decide(&AgendaCommand::Retry { now: t(200) }).unwrap_err();
        assert_eq!(refused, pop_domain::agenda::AgendaError::NotRetryable);
    }

    /// A due retry waits while its customer's live agendas hold the server's memory quota: a
    /// retry makes the agenda live again, its results included (review-s49c); and while its
    /// finished agendas hold past the retained quota (hostile50 H1).
    #[test]
    fn a_due_retry_waits_while_its_customer_is_at_its_memory_quota() {
        // "a" failed; "live" (acme's too) only submitted: it holds acme's live bytes.
        let live = history("live", 3, 0, 0);
        let m = models(vec![("a", history("a", 3, 1, 100)), ("live", live)]);
        let held = m.agendas().live_bytes(&pop_projections::Visibility::from_ids(["acme"]));
        assert!(held > 0);
        let quota = |live_bytes, retained_bytes| RetryConfig {
            quotas: Some(MemoryQuotas { live_bytes, retained_bytes }),
            ..no_jitter()
        };
        assert!(plan(t(130), &m, &quota(held, u64::MAX)).is_empty(), "at the quota: waits");
        assert_eq!(ids(&plan(t(130), &m, &quota(held + 1, u64::MAX))), ["a"]);
        assert_eq!(ids(&plan(t(130), &m, &no_jitter())), ["a"], "not checked");
        // The finished agendas ("a", failed) hold the retained quota: waits too (hostile50 H1).
        let retained = m.agendas().retained_bytes(&pop_projections::Visibility::from_ids(["acme"]));
        assert!(retained > 0);
        assert!(plan(t(130), &m, &quota(held + 1, retained - 1)).is_empty(), "past it: waits");
        assert_eq!(ids(&plan(t(130), &m, &quota(held + 1, retained))), ["a"]);
    }

    /// A due retry of a deleted customer's agenda is not planned: retried, it was handed out
    /// again (review60 M1; the customer's delete is refused while these are to come, one
    /// racing it is caught here), nor once the customer's tombstone is reaped (review61 L1:
    /// asked of the tombstone alone, the retry ran again then).
    #[test]
    fn a_due_retry_of_a_deleted_customers_agenda_is_not_planned() {
        let mut m = models(vec![("a", history("a", 3, 1, 100))]);
        assert_eq!(ids(&plan(t(130), &m, &no_jitter())), ["a"]);
        customer_event(&mut m, 100, true);
        assert!(plan(t(130), &m, &no_jitter()).is_empty(), "its customer deleted");
        m.forget_stream(Position::from_sequence(101), "customer-acme");
        assert!(m.deleted_configs().is_empty(), "{:?}", m.deleted_configs());
        assert!(plan(t(130), &m, &no_jitter()).is_empty(), "its customer's tombstone reaped");
    }

    #[test]
    fn a_failed_agenda_is_due_exactly_when_its_backoff_ends() {
        // Failed once at 100: the first retry is due 30 s later.
        let m = models(vec![("a", history("a", 3, 1, 100))]);
        let config = no_jitter();
        assert!(plan(t(129), &m, &config).is_empty());
        assert_eq!(ids(&plan(t(130), &m, &config)), ["a"]);
        let action = &plan(t(130), &m, &config)[0];
        assert_eq!(
            (action.attempts_completed, action.maximum_attempts, action.due),
            (1, 3, t(130))
        );
    }

    #[test]
    fn the_backoff_grows_per_attempt_up_to_its_maximum() {
        let b = Backoff { jitter_percent: 0, ..Backoff::default() };
        let secs = |n| b.delay("a", n).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(4)], [30, 60, 120, 240]);
        assert_eq!(secs(7), 1_800, "capped at 30 min");
        assert_eq!(secs(u32::MAX), 1_800, "no overflow");
        // Second failure at 200: due 60 s later.
        let m = models(vec![("a", history("a", 5, 2, 200))]);
        assert!(plan(t(259), &m, &no_jitter()).is_empty());
        assert_eq!(ids(&plan(t(260), &m, &no_jitter())), ["a"]);
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_spreads_agendas() {
        let b = Backoff::default();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..50 {
            let id = format!("agenda-{i}");
            let d = b.delay(&id, 1);
            assert_eq!(d, b.delay(&id, 1), "same inputs, same delay");
            assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(36), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "agendas that failed together spread out: {seen:?}");
        let big = Backoff { jitter_percent: 100, ..Backoff::default() };
        assert!(big.delay("x", 20) <= big.max, "jitter never exceeds the maximum");
    }

    #[test]
    fn exhausted_cancelled_and_succeeded_agendas_are_not_retried() {
        // Three failures of three attempts: nothing left.
        let exhausted = history("exhausted", 3, 3, 100);
        let mut cancelled = history("cancelled", 3, 1, 100);
        cancelled.truncate(1);
        cancelled.push(AgendaCommand::Cancel { reason: None, now: t(50) });
        let m = models(vec![
            ("exhausted", exhausted),
            ("cancelled", cancelled),
            ("retryable", history("retryable", 3, 2, 100)),
        ]);
        assert_eq!(ids(&plan(t(100_000), &m, &no_jitter())), ["retryable"]);
    }

    #[test]
    fn twenty_attempts_is_the_bound() {
        let m = models(vec![("a", history("a", 20, 19, 100))]);
        assert_eq!(plan(t(100_000), &m, &no_jitter())[0].maximum_attempts, 20);
    }

    #[test]
    fn the_batch_takes_the_earliest_due_first() {
        let m = models(vec![
            ("late", history("late", 3, 1, 500)),
            ("early", history("early", 3, 1, 100)),
            ("mid", history("mid", 3, 1, 300)),
        ]);
        let config = {
            let mut c = no_jitter();
            c.cadence.batch_size = 2;
            c
        };
        assert_eq!(ids(&plan(t(10_000), &m, &config)), ["early", "mid"]);
        assert_eq!(plan(t(10_000), &m, &config), plan(t(10_000), &m, &config));
    }

    #[test]
    fn the_memo_skips_exhausted_agendas_until_they_change_and_plans_the_same() {
        let m = models(vec![
            ("exhausted", history("exhausted", 1, 1, 100)),
            ("retryable", history("retryable", 3, 1, 100)),
        ]);
        let mut memo = ExhaustedMemo::default();
        let config = no_jitter();
        for _ in 0..3 {
            let with = plan_with(t(10_000), &m, &config, &mut memo);
            assert_eq!(with, plan(t(10_000), &m, &config));
            assert_eq!(ids(&with), ["retryable"]);
            assert_eq!(memo.seen.keys().collect::<Vec<_>>(), ["exhausted"]);
        }
    }

    #[test]
    fn no_backoff_retries_at_once_like_pop() {
        let m = models(vec![("a", history("a", 3, 1, 100))]);
        let config = RetryConfig { backoff: Backoff::none(), ..RetryConfig::default() };
        assert_eq!(ids(&plan(t(100), &m, &config)), ["a"]);
    }

    /// An agenda whose insight was deleted is not retried: it would wait for good, bound to an
    /// insight that no longer exists (popclient26, auditor33).
    #[test]
    fn an_agenda_whose_insight_was_deleted_is_not_retried() {
        let config = RetryConfig::default();
        let mut m = models(vec![("a", history("a", 3, 1, 100))]);
        let due = t(100_000);
        assert_eq!(ids(&plan(due, &m, &config)), ["a"]);
        insight_event(&mut m, 1_000, true);
        assert!(plan(due, &m, &config).is_empty());
    }
}
