//! Shared helpers for the projection tests and the rebuild benchmark: a real SQLite store in a
//! temporary directory, commands decided by the domain and appended with the stream's
//! expected version (what `pop_store::Commands` will do), fixed times, and agenda builders.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use futures::future::try_join_all;
use pop_domain::agenda::{
    AgendaCommand, AgendaEvent, AgendaState, OperationReport, ProgressReport, RerunFlags,
};
use pop_domain::config::{ConfigAggregate, ConfigCommand, ConfigObject};
use pop_domain::{
    Agenda, AgendaInsight, Aggregate, Customer, EventCodec, Insight, Operation, Params,
    ProcessingState, ResourcePool, Timestamp,
};
use pop_store::{
    Direction, Durability, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position,
    SqliteOptions, SqliteStore, fixed_clock,
};
use serde_json::{Value, json};
use uuid::Uuid;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Fallible<T> = Result<T, Error>;

/// `secs` seconds after a fixed instant (2025-01-15 10:00 UTC).
pub fn t(secs: i64) -> Timestamp {
    Utc.timestamp_millis_opt(1_736_935_200_000 + secs * 1000).single().unwrap_or_default()
}

/// A SQLite store in its own temporary directory (removed on drop).
pub struct Log {
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
}

impl Log {
    pub async fn open() -> Fallible<Log> {
        let dir = tempfile::tempdir()?;
        // NORMAL: tests and the benchmark need speed, not power-loss durability.
        let options = SqliteOptions {
            durability: Durability::Normal,
            clock: fixed_clock(t(0)),
            min_free_bytes: 0,
            chain_unchained: false,
            accept_wal_damage: false,
        };
        let store = Arc::new(SqliteStore::open(dir.path().join("pop.db"), options).await?);
        Ok(Log { store, dir })
    }

    pub fn dyn_store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// Decides `command` against the stream's current state and appends the events with the
    /// stream's version as the expectation. Returns the position of the last event.
    pub async fn execute<A>(&self, id: &str, command: &A::Command) -> Fallible<Position>
    where
        A: Aggregate,
    {
        let stream = format!("{}-{id}", A::CATEGORY);
        let stored = self.store.read_stream(&stream, 0, 10_000, Direction::Forwards).await?;
        let mut state = A::default();
        for e in &stored {
            state.evolve(&A::Event::decode(&e.event_type, e.schema_version, &e.data)?);
        }
        let events = state.decide(command)?;
        let expected = match stored.last() {
            Some(e) => ExpectedVersion::Exact(e.version),
            None => ExpectedVersion::NoStream,
        };
        let customer = customer_of_stream(&stored).unwrap_or_else(|| "unknown".to_string());
        append(&*self.store, &stream, expected, &events, &customer).await
    }

    pub async fn agenda(&self, id: &str, command: AgendaCommand) -> Fallible<Position> {
        self.execute::<AgendaState>(id, &command).await
    }

    pub async fn config<T: ConfigObject>(&self, command: ConfigCommand<T>) -> Fallible<Position> {
        let id = match &command {
            ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } => {
                object.id().to_string()
            }
            ConfigCommand::Delete { id, .. } => id.clone(),
        };
        self.execute::<ConfigAggregate<T>>(&id, &command).await
    }

    /// Appends raw bytes (for events the read side does not know, or corrupt ones).
    pub async fn raw(
        &self,
        stream: &str,
        event_type: &str,
        version: u32,
        data: &[u8],
    ) -> Fallible<Position> {
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.to_string(),
            schema_version: version,
            data: data.to_vec(),
            metadata: Vec::new(),
        };
        Ok(self.store.append(stream, ExpectedVersion::Any, vec![event]).await?.position)
    }
}

fn customer_of_stream(stored: &[pop_store::RecordedEvent]) -> Option<String> {
    stored
        .first()
        .and_then(|e| EventMetadata::from_json(&e.metadata).ok())
        .and_then(|m| m.customer_id)
}

/// Appends domain events with their metadata.
pub async fn append<E: EventCodec>(
    store: &dyn EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: &[E],
    customer: &str,
) -> Fallible<Position> {
    let metadata = EventMetadata {
        customer_id: Some(customer.to_string()),
        cid: Some("test".to_string()),
        ..EventMetadata::default()
    }
    .to_json()?;
    let new = NewEvent::encode_all(events, &metadata)?;
    Ok(store.append(stream, expected, new).await?.position)
}

