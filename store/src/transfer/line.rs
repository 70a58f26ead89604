//! One line of an export as read: serde's [`Line`] (every member any kind of line has, in any
//! order, any JSON), and the fast path for the event lines pop writes itself
//! ([`event_line`]: the members in the export's own order, no whitespace), which answers the
//! same members as serde or nothing — the line then goes to serde. The members an event's
//! checks read are an [`EventLine`], whichever way they were read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::json::{json_string_end, json_value_end};

/// One line as read by serde: every member any kind of line has.
#[derive(Deserialize)]
pub(super) struct Line<'a> {
    #[serde(borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    specversion: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(borrow, default)]
    pub(super) subject: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_base64: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) popposition: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) popversion: Option<u64>,
    #[serde(default)]
    popschemaversion: Option<u32>,
    #[serde(borrow, default)]
    popmetadata: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popmetadatabase64: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popdigest: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) popchain: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popactor: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) pophead: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) checkpoint: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) signature: Option<Cow<'a, str>>,
}

/// The members of an event line its checks read ([`super::import::parse_event`]), borrowed
/// from the line where they can be; `data`: the exact bytes of the `data` member's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EventLine<'a> {
    pub(super) specversion: Option<Cow<'a, str>>,
    pub(super) id: Option<Uuid>,
    pub(super) subject: Option<Cow<'a, str>>,
    pub(super) event_type: Option<Cow<'a, str>>,
    pub(super) time: Option<Cow<'a, str>>,
    pub(super) data: Option<&'a [u8]>,
    pub(super) data_base64: Option<Cow<'a, str>>,
    pub(super) popposition: Option<Cow<'a, str>>,
    pub(super) popversion: Option<u64>,
    pub(super) popschemaversion: Option<u32>,
    pub(super) popmetadata: Option<Cow<'a, str>>,
    pub(super) popmetadatabase64: Option<Cow<'a, str>>,
    pub(super) popdigest: Option<Cow<'a, str>>,
    pub(super) popchain: Option<Cow<'a, str>>,
    pub(super) popactor: Option<Cow<'a, str>>,
}

impl<'a> From<Line<'a>> for EventLine<'a> {
    fn from(l: Line<'a>) -> EventLine<'a> {
        EventLine {
            specversion: l.specversion,
            id: l.id,
            subject: l.subject,
            event_type: l.event_type,
            time: l.time,
            data: l.data.map(|raw| raw.get().as_bytes()),
            data_base64: l.data_base64,
            popposition: l.popposition,
            popversion: l.popversion,
            popschemaversion: l.popschemaversion,
            popmetadata: l.popmetadata,
            popmetadatabase64: l.popmetadatabase64,
            popdigest: l.popdigest,
            popchain: l.popchain,
            popactor: l.popactor,
        }
    }
}

/// How deep the fast path follows arrays and objects in `data` (deeper data is serde's to
/// read: its raw values have no depth limit).
const FAST_DATA_NESTING: u32 = 64;

/// Where the fast path stands in a line.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Steps over `text` if the line goes on with it.
    fn literal(&mut self, text: &[u8]) -> Option<()> {
        self.b.get(self.i..)?.starts_with(text).then(|| self.i += text.len())
    }

    fn at(&self, text: &[u8]) -> bool {
        self.b.get(self.i..).is_some_and(|rest| rest.starts_with(text))
    }

    /// A JSON string: its text, borrowed when it has no escapes (else unescaped by serde,
    /// which refuses what it refuses anywhere, such as a lone surrogate).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.i;
        let end = json_string_end(self.b, start)?;
        self.i = end;
        let inner = &self.b[start + 1..end - 1];
        if inner.contains(&b'\\') {
            serde_json::from_slice::<String>(&self.b[start..end]).ok().map(Cow::Owned)
        } else {
            std::str::from_utf8(inner).ok().map(Cow::Borrowed)
        }
    }

    /// A JSON number that is a `u64` as serde reads one: digits without a leading zero (a
    /// sign, fraction or exponent is serde's to read or refuse).
    fn number(&mut self) -> Option<u64> {
        let rest = self.b.get(self.i..)?;
        let digits = rest.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let n = rest[..digits]
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?;
        self.i += digits;
        Some(n)
    }
}

