//! Backend cooldown: a backend that just failed is skipped for a while.
//!
//! tollgate's own, per-replica view, complementary to Envoy's outlier detection (which
//! ejects individual hosts per Envoy instance after consecutive errors). Failures are
//! upstream answers tollgate sees — 5xx and 429 at the router-level filter (plain routes)
//! or at the upstream-level filter (each fallback-chain attempt). Where a choice exists,
//! a cooling backend is avoided: weighted-split variants are left out, and a chain whose
//! first step is cooling sends the request straight to its first step that is not (as a
//! plain backend: no further fallback for that request, since Envoy's chain cluster always
//! starts at priority 0 — and an upstream-level ImmediateResponse is not retried by Envoy,
//! measured). A single-backend route still goes to its backend (no alternative to prefer).
//!
//! The clock is an argument, so the arithmetic is testable without sleeping. Memory is one
//! entry per backend name that ever failed (bounded by the configured backends).

use parking_lot::RwLock;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shared failure times, per backend name.
#[derive(Debug, Default)]
pub struct Cooldown {
    failed: RwLock<HashMap<String, Instant>>,
}

impl Cooldown {
    /// Records a failure of `backend` at `now`.
    pub fn fail(&self, backend: &str, now: Instant) {
        self.failed.write().insert(backend.to_owned(), now);
    }

    /// Whether `backend` failed less than `period` before `now` (`period` zero: never).
    pub fn cooling(&self, backend: &str, now: Instant, period: Duration) -> bool {
        if period.is_zero() {
            return false;
        }
        self.failed
            .read()
            .get(backend)
            .is_some_and(|t| now.saturating_duration_since(*t) < period)
    }

    /// Whether an upstream status counts as a failure of the backend.
    pub fn is_failure(status: u16) -> bool {
        status == 429 || (500..=599).contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_backend_cools_for_the_period_only() {
        let c = Cooldown::default();
        let t0 = Instant::now();
        let p = Duration::from_secs(30);
        assert!(!c.cooling("alpha", t0, p));
        c.fail("alpha", t0);
        assert!(c.cooling("alpha", t0 + Duration::from_secs(29), p));
        assert!(!c.cooling("alpha", t0 + Duration::from_secs(30), p));
        assert!(!c.cooling("beta", t0, p));
        assert!(!c.cooling("alpha", t0, Duration::ZERO));
    }

    #[test]
    fn failure_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(Cooldown::is_failure(s), "{s}");
        }
        for s in [200, 400, 401, 404, 413] {
            assert!(!Cooldown::is_failure(s), "{s}");
        }
    }
}
