//! KurrentDB subscriptions beyond the conformance suite, on the protocol double: a
//! subscription whose connection is cut again and again (a node restart, a network cut)
//! resubscribes by itself and still delivers every event exactly once, in order; a slow
//! subscriber that the server reports as "fell behind" loses nothing; namespaces on one
//! server do not see each other; the server's own append cap is a limit error.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pop_kurrentdb_double::{DoubleOptions, KurrentDouble};
use pop_store::{
    Direction, EventStore, ExpectedVersion, KurrentOptions, KurrentStore, NewEvent, Position,
};
use uuid::Uuid;

/// The longest a test waits for an event it knows is committed.
const GUARD: Duration = Duration::from_secs(60);

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "Numbered".into(),
        schema_version: 1,
        data: format!(r#"{{"i":{i}}}"#).into_bytes(),
        metadata: Vec::new(),
    }
}

async fn store(double: &KurrentDouble, namespace: &str) -> Arc<KurrentStore> {
    let options = KurrentOptions { namespace: namespace.to_owned(), ..KurrentOptions::default() };
    Arc::new(KurrentStore::connect(&double.url(), options).await.expect("connects"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_connections_neither_lose_nor_repeat_events() {
    const EVENTS: usize = 200;
    let double = KurrentDouble::start(DoubleOptions::default()).await.expect("starts");
    let store = store(&double, "").await;
    let mut subscription = store.subscribe_all(Position::START);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let s = format!("cut-{}", i % 7);
                store.append(&s, ExpectedVersion::Any, vec![event(i)]).await.expect("appends");
            }
        })
    };
    let mut seen = Vec::new();
    while seen.len() < EVENTS {
        if seen.len() % 37 == 13 {
            double.cut_subscriptions();
        }
        let e = tokio::time::timeout(GUARD, subscription.next())
            .await
            .expect("an event within the guard")
            .expect("the subscription goes on")
            .expect("no error");
        seen.push(e);
    }
    writer.await.expect("the writer finished");
    let all = {
        let mut all = Vec::new();
        let mut after = Position::START;
        loop {
            let page = store.read_all(after, 1000).await.expect("reads");
            let Some(last) = page.last() else { break };
            after = last.position;
            all.extend(page);
        }
        all
    };
    assert_eq!(seen.len(), all.len());
    assert!(seen == all, "the subscription differs from the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_falls_behind_loses_nothing() {
    const EVENTS: usize = 3_000;
    let double = KurrentDouble::start(DoubleOptions::default()).await.expect("starts");
    let store = store(&double, "").await;
    let mut subscription = store.subscribe_all(Position::START);
    // Live first, then far behind: the double reports "fell behind" past 1,000 records.
    let first = store.append("slow", ExpectedVersion::NoStream, vec![event(0)]).await.expect("ok");
    let got = tokio::time::timeout(GUARD, subscription.next()).await.expect("in time");
    assert_eq!(got.expect("an event").expect("no error").position, first.position);
    for chunk in (1..EVENTS).collect::<Vec<_>>().chunks(500) {
        let events = chunk.iter().map(|i| event(*i)).collect();
        store.append("slow", ExpectedVersion::Any, events).await.expect("appends");
    }
    let mut versions = vec![0];
    while versions.len() < EVENTS {
        let e = tokio::time::timeout(GUARD, subscription.next()).await.expect("in time");
        versions.push(e.expect("an event").expect("no error").version);
    }
    assert_eq!(versions, (0..EVENTS as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_on_one_server_do_not_see_each_other() {
    let double = KurrentDouble::start(DoubleOptions::default()).await.expect("starts");
    let a = store(&double, "tenant-a").await;
    let b = store(&double, "tenant-b").await;
    let plain = store(&double, "").await;
    a.append("agenda-1", ExpectedVersion::NoStream, vec![event(1)]).await.expect("a appends");
    b.append("agenda-1", ExpectedVersion::NoStream, vec![event(2)]).await.expect("same name in b");
    let in_a = a.read_all(Position::START, 100).await.expect("reads");
    assert_eq!(in_a.len(), 1);
    assert_eq!(&*in_a[0].stream, "agenda-1", "pop sees its own name, not the server's");
    assert_eq!(&in_a[0].data[..], br#"{"i":1}"#);
    assert_eq!(b.read_stream("agenda-1", 0, 10, Direction::Forwards).await.expect("ok").len(), 1);
    assert_eq!(
        b.head().await.expect("head"),
        b.read_all(Position::START, 10).await.expect("ok")[0].position
    );
    // Without a namespace, pop sees the namespaced streams under their server names (give
    // every installation on a shared server a namespace), but never their bookkeeping.
    let seen: Vec<String> = plain
        .read_all(Position::START, 100)
        .await
        .expect("reads")
        .iter()
        .map(|e| e.stream.to_string())
        .collect();
    assert_eq!(seen, ["tenant-a:agenda-1", "tenant-b:agenda-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_servers_append_cap_is_a_limit_error() {
    let double =
        KurrentDouble::start(DoubleOptions { max_append_size: 4096 }).await.expect("starts");
    let store = store(&double, "").await;
    let mut big = event(0);
    big.data = format!(r#""{}""#, "x".repeat(5000)).into_bytes();
    let r = store.append("capped", ExpectedVersion::Any, vec![big]).await;
    assert!(
        matches!(
            r,
            Err(pop_store::StoreError::LimitExceeded {
                limit: pop_store::Limit::AppendBytes,
                max: 4096,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(store.read_stream("capped", 0, 10, Direction::Forwards).await.expect("ok").is_empty());
}
