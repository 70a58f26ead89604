//! The DataObjectReaper (DOMAIN.md §9): COMPLETE agendas (with their AgendaProgress and
//! OperationProgress) whose `updatedTime` is at least the agenda `reapAge` old, `doNotRun`
//! agendas by the same rule (they are never scheduled, so they wait — `added`, or `pending`
//! after a rerun — for ever; pop retires them instead of keeping them without bound), and
//! deleted config objects (customers, resource pools, insights, templates) deleted at least
//! the config `reapAge` ago, leave every read model and the store, with an audit record kept.
//!
//! Store deletes are not events, so each reap is three steps, each idempotent:
//! 1. **Close the object with a domain event.** Agendas get `AgendaCommand::Reap`
//!    (`AgendaReaped`): the domain refuses it unless the agenda is COMPLETE (or a waiting
//!    `doNotRun` one) and not updated after the cutoff, and refuses every command after it,
//!    so the stream's version is final and no rerun can slip in between the decision and the
//!    delete. A deleted config object
//!    is already closed by its `…Deleted` event; the reaper re-reads the stream's last event
//!    and deletes only at exactly that version, so a re-creation in between wins.
//! 2. **Delete the stream** at that version (`delete_stream(Exact(v))`).
//! 3. **Record** `StreamReaped` in the day's audit stream `reaps-<YYYY-MM-DD>` (kind, id,
//!    customer, last version, `updatedTime`, reason, and the stream's hash chain head,
//!    recomputed from its events just before the delete; the actor `system:data-reaper` in
//!    the metadata). `pop verify` holds each tombstone to its recorded head, so a reaped
//!    stream verifies and a reaped stream's tombstone removed later does not. The projections forget the stream when they fold this record, so queries
//!    stop returning the object, and a rebuild — where the stream's events are gone — agrees.
//!
//! A crash between the steps leaves the object in the read models, so the next cycle plans it
//! again and finishes: a repeated `Reap` changes nothing, a stream already deleted skips to the
//! record, and the record is written once per day stream. The audit streams themselves are
//! never reaped; read them with `pop log --stream reaps-<day>` or the GraphQL `events` log.
//! Consequence of the store's tombstones: a reaped id can never be used again for the same kind.

use std::collections::BTreeMap;

use std::time::Duration;

use chrono::TimeDelta;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState};
use pop_domain::config::{ConfigEvent, ConfigObject};
use pop_domain::reap::{ReapCommand, ReapError, ReapLog, StreamReaped, day_id};
use pop_domain::{AgendaTemplate, Customer, EventCodec, Insight, ResourcePool, Timestamp};
use pop_projections::{Phase, ReadModels};
use pop_store::{
    Direction, EventMetadata, EventStore, ExecuteError, ExpectedVersion, RecordedEvent, StoreError,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::process::{Cadence, CycleReport, ProcessName, Services, TimedProcess};

/// POP's cycle: every 4 h. Reaping is housekeeping; nothing waits for it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// POP's age: 3 days after the last update.
pub const DEFAULT_REAP_AGE: Duration = Duration::from_secs(3 * 86_400);
/// Most objects reaped per cycle: each is three writes (an event, a delete, a record), so 2,000
/// per cycle is about 6,000 store operations — far from the store's limits, and a backlog
/// (say after the reaper was off for a week) drains over a few cycles, oldest first.
pub const DEFAULT_BATCH_SIZE: usize = 2_000;
/// Longest one cycle works; the rest of the batch waits for the next cycle.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(10 * 60);
/// The actor recorded in the metadata of the reaper's events.
pub const ACTOR: &str = "system:data-reaper";
/// The kind recorded for agendas (config objects use their `ConfigObject::KIND`).
pub const AGENDA_KIND: &str = "agenda";

/// How the data reaper runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataReaperConfig {
    /// Interval, batch size, run-time bound and dry run.
    pub cadence: Cadence,
    /// Age of a COMPLETE (or waiting `doNotRun`) agenda's `updatedTime` at which it is reaped.
    pub agenda_reap_age: Duration,
    /// Age of a deleted config object's deletion at which its stream is reaped.
    pub config_reap_age: Duration,
    /// Per config kind, by stream category (`customer`, `resourcepool`, `insight`,
    /// `template`): an age that replaces `config_reap_age` for that kind.
    pub config_reap_age_by_category: BTreeMap<String, Duration>,
    /// Whether the first cycle reaps nothing when the clock is further past the log's newest
    /// commit (as the store found it when it opened) than `agenda_reap_age`: a clock set
    /// wrong would otherwise delete finished agendas for good within seconds of a start
    /// (ops3am53: a clock 10 days ahead reaped 2,000 agendas 9 s after the start). The next
    /// cycle, one interval later, reaps as usual; the gap is said at WARN either way. On in
    /// `pop serve`; `pop reap data`, which an operator runs on purpose, only warns.
    pub hold_past_clock_gap: bool,
}

