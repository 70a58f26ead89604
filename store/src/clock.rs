//! The store's only source of time, injected at open so tests can fix it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Stamps `recorded_at`. The store calls it once per commit, on its writer thread.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock. The only place in this crate that reads it.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock stuck at `at`, for tests.
pub fn fixed_clock(at: DateTime<Utc>) -> Clock {
    Arc::new(move || at)
}

/// The latest time a [`monotonic`] clock gave (a store's last commit time), shared with the
/// store that reads it ([`crate::EventStore::commit_floor`]), and when it was given (on this
/// process's monotonic clock): from it, the floor runs on ([`CommitFloor::running`]) at nine
/// tenths of the monotonic clock's pace. The time a store gives is the later of its wall clock
/// and that: behind a wall clock stepped back by D, time goes on (slower) and the wall clock
/// catches up within 10 × D, with time never going back.
#[derive(Debug, Clone)]
pub struct CommitFloor(Arc<std::sync::Mutex<Floor>>);

#[derive(Debug, Clone, Copy)]
struct Floor {
    /// The latest time given or raised to (`i64::MIN`: none).
    micros: i64,
    /// When it was, in [`monotonic_micros`].
    set_at: u64,
}

/// The pace at which the floor runs on, in tenths of the monotonic clock's: below one, so a
/// wall clock stepped back catches up with it (review-s45: at the full pace, steady commits
/// kept the time ahead by the whole step for good, and an idle store's time jumped back by it
/// once the wall clock passed the floor).
const RUNNING_PACE_TENTHS: u64 = 9;

/// Microseconds of this process's monotonic clock (since its first reading).
fn monotonic_micros() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = EPOCH.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

impl Floor {
    /// The floor run on to monotonic time `now` (`i64::MIN` when there is none).
    fn running(self, now: u64) -> i64 {
        if self.micros == i64::MIN {
            return i64::MIN;
        }
        // Multiplied first: divided first, calls microseconds apart lost the time between them.
        let ran = now.saturating_sub(self.set_at).saturating_mul(RUNNING_PACE_TENTHS) / 10;
        self.micros.saturating_add(i64::try_from(ran).unwrap_or(i64::MAX))
    }
}

