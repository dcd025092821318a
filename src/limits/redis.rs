//! Redis limits store: counters shared by every replica.
//!
//! - **Atomic**: one Lua script reserves every counter of a request or none
//!   (`lua/reserve.lua`); another replaces the reservation with the actual use
//!   (`lua/settle.lua`). Scripts run by SHA (EVALSHA, loaded on first use).
//! - **Exactly once**: each reservation has a marker key (`res:<id>`): a settlement applies
//!   once however often it is retried, and settling a reservation whose reserve timed out
//!   cancels it — if the reserve reaches Redis late, it finds the marker and does nothing. So
//!   a command that timed out on our side but ran on Redis never leaves counters drifting.
//! - **Never hangs a request**: every command runs under `command_timeout`; the connection
//!   manager (redis-rs) reconnects in the background with capped backoff.
//! - **Circuit breaker**: after `breaker_failures` consecutive failures the store is not
//!   called for `breaker_cooldown`; then one probe is let through. A background ping every
//!   500 ms closes the breaker as soon as Redis answers again, so shared counting resumes
//!   within about a second of Redis coming back.
//! - When Redis is down the caller applies the configured fail mode (open: admit and count
//!   `tollgate_limits_fail_open_total`; closed: refuse with 503).
//!
//! Known limits: all keys of one request go to one script, so Redis Cluster needs the keys
//! in one slot (not done: use a standalone Redis or Sentinel). Settlements Redis could not
//! take are retried for an hour (stages/limits.rs); past that, or when a replica dies
//! holding them, a reservation is held until its counter's window expires.

use super::{Admission, Amounts, Demand, Health, LimitError, Limiter, Refusal, Reservation};
use crate::secret::Secret;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RESERVE_LUA: &str = include_str!("lua/reserve.lua");
const SETTLE_LUA: &str = include_str!("lua/settle.lua");

/// Largest amount sent to the scripts: Lua numbers are doubles (exact to 2^53) and Redis
/// hash increments are signed 64-bit, so a larger amount is clamped here rather than
/// rounded, refused by `HINCRBY`, or wrapped. A limit that high is unlimited in practice, and
/// an amount that high is refused by any real limit either way. Reservation and settlement
/// clamp alike, so what is released is what was reserved.
pub const MAX_WIRE_AMOUNT: u64 = 1 << 53;

fn wire(v: u64) -> u64 {
    v.min(MAX_WIRE_AMOUNT)
}

/// Connection and resilience settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port/db` (a secret: may hold a password).
    pub url: Secret,
    /// Longest wait for one command; no request waits longer on Redis.
    pub command_timeout: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit skips Redis before probing.
    pub breaker_cooldown: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
}

/// Consecutive-failure circuit breaker with a single half-open probe.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit stays open.
    open_until: AtomicU64,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a call may go to Redis now.
    fn allow(&self) -> bool {
        if self.failures.load(Ordering::Acquire) < self.threshold {
            return true;
        }
        let now = self.now_ms();
        let until = self.open_until.load(Ordering::Acquire);
        // Half-open: the one caller that moves the deadline probes; the others wait it out.
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.cooldown.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Release);
    }

    fn failure(&self) {
        let f = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if f >= self.threshold {
            self.open_until.store(
                self.now_ms() + self.cooldown.as_millis() as u64,
                Ordering::Release,
            );
        }
    }

    fn is_open(&self) -> bool {
        self.failures.load(Ordering::Acquire) >= self.threshold
    }
}

