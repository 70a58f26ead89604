//! The DataObjectReaper against a real embedded store and the real projections runner: an old
//! finished agenda and an old deleted customer leave the read models and the store (their
//! streams read as deleted), a record of each stays in the day's `reaps-<day>` stream, a dry
//! run changes nothing, newer objects stay, and a repeat finds nothing; a reap interrupted after
//! the delete is finished by the next cycle, and a rerun or re-creation after the plan wins.
//! Each record keeps the reaped stream's head hash: the store still verifies after the reap,
//! and a reaped stream's tombstone removed or altered afterwards is found.
//! Times are fixed instants; waits are bounded, never asserted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pop_domain::agenda::{AgendaCommand, AgendaState, OperationReport, ProgressReport};
use pop_domain::config::{ConfigAggregate, ConfigCommand};
use pop_domain::reap::{ReapEvent, day_id};
use pop_domain::{
    Agenda, AgendaInsight, Customer, EventCodec, Operation, ProcessingState, Timestamp,
};
use pop_projections::{Projections, Runner, RunnerConfig};
use pop_reapers::Services;
use pop_reapers::data::{DataReaper, DataReaperConfig, DataReport};
use pop_reapers::process;
use pop_store::{
    Commands, Direction, EventMetadata, EventStore, ProcessLeadership, SqliteOptions, SqliteStore,
    StoreError,
};

const WAIT: Duration = Duration::from_secs(20);
const DAY: i64 = 86_400;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_timestamp(secs, 0).unwrap()
}

struct Fixture {
    services: Services,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(dir.path().join("pop.db"), SqliteOptions::default()).await.unwrap(),
    );
    fixture_on(store, dir).await
}

async fn fixture_on(store: Arc<dyn EventStore>, dir: tempfile::TempDir) -> Fixture {
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    let services = Services {
        commands: Arc::new(Commands::new(Arc::clone(&store))),
        store,
        projections,
        leadership: Arc::new(ProcessLeadership::default()),
    };
    Fixture { services, _dir: dir }
}

impl Fixture {
    fn projections(&self) -> &Projections {
        &self.services.projections
    }

    /// Submits `id` and has it succeed at `done_at`.
    async fn finished(&self, id: &str, done_at: i64) {
        let agenda = Agenda {
            id: id.to_string(),
            customer_id: "acme".to_string(),
            progress_id: Some(id.to_string()),
            operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
            ..Agenda::default()
        };
        let insight =
            AgendaInsight { resource_pool_id: "p".to_string(), insight_id: "i".to_string() };
        let commands = [
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
                        state: ProcessingState::Complete,
                        message: Some("succeeded".to_string()),
                        ..OperationReport::default()
                    }],
                    ..ProgressReport::default()
                },
                now: t(done_at),
            },
        ];
        for c in &commands {
            let done = self
                .services
                .commands
                .execute::<AgendaState>(id, &EventMetadata::default(), c)
                .await
                .unwrap();
            self.caught_up(done.position).await;
        }
    }

    /// Submits `id` at `at`: WAITING/added for ever unless `do_not_run` is false.
    async fn waiting(&self, id: &str, at: i64, do_not_run: bool) {
        let mut agenda = Agenda {
            id: id.to_string(),
            customer_id: "acme".to_string(),
            progress_id: Some(id.to_string()),
            operations: vec![Operation { name: "probe".to_string(), ..Operation::default() }],
            ..Agenda::default()
        };
        if do_not_run {
            agenda.params.insert("doNotRun", "true");
        }
        let insight =
            AgendaInsight { resource_pool_id: "p".to_string(), insight_id: "i".to_string() };
        let done = self
            .services
            .commands
            .execute::<AgendaState>(
                id,
                &EventMetadata::default(),
                &AgendaCommand::Submit { agenda, insight, now: t(at) },
            )
            .await
            .unwrap();
        self.caught_up(done.position).await;
    }

    async fn deleted_customer(&self, id: &str, deleted_at: i64) {
        let customer = Customer {
            id: id.to_string(),
            customer_id: id.to_string(),
            title: id.to_string(),
            ..Customer::default()
        };
        let commands = [
            ConfigCommand::Create { object: customer, now: t(1), cid: "c".to_string() },
            ConfigCommand::Delete { id: id.to_string(), now: t(deleted_at), cid: "c".to_string() },
        ];
        for c in &commands {
            let done = self
                .services
                .commands
                .execute::<ConfigAggregate<Customer>>(id, &EventMetadata::default(), c)
                .await
                .unwrap();
            self.caught_up(done.position).await;
        }
    }

    async fn caught_up(&self, position: Option<pop_store::Position>) {
        if let Some(p) = position {
            self.projections().wait_for(p, WAIT).await.unwrap();
        }
    }

    async fn settle(&self) {
        let head = self.services.store.head().await.unwrap();
        self.projections().wait_for(head, WAIT).await.unwrap();
    }
}

