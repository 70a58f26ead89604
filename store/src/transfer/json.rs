//! The check that an event's data can be written into its line as it is: one JSON value by
//! RFC 8259's grammar, read in one pass that builds nothing.

/// How deep arrays and objects may nest in data written as the `data` member as it is; deeper
/// data is written as `data_base64` (the check's stack is a bit per level).
const MAX_RAW_NESTING: u32 = 128;

/// Whether `data` can be written as the `data` member as it is: exactly one JSON value by
/// RFC 8259's grammar, in UTF-8 (a line of JSON must be: serde_json's `IgnoredAny`, which the
/// append's check uses, does not look inside strings, so data that passed it may not be), with
/// no whitespace around it and no line break in it (which would end the line), and not `null`
/// (which CloudEvents reads as no data). A check of the grammar in one pass that builds
/// nothing, so the line it goes into parses back (`Line`'s `data`) to the same bytes; data
/// it refuses goes as `data_base64`, which carries any bytes.
pub(super) fn raw_json(data: &[u8]) -> bool {
    data != b"null" && std::str::from_utf8(data).is_ok() && json_grammar(data)
}

/// Spaces and tabs: the JSON whitespace that may stand inside a line (a line break may not).
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The end of the JSON string that starts at `i`, if one does.
pub(super) fn json_string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        j += plain_run(b.get(j..)?);
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => match *b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let hex = b.get(j + 2..j + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    j += 6;
                }
                _ => return None,
            },
            c if c < 0x20 => return None,
            _ => j += 1,
        }
    }
}

