//! [`ExportReader::read_parallel`]: a file read on every core — lines read in batches on one
//! thread, parsed (each event line all the way to its digest) on one thread per core, and
//! checked in file order on the calling thread, so the first problem found is the one the
//! sequential reading finds.

use std::io::{BufRead, Read};

use super::import::{ParsedEvent, ends_early, parse_event};
use super::line::{Line, event_line};
use super::{Entry, ExportReader, ImportBatch, ImportSummary, Item, MAX_LINE_BYTES, TransferError};

/// Lines in one batch of [`ExportReader::read_parallel`].
const PARSE_BATCH: usize = 256;

/// Batches in flight to and from each parsing thread.
const PARSE_AHEAD: usize = 2;

/// Bytes of lines after which a batch of [`ExportReader::read_parallel`] is handed on whatever
/// its count: lines may each be up to [`MAX_LINE_BYTES`], and without it a file of long lines
/// would hold `PARSE_BATCH` of them per batch, several batches per thread, in memory at once.
const PARSE_BATCH_BYTES: usize = 8 << 20;

/// Lines as read off the file: their bytes one after the other, each line's end and number,
/// and what stopped the reading after them (the end of the file, or a problem), if anything.
struct RawLines {
    bytes: Vec<u8>,
    lines: Vec<(usize, u64)>,
    end: Option<Result<(), TransferError>>,
}

/// A line as a parsing thread hands it back.
enum Parsed {
    Event(Box<ParsedEvent>),
    /// Any other line (pruned, tombstone, checkpoint, or one that does not parse): its bytes,
    /// read on the sequential thread the way [`ExportReader::next_item`] reads them.
    Other(Vec<u8>),
}

struct ParsedLines {
    lines: Vec<(u64, Parsed)>,
    end: Option<Result<(), TransferError>>,
}

/// Reads lines (from line `line_no + 1` on) in batches of `size`, handed to `outs` in turn
/// (in batches the parsers handed back emptied, through `spares`, when there are: fresh
/// memory costs the kernel's zeroing of its pages); stops at the end of the file, at a
/// problem (both handed on with the last batch), or when a receiver is gone.
fn read_lines<R: BufRead>(
    mut input: R,
    mut line_no: u64,
    size: usize,
    outs: &[std::sync::mpsc::SyncSender<RawLines>],
    spares: &std::sync::mpsc::Receiver<RawLines>,
) {
    for out in outs.iter().cycle() {
        let mut batch = spares.try_recv().unwrap_or_else(|_| RawLines {
            bytes: Vec::with_capacity(size * 1024),
            lines: Vec::with_capacity(size),
            end: None,
        });
        while batch.lines.len() < size && batch.bytes.len() < PARSE_BATCH_BYTES {
            let start = batch.bytes.len();
            match (&mut input).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut batch.bytes) {
                Err(e) => {
                    batch.end = Some(Err(TransferError::File(format!("cannot be read: {e}"))));
                    break;
                }
                Ok(0) => {
                    batch.end = Some(Ok(()));
                    break;
                }
                Ok(_) => {
                    line_no += 1;
                    if batch.bytes.len() - start > MAX_LINE_BYTES {
                        batch.bytes.truncate(start);
                        batch.end = Some(Err(TransferError::Invalid {
                            line: line_no,
                            message: format!("longer than {MAX_LINE_BYTES} bytes"),
                        }));
                        break;
                    }
                    if batch.bytes.last() == Some(&b'\n') {
                        batch.bytes.pop();
                    }
                    batch.lines.push((batch.bytes.len(), line_no));
                }
            }
        }
        let last = batch.end.is_some();
        if out.send(batch).is_err() || last {
            return;
        }
    }
}

/// Parses each line of each batch from `inbox` (the event lines all the way to their digest:
/// the export's own lines by [`event_line`], any other by serde), hands the batch on, and the
/// emptied batch of bytes back to the reading thread through `spares` (dropped if it grew
/// past [`PARSE_BATCH_BYTES`], or if enough are waiting there).
fn parse_lines(
    inbox: std::sync::mpsc::Receiver<RawLines>,
    out: std::sync::mpsc::SyncSender<ParsedLines>,
    spares: std::sync::mpsc::SyncSender<RawLines>,
) {
    for mut batch in inbox {
        let mut lines = Vec::with_capacity(batch.lines.len());
        let mut start = 0;
        for &(end, line_no) in &batch.lines {
            let bytes = &batch.bytes[start..end];
            start = end;
            let parsed = match event_line(bytes) {
                Some(l) => Parsed::Event(Box::new(parse_event(l))),
                None => match serde_json::from_slice::<Line<'_>>(bytes) {
                    Ok(l) if l.kind.is_none() => Parsed::Event(Box::new(parse_event(l.into()))),
                    _ => Parsed::Other(bytes.to_vec()),
                },
            };
            lines.push((line_no, parsed));
        }
        if out.send(ParsedLines { lines, end: batch.end.take() }).is_err() {
            return;
        }
        if batch.bytes.capacity() <= PARSE_BATCH_BYTES {
            batch.bytes.clear();
            batch.lines.clear();
            let _ = spares.try_send(batch);
        }
    }
}

