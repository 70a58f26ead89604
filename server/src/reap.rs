//! The timed processes in the binary: [`spawn_all`] starts the store-based ones inside
//! `pop serve`, and [`run`] is `pop reap <name> [--once] [--dry-run]`, which runs one process on
//! its own — for a Kubernetes CronJob (`--once`) or a dedicated deployment (looping).
//!
//! For the store-based processes the CLI opens the store, starts the projections without a
//! snapshot directory (a CronJob must not race `pop serve` for the snapshot file), waits until
//! they have caught up with the head, runs one cycle under the process's leader lock and exits.
//! Wall-clock time is read here (`pop_store::clock::now_for`: never behind the store's last
//! commit) and handed to the processes as `now`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pop_projections::{Runner, RunnerConfig};
use pop_reapers::data::DataReaper;
use pop_reapers::pods::PodReaper;
use pop_reapers::process::{self, TimedProcess};
use pop_reapers::reclaimer::Reclaimer;
use pop_reapers::retry::Retry;
use pop_reapers::{
    Backoff, Cadence, DataReaperConfig, PodReaperConfig, ReclaimerConfig, RetryConfig, Services,
};
use pop_store::{Commands, Leadership};

use crate::backend::Backend;
use crate::cli::DurabilityArg;
use crate::data_lock::DataDirLock;
use tokio::task::JoinHandle;

use crate::cli::{ReapArgs, ReaperArgs, ReaperName};

/// Longest `pop reap` waits for the projections to catch up with the log before giving up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

/// A process's cadence from the flags: a cycle every `interval_secs`, the
/// `--reaper-batch-size` override else `default_batch`, a cycle bounded below its interval
/// (and never above `default_max_run_time`), and `--reaper-dry-run`.
fn cadence(
    interval_secs: u64,
    args: &ReaperArgs,
    default_batch: usize,
    default_max_run_time: Duration,
) -> Cadence {
    let interval = Duration::from_secs(interval_secs.max(1));
    Cadence {
        interval,
        batch_size: if args.reaper_batch_size == 0 {
            default_batch
        } else {
            args.reaper_batch_size
        },
        max_run_time: default_max_run_time.min(interval),
        dry_run: args.dry_run,
    }
}

pub fn reclaimer_config(interval_secs: u64, args: &ReaperArgs) -> ReclaimerConfig {
    use pop_reapers::reclaimer::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME};
    ReclaimerConfig {
        cadence: cadence(interval_secs, args, DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME),
        grace_after_start: false,
    }
}

/// The retry process's backoff, from `--retry-backoff*` and `--retry-jitter-percent`.
pub fn backoff(args: &ReaperArgs) -> Backoff {
    Backoff {
        initial: Duration::from_secs(args.retry_backoff),
        multiplier: args.retry_backoff_multiplier,
        max: Duration::from_secs(args.retry_backoff_max),
        jitter_percent: args.retry_jitter_percent.min(100),
    }
}

pub fn retry_config(interval_secs: u64, args: &ReaperArgs) -> RetryConfig {
    use pop_reapers::retry::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME};
    RetryConfig {
        cadence: cadence(interval_secs, args, DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME),
        backoff: backoff(args),
        // Run alone (`pop reap retry`), the process does not know the server's quotas.
        quotas: None,
    }
}

pub fn data_config(interval_secs: u64, args: &ReaperArgs) -> DataReaperConfig {
    use pop_reapers::data::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME};
    // Said at start: an age that deletes more than meant is then found in the log.
    tracing::info!(
        agenda_reap_age_secs = args.agenda_reap_age,
        config_reap_age_secs = args.config_reap_age,
        by_kind = ?args.config_reap_age_by_kind,
        "data reaper: finished agendas and deleted config objects are deleted after these ages"
    );
    DataReaperConfig {
        cadence: cadence(interval_secs, args, DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME),
        agenda_reap_age: Duration::from_secs(args.agenda_reap_age),
        config_reap_age: Duration::from_secs(args.config_reap_age),
        config_reap_age_by_category: args
            .config_reap_age_by_kind
            .iter()
            .map(|(kind, secs)| (kind.clone(), Duration::from_secs(*secs)))
            .collect(),
        hold_past_clock_gap: false,
    }
}

