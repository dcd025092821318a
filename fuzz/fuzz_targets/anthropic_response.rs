#![no_main]
//! Fuzz target: `tollgate::fuzz::anthropic_response` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::anthropic_response(data));
