//! Snapshots: the read models and their checkpoint in one file, so a restart replays only the
//! tail of the log. A snapshot is an optimisation: a missing, torn, corrupt or outdated one is
//! reported as [`Unusable`] (the caller logs why and rebuilds from position 0), never a failure.
//!
//! File layout (`<dir>/projections.snapshot`; integers little-endian):
//!
//! ```text
//! "POPSNAP\n"            8 bytes, magic
//! format version         u32 (FORMAT_VERSION)
//! body:
//!   dictionary           u64, the fingerprint of the settled agendas' LZ4 dictionary
//!   head                 u64 length, u64 FNV-1a 64 of the bytes, the bytes: JSON of the
//!                        position, the agenda count and every config object
//!   agenda chunks        each u32 record count (≥ 1), u64 length, u64 FNV-1a 64, the records
//!                        (`agendas/stored.rs`: a finished agenda's settled bytes and keys, any
//!                        other agenda's state as JSON)
//!   end                  u32 0
//! body length            u64
//! body checksum          u64, FNV-1a 64 of the body's framing: every byte of the body but the
//!                        head's and the chunks' contents, which their own checksums cover
//! ```
//!
//! The chunks (about [`CHUNK_BYTES`] each) are what lets a load read the file a piece at a
//! time (never the whole file in memory) while one thread per core checks and decodes them,
//! and a finished agenda is copied as the bytes it is held as in memory, not decoded from
//! JSON and compressed again. The trailer lets the body be streamed to disk; the length is
//! checked before anything is read. Writing goes to a temporary file that is fsync'd and then
//! renamed over the old snapshot (and the directory fsync'd), so a crash leaves either the old
//! snapshot or the new one, never half.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use pop_store::Position;

use crate::agendas::{
    AgendaModel, LoadBuffers, Loaded, StoredError, decode_chunk, dictionary_fingerprint,
    encode_stored,
};
use crate::fnv::Fnv1a;
use crate::models::{FORMAT_VERSION, ReadModels};

/// The snapshot's file name inside the snapshot directory.
pub const SNAPSHOT_FILE: &str = "projections.snapshot";
const TEMP_FILE: &str = "projections.snapshot.tmp";
const MAGIC: &[u8; 8] = b"POPSNAP\n";
const HEADER_LEN: usize = MAGIC.len() + 4;
const TRAILER_LEN: usize = 16;
/// A chunk of agenda records is closed once it holds this many bytes: ~3,000 finished
/// agendas, small beside the models, large beside the per-chunk costs.
pub const CHUNK_BYTES: usize = 2 << 20;

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
    #[error("the snapshot {path} holds agendas compressed with another dictionary")]
    Dictionary { path: PathBuf },
    #[error("the snapshot {path} is malformed: {what}")]
    Malformed { path: PathBuf, what: String },
}

/// The snapshot file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Writes `models` (with their position) as the snapshot in `dir`, atomically.
pub fn save(dir: &Path, models: &ReadModels) -> Result<SnapshotInfo, SnapshotError> {
    save_in_chunks(dir, models, CHUNK_BYTES)
}