/// One data reaper cycle at `now` (plan, then execute unless a dry run).
async fn run_once(services: &Services, now: Timestamp, config: &DataReaperConfig) -> DataReport {
    process::cycle(&mut DataReaper::new(services.clone(), config.clone()), now).await
}

#[tokio::test]
async fn old_objects_leave_the_read_models_and_the_store_and_a_record_stays() {
    let f = fixture().await;
    f.finished("old", 100).await;
    f.finished("new", 5 * DAY).await;
    f.deleted_customer("gone", 200).await;
    let now = t(4 * DAY);

    let dry = {
        let mut c = DataReaperConfig::default();
        c.cadence.dry_run = true;
        c
    };
    let report = run_once(&f.services, now, &dry).await;
    assert_eq!((report.planned, report.skipped, report.agendas), (2, 2, 0));
    assert!(f.projections().read().agenda_entry("old").is_some());

    let config = DataReaperConfig::default();
    let report = run_once(&f.services, now, &config).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.planned, report.agendas, report.configs), (2, 1, 1));
    f.settle().await;
    {
        let models = f.projections().read();
        assert!(models.agenda_entry("old").is_none());
        assert!(
            models.agenda_progress("old", &pop_projections::Visibility::All).unwrap().is_none()
        );
        assert!(models.agenda_entry("new").is_some(), "newer agendas stay");
        assert!(models.deleted_configs().is_empty());
    }
    for stream in ["agenda-old", "customer-gone"] {
        let read = f.services.store.read_stream(stream, 0, 10, Direction::Forwards).await;
        assert!(matches!(read, Err(StoreError::StreamDeleted { .. })), "{stream}: {read:?}");
    }
    let audit = format!("reaps-{}", day_id(now));
    let records = f.services.store.read_stream(&audit, 0, 10, Direction::Forwards).await.unwrap();
    let reaped: Vec<(String, String, Option<u64>)> = records
        .iter()
        .map(|e| {
            let ReapEvent::StreamReaped(r) =
                ReapEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap();
            assert!(r.reason.contains("reapAge"), "{}", r.reason);
            (r.stream, r.customer_id, r.last_version)
        })
        .collect();
    // The agenda's last version is its AgendaReaped (submit, queue, claim, report, complete,
    // reaped: 0..=5); the customer's its deletion.
    assert_eq!(
        reaped,
        [
            ("agenda-old".to_string(), "acme".to_string(), Some(5)),
            ("customer-gone".to_string(), "gone".to_string(), Some(1)),
        ]
    );
    let metadata: serde_json::Value = serde_json::from_slice(&records[0].metadata).unwrap();
    assert_eq!(metadata["actor"], "system:data-reaper", "{metadata}");
    assert_eq!(metadata["command"], "reap", "{metadata}");
    assert!(metadata["cid"].is_string() && metadata["causationId"].is_string(), "{metadata}");

    // Nothing left to do; a rebuild from the log agrees with the incremental models.
    let report = run_once(&f.services, now, &config).await;
    assert_eq!((report.planned, report.errors.len()), (0, 0));
    let rebuilt = pop_projections::rebuild(Arc::clone(&f.services.store), |_| {}).await.unwrap();
    assert!(rebuilt.agenda_entry("old").is_none());
    assert_eq!(
        rebuilt.fingerprint().unwrap(),
        f.projections().read().fingerprint().unwrap(),
        "rebuild equals the incremental read models"
    );
}

