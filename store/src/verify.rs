//! What verifying the log finds: how much was checked and the first break, located by stream,
//! version and position, and the one rule that finds it per stream ([`Walker`]; the rule over
//! the whole log in global order, with its signed checkpoints, is
//! [`crate::commitment::LogWalker`]). Backends read their rows
//! (the embedded store: [`crate::SqliteStore::verify`]; PostgreSQL:
//! [`crate::postgres::verify`]) and feed them to the walker; every element is recomputed, no
//! summary is trusted.

use std::collections::{HashMap, HashSet};

/// The hasher of the maps keyed by stream name that a walk updates once per event.
pub(crate) type FastHash = foldhash::fast::RandomState;

use crate::Position;
use crate::digest::{DigestInput, GENESIS, Hash, chain, data_hash, event_digest};

/// The first place where the log does not match its digests and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub stream: String,
    /// The stream version where it breaks (`None`: the stream as a whole, e.g. its head).
    pub version: Option<u64>,
    /// The global position of the event concerned, when there is one.
    pub position: Option<Position>,
    pub reason: String,
}

/// Why a store whose schema predates the hash chain is not verified: nothing in its events can
/// be checked, and a store pop chained whose schema version was set back (its chain columns
/// and checkpoints dropped) looks the same (auditor54: `pop verify` advised `pop serve`, which
/// chained and signed the edited events, and then said intact).
pub fn unchained_schema(found: u32) -> String {
    format!(
        "the store's schema is version {found}, from before pop chained its events: none of them \
         can be verified, and a store whose chain was dropped outside pop looks the same. Only \
         for an older pop's store you trust as it is: start `pop serve --chain-unchained-history` \
         once, which chains and signs what it holds now"
    )
}

impl Break {
    /// A break of the store as a whole, not of one stream (said without one).
    pub fn of_store(reason: impl Into<String>) -> Break {
        Break { stream: String::new(), version: None, position: None, reason: reason.into() }
    }

    /// The [`Verification`] that stops at `self`.
    pub fn alone(self) -> Verification {
        Verification { first_break: Some(self), ..Default::default() }
    }

    /// [`Verification`] of a store missing the first of `expected` tables not in `found`.
    pub fn missing_tables(expected: &[&str], found: &[String]) -> Option<Verification> {
        let missing = expected.iter().find(|t| !found.iter().any(|f| f == *t))?;
        Some(
            Break::of_store(format!(
                "the store has no table {missing}: pop never drops one, so it was dropped (or \
                 the database replaced) outside pop"
            ))
            .alone(),
        )
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stream.is_empty() && self.version.is_none() && self.position.is_none() {
            return f.write_str(&self.reason);
        }
        // A break of no stream (the log's own: a hole, a cut tail) names only where it is
        // (auditor31: it read `stream "" position 41`).
        let mut parts = Vec::new();
        if !self.stream.is_empty() {
            parts.push(format!("stream {:?}", self.stream));
        }
        if let Some(v) = self.version {
            parts.push(format!("version {v}"));
        }
        if let Some(p) = self.position {
            parts.push(format!("position {p}"));
        }
        write!(f, "{}: {}", parts.join(" "), self.reason)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Events whose digest and chain link were recomputed.
    pub events: u64,
    /// Live streams whose head was checked against their last event.
    pub streams: u64,
    /// Deleted streams (tombstones) whose recorded head hash was found.
    pub deleted_streams: u64,
    /// Reap records (`StreamReaped` with a head hash) whose tombstone kept that head.
    pub reaped_streams: u64,
    /// The signed checkpoints over the whole log ([`crate::commitment`]).
    pub checkpoints: CheckpointReport,
    /// The first break found (verification stops there); `None`: everything matched.
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// Adds what the walk over the log in global order found ([`crate::commitment::LogWalker`])
    /// to a report of the per-stream walk: its break counts only when the streams held.
    pub(crate) fn with_checkpoints(
        mut self,
        (report, first_break): (CheckpointReport, Option<Break>),
    ) -> Verification {
        self.checkpoints = report;
        if self.first_break.is_none() {
            self.first_break = first_break;
        } else {
            // The break said is the streams' own: a key that signed none of the checkpoints
            // does not explain it (review57 L3: a tampered stream read as a rotation).
            self.checkpoints.signer_not_handed_over = None;
        }
        self
    }
}

/// One event as a backend reads it for verification, in (stream, version) order.
pub(crate) struct EventRow<'a> {
    pub stream: &'a str,
    /// The version as stored (a negative one is a break, not an error).
    pub version: i64,
    pub position: Position,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at: i64,
    pub metadata: &'a [u8],
    pub data: &'a [u8],
    /// The chain link stored with the event.
    pub chain: Option<&'a [u8]>,
}

