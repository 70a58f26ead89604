//! [`ExportReader`]: reads an export and checks it line by line by the rules `pop verify`
//! applies to a store; the checks over the whole file at its checkpoint line.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::line::{EventLine, Line};
use super::text::{parse_hash, parse_hex, time_micros};
use super::{
    Entry, ExportEvent, FORMAT_VERSION, Item, MAX_LINE_BYTES, Manifest, Tombstone, TransferError,
};
use crate::Position;
use crate::commitment::{Checkpoint, LogEntry, LogWalker, SignedCheckpoint, key_id};
use crate::digest::{DigestInput, GENESIS, Hash, data_hash, event_digest, hex};
use crate::verify::{Break, EventRow, FastHash, PrunedTail, StreamRow, Walker, check_pruned};

/// Reads the last line of a file (without reading the rest): chunks read backwards from the
/// end, each searched once for the newline before the line (the checkpoint's line holds every
/// stream's mark: megabytes for a large log).
fn last_line(file: &mut std::fs::File) -> Result<String, TransferError> {
    let size = file.seek(SeekFrom::End(0))?;
    let mut start = size;
    // The chunks read, the last one of the file first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut read = 0usize;
    const STEP: u64 = 64 * 1024;
    let line = loop {
        let from = start.saturating_sub(STEP);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        start = from;
        read += chunk.len();
        // The newline that ends the file is not the one before the last line, and blank lines
        // after the checkpoint are no line of the export (auditor30: one extra newline made the
        // file "not end with its checkpoint").
        if chunks.is_empty() {
            while chunk.last().is_some_and(u8::is_ascii_whitespace) {
                chunk.pop();
            }
        }
        let found = chunk.iter().rposition(|b| *b == b'\n');
        let whole = start == 0 || read > MAX_LINE_BYTES;
        if let Some(i) = found {
            chunk.drain(..=i);
        }
        chunks.push(chunk);
        if found.is_some() || whole {
            break chunks.into_iter().rev().collect::<Vec<_>>().concat();
        }
    };
    file.seek(SeekFrom::Start(0))?;
    String::from_utf8(line).map_err(|_| TransferError::File("is not UTF-8".into()))
}

/// Where the reader checking a file stands per stream.
struct Seen {
    version: u64,
    link: Hash,
    line: u64,
}

/// How the checkpoint's key was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The key the caller gave.
    Pinned,
    /// The key the manifest names (only shows the file is consistent with itself).
    Manifest,
}

/// What a file that was read to its end holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub manifest: Manifest,
    pub events: u64,
    pub pruned: u64,
    pub tombstones: u64,
    pub key_id: String,
    pub key_source: KeySource,
    /// The checkpoint on the last line.
    pub checkpoint: Checkpoint,
}

/// Reads and checks an export of the whole log, line by line ([`ExportReader::next_item`]):
/// an item is handed out only after its own checks passed; the checks that need the whole
/// file (stream heads, reaped streams, the checkpoint) run when the checkpoint line is
/// reached, and only then does `next_item` answer `None`. A caller commits nothing before it.
pub struct ExportReader<R: BufRead> {
    /// `None` once [`ExportReader::read_parallel`] took it.
    pub(super) input: Option<R>,
    pub(super) line_no: u64,
    buf: Vec<u8>,
    manifest: Manifest,
    key_id: String,
    key_source: KeySource,
    checkpoint: Checkpoint,
    walker: Option<Walker>,
    log: Option<LogWalker>,
    /// Keyed by names from the file, with the hasher [`Walker`] and [`LogWalker`] already use
    /// for the same names (randomly seeded per map).
    streams: HashMap<String, Seen, FastHash>,
    tombstones: Vec<(Tombstone, u64)>,
    /// The hash rows each deleted stream kept (its pruned entries), checked against its
    /// tombstone at the end as `pop verify` checks them in a store.
    tails: HashMap<String, PrunedTail, FastHash>,
    /// Each entry's position and line, in file order (to locate a break found at the end).
    lines: Vec<(Position, u64)>,
    events: u64,
    pruned: u64,
    pub(super) done: bool,
}