/// How many bytes at the start of `b` a JSON string takes as they are: up to the first quote,
/// backslash or control character. Eight bytes at a time (most of a line is such bytes): the
/// lowest byte a mask flags is exact (a false flag can only follow a true one, above it).
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut n = 0;
    for chunk in b.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if special != 0 {
            return n + (special.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + b[n..].iter().take_while(|c| !matches!(**c, b'"' | b'\\' | 0..0x20)).count()
}

/// The end of the JSON number that starts at `i`, if one does.
fn json_number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| -> Option<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// An object's key at `i`, the colon after it and the blanks around: where its value starts.
fn json_key_end(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_blanks(b, json_string_end(b, i)?);
    (b.get(i) == Some(&b':')).then(|| skip_blanks(b, i + 1))
}

/// Whether `b` is exactly one JSON value from its first byte to its last, with spaces and
/// tabs only as whitespace, nested at most [`MAX_RAW_NESTING`] deep.
fn json_grammar(b: &[u8]) -> bool {
    json_value_end(b, 0, MAX_RAW_NESTING) == Some(b.len())
}

/// The end of the JSON value that starts at `start` (no whitespace before it), with spaces and
/// tabs only as whitespace inside it, nested at most `nesting` deep (at most
/// [`MAX_RAW_NESTING`]); `None` if no such value starts there.
pub(super) fn json_value_end(b: &[u8], start: usize, nesting: u32) -> Option<usize> {
    let nesting = nesting.min(MAX_RAW_NESTING);
    // Bit `d` of `objects`: whether level `d` of the open arrays and objects is an object.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = start;
    loop {
        // A value starts at `i`; `complete`: it was read whole (else a container was opened
        // and `i` is where its first value starts).
        let complete = match b.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                if depth == nesting {
                    return None;
                }
                let object = open == b'{';
                i = skip_blanks(b, i + 1);
                if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    i += 1;
                    true
                } else {
                    objects = if object { objects | (1 << depth) } else { objects & !(1 << depth) };
                    depth += 1;
                    if object {
                        i = json_key_end(b, i)?;
                    }
                    false
                }
            }
            Some(b'"') => {
                i = json_string_end(b, i)?;
                true
            }
            Some(b'-' | b'0'..=b'9') => {
                i = json_number_end(b, i)?;
                true
            }
            Some(_) => {
                let rest = &b[i..];
                let word =
                    [&b"true"[..], b"false", b"null"].into_iter().find(|w| rest.starts_with(w))?;
                i += word.len();
                true
            }
            None => return None,
        };
        if !complete {
            continue;
        }
        // A value ended at `i`: close what it ends, up to where the next value starts.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_blanks(b, i);
            let object = (objects >> (depth - 1)) & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i = skip_blanks(b, i + 1);
                    if object {
                        i = json_key_end(b, i)?;
                    }
                    break;
                }
                Some(b'}') if object => {
                    depth -= 1;
                    i += 1;
                }
                Some(b']') if !object => {
                    depth -= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::transfer::line::Line;

    /// Whether `data` parses back to the same bytes as the `data` member of a line.
    fn reads_back(data: &[u8]) -> bool {
        let mut line = b"{\"kind\":null,\"data\":".to_vec();
        line.extend_from_slice(data);
        line.push(b'}');
        serde_json::from_slice::<Line<'_>>(&line)
            .is_ok_and(|l| l.data.is_some_and(|d| d.get().as_bytes() == data))
    }

    #[test]
    fn data_goes_raw_only_when_its_line_reads_back() {
        let cases: &[(&[u8], bool)] = &[
            (b"{}", true),
            (b"[]", true),
            (b"0", true),
            (b"-0.5e+10", true),
            (b"12E-3", true),
            (b"true", true),
            (b"false", true),
            (b"\"a\\u00e9\\n\\\"\\/\"", true),
            ("\"\u{e9}\u{1f600}\"".as_bytes(), true),
            (br#"{"a":[1,2,{"b":null}],"c":"d","e":{}}"#, true),
            (b"{ \"a\" : 1 , \"b\" :\t[ ] }", true),
            (b"null", false),
            (b"", false),
            (b" {}", false),
            (b"{} ", false),
            (b"{\n}", false),
            (b"{\r}", false),
            (b"[\"a\nb\"]", false),
            (b"\"\xff\"", false),
            (b"\"\x01\"", false),
            (b"{\"a\"}", false),
            (b"[1,]", false),
            (b"{\"a\":1,}", false),
            (b"{\"a\":}", false),
            (b"{1:2}", false),
            (b"01", false),
            (b"1.", false),
            (b".5", false),
            (b"-", false),
            (b"1e", false),
            (b"\"\\x\"", false),
            (b"\"\\u12g4\"", false),
            (b"\"abc", false),
            (b"[1 2]", false),
            (b"{}{}", false),
            (b"tru", false),
            (b"truex", false),
            (b"[", false),
            (b"]", false),
            (b"[}", false),
            (b"{]", false),
        ];
        for (data, raw) in cases {
            let name = String::from_utf8_lossy(data);
            assert_eq!(raw_json(data), *raw, "{name}");
            if *raw {
                assert!(reads_back(data), "{name}");
            }
        }
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(raw_json(deep(128).as_bytes()));
        assert!(reads_back(deep(128).as_bytes()));
        assert!(!raw_json(deep(129).as_bytes()));
    }

    proptest::proptest! {
        /// On text with no line break, the check says "raw" exactly when serde_json reads the
        /// text as one value with nothing around it (what the append's check accepts), and
        /// whatever it passes reads back from a line.
        #[test]
        fn the_raw_check_agrees_with_serde_json(
            text in proptest::string::string_regex(
                "[\\[\\]{}\",:0-9a-z\\\\ \t.+\\-é]{0,24}"
            ).unwrap()
        ) {
            let data = text.as_bytes();
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
                && !data.starts_with(b" ") && !data.starts_with(b"\t")
                && !data.ends_with(b" ") && !data.ends_with(b"\t")
                && data != b"null";
            proptest::prop_assert_eq!(raw_json(data), serde);
            if serde {
                proptest::prop_assert!(reads_back(data));
            }
        }

        #[test]
        fn json_values_go_raw(value in json_value()) {
            let data = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(raw_json(&data), !value.is_null());
        }
    }

    proptest::proptest! {
        /// The run of plain bytes found eight at a time is the one found byte by byte.
        #[test]
        fn plain_runs_end_where_a_byte_by_byte_look_ends_them(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"\"\\\x00\x1f\x20\x21\x7f\x80\xff\xdc\x22".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..40,
            )
        ) {
            let plain = |c: &&u8| **c != b'"' && **c != b'\\' && **c >= 0x20;
            let naive = bytes.iter().take_while(plain).count();
            proptest::prop_assert_eq!(plain_run(&bytes), naive);
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
