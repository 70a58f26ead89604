//! The global commitment: signed checkpoints over the whole log in global order, so that a
//! stream deleted whole, a log cut after some point, or a log replaced by a consistent forgery
//! is found — none of which a per-stream chain ([`crate::digest`]) can show.
//!
//! - Every event is an entry of the log: its position, stream, version and its stream's chain
//!   link (which commits to the event's content and everything before it in its stream). The
//!   log hash folds the entries in global order:
//!   `L_n = SHA-256("pop-log-v1" ‖ L_{n-1} ‖ commit ‖ prepare ‖ len ‖ stream ‖ version ‖ link)`,
//!   `L_0` 32 zero bytes, numbers big-endian u64.
//! - A stream deleted on purpose (the data reaper) leaves its entries behind as small hash rows
//!   (position, stream, version, link: `pruned` / `pop_pruned`, written in the delete's
//!   transaction), so the log hash still recomputes after retention.
//! - A checkpoint ([`Checkpoint`]) covers the entries after the previous checkpoint up to a
//!   position: how many entries the log holds up to there, the log hash there, the hash of the
//!   previous checkpoint, the time it was sealed, and where each stream touched in its range
//!   stood at its end (stream, version, position, link) — that list is what lets verification
//!   name a stream that vanished whole. Its JSON body is signed with Ed25519 over
//!   `"pop-checkpoint-v1\n" ‖ body`; the next checkpoint links to SHA-256 of that message.
//! - Checkpoints are sealed off the write path ([`Sealer`], run by `pop serve` every few
//!   seconds), and only over positions below which nothing can still commit: the embedded
//!   store commits in position order from one writer, so a read snapshot is such a prefix; the
//!   PostgreSQL store reads only below its gap-free horizon (the rule its readers use).
//! - [`LogWalker`] is the one rule verification applies on every backend: fed every entry in
//!   global order, it checks each checkpoint's signature, sequence and link to the previous
//!   one, then recomputes its count, log hash and stream list, and names the first difference
//!   by stream, version and position.
//!
//! Ed25519 from `ed25519-dalek` (the dalek-cryptography crate, 2.x): the maintained, audited
//! pure-Rust implementation the ecosystem standardised on (RustCrypto's `ed25519` signature
//! types, constant-time `curve25519-dalek` arithmetic, verification in the strict RFC 8032
//! sense available). `ring` would do the signing as well, but brings C and assembly to a
//! crate that otherwise builds without them, and cannot load a raw 32-byte seed as a key file.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::{GENESIS, Hash, hex};
use crate::verify::{Break, CheckpointReport, FastHash, KeyChange};
use crate::{Position, StoreError};

pub use ed25519_dalek::{SigningKey as CheckpointSigningKey, VerifyingKey as CheckpointKey};

/// Entries one checkpoint covers at most: a log sealed for the first time is sealed in steps
/// of this many, so one checkpoint (its stream list) stays a few MiB at most.
pub const MAX_CHECKPOINT_ENTRIES: usize = 50_000;

/// What is signed before a checkpoint's body.
const SIGNING_CONTEXT: &[u8] = b"pop-checkpoint-v1\n";

/// One entry of the log in global order: an event, live or pruned (its stream deleted on
/// purpose, only its hash row kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub position: Position,
    pub stream: String,
    pub version: u64,
    /// The stream's chain link after this event (`None`: missing, a break).
    pub link: Option<Hash>,
}

/// The log hash after `entry`, following `previous`.
pub fn fold(previous: &Hash, entry: &LogEntry) -> Hash {
    fold_parts(previous, entry.position, &entry.stream, entry.version, entry.link.as_ref())
}

/// [`fold`] over an entry's parts (so a caller reading borrowed rows builds no entry).
pub(crate) fn fold_parts(
    previous: &Hash,
    position: Position,
    stream: &str,
    version: u64,
    link: Option<&Hash>,
) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pop-log-v1");
    h.update(previous);
    h.update(position.commit().to_be_bytes());
    h.update(position.prepare().to_be_bytes());
    h.update((stream.len() as u64).to_be_bytes());
    h.update(stream.as_bytes());
    h.update(version.to_be_bytes());
    h.update(link.unwrap_or(&GENESIS));
    h.finalize().into()
}

/// Where one stream stood at the end of a checkpoint's range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMark {
    pub stream: String,
    pub version: u64,
    pub position: Position,
    /// Hex of the stream's chain link there.
    pub link: String,
}

/// A checkpoint: the log up to `position`, committed to by `log_hash`, linked to the previous
/// checkpoint. Serialised as JSON, that is the body the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// 1, 2, 3… without gaps.
    pub seq: u64,
    /// The previous checkpoint's position (exclusive start of this one's range).
    pub after: Position,
    /// The last position covered (inclusive).
    pub position: Position,
    /// Entries of the log from its start up to `position`.
    pub events: u64,
    /// Hex of the log hash after the entry at `position`.
    pub log_hash: String,
    /// Hex of SHA-256 of the previous checkpoint's signed message (zeros for the first).
    pub previous: String,
    pub sealed_at: DateTime<Utc>,
    /// Hex of the first 8 bytes of SHA-256 of the public key that signs it: names the key, so
    /// a checkpoint signed by another key is reported as such.
    pub key_id: String,
    /// Each stream touched in the range, where it stood at the range's end, in position order.
    pub streams: Vec<StreamMark>,
    /// Set on the first checkpoint a new key signs after another key signed the one before
    /// (a key rotation): which key it takes over from, and that key's endorsement when it was
    /// at hand. Absent from every other checkpoint's body (so bodies sealed before rotations
    /// existed keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
}

/// What the first checkpoint of a new key says about the key before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handover {
    /// The key id of the key that signed the checkpoint before.
    pub from_key_id: String,
    /// Hex of that key's public key, when it was held (not lost): a verifier who trusts the
    /// new key checks the checkpoints before with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_key: Option<String>,
    /// Hex of this checkpoint's public key (its `keyId` names it), so that a verifier who
    /// trusts only the previous key can follow the endorsement to it.
    pub to_key: String,
    /// Hex of the previous key's Ed25519 signature over [`handover_message`]: the previous
    /// key's holder hands the log over to the new key at this point of the chain. Absent when
    /// the previous key was lost: then only the new key vouches for the checkpoints before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<String>,
}