/// The fast path: the members of an event line written the way the export writes them (its
/// member order, no whitespace, `source` and `datacontenttype` as written, `popactor` last if
/// at all), exactly as serde reads them ([`Line`], then [`EventLine::from`]); `None` for any
/// other line, which is then serde's to read (a valid file from elsewhere still imports).
pub(super) fn event_line(b: &[u8]) -> Option<EventLine<'_>> {
    let mut c = Cursor { b, i: 0 };
    c.literal(b"{\"specversion\":")?;
    let specversion = c.string()?;
    c.literal(b",\"id\":")?;
    let id = Uuid::parse_str(&c.string()?).ok()?;
    c.literal(b",\"source\":\"urn:pop:log\",\"subject\":")?;
    let subject = c.string()?;
    c.literal(b",\"type\":")?;
    let event_type = c.string()?;
    c.literal(b",\"time\":")?;
    let time = c.string()?;
    c.literal(b",\"datacontenttype\":\"application/json\",\"data")?;
    let (data, data_base64) = if c.literal(b"\":").is_some() {
        // serde reads a `null` here as no data.
        if c.at(b"null") {
            return None;
        }
        let start = c.i;
        c.i = json_value_end(b, start, FAST_DATA_NESTING)?;
        let raw = &b[start..c.i];
        std::str::from_utf8(raw).ok()?;
        (Some(raw), None)
    } else {
        c.literal(b"_base64\":")?;
        (None, Some(c.string()?))
    };
    c.literal(b",\"popposition\":")?;
    let popposition = c.string()?;
    c.literal(b",\"popversion\":")?;
    let popversion = c.number()?;
    c.literal(b",\"popschemaversion\":")?;
    let popschemaversion = u32::try_from(c.number()?).ok()?;
    c.literal(b",\"popmetadata")?;
    let (popmetadata, popmetadatabase64) = if c.literal(b"\":").is_some() {
        (Some(c.string()?), None)
    } else {
        c.literal(b"base64\":")?;
        (None, Some(c.string()?))
    };
    c.literal(b",\"popdigest\":")?;
    let popdigest = c.string()?;
    c.literal(b",\"popchain\":")?;
    let popchain = c.string()?;
    let popactor = match c.literal(b",\"popactor\":") {
        Some(()) => Some(c.string()?),
        None => None,
    };
    c.literal(b"}")?;
    (c.i == b.len()).then_some(EventLine {
        specversion: Some(specversion),
        id: Some(id),
        subject: Some(subject),
        event_type: Some(event_type),
        time: Some(time),
        data,
        data_base64,
        popposition: Some(popposition),
        popversion: Some(popversion),
        popschemaversion: Some(popschemaversion),
        popmetadata,
        popmetadatabase64,
        popdigest: Some(popdigest),
        popchain: Some(popchain),
        popactor,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Position;
    use crate::digest::{DigestInput, GENESIS, chain, data_hash, event_digest};
    use crate::transfer::{Entry, ExportEvent, Exporter, Manifest};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    /// What serde reads from `line` as an event line, if it reads one.
    fn by_serde(line: &[u8]) -> Option<EventLine<'_>> {
        serde_json::from_slice::<Line<'_>>(line).ok().filter(|l| l.kind.is_none()).map(Into::into)
    }

    /// The line the export writes for one event (version 0 of its stream).
    fn exported(
        stream: &str,
        event_type: &str,
        data: &[u8],
        metadata: &[u8],
        schema_version: u32,
        recorded_at: i64,
        id: u128,
    ) -> Vec<u8> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let position = Position::from_sequence(1);
        let manifest = Manifest::new(
            "sqlite",
            Position::START,
            1,
            0,
            0,
            Some(position),
            Some(position),
            &key.verifying_key(),
        );
        let digest = event_digest(&DigestInput {
            stream,
            version: 0,
            event_type,
            schema_version,
            recorded_at_micros: recorded_at,
            metadata,
            data_hash: &data_hash(data),
        });
        let mut out = Vec::new();
        let mut exporter = Exporter::new(&mut out, manifest).unwrap();
        exporter
            .entry(&Entry::Event(ExportEvent {
                position,
                stream: stream.into(),
                version: 0,
                event_id: Uuid::from_u128(id),
                event_type: event_type.into(),
                schema_version,
                recorded_at,
                data: data.to_vec(),
                metadata: metadata.to_vec(),
                chain: Some(chain(&GENESIS, &digest)),
            }))
            .unwrap();
        drop(exporter);
        let text = out.split(|b| *b == b'\n').nth(1).unwrap();
        text.to_vec()
    }

    #[test]
    fn the_exports_own_lines_take_the_fast_path() {
        let cases: [(&str, &str, &[u8], &[u8]); 6] = [
            (
                "agenda-1",
                "AgendaSubmitted",
                br#"{"a":[1,2.5e3,{"b":null}],"c":"d\u00e9"}"#,
                br#"{"actor":"user:a"}"#,
            ),
            (
                "a \"quoted\" \\ stream\u{e9}\u{1f600}",
                "T\n",
                b"[]",
                br#"{"actor":"x\"y","cid":"c"}"#,
            ),
            ("s", "T", b"null", b"{}"),
            ("s", "T", b"{\"a\":\"\xff\"}", b""),
            ("s", "T", b"1", b"\xff\xfe"),
            ("s", "T", &[b'['; 100], b"{}"),
        ];
        for (stream, event_type, data, metadata) in cases {
            let line = exported(stream, event_type, data, metadata, 7, 1_800_000_000_123_456, 9);
            let name = String::from_utf8_lossy(&line).into_owned();
            let fast = event_line(&line);
            assert!(fast.is_some(), "{name}");
            assert_eq!(fast, by_serde(&line), "{name}");
        }
    }

    #[test]
    fn lines_in_another_shape_go_to_serde() {
        let line = exported("s", "T", b"{}", br#"{"actor":"a"}"#, 1, 5, 1);
        let text = String::from_utf8(line).unwrap();
        let others = [
            text.replacen(",\"id\":", ", \"id\":", 1),
            text.replacen("\"popversion\":0", "\"popversion\":0.0", 1),
            text.replacen("\"popversion\":0", "\"popversion\":-0", 1),
            text.replacen("\"popversion\":0", "\"popversion\":00", 1),
            text.replacen("\"data\":{}", "\"data\":null", 1),
            text.replacen("\"data\":{}", "\"data\":{\r}", 1),
            text.replacen("urn:pop:log", "urn:elsewhere", 1),
            text.replacen("\"popschemaversion\":1", "\"popschemaversion\":4294967296", 1),
            text.clone() + " ",
            text.replacen('}', "},\"kind\":\"pruned\"", 1),
        ];
        for other in others {
            assert_ne!(other, text);
            assert_eq!(event_line(other.as_bytes()), None, "{other}");
        }
        // Data nested deeper than the fast path follows (raw all the same).
        let deep = "[".repeat(100) + &"]".repeat(100);
        let line = exported("s", "T", deep.as_bytes(), b"{}", 1, 5, 1);
        assert!(String::from_utf8_lossy(&line).contains(&deep));
        assert_eq!(event_line(&line), None);
        assert!(by_serde(&line).is_some());
    }

    /// Bytes an edit inserts into a line.
    const EDITS: &[u8] = b"{}[]\",:\\ 0123456789-.eEnulltrueaf\x00\xff";

    fn json_text() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::string::string_regex("[\\[\\]{}\",:0-9a-z\\\\ \t.+\\-é]{0,16}")
                .unwrap()
                .prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..12),
            any::<i64>()
                .prop_map(|n| format!("{{\"n\":{n},\"s\":[\"\\u00e9\",true]}}").into_bytes()),
        ]
    }

    proptest! {
        /// Whatever the export writes, the fast path reads, and reads as serde does.
        #[test]
        fn the_fast_path_reads_what_serde_reads(
            stream in any::<String>(),
            event_type in any::<String>(),
            data in json_text(),
            metadata in json_text(),
            schema_version in any::<u32>(),
            recorded_at in -62_135_596_800_000_000i64..253_402_300_799_999_999,
            id in any::<u128>(),
        ) {
            let line =
                exported(&stream, &event_type, &data, &metadata, schema_version, recorded_at, id);
            let fast = event_line(&line);
            prop_assert!(fast.is_some());
            prop_assert_eq!(fast, by_serde(&line));
        }

        /// A line edited anywhere: the fast path answers nothing, or what serde reads.
        #[test]
        fn an_edited_line_is_read_as_serde_reads_it_or_left_to_it(
            stream in "[a-z\"\\\\é]{0,6}",
            data in json_text(),
            at in any::<proptest::sample::Index>(),
            cut in 0usize..4,
            insert in proptest::collection::vec(proptest::sample::select(EDITS.to_vec()), 0..4),
        ) {
            let line = exported(&stream, "T", &data, br#"{"actor":"a"}"#, 1, 5, 1);
            let at = at.index(line.len());
            let mut edited = line[..at].to_vec();
            edited.extend_from_slice(&insert);
            edited.extend_from_slice(&line[(at + cut).min(line.len())..]);
            if let Some(fast) = event_line(&edited) {
                prop_assert_eq!(Some(fast), by_serde(&edited));
            }
        }
    }
}
