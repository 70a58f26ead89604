//! Case-insensitive text comparison, the way DOMAIN.md compares operation names, customer ids,
//! mapper values and insight titles. One definition so every rule folds case the same way.
//! And a client's text as one field of a log line, read only one way.

use std::fmt;

/// The form two texts are compared in: Unicode lower case (so `É` and `é` match, as they did
/// with POP's Java `equalsIgnoreCase`).
pub fn fold_case(text: &str) -> String {
    text.to_lowercase()
}

/// Whether two texts are equal ignoring case. ASCII is checked first because almost every id and
/// name is ASCII and that check does not allocate.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (!(a.is_ascii() && b.is_ascii()) && fold_case(a) == fold_case(b))
}

/// The closest of `candidates` to `word`, ignoring case, when `word` is a likely misspelling
/// of it: at most two edits apart (one for words of up to four characters), and not `word`
/// itself. Ties go to the earliest candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let folded = fold_case(word);
    let limit = if folded.chars().count() <= 4 { 1 } else { 2 };
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&folded, &fold_case(candidate));
        if distance == 0 || distance > limit {
            continue;
        }
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A client's text inside a log line's message: as it is when it can be read only one way,
/// else quoted and escaped as Rust writes a string (`"a b=\"c\""`, `"\u{2028}"`). Bare text
/// with a space, `=` or `"` let a tenant append fields of its choosing (hostile27: a cid `t
/// agenda=globex/gf1 by=admin` on acme's cancel line), and a break or terminal escape whole
/// lines. A log line's *fields* holding a client's text are recorded as strings (`agenda =
/// &*key`), which the text format always quotes and escapes and the JSON format writes as JSON
/// strings (review-s41: a quoted field came out doubly quoted in JSON).
pub fn log_field(text: &str) -> LogField<'_> {
    LogField(text)
}

/// See [`log_field`].
#[derive(Debug, Clone, Copy)]
pub struct LogField<'a>(&'a str);

impl fmt::Display for LogField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |c: char| {
            (c.is_ascii_graphic() && !matches!(c, '"' | '=' | '\\'))
                || (!c.is_ascii() && c.is_alphanumeric())
        };
        if !self.0.is_empty() && self.0.chars().all(plain) {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Cuts `text` to at most `max` bytes, keeping its start (three quarters) and its end (the
/// rest: a Java stack trace's "Caused by" is at the end) around a note of how much was cut,
/// on characters' boundaries. Returns the bytes cut (0: it fitted). A `max` smaller than the
/// note (~80 bytes) leaves the note alone, longer than `max`.
pub fn cut_middle(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let note = |n: usize| format!("\n… [{n} bytes cut: pop keeps at most {max} bytes of it] …\n");
    // The note is written with the count it will say; its length is bounded by the longest
    // count, so measure with that.
    let room = max.saturating_sub(note(text.len()).len());
    let mut head = room * 3 / 4;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (room - head);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    let cut = tail - head;
    let kept = format!("{}{}{}", &text[..head], note(cut), &text[tail..]);
    *text = kept;
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text over the bound keeps its start and end around a note of what was cut, within
    /// the bound, on characters' boundaries; one within it is left alone.
    #[test]
    fn cut_middle_keeps_both_ends_within_the_bound() {
        let mut fits = "short".to_string();
        assert_eq!(cut_middle(&mut fits, 5), 0);
        assert_eq!(fits, "short");
        let long: String = format!("HEAD{}TAIL", "é".repeat(10_000));
        for max in [200, 1_000, 4_097] {
            let mut text = long.clone();
            let cut = cut_middle(&mut text, max);
            assert!(text.len() <= max, "{} > {max}", text.len());
            assert!(text.starts_with("HEAD") && text.ends_with("TAIL"), "{text}");
            assert!(text.contains(&format!("[{cut} bytes cut: pop keeps at most {max} bytes")));
            let (head, rest) = text.split_once("\n… [").unwrap();
            let tail = rest.split_once("] …\n").unwrap().1;
            assert!(long.starts_with(head) && long.ends_with(tail));
            assert_eq!(head.len() + cut + tail.len(), long.len(), "what is kept and cut add up");
        }
    }

    #[test]
    fn closest_suggests_near_misses_only() {
        let types = ["ffmpeg", "log", "sample"];
        assert_eq!(closest("ffmeg", types), Some("ffmpeg"));
        assert_eq!(closest("FFMPG", types), Some("ffmpeg"));
        assert_eq!(closest("lg", types), Some("log"));
        assert_eq!(closest("transcode", types), None);
        assert_eq!(closest("ffmpeg", types), None, "an exact match is no suggestion");
        assert_eq!(closest("xyz", types), None);
    }

    #[test]
    fn folds_ascii_and_unicode() {
        assert!(eq_ignore_case("Acme", "aCME"));
        assert!(eq_ignore_case("Éclair", "éCLAIR"));
        assert!(!eq_ignore_case("acme", "acme2"));
    }

    #[test]
    fn a_log_field_reads_one_way() {
        let shown = |t: &str| log_field(t).to_string();
        assert_eq!(shown("globex/gf1"), "globex/gf1");
        assert_eq!(
            shown("0190c1a2-7e4b-7d11-9c3b-5d2f2f6a1b0c"),
            "0190c1a2-7e4b-7d11-9c3b-5d2f2f6a1b0c"
        );
        assert_eq!(shown("café"), "café");
        assert_eq!(shown("t agenda=globex/gf1 by=admin"), r#""t agenda=globex/gf1 by=admin""#);
        assert_eq!(shown(r#"a"b"#), r#""a\"b""#);
        assert_eq!(shown("x\u{2028}y"), r#""x\u{2028}y""#);
        assert_eq!(shown("x\u{1b}[2K"), r#""x\u{1b}[2K""#);
        assert_eq!(shown(""), r#""""#);
    }
}
