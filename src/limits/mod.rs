//! Rate limits and budgets: reserve at admission, reconcile with the real usage at the end.
//!
//! A request is admitted against a **reservation** of its worst case (1 request, the prompt
//! estimate + `max_tokens` tokens, and their cost); when it ends the reservation is replaced
//! by what was actually used (reconcile), or by what was delivered when it was cancelled or
//! failed (refund of the rest). Because admission counts outstanding reservations, N
//! concurrent requests cannot all slip under a budget that only one of them fits: spend stays
//! within the budget whenever the actual use stays within the reservation.
//!
//! Counters are **fixed windows** (UTC minute, UTC day, UTC calendar month), one per
//! (rule, scope values, metric, window). Each holds `used` and `reserved`; a demand fits when
//! `used + reserved + amount <= limit` for every counter it touches, and then every counter is
//! charged at once (all or nothing). Keys expire one minute after their window ends, which
//! also bounds how long a reservation lost with a crashed replica can hold capacity.
//!
//! Pure planning lives here ([`plan`], [`windows`]); stores implement [`Limiter`]:
//! `memory` (one process) and `redis` (shared by replicas, atomic Lua scripts).
//!
//! Known limits: fixed windows admit up to twice a per-minute limit across a window edge
//! (the price of one atomic counter per window); `Retry-After` is the time to the window's
//! end, not to the moment capacity frees up.

pub mod memory;
pub mod redis;

use crate::glob::Glob;
use std::fmt;
use thiserror::Error;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Requests.
    Requests,
    /// Tokens (input + output).
    Tokens,
    /// Cost in micro-dollars.
    Cost,
}

impl Metric {
    /// Short label for keys, metrics and headers.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Tokens => "tokens",
            Metric::Cost => "cost",
        }
    }
}

/// A fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// UTC minute.
    Minute,
    /// UTC day.
    Day,
    /// UTC calendar month.
    Month,
}

impl Window {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// Which request attributes a rule keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Consumer name.
    Consumer,
    /// Team name.
    Team,
    /// Model (catalogue name, else the requested name).
    Model,
}

/// One limit of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What it counts.
    pub metric: Metric,
    /// Window.
    pub window: Window,
    /// Most allowed per window (micro-dollars for cost).
    pub max: u64,
}

/// A compiled limit rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name (in keys, metrics and errors).
    pub name: String,
    /// Separate counters per value of these (empty: one counter for everyone).
    pub per: Vec<Dimension>,
    /// Applies only to these consumers (globs); empty = all.
    pub consumers: Vec<Glob>,
    /// Applies only to these teams (globs); empty = all.
    pub teams: Vec<Glob>,
    /// Applies only to these models (globs); empty = all.
    pub models: Vec<Glob>,
    /// Its limits.
    pub limits: Vec<Limit>,
}

/// The request attributes rules look at.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    /// Consumer name (`anonymous` when auth is off).
    pub consumer: &'a str,
    /// Team name, if any.
    pub team: Option<&'a str>,
    /// Model.
    pub model: &'a str,
}

/// Worst-case amounts reserved at admission, or actual amounts at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Requests (1, or 0 for a request that never reached a provider).
    pub requests: u64,
    /// Tokens.
    pub tokens: u64,
    /// Micro-dollars.
    pub cost: u64,
}

impl Amounts {
    fn of(&self, m: Metric) -> u64 {
        match m {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
            Metric::Cost => self.cost,
        }
    }
}

/// One counter a demand touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Store key (without the store's prefix).
    pub key: String,
    /// Rule name.
    pub rule: String,
    /// What it counts.
    pub metric: Metric,
    /// Window.
    pub window: Window,
    /// Most allowed in the window.
    pub limit: u64,
    /// Amount to reserve.
    pub amount: u64,
    /// Seconds until the window ends.
    pub reset_secs: u64,
    /// Key time-to-live: window end + 60 s.
    pub ttl_secs: u64,
}

/// Every counter one request touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    /// Unique id of this reservation (makes settlements idempotent in shared stores).
    pub id: String,
    /// Counters.
    pub counters: Vec<Counter>,
}

impl Demand {
    /// Whether no rule applies.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Whether any counter needs the real token usage (tokens or cost).
    pub fn needs_usage(&self) -> bool {
        self.counters.iter().any(|c| c.metric != Metric::Requests)
    }

