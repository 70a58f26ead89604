//! The puller: claims agendas of one or more insights (`getAgenda`) while fewer than
//! `max_agendas` are in flight, hands each to an executor task, backs off exponentially
//! (capped) while every queue is empty, and on shutdown stops claiming and waits for its
//! executors to finish or hand their agendas back (each sends a final report).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::execute::{ExecEnv, Outcome, execute};

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
    let mut stats = PullStats::default();
    let mut executing: JoinSet<Outcome> = JoinSet::new();
    let mut backoff = config.min_idle_backoff;
    let mut next_insight = 0usize;
    let mut shutdown_rx = shutdown.clone();

    while !*shutdown_rx.borrow() {
        // Collect finished executions without waiting.
        while let Some(done) = executing.try_join_next() {
            count(&mut stats, done);
        }
        let free = max_agendas.saturating_sub(executing.len());
        if free == 0 {
            tokio::select! {
                done = executing.join_next() => if let Some(done) = done { count(&mut stats, done) },
                _ = shutdown_rx.changed() => {}
            }
            continue;
        }
        let mut got_any = false;
        // One pass over the insights, starting where the last one stopped, so a busy insight
        // cannot starve the others.
        for k in 0..config.insights.len() {
            let free = max_agendas.saturating_sub(executing.len());
            if free == 0 {
                break;
            }
            let insight = &config.insights[(next_insight + k) % config.insights.len()];
            match env.api.get_agenda(insight, free).await {
                Ok(claimed) => {
                    for c in claimed {
                        got_any = true;
                        stats.claimed += 1;
                        tracing::info!(agenda = %c.agenda.id, insight = %insight, "claimed");
                        let env = env.clone();
                        let slots = slots.get(insight).cloned();
                        let shutdown = shutdown.clone();
                        executing.spawn(async move {
                            let id = c.agenda.id.clone();
                            let outcome = execute(&env, c, slots, shutdown).await;
                            tracing::info!(agenda = %id, outcome = ?outcome, "executed");
                            outcome
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(insight = %insight, error = %e, "getAgenda failed");
                }
            }
        }
        next_insight = next_insight.wrapping_add(1);
        if got_any {
            backoff = config.min_idle_backoff;
            continue;
        }
        // Idle (or the server is unreachable): wait, but wake for a finished execution or
        // shutdown; the backoff grows only while queues stay empty.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown_rx.changed() => {}
        }
        backoff = next_backoff(backoff, &config);
    }
    tracing::info!(executing = executing.len(), "stopping: no more claims; waiting for executions");
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
