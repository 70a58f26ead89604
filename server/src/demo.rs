//! `pop demo`: runs one agenda through its whole lifecycle on the embedded store — customer,
//! resource pool and insight created, agenda bound and submitted, queued, claimed, reported
//! operation by operation, succeeded — through the same command execution the API will use.
//! It exists so the write side can be seen working before the API does (`pop log` shows the
//! result).

use anyhow::{Context, Result, anyhow};
use chrono::Utc;
use pop_domain::Aggregate;
use pop_domain::agenda::{AgendaCommand, AgendaState, OperationReport, ProgressReport};
use pop_domain::binding::bind_insight;
use pop_domain::config::{ConfigAggregate, ConfigCommand, ConfigError, ConfigObject};
use pop_domain::{Agenda, Customer, Insight, ProcessingState, ResourcePool, message};
use pop_store::{Commands, EventMetadata, EventStore, ExecuteError, SqliteOptions, SqliteStore};
use std::sync::Arc;
use uuid::Uuid;

use crate::cli::StoreArgs;
use crate::data_lock::DataDirLock;

/// The demo agenda: three operations, the last two depending on the first by reference.
const DEMO_AGENDA: &str = r#"{
  "customerId": "demo",
  "title": "demo: encode and package",
  "linkId": "demo-link",
  "operations": [
    {"name": "probe", "type": "sample", "payload": {"file": "movie.mov"}},
    {"name": "encode", "type": "sample", "payload": {"input": "@<probe.out::/streams>"}},
    {"name": "package", "type": "sample", "payload": {"video": "@<encode.out>"},
     "params": {"dependsOn": "probe"}}
  ]
}"#;

