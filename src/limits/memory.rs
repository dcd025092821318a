//! In-process limits store (the default; one replica).
//!
//! One mutex over a map of counters: admission is a handful of map lookups under the lock,
//! so it is never the bottleneck next to Envoy's own work (see `make bench-micro`).
//! Expired counters are dropped lazily, and swept when the map grows past a threshold.
//! State survives config reloads (the store is built once at start); it is lost on restart.

use super::{Admission, Amounts, Demand, Health, LimitError, Limiter, Refusal, Reservation};
use parking_lot::Mutex;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: u64,
    reserved: u64,
    expires_at: u64,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// Reservations granted and not yet settled (id → expiry), so a settlement applies at
    /// most once and one for a reservation never granted (a cancelled reserve) releases
    /// nothing that belongs to others.
    live: HashMap<String, u64>,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    state: Mutex<State>,
}

const SWEEP_ABOVE: usize = 10_000;

impl MemoryLimiter {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves synchronously (the async trait method wraps this).
    pub fn reserve_now(&self, demand: &Demand, now: u64) -> Admission {
        let mut state = self.state.lock();
        let State { slots, live } = &mut *state;
        if slots.len() > SWEEP_ABOVE {
            slots.retain(|_, s| s.expires_at > now);
        }
        if live.len() > SWEEP_ABOVE {
            live.retain(|_, exp| *exp > now);
        }
        if demand.is_empty() {
            return Admission::Granted(Reservation::of(demand));
        }
        for c in &demand.counters {
            let s = slots
                .get(&c.key)
                .filter(|s| s.expires_at > now)
                .copied()
                .unwrap_or_default();
            let taken = s.used.saturating_add(s.reserved);
            if taken.saturating_add(c.amount) > c.limit {
                return Admission::Refused(Refusal::of(c, taken));
            }
        }
        for c in &demand.counters {
            let s = slots.entry(c.key.clone()).or_default();
            if s.expires_at <= now {
                *s = Slot {
                    expires_at: now.saturating_add(c.ttl_secs),
                    ..Slot::default()
                };
            }
            s.reserved = s.reserved.saturating_add(c.amount);
        }
        live.insert(demand.id.clone(), now.saturating_add(demand.max_ttl()));
        Admission::Granted(Reservation::of(demand))
    }

    /// Settles synchronously.
    pub fn settle_now(&self, reservation: &Reservation, actual: Amounts, now: u64) {
        if reservation.unbacked {
            return;
        }
        let mut state = self.state.lock();
        let State { slots, live } = &mut *state;
        if live.remove(&reservation.id).is_none() {
            // Settled already, or never granted (a reserve cancelled before it ran).
            return;
        }
        for (key, reserved, used, _ttl) in reservation.settlement(actual) {
            // A window that ended meanwhile is gone: nothing to release or charge.
            let Some(s) = slots.get_mut(key).filter(|s| s.expires_at > now) else {
                continue;
            };
            s.reserved = s.reserved.saturating_sub(reserved);
            s.used = s.used.saturating_add(used);
        }
        slots.retain(|_, s| s.expires_at > now);
    }

    /// `(used, reserved)` of a key (tests).
    pub fn peek(&self, key: &str) -> (u64, u64) {
        self.state
            .lock()
            .slots
            .get(key)
            .map(|s| (s.used, s.reserved))
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn reserve(&self, demand: &Demand, now: u64) -> Result<Admission, LimitError> {
        Ok(self.reserve_now(demand, now))
    }

    async fn settle(&self, reservation: &Reservation, actual: Amounts) -> Result<(), LimitError> {
        self.settle_now(reservation, actual, super::unix_now());
        Ok(())
    }

    fn health(&self) -> Health {
        Health::Local
    }

    async fn outstanding(&self, key_prefix: &str) -> Result<u64, LimitError> {
        Ok(self
            .state
            .lock()
            .slots
            .iter()
            .filter(|(k, _)| k.starts_with(key_prefix))
            .map(|(_, s)| s.reserved)
            .sum())
    }
}