/// One stream row as a backend reads it for verification.
pub(crate) struct StreamRow {
    pub name: String,
    /// The version of the stream's last event as stored (`None`: none).
    pub version: Option<i64>,
    /// A tombstone: its events were deleted on purpose.
    pub deleted: bool,
    /// The chain head stored with the stream (kept on a tombstone).
    pub head: Option<Vec<u8>>,
}

/// Where the walk through one stream stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    pub(crate) next_version: u64,
    pub(crate) head: Hash,
    last_position: Option<Position>,
    /// The commit time of the stream's previous event (µs).
    last_recorded_at: i64,
}

/// The one verification rule both backends apply: fed every event, each stream's in version
/// order (streams may interleave: the log's global order, or one stream after another)
/// ([`Walker::event`]), then every stream row ([`Walker::finish`]), it recomputes each digest
/// and chain link, checks versions are gap-free from 0, positions grow with versions and stay
/// at or below the log head, each live stream's version and head hash match its last event,
/// every tombstone that had events kept its head hash, every stream the data reaper recorded
/// with a head hash is a tombstone keeping that head (so a reaped stream verifies after its
/// events are gone, and its tombstone cannot vanish unseen), and no event belongs to a stream
/// the log does not know. It stops at the first break.
pub(crate) struct Walker {
    report: Verification,
    /// Every stream walked so far.
    walks: HashMap<String, Walk, FastHash>,
    log_head: Option<Position>,
    /// Reap records with a head hash, already verified as events.
    reaped: Vec<Reaped>,
}

/// A reap record: the stream it deleted and that stream's head, and where the record sits.
#[derive(Clone)]
pub(crate) struct Reaped {
    stream: String,
    head: String,
    at: Break,
}

impl Walker {
    /// `log_head`: the highest position the log ever handed out, when the backend keeps one.
    pub(crate) fn new(log_head: Option<Position>) -> Walker {
        Walker {
            report: Verification::default(),
            walks: HashMap::default(),
            log_head,
            reaped: Vec::new(),
        }
    }

    /// Whether a break was already found (feed nothing more).
    pub(crate) fn stopped(&self) -> bool {
        self.report.first_break.is_some()
    }

    /// Records a break found by the backend itself (e.g. an event of an unknown stream id).
    pub(crate) fn stop(&mut self, b: Break) {
        self.report.first_break.get_or_insert(b);
    }

    /// Checks one event; `false` once a break is found.
    pub(crate) fn event(&mut self, r: &EventRow<'_>) -> bool {
        self.event_digested(r, None)
    }

    /// [`Walker::event`] with the event's digest already computed from the same row (by a
    /// caller that needed it too), so it is not computed twice.
    pub(crate) fn event_digested(&mut self, r: &EventRow<'_>, digest: Option<&Hash>) -> bool {
        if self.stopped() {
            return false;
        }
        let log_head = self.log_head;
        // One lookup of the stream's walk per event.
        let stepped = match self.walks.get_mut(r.stream) {
            Some(w) => step(Some(&*w), r, digest, log_head).map(|walked| *w = walked),
            None => step(None, r, digest, log_head).map(|walked| {
                self.walks.insert(r.stream.to_owned(), walked);
            }),
        };
        if let Err(reason) = stepped {
            let b = at(r, reason);
            self.stop(b);
            return false;
        }
        self.report.events += 1;
        if let Some(reaped) = reap_record(r) {
            self.reaped.push(reaped);
        }
        true
    }

