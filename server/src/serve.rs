//! `pop serve`: the store (embedded SQLite by default, or shared PostgreSQL), the projections
//! runner, the scheduler and the timed processes (`reap.rs`; each on the replica holding its
//! leader lock), and the HTTP/GraphQL API. On SIGINT/SIGTERM it stops accepting requests, lets in-flight ones
//! finish (bounded), stops the projections after a last snapshot, and closes the store after
//! the appends already queued, so nothing acknowledged is lost on a graceful stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pop_api::{ApiConfig, AppState};
use pop_projections::{Runner, RunnerConfig};
use pop_reapers::process;
use pop_reapers::scheduler::Scheduler;
use pop_store::Commands;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::cli::{ClientArgs, ServeArgs};
use crate::data_lock::DataDirLock;
use crate::signal::{shutdown_signal, stopped};

/// How long in-flight requests get to finish after a shutdown signal before the process
/// stops waiting for them (Kubernetes' default grace period is 30 s; stay well inside it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the shutdown waits for the projections to apply the writes acknowledged before it,
/// so the last snapshot holds them (they are in the log either way).
const PROJECTIONS_CATCH_UP: Duration = Duration::from_secs(5);

/// The dashboard's address on `addr`, with `token` in the fragment when given (a sign-in
/// link); an unspecified bind address is reached on loopback.
fn dashboard_url(addr: std::net::SocketAddr, token: Option<&str>) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    let Some(token) = token else {
        return format!("http://{host}:{}/", addr.port());
    };
    // Generated tokens are URL-safe; escape anything else a fragment must not hold.
    let token: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("http://{host}:{}/#token={token}", addr.port())
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let data_dir = args.store.data_dir.clone();
    // The port first: a clash is told before a data directory or a token is created.
    let listener = tokio::net::TcpListener::bind(&args.bind).await.map_err(|e| {
        // The hint the error calls for (ops3am20: a malformed address was asked whether
        // another server was there).
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another server there? choose another address with --bind"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "that address is not on this machine: bind one of its own, or 0.0.0.0:<port>"
            }
            std::io::ErrorKind::PermissionDenied => {
                "a port below 1024 needs privileges: choose a port of 1024 or above"
            }
            // A port that reads as one: the host did not resolve to an address.
            _ if args
                .bind
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse::<u16>().is_ok()) =>
            {
                "the host does not resolve to an address of this machine: bind one of its own \
                 addresses (or 0.0.0.0)"
            }
            _ => "--bind takes host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        };
        anyhow::anyhow!("binding {} ({hint}): {e}", args.bind)
    })?;
    // Configured tokens (a token file, `POP_TOKENS`) are read before anything is made: a bad
    // token file left a new store and signing key behind (ops3am).
    // A blank one stopped the start already (`main`).
    let inline = std::env::var(pop_api::auth::TOKENS_ENV);
    let inline_tokens = inline.as_ref().is_ok_and(|json| !json.trim().is_empty());
    let configured = args.token_file.is_some() || inline_tokens;
    let early_tokens = if configured {
        Some(pop_api::load_tokens(args.token_file.as_deref(), None).context("loading tokens")?)
    } else {
        None
    };
    // Held until `run` returns: one process per data directory.
    let _lock = DataDirLock::acquire(&data_dir, "serve")?;
    // Said at start: past it every write fails, and the store's own error cannot name it
    // (ops3am6: "disk I/O error: Error code 778").
    if let Some(bytes) = crate::signal::file_size_limit() {
        tracing::warn!(
            limit_bytes = bytes,
            "this process runs under a file-size limit (ulimit -f): no file of the store or data \
             directory can grow past it, and writes that would are refused as UNAVAILABLE"
        );
    }
    if args.store_url.is_none()
        && let Some(why) = crate::checkpoints::Witness::moved_to_postgres(
            &data_dir,
            args.checkpoint_witness.as_deref(),
            &args.store.db_path(),
        )
    {
        anyhow::bail!(why);
    }
    let backend = open_backend(&args).await?;
    let log = Arc::clone(&backend.log);
    // A data directory's key file gone while its store has checkpoints (a volume restored without
    // it, a file deleted by mistake): the new key is said as such, not as a first start's
    // (operator58 L3: INFO "created the checkpoint signing key", and only the sealer's refusal
    // later said anything).
    let key_file = data_dir.join(crate::checkpoints::KEY_FILE);
    let key_lost = match backend.commitment() {
        Some(commitment) if args.checkpoint_key.is_none() && !key_file.exists() => {
            commitment.last_checkpoint().await.is_ok_and(|c| c.is_some())
        }
        _ => false,
    };
    let sealing = match backend.commitment() {
        Some(commitment) if args.checkpoint_every > 0 => Some((
            commitment,
            crate::checkpoints::signing_key(&data_dir, args.checkpoint_key.as_deref())
                .context("loading the checkpoint key")?,
            crate::checkpoints::previous_keys(&args.checkpoint_previous_key)?,
        )),
        _ => None,
    };
    if key_lost && sealing.is_some() {
        tracing::warn!(
            path = %key_file.display(),
            "the checkpoint signing key was missing at this start, though the store has signed \
             checkpoints: a new key was made. If the store's checkpoints were signed by another key, \
             sealing is refused until that key is back: restore the file (or pass \
             --checkpoint-key); to hand the log over to the new key on purpose, start with \
             --checkpoint-previous-key <the old key>"
        );
    }

    // The generated admin token is the embedded default's way in: only when no tokens are
    // configured (no token file, no `POP_TOKENS`). With configured tokens (e.g. every replica
    // of a deployment) none is generated, printed or accepted; put an admin in the token file.
    let admin_dir = (!configured).then_some(data_dir.as_path());
    let (tokens, fresh_admin) = match early_tokens {
        Some(loaded) => loaded,
        None => pop_api::load_tokens(None, admin_dir).context("loading tokens")?,
    };
    if let Some(token) = &fresh_admin {
        // Printed once, on the first start; it stays in <data-dir>/admin.token (mode 0600).
        println!(
            "pop: generated an admin token (also in {}):",
            data_dir.join(pop_api::auth::ADMIN_TOKEN_FILE).display()
        );
        println!("pop: {token}");
    } else if let Some(dir) = admin_dir {
        println!(
            "pop: the admin token is in {} (clients there find it)",
            dir.join(pop_api::auth::ADMIN_TOKEN_FILE).display()
        );
    }

    let (runner, projections) = Runner::start(
        Arc::clone(&log),
        RunnerConfig {
            snapshot_dir: Some(crate::backend::snapshot_dir(&data_dir, args.store_url.as_deref())),
            memory_budget: memory_budget(args.memory_budget),
            ..RunnerConfig::default()
        },
    )
    .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    // The projections stop last, after the requests drained: a request still running at the
    // signal may write and then read its own write (which waits for the projections), and the
    // final snapshot should hold everything acknowledged.
    let (projections_stop_tx, projections_stop_rx) = watch::channel(false);
    let runner_task = tokio::spawn(runner.run(stopped(projections_stop_rx)));

    let commands = Arc::new(Commands::new(Arc::clone(&log)));
    // With several replicas on one store, one of them runs each timed process (leader locks:
    // the process itself on the embedded store, an advisory lock on PostgreSQL).
    let services = pop_reapers::Services {
        store: Arc::clone(&log),
        commands: Arc::clone(&commands),
        projections: projections.clone(),
        leadership: Arc::clone(&backend.leadership),
    };
    let api_config = ApiConfig {
        lease: Duration::from_secs(args.lease)
            .clamp(pop_api::config::MIN_LEASE, pop_api::config::MAX_LEASE),
        max_wait: Duration::from_secs(args.max_wait),
        max_subscriptions_per_principal: args.max_subscriptions_per_principal,
        metrics_insight_labels: args.metrics_insight_labels,
        max_live_agendas_per_customer: args.max_live_agendas_per_customer,
        max_live_bytes_per_customer: args.max_live_bytes_per_customer,
        max_retained_bytes_per_customer: args.max_retained_bytes_per_customer,
        max_log_bytes_per_customer: args.max_log_bytes_per_customer,
        max_upload_bytes_per_second: args.max_upload_bytes_per_second,
        max_payload_bytes: args.max_payload_bytes,
        max_params_bytes: args.max_params_bytes,
        retries: args.reapers.retry_interval > 0,
        retry_backoff: crate::reap::backoff(&args.reapers),
        graphql_tracing: crate::telemetry::exporting(),
        pop_errors_in_body: args.pop_errors_in_body,
        ..ApiConfig::default()
    };
    let state = AppState::new(log, commands, projections, tokens, api_config);
    // After the API state, which installs the metrics recorder the processes report to.
    let quotas = pop_reapers::retry::MemoryQuotas {
        live_bytes: args.max_live_bytes_per_customer,
        retained_bytes: args.max_retained_bytes_per_customer,
    };
    let mut reaper_tasks = crate::reap::spawn_all(&services, &args.reapers, quotas, {
        let stop_rx = stop_rx.clone();
        move || stopped(stop_rx.clone())
    });
    if args.scheduler {
        let scheduler =
            Scheduler::new(Arc::clone(&services.commands), services.projections.clone());
        let leadership = Arc::clone(&services.leadership);
        let stop = stopped(stop_rx.clone());
        let clock = pop_store::clock::floored(Arc::clone(&services.store));
        reaper_tasks.push(process::spawn(scheduler, leadership, clock, stop));
    }
    if args.checkpoint_every == 0 && backend.commitment().is_some() {
        tracing::warn!(
            "not sealing the log into signed checkpoints (--checkpoint-every 0): `pop verify` \
             needs the same setting (or --max-unsealed-span 0) to accept the unsealed events"
        );
    }
    if let Some((commitment, key, previous)) = sealing {
        let every = Duration::from_secs(args.checkpoint_every);
        let stop = stopped(stop_rx.clone());
        let witness = crate::checkpoints::Witness::of(
            &data_dir,
            args.checkpoint_witness.as_deref(),
            args.store_url.as_deref(),
        );
        let health = Arc::clone(&services.commands);
        let sealer = pop_store::commitment::Sealer::new(key)
            .handing_over(previous)
            .taking_over_unwitnessed(args.checkpoint_takeover_unwitnessed);
        reaper_tasks
            .push(crate::checkpoints::spawn(commitment, sealer, witness, health, every, stop));
    }
    // The log verified every --verify-every, on /metrics (pop_verify_*): the stores that keep
    // digests and checkpoints (not KurrentDB, which has none).
    if args.verify_every > 0 && backend.commitment().is_some() {
        let log = match args.store_url.as_deref() {
            Some(url) => crate::verifier::Log::Postgres(url.to_owned()),
            None => crate::verifier::Log::Embedded(args.store.db_path()),
        };
        let verifier = crate::verifier::Verifier {
            log,
            key: crate::checkpoints::verifying_key(&data_dir, args.checkpoint_key.as_deref(), None)
                .context("loading the checkpoint key to verify the log with")?,
            witness: crate::checkpoints::Witness::of(
                &data_dir,
                args.checkpoint_witness.as_deref(),
                args.store_url.as_deref(),
            ),
        };
        let every = Duration::from_secs(args.verify_every);
        reaper_tasks.push(crate::verifier::spawn(verifier, every, stopped(stop_rx.clone())));
    }
    // The pod reaper only with `--pod-reaper-namespace`.
    let pods = Arc::clone(&services.leadership);
    reaper_tasks.extend(
        crate::reap::spawn_pods(pods, &args.reapers, stopped(stop_rx.clone()))
            .await
            .context("starting the pod reaper")?,
    );
    let addr = listener.local_addr().context("reading the bound address")?;
    // One stable line on stdout that scripts and tests read to find the port.
    // Signals are listened for before anyone is told where to connect: a hang-up just after
    // the address was printed killed the server on the spot.
    let stop_signal = shutdown_signal(stop_tx.clone(), "draining requests, then closing the store");
    println!("pop: listening on http://{addr}/graphql");
    // A `--dev` start signs in with the generated token too when an earlier start made it
    // (newcomer18: the README's plain `serve` first, then the tour's `serve --dev`, and the
    // sign-in link the tour says to open had gone by with the first start).
    let dev_admin = match (&fresh_admin, admin_dir) {
        (None, Some(dir)) if args.dev => {
            std::fs::read_to_string(dir.join(pop_api::auth::ADMIN_TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        }
        _ => None,
    };
    if let Some(token) = fresh_admin.as_ref().or(dev_admin.as_ref()) {
        // The sign-in link carries the token in the URL fragment, which a browser never sends
        // to the server (so it reaches no access log); the dashboard moves it into the tab's
        // session and drops it from the address bar.
        println!("pop: dashboard: {}", dashboard_url(addr, Some(token)));
    } else {
        println!("pop: dashboard: {}", dashboard_url(addr, None));
    }
    tracing::info!(%addr, store = %backend.describe, "pop is serving");
    if args.dev {
        let admin = admin_dir.map(|d| d.join(pop_api::auth::ADMIN_TOKEN_FILE));
        tokio::spawn(dev_setup(format!("http://{addr}"), admin, data_dir.clone()));
    }

    let ws_limits = pop_api::ws::WsLimits {
        max_queued_bytes: args.ws_max_queued_bytes,
        max_connections_per_principal: args.ws_max_connections_per_principal,
        ..pop_api::ws::WsLimits::default()
    };
    let timeouts = pop_api::serve::HttpTimeouts {
        header_read: Duration::from_secs(args.http_header_timeout.max(1)),
        idle: Duration::from_secs(args.http_idle_timeout.max(1)),
    };
    let mut router = pop_api::router_with(state.clone(), ws_limits);
    if crate::telemetry::exporting() {
        // A span per request (only then: without an exporter nobody would record it).
        router = router.layer(axum::middleware::from_fn(crate::telemetry::trace_request));
    }
    let server = pop_api::serve::serve(listener, router, timeouts, stop_signal);
    let mut served = tokio::spawn(server);
    // Run until a signal (then give in-flight requests a bounded time) or until the server
    // stops by itself.
    let outcome = tokio::select! {
        outcome = &mut served => Some(outcome),
        () = stopped(stop_rx) => {
            // WebSockets are not part of the HTTP drain: close them (1001) first.
            state.shutdown().await;
            tokio::time::timeout(DRAIN_TIMEOUT, served).await.ok()
        }
    };
    let _ = stop_tx.send(true);
    match outcome {
        Some(Ok(())) => tracing::info!("http server drained"),
        Some(Err(e)) => tracing::error!(error = %e, "http server task failed"),
        None => tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still open at shutdown"),
    }
    for task in reaper_tasks {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "timed process task failed");
        }
    }
    // Requests and timed processes are done: the projections apply what they wrote, take the
    // last snapshot and stop.
    let written = state.app().commands().written();
    if !runner_task.is_finished()
        && let Err(e) = state.projections().wait_for(written, PROJECTIONS_CATCH_UP).await
    {
        tracing::warn!(error = %e, "stopping the projections before they applied every acknowledged write");
    }
    let _ = projections_stop_tx.send(true);
    match runner_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "projections stopped with an error"),
        Err(e) => tracing::error!(error = %e, "projections task failed"),
    }
    backend.close().await?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// The memory budget of the read models: `--memory-budget` in bytes (0: none), else 80 % of
