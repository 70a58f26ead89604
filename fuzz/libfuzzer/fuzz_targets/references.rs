//! libFuzzer entry for the `references` target (fuzz/src/lib.rs says what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop_fuzz::references(data));
