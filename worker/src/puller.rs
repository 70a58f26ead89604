//! The puller: claims agendas of one or more insights (`getAgenda`) while fewer than
//! `max_agendas` are in flight, hands each to an executor task, backs off exponentially
//! (capped) while every queue is empty, and on shutdown stops claiming and waits for its
//! executors to finish or hand their agendas back (each sends a final report and releases it).
//! It says once, on the first claim that shows it, when the server's lease leaves no safe
//! heartbeat (see [`crate::report::heartbeat_for`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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
    pub handed_back: u64,
}

/// The next pause after an empty poll.
pub fn next_backoff(current: Duration, config: &PullConfig) -> Duration {
    (current * 2).clamp(config.min_idle_backoff, config.max_idle_backoff)
}

/// Runs until `shutdown` turns true, then drains its executors.
///
/// Up to `max_concurrent_claims` `getAgenda` calls run at once (default 1), each for the slots
/// free when it started (those slots are reserved until it answers). More than one looked like
/// a way to share the server's group commit, but concurrent calls race for the same oldest
/// queued agendas on the server and measured slower (BENCHMARKS.md, Worker). Insights are asked
/// in turn; only after every insight came back empty in a row does the puller pause (backoff).
pub async fn run(env: ExecEnv, config: PullConfig, shutdown: watch::Receiver<bool>) -> PullStats {
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
    let mut stats = PullStats::default();
    let mut executing: JoinSet<Outcome> = JoinSet::new();
    type ClaimResult = (String, usize, Result<Vec<crate::api::Claimed>, crate::api::ApiError>);
    let mut claims: JoinSet<ClaimResult> = JoinSet::new();
    let mut reserved = 0usize;
    let mut backoff = config.min_idle_backoff;
    let mut idle_until: Option<tokio::time::Instant> = None;
    let mut empty_streak = 0usize;
    let mut next_insight = 0usize;
    let mut shutdown_rx = shutdown.clone();
    let mut lease_warned = false;

    let start = |c: crate::api::Claimed,
                 insight: &str,
                 executing: &mut JoinSet<Outcome>,
                 stats: &mut PullStats,
                 lease_warned: &mut bool| {
        stats.claimed += 1;
        tracing::info!(agenda = %c.agenda.id, insight = %insight, "claimed");
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
        executing.spawn(async move {
            let id = c.agenda.id.clone();
            let outcome = execute(&env, c, slots, shutdown).await;
            tracing::info!(agenda = %id, outcome = ?outcome, "executed");
            outcome
        });
    };

    while !*shutdown_rx.borrow() {
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
            claims.spawn(async move {
                let result = api.get_agenda(&insight, free).await;
                (insight, free, result)
            });
            continue;
        }
        tokio::select! {
            Some(done) = claims.join_next(), if !claims.is_empty() => {
                match done {
                    Ok((insight, asked, result)) => {
                        reserved = reserved.saturating_sub(asked);
                        match result {
                            Ok(claimed) if !claimed.is_empty() => {
                                empty_streak = 0;
                                backoff = config.min_idle_backoff;
                                for c in claimed {
                                    start(c, &insight, &mut executing, &mut stats, &mut lease_warned);
                                }
                            }
                            Ok(_) => empty_streak += 1,
                            Err(e) => {
                                empty_streak += 1;
                                tracing::warn!(insight = %insight, error = %e, "getAgenda failed");
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "a getAgenda task failed"),
                }
                if claims.is_empty() {
                    // Nothing is reserved once no claim is in flight (also after a failed task).
                    reserved = 0;
                    if empty_streak >= insights {
                        // Idle (or the server is unreachable): pause; the pause grows only
                        // while every queue stays empty.
                        empty_streak = 0;
                        idle_until = Some(tokio::time::Instant::now() + backoff);
                        backoff = next_backoff(backoff, &config);
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
    // Agendas claimed by calls still in flight are ours: they get a final report too (their
    // executions see the shutdown at once and hand them back).
    while let Some(done) = claims.join_next().await {
        if let Ok((insight, _, Ok(claimed))) = done {
            for c in claimed {
                start(c, &insight, &mut executing, &mut stats, &mut lease_warned);
            }
        }
    }
    while let Some(done) = executing.join_next().await {
        count(&mut stats, done);
    }
    stats
}

fn count(stats: &mut PullStats, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok(Outcome::Succeeded) => stats.succeeded += 1,
        Ok(Outcome::Failed(_)) => stats.failed += 1,
        Ok(Outcome::Refused(_)) => stats.refused += 1,
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