    /// Checks every stream row against what the walk saw, and answers the report.
    pub(crate) fn finish(self, streams: &[StreamRow]) -> Verification {
        if self.stopped() {
            return self.report;
        }
        let known: HashSet<&str, FastHash> = streams.iter().map(|s| s.name.as_str()).collect();
        let mut unknown: Vec<&String> =
            self.walks.keys().filter(|name| !known.contains(name.as_str())).collect();
        unknown.sort();
        let walks = &self.walks;
        finish_rule(
            self.report,
            &self.reaped,
            streams,
            |_, s| walks.get(&s.name).map(|w| (w.next_version, w.head)),
            unknown.first().map(|name| (*name).clone()),
        )
    }
}

/// The check of one event against where its stream's walk stands (`None`: no event of the
/// stream seen yet): the stream's next version, its position against the previous one and the
/// log head, and the chain link recomputed from the row (its digest computed here unless
/// given). The walk after the event, or why it breaks there.
pub(crate) fn step(
    walk: Option<&Walk>,
    r: &EventRow<'_>,
    digest: Option<&Hash>,
    log_head: Option<Position>,
) -> Result<Walk, String> {
    let (next_version, head, last_position, last_recorded_at) = match walk {
        Some(w) => (w.next_version, w.head, w.last_position, w.last_recorded_at),
        None => (0, GENESIS, None, i64::MIN),
    };
    if u64::try_from(r.version).ok() != Some(next_version) {
        // One pass cannot tell a deleted event from one moved later in the log (auditor29: a
        // swap of two events' positions was said to be a deletion): both are named.
        let cause = if u64::try_from(r.version).is_ok_and(|v| v > next_version) {
            "an event is missing, or the stream's events are out of order"
        } else {
            "an event is repeated, or the stream's events are out of order"
        };
        return Err(format!("expected version {next_version} here, found {}: {cause}", r.version));
    }
    if r.position == Position::START
        || last_position.is_some_and(|p| r.position <= p)
        || log_head.is_some_and(|h| r.position > h)
    {
        return Err(format!(
            "position out of order (previous event of the stream at {}, log head {})",
            last_position.map_or_else(|| "none".into(), |p| p.to_string()),
            log_head.map_or_else(|| "unknown".into(), |p| p.to_string()),
        ));
    }
    // Both stores stamp a stream's events no earlier than its previous one (the floored clock,
    // PostgreSQL's stream-lock read): an event dated before it was written outside pop, with
    // its digest and chain recomputed (auditor22: one appended to a stream, backdated before
    // the newest checkpoint, passed and was then sealed).
    if r.recorded_at < last_recorded_at {
        let at = |micros: i64| {
            chrono::DateTime::from_timestamp_micros(micros).map_or_else(
                || micros.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )
        };
        return Err(format!(
            "committed at {}, before the stream's previous event ({}): a stream's commit times \
             never go back, so this event was written outside pop",
            at(r.recorded_at),
            at(last_recorded_at)
        ));
    }
    let digest = match digest {
        Some(d) => *d,
        None => event_digest(&DigestInput {
            stream: r.stream,
            version: next_version,
            event_type: r.event_type,
            schema_version: r.schema_version,
            recorded_at_micros: r.recorded_at,
            metadata: r.metadata,
            data_hash: &data_hash(r.data),
        }),
    };
    let link = chain(&head, &digest);
    if r.chain != Some(link.as_slice()) {
        return Err("the event does not match its chain link (edited, moved or swapped)".into());
    }
    Ok(Walk {
        next_version: next_version + 1,
        head: link,
        last_position: Some(r.position),
        last_recorded_at: r.recorded_at,
    })
}

/// The break at event `r`.
pub(crate) fn at(r: &EventRow<'_>, reason: String) -> Break {
    Break {
        stream: r.stream.to_owned(),
        version: u64::try_from(r.version).ok(),
        position: Some(r.position),
        reason,
    }
}

