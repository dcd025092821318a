#![no_main]
//! Fuzz target: `tollgate::fuzz::request_walker` (invariants listed there).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::fuzz::request_walker(data));