pub fn pod_config(interval_secs: u64, args: &ReaperArgs) -> PodReaperConfig {
    use pop_reapers::pods::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME};
    PodReaperConfig {
        cadence: cadence(interval_secs, args, DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUN_TIME),
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
    Ok(Some(process::spawn(PodReaper::new(api, config), leadership, chrono::Utc::now, shutdown)))
}

/// Starts the store-based processes `pop serve` runs (an interval of 0 turns one off), each
/// stopping when `shutdown()` resolves. `quotas`: the server's memory quotas per customer,
/// which a due retry waits for (`RetryConfig::quotas`).
pub fn spawn_all<S, F>(
    services: &Services,
    args: &ReaperArgs,
    quotas: pop_reapers::retry::MemoryQuotas,
    shutdown: S,
) -> Vec<JoinHandle<()>>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let leadership = || Arc::clone(&services.leadership);
    let clock = || pop_store::clock::floored(Arc::clone(&services.store));
    let mut tasks = Vec::new();
    if args.reclaim_interval > 0 {
        // Beside the API the workers report to: a restart gives every lease its length again.
        let config = ReclaimerConfig {
            grace_after_start: true,
            ..reclaimer_config(args.reclaim_interval, args)
        };
        let process = Reclaimer::new(services.clone(), config);
        tasks.push(process::spawn(process, leadership(), clock(), shutdown()));
    }
    if args.retry_interval > 0 {
        let config =
            RetryConfig { quotas: Some(quotas), ..retry_config(args.retry_interval, args) };
        let process = Retry::new(services.clone(), config);
        tasks.push(process::spawn(process, leadership(), clock(), shutdown()));
    }
    if args.data_reap_interval > 0 {
        let config = DataReaperConfig {
            hold_past_clock_gap: true,
            ..data_config(args.data_reap_interval, args)
        };
        let process = DataReaper::new(services.clone(), config);
        tasks.push(process::spawn(process, leadership(), clock(), shutdown()));
    }
    tasks
}

/// The seconds between cycles of a looping `pop reap`: `--interval`, else the process's own
/// setting (`configured`, its flag or environment variable), else — where that is `0`, which
/// turns the process off in `pop serve` — the process's built-in `default`.
fn loop_interval(args: &ReapArgs, configured: u64, default: Duration) -> u64 {
    match args.interval {
        Some(secs) => secs,
        None if configured > 0 => configured,
        None => default.as_secs(),
    }
}

/// The stop flag of `pop reap`: looping, Ctrl-C/SIGTERM raises it (the process finishes its
/// cycle and stops, then the store is closed); `--once` keeps the default signal handling
/// (a signal ends the process at once, as a cycle changes nothing it has not recorded).
fn stop_flag(args: &ReapArgs) -> (tokio::sync::watch::Sender<bool>, Option<JoinHandle<()>>) {
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let signal = (!args.once).then(|| {
        tokio::spawn(crate::signal::shutdown_signal(
            stop_tx.clone(),
            "stopping the process, then closing the store",
        ))
    });
    (stop_tx, signal)
}

/// `pop reap <name>`.
pub async fn run(args: ReapArgs) -> Result<()> {
    let (stop_tx, signal) = stop_flag(&args);
    let outcome = run_process(&args, &stop_tx).await;
    if let Some(signal) = signal {
        signal.abort();
    }
    outcome
}

