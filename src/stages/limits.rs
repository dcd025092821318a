//! Limits stage: admission against a reservation at request body, settlement at the end.
//!
//! Order in the exchange: route → access → usage (sets up the charge) → **admit** (this).
//! Settlement (reconcile or refund) never blocks a reply: it is queued on a channel that a
//! background task drains into the store ([`settle_worker`]), and that task is awaited at
//! shutdown, so refunds of streams cut short (the exchange's Drop, which cannot await) are
//! not lost; settlements the store refuses while it is down are retried.

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::limits::{self, Admission, Amounts, LimitError, Limiter, Reservation, Subject};
use crate::llm::usage::Usage;
use crate::metrics::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    settle: mpsc::UnboundedSender<Settlement>,
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

impl Services {
    /// Services over `limiter`, and the receiving end of the settlement queue.
    pub fn new(limiter: Arc<dyn Limiter>) -> (Arc<Self>, mpsc::UnboundedReceiver<Settlement>) {
        let (settle, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                limiter,
                settle,
                cooldown: Default::default(),
            }),
            rx,
        )
    }

    /// Queues a settlement (never blocks; dropped only if the worker is gone at shutdown).
    pub fn queue(&self, s: Settlement) {
        if self.settle.send(s).is_err() {
            tracing::warn!("settlement queue closed; reservation left to expire");
        }
    }
}

/// Settlements kept for retry while the store is down (beyond that, they are dropped and
/// their reservations expire with their windows).
const MAX_PENDING: usize = 100_000;
/// How long a failed settlement is retried.
const RETRY_FOR: Duration = Duration::from_secs(3600);

/// Drains the settlement queue into the store until every sender is gone. A settlement the
/// store refuses (Redis down) is retried every second for up to an hour, so a budget's
/// reservation is released once Redis is back instead of holding capacity until the end of
/// its window (a month, for monthly budgets). At shutdown, pending ones get one last try.
pub async fn settle_worker(
    limiter: Arc<dyn Limiter>,
    mut rx: mpsc::UnboundedReceiver<Settlement>,
    metrics: Arc<Metrics>,
) {
    let mut pending: VecDeque<(Settlement, Instant)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(s) => {
                    if let Err(e) = limiter.settle(&s.reservation, s.actual).await {
                        metrics.limiter_error("settle");
                        tracing::debug!(error = %e, "settlement failed; will retry");
                        if pending.len() < MAX_PENDING {
                            pending.push_back((s, Instant::now()));
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick(), if !pending.is_empty() => {
                retry(&*limiter, &mut pending, &metrics).await;
            }
        }
    }
    retry(&*limiter, &mut pending, &metrics).await;
    if !pending.is_empty() {
        tracing::warn!(
            count = pending.len(),
            "settlements not applied at shutdown; their reservations expire with their windows"
        );
    }
}

async fn retry(
    limiter: &dyn Limiter,
    pending: &mut VecDeque<(Settlement, Instant)>,
    metrics: &Metrics,
) {
    for _ in 0..pending.len() {
        let Some((s, since)) = pending.pop_front() else {
            break;
        };
        match limiter.settle(&s.reservation, s.actual).await {
            Ok(()) => {}
            Err(_) if since.elapsed() < RETRY_FOR => {
                metrics.limiter_error("settle");
                pending.push_back((s, since));
                // The store is still down: try the rest on the next tick.
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "settlement dropped after an hour of retries");
            }
        }
    }
}

/// Request body, last: reserve the worst case or refuse.
pub async fn admit(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    svc: &Services,
    metrics: &Metrics,
) -> Result<(), StageError> {
    if snap.limits.rules.is_empty() {
        return Ok(());
    }
    let (Some(charge), Some(routed)) = (cx.charge.as_deref_mut(), &cx.routed) else {
        return Ok(());
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
    let demand = limits::plan(&snap.limits.rules, &subject, worst, limits::unix_now());
    if demand.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let answer = svc.limiter.reserve(&demand, limits::unix_now()).await;
    metrics.limiter_call(svc.limiter.name(), started.elapsed());
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
                svc.queue(Settlement {
                    reservation: Reservation::of(&demand),
                    actual: Amounts::default(),
                });
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

/// Amounts to charge for a usage.
pub fn actual(requests: u64, usage: &Usage, cost: u64) -> Amounts {
    Amounts {
        requests,
        tokens: usage.total(),
        cost,
    }
}
