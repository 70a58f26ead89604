//! The bounded fuzz pass that CI runs on stable Rust: every target gets each committed corpus
//! input (`corpus/<target>/`), then a fixed number of mutations of them (byte flips, inserted
//! grammar tokens, cut and repeated ranges, splices of two inputs), shrunk by proptest to a
//! small failing input when a property breaks. The coverage-guided runs (`libfuzzer/`) find
//! new inputs; committed to the corpus, they are replayed here for good.
//!
//! `POP_FUZZ_CASES` multiplies the mutation counts (default 1) for a longer local run.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Mutations per target and run (times `POP_FUZZ_CASES`): the pure targets take microseconds
/// per input, the HTTP one under a millisecond in process; the four together take a few
/// seconds of CI.
const CASES: &[(&str, u32)] = &[
    ("references", 20_000),
    ("agenda_json", 15_000),
    ("event_codec", 15_000),
    ("http_request", 7_500),
];

/// Tokens of the grammars the targets parse, inserted whole so mutations reach past the
/// first syntax check.
const TOKENS: &[&str] = &[
    "@<",
    ">",
    "::",
    "?",
    "/",
    "~1",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "1e309",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "\u{202e}",
    "\u{85}",
    "\n",
    "\"id\"",
    "\"operations\"",
    "\"name\"",
    "\"type\"",
    "\"payload\"",
    "\"params\"",
    "\"dependsOn\"",
    "\"customerId\"",
    "\"query\"",
    "\"variables\"",
    "{ me { name } }",
    "query",
    "mutation",
    "fragment f on Agenda { id }",
    "...f",
    "agendas(first: 500)",
    "@2",
    "@1",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, token: usize },
    Delete { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: u8 },
    Splice { at: usize, other: usize, from: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 1usize..32, 2u8..50).prop_map(|(at, len, times)| Mutation::Repeat {
            at,
            len,
            times
        }),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(at, other, from)| Mutation::Splice { at, other, from }),
    ]
}

fn apply(corpus: &[Vec<u8>], base: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut data = corpus[base % corpus.len()].clone();
    for m in mutations {
        let at = |i: usize| if data.is_empty() { 0 } else { i % (data.len() + 1) };
        match *m {
            Mutation::Flip { at: i, bit } if !data.is_empty() => {
                let i = i % data.len();
                data[i] ^= 1 << bit;
            }
            Mutation::Flip { .. } => {}
            Mutation::Insert { at: i, token } => {
                let i = at(i);
                data.splice(i..i, TOKENS[token].bytes());
            }
            Mutation::Delete { at: i, len } => {
                let i = at(i);
                let end = (i + len).min(data.len());
                data.drain(i..end);
            }
            Mutation::Repeat { at: i, len, times } => {
                let i = at(i);
                let end = (i + len).min(data.len());
                let piece = data[i..end].to_vec();
                for _ in 1..times {
                    data.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::Splice { at: i, other, from } => {
                let other = &corpus[other % corpus.len()];
                let from = if other.is_empty() { 0 } else { from % other.len() };
                let i = at(i);
                data.truncate(i);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is readable: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a corpus file is readable");
            (path, bytes)
        })
        .collect()
}

fn run(target: &str) {
    let (_, function) = pop_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let inputs = corpus(target);
    for (path, bytes) in &inputs {
        let outcome = std::panic::catch_unwind(|| function(bytes));
        assert!(outcome.is_ok(), "{target}: the corpus input {} breaks a property", path.display());
    }
    let times: u32 = std::env::var("POP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let cases = CASES.iter().find(|(name, _)| *name == target).map_or(1_000, |(_, n)| *n);
    let corpus: Vec<Vec<u8>> = inputs.into_iter().map(|(_, bytes)| bytes).collect();
    let mut runner = TestRunner::new(Config {
        cases: cases * times,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (any::<usize>(), prop::collection::vec(mutation(), 1..6));
    let result = runner.run(&strategy, |(base, mutations)| {
        let data = apply(&corpus, base, &mutations);
        std::panic::catch_unwind(|| function(&data)).map_err(|_| {
            TestCaseError::fail(format!(
                "input (add it to corpus/{target}/ once fixed): {:?}",
                String::from_utf8_lossy(&data)
            ))
        })
    });
    if let Err(e) = result {
        panic!("{target}: {e}");
    }
}

#[test]
fn references_hold_their_properties() {
    run("references");
}

#[test]
fn agenda_json_holds_its_properties() {
    run("agenda_json");
}

#[test]
fn event_codec_holds_its_properties() {
    run("event_codec");
}

#[test]
fn http_requests_hold_their_properties() {
    run("http_request");
}
