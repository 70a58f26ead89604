//! While the store cannot serve, reads are served from the read models as they are when they
//! hold the reader's own writes (README, "When the store cannot serve…"): a read waits for its
//! actor's acknowledged writes and the position it names, not for every write the replica
//! acknowledged (operator60 M2: under load a PostgreSQL outage left others' writes acknowledged
//! and unread, and every read of every principal was UNAVAILABLE for the whole outage).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod support;

use chrono::Utc;
use pop_app::reads::{AgendaFilter, PageRequest};
use pop_app::{Caller, Principal, Role};
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_domain::config::{ConfigAggregate, ConfigCommand};
use pop_domain::model::Insight;
use pop_store::EventMetadata;
use serde_json::json;
use support::{acme_world, sqlite};

struct Outage {
    down: Arc<AtomicBool>,
}

impl support::Hooks for Outage {
    fn down(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.down))
    }
}

fn user(name: &str) -> Caller {
    Caller::new(Principal::new(name, Role::User, &["acme"]), "test")
}

#[tokio::test]
async fn during_an_outage_a_read_waits_for_its_own_writes_not_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let store = support::Hooked {
        inner: sqlite(dir.path()).await,
        hooks: Outage { down: Arc::clone(&down) },
    };
    let w = acme_world(Arc::new(store)).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let agenda = |id: &str| {
        json!({"id": id, "customerId": "acme",
            "operations": [{"name": "x", "type": "work", "payload": {}}]})
    };
    w.app.submit(&alice, agenda("a1"), None, None).await.unwrap();
    w.app.settle(None).await.unwrap();
    // The log goes unreadable; bob's write is acknowledged after that, and the read models
    // cannot read it back.
    down.store(true, Ordering::SeqCst);
    let metadata = EventMetadata {
        customer_id: Some("acme".into()),
        actor: Some(bob.principal.actor()),
        ..EventMetadata::default()
    };
    let cancel = AgendaCommand::Cancel { reason: Some("bob".into()), now: Utc::now() };
    w.commands.execute::<AgendaState>(&key("acme", "a1"), &metadata, &cancel).await.unwrap();

    let (filter, page) = (AgendaFilter::default(), PageRequest::default());
    // alice's own writes are in the read models: served as they are (a1 not yet cancelled).
    let seen = w.app.agendas(&alice, &filter, &page, None).await.unwrap();
    assert_eq!(seen.items.len(), 1, "served from the read models as they are");
    // bob's are not: his read cannot see his write, and is refused, retryable.
    let refused = w.app.agendas(&bob, &filter, &page, None).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Unavailable, "{}", refused.message);
    // A position named that they have not reached is not served stale either.
    let at = w.commands.written().to_string();
    let refused = w.app.agendas(&alice, &filter, &page, Some(&at)).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Unavailable, "{}", refused.message);

    // A write's checks against the read models still wait for every acknowledged write: an
    // insight an admin created, unread, would make a submission NOT_FOUND for good (a refusal
    // that is not retryable); it is UNAVAILABLE.
    let insight: Insight = serde_json::from_value(json!({"id": "other", "customerId": "acme",
        "title": "other", "resourcePoolId": "pool", "queueSize": 10,
        "mappers": {"operationType": ["other"]}}))
    .unwrap();
    let admin = EventMetadata {
        customer_id: Some("acme".into()),
        actor: Some("admin:admin".into()),
        ..EventMetadata::default()
    };
    let create = ConfigCommand::Create { object: insight, now: Utc::now(), cid: "c".into() };
    w.commands.execute::<ConfigAggregate<Insight>>("other", &admin, &create).await.unwrap();
    let needs_it = json!({"id": "o1", "customerId": "acme",
        "operations": [{"name": "x", "type": "other", "payload": {}}]});
    let refused = w.app.submit(&alice, needs_it, None, None).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Unavailable, "{}", refused.message);

    // The store back: bob reads his cancel.
    down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(seen) = w.app.agendas(&bob, &filter, &page, None).await {
            assert_eq!(seen.items.len(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob's read never served");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The head as PostgreSQL answers it while a transaction below stays open: behind what was
/// committed.
struct HeldHead {
    held: Arc<AtomicBool>,
    /// The head it is held at: what the read models had applied when it was held (below that
    /// the runner takes the log for one that went back, and stops).
    at: Arc<std::sync::Mutex<pop_store::Position>>,
    /// The read models' tail cut (they lag), the head still answering.
    tail: Arc<AtomicBool>,
}

impl support::Hooks for HeldHead {
    fn head(&self, head: pop_store::Position) -> pop_store::Position {
        if self.held.load(Ordering::SeqCst) {
            self.at.lock().map_or(pop_store::Position::START, |at| *at).min(head)
        } else {
            head
        }
    }
    fn tail_down(&self) -> Option<Arc<AtomicBool>> {
        Some(Arc::clone(&self.tail))
    }
}

/// A position this replica acknowledged is never "beyond the end of the log", whatever the
/// head says (reprobe-op60: on PostgreSQL, with a transaction held open below it, a write's own
/// `X-Pop-Position` sent back as `atLeastPosition` was VALIDATION, which says do not retry).
#[tokio::test]
async fn a_position_this_replica_acknowledged_is_not_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (held, tail) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let at = Arc::new(std::sync::Mutex::new(pop_store::Position::START));
    let store = support::Hooked {
        inner: sqlite(dir.path()).await,
        hooks: HeldHead { held: Arc::clone(&held), tail: Arc::clone(&tail), at: Arc::clone(&at) },
    };
    let mut w = acme_world(Arc::new(store)).await;
    w.app = w.app_with(pop_app::AppConfig {
        read_wait: std::time::Duration::from_millis(500),
        ..pop_app::AppConfig::default()
    });
    let alice = user("alice");
    let agenda = json!({"id": "p1", "customerId": "acme",
        "operations": [{"name": "x", "type": "work", "payload": {}}]});
    // The read models do not get the submission; the head stays below it.
    w.app.settle(None).await.unwrap();
    *at.lock().unwrap() = w.store.head().await.unwrap();
    tail.store(true, Ordering::SeqCst);
    held.store(true, Ordering::SeqCst);
    let done = w.app.submit(&alice, agenda, None, None).await.unwrap();
    let at = done.position.unwrap().to_string();
    let (filter, page) = (AgendaFilter::default(), PageRequest::default());
    // Waited for (then TIMEOUT or UNAVAILABLE: retry), not "beyond the end" (VALIDATION).
    let waited = w.app.agendas(&alice, &filter, &page, Some(&at)).await.unwrap_err();
    assert!(
        matches!(waited.code, pop_app::Code::Timeout | pop_app::Code::Unavailable),
        "{:?}: {}",
        waited.code,
        waited.message
    );
    tail.store(false, Ordering::SeqCst);
    held.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(seen) = w.app.agendas(&alice, &filter, &page, Some(&at)).await {
            assert_eq!(seen.items.len(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never read");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    held.store(true, Ordering::SeqCst);
    // One past anything acknowledged still is.
    let beyond = (done.position.unwrap().commit() + 1_000).to_string();
    let refused = w.app.agendas(&alice, &filter, &page, Some(&beyond)).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Validation, "{}", refused.message);
}
