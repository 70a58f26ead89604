//! The write-ahead log's own check, before SQLite opens it: a damaged frame that SQLite's
//! recovery would stop at, silently dropping the commits after it.
//!
//! SQLite replays `<file>-wal` frame by frame when a store is opened after a stop that left
//! commits in it (`kill -9`, a crash), and stops at the first frame whose checksum does not
//! match: everything after it is taken as never written. That is right for a write torn by a
//! power cut (only the last transaction can be torn), and wrong for a byte damaged in the
//! middle: the commits after it were acknowledged, and are dropped without a word (auditor55
//! M2). The frames' checksums are cumulative, so the frames after a damaged one still check
//! against each other, seeded from the damaged frame's stored checksum (damage in its page)
//! or from the one computed over it (damage in its stored checksum): a commit found so,
//! in a transaction after the damaged frame's, was damaged away, not torn.
//!
//! The format is SQLite's (<https://www.sqlite.org/fileformat2.html#walformat>): a 32-byte
//! header (magic, format, page size, checkpoint sequence, two salts, a checksum of the first
//! 24 bytes) and frames of a 24-byte header (page number, the database size after a commit
//! frame or 0, the two salts, a cumulative checksum) and a page. Numbers are big-endian; the
//! checksums sum 32-bit words in the byte order the magic's low bit names.

use std::io::Read;
use std::path::Path;

const MAGIC: u32 = 0x377f_0682;
const FORMAT: u32 = 3_007_000;
const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// What the check found: a damaged frame with acknowledged commits after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalDamage {
    /// The first damaged frame (1-based) and its byte offset in the file.
    pub frame: u64,
    pub offset: u64,
    /// The commits from the damaged frame's transaction on that still check: SQLite would drop
    /// them.
    pub lost_commits: u64,
    /// The header's checkpoint sequence and salts as read: a log restarted between two reads
    /// has others.
    pub generation: (u32, u32, u32),
}