#[tokio::test]
async fn do_not_run_agendas_are_retired_by_age_like_complete_ones() {
    let f = fixture().await;
    // Records (`doNotRun`) are never scheduled, so they stay WAITING/added for ever: the
    // reaper retires them by the same agenda reapAge rule as finished agendas.
    f.waiting("old-record", 100, true).await;
    f.waiting("new-record", 2 * DAY, true).await;
    f.waiting("old-work", 100, false).await;
    let now = t(100 + 3 * DAY);
    let report = run_once(&f.services, now, &DataReaperConfig::default()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.planned, report.agendas), (1, 1));
    f.settle().await;
    {
        let models = f.projections().read();
        assert!(models.agenda_entry("old-record").is_none());
        assert!(models.agenda_entry("new-record").is_some(), "younger than reapAge");
        assert!(models.agenda_entry("old-work").is_some(), "waiting work is never reaped");
    }
    let read = f.services.store.read_stream("agenda-old-record", 0, 10, Direction::Forwards).await;
    assert!(matches!(read, Err(StoreError::StreamDeleted { .. })), "{read:?}");
    let audit = format!("reaps-{}", day_id(now));
    let records = f.services.store.read_stream(&audit, 0, 10, Direction::Forwards).await.unwrap();
    let ReapEvent::StreamReaped(record) =
        ReapEvent::decode(&records[0].event_type, records[0].schema_version, &records[0].data)
            .unwrap();
    assert_eq!(record.stream, "agenda-old-record");
    assert!(record.reason.contains("doNotRun"), "{}", record.reason);
}

#[tokio::test]
async fn a_rerun_after_the_plan_keeps_the_agenda() {
    let f = fixture().await;
    f.finished("old", 100).await;
    let now = t(4 * DAY);
    let actions =
        pop_reapers::data::plan(now, &f.projections().read(), &DataReaperConfig::default());
    assert_eq!(actions.len(), 1);
    // A person reruns it between the plan and the execution: it is no longer old enough.
    f.services
        .commands
        .execute::<AgendaState>(
            "old",
            &EventMetadata::default(),
            &AgendaCommand::Rerun { flags: Default::default(), now: t(4 * DAY - 10) },
        )
        .await
        .unwrap();
    let report = pop_reapers::data::execute(&f.services, now, &actions, None).await;
    assert_eq!((report.refused, report.agendas), (1, 0), "{:?}", report.errors);
    let events =
        f.services.store.read_stream("agenda-old", 0, 100, Direction::Forwards).await.unwrap();
    assert!(events.iter().all(|e| &*e.event_type != "AgendaReaped"));
}

#[tokio::test]
async fn a_reap_interrupted_after_the_delete_is_finished_by_the_next_cycle() {
    let f = fixture().await;
    f.finished("old", 100).await;
    let now = t(4 * DAY);
    // A crashed cycle: the agenda was closed and its stream deleted, but no record written.
    let closed = f
        .services
        .commands
        .execute::<AgendaState>(
            "old",
            &EventMetadata::default(),
            &AgendaCommand::Reap { reason: "old".to_string(), cutoff: t(200), now },
        )
        .await
        .unwrap();
    f.caught_up(closed.position).await;
    f.services
        .store
        .delete_stream("agenda-old", pop_store::ExpectedVersion::Exact(closed.version.unwrap()))
        .await
        .unwrap();
    assert!(f.projections().read().agenda_entry("old").is_some(), "still visible");

    let report = run_once(&f.services, now, &DataReaperConfig::default()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.agendas, 1);
    f.settle().await;
    assert!(f.projections().read().agenda_entry("old").is_none());
    let audit = format!("reaps-{}", day_id(now));
    let records = f.services.store.read_stream(&audit, 0, 10, Direction::Forwards).await.unwrap();
    let ReapEvent::StreamReaped(r) =
        ReapEvent::decode(&records[0].event_type, records[0].schema_version, &records[0].data)
            .unwrap();
    assert_eq!((r.stream.as_str(), r.last_version), ("agenda-old", None));
}

#[tokio::test]
async fn a_config_object_created_again_after_the_plan_is_not_reaped() {
    let f = fixture().await;
    f.deleted_customer("gone", 200).await;
    let now = t(4 * DAY);
    let actions =
        pop_reapers::data::plan(now, &f.projections().read(), &DataReaperConfig::default());
    assert_eq!(actions.len(), 1);
    let again = Customer {
        id: "gone".to_string(),
        customer_id: "gone".to_string(),
        title: "back".to_string(),
        ..Customer::default()
    };
    f.services
        .commands
        .execute::<ConfigAggregate<Customer>>(
            "gone",
            &EventMetadata::default(),
            &ConfigCommand::Create { object: again, now: t(4 * DAY - 5), cid: "c".to_string() },
        )
        .await
        .unwrap();
    let report = pop_reapers::data::execute(&f.services, now, &actions, None).await;
    assert_eq!((report.refused, report.configs), (1, 0), "{:?}", report.errors);
    f.settle().await;
    assert_eq!(f.projections().read().customer("gone").map(|c| c.title.as_str()), Some("back"));
}