async fn run_process(args: &ReapArgs, stop_tx: &tokio::sync::watch::Sender<bool>) -> Result<()> {
    let stop_rx = stop_tx.subscribe();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if args.name == ReaperName::Pods {
        return run_pods(args, stopped).await;
    }
    // The embedded store's data directory belongs to one process (PostgreSQL's replicas
    // coordinate through leader locks and use no data directory here).
    let _lock = match args.store_url {
        None => {
            let path = args.store.db_path();
            anyhow::ensure!(path.exists(), "no store at {}", path.display());
            let data_dir = &args.store.data_dir;
            if let Some(why) = crate::checkpoints::Witness::moved_to_postgres(data_dir, None, &path)
            {
                anyhow::bail!(why);
            }
            let command = format!("reap {}", format!("{:?}", args.name).to_lowercase());
            Some(DataDirLock::acquire(&args.store.data_dir, &command)?)
        }
        Some(_) => None,
    };
    let backend =
        Backend::open(&args.store, args.store_url.as_deref(), DurabilityArg::Full).await?;
    let log = Arc::clone(&backend.log);
    let (runner, projections) = Runner::start(Arc::clone(&log), RunnerConfig::default()).await;
    let runner_task = tokio::spawn(runner.run(stopped()));
    let services = Services {
        store: Arc::clone(&log),
        commands: Arc::new(Commands::new(Arc::clone(&log))),
        projections: projections.clone(),
        // The embedded store's lock spans this process only; PostgreSQL's spans replicas.
        leadership: Arc::clone(&backend.leadership),
    };
    let outcome = run_store_process(args, &services, stopped).await;
    let _ = stop_tx.send(true);
    match runner_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "projections stopped with an error"),
        Err(e) => tracing::error!(error = %e, "projections task failed"),
    }
    backend.close().await?;
    tracing::info!("store closed");
    outcome
}

async fn run_store_process<S, F>(args: &ReapArgs, services: &Services, stopped: S) -> Result<()>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut ready = services.projections.watch_caught_up();
    tokio::select! {
        biased;
        // A signal while catching up: nothing done yet, stop.
        () = stopped() => return Ok(()),
        caught_up = tokio::time::timeout(CATCH_UP_TIMEOUT, ready.wait_for(|r| *r)) => {
            caught_up
                .context("the projections did not catch up with the log in time")?
                .context("the projections stopped before catching up")?;
        }
    }
    let r = &args.reapers;
    let leadership = Arc::clone(&services.leadership);
    let clock = pop_store::clock::floored(Arc::clone(&services.store));
    match args.name {
        ReaperName::Reclaimer => {
            // Said, for the operator who reads its log after an outage (ops3am9).
            tracing::info!(
                "a reclaimer run alone knows only the store outages it sees while it runs: \
                 leases that expired during an earlier one are timed out at once, though their \
                 workers may still run them (the reclaimer inside pop serve waits a lease \
                 length after every start and outage)"
            );
            let interval = loop_interval(args, r.reclaim_interval, pop_reapers::DEFAULT_INTERVAL);
            let process = Reclaimer::new(services.clone(), reclaimer_config(interval, r));
            let failed = "some agendas could not be reclaimed";
            drive(args, process, leadership, clock, stopped(), failed).await
        }
        ReaperName::Retry => {
            let interval =
                loop_interval(args, r.retry_interval, pop_reapers::retry::DEFAULT_INTERVAL);
            let process = Retry::new(services.clone(), retry_config(interval, r));
            drive(args, process, leadership, clock, stopped(), "some agendas could not be retried")
                .await
        }
        ReaperName::Data => {
            let interval =
                loop_interval(args, r.data_reap_interval, pop_reapers::data::DEFAULT_INTERVAL);
            let process = DataReaper::new(services.clone(), data_config(interval, r));
            let failed = "some data objects could not be reaped";
            drive(args, process, leadership, clock, stopped(), failed).await
        }
        // Handled before the store is opened; kept total without a panic.
        ReaperName::Pods => run_pods(args, stopped).await,
    }
}

/// Runs `process` the way `pop reap` was asked to: one cycle under the leader lock
/// (`--once`, reporting `failed` when the cycle had errors), or looping until Ctrl-C/SIGTERM.
async fn drive<P: TimedProcess>(
    args: &ReapArgs,
    mut process: P,
    leadership: Arc<dyn Leadership>,
    clock: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
    failed: &str,
) -> Result<()> {
    if args.once {
        // A dry run changes nothing, so it plans whichever replica leads (ops3am53: on
        // PostgreSQL beside a running server it said "another replica holds the leader lock;
        // nothing done", and an operator could not preview a reap).
        if process.cadence().dry_run {
            let done = process::cycle(&mut process, clock()).await;
            return report(Some(done), failed, true);
        }
        let done = process::once(&mut process, leadership.as_ref(), clock()).await;
        return report(done, failed, false);
    }
    tracing::info!(
        process = process.name().as_str(),
        interval_secs = process.cadence().interval.as_secs(),
        "pop reap: looping until Ctrl-C/SIGTERM"
    );
    let task = process::spawn(process, leadership, clock, shutdown);
    task.await.context("the process task failed")
}

