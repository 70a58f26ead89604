//! `pop worker`: a resource pool's puller and executor (the `pop-worker` crate) against a
//! running server, with handlers from a registry file. SIGINT/SIGTERM stop the claiming; the
//! agendas in hand finish within the grace period or are handed back with a final report and
//! released under their lease, so another worker takes them at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use pop_worker::api::GraphqlApi;
use pop_worker::execute::{ExecConfig, ExecEnv};
use pop_worker::handler::Registry;
use pop_worker::pod::KubePod;
use pop_worker::puller::{self, PullConfig};
use pop_worker::report::ReportConfig;

use crate::cli::WorkerArgs;

pub async fn run(args: WorkerArgs) -> Result<()> {
    let token = crate::client::token(&args.client)?;
    let api = GraphqlApi::new(&args.client.server, &token).context("the API client")?;
    let registry = match &args.handlers {
        Some(path) => {
            let (mut registry, kube_specs) = pop_worker::config::load(path)?;
            let missing = pop_worker::config::missing_programs(path)?;
            if !missing.is_empty() {
                bail!(
                    "{}: handler commands that cannot start:\n  {}",
                    path.display(),
                    missing.join("\n  ")
                );
            }
            if !kube_specs.is_empty() {
                // In a pod: the service account; elsewhere: the kubeconfig.
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to Kubernetes for the pod handlers")?;
                for spec in kube_specs {
                    let namespace =
                        spec.namespace.clone().unwrap_or_else(|| args.kube_namespace.clone());
                    registry.insert(
                        spec.op_type.clone(),
                        Arc::new(KubePod {
                            client: client.clone(),
                            namespace,
                            image: spec.image,
                            command: spec.command,
                            service_account: spec.service_account,
                            timeout: spec.timeout,
                            poll: Duration::from_millis(args.kube_poll_ms.max(100)),
                        }),
                    );
                }
            }
            registry
        }
        None => Registry::with_builtins(),
    };
    let insights: Vec<String> =
        args.insights.iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect();
    if insights.is_empty() {
        bail!("--insight names no insight");
    }
    let handled: Vec<&str> = registry.types().collect();
    for note in check_insights(&args, &insights, &handled).await? {
        tracing::warn!("{note}");
    }
    let env = ExecEnv {
        api: Arc::new(api),
        registry: Arc::new(registry),
        config: ExecConfig {
            max_parallel: args.max_parallel.max(1),
            report: ReportConfig {
                interval: Duration::from_millis(args.report_interval_ms),
                heartbeat: Duration::from_millis(args.heartbeat_ms.max(1)),
                ..ReportConfig::default()
            },
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
        },
    };
    let config = PullConfig {
        insights: insights.clone(),
        max_agendas: args.max_agendas.max(1),
        max_operations_per_insight: args.max_operations_per_insight,
        max_concurrent_claims: args.max_concurrent_claims.max(1),
        wait_for_work: Duration::from_secs(args.wait_for_work),
        max_idle_backoff: Duration::from_millis(args.max_idle_ms.max(100)),
        ..PullConfig::default()
    };
    let types: Vec<&str> = env.registry.types().collect();
    tracing::info!(insights = ?insights, handlers = ?types, server = %args.client.server, "worker started");
    println!(
        "pop: worker taking work from {} (handlers: {})",
        insights.join(", "),
        types.join(", ")
    );
    // The heartbeat is sized from each claim's lease (a third of it at most); the puller warns
    // once if the server's lease leaves no safe heartbeat.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Listening from here on (the future registers its signals when made, not when run).
    tokio::spawn(crate::signal::shutdown_signal(
        stop_tx,
        "no more claims; finishing or handing back the agendas in hand",
    ));
    let stats = puller::run(env, config, stop_rx).await;
    tracing::info!(
        claimed = stats.claimed,
        succeeded = stats.succeeded,
        failed = stats.failed,
        cancelled = stats.cancelled,
        refused = stats.refused,
        handed_back = stats.handed_back,
        abandoned = stats.abandoned,
        "worker stopped"
    );
    // Said only when some were (the server did not take their last reports in time).
    let abandoned = match stats.abandoned {
        0 => String::new(),
        n => format!(", {n} left to the server's reclaimer"),
    };
    println!(
        "pop: worker stopped: {} claimed, {} succeeded, {} failed, {} cancelled, {} refused, {} \
         handed back{abandoned}",
        stats.claimed,
        stats.succeeded,
        stats.failed,
        stats.cancelled,
        stats.refused,
        stats.handed_back
    );
    if let Some(refusal) = stats.token_refused {
        if refusal.contains("FORBIDDEN") {
            bail!(
                "the server refused this worker's token ({refusal}): a worker takes and reports \
                 work, which needs a token of role service (or admin); start the worker with \
                 one (--token, POP_TOKEN)"
            );
        }
        bail!(
            "the server refused this worker's token ({refusal}): it was revoked, or the server \
             was restarted with another token file; start the worker with a valid --token \
             (POP_TOKEN)"
        );
    }
    Ok(())
}

/// How long a worker started before its server waits between its tries to reach it.
const WAIT_FOR_SERVER: std::time::Duration = std::time::Duration::from_secs(5);

/// Fails at start when an `--insight` is not one the token may use (a typo would otherwise be
/// retried for ever), naming the ones it may use. Answers a note for each operation type an
/// insight maps that no handler here runs (newcomer6: README's `--types ffmpeg,probe` with the
/// example handlers; every `probe` operation then failed at once, without a word at start).
async fn check_insights(
    args: &WorkerArgs,
    insights: &[String],
    handled: &[&str],
) -> Result<Vec<String>> {
    let client = crate::client::Client::new(&args.client)?;
    let query = "{ insights(first: 100) { items { id mappers } } }";
    // A worker started before its server (a terminal opened first, a start order in compose or
    // systemd) waits for it, as a running one does through a restart (newcomer61 L2: it gave
    // up after the client's 10 s of retries).
    let data = loop {
        match client.graphql(query, serde_json::json!({})).await {
            Ok(data) => break data,
            // A name that does not resolve is a typo more often than a server still starting
            // (review61b L5: it waited for ever on `no-such-host.invalid`).
            Err(e) if crate::client::refused(&e) && !format!("{e:#}").contains("dns error") => {
                eprintln!(
                    "pop worker: the server at {} does not answer ({e:#}); waiting for it to \
                     start (Ctrl-C to stop)",
                    client.base()
                );
                tokio::time::sleep(WAIT_FOR_SERVER).await;
            }
            Err(e) => return Err(e.context("listing the insights this token may use")),
        }
    };
    let items = data["insights"]["items"].as_array().cloned().unwrap_or_default();
    let usable: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    let mut notes = Vec::new();
    for insight in insights {
        if let Some(item) = items.iter().find(|i| i["id"] == insight.as_str()) {
            let unhandled: Vec<&str> =
                crate::verbs::mapped_types(item).filter(|t| !handled.contains(t)).collect();
            if !unhandled.is_empty() {
                notes.push(format!(
                    "insight {insight} maps operation type(s) {} that no handler here runs: \
                     such operations fail at once (not retried); add them to --handlers",
                    unhandled.join(", ")
                ));
            }
            continue;
        }
        let hint = crate::tour::did_you_mean(insight, &usable)
            .map(|near| format!(" (did you mean {near:?}?)"))
            .unwrap_or_default();
        let list = if usable.is_empty() { "none".to_string() } else { usable.join(", ") };
        bail!(
            "NOT_FOUND: no insight {insight:?} this token may use{hint}; it may use: {list} \
             (`pop init` creates one)"
        );
    }
    Ok(notes)
}
