//! The timed processes in the binary: [`spawn_all`] starts the store-based ones inside
//! `pop serve`, and [`run`] is `pop reap <name> [--once] [--dry-run]`, which runs one process on
//! its own — for a Kubernetes CronJob (`--once`) or a dedicated deployment (looping).
//!
//! For the store-based processes the CLI opens the store, starts the projections without a
//! snapshot directory (a CronJob must not race `pop serve` for the snapshot file), waits until
//! they have caught up with the head, runs one cycle under the process's leader lock and exits.
//! Wall-clock time is read here (`chrono::Utc::now`) and handed to the processes as `now`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pop_projections::{Runner, RunnerConfig};
use pop_reapers::process::{self, ProcessName};
use pop_reapers::{
    Backoff, DataReaperConfig, PodReaperConfig, ReclaimerConfig, RetryConfig, Services,
};
use pop_store::Executor;

use crate::backend::Backend;
use crate::cli::DurabilityArg;
use tokio::task::JoinHandle;

use crate::cli::{ReapArgs, ReaperArgs, ReaperName};

/// Longest `pop reap` waits for the projections to catch up with the log before giving up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// The batch size: the `--reaper-batch-size` override, else the process's default.
fn batch(args: &ReaperArgs, default: usize) -> usize {
    if args.reaper_batch_size == 0 { default } else { args.reaper_batch_size }
}

/// Each process's cycle is bounded below its interval, and never above its default.
fn max_run_time(default: Duration, interval: Duration) -> Duration {
    default.min(interval)
}

pub fn reclaimer_config(interval_secs: u64, args: &ReaperArgs) -> ReclaimerConfig {
    let interval = Duration::from_secs(interval_secs.max(1));
    ReclaimerConfig {
        interval,
        batch_size: batch(args, pop_reapers::DEFAULT_BATCH_SIZE),
        max_run_time: max_run_time(pop_reapers::DEFAULT_MAX_RUN_TIME, interval),
        dry_run: args.dry_run,
    }
}

pub fn retry_config(interval_secs: u64, args: &ReaperArgs) -> RetryConfig {
    let interval = Duration::from_secs(interval_secs.max(1));
    RetryConfig {
        interval,
        batch_size: batch(args, pop_reapers::retry::DEFAULT_BATCH_SIZE),
        max_run_time: max_run_time(pop_reapers::retry::DEFAULT_MAX_RUN_TIME, interval),
        dry_run: args.dry_run,
        backoff: Backoff {
            initial: Duration::from_secs(args.retry_backoff),
            multiplier: args.retry_backoff_multiplier,
            max: Duration::from_secs(args.retry_backoff_max),
            jitter_percent: args.retry_jitter_percent.min(100),
        },
    }
}

pub fn data_config(interval_secs: u64, args: &ReaperArgs) -> DataReaperConfig {
    let interval = Duration::from_secs(interval_secs.max(1));
    DataReaperConfig {
        interval,
        batch_size: batch(args, pop_reapers::data::DEFAULT_BATCH_SIZE),
        max_run_time: max_run_time(pop_reapers::data::DEFAULT_MAX_RUN_TIME, interval),
        dry_run: args.dry_run,
        agenda_reap_age: Duration::from_secs(args.agenda_reap_age),
        config_reap_age: Duration::from_secs(args.config_reap_age),
        config_reap_age_by_category: args
            .config_reap_age_by_kind
            .iter()
            .map(|(kind, secs)| (kind.clone(), Duration::from_secs(*secs)))
            .collect(),
    }
}

pub fn pod_config(interval_secs: u64, args: &ReaperArgs) -> PodReaperConfig {
    let interval = Duration::from_secs(interval_secs.max(1));
    PodReaperConfig {
        interval,
        batch_size: batch(args, pop_reapers::pods::DEFAULT_BATCH_SIZE),
        max_run_time: max_run_time(pop_reapers::pods::DEFAULT_MAX_RUN_TIME, interval),
        dry_run: args.dry_run,
        reap_age: Duration::from_secs(args.pod_reap_age),
    }
}