/// `pop reap pods`: no store; the leader lock is this process's own (a CronJob runs one pod at
/// a time with `concurrencyPolicy: Forbid`).
async fn run_pods<S, F>(args: &ReapArgs, stopped: S) -> Result<()>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let r = &args.reapers;
    let api = pods_api(r.pod_reaper_namespace.as_deref()).await?;
    let interval = loop_interval(args, r.pod_reap_interval, pop_reapers::pods::DEFAULT_INTERVAL);
    let config = pod_config(interval, r);
    let leadership: Arc<dyn Leadership> = Arc::new(pop_store::ProcessLeadership::default());
    let process = PodReaper::new(api, config);
    let failed = "some pods could not be listed or deleted";
    drive(args, process, leadership, chrono::Utc::now, stopped(), failed).await
}

/// Prints what a `--once` cycle did (or that another replica leads) on stdout; an error
/// (`failed`, the exit status non-zero) when the cycle reported errors, which the process
/// has logged one by one.
fn report<R: pop_reapers::CycleReport>(
    report: Option<R>,
    failed: &str,
    dry_run: bool,
) -> Result<()> {
    match report {
        None => {
            println!("pop reap: another replica holds the leader lock; nothing done");
            Ok(())
        }
        Some(r) => {
            let outcomes: Vec<String> =
                r.outcomes().iter().map(|(o, n)| format!("{o}={n}")).collect();
            let errors = r.errors().len();
            // A dry run says so: its `skipped` are the planned ones, not failures (operator60 L7).
            let dry = if dry_run { " (dry run: nothing was changed)" } else { "" };
            println!(
                "pop reap{dry}: planned={} {} errors={errors}",
                r.planned(),
                outcomes.join(" ")
            );
            anyhow::ensure!(errors == 0, "{failed}: {errors} error(s) (see the log)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn reap_args(args: &[&str]) -> ReapArgs {
        let cli = Cli::try_parse_from(["pop", "reap"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Reap(args) => args,
            other => panic!("not `pop reap`: {other:?}"),
        }
    }

    /// A cycle report with a given number of errors.
    struct Report(usize);

    impl pop_reapers::CycleReport for Report {
        fn planned(&self) -> usize {
            self.0
        }
        fn outcomes(&self) -> Vec<(&'static str, usize)> {
            vec![("done", 0)]
        }
        fn errors(&self) -> Vec<String> {
            vec!["failed".to_string(); self.0]
        }
    }

    #[test]
    fn a_once_cycle_with_errors_fails_and_one_without_or_without_the_lock_succeeds() {
        assert!(report(Some(Report(0)), "x", false).is_ok());
        assert!(report(None::<Report>, "x", false).is_ok());
        let e = report(Some(Report(2)), "some agendas could not be retried", false).unwrap_err();
        assert_eq!(e.to_string(), "some agendas could not be retried: 2 error(s) (see the log)");
    }

    #[test]
    fn looping_uses_interval_else_the_process_setting_else_its_default() {
        let retry = pop_reapers::retry::DEFAULT_INTERVAL;
        let args = reap_args(&["retry", "--interval", "7", "--retry-interval", "9"]);
        assert_eq!(loop_interval(&args, args.reapers.retry_interval, retry), 7);
        let args = reap_args(&["retry", "--retry-interval", "9"]);
        assert_eq!(loop_interval(&args, args.reapers.retry_interval, retry), 9);
        let args = reap_args(&["reclaimer", "--reclaim-interval", "11"]);
        assert_eq!(
            loop_interval(&args, args.reapers.reclaim_interval, pop_reapers::DEFAULT_INTERVAL),
            11
        );
        // `0` turns a process off in `pop serve`; a dedicated `pop reap` uses the default.
        let args = reap_args(&["data", "--data-reap-interval", "0"]);
        assert_eq!(
            loop_interval(
                &args,
                args.reapers.data_reap_interval,
                pop_reapers::data::DEFAULT_INTERVAL
            ),
            pop_reapers::data::DEFAULT_INTERVAL.as_secs()
        );
    }
}
