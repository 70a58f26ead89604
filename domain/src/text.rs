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

/// Cuts `text` like [`cut_middle`] so that it takes at most `max` bytes as the content of a JSON
/// string (its escapes counted: a control character takes six), which is what is stored,
/// held and answered (review-s49: 2,201 bytes of U+0001 kept 13 KB). Returns the bytes cut.
pub fn cut_middle_json(text: &mut String, max: usize) -> usize {
    // What serde_json writes for each character inside a string.
    let stored = |c: char| match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    };
    let all: usize = text.chars().map(stored).sum();
    if all <= max {
        return 0;
    }
    let note = |n: usize| format!("\n… [{n} bytes cut: pop keeps at most {max} bytes of it] …\n");
    // Measured with the longest count it may say.
    let room = max.saturating_sub(note(text.len()).chars().map(stored).sum());
    let mut budget = room * 3 / 4;
    let mut head = 0;
    for (at, c) in text.char_indices() {
        if stored(c) > budget {
            break;
        }
        budget -= stored(c);
        head = at + c.len_utf8();
    }
    let mut budget = room - room * 3 / 4;
    let mut tail = text.len();
    for (at, c) in text[head..].char_indices().rev() {
        if stored(c) > budget {
            break;
        }
        budget -= stored(c);
        tail = head + at;
    }
    let cut = tail - head;
    *text = format!("{}{}{}", &text[..head], note(cut), &text[tail..]);
    cut
}

/// Whether `kept` is `original`, or `original` cut by [`cut_middle`] (at any bound): its start,
/// the note of how many bytes were cut, and its end. How a resent diagnostic is known for one
/// already recorded whatever length it was cut to then (review-s49: an agenda that gained
/// operations cut shorter, and every resent diagnostic was recorded again).
pub fn is_cut_of(kept: &str, original: &str) -> bool {
    if kept == original {
        return true;
    }
    const OPEN: &str = "\n… [";
    const SAYS: &str = " bytes cut: pop keeps at most ";
    const CLOSE: &str = " bytes of it] …\n";
    kept.match_indices(OPEN).any(|(at, _)| {
        let head = &kept[..at];
        let rest = &kept[at + OPEN.len()..];
        let Some((count, rest)) = rest.split_once(SAYS) else { return false };
        let Some((bound, tail)) = rest.split_once(CLOSE) else { return false };
        let (Ok(count), true) = (
            count.parse::<usize>(),
            !bound.is_empty() && bound.bytes().all(|b| b.is_ascii_digit()),
        ) else {
            return false;
        };
        head.len() + count + tail.len() == original.len()
            && original.starts_with(head)
            && original.ends_with(tail)
    })
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

    /// Cut for JSON, control characters count as stored: within the bound once escaped, the
    /// start and end kept; [`is_cut_of`] knows the cut (at any bound) and nothing else.
    #[test]
    fn a_json_cut_counts_escapes_and_is_known_for_its_original() {
        let original = format!("HEAD{}TAIL", "\u{1}".repeat(5_000));
        for max in [120, 1_000, 4_000] {
            let mut text = original.clone();
            assert!(cut_middle_json(&mut text, max) > 0);
            let stored = crate::validate::json_bytes(text.as_str()) - 2;
            assert!(stored <= max, "{stored} > {max}");
            assert!(text.starts_with("HEAD") && text.ends_with("TAIL"), "{text:?}");
            assert!(is_cut_of(&text, &original));
            assert!(!is_cut_of(&text, &format!("{original}x")));
            assert!(!is_cut_of(&text, &original.replace("HEAD", "HEAP")));
        }
        let mut plain = "short".to_string();
        assert_eq!(cut_middle_json(&mut plain, 5), 0);
        assert!(is_cut_of("short", "short") && !is_cut_of("short", "shorter"));
    }
}
