//! `pop verify`: recomputes every event's digest and chain link, every stream's head and
//! every tombstone's recorded head hash of the embedded store in the data directory, prints
//! what it checked, and on the first break prints its stream, version and position and exits
//! non-zero. It opens the file read-only and takes no lock, so it may run beside `pop serve`.

use anyhow::{Result, bail};

use pop_store::SqliteStore;

use crate::cli::StoreArgs;

pub async fn run(args: StoreArgs) -> Result<()> {
    let path = args.db_path();
    if !path.exists() {
        bail!("no embedded store at {}", path.display());
    }
    let report = tokio::task::spawn_blocking(move || SqliteStore::verify_file(&path)).await??;
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
