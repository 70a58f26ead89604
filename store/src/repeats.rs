//! Failures that repeat while a condition lasts (a full disk, a database down) logged once,
//! then at most once per [`EVERY`] with how many were not logged meanwhile (ops3am18: an
//! outage logged an ERROR per failed group commit and a WARN per failed WAL checkpoint, ~30 a
//! second, burying the lines that change and paging whoever alerts on error rates).
//! With a budget of more lines a period (`Repeats::new`), also what is said per request while
//! a condition lasts (the server's refusals while its store is down).

use std::time::{Duration, Instant};

/// At most one line per this long for one repeating failure.
pub const EVERY: Duration = Duration::from_secs(10);

/// One repeating failure: at most `budget` lines per `period` (by default one per [`EVERY`]),
/// when the period began, and how many were not logged since the last line.
#[derive(Debug)]
pub struct Repeats {
    period: Duration,
    budget: u32,
    last: Option<Instant>,
    said: u32,
    unsaid: u64,
    /// A failure since the last success.
    failing: bool,
    /// The latest failure was said (its line logged).
    last_said: bool,
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats::new(EVERY, 1)
    }
}

impl Repeats {
    /// At most `budget` lines (at least one) per `period`.
    pub const fn new(period: Duration, budget: u32) -> Repeats {
        let budget = if budget == 0 { 1 } else { budget };
        Repeats { period, budget, last: None, said: 0, unsaid: 0, failing: false, last_said: false }
    }

    /// Whether to log the failure seen at `now`: `Some(n)` with the `n` failures not logged
    /// since the last line, `None` to stay quiet.
    pub fn say(&mut self, now: Instant) -> Option<u64> {
        self.failing = true;
        self.last_said = false;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {}
            _ => {
                self.last = Some(now);
                self.said = 0;
            }
        }
        if self.said >= self.budget {
            self.unsaid += 1;
            return None;
        }
        self.said += 1;
        self.last_said = true;
        Some(std::mem::take(&mut self.unsaid))
    }

    /// A success at `now` after failures: `Some(n)` for the line that says they ended, `n` of
    /// them not logged since the last line (review-s42: the count was dropped), when the latest
    /// failure was said or the period has passed since the last line; otherwise `None`, and the
    /// count goes on to the next failure's line. The period is not restarted: failures that
    /// come and go within it (operator60 L5: a file-size limit failed every other commit, and
    /// each failure and each success after it was a line, ~1 a second) are one line each way
    /// per period, not one per flap.
    pub fn ended_at(&mut self, now: Instant) -> Option<u64> {
        if !self.failing {
            return None;
        }
        let period_over = self.last.is_none_or(|l| now.saturating_duration_since(l) >= self.period);
        // Not said yet: still failing as far as the log knows, so a success once the period
        // is over says it (review60 M2: the end of an outage whose last failures were not
        // said was never said at all).
        if !self.last_said && !period_over {
            return None;
        }
        Some(self.end())
    }

    /// A success after failures, said whatever the period: for a caller that sees one success
    /// per recovery (a reconnection), whose next success may never come.
    pub fn ended_always(&mut self) -> Option<u64> {
        if !self.failing {
            return None;
        }
        Some(self.end())
    }

    fn end(&mut self) -> u64 {
        self.failing = false;
        self.last_said = false;
        std::mem::take(&mut self.unsaid)
    }

    /// [`Repeats::ended_at`] now.
    pub fn ended(&mut self) -> Option<u64> {
        self.ended_at(Instant::now())
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
        // Ended once the period is over: said with the count not said.
        assert_eq!(r.ended_at(t0 + EVERY * 2), Some(1));
        assert_eq!(r.ended_at(t0 + EVERY * 2), None, "said once");
        assert_eq!(r.say(t0 + EVERY * 2 + Duration::from_secs(1)), Some(0));
        assert_eq!(r.ended_at(t0 + EVERY * 2 + Duration::from_secs(1)), Some(0), "its line said");
    }

    /// Failures that come and go within a period (operator60 L5: every other commit under a
    /// file-size limit, a line for each failure and each success, ~1 a second): one line each
    /// way a period; the failures not said are counted into the next line that is.
    #[test]
    fn a_failure_that_comes_and_goes_is_one_line_each_way_a_period() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s * 1_000 + 500);
        assert_eq!(r.say(t0), Some(0));
        assert_eq!(r.ended_at(t0 + Duration::from_millis(100)), Some(0), "its end said");
        for s in 1..9 {
            assert_eq!(r.say(at(s)), None, "{s}");
            assert_eq!(r.ended_at(at(s) + Duration::from_millis(100)), None, "{s}");
        }
        assert_eq!(r.say(t0 + EVERY), Some(8), "the next period's line counts them");
        assert_eq!(r.ended_at(t0 + EVERY + Duration::from_millis(100)), Some(0));
        assert_eq!(r.ended_at(t0 + EVERY + Duration::from_millis(200)), None, "nothing failed");
    }

    /// An outage whose last failures were not said ends in a line all the same, at the first
    /// success once the period is over (review60 M2: it was never said); a caller with one
    /// success per recovery says it at once.
    #[test]
    fn the_end_of_failures_not_said_is_said_once_the_period_is_over() {
        let mut r = Repeats::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(r.say(t0), Some(0));
        assert_eq!(r.say(at(4_000)), None);
        assert_eq!(r.ended_at(at(5_000)), None, "within the period, its last failure unsaid");
        assert_eq!(r.ended_at(at(6_000)), None);
        assert_eq!(r.ended_at(at(10_000)), Some(1), "said once the period is over, with the count");
        assert_eq!(r.ended_at(at(11_000)), None, "once");
        let mut once = Repeats::default();
        assert_eq!(once.say(t0), Some(0));
        assert_eq!(once.say(at(4_000)), None);
        assert_eq!(once.ended_always(), Some(1));
        assert_eq!(once.ended_always(), None);
    }

    /// With a budget, that many lines a period are said; the first of the next period says how
    /// many were not (the server's per-request lines while the store is down, ops3am25).
    #[test]
    fn a_budget_says_that_many_lines_a_period() {
        let mut r = Repeats::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        let said: Vec<Option<u64>> = (0..13).map(|_| r.say(t0)).collect();
        assert_eq!(said.iter().filter(|s| s.is_some()).count(), 10);
        assert!(said[10..].iter().all(Option::is_none));
        assert_eq!(r.say(t0 + Duration::from_millis(1_000)), Some(3));
        assert_eq!(r.say(t0 + Duration::from_millis(1_001)), Some(0));
    }
}

/// A [`Repeats`] that several threads or tasks say through: a `static`, or a field they share.
/// A lock a panic poisoned says every line (`Some(0)`): a log line too many, never one lost.
#[derive(Debug, Default)]
pub struct SharedRepeats(std::sync::Mutex<Repeats>);

impl SharedRepeats {
    pub const fn new(period: Duration, budget: u32) -> SharedRepeats {
        SharedRepeats(std::sync::Mutex::new(Repeats::new(period, budget)))
    }

    /// [`Repeats::say`] now.
    pub fn say_now(&self) -> Option<u64> {
        match self.0.lock() {
            Ok(mut repeats) => repeats.say(Instant::now()),
            Err(_) => Some(0),
        }
    }

    /// [`Repeats::ended`] (`None` also when a panic poisoned the lock).
    pub fn ended(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|mut repeats| repeats.ended())
    }
}
