//! Failures that repeat while a condition lasts (a full disk, a database down) logged once,
//! then at most once per [`EVERY`] with how many were not logged meanwhile (ops3am18: an
//! outage logged an ERROR per failed group commit and a WARN per failed WAL checkpoint, ~30 a
//! second, burying the lines that change and paging whoever alerts on error rates).

use std::time::{Duration, Instant};

/// At most one line per this long for one repeating failure.
pub const EVERY: Duration = Duration::from_secs(10);

/// One repeating failure: when it was last logged, and how many times since.
#[derive(Debug, Default)]
pub struct Repeats {
    last: Option<Instant>,
    unsaid: u64,
}

impl Repeats {
    /// Whether to log the failure seen at `now`: `Some(n)` with the `n` failures not logged
    /// since the last line, `None` to stay quiet.
    pub fn say(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < EVERY => {
                self.unsaid += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unsaid))
            }
        }
    }

    /// A success: the next failure is logged at once. `Some(n)` when failures went on until
    /// now, `n` of them not logged (review-s42: the count since the last line was dropped),
    /// for the line that says they ended.
    pub fn ended(&mut self) -> Option<u64> {
        self.last.take()?;
        Some(std::mem::take(&mut self.unsaid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_failure_is_said_once_per_period_with_the_count_between() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(r.say(t0), Some(0));
        assert_eq!(r.say(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.say(t0 + Duration::from_secs(9)), None);
        assert_eq!(r.say(t0 + EVERY), Some(2));
        assert_eq!(r.say(t0 + EVERY + Duration::from_secs(1)), None);
        assert_eq!(r.ended(), Some(1));
        assert_eq!(r.ended(), None, "said once");
        assert_eq!(r.say(t0 + EVERY + Duration::from_secs(1)), Some(0));
    }
}
