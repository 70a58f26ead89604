//! Snapshots: the read models and their checkpoint in one file, so a restart replays only the
//! tail of the log. A snapshot is an optimisation: a missing, torn, corrupt or outdated one is
//! reported as [`Unusable`] (the caller logs why and rebuilds from position 0), never a failure.
//!
//! File layout (`<dir>/projections.snapshot`):
//!
//! ```text
//! "POPSNAP\n"            8 bytes, magic
//! format version         u32 little-endian (FORMAT_VERSION)
//! body                   the canonical JSON of the read models (position included)
//! body length            u64 little-endian
//! body checksum          u64 little-endian, FNV-1a 64 of the body
//! ```
//!
//! The trailer lets the body be streamed to disk without holding it in memory. Writing goes
//! to a temporary file that is fsync'd and then renamed over the old snapshot (and the
//! directory fsync'd), so a crash leaves either the old snapshot or the new one, never half.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use pop_store::Position;

use crate::models::{FORMAT_VERSION, Fnv1a, ReadModels};

/// The snapshot's file name inside the snapshot directory.
pub const SNAPSHOT_FILE: &str = "projections.snapshot";
const TEMP_FILE: &str = "projections.snapshot.tmp";
const MAGIC: &[u8; 8] = b"POPSNAP\n";
const HEADER_LEN: usize = MAGIC.len() + 4;
const TRAILER_LEN: usize = 16;

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub position: Position,
    /// The body's size in bytes.
    pub bytes: u64,
    pub checksum: u64,
}

/// Writing a snapshot failed. The runner logs it and carries on: the old snapshot (if any)
/// is still in place, and the log still holds everything.
#[derive(Debug, thiserror::Error)]
#[error("writing the projections snapshot {path}")]
pub struct SnapshotError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Why a snapshot cannot be used; the caller rebuilds from the log.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("there is no snapshot at {0}")]
    Missing(PathBuf),
    #[error("the snapshot {path} cannot be read")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a projections snapshot (bad magic or too short)")]
    NotASnapshot(PathBuf),
    #[error("the snapshot {path} has format version {found}; this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "the snapshot {path} is torn: its body has {actual} bytes, its trailer says {recorded}"
    )]
    Length { path: PathBuf, recorded: u64, actual: u64 },
    #[error("the snapshot {path} is corrupt: checksum {actual:016x}, expected {recorded:016x}")]
    Checksum { path: PathBuf, recorded: u64, actual: u64 },
    #[error("the snapshot {path} does not decode")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Writes `models` (with their position) as the snapshot in `dir`, atomically.
pub fn save(dir: &Path, models: &ReadModels) -> Result<SnapshotInfo, SnapshotError> {
    let path = path_in(dir);
    let err = |source| SnapshotError { path: path.clone(), source };
    fs::create_dir_all(dir).map_err(err)?;
    let temp = dir.join(TEMP_FILE);
    let written = write_temp(&temp, models).and_then(|sums| {
        fs::rename(&temp, &path)?;
        Ok(sums)
    });
    let (bytes, checksum) = match written {
        Ok(sums) => sums,
        Err(e) => {
            // A failed snapshot (a full disk, most likely) leaves no partial file behind to
            // hold on to the space it took; the previous snapshot stays as it was.
            if let Err(gone) = fs::remove_file(&temp)
                && gone.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %temp.display(), error = %gone, "cannot remove the failed snapshot's temporary file");
            }
            return Err(err(e));
        }
    };
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(SnapshotInfo { position: models.position(), bytes, checksum })
}

/// Writes the snapshot of `models` to `temp` and syncs it: its body's length and checksum.
fn write_temp(temp: &Path, models: &ReadModels) -> io::Result<(u64, u64)> {
    let file = File::create(temp)?;
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    let mut body = Tee { inner: &mut out, hash: Fnv1a::default(), bytes: 0 };
    models.write_canonical(&mut body)?;
    let (bytes, checksum) = (body.bytes, body.hash.finish());
    out.write_all(&bytes.to_le_bytes())?;
    out.write_all(&checksum.to_le_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((bytes, checksum))
}

/// Loads the snapshot in `dir`, checking magic, format version, length and checksum.
pub fn load(dir: &Path) -> Result<ReadModels, Unusable> {
    let path = path_in(dir);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing(path)),
        Err(source) => return Err(Unusable::Unreadable { path, source }),
    };
    if data.len() < HEADER_LEN + TRAILER_LEN || !data.starts_with(MAGIC) {
        return Err(Unusable::NotASnapshot(path));
    }
    let (header, rest) = data.split_at(HEADER_LEN);
    let found = u32::from_le_bytes(le_bytes(&header[MAGIC.len()..]));
    if found != FORMAT_VERSION {
        return Err(Unusable::Version { path, found });
    }
    let (body, trailer) = rest.split_at(rest.len() - TRAILER_LEN);
    let recorded_len = u64::from_le_bytes(le_bytes(&trailer[..8]));
    let recorded_sum = u64::from_le_bytes(le_bytes(&trailer[8..]));
    if recorded_len != body.len() as u64 {
        return Err(Unusable::Length { path, recorded: recorded_len, actual: body.len() as u64 });
    }
    // The checksum (a byte-serial hash: seconds for a snapshot of gigabytes) is summed on a
    // thread of its own while the body decodes; models decoded from a body whose checksum
    // does not match are dropped unused, and the mismatch is what is reported.
    let (actual, decoded) = std::thread::scope(|scope| {
        let summing = scope.spawn(|| {
            let mut hash = Fnv1a::default();
            hash.update(body);
            hash.finish()
        });
        let decoded = ReadModels::from_canonical(body);
        let actual = summing.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (actual, decoded)
    });
    if actual != recorded_sum {
        return Err(Unusable::Checksum { path, recorded: recorded_sum, actual });
    }
    decoded.map_err(|source| Unusable::Decode { path, source })
}

/// The first `N` bytes of `bytes` (callers pass slices of at least `N`; shorter ones are
/// zero-padded rather than panicking).
fn le_bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// Writes through to `inner` while hashing and counting the bytes.
struct Tee<'a, W: Write> {
    inner: &'a mut W,
    hash: Fnv1a,
    bytes: u64,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