pub async fn run(args: StoreArgs) -> Result<()> {
    let path = args.db_path();
    crate::checkpoints::Witness::refuse_after_move(&args.data_dir, None, &path, "demo")?;
    let _lock = DataDirLock::acquire(&args.data_dir, "demo")?;
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let store = Arc::new(store);
    let exec = Commands::new(store.clone() as Arc<dyn EventStore>);
    let cid = Uuid::now_v7().to_string();
    let meta = EventMetadata {
        customer_id: Some("demo".into()),
        cid: Some(cid.clone()),
        causation_id: Some(Uuid::now_v7()),
        actor: Some("system:demo".into()),
        command: Some("demo".into()),
        traceparent: None,
        tracestate: None,
    };

    // Config objects: created once; a second demo run finds them already there.
    let pool = ResourcePool {
        id: "demo-pool".into(),
        customer_id: "demo".into(),
        title: Some("demo pool".into()),
        ..Default::default()
    };
    let customer = Customer {
        id: "demo".into(),
        customer_id: "demo".into(),
        title: "Demo customer".into(),
        resource_pool_id: Some(pool.id.clone()),
        ..Default::default()
    };
    let insight = Insight {
        id: "demo-insight".into(),
        customer_id: "demo".into(),
        title: "demo queue".into(),
        resource_pool_id: pool.id.clone(),
        queue_size: 10,
        mappers: [("operationType".to_owned(), ["sample".to_owned()].into())].into(),
        ..Default::default()
    };
    let now = Utc::now();
    ensure_created(&exec, &meta, pool.clone(), now, &cid).await?;
    ensure_created(&exec, &meta, customer.clone(), now, &cid).await?;
    ensure_created(&exec, &meta, insight.clone(), now, &cid).await?;

    // Submit: the server assigns ids and binds the agenda to an insight (DOMAIN.md §6).
    let mut agenda: Agenda = serde_json::from_str(DEMO_AGENDA).context("the demo agenda")?;
    agenda.id = Uuid::now_v7().to_string();
    // The progress id is the agenda id (as the server gives it when none is asked for), so the
    // id printed below is what `pop progress` and `pop watch` take.
    agenda.progress_id = Some(agenda.id.clone());
    agenda.cid = Some(cid.clone());
    let binding = bind_insight(&agenda, Some(&customer), std::slice::from_ref(&insight))
        .map_err(|e| anyhow!("binding the demo agenda: {e}"))?;
    let id = agenda.id.clone();
    // Agenda streams are keyed by customer and id, as the server writes them.
    let stream_key = pop_domain::agenda::key(&agenda.customer_id, &id);
    let step = |what: &'static str| {
        move |r: pop_store::Executed<AgendaState>| {
            let p = r.state.progress();
            println!(
                "{what:<22} position {:>6}  {} / {:<10} {:>5.1}%",
                r.position.map(|p| p.to_string()).unwrap_or_default(),
                p.processing_state.as_str(),
                p.processing_state_message.as_deref().unwrap_or(""),
                p.percent_complete.unwrap_or(0.0)
            );
        }
    };
    let agenda_cmd = |command: AgendaCommand| {
        let exec = &exec;
        let meta = &meta;
        let id = id.clone();
        let stream_key = stream_key.clone();
        async move {
            exec.execute::<AgendaState>(&stream_key, meta, &command)
                .await
                .map_err(|e| anyhow!("agenda {id}: {e}"))
        }
    };
    println!("agenda {id} (stream agenda-{stream_key})");
    step("submitted")(
        agenda_cmd(AgendaCommand::Submit { agenda, insight: binding, now: Utc::now() }).await?,
    );
    step("queued")(agenda_cmd(AgendaCommand::Queue { now: Utc::now() }).await?);
    let lease = Uuid::now_v7().to_string();
    let lease_expires = Utc::now() + chrono::Duration::minutes(5);
    step("claimed by demo-worker")(
        agenda_cmd(AgendaCommand::Claim {
            holder: "demo-worker".into(),
            lease_id: lease.clone(),
            lease_expires,
            now: Utc::now(),
        })
        .await?,
    );
    for (name, out) in [
        ("probe", serde_json::json!({"streams": ["video", "audio"]})),
        ("encode", serde_json::json!("movie.mp4")),
        ("package", serde_json::json!({"package": "movie.pkg"})),
    ] {
        let started = Utc::now();
        let running = OperationReport {
            name: name.into(),
            state: ProcessingState::Executing,
            message: Some("working".into()),
            percent: Some(50.0),
            started: Some(started),
            ..Default::default()
        };
        let done = OperationReport {
            name: name.into(),
            state: ProcessingState::Complete,
            message: Some(message::SUCCEEDED.into()),
            percent: Some(100.0),
            result_payload: Some(out),
            started: Some(started),
            completed: Some(Utc::now()),
            ..Default::default()
        };
        for (label, op) in [("running", running), ("succeeded", done)] {
            let r = agenda_cmd(AgendaCommand::ReportProgress {
                holder: "demo-worker".into(),
                lease_id: Some(lease.clone()),
                lease_expires,
                report: ProgressReport { operations: vec![op], ..Default::default() },
                now: Utc::now(),
            })
            .await?;
            println!("  {name:<8} {label}");
            step("  reported")(r);
        }
    }
    store.close().await.context("closing the store")?;
    // The follow-up commands name the data directory unless it is the default one (a demo
    // kept out of the default store with --data-dir printed hints that read the default).
    let dir = crate::cli::client_flags(crate::cli::DEFAULT_SERVER, &args.data_dir, true);
    let stream = crate::output::shell_word(&format!("agenda-{stream_key}"));
    println!("\nsee its history: pop log{dir} --stream {stream}");
    // The client finds the admin token in the same data directory.
    println!("with `pop serve{dir}` running: pop progress {}{dir}", crate::output::shell_word(&id));
    Ok(())
}

/// Creates a config object unless it already exists (an earlier demo run made it).
async fn ensure_created<T>(
    exec: &Commands,
    meta: &EventMetadata,
    object: T,
    now: chrono::DateTime<Utc>,
    cid: &str,
) -> Result<()>
where
    T: ConfigObject,
    ConfigAggregate<T>: Aggregate<Command = ConfigCommand<T>, Error = ConfigError>,
{
    let id = object.id().to_owned();
    let command = ConfigCommand::Create { object, now, cid: cid.to_owned() };
    match exec.execute::<ConfigAggregate<T>>(&id, meta, &command).await {
        Ok(_) | Err(ExecuteError::Refused(ConfigError::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(anyhow!("creating {}-{id}: {e}", ConfigAggregate::<T>::CATEGORY)),
    }
}