/// the container's memory limit (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`) when it
/// has one, so a replica nearing its limit degrades instead of being OOM-killed.
fn memory_budget(given: Option<u64>) -> Option<u64> {
    if let Some(bytes) = given {
        if (1..1 << 20).contains(&bytes) {
            // Bytes, not MiB (ops3am20: `--memory-budget 1000` ran degraded from the start).
            tracing::warn!(
                bytes,
                "--memory-budget (POP_MEMORY_BUDGET) is in bytes: {bytes} is under 1 MiB, so the \
                 read models run degraded from the start"
            );
        }
        return (bytes > 0).then_some(bytes);
    }
    let limit = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|text| text.trim().parse::<u64>().ok())
        // cgroup v1 says "no limit" with a number near u64::MAX.
        .filter(|&bytes| bytes < 1 << 50)?;
    let budget = limit / 5 * 4;
    tracing::info!(
        limit_mib = limit >> 20,
        budget_mib = budget >> 20,
        "memory budget from the container's limit"
    );
    Some(budget)
}

/// `pop serve --dev`: once the API answers, what `pop init` creates (with its defaults), with
/// the generated admin token; objects that exist are kept, so every start may do it.
async fn dev_setup(server: String, admin_token: Option<std::path::PathBuf>, data_dir: PathBuf) {
    let Some(path) = admin_token else {
        eprintln!("pop: --dev sets up only with the generated admin token (no --token-file)");
        return;
    };
    let token = std::fs::read_to_string(&path).map(|t| t.trim().to_string()).ok();
    let args = ClientArgs {
        server: server.clone(),
        token,
        data_dir: data_dir.clone(),
        timeout: crate::cli::DEFAULT_CLIENT_TIMEOUT_SECS,
        telemetry: Default::default(),
    };
    let result = async {
        let client = crate::client::Client::new(&args)?;
        crate::verbs::init(&client, &crate::verbs::InitSpec::default()).await
    }
    .await;
    match result {
        Ok(done) => {
            for line in done.lines {
                println!("pop: --dev: {line}");
            }
            // The clients' flags unless they are the defaults (newcomer6: a hint without the
            // data directory failed as written).
            // Run from pop's source folder (the examples are there), not necessarily where
            // this server runs: unless that is it, the data directory is named in full.
            let here = std::path::Path::new("examples/handlers.toml").exists();
            let at = crate::cli::client_flags(&server, &data_dir, here);
            println!(
                "pop: --dev: next, in another terminal, from pop's source folder (the \
                 examples are there): pop worker{at} --insight encode --handlers \
                 examples/handlers.toml, then: pop submit{at} --watch examples/encode.json"
            );
        }
        Err(e) => eprintln!("pop: --dev: the setup failed: {e:#}"),
    }
}

