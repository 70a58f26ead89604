//! The API's Prometheus metrics: request latencies and outcomes, error codes, commands
//! (appends) by mutation, active subscriptions, and — computed at scrape time — how far the
//! projections are behind the store's head. One process-wide recorder, installed on first
//! use, because the `metrics` facade has one global recorder.
//!
//! Every metric has a `# HELP` line ([`DESCRIPTIONS`]); `deploy/grafana/pop.json` is a
//! Grafana dashboard over them (queues, claim latency, lifecycle rates, projection lag).
//!
//! Tenant ids stay out of the labels by default: `/metrics` answers without a token, so the
//! per-insight series below carry the `insight` label only with `pop serve
//! --metrics-insight-labels` ([`pop_app::AppConfig::metrics_insight_labels`]); without it each
//! is one unlabelled total over every insight. No series is labelled by customer.
//!
//! Work metrics (issue 4, item 5):
//! - `pop_insight_queue_depth{insight}` (gauge, scrape time): agendas of the insight in phase
//!   `queued` (WAITING/queued) in this process's read models.
//! - `pop_insight_waiting{insight}` (gauge, scrape time): agendas of the insight whose
//!   processingState is WAITING (phases added, queued, scheduled, pending and any other
//!   WAITING message). Both gauges cover the first [`MAX_EXPORTED_INSIGHTS`] insights in id
//!   order; an insight no longer exported (deleted) is set to 0 at the next scrape.
//! - `pop_claims_total{insight}` (counter): agendas this process handed out through
//!   `getAgenda`.
//! - `pop_claim_latency_seconds` (histogram): per claim, the claim's time minus the agenda's
//!   `updatedTime` as read from the read model while it was `queued` — the time of its
//!   `AgendaQueued` event (every event sets `updatedTime`, and nothing else happens to a
//!   queued agenda), so a requeued agenda counts from its latest queueing.
//! - `pop_lease_expiries_total` (counter): `AgendaTimedOut` changes this process's change feed
//!   carried after the projections caught up (every lease expiry recorded in the log from then
//!   on, whichever replica reclaimed it), counted by one small task per [`crate::AppState`]
//!   (see [`spawn_lease_expiry_counter`]).

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pop_domain::agenda::type_name;
use pop_projections::{Change, Phase};

pub use pop_app::live::SUBSCRIPTIONS_ACTIVE;
pub use pop_app::metrics::{CLAIM_LATENCY_SECONDS, CLAIMS, COMMANDS};
pub use pop_app::reads::WAITING_PHASES;
use tokio::sync::{broadcast, watch};