/// What a previous key signs to hand the log over: the new public key, the sequence number of
/// the checkpoint it starts at and the hash of the checkpoint before it (so the endorsement
/// holds at that one point of one chain only).
pub fn handover_message(to: &VerifyingKey, seq: u64, previous: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(HANDOVER_CONTEXT.len() + 32 + 8 + 32);
    m.extend_from_slice(HANDOVER_CONTEXT);
    m.extend_from_slice(to.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(previous);
    m
}

/// Checkpoints a sealer looks back for a handover from its own key ([`Sealer::handed_on`]).
const HANDED_ON_LOOKBACK: usize = 256;

/// What is signed before a handover's content.
const HANDOVER_CONTEXT: &[u8] = b"pop-key-handover-v1\n";

/// A key the log was signed with before this one ([`Sealer::handing_over`]): the sealer
/// extends a newest checkpoint it signed, and records the handover.
#[derive(Debug, Clone)]
pub enum PreviousKey {
    /// The previous signing key, at hand: its signature on the newest checkpoint is checked,
    /// and it endorses the new key.
    Held(SigningKey),
    /// Only the previous key's id (the key was lost): the newest checkpoint cannot be checked
    /// by its signature, so it is extended only when it is the very checkpoint witnessed
    /// outside the store ([`Sealer::seal_after`]'s witness) — or, with no witness at all, on
    /// the operator's word ([`Sealer::taking_over_unwitnessed`]) — and the handover carries no
    /// endorsement.
    Lost(String),
}

/// A checkpoint as stored: the exact body bytes and the signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub seq: u64,
    pub body: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The message a checkpoint's signature covers.
fn message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// The names of a key, as checkpoints carry it.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest: Hash = Sha256::digest(key.as_bytes()).into();
    hex(&digest)[..16].to_owned()
}

impl SignedCheckpoint {
    /// Signs `checkpoint` with `key`.
    pub fn sign(checkpoint: &Checkpoint, key: &SigningKey) -> Result<SignedCheckpoint, StoreError> {
        let body = serde_json::to_vec(checkpoint)
            .map_err(|e| StoreError::Corrupt(format!("a checkpoint does not serialise: {e}")))?;
        let signature = key.sign(&message(&body)).to_bytes().to_vec();
        Ok(SignedCheckpoint { seq: checkpoint.seq, body, signature })
    }

    /// SHA-256 of the signed message: what the next checkpoint links to.
    pub fn hash(&self) -> Hash {
        Sha256::digest(message(&self.body)).into()
    }

    /// The body, parsed (without checking the signature).
    pub fn checkpoint(&self) -> Result<Checkpoint, String> {
        let parsed: Checkpoint = serde_json::from_slice(&self.body)
            .map_err(|e| format!("checkpoint {} does not parse: {e}", self.seq))?;
        if parsed.seq != self.seq {
            return Err(format!("checkpoint row {} holds checkpoint {}", self.seq, parsed.seq));
        }
        Ok(parsed)
    }

    /// Whether `key` signed this body.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), String> {
        let signature = Signature::from_slice(&self.signature)
            .map_err(|_| format!("checkpoint {} has a malformed signature", self.seq))?;
        key.verify(&message(&self.body), &signature).map_err(|_| {
            format!(
                "checkpoint {} is not signed by key {} (a forgery, or another key)",
                self.seq,
                key_id(key)
            )
        })
    }
}

fn parse_hash(text: &str) -> Option<Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What a backend offers to seal and verify checkpoints.
#[async_trait::async_trait]
pub trait LogCommitment: Send + Sync + 'static {
    /// The checkpoint with the highest sequence number, if any.
    async fn last_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// The checkpoint with sequence number `seq`, if the store holds it.
    async fn checkpoint(&self, seq: u64) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// Up to `max` entries (events and pruned hash rows) after `after` in global order, only
    /// below the point where nothing can still commit.
    async fn sealable_entries(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Stores `checkpoint` as the next one; `false` when its sequence number is taken already
    /// (another replica sealed first), or when its predecessor is not stored (deleted while it
    /// was sealed: the chain gets no link past a hole).
    async fn add_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<bool, StoreError>;
}

/// Why sealing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The newest stored checkpoint is not one this key can extend.
    #[error("the newest checkpoint cannot be extended: {0}")]
    Foreign(String),
    /// The store's checkpoints end before the one witnessed outside it
    /// ([`Sealer::seal_after`]): they were deleted, and sealing now would sign what replaced
    /// them.
    #[error(
        "the store's checkpoints end at {held}, before checkpoint {witnessed} that was \
         witnessed outside it: they were deleted; not sealing over them"
    )]
    BehindWitness { held: u64, witnessed: u64 },
}

/// Seals checkpoints with one key: each [`Sealer::seal`] extends the newest stored checkpoint
/// (after checking it is signed by this key, or by a previous key it takes over from:
/// [`Sealer::handing_over`]) over the entries since, in steps of at most
/// [`MAX_CHECKPOINT_ENTRIES`]. Holds no state between calls, so replicas may all run one: the
/// store keeps one checkpoint per sequence number and the slower replica's is dropped.
#[derive(Debug)]
pub struct Sealer {
    key: SigningKey,
    max_entries: usize,
    previous: Vec<PreviousKey>,
    /// A lost previous key's newest checkpoint is taken over with no witness at all.
    unwitnessed: bool,
}

/// How the newest stored checkpoint may be extended.
enum Extends {
    /// It is signed by this sealer's own key.
    Own,
    /// It is signed by a previous key: the next checkpoint records the handover.
    From(Handover),
}

impl Sealer {
    pub fn new(key: SigningKey) -> Sealer {
        Sealer {
            key,
            max_entries: MAX_CHECKPOINT_ENTRIES,
            previous: Vec::new(),
            unwitnessed: false,
        }
    }

    /// A sealer whose checkpoints cover at most `max_entries` entries (tests).
    pub fn with_max_entries(key: SigningKey, max_entries: usize) -> Sealer {
        Sealer { key, max_entries: max_entries.max(1), previous: Vec::new(), unwitnessed: false }
    }

    /// This sealer, also extending a newest checkpoint signed by one of `previous` (a key
    /// rotation): the first checkpoint it signs after one of them records the handover.
    pub fn handing_over(mut self, previous: Vec<PreviousKey>) -> Sealer {
        self.previous = previous;
        self
    }

