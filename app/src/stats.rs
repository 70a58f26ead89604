//! The dashboard's aggregates: how many agendas the caller may see are in each state, and
//! how many completed, failed or were cancelled per minute lately. Both come from the agenda
//! read model's indexes — per-customer phase counters (constant time per visible customer)
//! and the COMPLETE agendas in `updatedTime` order (cost: the agendas in the window, bounded
//! by [`MAX_STATS_COMPLETIONS`]) — so they stay cheap at a million agendas.
//!
//! "Per minute" counts an agenda in the minute of its last update while it is COMPLETE: for
//! a finished agenda that is when it finished. A rerun takes it out of the count until it
//! completes again. The window ends at the wall clock's current minute (read here, as every
//! clock reading of a use case is in `app`).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use pop_projections::{Phase, Visibility};

use crate::App;
use crate::caller::Caller;
use crate::error::{AppError, AppResult};
use crate::limits::{MAX_STATS_COMPLETIONS, MAX_STATS_MINUTES};

/// Completions in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
}

/// How many agendas the caller may see are in each state, and completions per minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgendaStats {
    /// WAITING in any phase (added, queued, scheduled, pending, other).
    pub waiting: usize,
    pub executing: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// COMPLETE with another message.
    pub complete: usize,
    /// Oldest minute first, `minutes` of them, the last one the current minute.
    pub per_minute: Vec<MinuteCount>,
    /// More than [`MAX_STATS_COMPLETIONS`] agendas completed in the window: the per-minute
    /// counts of its latest minutes are lower bounds.
    pub capped: bool,
}

impl App {
    /// The caller's agendas per state and per minute over the last `minutes` (default 60,
    /// 1..=[`MAX_STATS_MINUTES`]), optionally of one customer (none for a customer the caller
    /// may not see: counts never reveal another tenant's agendas).
    pub async fn agenda_stats(
        &self,
        caller: &Caller,
        customer_id: Option<&str>,
        minutes: Option<i64>,
        at_least: Option<&str>,
    ) -> AppResult<AgendaStats> {
        let minutes = match minutes {
            None => 60,
            Some(m) if (1..=MAX_STATS_MINUTES).contains(&m) => m,
            Some(m) => {
                return Err(AppError::invalid(
                    "minutes",
                    format!("{m} is outside 1..={MAX_STATS_MINUTES}"),
                )
                .with_cid(&caller.cid));
            }
        };
        let now = self.now();
        let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let first = this_minute - TimeDelta::minutes(minutes - 1);
        self.read(caller, at_least, |models| {
            let principal = &caller.principal;
            let visibility = match customer_id {
                Some(c) if principal.sees(c) => Visibility::Customers([c.to_string()].into()),
                Some(_) => Visibility::Customers(Default::default()),
                None => principal.customers.clone(),
            };
            let agendas = models.agendas();
            let counts = agendas.phase_counts(&visibility);
            let n = |p: Phase| counts[p.index()];
            let mut per_minute: Vec<MinuteCount> = (0..minutes)
                .map(|i| MinuteCount {
                    minute: first + TimeDelta::minutes(i),
                    succeeded: 0,
                    failed: 0,
                    cancelled: 0,
                })
                .collect();
            let (done, capped) = agendas.completed_since(
                &visibility,
                first.timestamp_millis(),
                MAX_STATS_COMPLETIONS,
            );
            for (ms, phase) in done {
                let Ok(slot) = usize::try_from((ms - first.timestamp_millis()) / 60_000) else {
                    continue;
                };
                let Some(m) = per_minute.get_mut(slot) else { continue };
                match phase {
                    Phase::Succeeded => m.succeeded += 1,
                    Phase::Failed => m.failed += 1,
                    Phase::Cancelled => m.cancelled += 1,
                    _ => {}
                }
            }
            Ok(AgendaStats {
                waiting: [
                    Phase::Added,
                    Phase::Queued,
                    Phase::Scheduled,
                    Phase::Pending,
                    Phase::Waiting,
                ]
                .into_iter()
                .map(n)
                .sum(),
                executing: n(Phase::Executing),
                succeeded: n(Phase::Succeeded),
                failed: n(Phase::Failed),
                cancelled: n(Phase::Cancelled),
                complete: n(Phase::Complete),
                per_minute,
                capped,
            })
        })
        .await
    }
}
