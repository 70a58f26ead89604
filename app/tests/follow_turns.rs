//! One customer's follows (all its tokens together) produce at most `MAX_DELIVERIES_PER_OWNER`
//! items at once: an item holds its turn until the transport drops it (hostile50 H2: 4,000
//! subscriptions of one customer to agendas of 500 KB results built 2.8 GB at once, and
//! another tenant's submit waited 83 s). The others wait for a turn; another customer's
//! follows do not.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use pop_app::configs::ConfigOp;
use pop_app::limits::MAX_DELIVERIES_PER_OWNER;
use pop_app::live::{Target, Update};
use pop_app::{Caller, Principal, Role};
use pop_domain::model::{Customer, Insight};
use serde_json::json;
use support::{acme_world, sqlite};
use tokio::sync::{mpsc, oneshot};

/// Long enough for anything that should happen here; only a bug waits this long.
const GUARD: Duration = Duration::from_secs(60);

/// Follows whose first items are held, as a transport holds an item while it resolves it.
struct Held {
    heard: mpsc::UnboundedReceiver<usize>,
    produced: mpsc::UnboundedSender<usize>,
    releases: Vec<oneshot::Sender<()>>,
}

impl Held {
    fn new() -> Held {
        let (produced, heard) = mpsc::unbounded_channel();
        Held { heard, produced, releases: Vec::new() }
    }

    /// Starts `caller`'s follow of `target`, known as `name`: it says `name` once it produced
    /// its first item, and holds that item until released.
    async fn follow(&mut self, w: &support::World, caller: &Caller, target: Target, name: usize) {
        let stream = w.app.follow(caller, target, None).await.unwrap();
        let (release, released) = oneshot::channel::<()>();
        let produced = self.produced.clone();
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            let item = stream.next().await;
            assert!(item.is_some());
            produced.send(name).unwrap();
            let _ = released.await;
            drop(item);
        });
        self.releases.push(release);
    }

    async fn next(&mut self) -> usize {
        tokio::time::timeout(GUARD, self.heard.recv()).await.expect("a follow produces").unwrap()
    }

    /// Whether no follow produced meanwhile (while others hold every turn).
    async fn quiet(&mut self) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.heard.try_recv().is_err()
    }
}

fn user(name: &str, customer: &str) -> Caller {
    Caller::new(Principal::new(name, Role::User, &[customer]), "test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_follows_take_turns_at_producing_items() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let globex = json!({"id": "globex", "title": "globex", "resourcePoolId": "pool"});
    w.app.configure::<Customer>(&admin, ConfigOp::Create(globex), None, None).await.unwrap();
    let insight = json!({"id": "gwork", "customerId": "globex", "title": "work",
        "resourcePoolId": "pool", "queueSize": 10, "mappers": {"operationType": ["work"]}});
    w.app.configure::<Insight>(&admin, ConfigOp::Create(insight), None, None).await.unwrap();

    let mut held = Held::new();
    let acme = Target::Customer("acme".into());
    // Two tokens of acme: they share its turns.
    for name in 0..MAX_DELIVERIES_PER_OWNER + 2 {
        let token = if name % 2 == 0 { "acme-user" } else { "acme-dashboard" };
        held.follow(&w, &user(token, "acme"), acme.clone(), name).await;
    }
    support::submit_queued(&w, "a1", json!({})).await;
    // As many as acme has turns produce, and hold them; its others wait.
    for _ in 0..MAX_DELIVERIES_PER_OWNER {
        held.next().await;
    }
    assert!(held.quiet().await, "a follow produced past its customer's turns");

    // Another customer has turns of its own.
    held.follow(&w, &user("globex-user", "globex"), Target::Customer("globex".into()), 100).await;
    let agenda = json!({"id": "g1", "customerId": "globex",
        "operations": [{"name": "one", "type": "work", "payload": {}}]});
    w.app.submit(&admin, agenda, None, None).await.unwrap();
    assert_eq!(held.next().await, 100, "only the other customer's follow produces");
    assert!(held.quiet().await, "a follow produced past its customer's turns");

    // Its items dropped, acme's waiting follows produce.
    held.releases.clear();
    for _ in 0..2 {
        let name = held.next().await;
        assert!(name < MAX_DELIVERIES_PER_OWNER + 2, "{name}");
    }
}

/// A follow of one agenda reads its starting state in a turn too (review-s50b: 4,000 follows
/// by id each read and resolved the agenda at once as they started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follows_starting_state_takes_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    support::submit_queued(&w, "a1", json!({})).await;
    let mut held = Held::new();
    let one = Target::Progress("a1".into(), None);
    for name in 0..MAX_DELIVERIES_PER_OWNER + 2 {
        held.follow(&w, &user("acme-user", "acme"), one.clone(), name).await;
    }
    for _ in 0..MAX_DELIVERIES_PER_OWNER {
        held.next().await;
    }
    assert!(held.quiet().await, "a starting state read past the customer's turns");
    held.releases.clear();
    for _ in 0..2 {
        held.next().await;
    }
}

