//! libFuzzer entry for the `http_request` target (fuzz/src/lib.rs says what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop_fuzz::http_request(data));
