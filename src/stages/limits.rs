//! Limits stage: admission against a reservation at request body, settlement at the end.
//!
//! Order in the exchange: route → access → usage (sets up the charge) → **admit** (this).
//! Settlement (reconcile or refund) never blocks a reply: it is queued on a channel that a
//! background task drains into the store ([`settle_worker`]), and that task is awaited at
//! shutdown, so refunds of streams cut short (the exchange's Drop, which cannot await) are
//! not lost.

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::limits::{self, Admission, Amounts, Limiter, Reservation, Subject};
use crate::llm::usage::Usage;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;
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
        (Arc::new(Self { limiter, settle }), rx)
    }

    /// Queues a settlement (never blocks; dropped only if the worker is gone at shutdown).
    pub fn queue(&self, s: Settlement) {
        if self.settle.send(s).is_err() {
            tracing::warn!("settlement queue closed; reservation left to expire");
        }
    }
}

/// Drains the settlement queue into the store until every sender is gone.
pub async fn settle_worker(
    limiter: Arc<dyn Limiter>,
    mut rx: mpsc::UnboundedReceiver<Settlement>,
    metrics: Arc<Metrics>,
) {
    while let Some(s) = rx.recv().await {
        if let Err(e) = limiter.settle(&s.reservation, s.actual).await {
            metrics.limiter_error("settle");
            tracing::warn!(error = %e, "could not settle a reservation; it expires with its window");
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
    let model = if routed.model_label == "unlisted" {
        routed.requested_model.as_str()
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
            let fail_open = match &snap.limits.store {
                crate::config::StoreSettings::Redis { fail_open, .. } => *fail_open,
                crate::config::StoreSettings::Memory => true,
            };
            if fail_open {
                metrics.fail_open();
                tracing::warn!(request_id = %cx.request_id, error = %e, "limits store unavailable: admitted without limits (fail-open)");
                charge.needs_usage = demand.needs_usage();
                charge.reservation = Some(Reservation {
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
