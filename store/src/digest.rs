//! Tamper evidence: the digest of one event and the hash chain of a stream, computed by the
//! backend inside the append (the stream's appends are already serialised, so chaining adds
//! no contention) and recomputed by verification.
//!
//! - `data_hash = SHA-256(data)`: the payload enters the digest only through its own hash, so
//!   a payload can later be erased (keeping `data_hash`) and the digest still recomputes.
//! - `digest = SHA-256("pop-event-v1" ‖ stream ‖ version ‖ type ‖ schema version ‖ commit
//!   time ‖ metadata ‖ data_hash)`, every variable-length part prefixed by its length (u64,
//!   big-endian), numbers big-endian, the commit time in microseconds since the epoch (what
//!   the stores keep), so no two different events share an encoding.
//! - `h_v = SHA-256("pop-chain-v1" ‖ h_{v-1} ‖ digest_v)`, with `h_{-1}` 32 zero bytes: the
//!   chain head of a stream commits to every event of it, in order.
//!
//! SHA-256 from the RustCrypto `sha2` crate: already in the tree (the PostgreSQL client's
//! SCRAM authentication uses it), audited, maintained, with the x86 SHA extensions used when
//! the CPU has them. A chain alone does not show a stream deleted whole or a log cut after
//! the last verified head: that needs a commitment over the whole log, kept apart from the
//! rows an intruder can rewrite.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The chain value before a stream's first event.
pub const GENESIS: Hash = [0; 32];

/// SHA-256 of an event's data.
pub fn data_hash(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The parts of an event its digest covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at_micros: i64,
    pub metadata: &'a [u8],
    pub data_hash: &'a Hash,
}

/// The digest of one event.
pub fn event_digest(e: &DigestInput<'_>) -> Hash {
    event_digest_of_bytes(e.stream.as_bytes(), e.event_type.as_bytes(), e)
}

/// [`event_digest`] with the stream and type as the bytes of their UTF-8 (`e`'s own are not
/// read): for a reader that has them as bytes, already checked, so they are not checked again.
pub(crate) fn event_digest_of_bytes(stream: &[u8], event_type: &[u8], e: &DigestInput<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pop-event-v1");
    part(&mut h, stream);
    h.update(e.version.to_be_bytes());
    part(&mut h, event_type);
    h.update(e.schema_version.to_be_bytes());
    h.update(e.recorded_at_micros.to_be_bytes());
    part(&mut h, e.metadata);
    h.update(e.data_hash);
    h.finalize().into()
}

/// The chain value after an event whose digest is `digest`, following `previous`.
pub fn chain(previous: &Hash, digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pop-chain-v1");
    h.update(previous);
    h.update(digest);
    h.finalize().into()
}

/// The chain head of a stream recomputed from its events as read (in version order, from
/// version 0): what the store keeps as the stream's head hash. The data reaper records it for
/// every stream it deletes, so verification can hold the tombstone to it.
pub fn stream_head(events: &[crate::RecordedEvent]) -> Hash {
    events.iter().fold(GENESIS, |head, e| {
        let hash = data_hash(&e.data);
        chain(
            &head,
            &event_digest(&DigestInput {
                stream: &e.stream,
                version: e.version,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                recorded_at_micros: e.recorded_at.timestamp_micros(),
                metadata: &e.metadata,
                data_hash: &hash,
            }),
        )
    })
}

/// Lower-case hex, for reports and checkpoints (verification writes one per stream and
/// checkpoint, so without a `format!` per byte).
pub fn hex(hash: &Hash) -> String {
    hex_bytes(hash)
}

/// [`hex`] of any bytes (a signature, a key).
pub fn hex_bytes(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The bytes of hex text (either case); `None` when it is not whole hex bytes.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(data_hash: &'a Hash, metadata: &'a [u8]) -> DigestInput<'a> {
        DigestInput {
            stream: "agenda-acme/a",
            version: 3,
            event_type: "AgendaQueued",
            schema_version: 1,
            recorded_at_micros: 1_800_000_000_000_000,
            metadata,
            data_hash,
        }
    }

    #[test]
    fn known_vector_and_every_part_counts() {
        let d = data_hash(b"{}");
        let base = event_digest(&input(&d, b"{\"actor\":\"a\"}"));
        // Pinned: a change of the encoding breaks every stored chain, so it must be seen.
        assert_eq!(
            hex(&data_hash(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut variants = vec![
            event_digest(&DigestInput {
                stream: "agenda-acme/b",
                ..input(&d, b"{\"actor\":\"a\"}")
            }),
            event_digest(&DigestInput { version: 4, ..input(&d, b"{\"actor\":\"a\"}") }),
            event_digest(&DigestInput {
                event_type: "AgendaClaimed",
                ..input(&d, b"{\"actor\":\"a\"}")
            }),
            event_digest(&DigestInput { schema_version: 2, ..input(&d, b"{\"actor\":\"a\"}") }),
            event_digest(&DigestInput { recorded_at_micros: 1, ..input(&d, b"{\"actor\":\"a\"}") }),
            event_digest(&input(&d, b"{\"actor\":\"b\"}")),
            event_digest(&input(&data_hash(b"[]"), b"{\"actor\":\"a\"}")),
        ];
        variants.push(base);
        variants.sort();
        variants.dedup();
        assert_eq!(variants.len(), 8, "each part changes the digest");
        // Length prefixes: moving bytes between stream and type is another digest.
        let a = event_digest(&DigestInput { stream: "ab", event_type: "c", ..input(&d, b"") });
        let b = event_digest(&DigestInput { stream: "a", event_type: "bc", ..input(&d, b"") });
        assert_ne!(a, b);
        // The chain depends on order.
        let (x, y) = (data_hash(b"x"), data_hash(b"y"));
        assert_ne!(chain(&chain(&GENESIS, &x), &y), chain(&chain(&GENESIS, &y), &x));
    }
}
