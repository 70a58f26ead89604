//! The log verified inside `pop serve` (`--verify-every`): the same walk as `pop verify` —
//! every event's digest and chain, every stream's head, every tombstone, every signed
//! checkpoint against the server's key and its witness — run off the request path every so
//! often, its outcome on `/metrics` (`pop_verify_*`) and a break in the log as an ERROR naming
//! stream, version and position. The sealed checkpoints (`pop_checkpoint_*`) say what was
//! signed; these say what was last checked against the log as it is now (auditor59 M3: a
//! store edited while stopped was served with every checkpoint gauge green).
//!
//! It reads as `pop verify` does (the embedded file through a read-only connection, PostgreSQL
//! in one read-only snapshot) and takes no lock. Each run reads the whole log: on the
//! embedded store about 1.5 s of both cores per million events (`pop verify`'s rate in
//! BENCHMARKS.md); hence hourly by default. The witness is read before the log, so the log read holds the witnessed
//! checkpoint (the sealer stores a checkpoint before it witnesses it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pop_store::commitment::{CheckpointKey, Trust};
use pop_store::verify::Verification;

use crate::checkpoints::Witness;

/// How often by default: each run reads the whole log.
pub const VERIFY_EVERY: Duration = Duration::from_secs(3600);

/// The first run after start, at most (the interval when shorter): soon enough that
/// `/metrics` says what it found, after the start's own work and the first minute's load
/// (a benchmark of a fresh server measures its steady state, not this one read of the log).
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// The log to verify, as the server opened it.
pub enum Log {
    Embedded(PathBuf),
    Postgres(String),
}

pub struct Verifier {
    pub log: Log,
    pub key: Option<CheckpointKey>,
    pub witness: Witness,
}

impl Verifier {
    async fn run(&self) -> Result<Verification> {
        let witnessed = self.witness.read()?;
        let trust = Trust { key: self.key, witness: witnessed };
        match &self.log {
            Log::Embedded(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    pop_store::SqliteStore::verify_file_trusting(&path, trust)
                })
                .await?
                .context("verifying the embedded store")
            }
            Log::Postgres(url) => pop_store::postgres::verify_trusting(url, trust)
                .await
                .context("verifying the PostgreSQL store"),
        }
    }
}

/// Verifies every `every` (the first time after at most [`FIRST_AFTER`]) until `stop`
/// resolves.
pub fn spawn(
    verifier: Verifier,
    every: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    // On /metrics from the start: an alert on the last intact run's age fires for a server
    // whose log never verified (reaudit59 L5: the series were absent until a run was intact).
    {
        use pop_api::metrics::{VERIFY_BROKEN, VERIFY_INTACT_TIMESTAMP, VERIFY_RUNS};
        metrics::gauge!(VERIFY_BROKEN).set(0.0);
        metrics::gauge!(VERIFY_INTACT_TIMESTAMP).set(0.0);
        for outcome in ["intact", "broken", "not_verified", "failed"] {
            metrics::counter!(VERIFY_RUNS, "outcome" => outcome).increment(0);
        }
    }
    tokio::spawn(async move {
        let first = tokio::time::Instant::now() + every.min(FIRST_AFTER);
        let mut tick = tokio::time::interval_at(first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        // The break said last, so a lasting one is logged once, not every run.
        let mut said: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => round(&verifier, &mut said).await,
                () = &mut stop => break,
            }
        }
    })
}

async fn round(verifier: &Verifier, said: &mut Option<String>) {
    use pop_api::metrics::{
        VERIFY_BROKEN, VERIFY_CHECKPOINT_SEQ, VERIFY_EVENTS, VERIFY_INTACT_TIMESTAMP, VERIFY_RUNS,
    };
    let started = Instant::now();
    let report = match verifier.run().await {
        Ok(report) => report,
        // The store could not be read (PostgreSQL restarting, say): no alarm, the next run
        // tries again.
        Err(e) => {
            metrics::counter!(VERIFY_RUNS, "outcome" => "failed").increment(1);
            tracing::warn!(error = %format!("{e:#}"), "verifying the log did not run to its end; the next run tries again");
            return;
        }
    };
    let seq = report.checkpoints.last.map_or(0, |(seq, _, _)| seq);
    match (&report.first_break, &report.checkpoints.signer_not_handed_over) {
        (None, _) => {
            metrics::counter!(VERIFY_RUNS, "outcome" => "intact").increment(1);
            metrics::gauge!(VERIFY_BROKEN).set(0.0);
            metrics::gauge!(VERIFY_EVENTS).set(report.events as f64);
            metrics::gauge!(VERIFY_CHECKPOINT_SEQ).set(seq as f64);
            metrics::gauge!(VERIFY_INTACT_TIMESTAMP).set(chrono::Utc::now().timestamp() as f64);
            if said.take().is_some() {
                tracing::info!(events = report.events, checkpoint = seq, "the log verifies again");
            }
            let seconds = started.elapsed().as_secs_f64();
            tracing::debug!(events = report.events, checkpoint = seq, seconds, "the log verifies");
        }
        // This server's key signed none of the checkpoints: a key rotation whose handover the
        // next seal records, not a log changed outside pop (reaudit59 M1: the planned rotation
        // of the README paged TAMPERED until the next write). Not verified, said as
        // `pop verify` says it; the last intact run stays what it was.
        (Some(b), Some(key)) => {
            metrics::counter!(VERIFY_RUNS, "outcome" => "not_verified").increment(1);
            metrics::gauge!(VERIFY_BROKEN).set(0.0);
            let why = format!("not verified with key {key}: {b}");
            if said.as_deref() != Some(why.as_str()) {
                tracing::warn!(
                    key = %key,
                    found = %b,
                    "NOT VERIFIED: this server's checkpoint key signed none of the log's \
                     checkpoints; in a planned key rotation (--checkpoint-previous-key) its next \
                     seal hands the log over to it and the next run verifies; otherwise this is \
                     another store's key"
                );
                *said = Some(why);
            }
        }
        (Some(b), None) => {
            metrics::counter!(VERIFY_RUNS, "outcome" => "broken").increment(1);
            metrics::gauge!(VERIFY_BROKEN).set(1.0);
            let at = b.to_string();
            if said.as_deref() != Some(at.as_str()) {
                tracing::error!(
                    r#break = %at,
                    "TAMPERED: the log does not verify (this server's periodic check, \
                     --verify-every): keep a copy of the data directory or a dump of the \
                     database before anything else, then run `pop verify` for the whole \
                     report; restore from a backup or an export once the cause is known"
                );
                *said = Some(at);
            }
        }
    }
}
