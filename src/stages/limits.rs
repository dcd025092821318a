//! Limits stage: admission against a reservation at request body, settlement at the end.
//!
//! Order in the exchange: route → access → usage (sets up the charge) → **admit** (this).
//! Settlement (reconcile or refund) never blocks a reply: it is queued on a channel that a
//! background task drains into the store ([`settle_worker`]), and that task is awaited at
//! shutdown, so refunds of streams cut short (the exchange's Drop, which cannot await) are
//! not lost; settlements the store refuses while it is down are retried.

use super::{RequestCtx, usage};
use crate::config::Snapshot;
use crate::error::StageError;
use crate::limits::{self, Admission, Amounts, LimitError, Limiter, Reservation, Subject};
use crate::llm::usage::Usage;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

/// A reservation to replace with what was used.
#[derive(Debug)]
pub struct Settlement {
    /// What was reserved.
    pub reservation: Reservation,
    /// What was used.
    pub actual: Amounts,
}

/// Long-lived handles the limits stage needs (built once at start, kept across reloads).
pub struct Services {
    /// The counter store.
    pub limiter: Arc<dyn Limiter>,
    settle: mpsc::Sender<Settlement>,
    /// Settlements dropped on a full queue (the first, then every 1000th, is logged).
    dropped: std::sync::atomic::AtomicU64,
    /// Backends that just failed (routing avoids them where it can; kept across reloads).
    pub cooldown: crate::routing::health::Cooldown,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("limiter", &self.limiter.name())
            .finish()
    }
}

/// Settlements waiting for the worker. When the queue is full (the store far slower than
/// traffic for a long while) a new settlement is dropped, counted as
/// `tollgate_limiter_errors_total{op="settle_dropped"}`, and its reservation is held until its
/// counter's window expires: memory stays bounded and no request ever waits on the queue.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Settlements sent to the store at once: one slow or stuck call holds one slot, not the
/// queue (each call is bounded by the store's command timeout).
pub const MAX_IN_FLIGHT: usize = 64;

impl Services {
    /// Services over `limiter`, and the receiving end of the settlement queue.
    pub fn new(limiter: Arc<dyn Limiter>) -> (Arc<Self>, mpsc::Receiver<Settlement>) {
        let (settle, rx) = mpsc::channel(QUEUE_CAPACITY);
        (
            Arc::new(Self {
                limiter,
                settle,
                dropped: Default::default(),
                cooldown: Default::default(),
            }),
            rx,
        )
    }

    /// Queues a settlement (never blocks: dropped and counted when the queue is full, or
    /// when the worker is gone at shutdown).
    pub fn queue(&self, s: Settlement, metrics: &Metrics) {
        match self.settle.try_send(s) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics.limiter_error("settle_dropped");
                let n = self
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped = n + 1,
                        "settlement queue full; reservations left to expire with their windows"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("settlement queue closed; reservation left to expire");
            }
        }
    }
}

/// Settlements kept for retry while the store is down (beyond that, they are dropped and
/// their reservations expire with their windows).
const MAX_PENDING: usize = 100_000;
/// How long a failed settlement is retried.
const RETRY_FOR: Duration = Duration::from_secs(3600);

type Pending = (Settlement, Instant);

