//! A claim whose commit failed past the point where it may be stored (the store's outcome
//! unknown: an fsync that failed, a connection closed in the COMMIT) and was stored after all:
//! nobody was answered its lease, so the agenda would wait the lease out and then lose an
//! attempt to the reclaimer (ops3am25). The replica hands it back once the store answers.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod support;

use pop_domain::agenda::{AgendaState, key};
use pop_store::{AppendResult, StoreError};
use serde_json::json;
use support::{acme_world, queue, sqlite, submit_queued, worker};

/// Bound on every wait of the test for something that should happen (never a timing figure).
const BOUND: Duration = Duration::from_secs(10);

/// The embedded store ([`support::Hooked`]), except that the first append of a claim is
/// stored and then answered "outcome unknown", as a commit whose fsync failed after its frames
/// reached the file.
struct StoredButUnknown {
    failed_once: AtomicBool,
}

impl support::Hooks for StoredButUnknown {
    fn appended(
        &self,
        _stream: &str,
        types: &[String],
        answer: Result<AppendResult, StoreError>,
    ) -> Result<AppendResult, StoreError> {
        let result = answer?;
        if types.iter().any(|t| t == "AgendaClaimed")
            && !self.failed_once.swap(true, Ordering::SeqCst)
        {
            let io = std::io::Error::other("fsync failed");
            return Err(StoreError::OutcomeUnknown { why: "a test's", source: Arc::new(io) });
        }
        Ok(result)
    }
}

#[tokio::test]
async fn a_claim_stored_though_its_commit_failed_is_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::Hooked {
        inner: sqlite(dir.path()).await,
        hooks: StoredButUnknown { failed_once: AtomicBool::new(false) },
    };
    let w = acme_world(Arc::new(store)).await;
    submit_queued(&w, "a1", json!({"maximumAttempts": 1})).await;
    let (app, commands, worker) = (&w.app, &w.commands, worker());
    let refused = app.get_agenda(&worker, "work", 1, None).await.unwrap_err();
    assert!(refused.message.contains("is not known"), "{}", refused.message);
    assert!(refused.message.contains("hands it back"), "{}", refused.message);
    assert_eq!(refused.code, pop_app::Code::Unavailable, "retryable");
    // The claim is in the log under a lease nobody was told of ...
    let (state, _) = commands.load::<AgendaState>(&key("acme", "a1")).await.unwrap();
    assert!(state.lease().is_some(), "the claim was stored");
    // ... and is handed back (to `added`, where the scheduler queues it again), no attempt
    // lost.
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (state, _) = commands.load::<AgendaState>(&key("acme", "a1")).await.unwrap();
        if state.lease().is_none() {
            assert_eq!(state.message(), "added", "handed back");
            assert_eq!(state.progress().attempts_completed, 0, "no attempt lost");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not handed back within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    queue(&w, "a1").await;
    let claimed = app.get_agenda(&worker, "work", 1, None).await.unwrap();
    assert_eq!(claimed[0].agenda().map(|a| a.id.as_str()), Some("a1"), "claimable again");
}