pub const REQUESTS: &str = "pop_api_requests_total";
pub const REQUEST_SECONDS: &str = "pop_api_request_duration_seconds";
/// Requests to the POP REST surface, by route template (a bounded set) and HTTP status.
pub const REST_REQUESTS: &str = "pop_api_rest_requests_total";
pub const REST_REQUEST_SECONDS: &str = "pop_api_rest_request_duration_seconds";
pub const ERRORS: &str = "pop_api_errors_total";
pub const STORE_HEAD: &str = "pop_store_head_position";
pub const STORE_UP: &str = "pop_store_up";
pub const PROJECTION_APPLIED: &str = "pop_projection_applied_position";
pub const PROJECTION_LAG: &str = "pop_projection_lag_events";
pub const PROJECTION_READY: &str = "pop_projection_ready";
pub const PROJECTION_SKIPPED: &str = "pop_projection_skipped_events";
pub const PROJECTION_DEGRADED: &str = "pop_projection_degraded";
pub const INSIGHT_QUEUE_DEPTH: &str = "pop_insight_queue_depth";
pub const INSIGHT_WAITING: &str = "pop_insight_waiting";
pub const AGENDA_BYTES: &str = "pop_read_model_agenda_bytes";
pub const LEASE_EXPIRIES: &str = "pop_lease_expiries_total";
/// The newest signed checkpoint of the log this process sealed, or found signed by its key
/// (`server/src/checkpoints.rs`).
pub const CHECKPOINT_SEQ: &str = "pop_checkpoint_seq";
pub const CHECKPOINT_POSITION: &str = "pop_checkpoint_position";
pub const CHECKPOINT_EVENTS: &str = "pop_checkpoint_events";
pub const CHECKPOINT_SEALED: &str = "pop_checkpoint_sealed_timestamp_seconds";
/// 1 while the store lacks, or holds another, checkpoint than the one this process witnessed:
/// its checkpoints were deleted or replaced, and sealing has stopped.
pub const CHECKPOINT_WITNESS_BROKEN: &str = "pop_checkpoint_witness_broken";
/// 1 while this process does not seal checkpoints, whatever the reason (the log says why).
pub const CHECKPOINT_SEALING_REFUSED: &str = "pop_checkpoint_sealing_refused";
/// 1 while this process cannot write its witness file (a full or read-only data directory):
/// the witness falls behind the checkpoints, so deleting the newer ones would go unseen.
pub const CHECKPOINT_WITNESS_STALE: &str = "pop_checkpoint_witness_stale";
/// The log as `pop serve --verify-every` last verified it (`server/src/verifier.rs`).
pub const VERIFY_RUNS: &str = "pop_verify_runs_total";
pub const VERIFY_BROKEN: &str = "pop_verify_broken";
pub const VERIFY_CHECKPOINT_SEQ: &str = "pop_verify_checkpoint_seq";
pub const VERIFY_EVENTS: &str = "pop_verify_events";
pub const VERIFY_INTACT_TIMESTAMP: &str = "pop_verify_last_intact_timestamp_seconds";
/// The database server's clock minus this replica's (PostgreSQL; absent on the embedded store).
pub const STORE_CLOCK_OFFSET: &str = "pop_store_clock_offset_seconds";
/// The store's group commits and the requests they answered: their ratio is how many appends
/// one durable commit carries.
pub const STORE_GROUP_COMMITS: &str = "pop_store_group_commits_total";
pub const STORE_GROUP_COMMIT_REQUESTS: &str = "pop_store_group_commit_requests_total";