/// Drains the settlement queue into the store until every sender is gone, with up to
/// [`MAX_IN_FLIGHT`] calls at once, so one slow call never holds up the others. A
/// settlement the store refuses (Redis down) is retried for up to an hour — a batch each
/// second while the store keeps failing, the rest as soon as one succeeds — so a budget's
/// reservation is released once Redis is back instead of holding capacity until the end of
/// its window (a month, for monthly budgets). At shutdown, pending ones get one last try.
pub async fn settle_worker(
    limiter: Arc<dyn Limiter>,
    mut rx: mpsc::Receiver<Settlement>,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut running: JoinSet<Result<(), Pending>> = JoinSet::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    let spawn = |running: &mut JoinSet<Result<(), Pending>>,
                 permit: OwnedSemaphorePermit,
                 (s, since): Pending| {
        let limiter = limiter.clone();
        let metrics = metrics.clone();
        running.spawn(async move {
            let _permit = permit;
            match limiter.settle(&s.reservation, s.actual).await {
                Ok(()) => Ok(()),
                Err(e) if since.elapsed() < RETRY_FOR => {
                    metrics.limiter_error("settle");
                    tracing::debug!(error = %e, "settlement failed; will retry");
                    Err((s, since))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "settlement dropped after an hour of retries");
                    Ok(())
                }
            }
        });
    };
    while open || !running.is_empty() {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(s) => {
                    // Waits only while MAX_IN_FLIGHT calls are under way; the queue buffers.
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    spawn(&mut running, permit, (s, Instant::now()));
                }
                None => open = false,
            },
            Some(done) = running.join_next(), if !running.is_empty() => match done {
                Ok(Err(p)) => {
                    if pending.len() < MAX_PENDING {
                        pending.push_back(p);
                    }
                }
                Ok(Ok(())) => {
                    // The store answers: send what waits for a retry now, not on the tick.
                    drain_some(&permits, &mut pending, |permit, p| spawn(&mut running, permit, p));
                }
                Err(e) => tracing::warn!(error = %e, "settlement task failed"),
            },
            _ = tick.tick(), if !pending.is_empty() => {
                drain_some(&permits, &mut pending, |permit, p| spawn(&mut running, permit, p));
            }
        }
    }
    // Shutdown: one last try for what is pending, at the same bounded concurrency.
    while let Some(p) = pending.pop_front() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        spawn(&mut running, permit, p);
    }
    let mut unapplied = 0usize;
    while let Some(done) = running.join_next().await {
        if matches!(done, Ok(Err(_)) | Err(_)) {
            unapplied += 1;
        }
    }
    if unapplied > 0 {
        tracing::warn!(
            count = unapplied,
            "settlements not applied at shutdown; their reservations expire with their windows"
        );
    }
}

/// Moves pending settlements into free call slots (never waits for one).
fn drain_some(
    permits: &Arc<Semaphore>,
    pending: &mut VecDeque<Pending>,
    mut spawn: impl FnMut(OwnedSemaphorePermit, Pending),
) {
    while !pending.is_empty() {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return;
        };
        if let Some(p) = pending.pop_front() {
            spawn(permit, p);
        }
    }
}

/// Cancels a reserve call whose outcome is unknown when it is dropped before answering (the
/// client went away and Envoy reset the stream mid-call): the store may yet apply it, so a
/// cancellation (a settlement of nothing) is queued. Stores apply a settlement at most once
/// per reservation id, and one that finds no reservation voids it, so this releases the
/// capacity whether the reserve ran before, runs after, or never runs.
struct InFlight<'a> {
    svc: &'a Services,
    metrics: &'a Metrics,
    demand: Option<&'a limits::Demand>,
}

impl InFlight<'_> {
    fn answered(mut self) {
        self.demand = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.demand.take() {
            self.metrics.limiter_error("reserve_cancelled");
            self.svc.queue(
                Settlement {
                    reservation: Reservation::of(d),
                    actual: Amounts::default(),
                },
                self.metrics,
            );
        }
    }
}

/// Request body, after usage: the demand to reserve (the worst case of every counter the
/// request touches), or `None` when no limit applies. Synchronous: the exchange performs
/// the reserve ([`reserve`]) and hands its answer to [`reserved`].
pub fn plan(snap: &Snapshot, cx: &mut RequestCtx, now: u64) -> Option<limits::Demand> {
    if snap.limits.rules.is_empty() {
        return None;
    }
    let (Some(charge), Some(routed)) = (cx.charge.as_deref(), &cx.routed) else {
        return None;
    };
    // Resolved, not typed: the model the request is sent to.
    let model = if routed.model_label == "unlisted" {
        routed.upstream_model.as_str()
    } else {
        routed.model_label.as_str()
    };
    let subject = Subject {
        consumer: cx
            .identity
            .as_ref()
            .map_or("anonymous", |w| w.consumer.as_str()),
        team: cx.identity.as_ref().and_then(|w| w.team.as_deref()),
        model,
    };
    let (tokens, cost) = charge.worst_case();
    let worst = Amounts {
        requests: 1,
        tokens,
        cost,
    };
    let demand = limits::plan(&snap.limits.rules, &subject, worst, now);
    if demand.is_empty() {
        return None;
    }
    if demand.needs_usage() {
        // A token or cost limit applies: the reservation must bound what the upstream may
        // generate, so a request that names no ceiling gets the one reserved.
        usage::send_default_ceiling(cx);
    }
    Some(demand)
}