/// Copies the store file (with its write-ahead log: the store is open and idle), applies
/// `edit` with SQL, and verifies the copy.
fn verify_edited(path: &std::path::Path, edit: &str) -> pop_store::verify::Verification {
    let copy = path.with_extension("edited.db");
    std::fs::copy(path, &copy).unwrap();
    let wal = |p: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
    if wal(path).exists() {
        std::fs::copy(wal(path), wal(&copy)).unwrap();
    }
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch(edit).unwrap();
    drop(conn);
    let report = SqliteStore::verify_file(&copy).unwrap();
    std::fs::remove_file(&copy).unwrap();
    let _ = std::fs::remove_file(wal(&copy));
    report
}

#[tokio::test]
async fn reaped_streams_still_verify_and_their_tombstones_are_held_to_the_record() {
    let f = fixture().await;
    f.finished("old", 100).await;
    f.deleted_customer("gone", 200).await;
    let head_before = {
        let events =
            f.services.store.read_stream("agenda-old", 0, 100, Direction::Forwards).await.unwrap();
        events.len()
    };
    let now = t(4 * DAY);
    let report = run_once(&f.services, now, &DataReaperConfig::default()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.agendas, report.configs), (1, 1));
    f.settle().await;

    // The record carries the head the store kept on the tombstone.
    let audit = format!("reaps-{}", day_id(now));
    let records = f.services.store.read_stream(&audit, 0, 10, Direction::Forwards).await.unwrap();
    let ReapEvent::StreamReaped(record) =
        ReapEvent::decode(&records[0].event_type, records[0].schema_version, &records[0].data)
            .unwrap();
    assert_eq!(record.stream, "agenda-old");
    assert_eq!(record.last_version, Some(head_before as u64), "the reap event is the last one");
    let head = record.head_hash.clone().expect("a head hash is recorded");
    assert_eq!(head.len(), 64, "{head}");

    let path = f._dir.path().join("pop.db");
    let intact = SqliteStore::verify_file(&path).unwrap();
    assert!(intact.is_intact(), "{intact:?}");
    assert_eq!((intact.deleted_streams, intact.reaped_streams), (2, 2), "{intact:?}");
    let stored: Vec<u8> = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT head_hash FROM streams WHERE name = 'agenda-old'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(pop_store::digest::hex(&stored.try_into().unwrap()), head);

    // The tombstone removed whole: the record names what is gone, located at the record.
    let r = verify_edited(&path, "DELETE FROM streams WHERE name = 'agenda-old'");
    let found = r.first_break.expect("a removed tombstone is found");
    assert_eq!((found.stream.as_str(), found.version), (audit.as_str(), Some(0)), "{found}");
    assert_eq!(found.position, Some(records[0].position), "{found}");
    assert!(found.reason.contains("\"agenda-old\"") && found.reason.contains("gone"), "{found}");
    // The tombstone's head rewritten.
    let r = verify_edited(
        &path,
        "UPDATE streams SET head_hash = zeroblob(32) WHERE name = 'customer-gone'",
    );
    let found = r.first_break.expect("a rewritten tombstone head is found");
    assert_eq!(found.stream, audit, "{found}");
    assert!(found.reason.contains("another head hash"), "{found}");
    // The tombstone turned back into a live, empty stream.
    let r = verify_edited(
        &path,
        "UPDATE streams SET deleted_at = NULL, version = NULL WHERE name = 'agenda-old'",
    );
    assert!(r.first_break.expect("found").reason.contains("\"agenda-old\""));
}

