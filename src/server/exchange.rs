//! The per-stream ext_proc state machine.
//!
//! Pure: it takes prost messages and returns prost messages — no tonic, no I/O — so tests
//! drive it by feeding message sequences. Invariant: **every inbound message gets exactly
//! one reply, of the matching kind** (or, on the request side, an ImmediateResponse).
//! Messages that arrive out of order or twice (Envoy has sent a duplicate final body
//! chunk on large bodies) get a plain "continue" of the matching kind and change nothing,
//! except where continuing would let an unrouted request through: then the answer is a
//! 500 refusal (fail closed).
//!
//! Each exchange pins one config snapshot for its whole life. Metrics for the request are
//! recorded exactly once, when the exchange is dropped (stream ended, cancelled or reset).

use super::reply::{self, Kind};
use crate::config::Snapshot;
use crate::error::{Fault, StageError, rescue};
use crate::guard::response::ResponseGuard;
use crate::headers::Headers;
use crate::metrics::Metrics;
use crate::proto::*;
use crate::stages::{Flow, Mutations, RequestCtx, guard, route};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Envoy broke the protocol in a way no reply can answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A ProcessingRequest with no request set.
    #[error("ProcessingRequest without a request message")]
    Empty,
}

/// Where the request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    Start,
    /// Request headers answered; the body is expected.
    AwaitBody,
    /// Routed (or needs no routing): the request went upstream.
    Forwarded,
    /// An ImmediateResponse was sent; nothing more should arrive.
    Answered,
}

/// One HTTP request's ext_proc conversation.
pub struct Exchange {
    snap: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    phase: Phase,
    cx: RequestCtx,
    /// Request body mode Envoy announced in `protocol_config` (first message only).
    body_mode: Option<i32>,
    status: Option<u16>,
    started: Instant,
}

impl Exchange {
    /// Starts an exchange on a pinned snapshot.
    pub fn new(snap: Arc<Snapshot>, metrics: Arc<Metrics>) -> Self {
        metrics.stream_opened();
        Self {
            snap,
            metrics,
            phase: Phase::Start,
            cx: RequestCtx::default(),
            body_mode: None,
            status: None,
            started: Instant::now(),
        }
    }

    /// Answers one message.
    pub fn on_message(
        &mut self,
        msg: ProcessingRequest,
    ) -> Result<ProcessingResponse, ProtocolError> {
        use processing_request::Request as R;
        if let Some(pc) = &msg.protocol_config {
            self.body_mode.get_or_insert(pc.request_body_mode);
        }
        let request = msg.request.ok_or(ProtocolError::Empty)?;
        let kind = Kind::of(&request);
        let reply = match request {
            R::RequestHeaders(h) if self.phase == Phase::Start => self.request_headers(h),
            R::RequestBody(b) if self.phase == Phase::AwaitBody => self.request_body(b),
            R::RequestBody(_) if self.phase == Phase::Start => {
                // Headers never came (request_header_mode SKIP): we cannot route safely.
                self.refuse(StageError::Misconfigured(
                    "request headers were not sent to tollgate; set request_header_mode: SEND",
                ))
            }
            R::ResponseHeaders(h) => {
                self.status = status_of(&h).or(self.status);
                self.response_headers(h)
            }
            R::ResponseBody(b) => self.response_body(b),
            _ => {
                if matches!(kind, Kind::RequestHeaders) {
                    tracing::warn!(request_id = %self.cx.request_id, "duplicate request headers message ignored");
                }
                reply::proceed(kind, Default::default())
            }
        };
        Ok(reply)
    }

