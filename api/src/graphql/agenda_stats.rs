//! `agendaStats`: the dashboard's counts per state and completions per minute, computed by
//! the application layer ([`pop_app::App::agenda_stats`]); this module only shapes them.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use pop_app::stats::{AgendaStats, MinuteCount};

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Agendas that completed in one minute, by how they ended.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "MinuteCount")]
pub struct MinuteCountGql {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// How many agendas the caller may see are in each state, and how many completed per minute
/// (an agenda counts in the minute of its last update while it is COMPLETE).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaStats")]
pub struct AgendaStatsGql {
    /// WAITING, in any phase (added, queued, scheduled, pending).
    pub waiting: i64,
    pub executing: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// COMPLETE with another message.
    pub complete: i64,
    /// Oldest minute first; the last is the current minute.
    pub per_minute: Vec<MinuteCountGql>,
    /// The window held more completed agendas than are counted (200,000): the latest
    /// minutes' counts are lower bounds.
    pub capped: bool,
}

impl From<&MinuteCount> for MinuteCountGql {
    fn from(m: &MinuteCount) -> Self {
        MinuteCountGql {
            minute: m.minute,
            succeeded: count(m.succeeded),
            failed: count(m.failed),
            cancelled: count(m.cancelled),
        }
    }
}

impl From<&AgendaStats> for AgendaStatsGql {
    fn from(s: &AgendaStats) -> Self {
        AgendaStatsGql {
            waiting: count(s.waiting),
            executing: count(s.executing),
            succeeded: count(s.succeeded),
            failed: count(s.failed),
            cancelled: count(s.cancelled),
            complete: count(s.complete),
            per_minute: s.per_minute.iter().map(MinuteCountGql::from).collect(),
            capped: s.capped,
        }
    }
}