impl ExportReader<std::io::BufReader<std::fs::File>> {
    /// Opens an export file: reads its manifest (line 1) and its signed checkpoint (the last
    /// line), checks the checkpoint's signature with `key` (else with the key the manifest
    /// names), and refuses an export `--since` (only a whole log can be imported).
    pub fn open(
        path: &std::path::Path,
        key: Option<VerifyingKey>,
    ) -> Result<ExportReader<std::io::BufReader<std::fs::File>>, TransferError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| TransferError::File(format!("{} cannot be read: {e}", path.display())))?;
        let last = last_line(&mut file)?;
        let mut reader = ExportReader::start(std::io::BufReader::with_capacity(1 << 20, file))?;
        reader.take_checkpoint(&last, key)?;
        Ok(reader)
    }
}

impl<R: BufRead> ExportReader<R> {
    pub(super) fn invalid(&self, message: impl Into<String>) -> TransferError {
        TransferError::Invalid { line: self.line_no, message: message.into() }
    }

    /// Reads the next line into `buf`; `false` at the end of the input.
    fn read_line(&mut self) -> Result<bool, TransferError> {
        self.buf.clear();
        let Some(input) = self.input.as_mut() else { return Ok(false) };
        let n = input
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| TransferError::File(format!("cannot be read: {e}")))?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(self.invalid(format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(true)
    }

    fn start(input: R) -> Result<ExportReader<R>, TransferError> {
        let mut reader = ExportReader {
            input: Some(input),
            line_no: 0,
            buf: Vec::new(),
            manifest: Manifest::new(
                "",
                Position::START,
                0,
                0,
                0,
                None,
                None,
                &SigningKey::from_bytes(&[0; 32]).verifying_key(),
            ),
            key_id: String::new(),
            key_source: KeySource::Manifest,
            checkpoint: Checkpoint {
                seq: 0,
                after: Position::START,
                position: Position::START,
                events: 0,
                log_hash: String::new(),
                previous: String::new(),
                sealed_at: DateTime::<Utc>::default(),
                key_id: String::new(),
                streams: Vec::new(),
                handover: None,
            },
            walker: None,
            log: None,
            streams: HashMap::default(),
            tombstones: Vec::new(),
            tails: HashMap::default(),
            lines: Vec::new(),
            events: 0,
            pruned: 0,
            done: false,
        };
        if !reader.read_line()? {
            return Err(TransferError::File("is empty: an export starts with its manifest".into()));
        }
        // A file that is no whole export (another file, an export of another format, one with
        // --since) is the wrong file, not a tampered one: said as a file that cannot be
        // imported, not as NOT INTACT (auditor61 L3: exit 4, "page someone", for tokens.json).
        let manifest: Manifest = serde_json::from_slice(&reader.buf).map_err(|e| {
            TransferError::File(format!(
                "is not an export of `pop export`: its first line is no manifest ({e})"
            ))
        })?;
        if manifest.kind != "manifest" {
            return Err(TransferError::File(
                "is not an export of `pop export`: its first line is no manifest (its kind is \
                 not \"manifest\")"
                    .into(),
            ));
        }
        if manifest.format_version != FORMAT_VERSION {
            return Err(TransferError::File(format!(
                "is an export of format version {} (this build reads {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        if manifest.since != Position::START {
            return Err(TransferError::File(format!(
                "is an export after position {}: it holds part of the log, and only a whole log \
                 (an export without --since) can be imported",
                manifest.since
            )));
        }
        reader.manifest = manifest;
        Ok(reader)
    }

    /// Parses the checkpoint line and checks its signature.
    fn take_checkpoint(
        &mut self,
        line: &str,
        key: Option<VerifyingKey>,
    ) -> Result<(), TransferError> {
        let bad = TransferError::Unsigned;
        let parsed: Line<'_> =
            serde_json::from_str(line).map_err(|e| bad(format!("the last line: {e}")))?;
        let (Some("checkpoint"), Some(body), Some(signature)) =
            (parsed.kind.as_deref(), parsed.checkpoint, parsed.signature.as_deref())
        else {
            return Err(bad(
                "the last line is not a signed checkpoint (a cut file, or lines dropped at its \
                 end)"
                    .into(),
            ));
        };
        let signed = SignedCheckpoint {
            seq: 1,
            body: body.get().as_bytes().to_vec(),
            signature: parse_hex(signature).ok_or_else(|| bad("a malformed signature".into()))?,
        };
        let (key, source) = match key {
            Some(k) => (k, KeySource::Pinned),
            None => {
                let k = crate::commitment::parse_verifying_key(&self.manifest.public_key)
                    .map_err(|e| TransferError::Invalid { line: 1, message: e })?;
                (k, KeySource::Manifest)
            }
        };
        if key_id(&key) != self.manifest.key_id {
            return Err(TransferError::Invalid {
                line: 1,
                message: format!(
                    "the manifest names key {} but the file is checked with key {}",
                    self.manifest.key_id,
                    key_id(&key)
                ),
            });
        }
        signed.verify_signature(&key).map_err(bad)?;
        let checkpoint = signed.checkpoint().map_err(bad)?;
        self.checkpoint = checkpoint;
        self.key_id = key_id(&key);
        self.key_source = source;
        self.walker = Some(Walker::new(self.manifest.last_position));
        self.log = Some(LogWalker::new(vec![signed], Some(key)));
        Ok(())
    }

    /// The manifest (line 1).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next entry or tombstone, checked; `None` once the checkpoint line was reached and
    /// the whole file verified.
    pub fn next_item(&mut self) -> Result<Option<Item>, TransferError> {
        if self.done {
            return Ok(None);
        }
        if !self.read_line()? {
            return Err(ends_early());
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.item(&buf);
        self.buf = buf;
        match result? {
            Some(item) => Ok(Some(item)),
            None => {
                while self.read_line()? {
                    if !is_blank(&self.buf) {
                        return Err(self.invalid("a line after the checkpoint"));
                    }
                }
                self.done = true;
                Ok(None)
            }
        }
    }

    /// The item on line `buf`; `None`: the checkpoint line, and the whole file verified up to
    /// it (whether a line follows is the caller's check).
    pub(super) fn item(&mut self, buf: &[u8]) -> Result<Option<Item>, TransferError> {
        let line: Line<'_> = serde_json::from_slice(buf)
            .map_err(|e| self.invalid(format!("not a line of an export: {e}")))?;
        match line.kind.as_deref() {
            None => self.event(line).map(|e| Some(Item::Entry(Entry::Event(e)))),
            Some("pruned") => self.pruned(line).map(|p| Some(Item::Entry(Entry::Pruned(p)))),
            Some("tombstone") => self.tombstone(line).map(|t| Some(Item::Tombstone(t))),
            Some("checkpoint") => {
                self.finish()?;
                Ok(None)
            }
            Some(other) => Err(self.invalid(format!("unknown kind {other:?}"))),
        }
    }

    fn position(&mut self, text: Option<&str>) -> Result<Position, TransferError> {
        let p = parse_position(text).map_err(|m| self.invalid(m))?;
        self.place(p)
    }

    /// The order checks of an entry's position (already parsed): after the previous entry's,
    /// and no entry after a tombstone.
    fn place(&mut self, p: Position) -> Result<Position, TransferError> {
        if !self.tombstones.is_empty() {
            return Err(self.invalid("an entry after the tombstones"));
        }
        if self.lines.last().is_some_and(|(last, _)| p <= *last) || p == Position::START {
            return Err(self.invalid(format!(
                "position {p} is not after the previous entry's (lines moved or swapped)"
            )));
        }
        self.lines.push((p, self.line_no));
        Ok(p)
    }

    fn log_entry(&mut self, e: LogEntry) -> Result<(), TransferError> {
        let line = self.line_no;
        let log = self.log.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        if !log.entry(e) {
            return Err(self.located_log_break(Some(line)));
        }
        Ok(())
    }

    /// The break the walk over the checkpoint found, with its line.
    fn located_log_break(&mut self, line: Option<u64>) -> TransferError {
        let Some(log) = self.log.take() else { return TransferError::File("not opened".into()) };
        let (_, b) = log.finish();
        let b = b.unwrap_or_else(|| Break {
            stream: String::new(),
            version: None,
            position: None,
            reason: "the checkpoint does not match the entries".into(),
        });
        let line = line.unwrap_or_else(|| self.line_of(&b));
        TransferError::Invalid { line, message: b.to_string() }
    }

    /// The line a break names: its position's, else where an entry at that position would
    /// be, else the stream's last line, else the current one.
    fn line_of(&self, b: &Break) -> u64 {
        if let Some(p) = b.position {
            let i = self.lines.partition_point(|(q, _)| *q < p);
            match self.lines.get(i) {
                Some((_, line)) => return *line,
                // After the last entry: the line after it, where that entry would be.
                None if i > 0 => return self.lines[i - 1].1 + 1,
                None => {}
            }
        }
        if let Some(s) = self.streams.get(&b.stream) {
            return s.line;
        }
        if let Some((_, line)) = self.tombstones.iter().find(|(t, _)| t.stream == b.stream) {
            return *line;
        }
        self.line_no
    }

    fn event(&mut self, l: Line<'_>) -> Result<ExportEvent, TransferError> {
        self.accept_event(parse_event(l.into()))
    }

    /// The checks of an event line that depend on what came before it, in the order
    /// [`parse_event`]'s outcomes are reported: CloudEvents version, position (parsed, then
    /// its order), the line's own members and digest, the stream's chain, the log walk.
    pub(super) fn accept_event(&mut self, p: ParsedEvent) -> Result<ExportEvent, TransferError> {
        if !p.specversion_ok {
            return Err(self.invalid("not a CloudEvents 1.0 event (specversion)"));
        }
        let position = p.position.map_err(|m| self.invalid(m))?;
        self.place(position)?;
        let (mut e, digest) = p.rest.map_err(|m| self.invalid(m))?;
        e.position = position;
        let chain_link = e.chain.unwrap_or(GENESIS);
        let walker =
            self.walker.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        let ok = walker.event_digested(
            &EventRow {
                stream: &e.stream,
                version: i64::try_from(e.version).unwrap_or(-1),
                position,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                recorded_at: e.recorded_at,
                metadata: &e.metadata,
                data: &e.data,
                chain: Some(chain_link.as_slice()),
            },
            Some(&digest),
        );
        if !ok {
            let b = walker_break(self.walker.take());
            return Err(self.invalid(b));
        }
        let line = self.line_no;
        let log = self.log.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        if !log.entry_parts(position, &e.stream, e.version, Some(chain_link)) {
            return Err(self.located_log_break(Some(line)));
        }
        let seen = Seen { version: e.version, link: chain_link, line: self.line_no };
        match self.streams.get_mut(e.stream.as_str()) {
            Some(s) => *s = seen,
            None => {
                self.streams.insert(e.stream.clone(), seen);
            }
        }
        self.events += 1;
        Ok(e)
    }

    fn pruned(&mut self, l: Line<'_>) -> Result<LogEntry, TransferError> {
        let position = self.position(l.popposition.as_deref())?;
        let stream = l.subject.ok_or_else(|| self.invalid("no subject (the stream)"))?.into_owned();
        let version = l.popversion.ok_or_else(|| self.invalid("no popversion"))?;
        let link = match l.popchain.as_deref() {
            None => None,
            Some(text) => {
                Some(parse_hash(text).ok_or_else(|| self.invalid("popchain is not a SHA-256"))?)
            }
        };
        self.tails.entry(stream.clone()).or_default().add(
            i64::try_from(version).unwrap_or(i64::MAX),
            link.as_ref().map(|h| &h[..]),
            position,
        );
        let entry = LogEntry { position, stream, version, link };
        self.log_entry(entry.clone())?;
        self.pruned += 1;
        Ok(entry)
    }

    fn tombstone(&mut self, l: Line<'_>) -> Result<Tombstone, TransferError> {
        let stream = l.subject.ok_or_else(|| self.invalid("no subject (the stream)"))?.into_owned();
        let head = match l.pophead.as_deref() {
            None => None,
            Some(text) => {
                Some(parse_hash(text).ok_or_else(|| self.invalid("pophead is not a SHA-256"))?)
            }
        };
        let time = l.time.ok_or_else(|| self.invalid("no time"))?;
        let deleted_at = DateTime::parse_from_rfc3339(&time)
            .map_err(|_| self.invalid("time is not an RFC 3339 time"))?
            .timestamp_micros();
        if self.tombstones.iter().any(|(t, _)| t.stream == stream) {
            return Err(self.invalid(format!("a second tombstone of stream {stream:?}")));
        }
        let t = Tombstone { stream, version: l.popversion, head, deleted_at };
        self.tombstones.push((t.clone(), self.line_no));
        Ok(t)
    }

    /// The manifest's counts and positions against what the file held.
    fn check_counts(&self) -> Result<(), TransferError> {
        let m = &self.manifest;
        let counts = (self.events, self.pruned, self.tombstones.len() as u64);
        if counts != (m.events, m.pruned, m.tombstones) {
            return Err(self.invalid(format!(
                "the manifest announces {} events, {} pruned entries and {} tombstones, the file \
                 holds {}, {} and {} (lines dropped or added)",
                m.events, m.pruned, m.tombstones, counts.0, counts.1, counts.2
            )));
        }
        let first = self.lines.first().map(|(p, _)| *p);
        let last = self.lines.last().map(|(p, _)| *p);
        if (first, last) != (m.first_position, m.last_position) {
            return Err(self.invalid(
                "the entries' first and last positions are not the manifest's (lines dropped)",
            ));
        }
        Ok(())
    }

    /// The checks over the whole file, at its checkpoint line.
    fn finish(&mut self) -> Result<(), TransferError> {
        let mut rows: Vec<StreamRow> = self
            .streams
            .iter()
            .map(|(name, s)| StreamRow {
                name: name.clone(),
                version: i64::try_from(s.version).ok(),
                deleted: false,
                head: Some(s.link.to_vec()),
            })
            .collect();
        for (t, _) in &self.tombstones {
            rows.push(StreamRow {
                name: t.stream.clone(),
                version: t.version.and_then(|v| i64::try_from(v).ok()),
                deleted: true,
                head: t.head.map(|h| h.to_vec()),
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let walker = self.walker.take().ok_or_else(|| TransferError::File("not opened".into()))?;
        // The tombstones against the hash rows their streams kept too (auditor17: a tombstone
        // line whose popversion was edited or removed imported, and the store it made failed
        // `pop verify`).
        let report = check_pruned(walker.finish(&rows), &rows, &self.tails);
        if let Some(b) = report.first_break {
            let line = self.line_of(&b);
            return Err(TransferError::Invalid { line, message: b.to_string() });
        }
        if self.checkpoint.events == 0 && self.lines.is_empty() {
            // An empty log: nothing for the walk to close; the signature was checked.
            if self.checkpoint.log_hash != hex(&GENESIS) {
                return Err(self.invalid("the checkpoint of an empty export has a log hash"));
            }
            return self.check_counts();
        }
        let Some(log) = self.log.take() else {
            return Err(TransferError::File("not opened".into()));
        };
        let (report, b) = log.finish();
        if let Some(b) = b {
            let line = self.line_of(&b);
            return Err(TransferError::Invalid { line, message: b.to_string() });
        }
        self.check_counts()?;
        if report.checkpoints != 1 || report.sealed_entries != self.lines.len() as u64 {
            return Err(self.invalid("the checkpoint does not cover every entry of the file"));
        }
        Ok(())
    }

    /// What the file held, once [`ExportReader::next_item`] answered `None`.
    pub fn summary(&self) -> Option<ImportSummary> {
        self.done.then(|| ImportSummary {
            manifest: self.manifest.clone(),
            events: self.events,
            pruned: self.pruned,
            tombstones: self.tombstones.len() as u64,
            key_id: self.key_id.clone(),
            key_source: self.key_source,
            checkpoint: self.checkpoint.clone(),
        })
    }
}

/// Whether a line holds nothing but white space (allowed after the checkpoint only).
pub(super) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The error of a file that ends before its checkpoint line.
pub(super) fn ends_early() -> TransferError {
    TransferError::Unsigned("it ends before it (the last line was cut or edited)".into())
}

fn walker_break(walker: Option<Walker>) -> String {
    walker
        .and_then(|w| w.finish(&[]).first_break)
        .map_or_else(|| "the event does not verify".into(), |b| b.to_string())
}

/// An entry's `popposition`, parsed.
fn parse_position(text: Option<&str>) -> Result<Position, &'static str> {
    text.ok_or("no popposition")?.parse().map_err(|_| "popposition is not a position")
}

/// An event line with everything computed that depends on the line alone (its members, the
/// data and metadata decoded, the digest recomputed and compared): the costly part of
/// checking a line, which may run on any thread. Each check's outcome is kept, not reported,
/// so [`ExportReader::accept_event`] reports the first problem in the order it checks them.
pub(super) struct ParsedEvent {
    specversion_ok: bool,
    position: Result<Position, &'static str>,
    /// The event (its position still to be set) and its digest; or the first problem of the
    /// line's own members.
    rest: Result<(ExportEvent, Hash), String>,
}

pub(super) fn parse_event(l: EventLine<'_>) -> ParsedEvent {
    let position = parse_position(l.popposition.as_deref());
    ParsedEvent {
        specversion_ok: l.specversion.as_deref() == Some("1.0"),
        rest: event_members(l, position.as_ref().copied().unwrap_or(Position::START)),
        position,
    }
}

/// The members of an event line after its position, checked in order, and its digest
/// recomputed and compared with `popdigest`.
fn event_members(l: EventLine<'_>, position: Position) -> Result<(ExportEvent, Hash), String> {
    let event_id = l.id.ok_or("no id (a UUID)")?;
    let stream = l.subject.ok_or("no subject (the stream)")?.into_owned();
    let event_type = l.event_type.ok_or("no type")?.into_owned();
    let version = l.popversion.ok_or("no popversion")?;
    let schema_version = l.popschemaversion.ok_or("no popschemaversion")?;
    let time = l.time.ok_or("no time")?;
    let recorded_at = time_micros(&time).ok_or("time is not an RFC 3339 time")?;
    let data = match (l.data, l.data_base64) {
        (Some(raw), None) => raw.to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "data_base64 is not base64")?,
        _ => return Err("an event has exactly one of data and data_base64".into()),
    };
    let metadata = match (l.popmetadata, l.popmetadatabase64) {
        (Some(text), None) => text.into_owned().into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "popmetadatabase64 is not base64")?,
        _ => return Err("an event has exactly one of popmetadata and popmetadatabase64".into()),
    };
    let chain_link =
        l.popchain.as_deref().and_then(parse_hash).ok_or("popchain is not a SHA-256 in hex")?;
    let digest = event_digest(&DigestInput {
        stream: &stream,
        version,
        event_type: &event_type,
        schema_version,
        recorded_at_micros: recorded_at,
        metadata: &metadata,
        data_hash: &data_hash(&data),
    });
    if l.popdigest.as_deref().and_then(parse_hash) != Some(digest) {
        return Err(format!(
            "stream {stream:?} version {version} position {position}: the event does not \
             match its digest (popdigest)"
        ));
    }
    // `popactor` repeats, for readers of the file, the actor `popmetadata` names (which the
    // digest covers): one that differs was edited (auditor15: a forged actor imported, and
    // read as the audit record of a signed file).
    if let Some(shown) = l.popactor.as_deref()
        && super::export::actor_of(&metadata).as_deref() != Some(shown)
    {
        return Err(format!(
            "stream {stream:?} version {version} position {position}: popactor {shown:?} is \
             not the actor its popmetadata names (which the digest covers): the line was edited"
        ));
    }
    let event = ExportEvent {
        position,
        stream,
        version,
        event_id,
        event_type,
        schema_version,
        recorded_at,
        data,
        metadata,
        chain: Some(chain_link),
    };
    Ok((event, digest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::digest::chain;
    use crate::transfer::Exporter;
    use uuid::Uuid;

    #[test]
    fn the_last_line_is_found_whatever_its_length() {
        let long = |n: usize, c: char| c.to_string().repeat(n);
        let cases = [
            String::new(),
            "\n".into(),
            "one".into(),
            "one\n".into(),
            "one\ntwo".into(),
            "one\ntwo\n".into(),
            "one\n\n".into(),
            format!("a\n{}\n", long(64 * 1024, 'b')),
            format!("a\n{}\n", long(64 * 1024 - 1, 'b')),
            format!("a\n{}", long(64 * 1024 + 1, 'b')),
            format!("{}\n{}\n", long(100_000, 'a'), long(200_000, 'b')),
            format!("{}\n", long(300_000, 'c')),
        ];
        for text in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &text).unwrap();
            // Blank lines at the end are none.
            let body = text.trim_end_matches(|c: char| c.is_ascii_whitespace());
            let want = body.rsplit('\n').next().unwrap_or_default();
            let mut file = std::fs::File::open(&path).unwrap();
            assert_eq!(last_line(&mut file).unwrap(), want, "{}", text.len());
            assert_eq!(file.stream_position().unwrap(), 0);
        }
    }

    /// Data that is not UTF-8 inside a string, as a store written before the append refused it
    /// may hold (serde_json's `IgnoredAny` does not look): exported as `data_base64`, so the
    /// line is JSON and imports.
    #[test]
    fn data_with_bytes_that_are_not_utf8_exports_and_reads_back() {
        let data = b"{\"a\":\"\xff\xfe\"}".to_vec();
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok());
        let key = SigningKey::from_bytes(&[3; 32]);
        let manifest = Manifest::new(
            "sqlite",
            Position::START,
            1,
            0,
            0,
            Some(Position::from_sequence(1)),
            Some(Position::from_sequence(1)),
            &key.verifying_key(),
        );
        let mut out = Vec::new();
        let mut exporter = Exporter::new(&mut out, manifest).unwrap();
        let metadata = b"{}".to_vec();
        let digest = event_digest(&DigestInput {
            stream: "s",
            version: 0,
            event_type: "T",
            schema_version: 1,
            recorded_at_micros: 5,
            metadata: &metadata,
            data_hash: &data_hash(&data),
        });
        let event = ExportEvent {
            position: Position::from_sequence(1),
            stream: "s".into(),
            version: 0,
            event_id: Uuid::from_u128(1),
            event_type: "T".into(),
            schema_version: 1,
            recorded_at: 5,
            data: data.clone(),
            metadata,
            chain: Some(chain(&GENESIS, &digest)),
        };
        exporter.entry(&Entry::Event(event.clone())).unwrap();
        exporter.finish(&[], &key, DateTime::<Utc>::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"data_base64\":"), "{text}");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let (items, result) = sequential(&lines, lines.last().unwrap(), &key);
        assert_eq!(result, Ok(1));
        assert_eq!(items, vec![Item::Entry(Entry::Event(event))]);
    }

    /// An export of 30 events over three interleaved streams: its lines, and its key.
    fn export_lines() -> (Vec<String>, SigningKey) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let n = 30u64;
        let manifest = Manifest::new(
            "sqlite",
            Position::START,
            n,
            0,
            0,
            Some(Position::from_sequence(1)),
            Some(Position::from_sequence(n)),
            &key.verifying_key(),
        );
        let mut out = Vec::new();
        let mut exporter = Exporter::new(&mut out, manifest).unwrap();
        let mut heads: HashMap<String, Hash> = HashMap::new();
        for i in 0..n {
            let stream = ["a", "b", "c"][(i % 3) as usize].to_owned();
            let data = format!("{{\"n\":{i}}}").into_bytes();
            let metadata = br#"{"actor":"user:x"}"#.to_vec();
            let recorded_at = 1_800_000_000_000_000 + i as i64;
            let digest = event_digest(&DigestInput {
                stream: &stream,
                version: i / 3,
                event_type: "T",
                schema_version: 1,
                recorded_at_micros: recorded_at,
                metadata: &metadata,
                data_hash: &data_hash(&data),
            });
            let link = chain(heads.get(&stream).unwrap_or(&GENESIS), &digest);
            heads.insert(stream.clone(), link);
            exporter
                .entry(&Entry::Event(ExportEvent {
                    position: Position::from_sequence(i + 1),
                    stream,
                    version: i / 3,
                    event_id: Uuid::from_u128(u128::from(i) + 1),
                    event_type: "T".into(),
                    schema_version: 1,
                    recorded_at,
                    data,
                    metadata,
                    chain: Some(link),
                }))
                .unwrap();
        }
        exporter.finish(&[], &key, DateTime::<Utc>::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), key)
    }

    type Outcome = (Vec<Item>, Result<u64, (String, Option<u64>)>);

    /// A reader over `lines` with the checkpoint taken from `checkpoint` (not necessarily
    /// the last line, so a line after it can be tested).
    fn reader(lines: &[String], checkpoint: &str, key: &SigningKey) -> ExportReader<&'static [u8]> {
        let bytes: &'static [u8] = Box::leak((lines.join("\n") + "\n").into_bytes().into());
        let mut reader = ExportReader::start(bytes).unwrap();
        reader.take_checkpoint(checkpoint, Some(key.verifying_key())).unwrap();
        reader
    }

