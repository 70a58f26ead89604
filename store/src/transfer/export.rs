//! [`Exporter`]: writes an export line by line, checking each event's digest and chain
//! against the source as it goes, and signs the checkpoint at the end.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use uuid::Uuid;

use super::text::{hex_bytes, json_str, push_base64, push_hex, push_position, push_time, push_u64};
use super::{DataChecks, Entry, EventRef, Manifest, SOURCE, StreamSlot, Tombstone, TransferError};
use crate::Position;
use crate::commitment::{Checkpoint, LogWalker, SignedCheckpoint, StreamMark, Trust, key_id};
use crate::digest::{DigestInput, GENESIS, Hash, chain, event_digest, hex};
use crate::verify::Break;

fn unknown_slot() -> TransferError {
    TransferError::File("was handed a stream slot of another export".into())
}

/// The actor an event's metadata names: what an export writes as `popactor`, and what an
/// import holds a line's `popactor` to.
pub(super) fn actor_of(metadata: &[u8]) -> Option<Cow<'_, str>> {
    serde_json::from_slice::<MetadataView<'_>>(metadata).ok()?.actor
}

/// [`crate::EventMetadata`] as the export reads it for `popactor`: the same members with the
/// same types (so exactly the metadata `EventMetadata::from_json` reads yields an actor), the
/// strings borrowed from the bytes instead of copied.
// Only `actor` is used; the other members are read for their types.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataView<'a> {
    #[serde(borrow, default)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cid: Option<Cow<'a, str>>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(borrow, default)]
    actor: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    command: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracestate: Option<Cow<'a, str>>,
}

/// A stream the export has met: where its chain stands (checked against the source as it
/// is written) and where it ended so far (for the checkpoint, the rule of
/// [`crate::commitment::Sealer`]).
struct StreamState {
    name: String,
    /// The next version and the chain head, once an event of the stream was written.
    head: Option<(u64, Hash)>,
    /// Version, position and link of the stream's last entry so far.
    mark: Option<(u64, Position, Hash)>,
}

/// Writes an export: [`Exporter::new`] writes the manifest, [`Exporter::entry`] each entry in
/// global order, [`Exporter::finish`] the tombstones and the signed checkpoint.
pub struct Exporter<W: Write> {
    out: W,
    line: Vec<u8>,
    manifest: Manifest,
    /// Entries written and the log hash over them (the checkpoint's).
    count: u64,
    log_hash: Hash,
    /// Each stream met, in order of first appearance, and its index by name.
    streams: Vec<StreamState>,
    slots: HashMap<String, usize>,
    events: u64,
    pruned: u64,
    last: Option<Position>,
    /// The source's stored checkpoints, checked against the entries as they are written
    /// ([`Exporter::checking`]).
    log: Option<LogWalker>,
    /// The entries no stored checkpoint covers ([`Exporter::refusing_unsealed_over`]).
    unsealed: UnsealedTail,
}

/// What an export met past the source's newest stored checkpoint: the rule `pop verify`
/// applies (a running server seals every few seconds, so events no checkpoint covers that
/// were written over a long span were sealed once and their checkpoints deleted, or were
/// written with no server running). An export signs what it exports: without this rule it
/// would sign such a log, and its import would verify (auditor55 M1).
#[derive(Default)]
struct UnsealedTail {
    /// The longest span allowed, in seconds; `None`: any.
    max: Option<u64>,
    /// The newest stored checkpoint's position (`None`: the log has none).
    sealed_to: Option<Position>,
    /// The entries after it, the first event after it (position and commit time) and the
    /// commit time of the last event.
    entries: u64,
    first: Option<(Position, i64)>,
    last: Option<i64>,
}

impl UnsealedTail {
    fn entry(&mut self, position: Position, recorded_at: Option<i64>) {
        if self.sealed_to.is_some_and(|p| position <= p) {
            return;
        }
        self.entries += 1;
        if let Some(at) = recorded_at {
            self.first.get_or_insert((position, at));
            self.last = Some(at);
        }
    }

    /// The unsealed events, when their span is longer than allowed.
    fn over(&self) -> Option<crate::verify::Unsealed> {
        let max = self.max?;
        let (from, first) = self.first?;
        let time = chrono::DateTime::from_timestamp_micros;
        let u = crate::verify::Unsealed { from, first: time(first)?, last: time(self.last?)? };
        u.longer_than(max).then_some(u)
    }
}

