//! `pop verify`: recomputes every event's digest and chain link, every stream's head and
//! every tombstone's recorded head hash — of the embedded store in the data directory, or of
//! the PostgreSQL store at `--store` — prints what it checked, and on the first break prints
//! its stream, version and position and exits non-zero. It writes nothing and takes no lock
//! (the embedded file is opened read-only; PostgreSQL is read in one read-only snapshot), so
//! it may run beside `pop serve`.

use anyhow::{Context, Result, bail};

use pop_store::SqliteStore;
use pop_store::verify::Verification;

use crate::cli::VerifyArgs;

pub async fn run(args: VerifyArgs) -> Result<()> {
    let report = match &args.store_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            pop_store::postgres::verify(url).await.context("verifying the PostgreSQL store")?
        }
        Some(_) => bail!("pop verify checks the embedded store or a PostgreSQL one (postgres://…)"),
        None => {
            let path = args.store.db_path();
            if !path.exists() {
                bail!("no embedded store at {}", path.display());
            }
            tokio::task::spawn_blocking(move || SqliteStore::verify_file(&path)).await??
        }
    };
    print_report(report)
}

fn print_report(report: Verification) -> Result<()> {
    println!(
        "checked {} events, {} streams, {} deleted streams",
        report.events, report.streams, report.deleted_streams
    );
    match report.first_break {
        None => {
            println!("intact");
            Ok(())
        }
        Some(b) => bail!("TAMPERED: {b}"),
    }
}
