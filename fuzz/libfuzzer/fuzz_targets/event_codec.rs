//! libFuzzer entry for the `event_codec` target (fuzz/src/lib.rs says what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pop_fuzz::event_codec(data));
