//! The dictionary settled agendas are compressed with: LZ4 finds the text it repeats (field
//! names, states, messages) in it, so the first operation of an agenda costs back-references
//! instead of literals. An agenda's JSON is ~3.4 KiB of which LZ4 alone keeps ~930 B; with
//! this dictionary ~550–650 B (see BENCHMARKS.md, "Memory per agenda, second pass").
//!
//! It is the canonical JSON of an agenda state that uses every field, with pop's own
//! vocabulary (processing states, messages) and empty ids: the schema, never any customer's
//! data. Snapshots store finished agendas compressed as they are in memory, and record the
//! dictionary's fingerprint ([`dictionary_fingerprint`]): a snapshot written with another
//! dictionary is unusable (rebuilt from the log), so the dictionary may still change from one
//! build to the next. A unit test checks it still decodes into an `AgendaState` and encodes
//! back to the same text, so that it follows the schema.

/// See the module docs. Order matters a little: LZ4 prefers the latest occurrence, so the
/// parts every agenda repeats most (operation progress) come last.
pub(super) const DICTIONARY: &[u8] = concat!(
    r#"{"agenda":{"id":"","cid":"","customerId":"","title":"","addedTime":1764000000000,"#,
    r#""updatedTime":1764000000000,"operations":[{"name":"","type":"","id":"","payload":{},"#,
    r#""params":{}},{"name":"","type":"","payload":null,"params":{"generatedOperationParent":""}}],"#,
    r#""params":{"doNotRun":true,"externalId":"","maximumAttempts":3},"linkId":"","jobId":"","#,
    r#""progressId":"","agendaInsight":{"resourcePoolId":"","insightId":""}},"#,
    r#""progress":{"id":"","cid":"","customerId":"","title":"","agendaId":"","linkId":"","#,
    r#""externalId":"","processingState":"EXECUTING","processingStateMessage":"Running Operations","#,
    r#""percentComplete":50.0,"operationProgress":[{"id":"","cid":"","customerId":"","title":"","#,
    r#""agendaProgressId":"","operation":"","processingState":"COMPLETE","#,
    r#""processingStateMessage":"failed","percentComplete":0.0,"diagnosticEvents":[{"message":"","#,
    r#""statusCode":"NOT_RETRYABLE","time":1764000000000,"stackTrace":"","payload":{}}],"#,
    r#""attemptCount":1,"attemptTime":1764000000000,"startedTime":1764000000000,"#,
    r#""completedTime":1764000000000,"params":{},"addedTime":1764000000000,"#,
    r#""updatedTime":1764000000000},{"id":"","customerId":"","agendaProgressId":"","operation":"","#,
    r#""processingState":"WAITING","processingStateMessage":"pending","diagnosticEvents":[],"#,
    r#""attemptCount":0,"params":{},"addedTime":1764000000000,"updatedTime":1764000000000},"#,
    r#"{"id":"","customerId":"","agendaProgressId":"","operation":"","processingState":"COMPLETE","#,
    r#""processingStateMessage":"cancelled","percentComplete":0.0,"diagnosticEvents":[],"#,
    r#""attemptCount":0,"params":{},"addedTime":1764000000000,"updatedTime":1764000000000}],"#,
    r#""diagnosticEvents":[{"message":"AgendaProgress timed out.","time":1764000000000}],"#,
    r#""attemptsCompleted":1,"maximumAttempts":3,"startedTime":1764000000000,"#,
    r#""completedTime":1764000000000,"params":{},"agendaInsight":{"resourcePoolId":"","#,
    r#""insightId":""},"addedTime":1764000000000,"updatedTime":1764000000000},"#,
    r#""lease":{"holder":"","leaseId":"","expires":1764000000000},"enteredTime":1764000000000,"#,
    r#""progressIdOf":"","reaped":true,"#,
    r#""progress":{"processingState":"COMPLETE","processingStateMessage":"succeeded","#,
    r#""percentComplete":100.0,"operationProgress":[{"id":"","customerId":"","agendaProgressId":"","#,
    r#""operation":"","processingState":"COMPLETE","processingStateMessage":"succeeded","#,
    r#""percentComplete":100.0,"diagnosticEvents":[],"attemptCount":1,"attemptTime":1764000000000,"#,
    r#""startedTime":1764000000000,"completedTime":1764000000000,"resultPayload":{},"params":{},"#,
    r#""addedTime":1764000000000,"updatedTime":1764000000000}]}}"#,
)
.as_bytes();

/// FNV-1a 64 of [`DICTIONARY`]: what a snapshot records so that settled bytes compressed
/// against another dictionary are never read with this one.
pub(crate) fn dictionary_fingerprint() -> u64 {
    let mut hash = crate::fnv::Fnv1a::default();
    hash.update(DICTIONARY);
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::DICTIONARY;
    use pop_domain::agenda::AgendaState;

    #[test]
    fn the_dictionary_is_the_schema_of_a_state() {
        // The last object repeats the commonest part (a succeeded operation) after the
        // whole state; everything before it is one state in canonical form.
        let text = std::str::from_utf8(DICTIONARY).expect("text");
        let (state, _) =
            text.split_at(text.find(r#","progress":{"processingState":"COMPLETE""#).expect("tail"));
        let whole = format!("{state}}}");
        let decoded: AgendaState = serde_json::from_str(&whole).expect("decodes");
        assert_eq!(serde_json::to_string(&decoded).expect("encodes"), whole);
        // The tail is a state's progress in canonical form, too.
        let tail = &text[state.len() + 1..text.len() - 1];
        let decoded: AgendaState = serde_json::from_str(&format!("{{{tail}}}")).expect("decodes");
        let again = serde_json::to_string(&decoded).expect("encodes");
        assert!(
            again.contains(&tail[tail.find("\"operationProgress\"").expect("ops")..tail.len() - 1]),
            "{again}"
        );
    }
}
