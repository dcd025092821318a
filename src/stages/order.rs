//! The stages behind the [`Stage`] contract, and the fixed order the exchange runs them in.
//!
//! Each unit struct adapts one stage module (which keeps its logic as plain functions) to
//! the contract. [`Stages`] is the static list: no `dyn`, no `async`; a phase runs its
//! stages in order and stops at the first verdict other than [`Flow::Next`], returning
//! where it stopped so the exchange can resume after a [`Flow::Reserve`].

use super::{Cx, Flow, Stage, access, guard, limits, provider, route, usage};
use crate::error::StageError;

/// Who is calling (headers), and may they use where the request is routed (body).
#[derive(Debug, Default)]
pub struct Access;
/// Endpoint and size checks, `/v1/models` (headers); the routing decision (body).
#[derive(Debug, Default)]
pub struct Route;
/// The guard policy applied to the request body.
#[derive(Debug, Default)]
pub struct Guard;
/// Usage accounting set up (prompt count, output ceiling, include_usage).
#[derive(Debug, Default)]
pub struct Usage;
/// Admission: the demand to reserve, and the store's answer.
#[derive(Debug, Default)]
pub struct Limits;
/// The backend's dialect: path, credential, translated body.
#[derive(Debug, Default)]
pub struct Provider;

impl Stage for Access {
    fn request_headers(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        access::request_headers(cx.snap, cx.req)?;
        Ok(Flow::Next)
    }
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        access::after_route(cx.snap, cx.req)?;
        Ok(Flow::Next)
    }
}

impl Stage for Route {
    fn request_headers(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        route::request_headers(cx.snap, cx.req, cx.end_of_stream)
    }
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        route::request_body(cx.snap, cx.req, &cx.svc.cooldown, cx.roll)
    }
}

impl Stage for Guard {
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        guard::request_body(cx.snap, cx.req)?;
        report_request_guard(cx);
        if cx
            .snap
            .settings
            .audit
            .as_ref()
            .is_some_and(|a| a.include_payload)
            && let Some(g) = &cx.req.guard
        {
            cx.req.payload = crate::guard::masked_payload(
                &g.policy,
                &cx.req.body,
                crate::guard::Shape::of(cx.req.endpoint),
            );
        }
        Ok(Flow::Next)
    }
}

/// The request guard's counts and shadow verdict (metrics and a log line; never values).
fn report_request_guard(cx: &Cx<'_>) {
    let Some(g) = &cx.req.guard else { return };
    let shadow = g.policy.shadow;
    for (entity, action, n) in crate::guard::counts(&g.request) {
        cx.metrics
            .guard_detected(&g.policy.name, entity, action.label(), "request", shadow, n);
    }
    if let Some(reason) = &g.shadow_verdict {
        cx.metrics
            .guard_blocked(&g.policy.name, reason, "request", true);
        // The audit trail of shadow mode: what enforcing would have done (no values).
        tracing::info!(request_id = %cx.req.request_id, policy = %g.policy.name, reason = %reason, detections = %g.request.summary(), "shadow mode: the guard would have refused this request");
    }
}

impl Stage for Usage {
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        usage::request_body(cx.snap, cx.req)?;
        Ok(Flow::Next)
    }
}

impl Stage for Limits {
    /// Returns the demand to reserve as [`Flow::Reserve`] (the exchange awaits the store and
    /// calls [`Limits::reserved`]); with no limit applying, the request is admitted now.
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        let now = cx
            .now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        match limits::plan(cx.snap, cx.req, now) {
            Some(demand) => Ok(Flow::Reserve(Box::new(demand))),
            None => {
                limits::admitted(cx.req);
                Ok(Flow::Next)
            }
        }
    }
}

impl Limits {
    /// The store's answer to the reserve of `demand`: admitted, or refused.
    pub fn reserved(
        &self,
        cx: &mut Cx<'_>,
        demand: &crate::limits::Demand,
        answer: Result<crate::limits::Admission, crate::limits::LimitError>,
    ) -> Result<(), StageError> {
        limits::reserved(cx.snap, cx.req, cx.svc, cx.metrics, demand, answer)?;
        limits::admitted(cx.req);
        Ok(())
    }
}

impl Stage for Provider {
    fn request_body(&self, cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        provider::request_body(cx.snap, cx.req, cx.now)?;
        Ok(Flow::Next)
    }
}

/// The pipeline: every stage, called in the documented order (see the module doc of
/// [`crate::stages`]).
#[derive(Debug, Default)]
pub struct Stages {
    /// Access control.
    pub access: Access,
    /// Routing.
    pub route: Route,
    /// The request guard.
    pub guard: Guard,
    /// Usage accounting.
    pub usage: Usage,
    /// Admission against the limits.
    pub limits: Limits,
    /// The backend's dialect.
    pub provider: Provider,
}

/// Where a phase stopped: the index of the stage that gave the verdict (resume after it),
/// and the verdict (`Flow::Next` at the end of the phase).
pub type Stop = (usize, Result<Flow, StageError>);

impl Stages {
    /// Index of the limits stage at request body: a verdict from a later stage comes after
    /// admission (a reservation may be held).
    pub const ADMITTED_AFTER: usize = 4;

    /// Request headers: `access` → `route`.
    pub fn request_headers(&self, cx: &mut Cx<'_>) -> Stop {
        run(0, cx, |i, cx| {
            Some(match i {
                0 => self.access.request_headers(cx),
                1 => self.route.request_headers(cx),
                _ => return None,
            })
        })
    }

    /// Request body from stage `from`: `route` → `access` → `guard` → `usage` → `limits`
    /// → `provider`.
    pub fn request_body(&self, cx: &mut Cx<'_>, from: usize) -> Stop {
        run(from, cx, |i, cx| {
            Some(match i {
                0 => self.route.request_body(cx),
                1 => self.access.request_body(cx),
                2 => self.guard.request_body(cx),
                3 => self.usage.request_body(cx),
                Self::ADMITTED_AFTER => self.limits.request_body(cx),
                5 => self.provider.request_body(cx),
                _ => return None,
            })
        })
    }
}

/// Runs stage `from`, `from + 1`, … (`nth` calls the stage at an index, `None` past the
/// last) until a verdict other than `Next`.
fn run(
    from: usize,
    cx: &mut Cx<'_>,
    nth: impl Fn(usize, &mut Cx<'_>) -> Option<Result<Flow, StageError>>,
) -> Stop {
    let mut i = from;
    while let Some(verdict) = nth(i, cx) {
        match verdict {
            Ok(Flow::Next) => i += 1,
            other => return (i, other),
        }
    }
    (i, Ok(Flow::Next))
}