    /// Longest counter time-to-live (the reservation marker lives as long).
    pub fn max_ttl(&self) -> u64 {
        self.counters.iter().map(|c| c.ttl_secs).max().unwrap_or(60)
    }
}

/// Capacity held for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    /// The demand's id.
    pub id: String,
    /// (key, metric, reserved amount, ttl).
    pub held: Vec<(String, Metric, u64, u64)>,
    /// Admitted without the store (fail-open): nothing to reconcile.
    pub unbacked: bool,
}

impl Reservation {
    /// A reservation for a granted demand.
    pub fn of(d: &Demand) -> Self {
        Self {
            id: d.id.clone(),
            held: d
                .counters
                .iter()
                .map(|c| (c.key.clone(), c.metric, c.amount, c.ttl_secs))
                .collect(),
            unbacked: false,
        }
    }

    /// Longest time-to-live among the held counters.
    pub fn max_ttl(&self) -> u64 {
        self.held.iter().map(|h| h.3).max().unwrap_or(60)
    }

    /// `(key, reserved, actual, ttl)` rows replacing the reservation with `actual`.
    pub fn settlement(&self, actual: Amounts) -> Vec<(&str, u64, u64, u64)> {
        self.held
            .iter()
            .map(|(k, m, r, ttl)| (k.as_str(), *r, actual.of(*m), *ttl))
            .collect()
    }
}

/// Why a demand does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Rule name.
    pub rule: String,
    /// What ran out.
    pub metric: Metric,
    /// Window.
    pub window: Window,
    /// Limit.
    pub limit: u64,
    /// What is left now (limit - used - reserved, floored at 0).
    pub remaining: u64,
    /// What the request asked for.
    pub requested: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

impl Refusal {
    /// The refusal for counter `c` when `taken` (used + reserved) leaves too little room.
    pub fn of(c: &Counter, taken: u64) -> Refusal {
        Refusal {
            rule: c.rule.clone(),
            metric: c.metric,
            window: c.window,
            limit: c.limit,
            remaining: c.limit.saturating_sub(taken),
            requested: c.amount,
            reset_secs: c.reset_secs,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, limit, remaining, requested) = match self.metric {
            Metric::Requests => (
                "requests",
                self.limit.to_string(),
                self.remaining.to_string(),
                self.requested.to_string(),
            ),
            Metric::Tokens => (
                "tokens",
                self.limit.to_string(),
                self.remaining.to_string(),
                self.requested.to_string(),
            ),
            Metric::Cost => (
                "budget (USD)",
                format!("{:.6}", crate::pricing::usd(self.limit)),
                format!("{:.6}", crate::pricing::usd(self.remaining)),
                format!("{:.6}", crate::pricing::usd(self.requested)),
            ),
        };
        write!(
            f,
            "rate limit reached: {what} per {} of rule {:?}: limit {limit}, remaining {remaining}, this request needs up to {requested}; try again in {}s",
            self.window.label(),
            self.rule,
            self.reset_secs
        )
    }
}

/// The store's answer to a demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; settle the reservation at the end.
    Granted(Reservation),
    /// Does not fit.
    Refused(Refusal),
}

/// Store failures (the caller applies the configured fail mode).
#[derive(Debug, Error)]
pub enum LimitError {
    /// The store did not answer within the command timeout.
    #[error("limits store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The circuit breaker is open after repeated failures.
    #[error("limits store unavailable (circuit open)")]
    CircuitOpen,
    /// Not connected (yet).
    #[error("limits store not connected")]
    NotConnected,
    /// A Redis error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The store answered something the script never returns.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

/// Store health for `/ready` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// In-process store: always up.
    Local,
    /// Redis answering.
    Up,
    /// Redis not answering (or circuit open).
    Down,
}