/// The request's one await: reserves `demand` in the store (bounded by the store's command
/// timeout). Dropped before it answers (Envoy cancelled the stream), it queues the
/// reserve's cancellation.
pub async fn reserve(
    svc: &Services,
    metrics: &Metrics,
    demand: &limits::Demand,
) -> Result<Admission, LimitError> {
    let started = Instant::now();
    let guard = InFlight {
        svc,
        metrics,
        demand: Some(demand),
    };
    let answer = svc.limiter.reserve(demand, limits::unix_now()).await;
    guard.answered();
    metrics.limiter_call(svc.limiter.name(), started.elapsed());
    answer
}

/// The store's answer to [`reserve`]: keeps the reservation, refuses (429), or, when the
/// store failed, admits without limits (fail-open) or refuses (503, fail-closed).
pub fn reserved(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    svc: &Services,
    metrics: &Metrics,
    demand: &limits::Demand,
    answer: Result<Admission, LimitError>,
) -> Result<(), StageError> {
    let Some(charge) = cx.charge.as_deref_mut() else {
        return Ok(());
    };
    match answer {
        Ok(Admission::Granted(r)) => {
            charge.needs_usage = demand.needs_usage();
            charge.reservation = Some(r);
            Ok(())
        }
        Ok(Admission::Refused(r)) => {
            metrics.limit_refused(&r.rule, r.metric.label());
            Err(StageError::Limited(r))
        }
        Err(e) => {
            metrics.limiter_error("reserve");
            if matches!(e, LimitError::Timeout(_) | LimitError::Redis(_)) {
                // The reserve may still reach Redis: cancel it (settle nothing), so it either
                // is released or, arriving late, does nothing.
                svc.queue(
                    Settlement {
                        reservation: Reservation::of(demand),
                        actual: Amounts::default(),
                    },
                    metrics,
                );
            }
            let fail_open = match &snap.limits.store {
                crate::config::StoreSettings::Redis { fail_open, .. } => *fail_open,
                crate::config::StoreSettings::Memory => true,
            };
            if fail_open {
                metrics.fail_open();
                tracing::warn!(request_id = %cx.request_id, error = %e, "limits store unavailable: admitted without limits (fail-open)");
                charge.needs_usage = demand.needs_usage();
                charge.reservation = Some(Reservation {
                    id: demand.id.clone(),
                    held: Vec::new(),
                    unbacked: true,
                });
                Ok(())
            } else {
                Err(StageError::LimitsUnavailable(e.to_string()))
            }
        }
    }
}

/// Once admitted (reserved, or no limit applied): a response whose usage is read must
/// arrive uncompressed (tollgate never inflates bodies); a compressed one is refused at
/// response headers.
pub fn admitted(cx: &mut RequestCtx) {
    if cx.charge.as_deref().is_some_and(usage::Charge::wants_body) {
        cx.mutations.set("accept-encoding", "identity");
    }
}

