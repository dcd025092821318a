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
//! recorded exactly once, when the exchange is dropped (stream ended, cancelled or reset);
//! at the same moment the finished [`RequestRecord`] goes to the [`RecordSink`], which does
//! the I/O (audit line, span export) elsewhere.
//!
//! Tracing: at request headers the exchange starts this request's span from the client's
//! `traceparent` (or a new trace) and, when trace export is on, sets `traceparent` upstream
//! to tollgate's span. Its `tracing` span (`request{request_id, trace_id}`) is entered by the
//! server around every message, so every log line about the request carries both ids.
//!
//! Time to first token: when enabled, an SSE response's body is switched to STREAMED with
//! `mode_override`; each chunk is answered unchanged and the first one's arrival is timed.

use super::reply::{self, Kind};
use crate::config::Snapshot;
use crate::error::{Fault, StageError, rescue};
use crate::guard::response::ResponseGuard;
use crate::headers::Headers;
use crate::metrics::Metrics;
use crate::observe::trace_context::{self, TraceContext};
use crate::observe::{GuardSummary, RecordSink, RequestRecord, semconv};
use crate::pii::Action;
use crate::proto::*;
use crate::stages::{Flow, Mutations, RequestCtx, guard, route};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
    sink: Arc<dyn RecordSink>,
    phase: Phase,
    cx: RequestCtx,
    /// Request body mode Envoy announced in `protocol_config` (first message only).
    body_mode: Option<i32>,
    status: Option<u16>,
    started: Instant,
    started_at: SystemTime,
    trace: Option<TraceContext>,
    /// tollgate's error code when it refused the request.
    error_code: Option<&'static str>,
    /// Response body switched to STREAMED to time the first token.
    timing_body: bool,
    first_body: Option<Duration>,
    log_span: tracing::Span,
}

impl Exchange {
    /// Starts an exchange on a pinned snapshot; the finished request goes to `sink`.
    pub fn new(snap: Arc<Snapshot>, metrics: Arc<Metrics>, sink: Arc<dyn RecordSink>) -> Self {
        metrics.stream_opened();
        Self {
            snap,
            metrics,
            sink,
            phase: Phase::Start,
            cx: RequestCtx::default(),
            body_mode: None,
            status: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
            trace: None,
            error_code: None,
            timing_body: false,
            first_body: None,
            log_span: tracing::info_span!(
                "request",
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty
            ),
        }
    }

    /// The `tracing` span that log lines about this request belong to.
    pub fn log_span(&self) -> &tracing::Span {
        &self.log_span
    }

    /// This request's trace context, once request headers arrived.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
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
            R::ResponseHeaders(h) => self.response_headers(&h),
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
        self.start_trace(&headers);
        self.cx.method = method;
        self.cx.path = path;
        self.cx.headers = headers;
        self.phase = Phase::AwaitBody;