    fn request_headers(&mut self, h: HttpHeaders) -> ProcessingResponse {
        let mut method = String::new();
        let mut path = String::new();
        let mut request_id = None;
        let pairs = h
            .headers
            .map(|m| m.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|hv| {
                let value = if hv.raw_value.is_empty() {
                    hv.value.into_bytes()
                } else {
                    hv.raw_value
                };
                (hv.key, value)
            });
        let headers = Headers::from_pairs(pairs);
        if let Some(v) = headers.get(":method") {
            method = v.to_owned();
        }
        if let Some(v) = headers.get(":path") {
            path = v.to_owned();
        }
        if let Some(v) = headers
            .get("x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 200)
        {
            request_id = Some(v.to_owned());
        }
        self.cx.request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.cx.method = method;
        self.cx.path = path;
        self.cx.headers = headers;
        self.phase = Phase::AwaitBody;

        match route::request_headers(&self.snap, &mut self.cx, h.end_of_stream) {
            Err(e) => self.refuse(e),
            Ok(Flow::Respond { status, body }) => {
                self.phase = Phase::Answered;
                self.status = Some(status);
                reply::immediate_json(status, body, &self.cx.request_id, &[], "tollgate_local")
            }
            Ok(Flow::Next) => {
                let buffered = BodySendMode::Buffered as i32;
                if self.body_mode.is_some_and(|m| m != buffered) {
                    return self.refuse(StageError::Misconfigured(
                        "tollgate routes on the request body and needs request_body_mode: BUFFERED",
                    ));
                }
                reply::proceed(Kind::RequestHeaders, self.cx.mutations.take())
            }
        }
    }

    fn request_body(&mut self, b: HttpBody) -> ProcessingResponse {
        match route::request_body(&self.snap, &mut self.cx, &b.body) {
            Err(e) => self.refuse(e),
            Ok(Flow::Respond { status, body }) => {
                self.phase = Phase::Answered;
                self.status = Some(status);
                reply::immediate_json(status, body, &self.cx.request_id, &[], "tollgate_local")
            }
            Ok(Flow::Next) => {
                if let Err(e) = guard::request_body(&self.snap, &mut self.cx, &b.body) {
                    return self.refuse(e);
                }
                self.report_request_guard();
                self.phase = Phase::Forwarded;
                reply::proceed(Kind::RequestBody, self.cx.mutations.take())
            }
        }
    }

    fn report_request_guard(&self) {
        let Some(g) = &self.cx.guard else { return };
        let shadow = g.policy.shadow;
        for (entity, action, n) in crate::guard::counts(&g.request) {
            self.metrics.guard_detected(
                &g.policy.name,
                entity,
                action.label(),
                "request",
                shadow,
                n,
            );
        }
        if let Some(reason) = &g.shadow_verdict {
            self.metrics
                .guard_blocked(&g.policy.name, reason, "request", true);
            // The audit trail of shadow mode: what enforcing would have done (no values).
            tracing::info!(request_id = %self.cx.request_id, policy = %g.policy.name, reason = %reason, detections = %g.request.summary(), "shadow mode: the guard would have refused this request");
        }
    }

    /// Asks Envoy for the response body when the guard needs it (mode_override STREAMED).
    fn response_headers(&mut self, h: HttpHeaders) -> ProcessingResponse {
        let needs = self.phase == Phase::Forwarded
            && self
                .cx
                .guard
                .as_ref()
                .is_some_and(|g| g.response.is_none() && g.policy.needs_response(&g.request));
        if !needs {
            return reply::proceed(Kind::ResponseHeaders, Mutations::default());
        }
        let header = |name: &str| -> Option<String> {
            let hv = h
                .headers
                .as_ref()?
                .headers
                .iter()
                .find(|hv| hv.key.eq_ignore_ascii_case(name))?;
            Some(if hv.raw_value.is_empty() {
                hv.value.clone()
            } else {
                String::from_utf8_lossy(&hv.raw_value).into_owned()
            })
        };
        let content_type = header("content-type").unwrap_or_default();
        let encoding = header("content-encoding");
        let mut m = Mutations::default();
        // The body will change length; Envoy re-frames (chunked / DATA frames).
        m.remove("content-length");
        if encoding.is_some() {
            // The body is replaced by an error; it is no longer encoded.
            m.remove("content-encoding");
        }
        if let Some(g) = self.cx.guard.as_mut() {
            g.response = Some(ResponseGuard::new(
                g.policy.clone(),
                &g.request,
                &content_type,
                encoding.as_deref(),
            ));
        }
        reply::with_response_body_streamed(reply::proceed(Kind::ResponseHeaders, m))
    }

    /// Answers every response body chunk with its replacement (empty while held back).
    fn response_body(&mut self, b: HttpBody) -> ProcessingResponse {
        let Some(g) = self.cx.guard.as_mut() else {
            return reply::proceed(Kind::ResponseBody, Mutations::default());
        };
        let Some(rg) = g.response.as_mut() else {
            return reply::proceed(Kind::ResponseBody, Mutations::default());
        };
        let was_finished = rg.finished();
        let out = rg.on_body(&b.body, b.end_of_stream);
        let mut m = Mutations {
            body: Some(out),
            ..Mutations::default()
        };
        if !was_finished && rg.finished() {
            let policy = g.policy.name.clone();
            let shadow = g.policy.shadow;
            for (entity, action, n) in crate::guard::counts(&rg.state) {
                self.metrics
                    .guard_detected(&policy, entity, action.label(), "response", shadow, n);
            }
            if rg.state.total() > 0 {
                m.metadata.push(("pii_response", rg.state.summary()));
            }
            if let Some(v) = rg.violation() {
                self.metrics
                    .guard_blocked(&policy, v.reason(), "response", shadow);
                m.metadata.push(("guard_blocked", v.reason().to_owned()));
                tracing::info!(request_id = %self.cx.request_id, policy, reason = v.reason(), "response ended by the guard");
            }
        }
        reply::proceed(Kind::ResponseBody, m)
    }

    fn refuse(&mut self, err: StageError) -> ProcessingResponse {
        if let StageError::Guard(g) = &err {
            let policy = self
                .snap
                .guard
                .select(
                    self.cx
                        .routed
                        .as_ref()
                        .map(|r| r.rule.as_str())
                        .unwrap_or_default(),
                    &[self
                        .cx
                        .routed
                        .as_ref()
                        .map(|r| r.model_label.as_str())
                        .unwrap_or_default()],
                )
                .map(|p| p.name.clone())
                .unwrap_or_default();
            self.metrics
                .guard_blocked(&policy, g.reason(), "request", false);
        }
        let local = rescue(&err);
        match local.fault {
            Fault::Downstream => {
                tracing::info!(request_id = %self.cx.request_id, status = local.status, code = local.code, "request refused: {}", local.message)
            }
            Fault::Internal => {
                tracing::error!(request_id = %self.cx.request_id, status = local.status, code = local.code, error = ?err, "request failed")
            }
        }
        self.phase = Phase::Answered;
        self.status = Some(local.status);
        reply::refuse(&local, &self.cx.request_id)
    }
}

fn status_of(h: &HttpHeaders) -> Option<u16> {
    let hv = h
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|hv| hv.key == ":status")?;
    let raw = if hv.raw_value.is_empty() {
        hv.value.as_bytes()
    } else {
        &hv.raw_value
    };
    std::str::from_utf8(raw).ok()?.parse().ok()
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.metrics.stream_closed();
        if self.phase == Phase::Start {
            return; // The stream carried no request at all.
        }
        let (backend, model) = match &self.cx.routed {
            Some(r) => (r.backend.as_str(), r.model_label.as_str()),
            None => ("none", "none"),
        };
        let status = self
            .status
            .map_or_else(|| "aborted".to_owned(), |s| s.to_string());
        self.metrics.request_done(backend, model, &status);
        tracing::debug!(
            request_id = %self.cx.request_id,
            backend,
            model,
            status = %status,
            route = self.cx.routed.as_ref().map(|r| r.rule.as_str()).unwrap_or_default(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            "request done"
        );
    }
}

#[cfg(test)]
mod tests;