fn be(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// SQLite's `walChecksumBytes`: `data`'s 32-bit words summed into `(s0, s1)`.
fn checksum(big_endian: bool, data: &[u8], (mut s0, mut s1): (u32, u32)) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let word = |at: usize| {
            let b = [pair[at], pair[at + 1], pair[at + 2], pair[at + 3]];
            if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    (s0, s1)
}

/// Checks the write-ahead log beside the store file at `db` (`<db>-wal`), if there is one:
/// `Some` when a damaged frame has commits after it that SQLite's recovery would drop. A log
/// whose header does not read as SQLite's, or that ends in a torn transaction, is SQLite's to
/// take as it does.
pub(crate) fn damage(db: &Path) -> std::io::Result<Option<WalDamage>> {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    let file = match std::fs::File::open(std::path::PathBuf::from(name)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    damage_in(std::io::BufReader::with_capacity(1 << 20, file))
}

/// [`damage`] of a log read from `wal`.
pub(crate) fn damage_in(mut wal: impl Read) -> std::io::Result<Option<WalDamage>> {
    let mut header = [0u8; HEADER];
    if !read_whole(&mut wal, &mut header)? {
        return Ok(None);
    }
    let generation = (be(&header, 12), be(&header, 16), be(&header, 20));
    let magic = be(&header, 0);
    let page = be(&header, 8) as usize;
    let big_endian = magic & 1 == 1;
    let stored = (be(&header, 24), be(&header, 28));
    if magic & !1 == MAGIC
        && be(&header, 4) == FORMAT
        && valid_page(page)
        && checksum(big_endian, &header[..24], (0, 0)) == stored
    {
        let salts = (be(&header, 16), be(&header, 20));
        return frames_damage(wal, big_endian, page, salts, stored, generation);
    }
    // A header that does not read or check (its magic, byte order, page size, salts or
    // checksum damaged) makes SQLite ignore the whole log. Its frames still tell whether it
    // held commits: read with each byte order and page size, the frames after the first
    // check against it (salts and checksum from the first frame's header) when they are
    // this log's. Rare (SQLite writes a header once per generation of the log): read whole.
    let mut rest = Vec::new();
    wal.take(MAX_DAMAGED_READ).read_to_end(&mut rest)?;
    Ok(header_damage(&rest).map(|lost_commits| WalDamage {
        frame: 0,
        offset: 0,
        lost_commits,
        generation,
    }))
}

/// The most of a log with a damaged header read to find the commits it held.
const MAX_DAMAGED_READ: u64 = 1 << 30;

fn valid_page(page: usize) -> bool {
    (512..=65_536).contains(&page) && page.is_power_of_two()
}

/// The commits of the frames that follow a damaged header (`frames`: the log after it), when
/// they check with some byte order and page size; `None` when none do.
fn header_damage(frames: &[u8]) -> Option<u64> {
    for big_endian in [false, true] {
        for page in (9..=16).map(|shift| 1usize << shift) {
            let size = FRAME_HEADER + page;
            let Some(first) = frames.get(..size) else {
                continue;
            };
            let salts = (be(first, 8), be(first, 12));
            let mut seed = (be(first, 16), be(first, 20));
            let (mut checked, mut commits) = (0u64, 0u64);
            for frame in frames[size..].chunks_exact(size) {
                let computed = checksum(big_endian, &frame[..8], seed);
                let computed = checksum(big_endian, &frame[FRAME_HEADER..], computed);
                let stored = (be(frame, 16), be(frame, 20));
                if (be(frame, 8), be(frame, 12)) != salts || be(frame, 0) == 0 || computed != stored
                {
                    break;
                }
                checked += 1;
                commits += u64::from(be(frame, 4) != 0);
                seed = stored;
            }
            if checked > 0 && commits > 0 {
                return Some(commits + u64::from(be(first, 4) != 0));
            }
        }
    }
    None
}

/// [`damage_in`] of the frames after a header that checks.
fn frames_damage(
    mut wal: impl Read,
    big_endian: bool,
    page: usize,
    salts: (u32, u32),
    stored_header: (u32, u32),
    generation: (u32, u32, u32),
) -> std::io::Result<Option<WalDamage>> {
    let mut frame = vec![0u8; FRAME_HEADER + page];
    // The checksums a frame may continue from: the previous frame's stored one, and after a
    // damaged frame also the one computed over it (no list per frame: this runs over every
    // frame of the log at each open).
    let (mut seed, mut also): ((u32, u32), Option<(u32, u32)>) = (stored_header, None);
    let mut first_bad: Option<u64> = None;
    // Whether the damaged frame's transaction has ended (at the first commit frame from it
    // on), and the commits that still check after it.
    let mut damaged_txn_ended = false;
    let mut later_commits = 0u64;
    let mut index = 0u64;
    while read_whole(&mut wal, &mut frame)? {
        index += 1;
        let commit = be(&frame, 4) != 0;
        let stored = (be(&frame, 16), be(&frame, 20));
        let computed = |seed| {
            let seed = checksum(big_endian, &frame[..8], seed);
            checksum(big_endian, &frame[FRAME_HEADER..], seed)
        };
        // Frames of an earlier generation of the log (other salts), which may follow the
        // current one's end, never check: nothing is counted for them.
        let salted = (be(&frame, 8), be(&frame, 12)) == salts && be(&frame, 0) != 0;
        // The checksum from the stored seed, computed once: the next frame's other seed when
        // this one does not check.
        let from_stored = computed(seed);
        let checks =
            salted && (from_stored == stored || also.is_some_and(|a| computed(a) == stored));
        if !checks {
            first_bad.get_or_insert(index);
            (seed, also) = (stored, Some(from_stored));
        } else {
            (seed, also) = (stored, None);
            if first_bad.is_some() && commit && damaged_txn_ended {
                later_commits += 1;
            }
        }
        if first_bad.is_some() {
            damaged_txn_ended |= commit;
        }
    }
    // Only a torn last transaction has no commit after it: that is SQLite's to drop. With one,
    // the damaged frame's own transaction (ended by a commit) is lost with the later ones.
    Ok(first_bad.filter(|_| later_commits > 0).map(|first| WalDamage {
        frame: first,
        offset: HEADER as u64 + (first - 1) * (FRAME_HEADER + page) as u64,
        lost_commits: later_commits + 1,
        generation,
    }))
}

/// Fills `buf` from `r`: `false` at the end (a part-filled last frame is a torn write).
fn read_whole(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use rusqlite::Connection;

    use super::{FRAME_HEADER, HEADER, be, damage};

    /// A store file and its write-ahead log as `kill -9` leaves them: a table made, then six
    /// commits of one row each, none checkpointed. Answers the copy's path.
    fn written(dir: &Path, name: &str) -> PathBuf {
        let db = dir.join(format!("{name}.src.db"));
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; \
             CREATE TABLE t(n INTEGER, pad BLOB);",
        )
        .unwrap();
        for n in 0..6 {
            conn.execute("INSERT INTO t VALUES (?1, zeroblob(3000))", [n]).unwrap();
        }
        let copy = dir.join(format!("{name}.db"));
        std::fs::copy(&db, &copy).unwrap();
        std::fs::copy(dir.join(format!("{name}.src.db-wal")), wal(&copy)).unwrap();
        copy
    }

    fn wal(db: &Path) -> PathBuf {
        PathBuf::from(format!("{}-wal", db.display()))
    }

    /// Each frame's byte offset and whether it ends a commit.
    fn frames(db: &Path) -> Vec<(usize, bool)> {
        let bytes = std::fs::read(wal(db)).unwrap();
        let size = FRAME_HEADER + be(&bytes, 8) as usize;
        (0..(bytes.len() - HEADER) / size)
            .map(|i| HEADER + i * size)
            .map(|at| (at, be(&bytes, at + 4) != 0))
            .collect()
    }

    fn flip(db: &Path, at: usize) {
        flip_bits(db, at, 0x5a);
    }

    fn flip_bits(db: &Path, at: usize, mask: u8) {
        let mut bytes = std::fs::read(wal(db)).unwrap();
        bytes[at] ^= mask;
        std::fs::write(wal(db), bytes).unwrap();
    }

    fn rows(db: &Path) -> i64 {
        Connection::open(db).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn an_intact_or_torn_log_is_sqlites_to_take() {
        let dir = tempfile::tempdir().unwrap();
        let db = written(dir.path(), "intact");
        assert_eq!(damage(&db).unwrap(), None);
        assert_eq!(damage(&dir.path().join("none.db")).unwrap(), None, "no log at all");
        // Torn in its last transaction: the last frame cut short, or a byte of it damaged.
        let torn = written(dir.path(), "torn");
        let (last, _) = *frames(&torn).last().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(wal(&torn)).unwrap();
        file.set_len(last as u64 + 100).unwrap();
        assert_eq!(damage(&torn).unwrap(), None);
        assert_eq!(rows(&torn), 5, "SQLite drops the torn last commit");
        let flipped = written(dir.path(), "flipped-last");
        let (last, _) = *frames(&flipped).last().unwrap();
        flip(&flipped, last + FRAME_HEADER + 10);
        assert_eq!(damage(&flipped).unwrap(), None, "the last transaction may be torn");
        assert_eq!(rows(&db), 6);
    }

    /// A byte damaged in a frame with commits after it: SQLite drops them all without a word
    /// (seen here), and the check names the frame and counts them.
    #[test]
    fn a_damaged_frame_with_commits_after_it_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let probe = written(dir.path(), "probe");
        let commits: Vec<usize> =
            frames(&probe).iter().enumerate().filter(|(_, f)| f.1).map(|(i, _)| i).collect();
        assert_eq!(commits.len(), 7, "the table and six rows: {commits:?}");
        // The first frame of the third row's commit.
        let target = commits[2] + 1;
        for (name, within) in [("page", FRAME_HEADER + 100), ("checksum", 17), ("salt", 9)] {
            let db = written(dir.path(), name);
            let (at, _) = frames(&db)[target];
            flip(&db, at + within);
            let found = damage(&db).unwrap().map(|d| (d.frame, d.offset, d.lost_commits));
            assert_eq!(
                found,
                Some((target as u64 + 1, at as u64, 4)),
                "damage in the frame's {name}"
            );
            assert_eq!(rows(&db), 2, "SQLite kept only the commits before the damage ({name})");
        }
        // The header, wherever the byte (magic and its byte-order bit, format, page size,
        // checkpoint sequence, salts, checksum): SQLite ignores the whole log (review56 M1:
        // only the checkpoint sequence was found).
        let bytes = [0, 3, 5, 10, 13, 17, 21, 25, 30].map(|at| (at, 0x5a));
        // The magic's last bit alone: the checksums' byte order.
        for (at, mask) in bytes.into_iter().chain([(3, 1)]) {
            let db = written(dir.path(), &format!("header-{at}-{mask}"));
            flip_bits(&db, at, mask);
            let found = damage(&db).unwrap().map(|d| (d.frame, d.offset, d.lost_commits));
            assert_eq!(found, Some((0, 0, 7)), "header byte {at}");
            let read =
                Connection::open(&db)
                    .unwrap()
                    .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
            assert!(read.is_err(), "SQLite lost even the table (header byte {at})");
        }
    }
}