/// The pods API of `namespace` (or of the client's default namespace: in a pod, its own) with
/// the in-cluster or kubeconfig credentials.
async fn pods_api(namespace: Option<&str>) -> Result<kube::Api<k8s_openapi::api::core::v1::Pod>> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or kubeconfig)")?;
    let namespace =
        namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    tracing::info!(%namespace, "pod reaper: watching pop's pods");
    Ok(kube::Api::namespaced(client, &namespace))
}

/// Starts the pod reaper in `pop serve` when a namespace is configured.
pub async fn spawn_pods<F>(
    leadership: Arc<dyn pop_store::Leadership>,
    args: &ReaperArgs,
    shutdown: F,
) -> Result<Option<JoinHandle<()>>>
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(namespace) = args.pod_reaper_namespace.as_deref() else { return Ok(None) };
    let api = pods_api(Some(namespace)).await?;
    let config = pod_config(args.pod_reap_interval, args);
    Ok(Some(pop_reapers::pods::spawn(api, leadership, config, chrono::Utc::now, shutdown)))
}

/// Starts the store-based processes `pop serve` runs (an interval of 0 turns one off), each
/// stopping when `shutdown()` resolves.
pub fn spawn_all<S, F>(
    services: &Services,
    reclaim_interval: u64,
    args: &ReaperArgs,
    shutdown: S,
) -> Vec<JoinHandle<()>>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut tasks = Vec::new();
    if reclaim_interval > 0 {
        let config = reclaimer_config(reclaim_interval, args);
        tasks.push(pop_reapers::reclaimer::spawn(
            services.clone(),
            config,
            chrono::Utc::now,
            shutdown(),
        ));
    }
    if args.retry_interval > 0 {
        let config = retry_config(args.retry_interval, args);
        tasks.push(pop_reapers::retry::spawn(
            services.clone(),
            config,
            chrono::Utc::now,
            shutdown(),
        ));
    }
    if args.data_reap_interval > 0 {
        let config = data_config(args.data_reap_interval, args);
        tasks.push(pop_reapers::data::spawn(
            services.clone(),
            config,
            chrono::Utc::now,
            shutdown(),
        ));
    }
    tasks
}

/// `pop reap <name>`.
pub async fn run(args: ReapArgs) -> Result<()> {
    if args.name == ReaperName::Pods {
        return run_pods(&args).await;
    }
    if args.store_url.is_none() {
        let path = args.store.db_path();
        anyhow::ensure!(path.exists(), "no store at {}", path.display());
    }
    let backend =
        Backend::open(&args.store, args.store_url.as_deref(), DurabilityArg::Full).await?;
    let log = Arc::clone(&backend.log);
    let (runner, projections) = Runner::start(Arc::clone(&log), RunnerConfig::default()).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let runner_task = tokio::spawn(runner.run(stopped()));
    let services = Services {
        store: Arc::clone(&log),
        executor: Arc::new(Executor::new(Arc::clone(&log))),
        projections: projections.clone(),
        // The embedded store's lock spans this process only; PostgreSQL's spans replicas.
        leadership: Arc::clone(&backend.leadership),
    };
    let outcome = run_store_process(&args, &services, stopped).await;
    let _ = stop_tx.send(true);
    match runner_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "projections stopped with an error"),
        Err(e) => tracing::error!(error = %e, "projections task failed"),
    }
    backend.close().await?;
    outcome
}