impl Health {
    /// Label.
    pub fn label(self) -> &'static str {
        match self {
            Health::Local => "memory",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A limits store.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Store name for metrics: `memory` or `redis`.
    fn name(&self) -> &'static str;
    /// Checks every counter of `demand` and reserves all of them, or none.
    async fn reserve(&self, demand: &Demand, now: u64) -> Result<Admission, LimitError>;
    /// Replaces a reservation with the actual amounts (a refund is `actual` below it).
    /// Shared stores apply it at most once per reservation id, so it may be retried; and it
    /// cancels a reservation whose `reserve` call failed ambiguously (timed out).
    async fn settle(&self, reservation: &Reservation, actual: Amounts) -> Result<(), LimitError>;
    /// Current health.
    fn health(&self) -> Health;
    /// Sum of outstanding reservations over all keys matching `prefix` (tests, admin).
    async fn outstanding(&self, key_prefix: &str) -> Result<u64, LimitError>;
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `(window id, seconds until it ends)` for `now`.
pub fn windows(w: Window, now: u64) -> (String, u64) {
    match w {
        Window::Minute => (format!("m{}", now / 60), 60 - now % 60),
        Window::Day => (format!("d{}", now / 86_400), 86_400 - now % 86_400),
        Window::Month => {
            let (y, m) = year_month(now / 86_400);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm) * 86_400;
            (format!("M{y:04}{m:02}"), next.saturating_sub(now).max(1))
        }
    }
}

// Howard Hinnant's civil-from-days / days-from-civil (proleptic Gregorian, UTC).
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

fn days_from_civil(y: i64, m: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}

/// Makes a scope value safe as a key part (`:` separates parts).
fn key_part(v: &str) -> String {
    if !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return v.to_owned();
    }
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(v.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("h{hex}")
}

fn any_matches(globs: &[Glob], value: Option<&str>) -> bool {
    globs.is_empty() || value.is_some_and(|v| globs.iter().any(|g| g.matches(v)))
}

/// The counters `subject` touches under `rules`, reserving `worst` of each metric.
pub fn plan(rules: &[Rule], subject: &Subject<'_>, worst: Amounts, now: u64) -> Demand {
    let mut counters = Vec::new();
    for rule in rules {
        if !any_matches(&rule.consumers, Some(subject.consumer))
            || !any_matches(&rule.teams, subject.team)
            || !any_matches(&rule.models, Some(subject.model))
        {
            continue;
        }
        let mut scope = String::new();
        for d in &rule.per {
            let v = match d {
                Dimension::Consumer => format!("c={}", key_part(subject.consumer)),
                Dimension::Team => format!("t={}", key_part(subject.team.unwrap_or("-"))),
                Dimension::Model => format!("m={}", key_part(subject.model)),
            };
            scope.push(':');
            scope.push_str(&v);
        }
        for l in &rule.limits {
            let (wid, reset) = windows(l.window, now);
            counters.push(Counter {
                key: format!("{}{scope}:{}:{wid}", rule.name, l.metric.label()),
                rule: rule.name.clone(),
                metric: l.metric,
                window: l.window,
                limit: l.max,
                amount: worst.of(l.metric),
                reset_secs: reset,
                ttl_secs: reset + 60,
            });
        }
    }
    Demand {
        id: uuid::Uuid::new_v4().simple().to_string(),
        counters,
    }
}

/// `x-ratelimit-*` headers for a refusal (OpenAI's names for requests and tokens; cost
/// budgets use `x-ratelimit-*-budget-usd`) plus `retry-after`.
pub fn refusal_headers(r: &Refusal) -> Vec<(&'static str, String)> {
    let reset = format!("{}s", r.reset_secs);
    let mut out = vec![("retry-after", r.reset_secs.max(1).to_string())];
    match r.metric {
        Metric::Requests => out.extend([
            ("x-ratelimit-limit-requests", r.limit.to_string()),
            ("x-ratelimit-remaining-requests", r.remaining.to_string()),
            ("x-ratelimit-reset-requests", reset),
        ]),
        Metric::Tokens => out.extend([
            ("x-ratelimit-limit-tokens", r.limit.to_string()),
            ("x-ratelimit-remaining-tokens", r.remaining.to_string()),
            ("x-ratelimit-reset-tokens", reset),
        ]),
        Metric::Cost => out.extend([
            (
                "x-ratelimit-limit-budget-usd",
                format!("{:.6}", crate::pricing::usd(r.limit)),
            ),
            (
                "x-ratelimit-remaining-budget-usd",
                format!("{:.6}", crate::pricing::usd(r.remaining)),
            ),
            ("x-ratelimit-reset-budget", reset),
        ]),
    }
    out
}

#[cfg(test)]
mod tests;
