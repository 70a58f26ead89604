//! The puller: claims agendas of one or more insights (`getAgenda`) while fewer than
//! `max_agendas` are in flight, hands each to an executor task, and on shutdown stops claiming
//! and waits for its executors to finish or hand their agendas back (each sends a final report
//! and releases it).
//!
//! Idle: once every insight came back empty in a row, the next claims ask the server to wait
//! for work (`getAgenda` with `waitSeconds`, [`PullConfig::wait_for_work`]): the server
//! answers as soon as an agenda is queued, so an idle worker claims new work without a poll
//! interval. With several insights each waits in turn for at most [`MULTI_INSIGHT_WAIT`], so
//! work on another insight waits that long at most. The puller backs off exponentially
//! (capped) only when that does not work: a call failed, or an empty answer came back well
//! before the wait it asked for (a server that does not wait, or one stopping). On shutdown a
//! waiting claim is abandoned (the server hands back what it claims for a request that went
//! away; an answer already on its way when the worker stops is lost, and its agendas come
//! back when their lease runs out).
//! It says once, on the first claim that shows it, when the server's lease leaves no safe
//! heartbeat (see [`crate::report::heartbeat_for`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::execute::{ExecEnv, Outcome, execute};
use crate::report::heartbeat_for;

/// How the puller behaves.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The insights to take work from, asked in turn.
    pub insights: Vec<String>,
    /// Most agendas executing at once (across insights).
    pub max_agendas: usize,
    /// Most operations running at once per insight (e.g. pods of a namespace); `None` for no
    /// limit beyond `max_agendas` × `max_parallel`.
    pub max_operations_per_insight: Option<usize>,
    /// Most `getAgenda` calls in flight at once (see [`run`]).
    pub max_concurrent_claims: usize,
    /// How long an idle puller asks the server to wait for work per `getAgenda` (whole
    /// seconds, at most 30); zero polls with backoff only (servers before `waitSeconds`).
    pub wait_for_work: Duration,
    /// First pause after an empty poll; doubled per empty poll up to `max_idle_backoff`.
    pub min_idle_backoff: Duration,
    pub max_idle_backoff: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            insights: Vec::new(),
            max_agendas: 4,
            max_operations_per_insight: None,
            max_concurrent_claims: 1,
            wait_for_work: Duration::from_secs(20),
            min_idle_backoff: Duration::from_millis(100),
            max_idle_backoff: Duration::from_secs(5),
        }
    }
}

/// What a puller did, for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullStats {
    pub claimed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub refused: u64,
    pub cancelled: u64,
    pub handed_back: u64,
    /// Executions still sending their last report when the stop's time was up
    /// ([`STOP_MARGIN`] past the shutdown grace): left to the server's reclaimer, which takes
    /// each back once its lease runs out.
    pub abandoned: u64,
    /// Set when the server refused the worker's token (`UNAUTHENTICATED`) or its role
    /// (`FORBIDDEN`: a user's token may not take work): the puller stopped, since no later
    /// call can succeed with it (ops3am3: a revoked token's worker logged the refusal every
    /// 5 s for ever and looked healthy to its supervisor; newcomer6: a user's token, likewise).
    pub token_refused: Option<String>,
}

