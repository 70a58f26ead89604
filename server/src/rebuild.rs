//! `pop rebuild`: replays the whole log into fresh read models with a progress bar and its
//! events/s, prints the read models' fingerprint (equal fingerprints mean equal models), and
//! with `--snapshot` writes them as the snapshot the next `pop serve` starts from.

use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pop_store::{EventStore, SqliteOptions, SqliteStore};

use crate::cli::RebuildArgs;
use crate::data_lock::DataDirLock;

pub async fn run(args: RebuildArgs) -> Result<()> {
    let path = args.store.db_path();
    anyhow::ensure!(path.exists(), "no store at {}", path.display());
    let _lock = DataDirLock::acquire(&args.store.data_dir, "rebuild")?;
    let store = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let log: Arc<dyn EventStore> = store.clone();
    let head = log.head().await.context("reading the head")?;
    let total = head.sequence().unwrap_or(0);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("replaying [{bar:40}] {pos}/{len} events  {msg}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    let models = pop_projections::rebuild(Arc::clone(&log), |p| {
        bar.set_position(p.position.sequence().unwrap_or(p.events));
        bar.set_message(format!("{:.0} events/s", p.events_per_sec));
    })
    .await
    .context("rebuilding the read models")?;
    bar.finish();
    let elapsed = bar.elapsed();
    let fingerprint = models.fingerprint().context("fingerprinting the read models")?;
    println!(
        "rebuilt to position {} in {:.2} s; fingerprint {:016x}",
        models.position(),
        elapsed.as_secs_f64(),
        fingerprint
    );
    if args.snapshot {
        let dir = args.store.data_dir.join("snapshots");
        let info =
            pop_projections::snapshot::save(&dir, &models).context("writing the snapshot")?;
        println!("snapshot written: {info:?}");
    }
    store.close().await.context("closing the store")?;
    Ok(())
}