/// [`save`] with agenda chunks closed at `chunk_bytes` instead of [`CHUNK_BYTES`] (tests use
/// tiny chunks to split a few agendas over many).
pub fn save_in_chunks(
    dir: &Path,
    models: &ReadModels,
    chunk_bytes: usize,
) -> Result<SnapshotInfo, SnapshotError> {
    let path = path_in(dir);
    let err = |source| SnapshotError { path: path.clone(), source };
    fs::create_dir_all(dir).map_err(err)?;
    let temp = dir.join(TEMP_FILE);
    let written = write_temp(&temp, models, chunk_bytes).and_then(|sums| {
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
fn write_temp(temp: &Path, models: &ReadModels, chunk_bytes: usize) -> io::Result<(u64, u64)> {
    let file = File::create(temp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    let mut body = BodyWriter { out: &mut out, framing: Fnv1a::default(), bytes: 0 };
    body.frame(&dictionary_fingerprint().to_le_bytes())?;
    let mut head = Vec::new();
    models.write_snapshot_head(&mut head)?;
    body.section(None, &head)?;
    let mut chunk = Vec::with_capacity(chunk_bytes.min(CHUNK_BYTES) + (64 << 10));
    let mut count = 0u32;
    for entry in models.agendas().entries_by_id() {
        encode_stored(entry, &mut chunk).map_err(io::Error::other)?;
        count += 1;
        if chunk.len() >= chunk_bytes {
            body.section(Some(count), &chunk)?;
            chunk.clear();
            count = 0;
        }
    }
    if count > 0 {
        body.section(Some(count), &chunk)?;
    }
    body.frame(&0u32.to_le_bytes())?;
    let (bytes, checksum) = (body.bytes, body.framing.finish());
    out.write_all(&bytes.to_le_bytes())?;
    out.write_all(&checksum.to_le_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((bytes, checksum))
}

/// Writes a snapshot's body: framing (hashed into the trailer's checksum) and sections.
struct BodyWriter<'a, W: Write> {
    out: &'a mut W,
    framing: Fnv1a,
    bytes: u64,
}

impl<W: Write> BodyWriter<'_, W> {
    fn frame(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.framing.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// The head (no count) or a chunk of `count` records.
    fn section(&mut self, count: Option<u32>, content: &[u8]) -> io::Result<()> {
        if let Some(count) = count {
            self.frame(&count.to_le_bytes())?;
        }
        let mut hash = Fnv1a::default();
        hash.update(content);
        self.frame(&(content.len() as u64).to_le_bytes())?;
        self.frame(&hash.finish().to_le_bytes())?;
        self.out.write_all(content)?;
        self.bytes += content.len() as u64;
        Ok(())
    }
}

/// Agendas per loading thread below which a snapshot load stays on one thread.
const AGENDAS_PER_THREAD: usize = 4_096;

/// Threads a snapshot of `agendas` agendas is loaded on: one per core (at most 8), fewer for
/// a small snapshot.
fn load_threads(agendas: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cores.min(8).min(agendas / AGENDAS_PER_THREAD).max(1)
}

/// Loads the snapshot in `dir`, checking magic, format version, length and checksums.
pub fn load(dir: &Path) -> Result<ReadModels, Unusable> {
    load_on(dir, None)
}

/// [`load`] with the agenda chunks checked and decoded on `threads` threads instead of
/// [`load_threads`]: equal models whatever the split.
pub fn load_on(dir: &Path, threads: Option<usize>) -> Result<ReadModels, Unusable> {
    let path = path_in(dir);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing(path)),
        Err(source) => return Err(Unusable::Unreadable { path, source }),
    };
    let mut header = [0u8; HEADER_LEN];
    let mut trailer = [0u8; TRAILER_LEN];
    let len = match read_ends(&mut file, &mut header, &mut trailer) {
        Ok(Some(len)) => len,
        Ok(None) => return Err(Unusable::NotASnapshot(path)),
        Err(source) => return Err(Unusable::Unreadable { path, source }),
    };
    if !header.starts_with(MAGIC) {
        return Err(Unusable::NotASnapshot(path));
    }
    let found = u32::from_le_bytes(le_bytes(&header[MAGIC.len()..]));
    if found != FORMAT_VERSION {
        return Err(Unusable::Version { path, found });
    }
    let recorded_len = u64::from_le_bytes(le_bytes(&trailer[..8]));
    let recorded_sum = u64::from_le_bytes(le_bytes(&trailer[8..]));
    let actual_len = len - (HEADER_LEN + TRAILER_LEN) as u64;
    if recorded_len != actual_len {
        return Err(Unusable::Length { path, recorded: recorded_len, actual: actual_len });
    }
    let mut body = BodyReader {
        r: BufReader::with_capacity(1 << 16, file),
        remaining: actual_len,
        framing: Fnv1a::default(),
        done: false,
    };
    let loaded = body.load(threads);
    let actual = body.framing.finish();
    match loaded {
        // A framing that does not add up is corrupt whatever else went wrong on the way.
        Err(Failure::Malformed(_) | Failure::Stored(_)) if body.done && actual != recorded_sum => {
            Err(Unusable::Checksum { path, recorded: recorded_sum, actual })
        }
        Err(failure) => Err(failure.unusable(path)),
        Ok(_) if actual != recorded_sum => {
            Err(Unusable::Checksum { path, recorded: recorded_sum, actual })
        }
        Ok(models) => Ok(models),
    }
}

/// Reads the header and the trailer of `file`; its length, or `None` when it is too short.
fn read_ends(
    file: &mut File,
    header: &mut [u8; HEADER_LEN],
    trailer: &mut [u8; TRAILER_LEN],
) -> io::Result<Option<u64>> {
    let len = file.metadata()?.len();
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Ok(None);
    }
    file.read_exact(header)?;
    file.seek(SeekFrom::Start(len - TRAILER_LEN as u64))?;
    file.read_exact(trailer)?;
    file.seek(SeekFrom::Start(HEADER_LEN as u64))?;
    Ok(Some(len))
}

/// Why a load failed, before the path is known to the error.
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    Dictionary,
    Checksum { recorded: u64, actual: u64 },
    Decode(serde_json::Error),
    Malformed(String),
    Stored(StoredError),
}