/// The store `args` name. A shared store that does not answer yet (its database down or
/// starting, its credentials refused) is tried again for `--store-connect-wait`, each failure a
/// WARN naming why (operator60 M3: `pop serve` ended at once when PostgreSQL was down, and
/// under Kubernetes a cold start of the database left the pods in CrashLoopBackOff for minutes
/// after it was back).
async fn open_backend(args: &ServeArgs) -> anyhow::Result<Backend> {
    let wait = std::time::Duration::from_secs(args.store_connect_wait);
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        let opened = Backend::open_sized(
            &args.store,
            args.store_url.as_deref(),
            args.durability,
            usize::from(args.pg_pool_size),
            args.min_free_disk_mib.saturating_mul(1024 * 1024),
            crate::backend::Accepting {
                chain_unchained: args.chain_unchained_history,
                wal_damage: args.accept_wal_damage,
            },
        )
        .await;
        let e = match opened {
            Ok(backend) => return Ok(backend),
            Err(e) => e,
        };
        let unavailable = e
            .chain()
            .find_map(|c| c.downcast_ref::<pop_store::StoreError>())
            .is_some_and(pop_store::StoreError::is_unavailable);
        let waited = started.elapsed();
        if args.store_url.is_none() || !unavailable || waited >= wait {
            if args.store_url.is_some() && unavailable && !wait.is_zero() {
                return Err(e.context(format!(
                    "the store did not answer within --store-connect-wait ({} s)",
                    wait.as_secs()
                )));
            }
            return Err(e);
        }
        // The last pause ends with the wait: a 3 s wait tries for 3 s (not 1 s and a pause
        // that would have passed it).
        let pause_now = pause.min(wait - waited);
        tracing::warn!(
            error = %format!("{e:#}"),
            waited_secs = waited.as_secs(),
            retry_in_ms = u64::try_from(pause_now.as_millis()).unwrap_or(u64::MAX),
            wait_secs = wait.as_secs(),
            "the store does not answer yet; trying again (--store-connect-wait)"
        );
        tokio::time::sleep(pause_now).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
}
