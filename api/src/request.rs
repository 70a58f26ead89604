//! What every HTTP transport reads from a request the same way: its correlation id
//! ([`CID_HEADER`]), its trace context ([`TRACEPARENT_HEADER`]), its principal (the bearer
//! token), and its body within a size limit.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use uuid::Uuid;

use crate::auth::bearer;
use crate::config::MAX_CID_LENGTH;
use crate::error::AppError;
use crate::state::AppState;

/// The header a client may send its correlation id in (else one is generated); the response
/// carries the cid back in it.
pub const CID_HEADER: &str = "x-correlation-id";

/// POP's correlation id header: read like [`CID_HEADER`] (POP's clients send it) and answered
/// beside it.
pub const POP_CID_HEADER: &str = "x-pop-cid";

/// The request's cid: the client's header when usable, else a fresh UUID v7.
pub fn request_cid(headers: &HeaderMap) -> String {
    [POP_CID_HEADER, CID_HEADER]
        .iter()
        .find_map(|name| {
            headers.get(*name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|c| {
                !c.is_empty() && c.len() <= MAX_CID_LENGTH && !c.chars().any(char::is_control)
            })
        })
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::now_v7().to_string())
}

/// Answers the request's cid in both correlation headers.
pub fn set_cid_headers(headers: &mut axum::http::HeaderMap, cid: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(cid) {
        headers.insert(POP_CID_HEADER, v.clone());
        headers.insert(CID_HEADER, v);
    }
}

/// A 401 says how to authenticate (RFC 9110 §11.6.1, RFC 6750 §3): `WWW-Authenticate: Bearer`.
pub fn challenge(response: &mut axum::response::Response) {
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"pop\""),
        );
    }
}

/// The W3C trace context header: its value is stored in the metadata of the events the
/// request appends (see [`pop_app::Caller::with_traceparent`]). When the server exports
/// traces, it has already replaced the client's value with that of its own request span.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The request's `traceparent` header, as sent (the caller checks its form).
pub fn request_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok())
}

/// The W3C header of vendors' trace data that goes with `traceparent`: stored beside it
/// (see [`pop_app::Caller::with_tracestate`]); the server's request span carries it on.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The request's `tracestate` header, as sent (the caller checks its form and size). Several
/// `tracestate` lines are one list, as the W3C recommendation says; pop keeps the first line
/// only, which a well-behaved client sends alone.
pub fn request_tracestate(headers: &HeaderMap) -> Option<&str> {
    headers.get(TRACESTATE_HEADER).and_then(|v| v.to_str().ok())
}

pub fn header_principal(state: &AppState, headers: &HeaderMap) -> Option<crate::auth::Principal> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    state.authenticate(bearer(value)?)
}

/// Why a request body could not be read: the HTTP status to answer and the error.
#[derive(Debug)]
pub(crate) struct BodyError {
    /// 413 for a body over the limit, 400 for one that broke off or failed to arrive.
    pub status: StatusCode,
    pub error: AppError,
}

/// A request body read whole, still counted among its principal's bodies arriving at once
/// until it is dropped: keep it until the body is parsed ([`ArrivedBody::parse`]).
pub(crate) struct ArrivedBody {
    pub bytes: axum::body::Bytes,
    /// Shared with a parse on a blocking thread, which keeps the body counted until it ends.
    arriving: std::sync::Arc<crate::state::PrincipalConnection>,
}

/// A body at least this long is parsed on a blocking thread, one such body at a time for the
/// server after one at a time for its principal ([`ArrivedBody::parse`]): parsing does not yield, and an 8 MiB body of small values
/// (`[1,{},1,{},…]`) took over a second of a debug build's async worker, so a flood of them
/// held every tenant's requests for 23 s (reprobe57 H2). Ordinary requests are a few KiB.
pub const LARGE_BODY_BYTES: usize = 256 << 10;