// ---- objects --------------------------------------------------------------------------------

pub fn params(v: Value) -> Params {
    serde_json::from_value(v).unwrap_or_default()
}

pub fn op(name: &str, payload: Value, op_params: Value) -> Operation {
    Operation {
        name: name.to_string(),
        op_type: "shell".to_string(),
        id: None,
        payload: payload.into(),
        params: params(op_params),
    }
}

/// An agenda of independent operations `names` of `customer`, linked by `link`.
pub fn agenda(id: &str, customer: &str, link: Option<&str>, names: &[&str]) -> Agenda {
    Agenda {
        id: id.to_string(),
        customer_id: customer.to_string(),
        title: Some(format!("agenda {id}")),
        progress_id: Some(format!("p{id}")),
        link_id: link.map(str::to_string),
        operations: names
            .iter()
            .map(|n| op(n, json!({"cmd": format!("run {n}")}), json!({})))
            .collect(),
        params: params(json!({"externalId": format!("ext-{id}")})),
        ..Agenda::default()
    }
}

pub fn bound(insight: &str) -> AgendaInsight {
    AgendaInsight { resource_pool_id: "pool-1".to_string(), insight_id: insight.to_string() }
}

pub fn customer(id: &str) -> Customer {
    Customer {
        id: id.to_string(),
        customer_id: id.to_string(),
        title: format!("Customer {id}"),
        resource_pool_id: Some("pool-1".to_string()),
        ..Customer::default()
    }
}

pub fn pool(id: &str, owner: &str) -> ResourcePool {
    ResourcePool {
        id: id.to_string(),
        customer_id: owner.to_string(),
        title: Some(id.to_string()),
        ..ResourcePool::default()
    }
}

pub fn insight(id: &str, owner: &str, pool: &str) -> Insight {
    Insight {
        id: id.to_string(),
        customer_id: owner.to_string(),
        title: format!("Insight {id}"),
        resource_pool_id: pool.to_string(),
        queue_size: 10,
        ..Insight::default()
    }
}

pub fn create<T>(object: T, at: i64) -> ConfigCommand<T> {
    ConfigCommand::Create { object, now: t(at), cid: format!("cid-{at}") }
}
pub fn update<T>(object: T, at: i64) -> ConfigCommand<T> {
    ConfigCommand::Update { object, now: t(at), cid: format!("cid-{at}") }
}
pub fn delete<T>(id: &str, at: i64) -> ConfigCommand<T> {
    ConfigCommand::Delete { id: id.to_string(), now: t(at), cid: format!("cid-{at}") }
}

// ---- agenda commands --------------------------------------------------------------------------

pub fn submit(agenda: Agenda, insight: &str, at: i64) -> AgendaCommand {
    AgendaCommand::Submit { agenda, insight: bound(insight), now: t(at) }
}
pub fn queue(at: i64) -> AgendaCommand {
    AgendaCommand::Queue { now: t(at) }
}
pub fn claim(holder: &str, at: i64) -> AgendaCommand {
    AgendaCommand::Claim {
        holder: holder.to_string(),
        lease_id: format!("lease-{at}"),
        lease_expires: t(at + 300),
        now: t(at),
    }
}
pub fn report(holder: &str, at: i64, operations: Vec<OperationReport>) -> AgendaCommand {
    AgendaCommand::ReportProgress {
        holder: holder.to_string(),
        lease_id: None,
        lease_expires: t(at + 300),
        report: ProgressReport { operations, ..ProgressReport::default() },
        now: t(at),
    }
}
pub fn cancel(at: i64) -> AgendaCommand {
    AgendaCommand::Cancel { reason: Some("asked".to_string()), now: t(at) }
}
pub fn rerun(at: i64) -> AgendaCommand {
    AgendaCommand::Rerun { flags: RerunFlags::default(), now: t(at) }
}
pub fn reclaim(at: i64) -> AgendaCommand {
    AgendaCommand::Reclaim { now: t(at) }
}
pub fn executing(name: &str, percent: f64) -> OperationReport {
    OperationReport {
        name: name.to_string(),
        state: ProcessingState::Executing,
        percent: Some(percent),
        ..OperationReport::default()
    }
}
pub fn succeeded(name: &str) -> OperationReport {
    OperationReport {
        name: name.to_string(),
        state: ProcessingState::Complete,
        message: Some("succeeded".to_string()),
        result_payload: Some(json!({"out": format!("{name} done"), "size": 1024})),
        ..OperationReport::default()
    }
}
pub fn failed(name: &str) -> OperationReport {
    OperationReport {
        name: name.to_string(),
        state: ProcessingState::Complete,
        message: Some("failed".to_string()),
        diagnostics: vec![pop_domain::DiagnosticEvent {
            message: format!("{name} exited with 1"),
            status_code: Some("1".to_string()),
            ..Default::default()
        }],
        ..OperationReport::default()
    }
}

