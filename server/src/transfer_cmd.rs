//! `pop export` and `pop import` (`pop_store::transfer`): the log as JSON Lines of CloudEvents
//! with a manifest first and a signed checkpoint last, and that file into an empty store —
//! the embedded one in the data directory or PostgreSQL at `--store` — verified whole before
//! anything is committed. Import then seals the imported log with the target's checkpoint key
//! (`--checkpoint-key`, else `<data-dir>/checkpoint.key`, created when missing), so
//! `pop verify` on the target checks it against a signed checkpoint at once. This is also the
//! way from the embedded store to PostgreSQL (README, "Auditing").

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pop_store::commitment::{LogCommitment as _, Sealer};
use pop_store::transfer::{ExportReader, KeySource, TransferError};
use pop_store::{PgOptions, PgStore, Position, SqliteOptions, SqliteStore};

use crate::cli::{ExportArgs, ImportArgs};
use crate::data_lock::DataDirLock;

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub async fn export(args: ExportArgs) -> Result<()> {
    let since: Position = match &args.since {
        Some(text) => text.parse().with_context(|| format!("--since {text:?}"))?,
        None => Position::START,
    };
    // A PostgreSQL store's checkpoints are signed by its servers' key: a key made here would
    // only find them "not signed by this key". (The embedded store's key lives in its data
    // directory, and is made there when the store was never served.)
    if args.store_url.is_some()
        && args.checkpoint_key.is_none()
        && !args.store.data_dir.join(crate::checkpoints::KEY_FILE).exists()
    {
        bail!(
            "pop export of a PostgreSQL store signs with the key its servers seal with: give it \
             with --checkpoint-key (no key in {})",
            args.store.data_dir.display()
        );
    }
    // The embedded store is looked for before anything is made: a mistyped --data-dir got a
    // new directory, a new signing key and an empty --out file, then "no embedded store".
    if args.store_url.is_none() && !args.store.db_path().exists() {
        bail!(
            "no embedded store at {} (is --data-dir the server's?)",
            args.store.db_path().display()
        );
    }
    if args.store_url.is_none() {
        crate::checkpoints::Witness::refuse_after_move(
            &args.store.data_dir,
            args.witness.as_deref(),
            &args.store.db_path(),
            "export",
        )?;
    }
    // A store with no key of its own gets one only once it signed this export: until then
    // nothing of the store's data directory is written (see `NewKey`).
    let key = crate::checkpoints::signing_key_or_new(
        &args.store.data_dir,
        args.checkpoint_key.as_deref(),
    )?;
    let signer = match &key {
        Ok(key) => key.clone(),
        Err(new) => new.key.clone(),
    };
    // Only a log that verifies is exported and signed: its own checkpoints, and the one this
    // data directory witnessed of it (see `pop verify`).
    let witness = crate::checkpoints::Witness::of(
        &args.store.data_dir,
        args.witness.as_deref(),
        args.store_url.as_deref(),
    )
    .read()?;
    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        // Not `output::Stdout`: a reader that goes away leaves the export incomplete, an error.
        None => Box::new(std::io::stdout()),
    };
    let out = std::io::BufWriter::with_capacity(1 << 20, out);
    let now = chrono::Utc::now();
    // The rule `pop verify` applies to the events no checkpoint covers: an export signs what
    // it exports, so it must not sign a log that verify calls NOT VERIFIED (auditor55 M1).
    let max_unsealed = args.unsealed.max_span();
    let result = match &args.store_url {
        Some(url) if is_postgres(url) => {
            pop_store::postgres::transfer::export_trusting(
                url,
                since,
                &signer,
                witness,
                max_unsealed,
                out,
                now,
            )
            .await
        }
        Some(_) => bail!("pop export reads the embedded store or a PostgreSQL one (postgres://…)"),
        None => {
            let path = args.store.db_path();
            if !path.exists() {
                bail!("no embedded store at {}", path.display());
            }
            tokio::task::spawn_blocking(move || {
                pop_store::sqlite::transfer::export_trusting(
                    &path,
                    since,
                    &signer,
                    witness,
                    max_unsealed,
                    out,
                    now,
                )
            })
            .await?
        }
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let what = match &args.out {
                Some(path) => {
                    let _ = std::fs::remove_file(path);
                    "exporting the log (nothing was kept)".to_owned()
                }
                None => "exporting the log: what went to standard output is incomplete, and \
                         `pop import` refuses it"
                    .to_owned(),
            };
            if let TransferError::Unsealed { entries, unsealed } = &e {
                return Err(crate::verify_cmd::not_intact(format!(
                    "{}; {what}",
                    crate::verify_cmd::unsealed_refusal(*entries, unsealed)
                )));
            }
            let refusal = e.to_string();
            let key_note = match &key {
                Ok(_) => crate::checkpoints::defaulted_key_note(
                    &args.store.data_dir,
                    args.checkpoint_key.as_deref(),
                    crate::checkpoints::KeyFlags::CheckpointKeyOnly,
                    &refusal,
                ),
                Err(_) if refusal.contains(crate::checkpoints::UNUSED_KEY) => Some(format!(
                    "{} has no checkpoint key and no --checkpoint-key was given: the store's \
                     checkpoints are signed by the key it was served or imported with; give \
                     that file with --checkpoint-key (no key was written there)",
                    args.store.data_dir.display()
                )),
                Err(_) => None,
            };
            let what = match key_note {
                Some(note) => format!("{what}; {note}"),
                None => what,
            };
            // A log that does not verify ends as `pop verify` ends on it, not as a store that
            // could not be read (auditor59 M2: exit 1 either way, so a scheduled export could
            // not tell tampering from a full disk).
            if matches!(e, TransferError::SourceBroken(_)) {
                return Err(crate::verify_cmd::not_intact(format!("TAMPERED: {what}: {refusal}")));
            }
            return Err(e).context(what);
        }
    };
    // The store had no checkpoint this key did not sign: it is the store's key from now on,
    // as a first `pop serve` would have made it.
    if let Err(new) = key
        && let Err(e) = new.keep(&args.store.data_dir)
    {
        // Signed by a key the store will not have: not kept (review-s45: a read-only data
        // directory left a complete export signed by a key then lost).
        if let Some(path) = &args.out {
            let _ = std::fs::remove_file(path);
        }
        return Err(e).context(
            "exporting the log (nothing was kept): the store had no checkpoint key, and the one \
             the export was signed with could not be kept as its key",
        );
    }
    let m = &summary.manifest;
    eprintln!(
        "exported {} events, {} pruned entries, {} tombstones from the {} store (after position \
         {}, up to {}); checkpoint over {} entries signed by key {}",
        m.events,
        m.pruned,
        m.tombstones,
        m.store,
        m.since,
        m.last_position.map_or_else(|| "-".into(), |p| p.to_string()),
        summary.checkpoint.events,
        m.key_id
    );
    Ok(())
}

