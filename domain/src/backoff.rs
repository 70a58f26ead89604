//! The backoff before a failed agenda's retry (DOMAIN.md §8): `min(max, initial ×
//! multiplier^(n-1))` after attempt `n`, spread by ±`jitter_percent` % and capped at `max`,
//! counted from the agenda's `completedTime`. The jitter is not random but a hash (FNV-1a) of
//! the agenda's key and `n`, so the retry process plans the same instant on every replica and
//! a read can say when a retry is due. Pure: the retry process (`pop_reapers::retry`) and the
//! API's `retryDueTime` share it.

use std::time::Duration;

use chrono::TimeDelta;

use crate::model::Timestamp;

/// The backoff between attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (default 30 s).
    pub initial: Duration,
    /// Growth per further attempt (default 2).
    pub multiplier: u32,
    /// Longest delay, jitter included (default 30 min).
    pub max: Duration,
    /// Spread of the delay, ± this percentage (default 20, at most 100).
    pub jitter_percent: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(30),
            multiplier: 2,
            max: Duration::from_secs(30 * 60),
            jitter_percent: 20,
        }
    }
}

impl Backoff {
    /// No delay at all: POP's behaviour (retry at the next cycle).
    pub fn none() -> Backoff {
        Backoff { initial: Duration::ZERO, multiplier: 1, max: Duration::ZERO, jitter_percent: 0 }
    }

    /// The delay before retry number `attempt` (≥ 1: attempts already completed) of agenda
    /// `agenda_id`. Pure and deterministic.
    pub fn delay(&self, agenda_id: &str, attempt: u32) -> Duration {
        let max_ms = duration_ms(self.max);
        let exponent = attempt.saturating_sub(1).min(63);
        let growth = u64::from(self.multiplier.max(1)).saturating_pow(exponent);
        let base = duration_ms(self.initial).saturating_mul(growth).min(max_ms);
        let spread = base.saturating_mul(u64::from(self.jitter_percent.min(100))) / 100;
        let delay = if spread == 0 {
            base
        } else {
            // A point in [base - spread, base + spread], chosen by the hash.
            let offset = jitter_hash(agenda_id, attempt) % (2 * spread + 1);
            (base - spread).saturating_add(offset)
        };
        Duration::from_millis(delay.min(max_ms))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// FNV-1a over the agenda id and the attempt number: stable across builds and platforms
/// (unlike the std hasher), which keeps plans reproducible.
fn jitter_hash(agenda_id: &str, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agenda_id.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Backoff {
    /// When the backoff after attempt `attempts_completed` (at least 1) of agenda `key` (its
    /// stream key) ends: `ended` (the agenda's `completedTime`) plus [`Backoff::delay`].
    pub fn due_after(&self, key: &str, ended: Timestamp, attempts_completed: u32) -> Timestamp {
        let delay = self.delay(key, attempts_completed.max(1));
        ended
            .checked_add_signed(TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX))
            .unwrap_or(Timestamp::MAX_UTC)
    }
}