/// Amounts to charge for a usage.
pub fn actual(requests: u64, usage: &Usage, cost: u64) -> Amounts {
    Amounts {
        requests,
        tokens: usage.total(),
        cost,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;
    use crate::limits::memory::MemoryLimiter;
    use crate::limits::{Demand, Health, Limit, Metric, Rule, Window};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The memory store, except that settling reservation `stuck` never answers.
    struct OneStuck {
        inner: MemoryLimiter,
        stuck: String,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Limiter for OneStuck {
        fn name(&self) -> &'static str {
            "one-stuck"
        }
        async fn reserve(&self, d: &Demand, now: u64) -> Result<Admission, LimitError> {
            Ok(self.inner.reserve_now(d, now))
        }
        async fn settle(&self, r: &Reservation, actual: Amounts) -> Result<(), LimitError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if r.id == self.stuck {
                std::future::pending::<()>().await;
            }
            self.inner.settle(r, actual).await
        }
        fn health(&self) -> Health {
            Health::Local
        }
        async fn outstanding(&self, p: &str) -> Result<u64, LimitError> {
            self.inner.outstanding(p).await
        }
    }

    fn demand(tokens: u64) -> Demand {
        let rules = [Rule {
            name: "r".into(),
            per: vec![],
            consumers: vec![],
            teams: vec![],
            models: vec![],
            limits: vec![Limit {
                metric: Metric::Tokens,
                window: Window::Day,
                max: u64::MAX,
            }],
        }];
        let subject = Subject {
            consumer: "c",
            team: None,
            model: "m",
        };
        let worst = Amounts {
            requests: 1,
            tokens,
            cost: 0,
        };
        limits::plan(&rules, &subject, worst, limits::unix_now())
    }

    #[tokio::test]
    async fn one_stuck_settlement_does_not_hold_up_the_others() {
        let stuck = demand(7);
        let store = Arc::new(OneStuck {
            inner: MemoryLimiter::new(),
            stuck: stuck.id.clone(),
            calls: AtomicUsize::new(0),
        });
        let (svc, rx) = Services::new(store.clone());
        let metrics = Arc::new(Metrics::new());
        let worker = tokio::spawn(settle_worker(store.clone(), rx, metrics.clone()));
        let mut all = vec![stuck];
        all.extend((0..500).map(|_| demand(3)));
        for d in &all {
            let Admission::Granted(r) = store.reserve(d, limits::unix_now()).await.unwrap() else {
                panic!("fits")
            };
            svc.queue(
                Settlement {
                    reservation: r,
                    actual: Amounts::default(),
                },
                &metrics,
            );
        }
        // Everything but the stuck one is released, though the stuck one went first.
        for _ in 0..10_000 {
            if store.outstanding("").await.unwrap() == 7 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(store.outstanding("").await.unwrap(), 7);
        assert_eq!(store.calls.load(Ordering::Relaxed), 501, "one call each");
        worker.abort();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_blocking_or_growing() {
        let store: Arc<dyn Limiter> = Arc::new(MemoryLimiter::new());
        let (svc, _rx) = Services::new(store);
        let metrics = Metrics::new();
        for _ in 0..QUEUE_CAPACITY + 3 {
            svc.queue(
                Settlement {
                    reservation: Reservation::default(),
                    actual: Amounts::default(),
                },
                &metrics,
            );
        }
        assert!(
            metrics
                .render()
                .contains(r#"tollgate_limiter_errors_total{op="settle_dropped"} 3"#)
        );
    }

    #[tokio::test]
    async fn the_worker_settles_everything_queued_before_shutdown() {
        let store = Arc::new(MemoryLimiter::new());
        let (svc, rx) = Services::new(store.clone());
        let metrics = Arc::new(Metrics::new());
        let worker = tokio::spawn(settle_worker(store.clone(), rx, metrics.clone()));
        for _ in 0..300 {
            let d = demand(5);
            let Admission::Granted(r) = store.reserve_now(&d, limits::unix_now()) else {
                panic!("fits")
            };
            svc.queue(
                Settlement {
                    reservation: r,
                    actual: Amounts {
                        requests: 1,
                        tokens: 2,
                        cost: 0,
                    },
                },
                &metrics,
            );
        }
        drop(svc);
        worker.await.unwrap();
        assert_eq!(store.outstanding("").await.unwrap(), 0);
        let (wid, _) = limits::windows(Window::Day, limits::unix_now());
        assert_eq!(store.peek(&format!("r:tokens:{wid}")), (600, 0));
    }
}
