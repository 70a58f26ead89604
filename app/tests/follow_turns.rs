//! One principal's follows produce at most `MAX_DELIVERIES_PER_PRINCIPAL` items at once: an
//! item holds its turn until the transport drops it (hostile50 H2: 4,000 subscriptions of one
//! customer to agendas of 500 KB results built 2.8 GB at once, and another tenant's submit
//! waited 83 s). The others wait for a turn; another principal's follows do not.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use pop_app::limits::MAX_DELIVERIES_PER_PRINCIPAL;
use pop_app::live::Target;
use pop_app::{Caller, Principal, Role};
use serde_json::json;
use support::{acme_world, sqlite};
use tokio::sync::{mpsc, oneshot};

/// Long enough for anything that should happen here; only a bug waits this long.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_follows_take_turns_at_producing_items() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    let user = Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test");
    let follows = MAX_DELIVERIES_PER_PRINCIPAL + 2;
    let (produced, mut heard) = mpsc::unbounded_channel();
    let mut releases = Vec::new();
    let spawn_follow = async |caller: &Caller, name: usize| {
        let stream = w.app.follow(caller, Target::Customer("acme".into()), None).await.unwrap();
        let (release, released) = oneshot::channel::<()>();
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            // Held, as a transport holds an item while it shapes its message.
            let item = stream.next().await;
            assert!(item.is_some());
            produced.send(name).unwrap();
            let _ = released.await;
            drop(item);
        });
        release
    };
    for name in 0..follows {
        releases.push(spawn_follow(&user, name).await);
    }
    support::submit_queued(&w, "a1", json!({})).await;

    // As many as the principal has turns produce, and hold them.
    for _ in 0..MAX_DELIVERIES_PER_PRINCIPAL {
        tokio::time::timeout(GUARD, heard.recv()).await.expect("a follow produces").unwrap();
    }
    // Another principal (of the same customer) has turns of its own.
    let other = Caller::new(Principal::new("acme-dashboard", Role::User, &["acme"]), "test");
    let other_release = spawn_follow(&other, 100).await;
    support::submit_queued(&w, "a2", json!({})).await;
    let name = tokio::time::timeout(GUARD, heard.recv()).await.expect("another principal");
    assert_eq!(name, Some(100), "only the other principal's follow produces");
    // The first principal's others still wait: its turns are all held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(heard.try_recv().is_err(), "a follow produced past the principal's turns");

    // Its items dropped, the waiting follows produce.
    drop(releases);
    drop(other_release);
    for _ in 0..follows - MAX_DELIVERIES_PER_PRINCIPAL {
        let name = tokio::time::timeout(GUARD, heard.recv()).await.expect("a waiting follow");
        assert!(name.is_some_and(|n| n < follows), "{name:?}");
    }
}