pub async fn import(args: ImportArgs) -> Result<()> {
    // As for an export: a PostgreSQL store is sealed with its servers' key. One made here
    // signed the imported log with a key the servers did not have, so they refused to seal it
    // for good and `pop verify` with their key said TAMPERED (ops3am6).
    if args.store_url.as_deref().is_some_and(is_postgres)
        && args.checkpoint_key.is_none()
        && !args.store.data_dir.join(crate::checkpoints::KEY_FILE).exists()
    {
        bail!(
            "pop import into a PostgreSQL store seals it with the key its servers will seal \
             with: give it with --checkpoint-key (when moving from the embedded store, its \
             pop-data/checkpoint.key; else the servers' Secret). No key in {}; nothing was \
             imported",
            args.store.data_dir.display()
        );
    }
    let pinned = if args.public_key.is_some() || args.checkpoint_key.is_some() {
        crate::checkpoints::verifying_key(
            &args.store.data_dir,
            args.checkpoint_key.as_deref(),
            args.public_key.as_deref(),
        )?
    } else {
        None
    };
    // With the whole cause chain: a store that cannot be reached says why (role, database,
    // nothing listening), as the other verbs do (newcomer4).
    // A file that does not verify (a line edited, dropped, moved, a bad signature) ends as
    // `pop verify` ends on a tampered log (auditor59 M2: exit 1, as for a missing file).
    let refused = |e: TransferError| -> anyhow::Error {
        match e {
            TransferError::Invalid { .. } | TransferError::Unsigned(_) => {
                crate::verify_cmd::not_intact(format!(
                    "NOT INTACT: import refused, nothing was imported: {e}"
                ))
            }
            e => anyhow::Error::new(e).context("import refused, nothing was imported"),
        }
    };
    let reader = ExportReader::open(&args.file, pinned).map_err(refused)?;
    let (summary, target) = match &args.store_url {
        Some(url) if is_postgres(url) => {
            let summary =
                pop_store::postgres::transfer::import(url, reader).await.map_err(refused)?;
            (summary, Target::Postgres(url.clone()))
        }
        Some(_) => bail!("pop import writes the embedded store or a PostgreSQL one (postgres://…)"),
        None => {
            let dir = args.store.data_dir.clone();
            // The directories the import makes, the data directory first, then its parents
            // (review-s51 L3: a refused import into `new/pop-data` left `new`).
            let made: Vec<std::path::PathBuf> = dir
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
                .map(std::path::Path::to_path_buf)
                .collect();
            let lock = DataDirLock::acquire(&dir, "import")?;
            let path = args.store.db_path();
            let db = path.clone();
            let imported = tokio::task::spawn_blocking(move || {
                pop_store::sqlite::transfer::import(&db, reader)
            })
            .await?;
            let summary = match imported {
                Ok(summary) => summary,
                Err(e) => {
                    // Refused, nothing imported: a data directory made for it goes too (it
                    // held only the lock file and an empty store), so a retry, or `pop
                    // serve`, starts from what was there before.
                    drop(lock);
                    // The data directory with what the import wrote in it; each parent only
                    // while empty: another may have put something there meanwhile (review54 M2).
                    if let Some((data_dir, parents)) = made.split_first() {
                        match std::fs::remove_dir_all(data_dir) {
                            Ok(()) => {
                                for parent in parents {
                                    if std::fs::remove_dir(parent).is_err() {
                                        break;
                                    }
                                }
                            }
                            Err(gone) => eprintln!(
                                "WARNING: could not remove {}, made for this import: {gone}",
                                data_dir.display()
                            ),
                        }
                    }
                    return Err(refused(e));
                }
            };
            (summary, Target::Sqlite { path, _lock: lock })
        }
    };
    println!(
        "verified {}: {} events, {} pruned entries, {} tombstones from the {} store; its \
         checkpoint over {} entries is signed by key {}",
        args.file.display(),
        summary.events,
        summary.pruned,
        summary.tombstones,
        summary.manifest.store,
        summary.checkpoint.events,
        summary.key_id
    );
    if summary.key_source == KeySource::Manifest {
        println!(
            "WARNING: checked against the key the file names itself; give --public-key (the \
             source's) to know who signed it"
        );
    }
    let key =
        crate::checkpoints::signing_key(&args.store.data_dir, args.checkpoint_key.as_deref())?;
    let sealer = Sealer::new(key);
    let now = chrono::Utc::now();
    let sealed = match &target {
        Target::Postgres(url) => {
            let store = PgStore::connect(url, PgOptions::default())
                .await
                .context("opening the PostgreSQL store to seal it")?;
            let sealed = sealer.seal_all(&store, now).await;
            let newest = store.last_checkpoint().await;
            store.close().await;
            sealed.map(|s| (s, newest))
        }
        Target::Sqlite { path, .. } => {
            let store = SqliteStore::open(path, SqliteOptions::default())
                .await
                .with_context(|| format!("opening {} to seal it", path.display()))?;
            let sealed = sealer.seal_all(&store, now).await;
            let newest = store.last_checkpoint().await;
            store.close().await.context("closing the store")?;
            sealed.map(|s| (s, newest))
        }
    };
    let (sealed, newest) = sealed.context("sealing the imported log")?;
    // A new store: what the data directory witnessed of a store here before is not this one's.
    // The import is committed whatever happens here, so a witness that cannot be written is
    // a warning with what to do, not a failure (a retry would find the store full).
    let witness = crate::checkpoints::Witness::of(
        &args.store.data_dir,
        args.witness.as_deref(),
        args.store_url.as_deref(),
    );
    // A PostgreSQL import is witnessed only when asked (`--witness`): this data directory may
    // witness another database (a live one, while a backup is tried out on a scratch one).
    let record = matches!(target, Target::Sqlite { .. }) || args.witness.is_some();
    let witnessed = if record {
        newest
            .context("reading the imported store's newest checkpoint")
            .and_then(|newest| witness.write(newest.as_ref()))
    } else {
        Ok(())
    };
    if let Err(e) = witnessed {
        eprintln!(
            "WARNING: the import is committed, but the checkpoint witness was not written \
             ({e:#}); move {} away before `pop serve` uses this data directory, or it will \
             refuse to seal the new store",
            witness.path().display()
        );
    }
    println!(
        "imported into {}; {}",
        target.describe(),
        match sealed {
            Some(c) => format!(
                "sealed checkpoint {} over {} entries, up to position {}",
                c.seq, c.events, c.position
            ),
            None => "nothing to seal (an empty log)".into(),
        }
    );
    Ok(())
}

enum Target {
    Postgres(String),
    /// The file, and the data directory's lock held until the end.
    Sqlite {
        path: std::path::PathBuf,
        _lock: DataDirLock,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Postgres(_) => "the PostgreSQL store".into(),
            Target::Sqlite { path, .. } => display(path),
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