/// A (verified) reap record's stream and head, kept for the check against the tombstones.
pub(crate) fn reap_record(r: &EventRow<'_>) -> Option<Reaped> {
    use pop_domain::EventCodec;
    use pop_domain::reap::{CATEGORY, ReapEvent, STREAM_REAPED};
    if r.event_type != STREAM_REAPED
        || r.stream.strip_prefix(CATEGORY).is_none_or(|rest| !rest.starts_with('-'))
    {
        return None;
    }
    // A record that does not decode is still the one chained: nothing to hold a tombstone to.
    let Ok(ReapEvent::StreamReaped(record)) =
        ReapEvent::decode(r.event_type, r.schema_version, r.data)
    else {
        return None;
    };
    let head = record.head_hash?;
    Some(Reaped { stream: record.stream, head, at: at(r, String::new()) })
}

/// The checks after every event was walked (none broke): each stream row against its walk
/// (`walk_of(index, row)`: the count of events walked and the head reached), every reap record
/// (in log order) against its tombstone, and `unknown`, the first stream walked that has no
/// row. `report` holds the counts of the walk.
pub(crate) fn finish_rule(
    mut report: Verification,
    reaped: &[Reaped],
    streams: &[StreamRow],
    walk_of: impl Fn(usize, &StreamRow) -> Option<(u64, Hash)>,
    unknown: Option<String>,
) -> Verification {
    for (i, s) in streams.iter().enumerate() {
        let whole = |reason: String| Break {
            stream: s.name.clone(),
            version: None,
            position: None,
            reason,
        };
        let walked = walk_of(i, s);
        if s.deleted {
            // Its events are gone; its head hash must still be there when it had any.
            if s.version.is_some() && s.head.as_ref().is_none_or(|h| h.len() != 32) {
                report.first_break =
                    Some(whole("a deleted stream lost its recorded head hash".into()));
                return report;
            }
            if let Some((count, _)) = walked {
                report.first_break = Some(Break {
                    version: Some(0),
                    ..whole(format!("a deleted stream still has {count} events"))
                });
                return report;
            }
            report.deleted_streams += 1;
            continue;
        }
        let (count, head) = walked.unwrap_or((0, GENESIS));
        let want_count = s.version.map_or(0, |v| v + 1);
        if i64::try_from(count).ok() != Some(want_count) {
            report.first_break = Some(Break {
                version: Some(count),
                ..whole(format!(
                    "the stream's head says {want_count} events, the log holds {count} (a cut tail or deleted events)"
                ))
            });
            return report;
        }
        if count > 0 && s.head.as_deref() != Some(head.as_slice()) {
            report.first_break =
                Some(whole("the stream's head hash does not match its last event".into()));
            return report;
        }
        report.streams += 1;
    }
    let rows: HashMap<&str, &StreamRow, FastHash> =
        streams.iter().map(|s| (s.name.as_str(), s)).collect();
    for reaped in reaped {
        let found = rows.get(reaped.stream.as_str()).filter(|s| s.deleted);
        let kept = found.and_then(|s| s.head.as_deref()).and_then(|h| <Hash>::try_from(h).ok());
        let problem = match (found, kept) {
            (None, _) => "its tombstone is gone (the stream was removed whole)".to_owned(),
            (Some(_), Some(h)) if crate::digest::hex(&h) == reaped.head => {
                report.reaped_streams += 1;
                continue;
            }
            (Some(_), _) => "its tombstone keeps another head hash".to_owned(),
        };
        report.first_break = Some(Break {
            reason: format!(
                "the data reaper recorded deleting stream {:?} with head {}, but {problem}",
                reaped.stream, reaped.head
            ),
            ..reaped.at.clone()
        });
        return report;
    }
    if let Some(name) = unknown {
        report.first_break = Some(Break {
            stream: name,
            version: Some(0),
            position: None,
            reason: "an event of a stream the log does not know".into(),
        });
    }
    report
}

/// The hash rows a deleted stream kept ([`check_pruned`]): how many, the highest version, and
/// the chain link at that version.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrunedTail {
    pub count: u64,
    pub last_version: i64,
    /// `None`: missing or not 32 bytes (then it matches no head).
    pub last_link: Option<Hash>,
    /// The first row (version, position) whose version is not above every version of the
    /// rows before it in log order: a stream's events, hence its hash rows, rise in version
    /// with their positions.
    pub disorder: Option<(i64, Position)>,
}