impl ArrivedBody {
    /// The body parsed as JSON into `T`: on the request's task when small, else on a blocking
    /// thread with its principal's turn and then the server's (`state`'s), the body still
    /// counted as arriving meanwhile. The turns and the count go with the parse: a request
    /// given up (its client gone, its deadline) leaves the parse running, which keeps them till
    /// it ends (review57 H1: given back at once, parses piled up past both bounds).
    pub(crate) async fn parse<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        state: &crate::AppState,
    ) -> Result<T, serde_json::Error> {
        if self.bytes.len() < LARGE_BODY_BYTES {
            return serde_json::from_slice(&self.bytes);
        }
        let turns = state.large_body_turn(self.arriving.principal()).await;
        let arriving = std::sync::Arc::clone(&self.arriving);
        let bytes = self.bytes.clone();
        let parse = move || {
            let _held = (turns, arriving);
            serde_json::from_slice(&bytes)
        };
        match tokio::task::spawn_blocking(parse).await {
            Ok(parsed) => parsed,
            // The parse panicked, or the runtime is stopping: not parsed.
            Err(e) => Err(serde::de::Error::custom(format!("the body was not parsed: {e}"))),
        }
    }
}

/// Reads the body of a request of `principal` ([`read_body`]), one of at most
/// [`crate::config::MAX_UPLOADS_PER_PRINCIPAL`] of its bodies arriving at once (and being
/// parsed: the guard travels with the body).
pub(crate) async fn read_body_of(
    state: &crate::AppState,
    principal: &crate::auth::Principal,
    headers: &HeaderMap,
    body: Body,
) -> Result<ArrivedBody, BodyError> {
    let Some(arriving) = state.upload_of(&principal.name, crate::config::MAX_UPLOADS_PER_PRINCIPAL)
    else {
        return Err(BodyError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: AppError::new(
                pop_app::error::Code::Busy,
                format!(
                    "this token already has {} request bodies arriving, \
                     as many as it may at once; send the next when one has arrived",
                    crate::config::MAX_UPLOADS_PER_PRINCIPAL
                ),
            ),
        });
    };
    let config = state.config();
    let bytes = read_body(headers, body, config.max_body_bytes, config.body_read_timeout).await?;
    // Whose pace, asked only of a body large enough to be paced (not built per request).
    if bytes.len() >= crate::config::PACED_BODY_BYTES {
        state
            .pace_upload(&crate::answers::owner(principal), bytes.len())
            .await
            .map_err(|error| BodyError { status: StatusCode::TOO_MANY_REQUESTS, error })?;
    }
    Ok(ArrivedBody { bytes, arriving: std::sync::Arc::new(arriving) })
}

/// A body as JSON is read: decompressed as its `Content-Encoding` says (gzip and deflate;
/// another encoding is refused with 415 naming it: popclient21, a gzip body was answered "not
/// JSON: expected value at line 1 column 1"), at most `limit` bytes decompressed; without
/// the UTF-8 byte-order mark a Windows editor writes (RFC 8259 lets a parser ignore it, and
/// Jackson does). A body that then does not parse is explained by [`not_text`].
fn decoded(
    headers: &HeaderMap,
    bytes: Vec<u8>,
    limit: usize,
) -> Result<axum::body::Bytes, BodyError> {
    use std::io::Read as _;
    let refused = |status: StatusCode, message: String| BodyError {
        status,
        error: AppError::bad_request(message),
    };
    // Every line of the header, as one list (hostile31: a second `Content-Encoding` line was
    // not read); `identity` entries say nothing.
    let listed: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty() && e != "identity")
                .collect::<Vec<_>>()
        })
        .collect();
    let encoding = match listed.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => Some(listed.join(", ")),
    };
    let bytes = match encoding.as_deref() {
        None => bytes,
        Some(e @ ("gzip" | "x-gzip" | "deflate")) => {
            let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(limit));
            let read = if e == "deflate" {
                flate2::read::ZlibDecoder::new(&bytes[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
            } else {
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
            };
            if let Err(why) = read {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    format!("the request body is not valid {e} (Content-Encoding: {e}): {why}"),
                ));
            }
            if out.len() > limit {
                return Err(refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than the limit of {limit} bytes once decompressed"
                    ),
                ));
            }
            out
        }
        Some(other) => {
            return Err(refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Encoding {other:?} is not supported: send the body uncompressed, \
                     or as gzip or deflate"
                ),
            ));
        }
    };
    let bytes = axum::body::Bytes::from(bytes);
    Ok(if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) { bytes.slice(3..) } else { bytes })
}

