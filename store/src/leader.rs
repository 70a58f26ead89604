//! Leader locks: with several replicas on one store, exactly one of them runs each timed
//! process (the scheduler, each reaper). A process asks [`Leadership::try_lead`] for its name
//! before every cycle (or holds the guard across cycles) and runs only while it holds a
//! [`LeaderGuard`]; dropping the guard releases the lock.
//!
//! Backends: the embedded store is one process by construction, so [`ProcessLeadership`]
//! only keeps two tasks of the same process from running the same name at once. A shared
//! database backend (PostgreSQL: a session-level advisory lock on a dedicated connection)
//! provides its own implementation, whose guard reports [`LeaderGuard::lost`] when the
//! connection holding the lock dies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::StoreError;

/// Grants leadership per process name among all replicas sharing a store.
#[async_trait]
pub trait Leadership: Send + Sync + 'static {
    /// Tries (without waiting) to become the leader for `name`. `Ok(None)` when another
    /// holder has it; `Err` when the backend cannot be asked (treat as "not the leader").
    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, StoreError>;

    /// Whether `token` (a guard's [`LeaderGuard::fencing_token`]) is still the token of
    /// `name`'s current tenure. Backends whose locks are leases (KurrentDB) answer from the
    /// store, so a holder whose lease ran out behind its back (a paused process) learns it
    /// before it acts; backends that hand out no token admit every holder of a guard.
    async fn admits(&self, _name: &str, _token: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// Held leadership of one name; released when dropped.
pub struct LeaderGuard {
    name: String,
    lost: watch::Receiver<bool>,
    fencing_token: Option<u64>,
    _release: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("name", &self.name)
            .field("held", &self.is_held())
            .field("fencing_token", &self.fencing_token)
            .finish()
    }
}

impl LeaderGuard {
    /// A guard for `name`. `lost` turns `true` (or its sender is dropped) when the backend
    /// loses the lock behind the holder's back; `release` is dropped with the guard and gives
    /// the lock back.
    pub fn new(name: &str, lost: watch::Receiver<bool>, release: Box<dyn Send + Sync>) -> Self {
        Self { name: name.to_string(), lost, fencing_token: None, _release: release }
    }

    /// The same guard carrying a fencing token: a number that grows with every new holder of
    /// the name, for backends whose locks are leases (KurrentDB). The holder's commands carry
    /// it so that a holder whose lease ran out behind its back is refused.
    pub fn with_fencing_token(self, token: u64) -> Self {
        Self { fencing_token: Some(token), ..self }
    }

    /// The fencing token of this tenure, if the backend hands one out.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// The name this guard leads.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lock is still held (false once the backend lost it).
    pub fn is_held(&self) -> bool {
        !*self.lost.borrow() && self.lost.has_changed().is_ok()
    }

    /// Resolves when the lock is lost (never, while it is held).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

/// Leadership within one process: the embedded store has exactly one replica, so a name is
/// led by whichever task of this process asked first and has not dropped its guard.
#[derive(Debug, Clone, Default)]
pub struct ProcessLeadership {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Gives a [`ProcessLeadership`] name back when its guard drops.
struct ProcessRelease {
    held: Arc<Mutex<HashSet<String>>>,
    name: String,
    // Kept alive so the guard's receiver never reports "lost".
    _lost: watch::Sender<bool>,
}

impl Drop for ProcessRelease {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&self.name);
        }
    }
}

#[async_trait]
impl Leadership for ProcessLeadership {
    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, StoreError> {
        let mut held = self.held.lock().map_err(|_| StoreError::Closed)?;
        if !held.insert(name.to_string()) {
            return Ok(None);
        }
        let (tx, rx) = watch::channel(false);
        let release =
            ProcessRelease { held: Arc::clone(&self.held), name: name.to_string(), _lost: tx };
        Ok(Some(LeaderGuard::new(name, rx, Box::new(release))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_per_name_until_the_guard_drops() {
        let leadership = ProcessLeadership::default();
        let first = leadership.try_lead("scheduler").await.expect("ask");
        let first = first.expect("the first asker leads");
        assert!(first.is_held());
        assert!(leadership.try_lead("scheduler").await.expect("ask").is_none());
        assert!(
            leadership.try_lead("reaper").await.expect("ask").is_some(),
            "names are independent"
        );
        drop(first);
        assert!(leadership.try_lead("scheduler").await.expect("ask").is_some());
    }
}