/// A realistic successful life for an agenda with operations `names`, starting at `at`:
/// queue, claim, then per operation an executing report at 50 % and a succeeded one (the last
/// completes the agenda).
pub fn lifecycle(names: &[&str], at: i64) -> Vec<AgendaCommand> {
    let mut commands = vec![queue(at + 1), claim("worker-1", at + 2)];
    let mut now = at + 3;
    for name in names {
        commands.push(report("worker-1", now, vec![executing(name, 50.0)]));
        commands.push(report("worker-1", now + 1, vec![succeeded(name)]));
        now += 2;
    }
    commands
}

/// Decides a whole history in memory (the events `execute` would append one by one).
pub fn decide_all(commands: &[AgendaCommand]) -> Fallible<Vec<Vec<AgendaEvent>>> {
    let mut state = AgendaState::default();
    let mut out = Vec::new();
    for command in commands {
        let events = state.decide(command)?;
        for e in &events {
            state.evolve(e);
        }
        out.push(events);
    }
    Ok(out)
}

/// Writes `count` agendas of five operations through their whole lifecycle (or, unless
/// `finish`, up to the last operation's EXECUTING report, so they stay live), interleaved the
/// way a busy server writes them (every agenda's first step, then every agenda's second…),
/// with `concurrency` appenders so the store group-commits. Returns the number of events.
pub async fn write_agendas(
    log: &Log,
    count: usize,
    customers: usize,
    concurrency: usize,
    finish: bool,
) -> Fallible<u64> {
    write_agendas_keyed(log, count, customers, concurrency, finish, false).await
}

/// [`write_agendas`], with the streams keyed as pop keys them (`agenda-<customer>/<id>`,
/// `pop_domain::agenda::key`) when `scoped`, else by the id alone (`agenda-<id>`, as older
/// builds did and the rebuild bench's figures always were).
pub async fn write_agendas_keyed(
    log: &Log,
    count: usize,
    customers: usize,
    concurrency: usize,
    finish: bool,
    scoped: bool,
) -> Fallible<u64> {
    const OPS: [&str; 5] = ["fetch", "probe", "transcode", "package", "publish"];
    let mut histories = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{i:08}");
        let customer = format!("customer-{}", i % customers.max(1));
        let link = format!("batch-{}", i / 10);
        let mut commands =
            vec![submit(agenda(&id, &customer, Some(&link), &OPS), "insight-1", i as i64)];
        commands.extend(lifecycle(&OPS, i as i64));
        if !finish {
            commands.pop();
        }
        histories.push((id, customer, decide_all(&commands)?));
    }
    let steps = histories.iter().map(|(_, _, h)| h.len()).max().unwrap_or(0);
    let mut written = 0u64;
    let mut versions = vec![None::<u64>; count];
    for step in 0..steps {
        for chunk in (0..count).collect::<Vec<_>>().chunks(concurrency.max(1)) {
            let appends = chunk.iter().filter_map(|&i| {
                let (id, customer, history) = &histories[i];
                let events = history.get(step)?;
                let expected =
                    versions[i].map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let store = log.store.clone();
                let stream = if scoped {
                    format!("agenda-{}", pop_domain::agenda::key(customer, id))
                } else {
                    format!("agenda-{id}")
                };
                Some(async move { append(&*store, &stream, expected, events, customer).await })
            });
            try_join_all(appends).await?;
            for &i in chunk {
                if let Some(events) = histories[i].2.get(step) {
                    written += events.len() as u64;
                    let next =
                        versions[i].map_or(events.len() as u64 - 1, |v| v + events.len() as u64);
                    versions[i] = Some(next);
                }
            }
        }
    }
    Ok(written)
}