        match route::request_headers(&self.snap, &mut self.cx, h.end_of_stream) {
            Err(e) => self.refuse(e),
            Ok(Flow::Respond { status, body }) => self.respond(status, body),
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

    /// Continues the caller's trace (or starts one) and, when spans are exported, names
    /// tollgate's span in the upstream `traceparent`.
    fn start_trace(&mut self, headers: &crate::headers::Headers) {
        let parent = headers
            .get("traceparent")
            .and_then(trace_context::parse_traceparent);
        let random = random_ids();
        let ppm = self
            .snap
            .settings
            .traces
            .as_ref()
            .map_or(0, |t| t.sampling_ppm);
        let trace = TraceContext::start(parent, ppm, random);
        if self.snap.settings.traces.is_some() {
            self.cx.mutations.set("traceparent", trace.traceparent());
        }
        self.log_span
            .record("request_id", self.cx.request_id.as_str());
        self.log_span
            .record("trace_id", tracing::field::display(trace.trace_id));
        self.trace = Some(trace);
    }

    fn request_body(&mut self, b: HttpBody) -> ProcessingResponse {
        match route::request_body(&self.snap, &mut self.cx, &b.body) {
            Err(e) => self.refuse(e),
            Ok(Flow::Respond { status, body }) => self.respond(status, body),
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

    /// A successful local answer (e.g. the models list).
    fn respond(&mut self, status: u16, body: Vec<u8>) -> ProcessingResponse {
        self.phase = Phase::Answered;
        self.status = Some(status);
        reply::immediate_json(status, body, &self.cx.request_id, &[], "tollgate_local")
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

    /// Records the status; asks Envoy for the response body (mode_override STREAMED) only
    /// when something needs it: the guard, or time-to-first-token timing of an SSE stream.
    fn response_headers(&mut self, h: &HttpHeaders) -> ProcessingResponse {
        self.status = status_of(h).or(self.status);
        let content_type = header_of(h, "content-type").unwrap_or_default();
        let sse = content_type.trim_start().starts_with("text/event-stream");
        let forwarded = self.phase == Phase::Forwarded;
        self.timing_body =
            self.snap.settings.time_to_first_token && sse && !h.end_of_stream && forwarded;
        let guard_needs = forwarded
            && self
                .cx
                .guard
                .as_ref()
                .is_some_and(|g| g.response.is_none() && g.policy.needs_response(&g.request));
        if !guard_needs {
            let m = Mutations::default();
            return if self.timing_body {
                reply::stream_response_body(reply::proceed(Kind::ResponseHeaders, m))
            } else {
                reply::proceed(Kind::ResponseHeaders, m)
            };
        }
        let encoding = header_of(h, "content-encoding");
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
                content_type,
                encoding,
            ));
        }
        reply::stream_response_body(reply::proceed(Kind::ResponseHeaders, m))
    }

    /// Answers every response body chunk with its replacement (empty while held back).
    fn response_body(&mut self, b: HttpBody) -> ProcessingResponse {
        if self.timing_body && self.first_body.is_none() && !b.body.is_empty() {
            self.first_body = Some(self.started.elapsed());
        }
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
                // The message can quote client input (a model name, a path): it goes to the
                // client only; the log gets the stable code and parameter.
                tracing::info!(request_id = %self.cx.request_id, status = local.status, code = local.code, param = local.param.unwrap_or_default(), "request refused")
            }
            Fault::Internal => {
                tracing::error!(request_id = %self.cx.request_id, status = local.status, code = local.code, error = ?err, "request failed")
            }
        }
        self.phase = Phase::Answered;
        self.status = Some(local.status);
        self.error_code = Some(local.code);
        reply::refuse(&local, &self.cx.request_id)
    }

    /// The finished-request record (called once, from `Drop`).
    fn record(&mut self) -> RequestRecord {
        // Without request headers (a misconfigured Envoy) there is no caller context: the
        // record gets a fresh, unsampled trace id so audit lines still have one.
        let trace = self
            .trace
            .unwrap_or_else(|| TraceContext::start(None, 0, random_ids()));
        let provider = self.cx.routed.as_ref().and_then(|r| {
            self.snap
                .routing
                .backends
                .iter()
                .find(|b| b.name == r.backend)
                .map(|b| semconv::provider(b.kind))
        });
        RequestRecord {
            request_id: std::mem::take(&mut self.cx.request_id),
            trace,
            started_at: self.started_at,
            duration: self.started.elapsed(),
            operation: self.cx.endpoint.map(semconv::operation),
            provider,
            routed: self.cx.routed.take(),
            response_model: None,
            status: self.status,
            error_code: self.error_code,
            time_to_first_token: self.first_body,
            usage: None,
            cost_usd: None,
            consumer: None,
            team: None,
            guard: self.guard_summary(),
        }
    }

    /// What the guard did, as counts for the audit line and span (never values).
    fn guard_summary(&self) -> Option<GuardSummary> {
        let refused = matches!(
            self.error_code,
            Some("content_blocked" | "pii_blocked" | "tool_denied")
        );
        let Some(g) = self.cx.guard.as_ref() else {
            // A refusal happens before the guard's state is kept: the code says it all.
            return refused.then(|| GuardSummary {
                blocked: true,
                ..GuardSummary::default()
            });
        };
        let mut by_entity: std::collections::BTreeMap<&str, u32> = Default::default();
        let mut masked = 0u32;
        let response = g.response.as_ref().map(|r| &r.state);
        for (entity, action, n) in crate::guard::counts(&g.request)
            .chain(response.into_iter().flat_map(crate::guard::counts))
        {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            *by_entity.entry(entity).or_default() += n;
            if !g.policy.shadow && !matches!(action, Action::Allow | Action::Block) {
                masked = masked.saturating_add(n);
            }
        }
        let ended = g.response.as_ref().is_some_and(|r| r.violation().is_some());
        Some(GuardSummary {
            detections: by_entity
                .into_iter()
                .map(|(e, n)| (e.to_owned(), n))
                .collect(),
            masked,
            blocked: !g.policy.shadow && (refused || ended),
        })
    }
}

/// 24 random bytes for a trace id and a span id. A v4 UUID has fixed version and variant
/// bits (bytes 6 and 8); only its fully random bytes are used, or ratio sampling, which reads
/// the trace id's low bytes, would be skewed.
fn random_ids() -> [u8; 24] {
    let mut out = [0u8; 24];
    let mut n = 0;
    while n < out.len() {
        let u = uuid::Uuid::new_v4();
        for (i, b) in u.as_bytes().iter().enumerate() {
            if i != 6 && i != 8 && n < out.len() {
                out[n] = *b;
                n += 1;
            }
        }
    }
    out
}

fn header_of<'a>(h: &'a HttpHeaders, name: &str) -> Option<&'a str> {
    let hv = h
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|hv| hv.key.eq_ignore_ascii_case(name))?;
    let raw = if hv.raw_value.is_empty() {
        hv.value.as_bytes()
    } else {
        &hv.raw_value
    };
    std::str::from_utf8(raw).ok()
}

fn status_of(h: &HttpHeaders) -> Option<u16> {
    header_of(h, ":status")?.parse().ok()
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.metrics.stream_closed();
        if self.phase == Phase::Start {
            return; // The stream carried no request at all.
        }
        let _entered = self.log_span.clone().entered();
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
        let record = self.record();
        self.sink.finished(record);
    }
}

#[cfg(test)]
mod tests;