/// What a metric is, for its `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the `pop` process exports, with its `# HELP` text: the API's, the
/// application layer's and the timed processes' (`pop_process_*`, recorded in
/// `reapers/src/process.rs`, which this crate does not depend on). Described once when the
/// recorder is installed; a test checks that `/metrics` has a `# HELP` for every series and
/// that the Grafana dashboard in `deploy/grafana/` queries only these names.
pub const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        "GraphQL requests answered (HTTP and WebSocket operations), by outcome (ok, error).",
    ),
    (
        REQUEST_SECONDS,
        Kind::Histogram,
        "Time to answer a GraphQL request, in seconds; a getAgenda's wait for work to come \
         (waitSeconds) is left out.",
    ),
    (
        REST_REQUESTS,
        Kind::Counter,
        "Requests to the POP REST surface, by route template and HTTP status.",
    ),
    (
        REST_REQUEST_SECONDS,
        Kind::Histogram,
        "Time to answer a POP REST request, in seconds, by route template; a getAgenda's wait \
         for work to come is left out.",
    ),
    (ERRORS, Kind::Counter, "Errors answered to clients, by error code."),
    (
        AGENDA_BYTES,
        Kind::Gauge,
        "Bytes the agendas in the read models hold, at scrape time, in all: kind=live as --max-live-bytes-per-customer counts them, kind=retained (finished) as --max-retained-bytes-per-customer does, kind=log (what their streams take in the log, live and finished) as --max-log-bytes-per-customer does.",
    ),
    (STORE_HEAD, Kind::Gauge, "The event log's head position (commit part), read at scrape time."),
    (
        STORE_UP,
        Kind::Gauge,
        "1 when the event store answered this scrape's read of the log head, else 0 (the head, applied and lag gauges then keep their last values).",
    ),
    (
        PROJECTION_APPLIED,
        Kind::Gauge,
        "The log position the read models have applied, at scrape time.",
    ),
    (
        PROJECTION_LAG,
        Kind::Gauge,
        "Events the read models are behind the log's head, at scrape time.",
    ),
    (
        PROJECTION_READY,
        Kind::Gauge,
        "1 when this replica is ready, exactly when /readyz answers 200: the read models caught up with the log since start, they still follow it, and the store serves requests; else 0 (/readyz says why).",
    ),
    (
        PROJECTION_SKIPPED,
        Kind::Gauge,
        "Events the projections skipped because they could not be decoded.",
    ),
    (
        PROJECTION_DEGRADED,
        Kind::Gauge,
        "1 when the process passed its memory budget and the read models hold live agendas compressed (slower; raise the budget or lower the quotas, then restart), else 0.",
    ),
    (
        INSIGHT_QUEUE_DEPTH,
        Kind::Gauge,
        "Agendas in the insight's queue (WAITING/queued), every customer's, by insight.",
    ),
    (
        INSIGHT_WAITING,
        Kind::Gauge,
        "Agendas of the insight whose processingState is WAITING, every customer's, by insight.",
    ),
    (
        LEASE_EXPIRIES,
        Kind::Counter,
        "Leases that expired (AgendaTimedOut) seen on the change feed since this process caught up.",
    ),
    (
        CHECKPOINT_SEQ,
        Kind::Gauge,
        "Sequence number of the newest signed checkpoint of the log, sealed or verified by this process.",
    ),
    (
        CHECKPOINT_POSITION,
        Kind::Gauge,
        "Log position (commit part) the newest verified checkpoint covers up to.",
    ),
    (CHECKPOINT_EVENTS, Kind::Gauge, "Log entries the newest verified checkpoint covers."),
    (
        CHECKPOINT_SEALED,
        Kind::Gauge,
        "When the newest verified checkpoint was sealed, in seconds since the epoch.",
    ),
    (
        CHECKPOINT_WITNESS_BROKEN,
        Kind::Gauge,
        "1 while the store lacks or replaced the checkpoint this process witnessed (sealing stopped; run pop verify), else 0.",
    ),
    (
        CHECKPOINT_SEALING_REFUSED,
        Kind::Gauge,
        "1 while this process refuses to seal checkpoints of the log (the store's newest checkpoint is signed by another key — replicas of one store need the same --checkpoint-key —, or the witness is broken; the log says why once), else 0. Events stay unsealed meanwhile, and pop verify reports them.",
    ),
    (
        CHECKPOINT_WITNESS_STALE,
        Kind::Gauge,
        "1 while this process cannot write its checkpoint witness file (a full or read-only data directory; the log says why): the witness falls behind the checkpoints, so deleting newer checkpoints would go unseen. Else 0.",
    ),
    (
        VERIFY_RUNS,
        Kind::Counter,
        "Verifications of the whole log this server ran (--verify-every), by outcome: intact, broken (the log does not verify: the log names where; run pop verify), not_verified (this server's key signed none of the checkpoints: a key rotation not yet handed over, which its next seal does), failed (the store could not be read to the end; tried again next time).",
    ),
    (
        VERIFY_BROKEN,
        Kind::Gauge,
        "1 when this server's last verification of the log found a break (digest, chain, head, tombstone or signed checkpoint; the log names stream, version and position), else 0. Alert on it.",
    ),
    (
        VERIFY_CHECKPOINT_SEQ,
        Kind::Gauge,
        "The newest signed checkpoint this server's last intact verification checked against the log (0: none covers it yet).",
    ),
    (VERIFY_EVENTS, Kind::Gauge, "Events this server's last intact verification recomputed."),
    (
        VERIFY_INTACT_TIMESTAMP,
        Kind::Gauge,
        "When this server's last verification that found the log intact ended, in seconds since the epoch (0 until one did): alert when it is older than a few --verify-every.",
    ),
    (
        STORE_CLOCK_OFFSET,
        Kind::Gauge,
        "PostgreSQL only: the database server's clock minus this replica's, in seconds, measured every 30 s. pop stamps commands, leases and commits with the server's time, so replicas agree whatever their own clocks say; a large value means this host's clock is wrong (NTP).",
    ),
    (
        STORE_GROUP_COMMITS,
        Kind::Counter,
        "Group commits this process's event store writers made since it started (SQLite and PostgreSQL; each one transaction, with the default durability one fsync; none on KurrentDB).",
    ),
    (
        STORE_GROUP_COMMIT_REQUESTS,
        Kind::Counter,
        "Requests those group commits answered (appends; on the embedded store also deletes and checkpoint seals); divided by pop_store_group_commits_total, the requests one commit carries.",
    ),
    (SUBSCRIPTIONS_ACTIVE, Kind::Gauge, "Live follows (GraphQL subscriptions) being served."),
    (
        COMMANDS,
        Kind::Counter,
        "Commands executed, by command name and outcome (ok; refused: the command was not taken, for the client's reasons or a conflict; unavailable: the store could not serve it).",
    ),
    (CLAIMS, Kind::Counter, "Agendas this process handed out through getAgenda, by insight."),
    (
        CLAIM_LATENCY_SECONDS,
        Kind::Histogram,
        "Per claim, how long the agenda waited queued before getAgenda handed it out, in seconds.",
    ),
    (
        "pop_reclaimer_leases_waiting",
        Kind::Gauge,
        "Expired leases the reclaimer's last cycle left for their holders to renew: after pop serve starts, or after an outage of the store, each lease gets its length again before it is timed out (nobody could report meanwhile). 0 when none; the log names the first and when it becomes reclaimable.",
    ),
    (
        "pop_retry_agendas_out_of_attempts",
        Kind::Gauge,
        "Failed agendas the retry process's last cycle found with no retry left (attempts used up, or a failure its executor called deterministic), kept until the data reaper removes them: its rise is work failing for good. Exported by the replica that leads the retry process (alert on max over replicas).",
    ),
    (
        "pop_process_cycles_total",
        Kind::Counter,
        "Cycles of a timed process (scheduler, reapers), by process and dry_run.",
    ),
    (
        "pop_process_planned_total",
        Kind::Counter,
        "Actions the timed process's cycles planned, by process.",
    ),
    (
        "pop_process_cycle_seconds",
        Kind::Histogram,
        "Time one cycle of a timed process took, in seconds, by process.",
    ),
    (
        "pop_process_actions_total",
        Kind::Counter,
        "Actions a timed process carried out, by process and outcome.",
    ),
    (
        "pop_process_skipped_cycles_total",
        Kind::Counter,
        "Cycles a timed process skipped, by process and reason (e.g. not the leader).",
    ),
    (
        "pop_process_leader",
        Kind::Gauge,
        "1 while this replica holds the timed process's leader lock, else 0. Summed over the replicas of one store it is 1 per process; 0 for long means no replica runs it (alert on it).",
    ),
];