impl<W: Write> Exporter<W> {
    pub fn new(mut out: W, manifest: Manifest) -> Result<Exporter<W>, TransferError> {
        serde_json::to_writer(&mut out, &manifest).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(Exporter {
            out,
            line: Vec::with_capacity(4096),
            manifest,
            count: 0,
            log_hash: GENESIS,
            streams: Vec::new(),
            slots: HashMap::new(),
            events: 0,
            pruned: 0,
            last: None,
            log: None,
            unsealed: UnsealedTail::default(),
        })
    }

    /// Checks the source's own signed checkpoints (and the checkpoint witnessed outside it) as
    /// [`crate::verify`] does, against the entries as they are written: an export signs only a
    /// log that verifies. Only for an export of the whole log (`since` at the start); a part
    /// of the log cannot be checked against checkpoints that begin before it.
    pub fn checking(mut self, checkpoints: Vec<SignedCheckpoint>, trust: Trust) -> Self {
        // The newest checkpoint's reach, for an export of part of the log too (review56 H1: one
        // `--since` counted every event unsealed). The walk of the whole log checks every
        // checkpoint; a newest one that does not read breaks it.
        self.unsealed.sealed_to = checkpoints
            .iter()
            .max_by_key(|c| c.seq)
            .and_then(|c| c.checkpoint().ok())
            .map(|c| c.position);
        if self.manifest.since == Position::START {
            self.log = Some(LogWalker::new(checkpoints, trust));
        }
        self
    }

    /// Refuses ([`TransferError::Unsealed`]) a log whose events past its newest checkpoint
    /// were written over longer than `max` seconds (`None`: any span), as `pop verify`'s
    /// `--max-unsealed-span` does, past the newest of the checkpoints given to
    /// [`Exporter::checking`] (all, when none is).
    pub fn refusing_unsealed_over(mut self, max: Option<u64>) -> Self {
        self.unsealed.max = max;
        self
    }

    /// The first break the checkpoint walk found, once it stopped.
    fn checkpoints_broken(&mut self) -> TransferError {
        let found = self.log.take().and_then(|log| log.finish().1);
        TransferError::SourceBroken(found.unwrap_or_else(|| Break {
            stream: String::new(),
            version: None,
            position: None,
            reason: "the log does not match its checkpoints".into(),
        }))
    }

    /// The slot of the stream named `name` (one lookup of the name; a backend that knows its
    /// streams by number keeps the slot and passes it with each event).
    pub fn stream(&mut self, name: &str) -> StreamSlot {
        if let Some(&i) = self.slots.get(name) {
            return StreamSlot(i);
        }
        let i = self.streams.len();
        self.streams.push(StreamState { name: name.to_owned(), head: None, mark: None });
        self.slots.insert(name.to_owned(), i);
        StreamSlot(i)
    }

    /// The checks of an entry's position (the entry of stream `slot` at `version`): after
    /// the previous entry's, and after `since`.
    fn place(
        &mut self,
        position: Position,
        slot: StreamSlot,
        version: u64,
    ) -> Result<(), TransferError> {
        if self.last.is_some_and(|l| position <= l) || position <= self.manifest.since {
            let stream = self.streams.get(slot.0).map(|s| s.name.clone()).unwrap_or_default();
            let reason = match self.last {
                Some(l) if l == position => "a second entry at this position (one was moved or \
                                             added outside pop)"
                    .to_owned(),
                _ => "the log handed out a position out of order".to_owned(),
            };
            return Err(TransferError::SourceBroken(Break {
                stream,
                version: Some(version),
                position: Some(position),
                reason,
            }));
        }
        self.last = Some(position);
        Ok(())
    }

    /// Adds an entry to the checkpoint: the log hash, the count, where its stream ended; and
    /// checks it against the source's checkpoints ([`Exporter::checking`]).
    fn seal(
        &mut self,
        slot: StreamSlot,
        position: Position,
        version: u64,
        link: Option<&Hash>,
    ) -> Result<(), TransferError> {
        let stream = &mut self.streams[slot.0];
        self.log_hash =
            crate::commitment::fold_parts(&self.log_hash, position, &stream.name, version, link);
        self.count += 1;
        stream.mark = Some((version, position, *link.unwrap_or(&GENESIS)));
        if let Some(log) = &mut self.log
            // The same entries folded from the start: the walk takes this fold, not its own.
            && !log.entry_folded(position, &stream.name, version, link.copied(), &self.log_hash)
        {
            return Err(self.checkpoints_broken());
        }
        Ok(())
    }

    /// Writes one entry; the source's digest and chain are checked first (a stream whose
    /// first exported event is not its first event, in an export `--since`, is taken from
    /// its stored link on).
    pub fn entry(&mut self, entry: &Entry) -> Result<(), TransferError> {
        match entry {
            Entry::Event(e) => {
                let slot = self.stream(&e.stream);
                self.event(slot, &e.view())
            }
            Entry::Pruned(p) => {
                let slot = self.stream(&p.stream);
                self.pruned_entry(slot, p.position, p.version, p.link.as_ref())
            }
        }
    }

