#![no_main]
//! Fuzz target: `tollgate::fuzz::request_view` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::request_view(data));