impl DataReaperConfig {
    /// The reap age of deleted config objects of stream category `category`.
    pub fn config_age(&self, category: &str) -> Duration {
        self.config_reap_age_by_category.get(category).copied().unwrap_or(self.config_reap_age)
    }
}

impl Default for DataReaperConfig {
    fn default() -> DataReaperConfig {
        DataReaperConfig {
            cadence: Cadence {
                interval: DEFAULT_INTERVAL,
                batch_size: DEFAULT_BATCH_SIZE,
                max_run_time: DEFAULT_MAX_RUN_TIME,
                dry_run: false,
            },
            agenda_reap_age: DEFAULT_REAP_AGE,
            config_reap_age: DEFAULT_REAP_AGE,
            config_reap_age_by_category: BTreeMap::new(),
            hold_past_clock_gap: false,
        }
    }
}

/// One object to reap, as the read model saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapAction {
    /// `agenda-<id>`, `customer-<id>`, …
    pub stream: String,
    /// [`AGENDA_KIND`] or a config kind (`customer`, `resource pool`, …).
    pub kind: &'static str,
    pub object_id: String,
    /// What commands address: an agenda's stream key (customer-scoped), a config object's id.
    pub key: String,
    pub customer_id: String,
    pub updated_time: Option<Timestamp>,
    /// Objects updated after this instant are not reaped (`now - reapAge`).
    pub cutoff: Timestamp,
    pub reason: String,
}

impl ReapAction {
    fn is_agenda(&self) -> bool {
        self.kind == AGENDA_KIND
    }
}

/// What one [`execute`] did.
#[derive(Debug, Default)]
pub struct DataReport {
    pub planned: usize,
    /// Agendas deleted and recorded.
    pub agendas: usize,
    /// Deleted config objects deleted and recorded.
    pub configs: usize,
    /// Refused: the object changed (rerun, re-created) after the plan.
    pub refused: usize,
    /// Not attempted: run time used up (or dry run).
    pub skipped: usize,
    pub errors: Vec<DataReapError>,
}

/// A reap that failed for a reason other than the object having moved on.
#[derive(Debug, thiserror::Error)]
pub enum DataReapError {
    #[error("closing agenda {agenda_id:?} before reaping it failed")]
    Close {
        agenda_id: String,
        #[source]
        source: ExecuteError<AgendaError>,
    },
    #[error("reading or deleting stream {stream:?} failed")]
    Store {
        stream: String,
        #[source]
        source: StoreError,
    },
    #[error("recording the reap of {stream:?} failed")]
    Record {
        stream: String,
        #[source]
        source: ExecuteError<ReapError>,
    },
}