fn describe_all() {
    for (name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// The series an alert or a dashboard panel of deploy/ reads that have no labels to wait for,
/// at 0 from the start (operator58 L3: after a restart `pop_claims_total`, the claim latency
/// and the active subscriptions were missing until first used, and an `absent()` alert or an
/// empty panel misled). Claims by insight (`--metrics-insight-labels`) and REST requests by
/// route and status appear with their first.
fn at_zero() {
    metrics::gauge!(SUBSCRIPTIONS_ACTIVE).set(0.0);
    metrics::counter!(CLAIMS).increment(0);
    // A histogram is rendered once registered, empty until its first observation.
    let _ = metrics::histogram!(CLAIM_LATENCY_SECONDS);
}

/// Most insights whose queue gauges one scrape exports: keeps a scrape's cost and the series
/// count bounded however many insights are configured.
pub const MAX_EXPORTED_INSIGHTS: usize = 1_000;

/// Claim latency buckets in seconds: from a queue that is drained at once (milliseconds) to
/// work that waits for a free executor for minutes.
const CLAIM_LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Latency buckets in seconds: a read answers in well under a millisecond, a command in a few
/// (an fsync'd append); anything near a second is a problem worth seeing in its own bucket.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The timed processes' cycle time (`pop_process_cycle_seconds`), in seconds: a reaper's pass
/// over an idle store takes milliseconds, a data reap of a large backlog minutes.
const PROCESS_CYCLE_SECONDS: &str = "pop_process_cycle_seconds";
const PROCESS_CYCLE_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The histograms exported with buckets (`_bucket` series, for `histogram_quantile`); any
/// other histogram is a summary.
const BUCKETED: &[(&str, &[f64])] = &[
    (REQUEST_SECONDS, LATENCY_BUCKETS),
    (CLAIM_LATENCY_SECONDS, CLAIM_LATENCY_BUCKETS),
    (PROCESS_CYCLE_SECONDS, PROCESS_CYCLE_BUCKETS),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first call. `None` when
/// another recorder was installed first (the embedding program chose its own exporter).
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = BUCKETED.iter().try_fold(PrometheusBuilder::new(), |b, (name, buckets)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; latencies are summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe_all();
                    at_zero();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

pub(crate) fn request(elapsed: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_SECONDS).record(elapsed.as_secs_f64());
}

/// One request to the POP REST surface; `route` is the route's template (`/pop/agenda/{id}`)
/// or `unrouted`, never the raw path, so the label set stays small.
pub(crate) fn rest_request(route: &'static str, status: u16, elapsed: Duration) {
    metrics::counter!(REST_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
    metrics::histogram!(REST_REQUEST_SECONDS, "route" => route).record(elapsed.as_secs_f64());
}

pub(crate) fn error(code: &str) {
    metrics::counter!(ERRORS, "code" => code.to_string()).increment(1);
}

/// The distance between two log positions in events, for sequence positions (every
/// backend pop has today); two-part positions use their commit parts.
pub(crate) fn lag(head: pop_store::Position, applied: pop_store::Position) -> u64 {
    head.commit().saturating_sub(applied.commit())
}

/// Sets the gauges that are computed at scrape time.
/// The projection and store gauges of one scrape: `head` when the store answered (else the
/// head-dependent gauges keep their last values and `pop_store_up` is 0); `ready` exactly as
/// `/readyz` decides it.
pub(crate) fn projection_gauges(
    head: Option<pop_store::Position>,
    applied: pop_store::Position,
    ready: bool,
    skipped: u64,
    degraded: bool,
) {
    metrics::gauge!(STORE_UP).set(if head.is_some() { 1.0 } else { 0.0 });
    if let Some(head) = head {
        metrics::gauge!(STORE_HEAD).set(head.commit() as f64);
        metrics::gauge!(PROJECTION_LAG).set(lag(head, applied) as f64);
    }
    metrics::gauge!(PROJECTION_APPLIED).set(applied.commit() as f64);
    metrics::gauge!(PROJECTION_READY).set(if ready { 1.0 } else { 0.0 });
    metrics::gauge!(PROJECTION_SKIPPED).set(skipped as f64);
    metrics::gauge!(PROJECTION_DEGRADED).set(if degraded { 1.0 } else { 0.0 });
}

/// [`STORE_CLOCK_OFFSET`], when the store follows another clock than this process's.
pub(crate) fn clock_gauge(offset: Option<chrono::TimeDelta>) {
    if let Some(offset) = offset {
        let seconds = offset.num_microseconds().map_or(f64::NAN, |m| m as f64 / 1e6);
        metrics::gauge!(STORE_CLOCK_OFFSET).set(seconds);
    }
}

/// [`STORE_GROUP_COMMITS`] and [`STORE_GROUP_COMMIT_REQUESTS`], when the store groups its
/// commits (read from the store at scrape time).
pub(crate) fn group_commit_counters(counts: Option<pop_store::CommitCounts>) {
    if let Some(counts) = counts {
        metrics::counter!(STORE_GROUP_COMMITS).absolute(counts.groups);
        metrics::counter!(STORE_GROUP_COMMIT_REQUESTS).absolute(counts.requests);
    }
}

/// The insights the last scrape exported gauges for, so that one no longer exported (deleted,
/// or pushed past the bound) is set to 0 rather than left at its last value.
static EXPORTED_INSIGHTS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The queue gauges of the first [`MAX_EXPORTED_INSIGHTS`] insights in id order, from the read
/// models; insights exported before and not now are set to 0. Without `labelled` (the
/// default: insight ids are tenant data) one unlabelled total over every insight instead.
pub(crate) fn insight_gauges(models: &pop_projections::ReadModels, labelled: bool) {
    let agendas = models.agendas();
    if !labelled {
        let (mut queued, mut waiting) = (0usize, 0usize);
        for insight in models.all_insights() {
            queued += agendas.count_in(&insight.id, Phase::Queued);
            waiting +=
                WAITING_PHASES.iter().map(|p| agendas.count_in(&insight.id, *p)).sum::<usize>();
        }
        metrics::gauge!(INSIGHT_QUEUE_DEPTH).set(queued as f64);
        metrics::gauge!(INSIGHT_WAITING).set(waiting as f64);
        return;
    }
    let mut exported = BTreeSet::new();
    for insight in models.all_insights().take(MAX_EXPORTED_INSIGHTS) {
        let id = insight.id.clone();
        let queued = agendas.count_in(&id, Phase::Queued);
        let waiting: usize = WAITING_PHASES.iter().map(|p| agendas.count_in(&id, *p)).sum();
        metrics::gauge!(INSIGHT_QUEUE_DEPTH, "insight" => id.clone()).set(queued as f64);
        metrics::gauge!(INSIGHT_WAITING, "insight" => id.clone()).set(waiting as f64);
        exported.insert(id);
    }
    let mut last = EXPORTED_INSIGHTS.lock().unwrap_or_else(PoisonError::into_inner);
    for gone in last.difference(&exported) {
        metrics::gauge!(INSIGHT_QUEUE_DEPTH, "insight" => gone.clone()).set(0.0);
        metrics::gauge!(INSIGHT_WAITING, "insight" => gone.clone()).set(0.0);
    }
    *last = exported;
}

/// [`AGENDA_BYTES`] from the read models: totals only (per customer they are tenant data).
pub(crate) fn agenda_bytes_gauges(models: &pop_projections::ReadModels) {
    let all = pop_projections::query::Visibility::All;
    let agendas = models.agendas();
    metrics::gauge!(AGENDA_BYTES, "kind" => "live").set(agendas.live_bytes(&all) as f64);
    metrics::gauge!(AGENDA_BYTES, "kind" => "retained").set(agendas.retained_bytes(&all) as f64);
    metrics::gauge!(AGENDA_BYTES, "kind" => "log").set(agendas.log_bytes(&all) as f64);
}

/// Counts the `AgendaTimedOut` changes of `changes` into [`LEASE_EXPIRIES`] until the feed
/// closes, once the projections have caught up (`caught_up`; the changes of the start-up
/// replay are history, not expiries observed by this process). Spawned on the current Tokio runtime; without one nothing is counted (logged).
/// A lagging receiver loses the changes it skipped (counted as missed in a log line), so the
/// counter is a lower bound under a change-feed overload.
pub(crate) fn spawn_lease_expiry_counter(
    mut changes: broadcast::Receiver<Change>,
    caught_up: watch::Receiver<bool>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no Tokio runtime: {LEASE_EXPIRIES} is not counted");
        return;
    };
    metrics::counter!(LEASE_EXPIRIES).increment(0);
    runtime.spawn(async move {
        loop {
            match changes.recv().await {
                // Not while replaying history at start-up: those expiries happened before.
                Ok(change) if change.event_type == type_name::TIMED_OUT && *caught_up.borrow() => {
                    metrics::counter!(LEASE_EXPIRIES).increment(1);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "lease expiry counter lagged behind the change feed");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// The `# TYPE` lines of a Prometheus text exposition that have no `# HELP` line (names).
pub fn undescribed(exposition: &str) -> Vec<String> {
    let helped: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !helped.contains(name))
        .map(str::to_string)
        .collect()
}

/// The exposition text with its metric families in name order (the exporter writes them in
/// the order of its hash maps, another on every scrape: ops3am16 could not diff two scrapes).
/// A family is its `# HELP`/`# TYPE` lines and its samples, which the exporter writes
/// together, separated from the next by a blank line or the next family's comments.
pub fn in_name_order(text: &str) -> String {
    // (name, comment lines, sample lines)
    let mut families: Vec<(String, Vec<&str>, Vec<&str>)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let comment = line.starts_with('#');
        let kind = |l: &str| if l.starts_with("# HELP ") { 1 } else { 2 };
        let opens = match families.last() {
            None => true,
            // Comments after samples open the next family, and so does a second HELP or TYPE
            // (a family without samples: review-s41b).
            Some((_, comments, samples)) => {
                comment && (!samples.is_empty() || comments.iter().any(|c| kind(c) == kind(line)))
            }
        };
        if opens {
            let name = line
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ")
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            families.push((name, Vec::new(), Vec::new()));
        }
        if let Some((_, comments, samples)) = families.last_mut() {
            if comment { comments.push(line) } else { samples.push(line) }
        }
    }
    families.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(text.len() + families.len());
    for (_, comments, mut samples) in families {
        // Its series in label order too (review-s41: the exporter writes them from a hash map
        // as well); a histogram's series keeps its lines in their order (buckets by `le`,
        // then sum and count): the sort is stable and its key leaves `le` and the suffix out.
        samples.sort_by_cached_key(|line| series_key(line));
        for line in comments.into_iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// A sample line's labels without `le` and `quantile`: the series it belongs to.
fn series_key(line: &str) -> String {
    let Some(open) = line.find('{') else { return String::new() };
    let labels = line[open + 1..].split('}').next().unwrap_or_default();
    labels
        .split(',')
        .filter(|l| !l.starts_with("le=") && !l.starts_with("quantile="))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names a PromQL expression uses (`pop_…`, histogram suffixes stripped).
    fn names_in(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("pop_") {
            let tail = &rest[at..];
            let end =
                tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.push(base.to_string());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn the_grafana_dashboard_queries_only_metrics_pop_exports() {
        let text = include_str!("../../deploy/grafana/pop.json");
        let dashboard: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => panic!("deploy/grafana/pop.json is not JSON: {e}"),
        };
        let panels = dashboard["panels"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut used = BTreeSet::new();
        for panel in panels {
            for target in panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.is_empty(), "a target without expr in {}", panel["title"]);
                used.extend(names_in(expr));
            }
        }
        // A `_bucket` series exists only for a histogram exported with buckets.
        for panel in panels {
            for target in panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for (at, _) in expr.match_indices("_bucket") {
                    let name = &expr[expr[..at].rfind("pop_").unwrap_or(0)..at];
                    assert!(
                        BUCKETED.iter().any(|(b, _)| *b == name),
                        "{} queries {name}_bucket, but {name} has no buckets",
                        panel["title"]
                    );
                }
            }
        }
        let known: BTreeSet<String> = DESCRIPTIONS.iter().map(|d| d.0.to_string()).collect();
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard queries metrics pop does not export: {unknown:?}"
        );
        // Queues, claim latency, lifecycle rates and projection lag are all charted.
        for wanted in [
            INSIGHT_QUEUE_DEPTH,
            INSIGHT_WAITING,
            CLAIM_LATENCY_SECONDS,
            COMMANDS,
            LEASE_EXPIRIES,
            PROJECTION_LAG,
        ] {
            assert!(used.contains(wanted), "the dashboard does not chart {wanted}");
        }
    }

    #[test]
    fn descriptions_are_unique_and_named_like_their_kind() {
        let mut seen = BTreeSet::new();
        for (name, kind, help) in DESCRIPTIONS {
            assert!(seen.insert(*name), "{name} described twice");
            assert!(name.starts_with("pop_") && !help.is_empty(), "{name}");
            if *kind == Kind::Counter {
                assert!(name.ends_with("_total"), "counter {name} should end in _total");
            }
        }
    }

    #[test]
    fn undescribed_finds_types_without_help() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 2\n";
        assert_eq!(undescribed(text), vec!["b".to_string()]);
    }
}

#[cfg(test)]
mod order_tests {
    #[test]
    fn series_come_in_label_order_and_a_histograms_lines_stay_in_theirs() {
        let text = "# TYPE c counter\nc{k=\"b\"} 2\nc{k=\"a\"} 1\n\n\
                    # TYPE h histogram\nh_bucket{k=\"y\",le=\"1\"} 0\nh_bucket{k=\"y\",le=\"+Inf\"} 1\n\
                    h_sum{k=\"y\"} 3\nh_count{k=\"y\"} 1\nh_bucket{k=\"x\",le=\"1\"} 1\n\
                    h_bucket{k=\"x\",le=\"+Inf\"} 1\nh_sum{k=\"x\"} 0.5\nh_count{k=\"x\"} 1\n\n";
        assert_eq!(
            super::in_name_order(text),
            "# TYPE c counter\nc{k=\"a\"} 1\nc{k=\"b\"} 2\n\n\
             # TYPE h histogram\nh_bucket{k=\"x\",le=\"1\"} 1\nh_bucket{k=\"x\",le=\"+Inf\"} 1\n\
             h_sum{k=\"x\"} 0.5\nh_count{k=\"x\"} 1\nh_bucket{k=\"y\",le=\"1\"} 0\n\
             h_bucket{k=\"y\",le=\"+Inf\"} 1\nh_sum{k=\"y\"} 3\nh_count{k=\"y\"} 1\n\n"
        );
    }

    #[test]
    fn a_family_without_samples_keeps_to_itself() {
        let text = "# HELP z Z.\n# TYPE z counter\n# HELP a A.\n# TYPE a gauge\na 1\n";
        assert_eq!(
            super::in_name_order(text),
            "# HELP a A.\n# TYPE a gauge\na 1\n\n# HELP z Z.\n# TYPE z counter\n\n"
        );
    }

    #[test]
    fn families_come_in_name_order_whole() {
        let text = "# HELP b_total B.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\nb_total{x=\"2\"} 3\n\n\
                    # TYPE a gauge\na 1\n\n# HELP c C.\n# TYPE c histogram\nc_bucket{le=\"1\"} 0\nc_sum 0\nc_count 0\n\n";
        assert_eq!(
            super::in_name_order(text),
            "# TYPE a gauge\na 1\n\n# HELP b_total B.\n# TYPE b_total counter\nb_total{x=\"1\"} 2\n\
             b_total{x=\"2\"} 3\n\n# HELP c C.\n# TYPE c histogram\nc_bucket{le=\"1\"} 0\nc_sum 0\nc_count 0\n\n"
        );
    }
}