/// How long past the shutdown grace a stopping worker still waits for its executions' last
/// reports (a server that is down would otherwise hold it for a final report's whole retry
/// time, or its lease: dash54 saw a stopping worker still retrying 52 s after SIGTERM, past
/// the grace of 20 s and its pod's termination period).
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Longest wait per `getAgenda` of an idle puller that serves several insights (it asks them
/// in turn).
pub const MULTI_INSIGHT_WAIT: Duration = Duration::from_secs(1);

/// The next pause after an empty poll.
pub fn next_backoff(current: Duration, config: &PullConfig) -> Duration {
    (current * 2).clamp(config.min_idle_backoff, config.max_idle_backoff)
}

/// One `getAgenda` call's answer.
struct ClaimDone {
    insight: String,
    /// The slots it asked for (reserved while it ran).
    asked: usize,
    /// It asked the server to wait for work.
    waited: bool,
    /// It answered well before the wait it asked for.
    early: bool,
    result: Result<Vec<crate::api::Claimed>, crate::api::ApiError>,
}

/// Runs until `shutdown` turns true, then drains its executors.
///
/// Up to `max_concurrent_claims` `getAgenda` calls run at once (default 1), each for the slots
/// free when it started (those slots are reserved until it answers). More than one looked like
/// a way to share the server's group commit, but concurrent calls race for the same oldest
/// queued agendas on the server and measured slower (BENCHMARKS.md, Worker). Insights are asked
/// in turn; only after every insight came back empty in a row does the puller wait for work
/// (see the module doc).
pub async fn run(env: ExecEnv, config: PullConfig, shutdown: watch::Receiver<bool>) -> PullStats {
    let env_grace = env.config.shutdown_grace;
    let slots: BTreeMap<String, Arc<Semaphore>> = config
        .max_operations_per_insight
        .map(|n| {
            config
                .insights
                .iter()
                .map(|i| (i.clone(), Arc::new(Semaphore::new(n.max(1)))))
                .collect()
        })
        .unwrap_or_default();
    let max_agendas = config.max_agendas.max(1);
    let max_claims = config.max_concurrent_claims.max(1);
    let insights = config.insights.len().max(1);
    let wait = match config.insights.len() {
        0 | 1 => config.wait_for_work,
        _ => config.wait_for_work.min(MULTI_INSIGHT_WAIT),
    };
    let mut stats = PullStats::default();
    let mut executing: JoinSet<Outcome> = JoinSet::new();
    let mut claims: JoinSet<ClaimDone> = JoinSet::new();
    let mut reserved = 0usize;
    let mut backoff = config.min_idle_backoff;
    let mut idle_until: Option<tokio::time::Instant> = None;
    let mut empty_streak = 0usize;
    // Idle: the next claims ask the server to wait for work.
    let mut wait_next = false;
    // In this streak of empty answers, a call failed or a wait came back early.
    let mut trouble = false;
    let mut next_insight = 0usize;
    let mut shutdown_rx = shutdown.clone();
    let mut lease_warned = false;

    let start = |c: crate::api::Claimed,
                 insight: &str,
                 executing: &mut JoinSet<Outcome>,
                 stats: &mut PullStats,
                 lease_warned: &mut bool| {
        stats.claimed += 1;
        // The agenda's work joins its trace (see `crate::trace`), under one correlation id for
        // all the calls of this claim's work, said in its lines too: the server's log and
        // `pop audit` key on it (auditor59 L2: the worker's lines named the agenda alone).
        let context = crate::trace::Context::of(c.traceparent.clone(), c.tracestate.clone());
        let span = crate::trace::agenda_span(&c.agenda.id, insight, context.as_ref());
        let claim = crate::trace::Work::claimed(context);
        let cid = claim.cid.clone().unwrap_or_else(|| std::sync::Arc::from(""));
        // The customer too: a worker serving several customers may hold two agendas of one id.
        tracing::info!(agenda = %c.agenda.id, customer = %c.agenda.customer_id, insight = %insight, cid = %cid, "claimed");
        if !*lease_warned {
            let now = pop_domain::model::Timestamp::from(std::time::SystemTime::now());
            let configured = env.config.report.heartbeat;
            if let (_, Some(warning)) = heartbeat_for(configured, c.lease.as_ref(), now) {
                *lease_warned = true;
                tracing::warn!("{warning}");
            }
        }
        let env = env.clone();
        let slots = slots.get(insight).cloned();
        let shutdown = shutdown.clone();
        let work = async move {
            let (id, customer) = (c.agenda.id.clone(), c.agenda.customer_id.clone());
            let outcome = execute(&env, c, slots, shutdown).await;
            tracing::info!(agenda = %id, customer = %customer, cid = %cid, outcome = ?outcome, "executed");
            outcome
        };
        executing.spawn(crate::trace::scope(claim, work.instrument(span)));
    };

    while !*shutdown_rx.borrow() && stats.token_refused.is_none() {
        while let Some(done) = executing.try_join_next() {
            count(&mut stats, done);
        }
        let free = max_agendas.saturating_sub(executing.len() + reserved);
        let idle = idle_until.is_some_and(|t| tokio::time::Instant::now() < t);
        if free > 0 && claims.len() < max_claims && !idle && !config.insights.is_empty() {
            idle_until = None;
            let insight = config.insights[next_insight % insights].clone();
            next_insight = next_insight.wrapping_add(1);
            reserved += free;
            let api = env.api.clone();
            let wait = if wait_next { wait } else { Duration::ZERO };
            claims.spawn(async move {
                let started = tokio::time::Instant::now();
                let result = api.get_agenda(&insight, free, wait).await;
                let early = started.elapsed() < wait / 2;
                ClaimDone { insight, asked: free, waited: !wait.is_zero(), early, result }
            });
            continue;
        }
        tokio::select! {
            Some(done) = claims.join_next(), if !claims.is_empty() => {
                match done {
                    Ok(done) => {
                        reserved = reserved.saturating_sub(done.asked);
                        match done.result {
                            Ok(claimed) if !claimed.is_empty() => {
                                empty_streak = 0;
                                wait_next = false;
                                trouble = false;
                                backoff = config.min_idle_backoff;
                                for c in claimed {
                                    start(c, &done.insight, &mut executing, &mut stats, &mut lease_warned);
                                }
                            }
                            Ok(_) => {
                                empty_streak += 1;
                                trouble |= done.waited && done.early;
                            }
                            Err(e) if matches!(e.code(), Some("UNAUTHENTICATED" | "FORBIDDEN")) => {
                                tracing::error!(insight = %done.insight, error = %e, "the server refused this worker's token; stopping");
                                stats.token_refused = Some(e.to_string());
                            }
                            Err(e) if e.code() == Some("NOT_FOUND") => {
                                empty_streak += 1;
                                trouble = true;
                                // (ops3am10: a server started on a new or another data directory
                                // answered this every 5 s with nothing to say why.)
                                tracing::warn!(insight = %done.insight, error = %e, "getAgenda failed: the server knows no insight of this id that this worker's token may see (a server on a new or another data directory or database, an insight deleted or never made: `pop insights` lists the ones the token sees, `pop init` makes one); trying again");
                            }
                            Err(e) => {
                                empty_streak += 1;
                                trouble = true;
                                tracing::warn!(insight = %done.insight, error = %e, "getAgenda failed");
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "a getAgenda task failed"),
                }
                if claims.is_empty() {
                    // Nothing is reserved once no claim is in flight (also after a failed task).
                    reserved = 0;
                    if empty_streak >= insights {
                        // Idle: from now on the server waits for work before it answers.
                        // Pause only when that does not work (or is turned off); the pause
                        // grows while it keeps not working.
                        empty_streak = 0;
                        wait_next = !wait.is_zero();
                        if trouble || wait.is_zero() {
                            trouble = false;
                            idle_until = Some(tokio::time::Instant::now() + backoff);
                            backoff = next_backoff(backoff, &config);
                        } else {
                            backoff = config.min_idle_backoff;
                        }
                    }
                }
            }
            Some(done) = executing.join_next(), if !executing.is_empty() => count(&mut stats, done),
            _ = async {
                match idle_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if idle && claims.is_empty() => {
                idle_until = None;
            }
            _ = shutdown_rx.changed() => {}
        }
    }
    tracing::info!(executing = executing.len(), "stopping: no more claims; waiting for executions");
    let stopped_at = tokio::time::Instant::now();
    // A claim waiting for work is abandoned (the server hands back what it claims for a
    // request that went away); agendas claimed by calls that answered are ours: they get a
    // final report too (their executions see the shutdown at once and hand them back).
    if wait_next {
        claims.abort_all();
    }
    while let Some(done) = claims.join_next().await {
        if let Ok(ClaimDone { insight, result: Ok(claimed), .. }) = done {
            for c in claimed {
                start(c, &insight, &mut executing, &mut stats, &mut lease_warned);
            }
        }
    }
    // Running operations get the grace; the last reports, a margin past it.
    let stop_by = stopped_at + env_grace + STOP_MARGIN;
    loop {
        match tokio::time::timeout_at(stop_by, executing.join_next()).await {
            Ok(Some(done)) => count(&mut stats, done),
            Ok(None) => break,
            Err(_) => {
                stats.abandoned = executing.len() as u64;
                tracing::error!(
                    executions = executing.len(),
                    "stopping without their last reports: the server did not take them within \
                     the shutdown grace and {STOP_MARGIN:?} more; its reclaimer takes each agenda \
                     back once its lease runs out, and it runs again"
                );
                executing.abort_all();
                break;
            }
        }
    }
    stats
}

fn count(stats: &mut PullStats, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok(Outcome::Succeeded) => stats.succeeded += 1,
        Ok(Outcome::Failed(_)) => stats.failed += 1,
        Ok(Outcome::Refused(_)) => stats.refused += 1,
        Ok(Outcome::Cancelled) => stats.cancelled += 1,
        Ok(Outcome::HandedBack) => stats.handed_back += 1,
        Err(e) => {
            tracing::error!(error = %e, "an execution task failed");
            stats.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_backoff_doubles_up_to_its_cap() {
        let config = PullConfig {
            min_idle_backoff: Duration::from_millis(100),
            max_idle_backoff: Duration::from_millis(700),
            ..PullConfig::default()
        };
        let mut b = config.min_idle_backoff;
        let mut seen = Vec::new();
        for _ in 0..5 {
            b = next_backoff(b, &config);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, vec![200, 400, 700, 700, 700]);
    }
}
