//! The versioned event codec: every persisted event has a stable type name and a schema
//! version, and old versions keep decoding through upcasters. Domain types are not the stored
//! format by accident: each event type's stored shape is pinned by a golden fixture.

/// Why stored event data could not be turned into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown event type {event_type:?}")]
    UnknownType { event_type: String },
    #[error("event type {event_type:?} has no schema version {version}")]
    UnknownVersion { event_type: String, version: u32 },
    #[error("event {event_type:?} v{version} does not decode: {source}")]
    Malformed {
        event_type: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("event does not encode: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Parses stored JSON bytes. The text is checked to be UTF-8 once, as a whole, with SIMD
/// (`simdutf8`), and then parsed as a `str`: serde_json's byte-slice reader checks every string
/// it reads on its own, which cost ~15% of a replay's decoding, and std's whole-text check
/// another ~9%. Invalid UTF-8 goes through that reader anyway, for its error (with the
/// position), so the errors are those of `serde_json::from_slice`.
pub fn from_json<'a, T: serde::Deserialize<'a>>(data: &'a [u8]) -> serde_json::Result<T> {
    match simdutf8::basic::from_utf8(data) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(data),
    }
}

/// How a domain event becomes stored bytes and back.
pub trait EventCodec: Sized {
    /// The persisted type name. Never renamed once written.
    fn event_type(&self) -> &'static str;
    /// The schema version this build writes for that type.
    fn schema_version(&self) -> u32;
    /// The JSON data as bytes.
    fn encode(&self) -> Result<Vec<u8>, CodecError>;
    /// Decodes any known version of a type, upcasting old versions to the current shape.
    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, CodecError>;
}