async fn run_store_process<S, F>(args: &ReapArgs, services: &Services, stopped: S) -> Result<()>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut ready = services.projections.watch_caught_up();
    tokio::time::timeout(CATCH_UP_TIMEOUT, ready.wait_for(|r| *r))
        .await
        .context("the projections did not catch up with the log in time")?
        .context("the projections stopped before catching up")?;
    let r = &args.reapers;
    let leadership = Arc::clone(&services.leadership);
    let now = chrono::Utc::now();
    match args.name {
        ReaperName::Reclaimer => {
            let config = reclaimer_config(
                args.interval.unwrap_or(pop_reapers::DEFAULT_INTERVAL.as_secs()),
                r,
            );
            if args.once {
                let cycle = pop_reapers::reclaimer::run_once(
                    &services.executor,
                    &services.projections,
                    now,
                    &config,
                );
                report(
                    process::once(
                        ProcessName::Reclaimer,
                        leadership.as_ref(),
                        config.dry_run,
                        cycle,
                    )
                    .await,
                );
            } else {
                forever(pop_reapers::reclaimer::spawn(
                    services.clone(),
                    config,
                    chrono::Utc::now,
                    stopped(),
                ))
                .await?;
            }
        }
        ReaperName::Retry => {
            let config = retry_config(args.interval.unwrap_or(r.retry_interval), r);
            if args.once {
                let cycle = pop_reapers::retry::run_once(
                    &services.executor,
                    &services.projections,
                    now,
                    &config,
                );
                report(
                    process::once(ProcessName::Retry, leadership.as_ref(), config.dry_run, cycle)
                        .await,
                );
            } else {
                forever(pop_reapers::retry::spawn(
                    services.clone(),
                    config,
                    chrono::Utc::now,
                    stopped(),
                ))
                .await?;
            }
        }
        ReaperName::Data => {
            let config = data_config(args.interval.unwrap_or(r.data_reap_interval), r);
            if args.once {
                let cycle = pop_reapers::data::run_once(services, now, &config);
                report(
                    process::once(ProcessName::Data, leadership.as_ref(), config.dry_run, cycle)
                        .await,
                );
            } else {
                forever(pop_reapers::data::spawn(
                    services.clone(),
                    config,
                    chrono::Utc::now,
                    stopped(),
                ))
                .await?;
            }
        }
        // Handled before the store is opened; kept total without a panic.
        ReaperName::Pods => run_pods(args).await?,
    }
    Ok(())
}

/// `pop reap pods`: no store; the leader lock is this process's own (a CronJob runs one pod at
/// a time with `concurrencyPolicy: Forbid`).
async fn run_pods(args: &ReapArgs) -> Result<()> {
    let r = &args.reapers;
    let api = pods_api(r.pod_reaper_namespace.as_deref()).await?;
    let config = pod_config(args.interval.unwrap_or(r.pod_reap_interval), r);
    let leadership: Arc<dyn pop_store::Leadership> =
        Arc::new(pop_store::ProcessLeadership::default());
    if args.once {
        let cycle = pop_reapers::pods::run_once(&api, chrono::Utc::now(), &config);
        let done =
            process::once(ProcessName::Pods, leadership.as_ref(), config.dry_run, cycle).await;
        let failed = done.as_ref().is_some_and(|r| !r.errors.is_empty());
        report(done);
        anyhow::ensure!(!failed, "some pods could not be listed or deleted (see the log)");
        Ok(())
    } else {
        forever(pop_reapers::pods::spawn(
            api,
            leadership,
            config,
            chrono::Utc::now,
            std::future::pending(),
        ))
        .await
    }
}

/// Prints what a `--once` cycle did (or that another replica leads) on stdout.
fn report<R: pop_reapers::CycleReport>(report: Option<R>) {
    match report {
        None => println!("pop reap: another replica holds the leader lock; nothing done"),
        Some(r) => {
            let outcomes: Vec<String> =
                r.outcomes().iter().map(|(o, n)| format!("{o}={n}")).collect();
            println!(
                "pop reap: planned={} {} errors={}",
                r.planned(),
                outcomes.join(" "),
                r.errors().len()
            );
        }
    }
}

/// Waits for a looping process until Ctrl-C/SIGTERM stops the process.
async fn forever(task: JoinHandle<()>) -> Result<()> {
    let mut task = task;
    tokio::select! {
        done = &mut task => done.context("the process task failed"),
        signal = tokio::signal::ctrl_c() => {
            signal.context("listening for Ctrl-C")?;
            task.abort();
            Ok(())
        }
    }
}
