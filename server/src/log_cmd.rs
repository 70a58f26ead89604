//! `pop log`: prints events as JSON lines — the global log from a position, or one stream's
//! history — for audits and for operators at 3 a.m. Data and metadata are printed as the JSON
//! they were stored as.

use std::io::Write;

use anyhow::{Context, Result};
use futures::StreamExt;
use pop_store::{Direction, EventStore, Position, RecordedEvent, SqliteOptions, SqliteStore};
use serde_json::{Value, json};

use crate::cli::LogArgs;

/// Events read per round trip to the store.
const PAGE: usize = 1_000;

pub async fn run(args: LogArgs) -> Result<()> {
    let path = args.store.db_path();
    anyhow::ensure!(path.exists(), "no store at {} (run `pop serve` first)", path.display());
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = std::io::BufWriter::new(crate::output::Stdout);
    let mut printed = 0usize;

    if let Some(stream) = &args.stream {
        let mut from = 0u64;
        while printed < args.limit {
            let page = store
                .read_stream(stream, from, PAGE.min(args.limit - printed), Direction::Forwards)
                .await
                .with_context(|| format!("reading stream {stream}"))?;
            let Some(last) = page.last() else { break };
            from = last.version + 1;
            for e in &page {
                writeln!(out, "{}", render(e))?;
                printed += 1;
            }
        }
        if printed == 0 && args.limit > 0 {
            // Said on stderr (stdout stays the events), so a mistyped name is not silence.
            let hint = if stream.starts_with("agenda-") && !stream.contains('/') {
                ": an agenda's stream is agenda-<customerId>/<id> (`pop events <id>` reads it \
                 by id)"
            } else {
                ""
            };
            eprintln!("pop: no events in stream {stream:?}{hint}");
        }
        if printed == args.limit
            && !store.read_stream(stream, from, 1, Direction::Forwards).await?.is_empty()
        {
            eprintln!("pop: stopped at --limit {}; the stream has more events", args.limit);
        }
    } else {
        let mut after = match &args.after {
            Some(p) => p.parse::<Position>().with_context(|| format!("--after {p:?}"))?,
            None => Position::START,
        };
        if args.follow {
            let mut events = store.subscribe_all(after);
            while printed < args.limit {
                let Some(e) = events.next().await else { break };
                let e = e.context("following the log")?;
                writeln!(out, "{}", render(&e))?;
                out.flush()?;
                printed += 1;
            }
        } else {
            while printed < args.limit {
                let page = store
                    .read_all(after, PAGE.min(args.limit - printed))
                    .await
                    .context("reading the log")?;
                let Some(last) = page.last() else { break };
                after = last.position;
                for e in &page {
                    writeln!(out, "{}", render(e))?;
                    printed += 1;
                }
            }
            if printed == args.limit && !store.read_all(after, 1).await?.is_empty() {
                eprintln!(
                    "pop: stopped at --limit {}; more events exist: --after {after} (or a larger \
                     --limit)",
                    args.limit
                );
            }
        }
    }
    out.flush()?;
    drop(out);
    store.close().await.context("closing the store")?;
    Ok(())
}

fn render(e: &RecordedEvent) -> Value {
    let data: Value = serde_json::from_slice(&e.data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&e.data).into_owned()));
    let metadata: Value = serde_json::from_slice(&e.metadata)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&e.metadata).into_owned()));
    json!({
        "position": e.position.to_string(),
        "stream": &*e.stream,
        "version": e.version,
        "type": &*e.event_type,
        "schemaVersion": e.schema_version,
        "eventId": e.event_id,
        "recordedAt": e.recorded_at,
        "data": data,
        "metadata": metadata,
    })
}
