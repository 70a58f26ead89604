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
