//! The binary `COPY … TO STDOUT (FORMAT binary)` format, parsed in place: what the log reads
//! (`read_all`) and verification's one pass receive. tokio-postgres hands out each `CopyData`
//! message as a slice of its read buffer, and PostgreSQL sends one tuple per message, so a
//! field is located as a [`Span`] of that slice and nothing is copied per row: an event's
//! data and metadata become `Bytes` slices of it.

use bytes::{Buf, Bytes, BytesMut};

use crate::StoreError;

/// The signature that opens a binary COPY.
pub(crate) const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

pub(crate) fn malformed(what: &str) -> StoreError {
    StoreError::Corrupt(format!("the binary COPY of the log: {what}"))
}

/// Where a field lies in its tuple's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) at: u32,
    pub(crate) len: u32,
}

impl Span {
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

/// The fields of one tuple of `N` columns, `None` for NULL.
pub(crate) type Fields<const N: usize> = [Option<Span>; N];

/// A bigint field (`None`: NULL or not 8 bytes).
pub(crate) fn int8(raw: &[u8], field: Option<Span>) -> Option<i64> {
    field.and_then(|s| <[u8; 8]>::try_from(&raw[s.range()]).ok()).map(i64::from_be_bytes)
}

/// A text field, checked to be UTF-8.
pub(crate) fn text(raw: &[u8], field: Option<Span>) -> Result<&str, StoreError> {
    let s = field.ok_or_else(|| malformed("a NULL text column"))?;
    std::str::from_utf8(&raw[s.range()]).map_err(|_| malformed("a text column that is not UTF-8"))
}

/// A parser of one binary COPY, fed its messages in order. PostgreSQL sends a tuple per
/// message (the header with the first); a tuple split over messages is joined first.
#[derive(Default)]
pub(crate) struct CopyParser {
    header: bool,
    trailer: bool,
    /// The start of a tuple (or of the header) whose rest is in the next message.
    carry: BytesMut,
}

/// What the bytes at hand start with.
enum Tuple<const N: usize> {
    /// A whole tuple of this many bytes, its fields located.
    Row(usize, Fields<N>),
    /// The trailer.
    End,
    /// Not all of it yet.
    Partial,
}

/// Locates the tuple `buf` starts with.
fn tuple<const N: usize>(buf: &[u8]) -> Result<Tuple<N>, StoreError> {
    let Some(count) = buf.get(..2) else { return Ok(Tuple::Partial) };
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(Tuple::End);
    }
    if usize::try_from(count).ok() != Some(N) {
        return Err(malformed("a tuple with another count of fields"));
    }
    let mut at = 2;
    let mut fields = [None; N];
    for field in &mut fields {
        let Some(len) = buf.get(at..at + 4).and_then(|l| <[u8; 4]>::try_from(l).ok()) else {
            return Ok(Tuple::Partial);
        };
        at += 4;
        let len = i32::from_be_bytes(len);
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| malformed("a negative field length"))?;
        if buf.len() < at + len {
            return Ok(Tuple::Partial);
        }
        // A message is at most 1 GB, so the tuple's end fits; checked all the same, as
        // `Span::range` adds the two.
        let (Ok(start), Ok(size), Ok(_)) =
            (u32::try_from(at), u32::try_from(len), u32::try_from(at + len))
        else {
            return Err(malformed("a tuple over 4 GB"));
        };
        *field = Some(Span { at: start, len: size });
        at += len;
    }
    Ok(Tuple::Row(at, fields))
}

impl CopyParser {
    /// Parses one message of the COPY, handing each whole tuple of `N` fields to `row`: its
    /// bytes (a slice of the message, or of the joined carry) and where its fields lie.
    pub(crate) fn feed<const N: usize>(
        &mut self,
        message: Bytes,
        mut row: impl FnMut(Bytes, &Fields<N>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut buf = if self.carry.is_empty() {
            message
        } else {
            self.carry.extend_from_slice(&message);
            self.carry.split().freeze()
        };
        if !self.header {
            let Some(start) = buf.get(..19) else {
                self.carry.extend_from_slice(&buf);
                return Ok(());
            };
            if &start[..11] != COPY_SIGNATURE {
                return Err(malformed("no binary COPY signature"));
            }
            let flags = u32::from_be_bytes([start[11], start[12], start[13], start[14]]);
            if flags & (1 << 16) != 0 {
                return Err(malformed("OIDs in the tuples"));
            }
            let extension = u32::from_be_bytes([start[15], start[16], start[17], start[18]]);
            let skip = 19 + extension as usize;
            if buf.len() < skip {
                self.carry.extend_from_slice(&buf);
                return Ok(());
            }
            buf.advance(skip);
            self.header = true;
        }
        while !buf.is_empty() {
            if self.trailer {
                return Err(malformed("data after the trailer"));
            }
            match tuple::<N>(&buf)? {
                Tuple::Row(len, fields) => row(buf.split_to(len), &fields)?,
                Tuple::End => {
                    buf.advance(2);
                    self.trailer = true;
                }
                Tuple::Partial => {
                    self.carry.extend_from_slice(&buf);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The end of the COPY: it must have ended with its trailer. Ready for the next.
    pub(crate) fn finish(&mut self) -> Result<(), StoreError> {
        if !self.header || !self.trailer || !self.carry.is_empty() {
            return Err(malformed("a COPY that ended early"));
        }
        *self = CopyParser::default();
        Ok(())
    }
}