impl PrunedTail {
    /// Adds one hash row; rows given in log order also have their order checked
    /// ([`PrunedTail::disorder`]).
    pub(crate) fn add(&mut self, version: i64, link: Option<&[u8]>, at: Position) {
        if self.count > 0 && version <= self.last_version && self.disorder.is_none() {
            self.disorder = Some((version, at));
        }
        if self.count == 0 || version > self.last_version {
            self.last_version = version;
            self.last_link = link.and_then(|l| Hash::try_from(l).ok());
        }
        self.count += 1;
    }
}

/// The break of a hash row past the log's head (`head`): nothing of the log is there.
pub(crate) fn hash_row_past_head(
    stream: String,
    version: i64,
    at: Position,
    head: impl std::fmt::Display,
) -> Break {
    Break {
        stream,
        version: u64::try_from(version).ok(),
        position: Some(at),
        reason: format!(
            "a hash row past the log's head ({head}): pop writes nothing there, so the row was \
             moved or added outside pop"
        ),
    }
}

/// Every deleted stream's hash rows against its tombstone: versions 0 to the tombstone's, the
/// last one's link its head hash. The checkpoints cover the hash rows they sealed; this covers
/// those sealed by none yet (a reap's last rows, deleted or zeroed before the next seal, passed,
/// and the next seal signed the gap). A tombstone without hash rows (deleted before they were
/// kept) is not checked here.
pub(crate) fn check_pruned(
    mut report: Verification,
    streams: &[StreamRow],
    tails: &HashMap<String, PrunedTail, FastHash>,
) -> Verification {
    if !report.is_intact() {
        return report;
    }
    for s in streams.iter().filter(|s| s.deleted) {
        let Some(tail) = tails.get(s.name.as_str()) else { continue };
        let reached = s.version.unwrap_or(-1);
        let wanted = u64::try_from(reached + 1).unwrap_or(0);
        if let Some((version, at)) = tail.disorder {
            report.first_break = Some(Break {
                stream: s.name.clone(),
                version: u64::try_from(version).ok(),
                position: Some(at),
                reason: "a hash row of the deleted stream is not after the rows of its earlier \
                         versions in the log (a stream's positions rise with its versions): it, \
                         or a row of a later version before it, was moved outside pop"
                    .into(),
            });
            return report;
        }
        let rows_whole = u64::try_from(tail.last_version + 1).is_ok_and(|n| n == tail.count)
            && tail.last_link.as_ref().map(|h| &h[..]) == s.head.as_deref();
        let reason = if (tail.count != wanted || tail.last_version != reached) && rows_whole {
            // The rows run from version 0 without a gap and end in the head hash the tombstone
            // kept: it is the tombstone's version that does not agree (auditor34: an edited
            // tombstone version was said to be a deleted hash row).
            format!(
                "the deleted stream's tombstone says it reached version {reached}, but its {} \
                 hash rows run from version 0 to {} without a gap and end in the head hash the \
                 tombstone kept: the tombstone's version was changed",
                tail.count, tail.last_version
            )
        } else if tail.count != wanted || tail.last_version != reached {
            format!(
                "the deleted stream reached version {reached}, but {} hash rows of it are kept, \
                 the last at version {}: a hash row was deleted",
                tail.count, tail.last_version
            )
        } else if tail.last_link.is_none()
            || tail.last_link.as_ref().map(|h| &h[..]) != s.head.as_deref()
        {
            format!(
                "the hash row of the deleted stream's last event (version {reached}) does not \
                 end in the head hash its tombstone kept: a hash row was changed"
            )
        } else {
            continue;
        };
        report.first_break = Some(Break {
            stream: s.name.clone(),
            version: u64::try_from(tail.last_version.max(0)).ok(),
            position: None,
            reason,
        });
        return report;
    }
    report
}