/// The same on PostgreSQL, with signed checkpoints sealed before and after the reap: the
/// reaped streams' tombstones keep their heads, their events' hash rows stay, so the chains,
/// the reap records and every checkpoint verify (`POP_REQUIRE_POSTGRES=1` turns a missing
/// PostgreSQL into a failure).
#[tokio::test]
async fn reaped_streams_still_verify_on_postgres_with_their_checkpoints() {
    use pop_store::commitment::{CheckpointSigningKey, LogCommitment, Sealer};
    use pop_store::test_cluster::TestCluster;
    let Some(cluster) = TestCluster::shared("reaped_streams_still_verify_on_postgres") else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    let pg =
        Arc::new(pop_store::PgStore::connect(&url, pop_store::PgOptions::default()).await.unwrap());
    let f = fixture_on(pg.clone(), tempfile::tempdir().unwrap()).await;
    f.finished("old", 100).await;
    f.deleted_customer("gone", 200).await;
    let key = CheckpointSigningKey::from_bytes(&[5; 32]);
    let sealer = Sealer::new(key.clone());
    let commitment: &dyn LogCommitment = pg.as_ref();
    let before = sealer.seal_all(commitment, t(3 * DAY)).await.unwrap().expect("sealed");
    let events_before = f
        .services
        .store
        .read_stream("agenda-old", 0, 100, Direction::Forwards)
        .await
        .unwrap()
        .len() as i64;

    let now = t(4 * DAY);
    let report = run_once(&f.services, now, &DataReaperConfig::default()).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.agendas, report.configs), (1, 1));
    f.settle().await;
    let after = sealer.seal_all(commitment, now).await.unwrap().expect("the reap records sealed");
    assert!(after.seq > before.seq && after.events > before.events, "{after:?}");

    let intact = pop_store::postgres::verify_with(&url, Some(key.verifying_key())).await.unwrap();
    assert!(intact.is_intact(), "{intact:?}");
    assert_eq!((intact.deleted_streams, intact.reaped_streams), (2, 2), "{intact:?}");
    assert_eq!(intact.checkpoints.checkpoints, after.seq, "{intact:?}");
    assert_eq!(intact.checkpoints.sealed_entries, after.events, "{intact:?}");
    assert_eq!(intact.checkpoints.unsealed_entries, 0, "{intact:?}");
    // The reaped agenda's events are gone, their hash rows are not.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let live: i64 = client
        .query_one("SELECT count(*) FROM pop_events WHERE stream = 'agenda-old'", &[])
        .await
        .unwrap()
        .get(0);
    let kept: i64 = client
        .query_one("SELECT count(*) FROM pop_pruned WHERE stream = 'agenda-old'", &[])
        .await
        .unwrap()
        .get(0);
    // Its events and the data reaper's own last event on it (the reap), all kept as hash rows.
    assert_eq!((live, kept), (0, events_before + 1));
    // Dropping the hash rows (an intruder hiding what was deleted) breaks the checkpoints.
    client.batch_execute("DELETE FROM pop_pruned WHERE stream = 'agenda-old'").await.unwrap();
    drop(client);
    let _ = driver.await;
    let r = pop_store::postgres::verify_with(&url, Some(key.verifying_key())).await.unwrap();
    let found = r.first_break.expect("removed hash rows are found");
    assert_eq!(found.stream, "agenda-old", "{found}");
    pg.close().await;
}

/// A clock further past the log's newest commit than the reap age (set wrong: NTP, a VM's
/// clock) does not delete finished agendas in the first cycle of `pop serve`'s reaper
/// (ops3am53: a clock 10 days ahead reaped 2,000 agendas 9 s after the start, for good); the
/// next cycle, one interval later, reaps as usual. `pop reap data`, run on purpose, reaps.
#[tokio::test]
async fn a_clock_far_past_the_log_holds_the_first_cycle() {
    let f = fixture().await;
    f.finished("old", 100).await;
    f.settle().await;
    let ahead = chrono::Utc::now() + chrono::TimeDelta::days(10);
    let held = DataReaperConfig { hold_past_clock_gap: true, ..DataReaperConfig::default() };
    let mut reaper = DataReaper::new(f.services.clone(), held);
    let first = process::cycle(&mut reaper, ahead).await;
    assert_eq!((first.planned, first.agendas), (0, 0), "{first:?}");
    assert!(f.projections().read().agenda_entry("old").is_some());
    let second = process::cycle(&mut reaper, ahead).await;
    assert_eq!((second.planned, second.agendas), (1, 1), "{second:?}");

    // Not held where it is not asked to be, nor where the clock is within the age of the log.
    let f = fixture().await;
    f.finished("old", 100).await;
    f.settle().await;
    let report = run_once(&f.services, ahead, &DataReaperConfig::default()).await;
    assert_eq!(report.agendas, 1, "{report:?}");
    let f = fixture().await;
    f.finished("old", 100).await;
    f.settle().await;
    let held = DataReaperConfig { hold_past_clock_gap: true, ..DataReaperConfig::default() };
    let report = run_once(&f.services, chrono::Utc::now(), &held).await;
    assert_eq!(report.agendas, 1, "{report:?}");
}
