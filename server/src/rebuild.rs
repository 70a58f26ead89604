//! `pop rebuild`: replays the whole log — of the embedded store, or of PostgreSQL with
//! `--store` — into fresh read models with a progress bar and its events/s, prints the read
//! models' fingerprint, and with `--snapshot` writes them as the snapshot the next `pop serve`
//! starts from.
//!
//! The fingerprint printed is the one without the log position
//! (`ReadModels::content_fingerprint`): a position is the store's own numbering, so the same
//! history imported into another store (`pop import`) ends at another position with equal
//! read models, and the two fingerprints compare. The one with the position (what a snapshot
//! is checked by) is printed beside it.

use std::sync::Arc;

use crate::backend::Backend;
use crate::cli::{DurabilityArg, RebuildArgs};
use crate::data_lock::DataDirLock;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

pub async fn run(args: RebuildArgs) -> Result<()> {
    let _lock = match &args.store_url {
        Some(_) => None,
        None => {
            let path = args.store.db_path();
            anyhow::ensure!(path.exists(), "no store at {}", path.display());
            let dir = &args.store.data_dir;
            crate::checkpoints::Witness::refuse_after_move(dir, None, &path, "rebuild")?;
            Some(DataDirLock::acquire(dir, "rebuild")?)
        }
    };
    let backend =
        Backend::open(&args.store, args.store_url.as_deref(), DurabilityArg::Full).await?;
    let log = Arc::clone(&backend.log);
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
    let fingerprint = models.content_fingerprint().context("fingerprinting the read models")?;
    let with_position = models.fingerprint().context("fingerprinting the read models")?;
    println!(
        "rebuilt to position {} in {:.2} s; fingerprint {:016x} (with the position {:016x})",
        models.position(),
        elapsed.as_secs_f64(),
        fingerprint,
        with_position
    );
    if args.snapshot {
        let dir = crate::backend::snapshot_dir(&args.store.data_dir, args.store_url.as_deref());
        let info =
            pop_projections::snapshot::save(&dir, &models).context("writing the snapshot")?;
        println!(
            "snapshot written to {}: position {}, {} bytes of read models (the file adds its \
             header), checksum {:016x}",
            dir.display(),
            info.position,
            info.bytes,
            info.checksum
        );
    }
    backend.close().await?;
    Ok(())
}