/// The break of a hash row kept for a stream pop did not delete: a live one (`exists`), or one
/// that does not exist. Pop keeps hash rows only for the streams it deleted.
pub(crate) fn stray_hash_row(stream: String, exists: bool, version: i64, at: Position) -> Break {
    let which =
        if exists { "this stream, which is not deleted" } else { "a stream that does not exist" };
    Break {
        stream,
        version: u64::try_from(version).ok(),
        position: Some(at),
        reason: format!(
            "a hash row is kept for {which}: pop keeps them only for the streams it deleted, so \
             it was added outside pop"
        ),
    }
}

/// What verification found about the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointReport {
    /// Checkpoints whose range was recomputed and matched.
    pub checkpoints: u64,
    /// Entries (events and pruned hash rows) covered by those checkpoints.
    pub sealed_entries: u64,
    /// Entries after the newest checkpoint (not sealed yet).
    pub unsealed_entries: u64,
    /// Whether the signatures were checked (a key was given).
    pub signatures_checked: bool,
    /// The newest checkpoint verified: its sequence number, position and sealing time.
    pub last: Option<(u64, Position, chrono::DateTime<chrono::Utc>)>,
    /// The events no checkpoint covers, when there are any
    /// ([`Verification::with_unsealed`]).
    pub unsealed: Option<Unsealed>,
    /// Where the signing key changed (key rotations), oldest first.
    pub key_changes: Vec<KeyChange>,
    /// Checkpoints signed by a key that was lost at a handover, whose signatures could not be
    /// checked: the hash chain up to the handover, signed by a trusted key, pins them.
    pub pinned: u64,
    /// The id of the key given when it signed none of the store's checkpoints and the walk
    /// stopped at one it did not sign: most likely a new key the log was not handed over to
    /// yet (a planned rotation), which is not verified, rather than tampered with.
    pub signer_not_handed_over: Option<String>,
}

/// A checkpoint that takes the log over from another key (a key rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The first checkpoint the new key signed.
    pub seq: u64,
    /// The key ids before and after.
    pub from: String,
    pub to: String,
    /// Whether the previous key endorsed the new one (checked when the walk checks
    /// signatures); `false`: the previous key was lost.
    pub endorsed: bool,
}

/// The events past the newest checkpoint: where they start, and when the first and the last
/// of them were committed. A running `pop serve` seals every few seconds, so their commit
/// times span a few seconds at most (the last ones before it stopped); a long span means the
/// checkpoints that covered them were deleted, or they were written with no server running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsealed {
    pub from: Position,
    pub first: chrono::DateTime<chrono::Utc>,
    pub last: chrono::DateTime<chrono::Utc>,
}

impl Unsealed {
    /// How long the unsealed events took to be written.
    pub fn span(&self) -> chrono::Duration {
        self.last.signed_duration_since(self.first)
    }

    /// Whether they took longer than `max_seconds`, in whole seconds: the one comparison of
    /// `pop verify --max-unsealed-span` and of an export ([`crate::transfer::Exporter`]).
    pub fn longer_than(&self, max_seconds: u64) -> bool {
        self.span().num_seconds() > i64::try_from(max_seconds).unwrap_or(i64::MAX)
    }
}

impl Verification {
    /// Adds the span of the events no checkpoint covers (read by the backend after an intact
    /// walk).
    pub(crate) fn with_unsealed(mut self, unsealed: Option<Unsealed>) -> Verification {
        self.checkpoints.unsealed = unsealed;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{Break, CheckpointReport, Verification};

    /// A key that signed none of the checkpoints explains the checkpoint walk's break only: a
    /// break of the streams' own walk stays said as tampering (review57 L3).
    #[test]
    fn an_unused_key_is_said_only_of_the_checkpoint_walks_break() {
        let unused = CheckpointReport {
            signer_not_handed_over: Some("k1".into()),
            ..CheckpointReport::default()
        };
        let streams_broke = Break::of_store("an event edited").alone();
        let said = streams_broke.with_checkpoints((unused.clone(), None));
        assert_eq!(said.checkpoints.signer_not_handed_over, None, "{said:?}");
        let checkpoint_broke = Break::of_store("checkpoint 1 is not signed by key k1");
        let said = Verification::default().with_checkpoints((unused, Some(checkpoint_broke)));
        assert_eq!(said.checkpoints.signer_not_handed_over.as_deref(), Some("k1"), "{said:?}");
    }
}