impl Failure {
    fn unusable(self, path: PathBuf) -> Unusable {
        match self {
            Failure::Io(source) => Unusable::Unreadable { path, source },
            Failure::Dictionary => Unusable::Dictionary { path },
            Failure::Checksum { recorded, actual } => Unusable::Checksum { path, recorded, actual },
            Failure::Decode(source) | Failure::Stored(StoredError::Json(source)) => {
                Unusable::Decode { path, source }
            }
            Failure::Malformed(what) => Unusable::Malformed { path, what },
            Failure::Stored(e @ StoredError::Malformed(_)) => {
                Unusable::Malformed { path, what: e.to_string() }
            }
        }
    }
}

/// One chunk of agenda records on its way to a loading thread.
struct Chunk {
    index: usize,
    count: u32,
    checksum: u64,
    bytes: Vec<u8>,
}

/// Reads a snapshot's body in order, hashing its framing.
struct BodyReader<R: Read> {
    r: R,
    remaining: u64,
    framing: Fnv1a,
    /// Whether the whole body was read (so that the framing's checksum is complete).
    done: bool,
}

impl<R: Read> BodyReader<R> {
    fn frame<const N: usize>(&mut self) -> Result<[u8; N], Failure> {
        if self.remaining < N as u64 {
            return Err(Failure::Malformed("the body ends inside its framing".to_string()));
        }
        let mut bytes = [0u8; N];
        self.r.read_exact(&mut bytes).map_err(Failure::Io)?;
        self.framing.update(&bytes);
        self.remaining -= N as u64;
        Ok(bytes)
    }