    fn outcome(result: Result<ImportSummary, TransferError>, items: Vec<Item>) -> Outcome {
        (items, result.map(|s| s.events).map_err(|e| (e.to_string(), e.line())))
    }

    fn sequential(lines: &[String], checkpoint: &str, key: &SigningKey) -> Outcome {
        let mut reader = reader(lines, checkpoint, key);
        let mut items = Vec::new();
        let result = loop {
            match reader.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break Ok(reader.summary().unwrap()),
                Err(e) => break Err(e),
            }
        };
        outcome(result, items)
    }

    #[test]
    fn the_parallel_read_finds_what_the_sequential_one_finds() {
        let (lines, key) = export_lines();
        let checkpoint = lines.last().unwrap().clone();
        let event = |i: usize| 1 + i;
        let mut cases: Vec<(&str, Vec<String>)> = vec![("intact", lines.clone())];
        let mut edited = lines.clone();
        edited[event(7)] = edited[event(7)].replacen("\"n\":7", "\"n\":8", 1);
        cases.push(("a byte of data", edited));
        let mut swapped = lines.clone();
        swapped.swap(event(4), event(5));
        cases.push(("two lines swapped", swapped));
        let mut dropped = lines.clone();
        dropped.remove(event(10));
        cases.push(("a line dropped", dropped));
        let mut garbage = lines.clone();
        garbage[event(12)] = "{not json".into();
        cases.push(("a line that is not JSON", garbage));
        let mut spec = lines.clone();
        spec[event(3)] =
            spec[event(3)].replacen("\"specversion\":\"1.0\"", "\"specversion\":\"2\"", 1);
        cases.push(("another specversion", spec));
        let mut no_id = lines.clone();
        no_id[event(9)] = no_id[event(9)]
            .replacen("\"popposition\":\"10\"", "\"popposition\":\"1\"", 1)
            .replacen("\"id\":", "\"idx\":", 1);
        cases.push(("no id and a position out of order", no_id));
        let mut after = lines.clone();
        after.push(lines[event(2)].clone());
        cases.push(("a line after the checkpoint", after));
        // Blank lines after it are none (auditor30: refused as "does not end with its
        // checkpoint"); one after them still is.
        let mut blank = lines.clone();
        blank.extend(["".to_string(), " \r".to_string()]);
        cases.push(("intact, blank lines after the checkpoint", blank.clone()));
        blank.push(lines[event(2)].clone());
        cases.push(("a line after blank lines after the checkpoint", blank));
        let mut cut = lines.clone();
        cut.truncate(event(20));
        cases.push(("cut before its checkpoint", cut));
        let mut tail = lines.clone();
        tail.truncate(event(29) + 1);
        cases.push(("cut right before its checkpoint", tail));
        for (name, case) in &cases {
            let want = sequential(case, &checkpoint, &key);
            if name.starts_with("intact") {
                assert_eq!(want.1, Ok(30), "{name}");
            } else {
                assert!(want.1.is_err(), "{name}: {want:?}");
            }
            for parsers in [1, 2, 3] {
                for batch in [1, 2, 3, 7, 256] {
                    let reader = reader(case, &checkpoint, &key);
                    let mut items = Vec::new();
                    let result = reader.read_in_batches(parsers, batch, |b| {
                        items.extend(b);
                        Ok(())
                    });
                    let got = outcome(result, items);
                    let at = format!("{name}, {parsers} parsers, batches of {batch}");
                    assert_eq!(got.1, want.1, "{at}");
                    if want.1.is_ok() {
                        assert_eq!(got.0, want.0, "{at}");
                    }
                }
            }
        }
    }
}