/// Why a body that did not parse as JSON is not text JSON can be: not UTF-8, or UTF-16 (a
/// byte-order mark, or NULs among the first bytes: JSON text starts with ASCII), naming a
/// charset its `Content-Type` declares. Looked for only once the parse failed (the parser
/// checks UTF-8 as it reads; a second pass over every body did the work twice), so the error
/// points at the bytes, not at "line 1 column 1" (popclient21, review-s42).
pub(crate) fn not_text(headers: &HeaderMap, bytes: &[u8]) -> Option<String> {
    let utf16 = bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0xFE, 0xFF])
        || bytes.iter().take(4).any(|b| *b == 0);
    let broken = if utf16 {
        "it looks like UTF-16".to_string()
    } else {
        format!("at byte {}", std::str::from_utf8(bytes).err()?.valid_up_to())
    };
    let charset = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            t.split(';').skip(1).find_map(|p| {
                let (name, value) = p.split_once('=')?;
                name.trim().eq_ignore_ascii_case("charset").then_some(value.trim())
            })
        })
        .map(|c| c.trim_matches('"'))
        .filter(|c| !c.eq_ignore_ascii_case("utf-8") && !c.eq_ignore_ascii_case("utf8"));
    let declared = charset
        .map(|c| format!("; the Content-Type declares charset={c}, which pop does not read"))
        .unwrap_or_default();
    Some(format!("the request body is not UTF-8 ({broken}): JSON is sent as UTF-8{declared}"))
}

/// The first integer of a JSON body (already parsed) that 64 bits do not hold, with its path
/// (`variables.a.payload.assetId`, `operations[0].payload.n`) and its text: the parser reads such
/// a number as a float, so it would be stored rounded (popclient22: a 30-digit asset id came back
/// `1.2345678901234568e+29`; POP's Jackson kept it as a `BigInteger`). Bodies without a run of
/// 19 digits are not walked.
pub(crate) fn wide_integer(bytes: &[u8]) -> Option<(String, String)> {
    let long_run = bytes.split(|b| !b.is_ascii_digit()).any(|run| run.len() >= 19);
    if !long_run {
        return None;
    }
    match walk_body(bytes, true, usize::MAX) {
        Some((path, Found::Wide(text))) => Some((path, text)),
        _ => None,
    }
}

/// serde_json's nesting limit: a body nested this deep fails to parse, whatever it is.
const PARSER_DEPTH: usize = 128;

/// Why a body that failed to parse did: nested past what the parser reads (popclient25: a
/// payload 123 levels deep was "not JSON" with no field, where 65 levels was the payload rule's
/// VALIDATION naming it), VALIDATION naming where; else `None` (it is not JSON).
pub(crate) fn too_deep(bytes: &[u8]) -> Option<AppError> {
    let (path, _) = walk_body(bytes, false, PARSER_DEPTH)?;
    let max = pop_domain::validate::MAX_PAYLOAD_DEPTH;
    Some(AppError::invalid(
        &path,
        format!(
            "the request body nests {PARSER_DEPTH} levels or more here, past what pop reads (a \
             payload or a param value may nest at most {max} levels)"
        ),
    ))
}

/// What [`walk_body`] stopped at.
enum Found {
    /// An integer 64 bits do not hold, as written.
    Wide(String),
    /// An object or array opened deeper than the depth asked for.
    Deep,
}