    /// A section's length, checksum and content.
    fn section(&mut self) -> Result<(u64, Vec<u8>), Failure> {
        let len = u64::from_le_bytes(self.frame()?);
        let checksum = u64::from_le_bytes(self.frame()?);
        if len > self.remaining {
            return Err(Failure::Malformed(format!(
                "a section of {len} bytes where {} are left",
                self.remaining
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.r.read_exact(&mut bytes).map_err(Failure::Io)?;
        self.remaining -= len;
        Ok((checksum, bytes))
    }

    fn load(&mut self, threads: Option<usize>) -> Result<ReadModels, Failure> {
        if u64::from_le_bytes(self.frame()?) != dictionary_fingerprint() {
            return Err(Failure::Dictionary);
        }
        let (recorded, head) = self.section()?;
        let actual = fnv(&head);
        if actual != recorded {
            return Err(Failure::Checksum { recorded, actual });
        }
        let (mut models, total) = ReadModels::from_snapshot_head(&head).map_err(Failure::Decode)?;
        drop(head);
        // A record takes at least 9 bytes (a tag and two lengths): a count the rest of the
        // file cannot hold is not reserved for.
        if total as u64 > self.remaining / 9 {
            return Err(Failure::Malformed(format!("{total} agendas in {} bytes", self.remaining)));
        }
        let threads = threads.unwrap_or_else(|| load_threads(total)).max(1);
        let parts = self.chunks(threads, total)?;
        let agendas = AgendaModel::from_loaded(parts, total).map_err(Failure::Stored)?;
        models.set_agendas(agendas);
        Ok(models)
    }

    /// Reads the agenda chunks on this thread while `threads` threads check and decode them;
    /// each thread's entries. The first failure in the file's order wins, a checksum
    /// mismatch over a record that does not decode.
    fn chunks(&mut self, threads: usize, total: usize) -> Result<Vec<Loaded>, Failure> {
        let (send, receive) = mpsc::sync_channel::<Chunk>(threads * 2);
        let receive = Mutex::new(receive);
        let failed = AtomicBool::new(false);
        let share = total.div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| decode_chunks(&receive, &failed, share)))
                .collect();
            let read = self.read_chunks(&send, &failed);
            drop(send);
            let mut parts = Vec::with_capacity(threads);
            let mut first: Option<(usize, Failure)> = None;
            for worker in workers {
                let (part, failure) =
                    worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                parts.push(part);
                if let Some((index, failure)) = failure {
                    let checksum = |f: &Failure| matches!(f, Failure::Checksum { .. });
                    let wins = match &first {
                        None => true,
                        Some((i, f)) => {
                            (checksum(&failure), std::cmp::Reverse(index))
                                > (checksum(f), std::cmp::Reverse(*i))
                        }
                    };
                    if wins {
                        first = Some((index, failure));
                    }
                }
            }
            read?;
            match first {
                Some((_, failure)) => Err(failure),
                None => Ok(parts),
            }
        })
    }

    /// Sends every chunk to the loading threads, up to the end marker, and checks that the
    /// body ends there. Once a thread has failed the rest is read but not sent (the framing's
    /// checksum still covers the whole body).
    fn read_chunks(
        &mut self,
        send: &mpsc::SyncSender<Chunk>,
        failed: &AtomicBool,
    ) -> Result<(), Failure> {
        for index in 0.. {
            let count = u32::from_le_bytes(self.frame()?);
            if count == 0 {
                break;
            }
            let (checksum, bytes) = self.section()?;
            if !failed.load(Ordering::Relaxed) {
                let chunk = Chunk { index, count, checksum, bytes };
                if send.send(chunk).is_err() {
                    break;
                }
            }
        }
        if self.remaining != 0 {
            return Err(Failure::Malformed(format!(
                "{} bytes after the last chunk",
                self.remaining
            )));
        }
        self.done = true;
        Ok(())
    }
}

/// A loading thread: checks and decodes chunks until the channel closes; its entries and
/// its first failure (with the chunk's index). After a failure it only drains the channel.
fn decode_chunks(
    receive: &Mutex<mpsc::Receiver<Chunk>>,
    failed: &AtomicBool,
    share: usize,
) -> (Loaded, Option<(usize, Failure)>) {
    let mut out = Vec::with_capacity(share);
    let mut buffers = LoadBuffers::default();
    let mut failure = None;
    loop {
        let next = receive.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(chunk) = next else { break };
        if failure.is_some() {
            continue;
        }
        let actual = fnv(&chunk.bytes);
        let result = if actual != chunk.checksum {
            Err(Failure::Checksum { recorded: chunk.checksum, actual })
        } else {
            decode_chunk(&chunk.bytes, chunk.count, &mut buffers, &mut out).map_err(Failure::Stored)
        };
        if let Err(f) = result {
            failed.store(true, Ordering::Relaxed);
            failure = Some((chunk.index, f));
        }
    }
    (out, failure)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::default();
    hash.update(bytes);
    hash.finish()
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