/// The next item of a follow.
async fn next<S: futures::Stream<Item = Update> + Unpin>(follow: &mut S) -> Update {
    tokio::time::timeout(GUARD, follow.next()).await.expect("an item").expect("the follow lives")
}

/// The percent each operation of `update` shows.
fn percents(ops: &[pop_domain::model::OperationProgress]) -> Vec<(String, Option<f64>)> {
    let mut shown: Vec<(String, Option<f64>)> =
        ops.iter().map(|o| (o.operation.to_string(), o.percent_complete)).collect();
    shown.sort_by(|a, b| a.0.cmp(&b.0));
    shown
}

/// A follow that has fallen behind renders what changed once, not once per buffered change
/// with a turn each (review-s50b M3: every item of a lagging follow of one agenda was its
/// same current state); an operations follow takes the operations the buffered changes touched
/// together, and nothing for a change that touched none (L2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_behind_renders_the_buffered_changes_once() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    let ops: Vec<serde_json::Value> =
        ["a", "b", "c"].iter().map(|n| json!({"name": n, "type": "work", "payload": {}})).collect();
    support::submit_queued(&w, "a1", json!({"operations": ops})).await;
    let acme = user("acme-user", "acme");
    let progress = w.app.follow(&acme, Target::Progress("a1".into(), None), None).await.unwrap();
    let operations =
        w.app.follow(&acme, Target::Operations("a1".into(), None), None).await.unwrap();
    let (mut progress, mut operations) = (Box::pin(progress), Box::pin(operations));
    // Their starting states.
    next(&mut progress).await;
    next(&mut operations).await;

    // A claim (no operation touched) and four reports while neither follow reads.
    let worker = support::worker();
    assert_eq!(w.app.get_agenda(&worker, "work", 1, None).await.unwrap().len(), 1);
    for (op, percent) in [("a", 10.0), ("b", 20.0), ("c", 30.0), ("a", 40.0)] {
        let report = json!({"id": "a1", "processingState": "EXECUTING",
            "operationProgress": [{"operation": op, "processingState": "EXECUTING",
                "percentComplete": percent}]});
        w.app.report(&worker, report, None, None).await.unwrap();
    }
    w.app.settle(None).await.unwrap();
    // The feed hands the changes to the follows' buffers on its own task.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let now = [("a".to_string(), Some(40.0)), ("b".into(), Some(20.0)), ("c".into(), Some(30.0))];
    match next(&mut progress).await {
        Update::Progress(p) => {
            let shown = p.progress.expect("the agenda");
            assert_eq!(percents(&shown.operation_progress), now);
        }
        other => panic!("{other:?}"),
    }
    match next(&mut operations).await {
        Update::Operations(o) => assert_eq!(percents(&o.operation_progress), now),
        other => panic!("{other:?}"),
    }
    // Nothing more: the other buffered changes were in those items.
    let quiet = Duration::from_millis(300);
    assert!(tokio::time::timeout(quiet, progress.next()).await.is_err(), "a second item");
    assert!(tokio::time::timeout(quiet, operations.next()).await.is_err(), "a second item");

    // Caught up, each change is an item again.
    let report = json!({"id": "a1", "processingState": "EXECUTING",
        "operationProgress": [{"operation": "b", "processingState": "EXECUTING",
            "percentComplete": 50.0}]});
    w.app.report(&worker, report, None, None).await.unwrap();
    match next(&mut operations).await {
        Update::Operations(o) => {
            assert_eq!(percents(&o.operation_progress), [("b".to_string(), Some(50.0))]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut progress).await, Update::Progress(_)));
}