/// The Redis store.
pub struct RedisLimiter {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    settings: RedisSettings,
    breaker: Breaker,
    reserve: redis::Script,
    settle: redis::Script,
    up: AtomicBool,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.settings.key_prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisLimiter {
    /// A store for `settings`; not connected until [`RedisLimiter::run`] connects it.
    pub fn new(settings: RedisSettings) -> Result<Arc<Self>, LimitError> {
        let client = redis::Client::open(settings.url.expose())?;
        Ok(Arc::new(Self {
            client,
            conn: ArcSwapOption::empty(),
            breaker: Breaker {
                epoch: Instant::now(),
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                threshold: settings.breaker_failures.max(1),
                cooldown: settings.breaker_cooldown,
            },
            settings,
            reserve: redis::Script::new(RESERVE_LUA),
            settle: redis::Script::new(SETTLE_LUA),
            up: AtomicBool::new(false),
        }))
    }

    /// Connects (retrying until it succeeds), then pings every 500 ms to keep the health
    /// state and the breaker current. Runs until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let timeout = self.settings.command_timeout;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        while self.conn.load().is_none() {
            let attempt = tokio::time::timeout(
                timeout.max(Duration::from_millis(500)),
                ConnectionManager::new_with_config(self.client.clone(), config.clone()),
            );
            tokio::select! {
                () = stop.cancelled() => return,
                res = attempt => match res {
                    Ok(Ok(c)) => {
                        self.conn.store(Some(Arc::new(c)));
                        tracing::info!("connected to Redis for limits");
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "Redis not reachable; retrying"),
                    Err(_) => tracing::warn!("Redis connection attempt timed out; retrying"),
                },
            }
            if self.conn.load().is_none() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let Some(conn) = self.conn.load_full() else {
                continue;
            };
            let mut c = (*conn).clone();
            let ok = matches!(
                tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut c))
                    .await,
                Ok(Ok(_))
            );
            let was_up = self.up.swap(ok, Ordering::AcqRel);
            if ok {
                self.breaker.success();
                if !was_up {
                    tracing::info!("Redis reachable: shared limits active");
                }
            } else if was_up {
                tracing::warn!("Redis not answering: applying the configured fail mode");
            }
        }
    }

    async fn call<T, Fut>(&self, f: impl FnOnce(ConnectionManager) -> Fut) -> Result<T, LimitError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else {
            return Err(LimitError::NotConnected);
        };
        if !self.breaker.allow() {
            return Err(LimitError::CircuitOpen);
        }
        let timeout = self.settings.command_timeout;
        match tokio::time::timeout(timeout, f((*conn).clone())).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                self.up.store(true, Ordering::Release);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.breaker.failure();
                self.up.store(false, Ordering::Release);
                Err(e.into())
            }
            Err(_) => {
                self.breaker.failure();
                self.up.store(false, Ordering::Release);
                Err(LimitError::Timeout(timeout))
            }
        }
    }

    /// A read of the store's state (`/debug/state`, metrics): bounded by the command timeout
    /// like every call, but it neither counts toward the circuit breaker nor moves the health
    /// flag, and runs even while the circuit is open. An operator polling a slow or dead Redis
    /// must not change how requests are admitted.
    async fn read<T, Fut>(&self, f: impl FnOnce(ConnectionManager) -> Fut) -> Result<T, LimitError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else {
            return Err(LimitError::NotConnected);
        };
        let timeout = self.settings.command_timeout;
        match tokio::time::timeout(timeout, f((*conn).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(LimitError::Timeout(timeout)),
        }
    }

    /// Consecutive failures the breaker has counted (tests, admin).
    pub fn breaker_failures(&self) -> u32 {
        self.breaker.failures.load(Ordering::Acquire)
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.settings.key_prefix)
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn reserve(&self, demand: &Demand, _now: u64) -> Result<Admission, LimitError> {
        if demand.is_empty() {
            return Ok(Admission::Granted(Reservation::default()));
        }
        let mut inv = self.reserve.prepare_invoke();
        inv.key(self.key(&format!("res:{}", demand.id)));
        inv.arg(demand.max_ttl());
        for c in &demand.counters {
            inv.key(self.key(&c.key));
            inv.arg(wire(c.limit)).arg(wire(c.amount)).arg(c.ttl_secs);
        }
        let (i, taken): (i64, u64) = self
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        if i == 0 {
            return Ok(Admission::Granted(Reservation::of(demand)));
        }
        let c = usize::try_from(i - 1)
            .ok()
            .and_then(|i| demand.counters.get(i))
            .ok_or_else(|| {
                LimitError::Protocol(if i == -1 {
                    "reservation cancelled before it ran".to_owned()
                } else {
                    format!("reserve reply {i}")
                })
            })?;
        Ok(Admission::Refused(Refusal::of(c, taken)))
    }

    async fn settle(&self, reservation: &Reservation, actual: Amounts) -> Result<(), LimitError> {
        if reservation.unbacked || reservation.held.is_empty() {
            return Ok(());
        }
        let mut inv = self.settle.prepare_invoke();
        inv.key(self.key(&format!("res:{}", reservation.id)));
        inv.arg(reservation.max_ttl());
        for (key, reserved, used, _) in reservation.settlement(actual) {
            inv.key(self.key(key));
            inv.arg(wire(reserved)).arg(wire(used));
        }
        self.call(|mut conn| async move { inv.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_| ())
    }

    fn health(&self) -> Health {
        if self.up.load(Ordering::Acquire) && !self.breaker.is_open() {
            Health::Up
        } else {
            Health::Down
        }
    }

    async fn outstanding(&self, key_prefix: &str) -> Result<u64, LimitError> {
        let pattern = format!("{}*", self.key(key_prefix));
        self.read(|mut conn| async move {
            let mut total = 0u64;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    // Counters only: reservation markers (`res:<id>`) are strings.
                    .arg("TYPE")
                    .arg("hash")
                    .query_async(&mut conn)
                    .await?;
                for k in keys {
                    let r: Option<u64> = redis::cmd("HGET")
                        .arg(&k)
                        .arg("r")
                        .query_async(&mut conn)
                        .await?;
                    total = total.saturating_add(r.unwrap_or_default());
                }
                if next == 0 {
                    return Ok(total);
                }
                cursor = next;
            }
        })
        .await
    }
}
