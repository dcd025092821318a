#![no_main]
//! Fuzz target: `tollgate::fuzz::sse_decoders` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::sse_decoders(data));
