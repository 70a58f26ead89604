//! What verifying the log finds: how much was checked and the first break, located by stream,
//! version and position. Backends implement the check where they keep their rows (the
//! embedded store: [`crate::SqliteStore::verify`]); every element is recomputed, no summary
//! is trusted.

use crate::Position;

/// The first place where the log does not match its digests and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub stream: String,
    /// The stream version where it breaks (`None`: the stream as a whole, e.g. its head).
    pub version: Option<u64>,
    /// The global position of the event concerned, when there is one.
    pub position: Option<Position>,
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream {:?}", self.stream)?;
        if let Some(v) = self.version {
            write!(f, " version {v}")?;
        }
        if let Some(p) = self.position {
            write!(f, " position {p}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Events whose digest and chain link were recomputed.
    pub events: u64,
    /// Live streams whose head was checked against their last event.
    pub streams: u64,
    /// Deleted streams (tombstones) whose recorded head hash was found.
    pub deleted_streams: u64,
    /// The first break found (verification stops there); `None`: everything matched.
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}
