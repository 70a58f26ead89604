//! Fuzz targets for pop's parsers of untrusted input. Each target takes arbitrary bytes and
//! panics only when a property of pop is broken — never merely because the input is bad:
//!
//! - [`references`]: the reference grammar (`@<name::pointer?fallback>`) finds references that
//!   are exact, ordered slices of the text, and resolving a text never panics;
//! - [`agenda_json`]: a submitted agenda's JSON goes through the same reader and validation as a
//!   submit; every problem names its field, and a valid agenda reads back unchanged from its
//!   own JSON;
//! - [`event_codec`]: stored event bytes of any type and schema version decode (with upcasting)
//!   or fail cleanly, and whatever decodes re-encodes to bytes that decode to the same event;
//! - [`http_request`] (feature `http`): a request of any method, route, token and body through
//!   the real router over a SQLite store answers below 500, and every GraphQL error carries a
//!   machine-readable code and the request's cid.
//!
//! Two runners share these functions: `tests/bounded.rs` (stable Rust, in CI: the committed
//! corpus under `corpus/<target>/` plus a bounded number of mutations of it) and the
//! coverage-guided libFuzzer binaries under `libfuzzer/` (`cargo +nightly fuzz run`, which grow
//! the corpus; README "Fuzzing"). Inputs with a header line (`AgendaSubmitted@1`,
//! `POST /graphql admin`) keep the corpus readable.

use pop_domain::codec::EventCodec;
use pop_domain::config::{AgendaTemplateEvent, CustomerEvent, InsightEvent, ResourcePoolEvent};
use pop_domain::{Agenda, references, validate, wire};
use serde_json::Value;

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use http::http_request;

/// A fuzz target: any bytes in, a panic only when a property breaks.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus folders and the libFuzzer binaries are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("references", references),
    ("agenda_json", agenda_json),
    ("event_codec", event_codec),
    #[cfg(feature = "http")]
    ("http_request", http_request),
];

/// The reference grammar over any text.
pub fn references(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut last_end = 0;
    let mut known = Vec::new();
    for found in references::references_in(&text) {
        assert!(found.start >= last_end, "references overlap or go backwards in {text:?}");
        assert_eq!(&text[found.start..found.end], found.text, "a reference is not its own slice");
        assert!(found.text.starts_with("@<") && found.text.ends_with('>'), "{:?}", found.text);
        assert!(!found.name.is_empty(), "a reference without a name in {text:?}");
        if let Some(pointer) = found.normalized_pointer() {
            assert_eq!(references::normalize_pointer(&pointer), Some(pointer.clone()));
        }
        last_end = found.end;
        known.push(found.name.to_string());
    }
    // Every other name is known to a lookup: half the names resolve to a nested value, so
    // pointers, fallbacks and string splicing all run.
    let lookup = |name: &str| {
        (known.iter().position(|k| k == name)? % 2 == 0)
            .then(|| serde_json::json!({"streams": [1, "two", {"x": null}], "s": "text"}))
    };
    let resolved = references::resolve_str(&text, &lookup);
    if known.is_empty() {
        assert_eq!(resolved.ok(), Some(Value::String(text.to_string())), "text without references");
    }
}

/// A submitted agenda's JSON, read and validated as a submit does.
pub fn agenda_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let agenda: Agenda = match wire::from_json("agenda", value) {
        Ok(agenda) => agenda,
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused agenda without a problem");
            for p in &problems.errors {
                assert!(p.field.starts_with("agenda"), "a problem outside the agenda: {p:?}");
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
            return;
        }
    };
    match validate::validate_agenda(&agenda) {
        Err(problems) => {
            assert!(!problems.is_empty(), "an invalid agenda without a problem");
            for p in &problems.errors {
                assert!(!p.field.is_empty(), "a problem that names no field: {p:?}");
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
        }
        Ok(()) => {
            let json = serde_json::to_value(&agenda).expect("a valid agenda serialises");
            let again: Agenda = wire::from_json("agenda", json).expect("its own JSON reads back");
            assert_eq!(again, agenda, "a valid agenda changed through its own JSON");
            assert!(validate::validate_agenda(&again).is_ok(), "its own JSON is invalid");
        }
    }
}

/// Stored event bytes: a header line `Type@version`, then the event's data.
pub fn event_codec(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == b'\n') else { return };
    let Ok(header) = std::str::from_utf8(&data[..split]) else { return };
    let Some((event_type, version)) = header.split_once('@') else { return };
    let Ok(version) = version.parse::<u32>() else { return };
    let bytes = &data[split + 1..];
    // Every codec is asked: each refuses the types it does not know.
    round_trip::<pop_domain::agenda::AgendaEvent>(event_type, version, bytes);
    round_trip::<pop_domain::reap::ReapEvent>(event_type, version, bytes);
    round_trip::<CustomerEvent>(event_type, version, bytes);
    round_trip::<ResourcePoolEvent>(event_type, version, bytes);
    round_trip::<InsightEvent>(event_type, version, bytes);
    round_trip::<AgendaTemplateEvent>(event_type, version, bytes);
}

fn round_trip<E: EventCodec + PartialEq + std::fmt::Debug>(
    event_type: &str,
    version: u32,
    bytes: &[u8],
) {
    let Ok(event) = E::decode(event_type, version, bytes) else { return };
    assert_eq!(event.event_type(), event_type, "decoded as another type");
    let encoded = event.encode().expect("a decoded event encodes");
    let again = E::decode(event.event_type(), event.schema_version(), &encoded)
        .expect("what the codec wrote decodes at the version it writes");
    assert_eq!(again, event, "an event changed through its own bytes");
    assert_eq!(again.encode().expect("encodes again"), encoded, "encoding is not stable");
}
