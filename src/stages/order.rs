//! The stages behind the [`Stage`] contract, and the fixed order the exchange runs them in.
//!
//! Each unit struct adapts one stage module (which keeps its logic as plain functions) to
//! the contract. [`Stages`] is the static list: no `dyn`, no `async`; a phase runs its
//! stages in order and stops at the first verdict other than [`Flow::Next`], returning
//! where it stopped so the exchange can resume after a [`Flow::Reserve`].

use super::{
    Cx, Flow, ResponseHead, Stage, access, guard, limits, provider, response, route, usage,
};
use crate::error::StageError;
use crate::guard::response::ResponseGuard;

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
    /// First: which backend answered (a chain), so the right translator runs.
    fn response_headers(
        &self,
        cx: &mut Cx<'_>,
        head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        route::response_headers(
            cx.snap,
            cx.req,
            head.status,
            head.answered_by,
            &cx.svc.cooldown,
        );
        Ok(false)
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
    /// Starts the response guard when the policy scans responses.
    fn response_headers(
        &self,
        cx: &mut Cx<'_>,
        head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        let needs = cx
            .req
            .guard
            .as_ref()
            .is_some_and(|g| g.response.is_none() && g.policy.needs_response(&g.request));
        if !needs {
            return Ok(false);
        }
        // The body will change length; Envoy re-frames (chunked / DATA frames).
        cx.req.mutations.remove("content-length");
        if head.encoding.is_some() {
            // The body is replaced by an error; it is no longer encoded.
            cx.req.mutations.remove("content-encoding");
        }
        let shape = crate::guard::Shape::of(cx.req.endpoint);
        if let Some(g) = cx.req.guard.as_mut() {
            g.response = Some(
                ResponseGuard::new(
                    g.policy.clone(),
                    &g.request,
                    &head.content_type,
                    head.encoding,
                )
                .with_shape(shape),
            );
        }
        Ok(true)
    }
}

/// The response guard's counts and verdict once the response is complete (metrics,
/// metadata, a log line; never values).
fn report_response_guard(cx: &mut Cx<'_>) {
    let Some(g) = cx.req.guard.as_ref() else {
        return;
    };
    let Some(rg) = g.response.as_ref() else {
        return;
    };
    let (policy, shadow) = (g.policy.name.as_str(), g.policy.shadow);
    for (entity, action, n) in crate::guard::counts(&rg.state) {
        cx.metrics
            .guard_detected(policy, entity, action.label(), "response", shadow, n);
    }
    let mut metadata = Vec::new();
    if rg.state.total() > 0 {
        metadata.push(("pii_response", rg.state.summary()));
    }
    if let Some(v) = rg.violation() {
        cx.metrics
            .guard_blocked(policy, v.reason(), "response", shadow);
        metadata.push(("guard_blocked", v.reason().to_owned()));
        tracing::info!(request_id = %cx.req.request_id, policy, reason = v.reason(), "response ended by the guard");
    }
    cx.req.mutations.metadata.extend(metadata);
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
    /// Reads the body when its usage is needed; a compressed body that must be read is
    /// charged as reserved and refused (never passed on unmetered).
    fn response_headers(
        &self,
        cx: &mut Cx<'_>,
        head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        let Some(charge) = cx.req.charge.as_deref_mut() else {
            return Ok(false);
        };
        if usage::must_read(charge, head.status, &head.content_type)
            && head.encoding.is_some_and(usage::is_compressed)
        {
            // The request asked for identity; this upstream ignored it.
            charge.status = head.status;
            charge.unreadable();
            return Err(StageError::UpstreamUnreadable(
                "the upstream answered with a compressed body that tollgate must read for usage metering",
            ));
        }
        Ok(usage::response_headers(
            cx.req,
            head.status,
            &head.content_type,
        ))
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
    /// Starts the translator; usage and the guard see the type the client will get.
    fn response_headers(
        &self,
        cx: &mut Cx<'_>,
        head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        let (translated, translating) =
            provider::response_headers(cx.req, head.status, &head.content_type);
        if let Some(ct) = translated {
            head.content_type = ct.into();
        }
        Ok(translating)
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

    /// Response headers of a forwarded request: `route` (which backend answered) →
    /// `provider` (translator, client content type) → `usage` → `guard`. Returns whether any
    /// stage needs the body; an error stops the phase (the usage stage's unreadable body).
    pub fn response_headers(
        &self,
        cx: &mut Cx<'_>,
        head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        let mut wants = self.route.response_headers(cx, head)?;
        wants |= self.provider.response_headers(cx, head)?;
        wants |= self.usage.response_headers(cx, head)?;
        wants |= self.guard.response_headers(cx, head)?;
        Ok(wants)
    }

    /// One response body chunk through the response pipeline (translate, decode once,
    /// usage observes, the guard rewrites, encode once); the replacement body, if any. The
    /// response guard reports once, on the chunk that finishes it.
    pub fn response_body(
        &self,
        cx: &mut Cx<'_>,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Option<Vec<u8>> {
        let guard_finished = |cx: &Cx<'_>| {
            cx.req
                .guard
                .as_ref()
                .and_then(|g| g.response.as_ref())
                .map(ResponseGuard::finished)
        };
        let was_finished = guard_finished(cx);
        let replacement = response::response_body(cx.req, chunk, end_of_stream);
        if was_finished == Some(false) && guard_finished(cx) == Some(true) {
            report_response_guard(cx);
        }
        replacement
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
