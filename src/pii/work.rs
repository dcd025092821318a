//! Work accounting for detection and stream masking, so tests can assert linear cost by
//! counting instead of timing.
//!
//! The counter is per thread and always on (one add per regex call or scan, negligible next
//! to the search itself). What it counts: every byte of haystack handed to the regex engine
//! (each search gets a bounded window, so the engine cannot examine more than that), every
//! byte the stream masker's own cut computation examines, and every candidate it visits.
//! The regex crate is linear in its input, so this is an upper bound on the real work up to
//! a constant.

use std::cell::Cell;

thread_local! {
    static WORK: Cell<u64> = const { Cell::new(0) };
}

/// Records `n` units of work on this thread.
pub fn add(n: usize) {
    WORK.with(|w| w.set(w.get().wrapping_add(n as u64)));
}

/// Units of work recorded on this thread so far (monotonic; take differences).
pub fn total() -> u64 {
    WORK.with(Cell::get)
}