fn cutoff(now: Timestamp, age: Duration) -> Timestamp {
    // An age past the calendar reaps nothing (chrono's subtraction would panic).
    TimeDelta::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// The objects to reap at `now`: COMPLETE agendas, and `doNotRun` ones waiting `added` or
/// `pending`, with `updatedTime <= now - agenda_reap_age`
/// and deleted config objects deleted at or before `now - config_reap_age` (an age exactly at
/// the bound is reaped), oldest first, at most `config.cadence.batch_size`. Pure.
pub fn plan(now: Timestamp, models: &ReadModels, config: &DataReaperConfig) -> Vec<ReapAction> {
    let mut found = Vec::new();
    let agenda_cutoff = cutoff(now, config.agenda_reap_age);
    let cutoff_ms = agenda_cutoff.timestamp_millis();
    let agendas = models.agendas();
    let phases = [
        Phase::Succeeded,
        Phase::Failed,
        Phase::Cancelled,
        Phase::Complete,
        Phase::Added,
        Phase::Pending,
    ];
    for phase in phases {
        let waiting = matches!(phase, Phase::Added | Phase::Pending);
        for entry in agendas.in_phase(phase) {
            if entry.updated_ms() > cutoff_ms || (waiting && !entry.is_do_not_run()) {
                continue;
            }
            let what = if waiting {
                format!("doNotRun agenda ({phase:?}), never scheduled,")
            } else {
                format!("COMPLETE agenda ({phase:?})")
            };
            found.push(ReapAction {
                stream: pop_domain::aggregate::stream_name(
                    pop_domain::agenda::CATEGORY,
                    entry.key(),
                ),
                kind: AGENDA_KIND,
                object_id: entry.id().to_string(),
                key: entry.key().to_string(),
                customer_id: entry.customer_id().to_string(),
                updated_time: Timestamp::from_timestamp_millis(entry.updated_ms()),
                cutoff: agenda_cutoff,
                reason: format!(
                    "{what} not updated for at least {} s (agenda reapAge)",
                    config.agenda_reap_age.as_secs()
                ),
            });
        }
    }
    for deleted in models.deleted_configs() {
        let category = deleted.stream.split_once('-').map(|(c, _)| c).unwrap_or_default();
        let age = config.config_age(category);
        let config_cutoff = cutoff(now, age);
        if deleted.updated_time.is_none_or(|u| u > config_cutoff) {
            continue;
        }
        found.push(ReapAction {
            stream: deleted.stream,
            kind: deleted.kind,
            key: deleted.id.clone(),
            object_id: deleted.id,
            customer_id: deleted.customer_id,
            updated_time: deleted.updated_time,
            cutoff: config_cutoff,
            reason: format!(
                "deleted {} for at least {} s (config reapAge)",
                deleted.kind,
                age.as_secs()
            ),
        });
    }
    found.sort_by(|a, b| (a.updated_time, &a.stream).cmp(&(b.updated_time, &b.stream)));
    crate::process::in_turns(found, config.cadence.batch_size, |a| &a.customer_id)
}

enum Outcome {
    Reaped,
    Refused,
}

/// Reaps each action in order (see the module docs for the three steps), starting no new one
/// after `deadline`. Idempotent.
pub async fn execute(
    services: &Services,
    now: Timestamp,
    actions: &[ReapAction],
    deadline: Option<Instant>,
) -> DataReport {
    let mut report = DataReport { planned: actions.len(), ..DataReport::default() };
    let mut started = 0;
    for action in actions {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        started += 1;
        match traced_reap(services, now, action).await {
            Ok(Outcome::Reaped) if action.is_agenda() => report.agendas += 1,
            Ok(Outcome::Reaped) => report.configs += 1,
            Ok(Outcome::Refused) => report.refused += 1,
            Err(e) => report.errors.push(e),
        }
    }
    report.skipped = actions.len() - started;
    report
}

fn metadata(action: &ReapAction) -> EventMetadata {
    EventMetadata {
        customer_id: Some(action.customer_id.clone()),
        cid: Some(uuid::Uuid::new_v4().to_string()),
        causation_id: Some(uuid::Uuid::new_v4()),
        actor: Some(ACTOR.to_string()),
        command: Some("reap".to_string()),
        traceparent: None,
        tracestate: None,
    }
}

/// [`reap`] in its span: an agenda's joins the agenda's trace like the other timed commands
/// (`crate::trace`); a config object's is a child of the pass.
async fn traced_reap(
    services: &Services,
    now: Timestamp,
    action: &ReapAction,
) -> Result<Outcome, DataReapError> {
    if action.is_agenda() {
        crate::trace::on_agenda(
            &services.commands,
            &action.key,
            "reap",
            reap(services, now, action),
        )
        .await
    } else {
        let span = tracing::info_span!(
            "config_reap",
            otel.name = "reap",
            stream = &*action.stream,
            kind = action.kind,
        );
        reap(services, now, action).instrument(span).await
    }
}

async fn reap(
    services: &Services,
    now: Timestamp,
    action: &ReapAction,
) -> Result<Outcome, DataReapError> {
    let store_error = |source| DataReapError::Store { stream: action.stream.clone(), source };
    // 1. Close: the version at which the stream is final (`None`: already deleted).
    let closed = if action.is_agenda() {
        close_agenda(services, now, action).await?
    } else {
        close_config(services.store.as_ref(), action).await.map_err(store_error)?
    };
    let mut head_hash = None;
    let last_version = match closed {
        Closed::Refused => return Ok(Outcome::Refused),
        Closed::AlreadyDeleted => None,
        Closed::At(version) => {
            // 2. Delete at exactly that version: the events hashed below are exactly the ones
            // deleted.
            head_hash = Some(
                head_of(services.store.as_ref(), &action.stream, version)
                    .await
                    .map_err(store_error)?,
            );
            match services
                .store
                .delete_stream(&action.stream, ExpectedVersion::Exact(version))
                .await
            {
                Ok(()) | Err(StoreError::StreamDeleted { .. }) => {}
                Err(StoreError::WrongExpectedVersion { .. }) => {
                    tracing::info!(
                        stream = &*action.stream,
                        "data reaper: the object changed; not reaped"
                    );
                    return Ok(Outcome::Refused);
                }
                Err(e) => return Err(store_error(e)),
            }
            Some(version)
        }
    };
    // 3. Record; the projections forget the stream when they fold it.
    let record = StreamReaped {
        time: now,
        stream: action.stream.clone(),
        kind: action.kind.to_string(),
        object_id: action.object_id.clone(),
        customer_id: action.customer_id.clone(),
        last_version,
        updated_time: action.updated_time,
        reason: action.reason.clone(),
        head_hash: head_hash.map(|h| pop_store::digest::hex(&h)),
    };
    services
        .commands
        .execute::<ReapLog>(&day_id(now), &metadata(action), &ReapCommand::Record { record })
        .await
        .map_err(|source| DataReapError::Record { stream: action.stream.clone(), source })?;
    tracing::info!(
        stream = &*action.stream,
        kind = action.kind,
        customer = &*action.customer_id,
        reason = &*action.reason,
        "data reaper: reaped"
    );
    Ok(Outcome::Reaped)
}

/// The hash chain head of `stream` through `version` (`pop_store::digest::stream_head`),
/// recomputed from its events: what the store keeps on the tombstone, kept in the record too.
async fn head_of(
    store: &dyn EventStore,
    stream: &str,
    version: u64,
) -> Result<pop_store::digest::Hash, StoreError> {
    let mut events = Vec::new();
    while (events.len() as u64) <= version {
        let from = events.len() as u64;
        let batch = store
            .read_stream(stream, from, pop_store::limits::MAX_READ_BATCH, Direction::Forwards)
            .await?;
        if batch.is_empty() {
            break;
        }
        events.extend(batch.into_iter().filter(|e| e.version <= version));
    }
    Ok(pop_store::digest::stream_head(&events))
}

enum Closed {
    At(u64),
    AlreadyDeleted,
    Refused,
}

async fn close_agenda(
    services: &Services,
    now: Timestamp,
    action: &ReapAction,
) -> Result<Closed, DataReapError> {
    let command = AgendaCommand::Reap { reason: action.reason.clone(), cutoff: action.cutoff, now };
    match services.commands.execute::<AgendaState>(&action.key, &metadata(action), &command).await {
        Ok(done) => Ok(done.version.map_or(Closed::Refused, Closed::At)),
        Err(ExecuteError::Store(StoreError::StreamDeleted { .. })) => Ok(Closed::AlreadyDeleted),
        Err(ExecuteError::Refused(e)) => {
            tracing::info!(
                agenda = &*action.object_id,
                reason = &*e.to_string(),
                "data reaper: agenda moved on; not reaped"
            );
            Ok(Closed::Refused)
        }
        Err(ExecuteError::Conflict { .. }) => Ok(Closed::Refused),
        Err(source) => Err(DataReapError::Close { agenda_id: action.object_id.clone(), source }),
    }
}

/// A deleted config object is closed by its last event being its deletion, at or before the
/// cutoff.
async fn close_config(store: &dyn EventStore, action: &ReapAction) -> Result<Closed, StoreError> {
    let last = match store.read_stream(&action.stream, u64::MAX, 1, Direction::Backwards).await {
        Ok(events) => events.into_iter().next(),
        Err(StoreError::StreamDeleted { .. }) => return Ok(Closed::AlreadyDeleted),
        Err(e) => return Err(e),
    };
    let Some(last) = last else { return Ok(Closed::Refused) };
    let category = action.stream.split_once('-').map(|(c, _)| c).unwrap_or_default();
    let deleted_at = match category {
        c if c == Customer::CATEGORY => deleted_at::<Customer>(&last),
        c if c == ResourcePool::CATEGORY => deleted_at::<ResourcePool>(&last),
        c if c == Insight::CATEGORY => deleted_at::<Insight>(&last),
        c if c == AgendaTemplate::CATEGORY => deleted_at::<AgendaTemplate>(&last),
        _ => None,
    };
    Ok(match deleted_at {
        Some(at) if at <= action.cutoff => Closed::At(last.version),
        _ => Closed::Refused,
    })
}

fn deleted_at<T: ConfigObject>(event: &RecordedEvent) -> Option<Timestamp> {
    match ConfigEvent::<T>::decode(&event.event_type, event.schema_version, &event.data) {
        Ok(ConfigEvent::Deleted { time, .. }) => Some(time),
        _ => None,
    }
}

/// The data reaper as a [`TimedProcess`]: plans from the read models, closes and deletes
/// streams through the store.
#[derive(Debug)]
pub struct DataReaper {
    services: Services,
    config: DataReaperConfig,
    /// The log's newest commit time when the reaper was made (before the process's first
    /// command), for the first cycle's look at the clock; taken once looked at.
    newest_at_start: Option<Timestamp>,
    /// When the reaper was made: the look at the clock is for a first cycle soon after the
    /// start, not for one a standby runs when it takes the lead days later (review-s51b L3).
    made: Instant,
}

impl DataReaper {
    /// Made before anything commits in this process (`pop serve` makes it before its
    /// scheduler and API start), so the store's commit floor is the log's newest commit.
    pub fn new(services: Services, config: DataReaperConfig) -> DataReaper {
        let newest_at_start = services.store.commit_floor();
        DataReaper { services, config, newest_at_start, made: Instant::now() }
    }

    /// Whether this (first) cycle, at `now`, reaps nothing because the clock is further past
    /// the log's newest commit than the agenda reap age ([`DataReaperConfig::hold_past_clock_gap`]).
    fn holds_for_the_clock(&mut self, now: Timestamp) -> bool {
        let Some(newest) = self.newest_at_start.take() else { return false };
        if self.made.elapsed() > self.config.cadence.interval {
            return false;
        }
        let Ok(gap) = (now - newest).to_std() else { return false };
        if gap <= self.config.agenda_reap_age {
            return false;
        }
        let hold = self.config.hold_past_clock_gap;
        tracing::warn!(
            %now,
            newest_commit = %newest,
            gap_secs = gap.as_secs(),
            agenda_reap_age_secs = self.config.agenda_reap_age.as_secs(),
            "data reaper: the clock is further past the log's newest commit than the agenda \
             reap age; if the clock is wrong (NTP, a VM's clock), finished agendas would be \
             deleted too early, for good. {}",
            if hold {
                "This first cycle reaps nothing; the next runs one interval from now: fix the \
                 clock before then (or ignore this if nothing was written for that long)"
            } else {
                // `pop reap data --once`: it goes ahead (a quiet log past the reap age is
                // the common case), and says so (operator60 L7: "check the clock before
                // reaping", then it reaped 2,000 agendas).
                match self.config.cadence.dry_run {
                    true => "This dry run changes nothing; a run without --dry-run reaps anyway",
                    false => {
                        "This run reaps anyway: if the clock is wrong, stop it, fix the clock, \
                         and see what a run would do with --dry-run first"
                    }
                }
            }
        );
        hold
    }
}

#[async_trait::async_trait]
impl TimedProcess for DataReaper {
    type Action = ReapAction;
    type Report = DataReport;

    fn name(&self) -> ProcessName {
        ProcessName::Data
    }
    fn cadence(&self) -> Cadence {
        self.config.cadence
    }
    fn ready(&self) -> bool {
        self.services.projections.following()
    }
    async fn plan(&mut self, now: Timestamp) -> Result<Vec<ReapAction>, DataReport> {
        if self.holds_for_the_clock(now) {
            return Ok(Vec::new());
        }
        Ok(plan(now, &self.services.projections.read(), &self.config))
    }
    async fn execute(
        &mut self,
        now: Timestamp,
        actions: Vec<ReapAction>,
        deadline: Instant,
    ) -> DataReport {
        execute(&self.services, now, &actions, Some(deadline)).await
    }
    fn dry_run(&self, actions: &[ReapAction]) -> DataReport {
        for a in actions {
            tracing::info!(stream = &*a.stream, kind = a.kind, customer = &*a.customer_id, updated = ?a.updated_time, reason = &*a.reason, "data reaper (dry run): would reap");
        }
        DataReport { planned: actions.len(), skipped: actions.len(), ..DataReport::default() }
    }
}

impl CycleReport for DataReport {
    fn planned(&self) -> usize {
        self.planned
    }
    fn outcomes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("reaped_agendas", self.agendas),
            ("reaped_configs", self.configs),
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
    use pop_domain::config::{ConfigAggregate, ConfigCommand};
    use pop_domain::{Agenda, AgendaInsight, Aggregate, Operation, ProcessingState};
    use pop_projections::{Decoded, DomainEvent};
    use pop_store::Position;

    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_timestamp(secs, 0).unwrap()
    }

    const DAY: i64 = 86_400;

    /// `done` finished at `done_at`; `running` is EXECUTING (never reaped); `gone` is a customer
    /// deleted at `deleted_at`; `live` a customer never deleted.
    fn models(done_at: i64, deleted_at: i64) -> ReadModels {
        let mut models = ReadModels::new();
        let mut position = 0;
        let mut apply = |models: &mut ReadModels, id: &str, event: DomainEvent| {
            position += 1;
            let decoded = Decoded::Event { id: id.to_string(), event, stored: 0 };
            models.apply(Position::from_sequence(position), &decoded, None).unwrap();
        };
        for (id, finish) in [("done", true), ("running", false)] {
            let agenda = Agenda {
                id: id.to_string(),
                customer_id: "acme".to_string(),
                progress_id: Some(id.to_string()),
                operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
                ..Agenda::default()
            };
            let insight =
                AgendaInsight { resource_pool_id: "p".to_string(), insight_id: "i".to_string() };
            let state = if finish { ProcessingState::Complete } else { ProcessingState::Executing };
            let commands = vec![
                AgendaCommand::Submit { agenda, insight, now: t(1) },
                AgendaCommand::Queue { now: t(2) },
                AgendaCommand::Claim {
                    holder: "w".to_string(),
                    lease_id: "l".to_string(),
                    lease_expires: t(done_at + 300),
                    now: t(3),
                },
                AgendaCommand::ReportProgress {
                    holder: "w".to_string(),
                    lease_id: None,
                    lease_expires: t(done_at + 300),
                    report: ProgressReport {
                        operations: vec![OperationReport {
                            name: "probe".to_string(),
                            state,
                            message: Some("succeeded".to_string()),
                            ..OperationReport::default()
                        }],
                        ..ProgressReport::default()
                    },
                    now: t(done_at),
                },
            ];
            let mut s = AgendaState::default();
            for c in &commands {
                for e in s.decide(c).unwrap() {
                    s.evolve(&e);
                    apply(&mut models, id, DomainEvent::Agenda(e));
                }
            }
        }
        for (id, delete) in [("gone", true), ("live", false)] {
            let mut s = ConfigAggregate::<Customer>::default();
            let customer = Customer {
                id: id.to_string(),
                customer_id: id.to_string(),
                title: id.to_string(),
                ..Customer::default()
            };
            let mut commands =
                vec![ConfigCommand::Create { object: customer, now: t(1), cid: "c".to_string() }];
            if delete {
                commands.push(ConfigCommand::Delete {
                    id: id.to_string(),
                    now: t(deleted_at),
                    cid: "c".to_string(),
                });
            }
            for c in &commands {
                for e in s.decide(c).unwrap() {
                    s.evolve(&e);
                    apply(&mut models, id, DomainEvent::Customer(e));
                }
            }
        }
        models
    }

    fn streams(actions: &[ReapAction]) -> Vec<&str> {
        actions.iter().map(|a| a.stream.as_str()).collect()
    }

    #[test]
    fn an_age_exactly_at_the_bound_is_reaped_a_newer_one_is_not() {
        let m = models(100, 200);
        let config = DataReaperConfig::default();
        assert!(plan(t(100 + 3 * DAY - 1), &m, &config).is_empty());
        assert_eq!(streams(&plan(t(100 + 3 * DAY), &m, &config)), ["agenda-done"]);
        assert_eq!(streams(&plan(t(200 + 3 * DAY - 1), &m, &config)), ["agenda-done"]);
        assert_eq!(
            streams(&plan(t(200 + 3 * DAY), &m, &config)),
            ["agenda-done", "customer-gone"],
            "oldest first; live objects and unfinished agendas never"
        );
    }

    #[test]
    fn ages_are_configured_per_kind() {
        let m = models(100, 200);
        let config = DataReaperConfig {
            agenda_reap_age: Duration::from_secs(10 * 86_400),
            config_reap_age: Duration::from_secs(60),
            ..DataReaperConfig::default()
        };
        assert_eq!(streams(&plan(t(260), &m, &config)), ["customer-gone"]);
        let action = &plan(t(260), &m, &config)[0];
        assert_eq!((action.kind, action.customer_id.as_str()), ("customer", "gone"));
        assert_eq!((action.updated_time, action.cutoff), (Some(t(200)), t(200)));
        // A per-kind age replaces the config age for that kind only.
        let mut by_kind = config.clone();
        by_kind.config_reap_age_by_category.insert("customer".to_string(), Duration::from_secs(61));
        assert!(plan(t(260), &m, &by_kind).is_empty());
        assert_eq!(streams(&plan(t(261), &m, &by_kind)), ["customer-gone"]);
    }

    #[test]
    fn the_batch_takes_the_oldest_first_and_plans_are_pure() {
        let m = models(500, 200);
        let config = {
            let mut c = DataReaperConfig::default();
            c.cadence.batch_size = 1;
            c
        };
        let now = t(10 * DAY);
        assert_eq!(streams(&plan(now, &m, &config)), ["customer-gone"]);
        assert_eq!(plan(now, &m, &config), plan(now, &models(500, 200), &config));
    }

    #[test]
    fn a_reap_record_makes_the_read_models_forget_the_stream() {
        let mut m = models(100, 200);
        assert!(m.agenda_entry("done").is_some());
        let record = StreamReaped {
            time: t(5 * DAY),
            stream: "agenda-done".to_string(),
            kind: AGENDA_KIND.to_string(),
            object_id: "done".to_string(),
            customer_id: "acme".to_string(),
            last_version: Some(4),
            updated_time: Some(t(100)),
            reason: "old".to_string(),
            head_hash: None,
        };
        let decoded = Decoded::Event {
            id: day_id(t(5 * DAY)),
            event: DomainEvent::Reap(pop_domain::reap::ReapEvent::StreamReaped(record)),
            stored: 0,
        };
        let mut changes = Vec::new();
        m.apply(Position::from_sequence(1_000), &decoded, Some(&mut changes)).unwrap();
        assert!(m.agenda_entry("done").is_none());
        assert!(m.agenda_progress("done", &pop_projections::Visibility::All).unwrap().is_none());
        assert_eq!(changes.len(), 1);
        assert!(changes[0].removed);
    }
}
