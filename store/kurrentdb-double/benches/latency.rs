//! Latency of pop's KurrentDB backend against the protocol double on loopback: what one
//! gRPC round trip of the `kurrentdb` client costs, and what pop's operations cost in round
//! trips. `cargo bench -p pop-kurrentdb-double --bench latency [-- --runs N --ops N]`.
//!
//! The double answers from memory, so these figures are the client's and pop's overhead,
//! not a KurrentDB server's.

use std::time::{Duration, Instant};

use pop_kurrentdb_double::{DoubleOptions, KurrentDouble};
use pop_store::{Direction, EventStore, ExpectedVersion, KurrentOptions, KurrentStore, NewEvent};
use uuid::Uuid;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Numbered".into(),
        schema_version: 1,
        data: format!(r#"{{"i":{i}}}"#).into_bytes(),
        metadata: br#"{"actor":"bench"}"#.to_vec(),
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = arg("--runs", 3);
    let ops = arg("--ops", 50);
    let double = KurrentDouble::start(DoubleOptions::default()).await?;
    let store = KurrentStore::connect(&double.url(), KurrentOptions::default()).await?;
    let (mut reads, mut appends, mut batches) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let stream = format!("bench-{run}");
        store.append(&stream, ExpectedVersion::NoStream, vec![event(0)]).await?;
        let t = Instant::now();
        for _ in 0..ops {
            store.read_stream(&stream, 0, 1, Direction::Forwards).await?;
        }
        reads.push(t.elapsed() / ops as u32);
        let t = Instant::now();
        for i in 0..ops {
            let expected = ExpectedVersion::Exact(i as u64);
            store.append(&stream, expected, vec![event(i)]).await?;
        }
        appends.push(t.elapsed() / ops as u32);
        let t = Instant::now();
        let many: Vec<NewEvent> = (0..100).map(event).collect();
        store.append(&format!("batch-{run}"), ExpectedVersion::NoStream, many).await?;
        batches.push(t.elapsed());
    }
    println!("runs {runs}, {ops} operations each; medians:");
    println!("read_stream (1 round trip):               {:?}", median(reads));
    println!(
        "append of 1 event (4 round trips: version, claim, append, position): {:?}",
        median(appends)
    );
    println!("append of 100 events (100 claims, 64 in flight): {:?}", median(batches));
    Ok(())
}