    /// This sealer, taking over a lost previous key's newest checkpoint when there is no
    /// witness at all (the operator's word that the log is the one that key sealed).
    pub fn taking_over_unwitnessed(mut self, unwitnessed: bool) -> Sealer {
        self.unwitnessed = unwitnessed;
        self
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Whether `checkpoint` is signed by this sealer's key or by a previous key it holds (a
    /// lost one, known by id only, cannot be checked and is not trusted here).
    pub fn trusts(&self, checkpoint: &SignedCheckpoint) -> Result<(), String> {
        let own = checkpoint.verify_signature(&self.key.verifying_key());
        if own.is_ok() {
            return own;
        }
        for p in &self.previous {
            if let PreviousKey::Held(k) = p
                && checkpoint.verify_signature(&k.verifying_key()).is_ok()
            {
                return Ok(());
            }
        }
        own
    }

    /// Seals one checkpoint over the entries after the newest one; `None` when there are none
    /// (or another replica sealed this sequence number first).
    pub async fn seal(
        &self,
        store: &dyn LogCommitment,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, SealError> {
        self.seal_after(store, now, None).await
    }

    /// How the newest stored checkpoint `last` (parsed: `parsed`) may be extended, or why not.
    fn extends(
        &self,
        last: &SignedCheckpoint,
        parsed: &Checkpoint,
        witness: Option<&SignedCheckpoint>,
    ) -> Result<Extends, SealError> {
        let own = match last.verify_signature(&self.key.verifying_key()) {
            Ok(()) => return Ok(Extends::Own),
            Err(e) => e,
        };
        let to_key = hex(self.key.verifying_key().as_bytes());
        for p in &self.previous {
            match p {
                PreviousKey::Held(k) if last.verify_signature(&k.verifying_key()).is_ok() => {
                    let message =
                        handover_message(&self.key.verifying_key(), parsed.seq + 1, &last.hash());
                    return Ok(Extends::From(Handover {
                        from_key_id: key_id(&k.verifying_key()),
                        from_key: Some(hex(k.verifying_key().as_bytes())),
                        to_key,
                        endorsement: Some(crate::digest::hex_bytes(&k.sign(&message).to_bytes())),
                    }));
                }
                PreviousKey::Lost(id) if *id == parsed.key_id => {
                    // Its signature cannot be checked: only the checkpoint known outside the
                    // store is taken on trust — or, with no witness at all, the operator's word.
                    let taken = match witness {
                        Some(w) => w == last,
                        None => self.unwitnessed,
                    };
                    if taken {
                        return Ok(Extends::From(Handover {
                            from_key_id: id.clone(),
                            from_key: None,
                            to_key,
                            endorsement: None,
                        }));
                    }
                    return Err(SealError::Foreign(match witness {
                        Some(w) => format!(
                            "checkpoint {} names the lost key {id} as its signer, but the \
                             checkpoint witnessed outside the store is checkpoint {}, another: \
                             nothing shows the store's is the one that key signed, so it is not \
                             taken over (run `pop verify` to see where the store and the \
                             witness part; if the witness is only behind and the log checks \
                             out, move the witness file away and start with \
                             --checkpoint-takeover-unwitnessed, on your word: a forgery made \
                             since the witnessed checkpoint would be signed too)",
                            last.seq, w.seq
                        ),
                        None => format!(
                            "checkpoint {} names the lost key {id} as its signer, and there is \
                             no witness to show it is the one that key signed: with \
                             --checkpoint-takeover-unwitnessed the server takes it over on your \
                             word (a consistent forgery of the log and its checkpoints made \
                             meanwhile would then be signed too)",
                            last.seq
                        ),
                    }));
                }
                _ => {}
            }
        }
        // A handover from this very key, endorsed by it: the other replicas changed keys and
        // this one was not restarted with the new key (newcomer10, auditor23: it called its own
        // successor a forgery).
        if let Some(h) = &parsed.handover
            && h.from_key_id == key_id(&self.key.verifying_key())
            && let Some(endorsement) = &h.endorsement
            && let Ok(to) = parse_verifying_key(&h.to_key)
            && last.verify_signature(&to).is_ok()
            && endorsed(&self.key.verifying_key(), &to, parsed, endorsement).is_ok()
        {
            return Err(SealError::Foreign(format!(
                "checkpoint {} hands the log over from this key ({}) to key {}, with this key's \
                 endorsement: the other replicas changed keys; restart this one with the new \
                 --checkpoint-key",
                parsed.seq, h.from_key_id, parsed.key_id
            )));
        }
        // Name the key that did sign it, as the checkpoint records it (ops3am2: the refusal
        // named only this sealer's own key, twice), and the previous keys given that did not
        // (newcomer10: the refusal advised the flag just given).
        let mut why = own;
        if !parsed.key_id.is_empty() {
            why = format!("{why}; it names key {} as its signer", parsed.key_id);
        }
        if !self.previous.is_empty() {
            let given: Vec<String> = self
                .previous
                .iter()
                .map(|p| match p {
                    PreviousKey::Held(k) => key_id(&k.verifying_key()),
                    PreviousKey::Lost(id) => id.clone(),
                })
                .collect();
            why = format!(
                "{why}, and none of the previous keys given (key {}) did",
                given.join(", key ")
            );
        }
        Err(SealError::Foreign(why))
    }

    /// Where this sealer's key handed the log on, as the chain from `last` back says (the
    /// checkpoint and the key it went to): looked for back to the newest checkpoint this key
    /// signed, at most [`HANDED_ON_LOOKBACK`] checkpoints.
    async fn handed_on(
        &self,
        store: &dyn LogCommitment,
        last: &SignedCheckpoint,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let own = key_id(&self.key.verifying_key());
        let mut at = Some(last.clone());
        for _ in 0..HANDED_ON_LOOKBACK {
            let Some(c) = at.and_then(|c| c.checkpoint().ok()) else { return Ok(None) };
            if let Some(h) = &c.handover
                && h.from_key_id == own
            {
                return Ok(Some((c.seq, c.key_id)));
            }
            if c.key_id == own || c.seq <= 1 {
                return Ok(None);
            }
            at = store.checkpoint(c.seq - 1).await?;
        }
        Ok(None)
    }

    /// [`Sealer::seal`], refusing ([`SealError::BehindWitness`]) when the store's newest
    /// checkpoint is numbered below the `witness` (the checkpoint known outside the store;
    /// `None`: none). Checked on the checkpoint this seal extends, so checkpoints deleted at
    /// any time before it are never sealed over — in particular never begun again at 1.
    pub async fn seal_after(
        &self,
        store: &dyn LogCommitment,
        now: DateTime<Utc>,
        witness: Option<&SignedCheckpoint>,
    ) -> Result<Option<Checkpoint>, SealError> {
        Ok(self.seal_next(store, now, witness).await?.map(|(checkpoint, _)| checkpoint))
    }

    /// [`Sealer::seal_after`], with how many entries the checkpoint sealed.
    async fn seal_next(
        &self,
        store: &dyn LogCommitment,
        now: DateTime<Utc>,
        witness: Option<&SignedCheckpoint>,
    ) -> Result<Option<(Checkpoint, usize)>, SealError> {
        let public = self.key.verifying_key();
        let last = store.last_checkpoint().await?;
        let held = last.as_ref().map_or(0, |c| c.seq);
        let witnessed = witness.map_or(0, |w| w.seq);
        if held < witnessed {
            return Err(SealError::BehindWitness { held, witnessed });
        }
        let (seq, after, events, log_hash, previous, handover) = match last {
            None => (1, Position::START, 0, GENESIS, GENESIS, None),
            Some(last) => {
                let c = last.checkpoint().map_err(SealError::Foreign)?;
                if c.key_id != key_id(&public)
                    && let Some((at, to)) = self.handed_on(store, &last).await?
                {
                    // This key handed the log on: it takes it back only with the endorsement of
                    // the key that holds it now (ops3am11, ops3am12: a replica still on the old
                    // key, told to name the newest signer as lost, took the log back).
                    let endorsed_back = self.previous.iter().any(|p| {
                        matches!(p, PreviousKey::Held(k) if last.verify_signature(&k.verifying_key()).is_ok())
                    });
                    if !endorsed_back {
                        return Err(SealError::Foreign(format!(
                            "this key ({}) handed the log over to key {to} at checkpoint {at}: \
                             restart this replica with the new --checkpoint-key; it takes the log \
                             back only with the endorsement of the key that signs it now \
                             (--checkpoint-previous-key naming that key's file), never by calling \
                             that key lost",
                            key_id(&public)
                        )));
                    }
                }
                let handover = match self.extends(&last, &c, witness)? {
                    Extends::Own => None,
                    Extends::From(h) => Some(h),
                };
                let log_hash = parse_hash(&c.log_hash).ok_or_else(|| {
                    SealError::Foreign(format!("checkpoint {} has a malformed log hash", c.seq))
                })?;
                (c.seq + 1, c.position, c.events, log_hash, last.hash(), handover)
            }
        };
        let entries = store.sealable_entries(after, self.max_entries).await?;
        let Some(last) = entries.last() else { return Ok(None) };
        let position = last.position;
        let mut hash = log_hash;
        let mut marks: HashMap<&str, usize> = HashMap::new();
        let mut streams: Vec<StreamMark> = Vec::new();
        let mut before = after;
        for e in &entries {
            if e.position <= before {
                let which = if before == after { "the sealed " } else { "the entry before, " };
                return Err(StoreError::Corrupt(format!(
                    "the log handed out position {} at or below {which}{} (entries \
                     never share a position: one was moved or added outside pop; run `pop \
                     verify`)",
                    e.position, before
                ))
                .into());
            }
            before = e.position;
            hash = fold(&hash, e);
            let mark = StreamMark {
                stream: e.stream.clone(),
                version: e.version,
                position: e.position,
                link: hex(&e.link.unwrap_or(GENESIS)),
            };
            match marks.get(e.stream.as_str()) {
                Some(&i) => streams[i] = mark,
                None => {
                    marks.insert(&e.stream, streams.len());
                    streams.push(mark);
                }
            }
        }
        streams.sort_by_key(|m| m.position);
        let checkpoint = Checkpoint {
            seq,
            after,
            position,
            events: events + entries.len() as u64,
            log_hash: hex(&hash),
            previous: hex(&previous),
            sealed_at: now,
            key_id: key_id(&public),
            streams,
            handover,
        };
        let signed = SignedCheckpoint::sign(&checkpoint, &self.key)?;
        if !store.add_checkpoint(&signed).await? {
            return Ok(None);
        }
        // A handover is said (newcomer10: nothing in the log told a key changed hands).
        match &checkpoint.handover {
            Some(h) if h.endorsement.is_some() => tracing::info!(
                seq = checkpoint.seq,
                from = %h.from_key_id,
                to = %checkpoint.key_id,
                "handed the log's checkpoints over to this key, endorsed by the previous one"
            ),
            Some(h) => tracing::warn!(
                seq = checkpoint.seq,
                from = %h.from_key_id,
                to = %checkpoint.key_id,
                "took the log's checkpoints over from a lost key, without its endorsement: the \
                 checkpoints before are vouched for by this key alone"
            ),
            None => {}
        }
        Ok(Some((checkpoint, entries.len())))
    }

    /// Seals the log up to where nothing can still commit, in checkpoints of the sealer's most
    /// entries while they fill, stopping after the first that does not (what commits after it
    /// is left to the next call); the newest checkpoint sealed, if any.
    pub async fn seal_all(
        &self,
        store: &dyn LogCommitment,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, SealError> {
        self.seal_all_after(store, now, None).await
    }

    /// [`Sealer::seal_all`] with [`Sealer::seal_after`]'s check at every step.
    pub async fn seal_all_after(
        &self,
        store: &dyn LogCommitment,
        now: DateTime<Utc>,
        witness: Option<&SignedCheckpoint>,
    ) -> Result<Option<Checkpoint>, SealError> {
        let mut newest = None;
        // Sealed in checkpoints of the most entries each while a backlog is there; one that
        // took fewer took all there was, and what committed since waits for the next round
        // (ops3am13: under steady writes each pass sealed what came during the last, so a
        // round of ~27-event checkpoints ended only at a lull, 2,494 of them for 67,875
        // events, and the witness and the sealing metrics stood still meanwhile).
        while let Some((c, sealed)) = self.seal_next(store, now, witness).await? {
            newest = Some(c);
            if sealed < self.max_entries {
                break;
            }
        }
        Ok(newest)
    }
}

/// A checkpoint being checked.
struct Open {
    checkpoint: Checkpoint,
    log_hash: Hash,
}

/// The one rule that checks checkpoints against the log, on every backend: construct it with
/// the stored checkpoints (in sequence order) and the key, feed it every entry in global
/// order ([`LogWalker::entry`]), then [`LogWalker::finish`].
pub struct LogWalker {
    /// The keys checkpoints may be signed by, by key id: the one given, those earlier keys
    /// that handovers signed by a trusted key name, and keys an endorsement hands over to.
    /// Empty when no key was given (signatures go unchecked).
    keys: HashMap<String, VerifyingKey>,
    /// The newest handover from a lost key that a trusted key signed: checkpoints before it
    /// that no trusted key signed are taken as the hash chain pins them (their signatures
    /// cannot be checked). 0: none.
    pinned_below: u64,
    pending: std::vec::IntoIter<SignedCheckpoint>,
    open: Option<Open>,
    /// The previous checkpoint's message hash, position and count.
    previous: (Hash, Position, u64),
    log_hash: Hash,
    count: u64,
    /// Where each stream touched in the open range stands.
    seen: HashMap<String, (u64, Position, Hash), FastHash>,
    /// The first entry of the open range (to locate a break of the range as a whole).
    first_in_range: Option<LogEntry>,
    report: CheckpointReport,
    /// Why the next checkpoint cannot be checked against the log (reported at its first entry).
    bad: Option<String>,
    first_break: Option<Break>,
    /// A checkpoint known from outside the store ([`Trust::witness`]).
    witness: Option<SignedCheckpoint>,
    /// The position of the entry walked last: each must be past it, sealed or not.
    last_entry: Option<Position>,
    /// The key id that signs the log at the checkpoint walked last: it changes only at a
    /// handover from it.
    signer: Option<String>,
    /// Keys that handed the log on, with the checkpoint where they did.
    retired: HashMap<String, u64>,
    /// The id of the key given, and whether a checkpoint walked so far names it (the rest are
    /// looked at only for a break's hint, never on an intact walk).
    given: Option<(String, bool)>,
}

/// What verification trusts that the store cannot change: the key that signs checkpoints,
/// and a checkpoint seen earlier and kept outside the store (the witness `pop serve` writes
/// into its data directory). A key alone cannot tell a log whose checkpoints were deleted,
/// then rewritten, from a log never sealed yet; the witness can: the store must still hold
/// that very checkpoint, and it must still match the log.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub key: Option<VerifyingKey>,
    pub witness: Option<SignedCheckpoint>,
}

impl From<Option<VerifyingKey>> for Trust {
    fn from(key: Option<VerifyingKey>) -> Trust {
        Trust { key, witness: None }
    }
}

impl LogWalker {
    pub fn new(checkpoints: Vec<SignedCheckpoint>, trust: impl Into<Trust>) -> LogWalker {
        let Trust { key, witness } = trust.into();
        let signatures_checked = key.is_some();
        let (keys, pinned_below) = match key {
            Some(key) => earlier_keys(&checkpoints, key),
            None => (HashMap::new(), 0),
        };
        let given = key.map(|k| (key_id(&k), false));
        let mut walker = LogWalker {
            witness,
            keys,
            pinned_below,
            pending: checkpoints.into_iter(),
            open: None,
            previous: (GENESIS, Position::START, 0),
            log_hash: GENESIS,
            count: 0,
            seen: HashMap::default(),
            first_in_range: None,
            report: CheckpointReport { signatures_checked, ..CheckpointReport::default() },
            bad: None,
            first_break: None,
            last_entry: None,
            signer: None,
            retired: HashMap::new(),
            given,
        };
        walker.open_next();
        walker
    }

    fn stop(&mut self, b: Break) {
        self.first_break.get_or_insert(b);
    }

    pub fn stopped(&self) -> bool {
        self.first_break.is_some()
    }

    /// Takes the next stored checkpoint and checks what can be checked without the log. A
    /// problem is reported at the first entry the checkpoint would cover (or, with none, at
    /// the end).
    fn open_next(&mut self) {
        let Some(signed) = self.pending.next() else { return };
        let expected_seq = self.report.checkpoints + 1;
        if signed.seq != expected_seq {
            self.bad = Some(format!(
                "checkpoint {expected_seq} is missing (the next stored is {})",
                signed.seq
            ));
            return;
        }
        if let Some(w) = &self.witness
            && w.seq == signed.seq
            && (w.body != signed.body || w.signature != signed.signature)
        {
            if let Some(why) = self.witness_not_signed(w) {
                self.bad = Some(why);
                return;
            }
            self.bad = Some(format!(
                "checkpoint {} is not the one witnessed outside the store: the store's \
                 checkpoints were replaced",
                signed.seq
            ));
            return;
        }
        let checkpoint = match signed.checkpoint() {
            Ok(c) => c,
            Err(reason) => {
                // A body edited into something unreadable: its signature says so first.
                self.bad = Some(match self.keys.values().next() {
                    Some(key) => signed.verify_signature(key).err().unwrap_or(reason),
                    None => reason,
                });
                return;
            }
        };
        if let Some((id, named)) = &mut self.given {
            *named |= *id == checkpoint.key_id;
        }
        if self.report.signatures_checked
            && let Err(reason) = self.check_signer(&signed, &checkpoint)
        {
            self.bad = Some(reason);
            return;
        }
        if let Err(reason) = self.check_succession(&checkpoint) {
            self.bad = Some(reason);
            return;
        }
        if let Some(h) = &checkpoint.handover {
            self.report.key_changes.push(KeyChange {
                seq: checkpoint.seq,
                from: h.from_key_id.clone(),
                to: checkpoint.key_id.clone(),
                endorsed: h.endorsement.is_some(),
            });
        }
        let Some(log_hash) = parse_hash(&checkpoint.log_hash) else {
            self.bad = Some(format!("checkpoint {} has a malformed log hash", checkpoint.seq));
            return;
        };
        if hex(&self.previous.0) != checkpoint.previous {
            self.bad = Some(format!(
                "checkpoint {} does not link to checkpoint {}",
                checkpoint.seq,
                checkpoint.seq - 1
            ));
            return;
        }
        if checkpoint.after != self.previous.1 || checkpoint.position <= checkpoint.after {
            self.bad = Some(format!("checkpoint {} covers positions out of order", checkpoint.seq));
            return;
        }
        self.previous.0 = signed.hash();
        self.open = Some(Open { checkpoint, log_hash });
    }

    /// Whether `signed` (its body: `c`) is signed by a key this walk trusts: the key it names
    /// is one of them and its signature holds; or it is the first checkpoint of a key that a
    /// trusted key endorsed (the key is trusted from then on); or a lost key signed it before
    /// a handover a trusted key signed (the hash chain from there pins it).
    fn check_signer(&mut self, signed: &SignedCheckpoint, c: &Checkpoint) -> Result<(), String> {
        if let Some(key) = self.keys.get(&c.key_id) {
            signed.verify_signature(key)?;
            if let Some(h) = &c.handover
                && let Some(endorsement) = &h.endorsement
            {
                let from = self.keys.get(&h.from_key_id).ok_or_else(|| {
                    format!(
                        "checkpoint {} hands over from key {}, which it does not name",
                        c.seq, h.from_key_id
                    )
                })?;
                endorsed(from, key, c, endorsement)?;
            }
            return Ok(());
        }
        if let Some(h) = &c.handover
            && let Some(endorsement) = &h.endorsement
            && let Some(from) = self.keys.get(&h.from_key_id).copied()
        {
            let to = parse_verifying_key(&h.to_key)
                .ok()
                .filter(|to| key_id(to) == c.key_id)
                .ok_or_else(|| {
                    format!("checkpoint {} hands over to a key it is not signed by", c.seq)
                })?;
            signed.verify_signature(&to)?;
            endorsed(&from, &to, c, endorsement)?;
            self.keys.insert(c.key_id.clone(), to);
            return Ok(());
        }
        if c.seq < self.pinned_below {
            self.report.pinned += 1;
            return Ok(());
        }
        let mut trusted: Vec<&String> = self.keys.keys().collect();
        trusted.sort();
        let named = if c.key_id.is_empty() {
            String::new()
        } else {
            format!("; it names key {} as its signer", c.key_id)
        };
        let hint = match &c.handover {
            Some(h) if h.endorsement.is_none() => format!(
                ", and says it takes over from key {} without that key's endorsement (as after \
                 a lost key): such a handover is vouched for by its new key alone, so if key {} \
                 is the operators' new key, verify with its public key; if not, it is a forgery",
                h.from_key_id, c.key_id
            ),
            _ => String::new(),
        };
        // The key given signed none of the store's checkpoints: a new key the log was not
        // handed to yet, most likely (ops3am11: verify paged someone mid-rotation).
        let unused = match &self.given {
            Some((id, false)) if !self.pending.as_slice().iter().any(|p| names_key(p, id)) => {
                self.report.signer_not_handed_over = Some(id.clone());
                format!(
                    "; no checkpoint of the store names key {id}: either it is a new key the log has \
                 not been handed over to yet, or the checkpoints it signed (the handover among \
                 them) were deleted and the log sealed again with an older key, or it is not \
                 this store's key. Check the store against the witness (--witness) or a backup \
                 before handing the log over (`pop serve` with it and --checkpoint-previous-key \
                 naming the key of the newest checkpoint): a handover signs what the store holds"
                )
            }
            _ => String::new(),
        };
        Err(format!(
            "checkpoint {} is not signed by key {} (a forgery, or another key){named}{hint}{unused}",
            c.seq,
            trusted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or key ")
        ))
    }

    /// Why the witnessed checkpoint `w` shows that the witness file itself was edited: its body
    /// does not read as the checkpoint it is filed as, or it names a key this walk holds and
    /// that key did not sign it (auditor19 N6: a flipped digit of its signature was blamed on
    /// the store's checkpoints). One signed by a key this walk does not know says nothing
    /// about the file (auditor23: the key changed after it — a rotation whose handover the
    /// store no longer holds, or a lost key — and the store's missing checkpoints were then
    /// blamed on the witness).
    fn witness_not_signed(&self, w: &SignedCheckpoint) -> Option<String> {
        let edited = match w.checkpoint() {
            Err(_) => true,
            Ok(c) => self.keys.get(&c.key_id).is_some_and(|k| w.verify_signature(k).is_err()),
        };
        edited.then(|| {
            format!(
                "the checkpoint witnessed outside the store (checkpoint {}) is not the one its \
                 key signed: the witness file was edited or replaced, not the store; check the \
                 store against a good copy of the witness, or without one",
                w.seq
            )
        })
    }

    /// The log's signing key changes only at a handover from the key that signed it up to
    /// there, and a key that handed the log on takes it back only with the endorsement of the
    /// key it takes it from (ops3am11: a retired key — leaked, say — declared the current key
    /// lost, took the log back and re-sealed it, and verify with either key said intact).
    fn check_succession(&mut self, c: &Checkpoint) -> Result<(), String> {
        let Some(current) = self.signer.clone() else {
            self.signer = Some(c.key_id.clone());
            return Ok(());
        };
        if c.key_id == current {
            return Ok(());
        }
        let Some(h) = c.handover.as_ref().filter(|h| h.from_key_id == current) else {
            return Err(format!(
                "checkpoint {} is signed by key {}, but key {current} signs the log up to it and \
                 hands it over to no other key there (a forgery, or another key)",
                c.seq, c.key_id
            ));
        };
        if h.endorsement.is_none()
            && let Some(at) = self.retired.get(&c.key_id)
        {
            return Err(format!(
                "checkpoint {} takes the log over from key {current} for key {}, which handed the \
                 log on at checkpoint {at}: a key that handed it on takes it back only with the \
                 endorsement of the key it takes it from (a retired key — leaked? — or a forgery)",
                c.seq, c.key_id
            ));
        }
        if h.endorsement.is_some() {
            self.retired.remove(&c.key_id);
        }
        self.retired.insert(current, c.seq);
        self.signer = Some(c.key_id.clone());
        Ok(())
    }

    /// Checks one entry; `false` once a break is found.
    pub fn entry(&mut self, e: LogEntry) -> bool {
        self.entry_parts(e.position, &e.stream, e.version, e.link)
    }

    /// [`LogWalker::entry`] from the entry's parts, borrowed: nothing is allocated per entry
    /// (only per stream and range).
    pub(crate) fn entry_parts(
        &mut self,
        position: Position,
        stream: &str,
        version: u64,
        link: Option<Hash>,
    ) -> bool {
        self.step(position, stream, version, link, None)
    }

    /// [`LogWalker::entry_parts`] for a caller that folds the log hash itself over the same
    /// entries from the start of the log (the export, for its own checkpoint): `folded` is
    /// [`fold_parts`] of the log hash before this entry and the entry, so it is not computed
    /// twice.
    pub(crate) fn entry_folded(
        &mut self,
        position: Position,
        stream: &str,
        version: u64,
        link: Option<Hash>,
        folded: &Hash,
    ) -> bool {
        self.step(position, stream, version, link, Some(folded))
    }

    fn step(
        &mut self,
        position: Position,
        stream: &str,
        version: u64,
        link: Option<Hash>,
        folded: Option<&Hash>,
    ) -> bool {
        if self.stopped() {
            return false;
        }
        let owned = || LogEntry { position, stream: stream.to_owned(), version, link };
        while self.open.as_ref().is_some_and(|o| position > o.checkpoint.position) {
            if !self.close(Some(&owned())) {
                return false;
            }
        }
        let located = |reason: String| Break {
            stream: stream.to_owned(),
            version: Some(version),
            position: Some(position),
            reason,
        };
        if let Some(reason) = self.bad.take() {
            self.stop(located(reason));
            return false;
        }
        // Entries (events and hash rows) never share a position, and the log is fed in order:
        // a second entry at a position was moved there or added outside pop (auditor20: a hash
        // row moved onto an event's position, or past the newest checkpoint, passed, was
        // sealed, and then made export refuse for good).
        if let Some(last) = self.last_entry.filter(|last| position <= *last) {
            let what = if position == last {
                "a second entry at this position"
            } else {
                "an entry out of global order"
            };
            self.stop(located(format!(
                "{what} (the entry before it is at {last}): entries of the log never share a \
                 position, so this one was moved or added outside pop"
            )));
            return false;
        }
        self.last_entry = Some(position);
        if self.open.is_none() {
            // Past the newest checkpoint.
            self.report.unsealed_entries += 1;
            return true;
        }
        if position <= self.previous.1 {
            self.stop(located("an entry out of global order".into()));
            return false;
        }
        self.log_hash = match folded {
            Some(folded) => *folded,
            None => fold_parts(&self.log_hash, position, stream, version, link.as_ref()),
        };
        self.count += 1;
        let mark = (version, position, link.unwrap_or(GENESIS));
        match self.seen.get_mut(stream) {
            Some(s) => *s = mark,
            None => {
                self.seen.insert(stream.to_owned(), mark);
            }
        }
        if self.first_in_range.is_none() {
            self.first_in_range = Some(owned());
        }
        true
    }

    /// Compares the open checkpoint with what the walk recomputed over its range, then opens
    /// the next. `next`: the entry after the range (to locate an entry the range lacks).
    fn close(&mut self, next: Option<&LogEntry>) -> bool {
        let Some(open) = self.open.take() else { return true };
        let c = &open.checkpoint;
        let mut breaks: Vec<Break> = Vec::new();
        let mut expected: HashMap<&str, &StreamMark, FastHash> =
            HashMap::with_capacity_and_hasher(c.streams.len(), FastHash::default());
        for m in &c.streams {
            expected.insert(m.stream.as_str(), m);
            let found = self.seen.get(m.stream.as_str());
            let same = found.is_some_and(|(v, p, l)| {
                *v == m.version && *p == m.position && parse_hash(&m.link) == Some(*l)
            });
            if !same {
                let what = match found {
                    None => "none of its events in that range are in the log (the stream was \
                             removed)"
                        .to_owned(),
                    Some((v, p, _)) if *v == m.version && *p == m.position => format!(
                        "its hash chain there differs from the one the checkpoint signed: an \
                         event of the stream at or before version {v} was changed and the chain \
                         recomputed (which one cannot be told from the chain alone)"
                    ),
                    Some((v, p, _)) => {
                        format!("the log has it at version {v}, position {p} there")
                    }
                };
                breaks.push(Break {
                    stream: m.stream.clone(),
                    version: Some(m.version),
                    position: Some(m.position),
                    reason: format!(
                        "checkpoint {} says the stream reached version {} at position {}, but {what}",
                        c.seq, m.version, m.position
                    ),
                });
            }
        }
        for (stream, (v, p, _)) in &self.seen {
            if !expected.contains_key(stream.as_str()) {
                breaks.push(Break {
                    stream: stream.clone(),
                    version: Some(*v),
                    position: Some(*p),
                    reason: format!(
                        "an entry (an event, or a deleted stream's hash row) checkpoint {} does not cover (inserted or moved)",
                        c.seq
                    ),
                });
            }
        }
        if let Some(first) = breaks.into_iter().min_by_key(|b| b.position) {
            self.stop(first);
            return false;
        }
        if self.count != c.events || self.log_hash != open.log_hash {
            let at = self.first_in_range.clone().or_else(|| next.cloned());
            self.stop(Break {
                stream: at.as_ref().map(|e| e.stream.clone()).unwrap_or_default(),
                version: at.as_ref().map(|e| e.version),
                position: at.as_ref().map(|e| e.position),
                // Said as the range it is in (auditor59 M1: the range's first entry was named
                // as if it were the one changed): the log hash folds each entry's chain link,
                // so it shows that one differs, not which; every event's own digest and chain
                // verified, so it is most likely a deleted stream's hash row, whose data is gone.
                reason: format!(
                    "checkpoint {} covers {} entries with log hash {}, the log recomputes to {} \
                     entries with {}: {} after position {} and up to position {} (the range \
                     this checkpoint adds; named here is its first entry){}",
                    c.seq,
                    c.events,
                    c.log_hash,
                    self.count,
                    hex(&self.log_hash),
                    if self.count == c.events {
                        "an entry differs from what was signed"
                    } else {
                        "entries were added or removed"
                    },
                    self.previous.1,
                    c.position,
                    if self.count == c.events {
                        ", most likely a deleted stream's hash row (pruned rows keep only their \
                         hashes, which no digest of their own checks); which one cannot be told \
                         from the log hash"
                    } else {
                        ""
                    }
                ),
            });
            return false;
        }
        self.report.checkpoints += 1;
        self.report.sealed_entries = self.count;
        self.report.last = Some((c.seq, c.position, c.sealed_at));
        self.previous.1 = c.position;
        self.previous.2 = c.events;
        self.seen.clear();
        self.first_in_range = None;
        self.open_next();
        true
    }

    /// Closes the last range and answers the report and the first break.
    pub fn finish(mut self) -> (CheckpointReport, Option<Break>) {
        while !self.stopped() && self.open.is_some() {
            self.close(None);
        }
        if let Some(reason) = self.bad.take() {
            self.stop(Break { stream: String::new(), version: None, position: None, reason });
        }
        if let Some(w) = self.witness.take()
            && !self.stopped()
            && w.seq > self.report.checkpoints
        {
            let b = match self.witness_not_signed(&w) {
                Some(reason) => {
                    Break { stream: String::new(), version: None, position: None, reason }
                }
                None => missing_witness(&w, self.report.checkpoints),
            };
            self.stop(b);
        }
        (self.report, self.first_break)
    }
}

/// The keys a walk trusting `key` accepts, and below which checkpoint the hash chain alone
/// pins the checkpoints: from the newest checkpoint back, each handover that a trusted key
/// signed (or that such a pin covers) adds the key it takes over from — its public key, when
/// it was held; when it was lost, the pin reaches up to that handover. Only checkpoints that
/// carry a handover are parsed.
fn earlier_keys(
    checkpoints: &[SignedCheckpoint],
    key: VerifyingKey,
) -> (HashMap<String, VerifyingKey>, u64) {
    let mut keys = HashMap::from([(key_id(&key), key)]);
    let mut pinned_below = 0;
    const FIELD: &[u8] = b"\"handover\":";
    for signed in checkpoints.iter().rev() {
        if !signed.body.windows(FIELD.len()).any(|w| w == FIELD) {
            continue;
        }
        let Ok(c) = signed.checkpoint() else { continue };
        let Some(h) = &c.handover else { continue };
        let trusted = match keys.get(&c.key_id) {
            Some(signer) => signed.verify_signature(signer).is_ok(),
            None => c.seq < pinned_below,
        };
        if !trusted {
            continue;
        }
        match h.from_key.as_deref().map(parse_verifying_key) {
            Some(Ok(from)) if key_id(&from) == h.from_key_id => {
                keys.entry(h.from_key_id.clone()).or_insert(from);
            }
            Some(_) => {}
            None => pinned_below = pinned_below.max(c.seq),
        }
    }
    (keys, pinned_below)
}

/// Whether the body of `c` names the key `id` as its signer (without parsing it).
fn names_key(c: &SignedCheckpoint, id: &str) -> bool {
    let named = format!("\"keyId\":\"{id}\"");
    c.body.windows(named.len()).any(|w| w == named.as_bytes())
}

/// Whether the previous key `from` endorsed `to` at checkpoint `c`.
fn endorsed(
    from: &VerifyingKey,
    to: &VerifyingKey,
    c: &Checkpoint,
    endorsement: &str,
) -> Result<(), String> {
    let bad = || {
        format!(
            "checkpoint {} says key {} endorsed the handover to key {}, but that key did not \
             sign it",
            c.seq,
            key_id(from),
            key_id(to)
        )
    };
    let previous = parse_hash(&c.previous).ok_or_else(bad)?;
    let signature = crate::digest::parse_hex(endorsement)
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(bad)?;
    from.verify(&handover_message(to, c.seq, &previous), &signature).map_err(|_| bad())
}

/// The break of a store that lacks the witnessed checkpoint `w` (it holds `held`): located at
/// the last stream the checkpoint names, where the log it sealed ended.
fn missing_witness(w: &SignedCheckpoint, held: u64) -> Break {
    let c = w.checkpoint().ok();
    let last = c.as_ref().and_then(|c| c.streams.last());
    Break {
        stream: last.map(|m| m.stream.clone()).unwrap_or_default(),
        version: last.map(|m| m.version),
        position: c.as_ref().map(|c| c.position),
        reason: format!(
            "checkpoint {} was witnessed outside the store ({}), but the store's checkpoints \
             end at {held}: they were deleted, so the log up to there may have been rewritten \
             (unless this is not the store witnessed: a store restored from a backup older \
             than the witness — then move the witness file away —, or, on PostgreSQL, another \
             database than the one this data directory's witness serves — a migration's \
             target, say, takes its own --witness file or data directory)",
            w.seq,
            c.as_ref().map_or_else(
                || "an unreadable body".to_owned(),
                |c| format!(
                    "{} entries up to position {}, sealed {}",
                    c.events, c.position, c.sealed_at
                )
            ),
        ),
    }
}

/// Reads a signing key: 64 hex digits (the 32-byte Ed25519 seed), surrounding whitespace
/// ignored.
pub fn parse_signing_key(text: &str) -> Result<SigningKey, String> {
    let seed = parse_hash(text.trim().to_ascii_lowercase().as_str())
        .ok_or("a checkpoint key is 64 hex digits (a 32-byte Ed25519 seed)")?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key: 64 hex digits.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = parse_hash(text.trim().to_ascii_lowercase().as_str())
        .ok_or("a checkpoint public key is 64 hex digits")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn entry(seq: u64, stream: &str, version: u64) -> LogEntry {
        LogEntry {
            position: Position::from_sequence(seq),
            stream: stream.into(),
            version,
            link: Some([seq as u8; 32]),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_only_with_its_key() {
        let c = Checkpoint {
            seq: 1,
            after: Position::START,
            position: Position::from_sequence(3),
            events: 3,
            log_hash: hex(&[1; 32]),
            previous: hex(&GENESIS),
            sealed_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            key_id: key_id(&key(1).verifying_key()),
            streams: vec![],
            handover: None,
        };
        let signed = SignedCheckpoint::sign(&c, &key(1)).expect("signs");
        assert!(signed.verify_signature(&key(1).verifying_key()).is_ok());
        assert!(signed.verify_signature(&key(2).verifying_key()).is_err());
        assert_eq!(signed.checkpoint(), Ok(c));
        let mut edited = signed.clone();
        edited.body[10] ^= 1;
        assert!(edited.verify_signature(&key(1).verifying_key()).is_err());
        // Pinned (computed apart from this code): a change of the encoding breaks every stored
        // checkpoint, so it must be seen.
        assert_eq!(
            hex(&fold(&GENESIS, &entry(1, "a", 0))),
            "b605b1fc45696fce69479dd88a167cc9ce96c152bc9270847069d5d3a89adca2"
        );
        assert_ne!(fold(&GENESIS, &entry(1, "a", 0)), fold(&GENESIS, &entry(1, "b", 0)));
        assert_ne!(fold(&GENESIS, &entry(1, "a", 0)), fold(&GENESIS, &entry(1, "a", 1)));
        assert_ne!(fold(&GENESIS, &entry(1, "a", 0)), fold(&GENESIS, &entry(2, "a", 0)));
    }

    #[test]
    fn keys_parse_from_hex() {
        let seed = "11".repeat(32);
        let k = parse_signing_key(&format!(" {seed}\n")).expect("parses");
        assert_eq!(k.to_bytes(), [0x11; 32]);
        let public = hex(k.verifying_key().as_bytes());
        assert_eq!(
            parse_verifying_key(&public).map(|p| p.to_bytes()),
            Ok(*k.verifying_key().as_bytes())
        );
        assert!(parse_signing_key("12").is_err());
        assert!(parse_signing_key(&"zz".repeat(32)).is_err());
    }
}
