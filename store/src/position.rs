//! The global position of an event in the log: opaque to callers, ordered, with a stable text
//! form for APIs and checkpoints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where an event sits in the global log. Callers compare, store and print positions but never
/// compute with them: a SQLite log numbers events 1, 2, 3…, a PostgreSQL log has a
/// (transaction id, sequence within the transaction) pair with gaps, a KurrentDB log a
/// (commit, prepare) pair. Ordering is lexicographic: by the first part, then the second.
///
/// Text form (stable; used in checkpoints and APIs): `"<n>"` when commit and prepare are the
/// same number (every sequence backend), otherwise `"<commit>/<prepare>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    commit: u64,
    prepare: u64,
}

impl Position {
    /// Before the first event of any log: reading after it reads everything.
    pub const START: Position = Position { commit: 0, prepare: 0 };

    /// For backends whose log is a single sequence (SQLite). `0` is
    /// [`Position::START`]; events start at 1.
    pub const fn from_sequence(sequence: u64) -> Position {
        Position { commit: sequence, prepare: sequence }
    }

    /// For backends with a two-part log position (PostgreSQL's transaction/sequence pair,
    /// KurrentDB's commit/prepare pair).
    pub const fn new(commit: u64, prepare: u64) -> Position {
        Position { commit, prepare }
    }

    /// The sequence number, for the backend that made this position with
    /// [`Position::from_sequence`]; `None` for a two-part position.
    pub const fn sequence(self) -> Option<u64> {
        if self.commit == self.prepare { Some(self.commit) } else { None }
    }

    /// The commit part, for backends with two-part positions.
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The prepare part, for backends with two-part positions.
    pub const fn prepare(self) -> u64 {
        self.prepare
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.commit == self.prepare {
            write!(f, "{}", self.commit)
        } else {
            write!(f, "{}/{}", self.commit, self.prepare)
        }
    }
}

/// Why a text is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a log position (expected \"<n>\" or \"<commit>/<prepare>\")")]
pub struct PositionParseError {
    pub text: String,
}

impl FromStr for Position {
    type Err = PositionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PositionParseError { text: s.to_owned() };
        // Only plain ASCII digits: `u64::from_str` would also take a leading `+`, which would
        // give one position two spellings.
        let number = |part: &str| -> Result<u64, PositionParseError> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        match s.split_once('/') {
            None => Ok(Position::from_sequence(number(s)?)),
            Some((c, p)) => Ok(Position::new(number(c)?, number(p)?)),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_is_before_every_event() {
        assert!(Position::START < Position::from_sequence(1));
        assert!(Position::START < Position::new(0, 1));
        assert_eq!(Position::START.to_string(), "0");
    }

    #[test]
    fn text_forms() {
        assert_eq!(Position::from_sequence(42).to_string(), "42");
        assert_eq!(Position::new(7, 3).to_string(), "7/3");
        assert_eq!("42".parse::<Position>(), Ok(Position::from_sequence(42)));
        assert_eq!("7/3".parse::<Position>(), Ok(Position::new(7, 3)));
        for bad in ["", "+1", "-1", "1/", "/1", "1/2/3", "x", " 1", "18446744073709551616"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serialises_as_its_text() {
        let p = Position::new(9, 4);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"9/4\"");
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
    }

    proptest! {
        #[test]
        fn two_part_order_is_lexicographic(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            prop_assert_eq!(Position::new(a.0, a.1).cmp(&Position::new(b.0, b.1)), a.cmp(&b));
        }

        #[test]
        fn text_round_trips(commit in any::<u64>(), prepare in any::<u64>()) {
            let p = Position::new(commit, prepare);
            prop_assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        }

        #[test]
        fn order_follows_sequence(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(
                Position::from_sequence(a).cmp(&Position::from_sequence(b)),
                a.cmp(&b)
            );
        }
    }
}