impl<R: BufRead + Send> ExportReader<R> {
    /// Reads the rest of the file as [`ExportReader::next_item`] would, with each line's
    /// parsing, decoding and digest (which depend on the line alone) spread over `parsers`
    /// threads and the checks that depend on what came before (positions, chains, the log
    /// walk, the checkpoint) on the calling thread, in file order: the same items, the same
    /// first problem with the same line. `sink` gets the items in file order, in batches, on
    /// the calling thread; its error stops the reading and is answered. The summary once the
    /// whole file verified (as [`ExportReader::summary`]).
    pub fn read_parallel(
        self,
        parsers: usize,
        sink: impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        self.read_in_batches(parsers, PARSE_BATCH, sink)
    }

    /// [`ExportReader::read_parallel`] as an import's reading thread runs it: every batch,
    /// then `Ok(None)` once the whole file verified, or the reading's error, each handed to
    /// `send` (for the writer, which commits only on `Ok(None)`). `send` answers `false` once
    /// the writer stopped; the reading stops then, and the writer's error is the one to report.
    /// The summary when the whole file verified.
    pub(crate) fn read_to_writer(
        self,
        parsers: usize,
        mut send: impl FnMut(ImportBatch) -> bool,
    ) -> Option<ImportSummary> {
        let read = self.read_parallel(parsers, |items| match send(Ok(Some(items))) {
            true => Ok(()),
            false => Err(TransferError::File("was not written (the writer stopped)".into())),
        });
        match read {
            Ok(summary) => {
                send(Ok(None));
                Some(summary)
            }
            Err(e) => {
                send(Err(e));
                None
            }
        }
    }

    /// [`ExportReader::read_parallel`] with `batch` lines per batch.
    pub(super) fn read_in_batches(
        mut self,
        parsers: usize,
        batch: usize,
        mut sink: impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        use std::sync::mpsc::sync_channel;
        let parsers = parsers.max(1);
        let input = self.input.take().ok_or_else(|| TransferError::File("was read".into()))?;
        let line_no = self.line_no;
        std::thread::scope(|scope| {
            let mut to_parsers = Vec::with_capacity(parsers);
            let mut from_parsers = Vec::with_capacity(parsers);
            // Every batch of bytes that can be in flight at once, handed back.
            let (spare, spares) = sync_channel::<RawLines>(parsers * (PARSE_AHEAD + 2));
            for _ in 0..parsers {
                let (raw, raw_in) = sync_channel::<RawLines>(PARSE_AHEAD);
                let (parsed, parsed_in) = sync_channel::<ParsedLines>(PARSE_AHEAD);
                let spare = spare.clone();
                scope.spawn(move || parse_lines(raw_in, parsed, spare));
                to_parsers.push(raw);
                from_parsers.push(parsed_in);
            }
            drop(spare);
            scope.spawn(move || read_lines(input, line_no, batch.max(1), &to_parsers, &spares));
            // Dropping the receivers on return (an error) stops the other threads.
            self.check_parsed(&from_parsers, &mut sink)
        })
    }

    /// The sequential half of [`ExportReader::read_parallel`].
    fn check_parsed(
        &mut self,
        from_parsers: &[std::sync::mpsc::Receiver<ParsedLines>],
        sink: &mut impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        let mut checkpoint = false;
        for inbox in from_parsers.iter().cycle() {
            let batch =
                inbox.recv().map_err(|_| TransferError::File("reading it failed".into()))?;
            let mut items = Vec::with_capacity(batch.lines.len());
            for (line_no, parsed) in batch.lines {
                self.line_no = line_no;
                if checkpoint {
                    if matches!(&parsed, Parsed::Other(bytes) if super::import::is_blank(bytes)) {
                        continue;
                    }
                    return Err(self.invalid("a line after the checkpoint"));
                }
                let item = match parsed {
                    Parsed::Event(p) => Some(Item::Entry(Entry::Event(self.accept_event(*p)?))),
                    Parsed::Other(bytes) => self.item(&bytes)?,
                };
                match item {
                    Some(item) => items.push(item),
                    None => checkpoint = true,
                }
            }
            if !items.is_empty() {
                sink(items)?;
            }
            match batch.end {
                None => {}
                Some(Err(e)) => return Err(e),
                Some(Ok(())) if !checkpoint => return Err(ends_early()),
                Some(Ok(())) => {
                    self.done = true;
                    return self.summary().ok_or_else(ends_early);
                }
            }
        }
        Err(TransferError::File("reading it failed".into()))
    }
}
