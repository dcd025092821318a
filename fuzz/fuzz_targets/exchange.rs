#![no_main]
//! Fuzz target: `tollgate::fuzz::exchange_bytes` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::exchange_bytes(data));