/// Walks a JSON body's bytes (valid or not) to the first integer 64 bits do not hold (if
/// `numbers`) or the first object or array opened at depth `max_depth` (the outermost is at
/// depth 1), with its path. A path deeper than a
/// few fields names its first ones and then `…`.
fn walk_body(bytes: &[u8], numbers: bool, max_depth: usize) -> Option<(String, Found)> {
    enum Frame {
        Object { key: String, expecting_key: bool },
        Array { index: usize },
    }
    const NAMED_FRAMES: usize = 8;
    let path = |stack: &[Frame]| {
        let mut path = String::new();
        for frame in stack.iter().take(NAMED_FRAMES) {
            match frame {
                Frame::Object { key, .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Array { index } => path.push_str(&format!("[{index}]")),
            }
        }
        if stack.len() > NAMED_FRAMES {
            path.push('…');
        }
        path
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, expecting_key: expecting @ true }) =
                    stack.last_mut()
                {
                    *key = String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned();
                    *expecting = false;
                }
            }
            open @ (b'{' | b'[') => {
                if stack.len() + 1 >= max_depth {
                    return Some((path(&stack), Found::Deep));
                }
                stack.push(match open {
                    b'{' => Frame::Object { key: String::new(), expecting_key: true },
                    _ => Frame::Array { index: 0 },
                });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expecting_key, .. }) => *expecting_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'-' | b'0'..=b'9' => {
                let (last, wide) = number_at(bytes, i);
                if let Some(text) = wide.filter(|_| numbers) {
                    return Some((path(&stack), Found::Wide(text)));
                }
                i = last;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The first integer literal of a GraphQL document that 64 bits do not hold (outside its
/// strings and names): the document's own values are read as floats past that too
/// (review-s43b: `payload: {n: 123456789012345678901234567890}` written in the query came back
/// rounded).
pub(crate) fn wide_integer_in_query(query: &str) -> Option<String> {
    let bytes = query.as_bytes();
    if !bytes.split(|b| !b.is_ascii_digit()).any(|run| run.len() >= 19) {
        return None;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A block string ("""…""") or a plain one, with escapes.
                if bytes[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 3;
                    continue;
                }
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let (last, wide) = number_at(bytes, i);
                if wide.is_some() {
                    return wide;
                }
                i = last;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The number token starting at `start` (JSON's or GraphQL's): the index of its last byte,
/// and its text when it is an integer that 64 bits do not hold.
fn number_at(bytes: &[u8], start: usize) -> (usize, Option<String>) {
    let mut last = start;
    while last + 1 < bytes.len()
        && matches!(bytes[last + 1], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
    {
        last += 1;
    }
    let text = std::str::from_utf8(&bytes[start..=last]).unwrap_or_default();
    let wide = text.len() > 1
        && !text.contains(['.', 'e', 'E'])
        && text.parse::<i64>().is_err()
        && text.parse::<u64>().is_err();
    (last, wide.then(|| text.to_string()))
}

/// [`wide_integer`] as the request's error (VALIDATION naming the field).
pub fn refuse_wide_integer(bytes: &[u8]) -> Result<(), AppError> {
    match wide_integer(bytes) {
        Some((path, text)) => Err(wide_integer_error(&path, &text)),
        None => Ok(()),
    }
}

/// The refusal of integer `text` at `field`, which 64 bits do not hold: in a body or written
/// in a GraphQL document alike.
pub(crate) fn wide_integer_error(field: &str, text: &str) -> AppError {
    AppError::invalid(
        field,
        format!(
            "{text} is an integer beyond 64 bits, which pop would keep only rounded: send it as \
             a string"
        ),
    )
}

/// Reads a request body of at most `limit` bytes within `within`. A larger one (declared or
/// not) is BAD_REQUEST with status 413; a body that fails while it is read (the client
/// aborted, the connection broke, a malformed chunked encoding) is BAD_REQUEST with status
/// 400; one that has not arrived whole within `within`, status 408.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    within: std::time::Duration,
) -> Result<axum::body::Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || BodyError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error: AppError::bad_request(format!(
            "the request body is larger than the limit of {limit} bytes"
        )),
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Chunk by chunk, so that running past the limit (a body without a declared length) and
    // a broken upload are told apart. Memory grows with what arrived, not with what was
    // declared (a declared 2 MiB took 2 MiB at once, however little came).
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(
        declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0).min(limit).min(64 << 10),
    );
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BodyError {
                status: StatusCode::BAD_REQUEST,
                error: AppError::bad_request(format!("the request body could not be read: {e}")),
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(())) => decoded(headers, bytes, limit),
        Ok(Err(e)) => Err(e),
        // TIMEOUT: nothing was done, the same request may be sent again.
        Err(_) => Err(BodyError {
            status: StatusCode::REQUEST_TIMEOUT,
            error: AppError::timeout(format!(
                "the request body did not arrive within {:?} ({} of {} bytes came): send it \
                 whole at once",
                within,
                bytes.len(),
                declared.map_or_else(|| "an undeclared number of".to_string(), |n| n.to_string())
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::wide_integer;

    #[test]
    fn an_integer_beyond_64_bits_is_found_with_its_path() {
        let body = br#"{"query":"q","variables":{"a":{"n":[1,"x\"y",{"id":123456789012345678901234567890}]}}}"#;
        assert_eq!(
            wide_integer(body),
            Some(("variables.a.n[2].id".into(), "123456789012345678901234567890".into()))
        );
        assert_eq!(
            super::wide_integer_in_query(
                "mutation { submitAgenda(agenda: {payload: {n: 123456789012345678901234567890}}) { position } }"
            ),
            Some("123456789012345678901234567890".into())
        );
        for fine in [
            "{ a(x: \"123456789012345678901234567890\") }",
            "{ a(x: \"\"\"1234567890123456789012 \\\"\"\" still a string\"\"\") }",
            "{ field12345678901234567890123 # 12345678901234567890123\n }",
            "{ a(x: 9223372036854775807, y: 1.5e300) }",
        ] {
            assert_eq!(super::wide_integer_in_query(fine), None, "{fine}");
        }
        let body = br#"{"params":{"k":-9223372036854775809}}"#;
        assert_eq!(wide_integer(body), Some(("params.k".into(), "-9223372036854775809".into())));
        // What 64 bits hold, floats, and digits inside strings are fine.
        for fine in [
            &br#"{"a":18446744073709551615,"b":-9223372036854775808}"#[..],
            br#"{"a":1.2345678901234567890123e5,"b":12345678901234567890123.5}"#,
            br#"{"a":"123456789012345678901234567890"}"#,
            br#"{"a":[1,2,3]}"#,
        ] {
            assert_eq!(wide_integer(fine), None, "{}", String::from_utf8_lossy(fine));
        }
    }

    /// A body nested past the parser's limit is refused naming where (popclient25).
    #[test]
    fn a_body_nested_past_the_parser_is_refused_naming_where() {
        let deep = |levels: usize| {
            let payload = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            format!(r#"{{"title":"t","operations":[{{"name":"a","payload":{payload}}}]}}"#)
        };
        let body = deep(200);
        assert!(serde_json::from_slice::<serde_json::Value>(body.as_bytes()).is_err());
        let error = super::too_deep(body.as_bytes()).expect("too deep");
        assert_eq!(error.problems[0].field, "operations[0].payload[0][0][0][0][0]…");
        assert!(error.message.contains("nests 128 levels or more"), "{}", error.message);
        assert!(error.message.contains("at most 64 levels"), "{}", error.message);
        // Within the parser's limit (the payload rule answers it), or broken otherwise: none;
        // at its edge, exactly where the parser stops (review-s45: 128 levels slipped through).
        assert!(super::too_deep(deep(100).as_bytes()).is_none());
        for levels in 120..=135 {
            let body = deep(levels);
            let parsed = serde_json::from_slice::<serde_json::Value>(body.as_bytes()).is_ok();
            assert_eq!(super::too_deep(body.as_bytes()).is_none(), parsed, "{levels} levels");
        }
        assert!(super::too_deep(br#"{"a":[1,2"#).is_none());
        // A wide integer before the depth does not hide it.
        let wide = body.replacen("\"t\"", "123456789012345678901234567890", 1);
        assert!(super::too_deep(wide.as_bytes()).is_some());
    }
}
