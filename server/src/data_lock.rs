//! One process per data directory. `pop serve`, `pop demo`, `pop rebuild` and the store-based
//! `pop reap` processes on the embedded store take an exclusive OS lock on
//! `<data-dir>/pop.lock` for as long as they run: two of them on one directory would run two
//! schedulers (or reapers) each blind to the other's writes, and clobber each other's
//! snapshots. A second one fails at once, naming the holder's PID, which the holder writes into
//! the lock file. Read-only commands (`pop log`, the API clients) take no lock.
//!
//! The lock is `flock`-style (std's `File::try_lock`): the kernel drops it when the holder
//! exits, however it exits, so a crashed or killed process never leaves a stale lock behind
//! (the file stays, with the dead holder's PID, and is simply locked again).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "pop.lock";

/// Most bytes of a lock file read to name its holder: it holds a PID and a command name, and a
/// corrupt or foreign file must not make the error message unbounded.
const MAX_HOLDER_BYTES: u64 = 256;

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Locks `data_dir` (created if missing) for `command` (e.g. `serve`), or fails at once
    /// naming the process that holds it.
    pub fn acquire(data_dir: &Path, command: &str) -> Result<DataDirLock> {
        // Said as what it is (ops3am20: "File exists (os error 17)" read as if it should work).
        if data_dir.exists() && !data_dir.is_dir() {
            bail!(
                "the data directory {} is a file, not a directory: give --data-dir (POP_DATA_DIR) a \
                 directory, or a path where one may be made",
                data_dir.display()
            );
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            // Said with what still works there (ops3am53: "Read-only file system" alone).
            Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                return Err(e).with_context(|| {
                    format!(
                        "opening the lock file {}: the data directory is read-only; {command} \
                         writes to it, so it needs a writable one (pop log, pop verify and pop \
                         export read a read-only copy)",
                        path.display()
                    )
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("opening the lock file {}", path.display()));
            }
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "the data directory {} is in use by {}; stop it first (one pop serve, demo, \
                 reap or rebuild per data directory; pop log and the API clients may still \
                 use it)",
                data_dir.display(),
                holder(&mut file)
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let record = format!("{}\n{command}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(record.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("writing this process's PID into {}", path.display()))?;
        tracing::debug!(lock = %path.display(), pid = std::process::id(), "data directory locked");
        Ok(DataDirLock { _file: file })
    }
}

/// Who holds the lock, from what the holder wrote: "pop serve (pid 1234)".
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.take(MAX_HOLDER_BYTES).read_to_string(&mut text);
    let mut lines = text.lines().map(str::trim);
    match (read, lines.next().and_then(|l| l.parse::<u32>().ok()), lines.next()) {
        (Ok(_), Some(pid), Some(command)) if !command.is_empty() => {
            format!("pop {command} (pid {pid})")
        }
        (Ok(_), Some(pid), _) => format!("another pop process (pid {pid})"),
        // The holder locked it an instant ago and has not written its PID yet.
        _ => "another pop process (its PID is not written yet)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let held = DataDirLock::acquire(dir.path(), "serve").expect("the first lock");
        let err = DataDirLock::acquire(dir.path(), "rebuild").expect_err("the second lock");
        let message = format!("{err:#}");
        assert!(message.contains(&format!("pop serve (pid {})", std::process::id())), "{message}");
        drop(held);
        DataDirLock::acquire(dir.path(), "rebuild").expect("free again once the holder is gone");
    }
}