    /// Writes one event of the stream in `slot` ([`Exporter::stream`]), as [`Exporter::entry`].
    pub fn event(&mut self, slot: StreamSlot, e: &EventRef<'_>) -> Result<(), TransferError> {
        self.event_checked(slot, e, &DataChecks::of(e.data))
    }

    /// [`Exporter::event`] with the checks of the event's data already made (on another
    /// thread, say).
    pub(crate) fn event_checked(
        &mut self,
        slot: StreamSlot,
        e: &EventRef<'_>,
        checks: &DataChecks,
    ) -> Result<(), TransferError> {
        self.place(e.position, slot, e.version)?;
        let since = self.manifest.since;
        let stream = self.streams.get_mut(slot.0).ok_or_else(unknown_slot)?;
        let hash = checks.hash;
        let digest = event_digest(&DigestInput {
            stream: &stream.name,
            version: e.version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            recorded_at_micros: e.recorded_at,
            metadata: e.metadata,
            data_hash: &hash,
        });
        let (intact, stored) = match stream.head {
            Some((next, head)) => {
                let link = chain(&head, &digest);
                (next == e.version && e.chain == Some(link), link)
            }
            None if e.version == 0 => {
                let link = chain(&GENESIS, &digest);
                (e.chain == Some(link), link)
            }
            // A stream begun before `since`: its stored link is taken from here on.
            None if since != Position::START => (e.chain.is_some(), e.chain.unwrap_or(GENESIS)),
            None => (false, GENESIS),
        };
        if !intact {
            return Err(TransferError::SourceBroken(Break {
                stream: stream.name.clone(),
                version: Some(e.version),
                position: Some(e.position),
                reason: "the event does not match its chain link, or a version is missing".into(),
            }));
        }
        stream.head = Some((e.version + 1, stored));
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
        line.extend_from_slice(
            e.event_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes(),
        );
        line.extend_from_slice(b"\",\"source\":\"");
        line.extend_from_slice(SOURCE.as_bytes());
        line.extend_from_slice(b"\",\"subject\":");
        json_str(line, &stream.name);
        line.extend_from_slice(b",\"type\":");
        json_str(line, e.event_type);
        line.extend_from_slice(b",\"time\":\"");
        push_time(line, e.recorded_at);
        line.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",");
        if checks.raw {
            line.extend_from_slice(b"\"data\":");
            line.extend_from_slice(e.data);
        } else {
            line.extend_from_slice(b"\"data_base64\":\"");
            push_base64(line, e.data);
            line.push(b'"');
        }
        line.extend_from_slice(b",\"popposition\":\"");
        push_position(line, e.position);
        line.extend_from_slice(b"\",\"popversion\":");
        push_u64(line, e.version);
        line.extend_from_slice(b",\"popschemaversion\":");
        push_u64(line, u64::from(e.schema_version));
        match std::str::from_utf8(e.metadata) {
            Ok(text) => {
                line.extend_from_slice(b",\"popmetadata\":");
                json_str(line, text);
            }
            Err(_) => {
                line.extend_from_slice(b",\"popmetadatabase64\":\"");
                push_base64(line, e.metadata);
                line.push(b'"');
            }
        }
        line.extend_from_slice(b",\"popdigest\":\"");
        push_hex(line, &digest);
        line.extend_from_slice(b"\",\"popchain\":\"");
        push_hex(line, &stored);
        line.push(b'"');
        if let Some(actor) = actor_of(e.metadata) {
            line.extend_from_slice(b",\"popactor\":");
            json_str(line, &actor);
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)?;
        self.events += 1;
        self.unsealed.entry(e.position, Some(e.recorded_at));
        self.seal(slot, e.position, e.version, Some(&stored))?;
        Ok(())
    }

    /// Writes the hash row of an event of a deleted stream (in `slot`), as [`Exporter::entry`].
    pub fn pruned_entry(
        &mut self,
        slot: StreamSlot,
        position: Position,
        version: u64,
        link: Option<&Hash>,
    ) -> Result<(), TransferError> {
        self.place(position, slot, version)?;
        let stream = self.streams.get(slot.0).ok_or_else(unknown_slot)?;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"kind\":\"pruned\",\"subject\":");
        json_str(line, &stream.name);
        line.extend_from_slice(b",\"popposition\":\"");
        push_position(line, position);
        line.extend_from_slice(b"\",\"popversion\":");
        push_u64(line, version);
        match link {
            Some(link) => {
                line.extend_from_slice(b",\"popchain\":\"");
                push_hex(line, link);
                line.extend_from_slice(b"\"}\n");
            }
            None => line.extend_from_slice(b",\"popchain\":null}\n"),
        }
        self.out.write_all(line)?;
        self.pruned += 1;
        self.unsealed.entry(position, None);
        self.seal(slot, position, version, link)?;
        Ok(())
    }

    /// Writes the tombstones and the checkpoint over every entry written, signed with `key`;
    /// answers the checkpoint. The counts must be the manifest's.
    pub fn finish(
        mut self,
        tombstones: &[Tombstone],
        key: &SigningKey,
        now: DateTime<Utc>,
    ) -> Result<Checkpoint, TransferError> {
        for t in tombstones {
            let line = &mut self.line;
            line.clear();
            line.extend_from_slice(b"{\"kind\":\"tombstone\",\"subject\":");
            json_str(line, &t.stream);
            line.extend_from_slice(b",\"popversion\":");
            match t.version {
                Some(v) => line.extend_from_slice(v.to_string().as_bytes()),
                None => line.extend_from_slice(b"null"),
            }
            line.extend_from_slice(b",\"pophead\":");
            match &t.head {
                Some(h) => {
                    line.push(b'"');
                    line.extend_from_slice(hex(h).as_bytes());
                    line.push(b'"');
                }
                None => line.extend_from_slice(b"null"),
            }
            line.extend_from_slice(b",\"time\":\"");
            push_time(line, t.deleted_at);
            line.extend_from_slice(b"\"}\n");
            self.out.write_all(line)?;
        }
        if let Some(log) = self.log.take()
            && let (_, Some(found)) = log.finish()
        {
            return Err(TransferError::SourceBroken(found));
        }
        if let Some(unsealed) = self.unsealed.over() {
            return Err(TransferError::Unsealed { entries: self.unsealed.entries, unsealed });
        }
        let m = &self.manifest;
        if (self.events, self.pruned, tombstones.len() as u64) != (m.events, m.pruned, m.tombstones)
        {
            return Err(TransferError::File(format!(
                "was not written whole: the manifest counted {} events, {} pruned, {} tombstones \
                 and {}, {}, {} were written",
                m.events,
                m.pruned,
                m.tombstones,
                self.events,
                self.pruned,
                tombstones.len()
            )));
        }
        // Where each stream ended, in position order.
        let mut streams: Vec<StreamMark> = std::mem::take(&mut self.streams)
            .into_iter()
            .filter_map(|s| {
                let (version, position, link) = s.mark?;
                Some(StreamMark { stream: s.name, version, position, link: hex(&link) })
            })
            .collect();
        streams.sort_by_key(|m| m.position);
        let checkpoint = Checkpoint {
            seq: 1,
            after: m.since,
            position: self.last.unwrap_or(m.since),
            events: self.count,
            log_hash: hex(&self.log_hash),
            previous: hex(&GENESIS),
            sealed_at: now,
            key_id: key_id(&key.verifying_key()),
            streams,
            handover: None,
        };
        let signed = SignedCheckpoint::sign(&checkpoint, key)?;
        self.out.write_all(b"{\"kind\":\"checkpoint\",\"checkpoint\":")?;
        self.out.write_all(&signed.body)?;
        self.out.write_all(b",\"signature\":\"")?;
        self.out.write_all(hex_bytes(&signed.signature).as_bytes())?;
        self.out.write_all(b"\"}\n")?;
        self.out.flush()?;
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_actor_is_read_exactly_when_event_metadata_reads_it() {
        let cases: [&[u8]; 9] = [
            br#"{"customerId":"c","cid":"x","causationId":"0190f3a2-7b1c-7d2e-9f00-1234567890ab","actor":"user:alice","command":"submitAgenda"}"#,
            br#"{"actor":"user:a\"b\u00e9"}"#,
            br#"{"actor":null}"#,
            br#"{"somethingNew":[1,2],"actor":"service:w"}"#,
            br#"{"actor":7}"#,
            br#"{"customerId":7,"actor":"user:alice"}"#,
            br#"{"causationId":"not a uuid","actor":"user:alice"}"#,
            br#"{"actor":"a","actor":"b"}"#,
            b"",
        ];
        for bytes in cases {
            let want = crate::EventMetadata::from_json(bytes).ok().and_then(|m| m.actor);
            let got = serde_json::from_slice::<MetadataView<'_>>(bytes)
                .ok()
                .and_then(|m| m.actor)
                .map(Cow::into_owned);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(bytes));
        }
    }
}