impl CommitFloor {
    /// Starting at `micros` (the log's last commit time; `i64::MIN` for none).
    pub fn new(micros: i64) -> CommitFloor {
        CommitFloor(Arc::new(std::sync::Mutex::new(Floor { micros, set_at: monotonic_micros() })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Floor> {
        // Plain data: a panic while holding it leaves a usable value.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Raises the floor to `micros` (a later commit time taken from the log): the clock gives
    /// no earlier time after it. A time at or below where the floor has run to moves nothing
    /// (it would move the running time back).
    pub fn raise(&self, micros: i64) {
        let now = monotonic_micros();
        let mut floor = self.lock();
        if micros > floor.running(now) {
            *floor = Floor { micros, set_at: now };
        }
    }

    /// The time to give now against wall clock `wall` (microseconds): the later of it and the
    /// floor run on, which becomes the floor. Gives it, and how far the wall clock is behind
    /// the floor run on (0 when it is not).
    fn give(&self, wall: i64) -> (i64, i64) {
        let now = monotonic_micros();
        let mut floor = self.lock();
        let running = floor.running(now);
        // The wall clock ahead: it becomes the floor. Behind: the floor runs on as it was set
        // (set again at each time given, the time between calls was rounded away: review-s45c).
        if wall > running {
            *floor = Floor { micros: wall, set_at: now };
        }
        (wall.max(running), running.saturating_sub(wall).max(0))
    }

    /// [`Self::give`] for a command's time: the later of `wall` and the floor run on, which
    /// becomes the floor (review-s45b: a command's time read from the floor without raising
    /// it went back when the wall clock stepped back after an idle spell).
    pub fn give_time(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let (given, _) = self.give(wall.timestamp_micros());
        DateTime::from_timestamp_micros(given).unwrap_or(wall)
    }

    /// The time the floor stands at now, if any: at least every time given so far.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.running()
    }

    /// The floor run on since it was set, at nine tenths of the monotonic clock's pace: what
    /// stands in for a wall clock stepped back behind it. Time then goes on from the log's last
    /// commit instead of standing still until the wall clock catches up (ops3am23: with the
    /// clock an hour behind, every command and timed process read the same frozen time, so a
    /// failed agenda's retry, due after a 30 s backoff, waited the hour).
    pub fn running(&self) -> Option<DateTime<Utc>> {
        let micros = self.lock().running(monotonic_micros());
        (micros != i64::MIN).then(|| DateTime::from_timestamp_micros(micros)).flatten()
    }
}

/// How far the time replicas share (the PostgreSQL server's clock) is ahead of this process's
/// wall clock, in microseconds (negative: behind); measured by the store and added to what its
/// clock reads ([`offset`]). Zero until measured.
#[derive(Debug, Clone, Default)]
pub struct ClockOffset(Arc<OffsetInner>);

#[derive(Debug)]
struct OffsetInner {
    micros: std::sync::atomic::AtomicI64,
    /// The shared clock's time at `epoch` as the last measure places it (`i64::MIN`: never
    /// measured): the shared time now is that plus the monotonic time since, whatever this
    /// host's wall clock did meanwhile (ops3am8: a wall clock stepped back 30 s stamped with
    /// the stale offset until the next measure, and leases handed out meanwhile had already
    /// run out). One atomic: every commit and command reads it.
    base: std::sync::atomic::AtomicI64,
    epoch: std::time::Instant,
}

impl Default for OffsetInner {
    fn default() -> Self {
        OffsetInner {
            micros: std::sync::atomic::AtomicI64::new(0),
            base: std::sync::atomic::AtomicI64::new(i64::MIN),
            epoch: std::time::Instant::now(),
        }
    }
}

impl ClockOffset {
    /// Sets the offset to `micros`, giving the one it replaces.
    pub fn set(&self, micros: i64) -> i64 {
        self.0.micros.swap(micros, std::sync::atomic::Ordering::SeqCst)
    }

    /// Anchors the shared clock: it read `shared_micros` at `at`.
    pub fn anchor(&self, shared_micros: i64, at: std::time::Instant) {
        let since_epoch = at.saturating_duration_since(self.0.epoch).as_micros();
        let base = shared_micros.saturating_sub(i64::try_from(since_epoch).unwrap_or(i64::MAX));
        self.0.base.store(base.max(i64::MIN + 1), std::sync::atomic::Ordering::Release);
    }

    /// The shared clock's time now, from its anchor and the monotonic time since.
    pub fn shared_now(&self) -> Option<DateTime<Utc>> {
        let base = self.0.base.load(std::sync::atomic::Ordering::Acquire);
        if base == i64::MIN {
            return None;
        }
        let since = i64::try_from(self.0.epoch.elapsed().as_micros()).ok()?;
        DateTime::from_timestamp_micros(base.checked_add(since)?)
    }

    pub fn micros(&self) -> i64 {
        self.0.micros.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// As a duration.
    pub fn delta(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(self.micros())
    }
}

/// The shared clock `by` measures once it is anchored ([`ClockOffset::shared_now`]), else
/// `clock` moved by its offset.
pub fn offset(clock: Clock, by: ClockOffset) -> Clock {
    Arc::new(move || by.shared_now().unwrap_or_else(|| clock() + by.delta()))
}

/// The time to stamp a command with against `store`: the later of the store's wall clock
/// (this process's, or the one its replicas share: [`crate::EventStore::wall_clock`]) and the
/// last time it gave run on since ([`crate::EventStore::give_time`]), so the times shown never
/// precede the commits that made them, go on behind a wall clock stepped back, and never go
/// back.
pub fn now_for(store: &dyn crate::EventStore) -> DateTime<Utc> {
    store.give_time(store.wall_clock())
}

/// [`now_for`] `store`, as a clock to hand to a timed process.
pub fn floored(
    store: Arc<dyn crate::EventStore>,
) -> impl Fn() -> DateTime<Utc> + Clone + Send + Sync + 'static {
    move || now_for(store.as_ref())
}

/// How far the wall clock may step back before [`monotonic`] says so in the log.
const STEP_BACK_WARNING_MICROS: i64 = 1_000_000;

/// `clock`, never earlier than what it gave before nor than `floor` (the store's last commit
/// time when it was opened): a commit is stamped at the later of now and the floor run on
/// ([`CommitFloor::running`]). A wall clock stepped back (an NTP step, a VM restored) made
/// commit times go backwards, and as-of reads by time then showed a finished agenda as never
/// having existed (ops3am3); behind the floor, time goes on at nine tenths of the monotonic
/// pace until the wall clock catches up. A step back of more than a second is logged, once per
/// step.
pub fn monotonic(clock: Clock, floor: CommitFloor) -> Clock {
    use std::sync::atomic::{AtomicBool, Ordering};
    let warned = AtomicBool::new(false);
    Arc::new(move || {
        let now = clock();
        let (given, behind) = floor.give(now.timestamp_micros());
        if behind == 0 {
            warned.store(false, Ordering::Relaxed);
            return now;
        }
        if behind > STEP_BACK_WARNING_MICROS && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                behind_ms = behind / 1_000,
                "the wall clock is behind the log's last commit time (stepped back, or behind \
                 another replica's clock): time runs on from that commit at nine tenths of this \
                 process's monotonic pace until the wall clock catches up (within ten times the \
                 step; commits, leases and retries go on, the times shown ahead of this host's \
                 clock meanwhile)"
            );
        }
        DateTime::from_timestamp_micros(given).unwrap_or(now)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_clock_stepped_back_runs_on_from_the_floor_until_it_catches_up() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let wall = Arc::new(Mutex::new(at(100)));
        let read = Arc::clone(&wall);
        let floor = CommitFloor::new(at(50).timestamp_micros());
        let clock = monotonic(Arc::new(move || *read.lock().unwrap()), floor.clone());
        // Before the floor is set at(100): the time it runs on from then is at most this.
        let started = std::time::Instant::now();
        assert_eq!(clock(), at(100));
        *wall.lock().unwrap() = at(40); // stepped back an hour's worth
        let first = clock();
        assert!(first >= at(100), "{first}");
        // Time goes on behind the floor, at nine tenths of the monotonic clock's pace
        // (ops3am23: it stood still, and a retry due after its backoff waited for the wall
        // clock to catch up).
        std::thread::sleep(std::time::Duration::from_millis(50));
        let later = clock();
        let ran = chrono::TimeDelta::from_std(started.elapsed()).unwrap();
        assert!(later - first >= chrono::TimeDelta::milliseconds(44), "{first} {later}");
        assert!(later <= at(100) + ran, "no faster than the monotonic clock: {later}");
        assert!(floor.time().unwrap() >= later, "the floor follows what the clock gave");
        assert!(floor.running().unwrap() >= later);
        // A raise below where the floor has run to moves nothing back.
        floor.raise(at(100).timestamp_micros());
        assert!(floor.running().unwrap() >= later);
        *wall.lock().unwrap() = at(101);
        assert_eq!(clock(), at(101));
        let stands = floor.time().unwrap();
        assert!(stands >= at(101) && stands < at(102), "the floor follows the clock: {stands}");
        // Opened behind the store's last commit: its time run on, not the wall's.
        let behind = monotonic(fixed_clock(at(10)), CommitFloor::new(at(20).timestamp_micros()));
        let given = behind();
        assert!(given >= at(20) && given < at(21), "{given}");
        assert_eq!(CommitFloor::new(i64::MIN).time(), None);
        assert_eq!(CommitFloor::new(i64::MIN).running(), None);
    }

    /// A wall clock stepped back catches up with the floor run on at nine tenths of the pace,
    /// within ten times the step, whether commits go on or not, and time never goes back
    /// (review-s45: at the full pace steady commits kept it ahead for good, and an idle store's
    /// time jumped back by the step).
    #[test]
    fn a_wall_clock_stepped_back_catches_up_and_time_never_goes_back() {
        let step = chrono::TimeDelta::milliseconds(30);
        let floor = CommitFloor::new((Utc::now() + step).timestamp_micros());
        let clock = monotonic(Arc::new(Utc::now), floor.clone());
        let started = std::time::Instant::now();
        let mut last = clock();
        let mut caught_up = None;
        while started.elapsed() < std::time::Duration::from_secs(2) {
            let wall = Utc::now();
            let caught = wall >= floor.running().unwrap();
            let now = floor.give_time(wall);
            assert!(now >= last, "back from {last} to {now}");
            last = now;
            if caught {
                caught_up.get_or_insert(started.elapsed());
            }
            // Every other round a commit.
            if started.elapsed().as_millis().is_multiple_of(2) {
                let given = clock();
                assert!(given >= last, "a commit back from {last} to {given}");
                last = given;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let caught_up = caught_up.expect("the wall clock caught up");
        assert!(caught_up < std::time::Duration::from_millis(30 * 10 + 200), "{caught_up:?}");
        // Caught up: commits are stamped with the wall clock again.
        let given = clock();
        let wall = Utc::now();
        assert!(given <= wall && wall - given < chrono::TimeDelta::milliseconds(50), "{given}");
    }

    /// A command's time after an idle spell and a step back does not go back (review-s45b: read
    /// from the floor without raising it, it went back by the step, less a tenth of the idle).
    #[test]
    fn a_commands_time_never_goes_back_across_an_idle_step() {
        let at = |ms: i64| DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap();
        let floor = CommitFloor::new(at(0).timestamp_micros());
        // Idle: the wall clock ran 31 s on; a command is stamped then.
        let before = floor.give_time(at(31_000));
        assert_eq!(before, at(31_000));
        // Stepped back 10 s: the next command is no earlier.
        let after = floor.give_time(at(21_000));
        assert!(after >= before, "{before} then {after}");
    }

    #[test]
    fn an_offset_clock_follows_its_measure() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let by = ClockOffset::default();
        let clock = offset(fixed_clock(at(0)), by.clone());
        assert_eq!(clock(), at(0));
        assert_eq!(by.set(30_000_000), 0);
        assert_eq!(clock(), at(30));
        by.set(-5_000_000);
        assert_eq!(clock(), at(-5));
        // Once anchored, the shared clock runs on the monotonic clock from its anchor,
        // whatever the local clock does (a wall clock stepped back moves nothing).
        by.anchor(at(500).timestamp_micros(), std::time::Instant::now());
        let shared = clock();
        assert!(shared >= at(500) && shared < at(501), "{shared}");
    }
}
