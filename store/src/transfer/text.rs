//! How an export writes and reads its small values by hand (they are on every line): times
//! as RFC 3339 to the microsecond, decimal numbers and positions, base64, hashes in hex.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::Position;
use crate::digest::Hash;

pub(super) fn time_text(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`time_text`] appended to `out`: the digits written by hand for the years 0 to 9999 (every
/// commit time), the same text as chrono's (tested), else chrono's.
pub(super) fn push_time(out: &mut Vec<u8>, micros: i64) {
    use chrono::{Datelike, Timelike};
    let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        out.extend_from_slice(time_text(micros).as_bytes());
        return;
    }
    // Each part's digits, then what follows it.
    for (value, width, then) in [
        (year as u32, 4, b'-'),
        (t.month(), 2, b'-'),
        (t.day(), 2, b'T'),
        (t.hour(), 2, b':'),
        (t.minute(), 2, b':'),
        (t.second(), 2, b'.'),
        (t.nanosecond() / 1000, 6, b'Z'),
    ] {
        for i in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(i) % 10) as u8);
        }
        out.push(then);
    }
}

/// The decimal digits of `n` appended to `out` (as `Display` writes them).
pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `position` appended to `out` as its `Display` writes it.
pub(super) fn push_position(out: &mut Vec<u8>, position: Position) {
    match position.sequence() {
        Some(n) => push_u64(out, n),
        None => {
            push_u64(out, position.commit());
            out.push(b'/');
            push_u64(out, position.prepare());
        }
    }
}

/// The standard base64 of `bytes` appended to `out` (data that is not one line of JSON:
/// rare).
pub(super) fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
}

/// The hex of `hash` appended to `out` (as [`crate::digest::hex`] writes it).
pub(super) fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

pub(super) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `&str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

pub(super) use crate::digest::{hex_bytes, parse_hex};

/// 64 hex digits into a hash, without an allocation (it runs twice per imported event).
pub(super) fn parse_hash(text: &str) -> Option<Hash> {
    /// Each byte's value as a hex digit; 0xff: not one.
    const DIGITS: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    let bytes: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    // Any byte that is not a digit sets the high bit of `bad`: one test at the end.
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (DIGITS[usize::from(pair[0])], DIGITS[usize::from(pair[1])]);
        bad |= high | low;
        *byte = high << 4 | low;
    }
    (bad & 0x80 == 0).then_some(out)
}

/// An RFC 3339 time in microseconds since the epoch, as chrono's `parse_from_rfc3339` reads it
/// (tested): the form the export writes (`2026-12-04T03:14:15.926535Z`) read digit by digit,
/// any other form by chrono.
pub(super) fn time_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?
            .iter()
            .try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let written = b.len() == 27
        && [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (26, b'Z')]
            .iter()
            .all(|(i, c)| b[*i] == *c);
    let fast = || -> Option<i64> {
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(number(0, 4)?).ok()?,
            number(5, 7)?,
            number(8, 10)?,
        )?;
        let (second, micro) = (number(17, 19)?, number(20, 26)?);
        // A leap second (60) is chrono's to read.
        if second > 59 {
            return None;
        }
        Some(
            date.and_hms_micro_opt(number(11, 13)?, number(14, 16)?, second, micro)?
                .and_utc()
                .timestamp_micros(),
        )
    };
    match written.then(fast).flatten() {
        Some(micros) => Some(micros),
        None => DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::digest::{GENESIS, hex};

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        for micros in [
            0,
            1,
            999_999,
            1_000_000,
            1_800_000_000_123_456,
            -1,
            // 0001-01-01, 0000-01-01 and the microsecond before it, 9999-12-31T23:59:59.999999
            // and the microsecond after it.
            -62_135_596_800_000_000,
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            push_time(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), time_text(micros), "{micros}");
        }
    }

    #[test]
    fn times_are_read_as_chrono_reads_them() {
        let chrono = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp_micros());
        let mut texts: Vec<String> = [
            0,
            1,
            999_999,
            1_800_000_000_123_456,
            -1,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            951_782_400_000_000, // 2000-02-29
        ]
        .into_iter()
        .map(time_text)
        .collect();
        texts.extend(
            [
                "2026-12-04T03:14:15.926535Z",
                "2026-12-04t03:14:15.926535z",
                "2026-12-04T03:14:15.926535+01:00",
                "2026-12-04T03:14:15Z",
                "2026-12-04 03:14:15.926535Z",
                "2026-12-31T23:59:60.000000Z",
                "2025-02-29T00:00:00.000000Z",
                "2026-13-01T00:00:00.000000Z",
                "2026-00-01T00:00:00.000000Z",
                "2026-12-32T00:00:00.000000Z",
                "2026-12-04T24:00:00.000000Z",
                "2026-12-04T23:60:00.000000Z",
                "2026-12-04T23:00:00.00000aZ",
                "+026-12-04T23:00:00.000000Z",
                "2026-12-04T23:00:00.000000",
                "",
            ]
            .map(str::to_owned),
        );
        for t in &texts {
            assert_eq!(time_micros(t), chrono(t), "{t}");
        }
    }

    #[test]
    fn hashes_are_read_back_from_their_hex() {
        let hash: Hash = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert_eq!(parse_hash(&hex(&hash).to_uppercase()), Some(hash));
        assert_eq!(parse_hash(&hex(&GENESIS)), Some(GENESIS));
        for bad in ["", "0", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64)] {
            assert_eq!(parse_hash(bad), None, "{bad}");
        }
        for (i, c) in [(0, 'x'), (63, ':'), (31, '/'), (10, 'G'), (5, ' '), (7, '\u{e9}')] {
            let mut text: Vec<char> = hex(&hash).chars().collect();
            text[i] = c;
            let text: String = text.into_iter().collect();
            assert_eq!(parse_hash(&text), None, "{text}");
        }
    }

    #[test]
    fn hashes_are_written_as_hex_writes_them() {
        let hash: Hash = std::array::from_fn(|i| (i * 37) as u8);
        let mut out = b"x".to_vec();
        push_hex(&mut out, &hash);
        assert_eq!(out, format!("x{}", hex(&hash)).into_bytes());
    }
}
