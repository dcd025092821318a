#![no_main]
//! Fuzz target: `tollgate::fuzz::stream_masker` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::stream_masker(data));
