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
//!
//! Stages are called through [`crate::stages::Stages`] (fixed order, static dispatch):
//! request headers `access` → `route`; request body `route` → `access` (model/backend
//! allowed?) → `guard` → `usage` → `limits` → `provider`. The limits stage returns
//! `Flow::Reserve`: the exchange performs the one await (the limits store, bounded by its
//! command timeout), hands the answer back, and resumes after it. Response body: the response pipeline
//! ([`crate::stages::response`]) translates, decodes an SSE body once, lets `usage` observe
//! the events first (and strip the usage event it injected), then `guard` masks what is
//! passed on, and encodes once. Usage is completed once — at the response's end of stream, at response headers when
//! the body is not read, or in `Drop` when the stream ends early — and its settlement is
//! queued for the background worker (Drop cannot await). The one await is guarded: a
//! reserve still in flight when the exchange is dropped (Envoy cancelled the stream) queues
//! its cancellation, so the store releases it whether or not the call reached it.

use super::reply::{self, Kind};
use crate::config::Snapshot;
use crate::error::{Fault, StageError, rescue};
use crate::headers::Headers;
use crate::metrics::Metrics;
use crate::observe::trace_context::{self, TraceContext};
use crate::observe::{GuardSummary, RecordSink, RequestRecord, semconv};
use crate::pii::Action;
use crate::proto::*;
use crate::stages::limits::{Services, Settlement};
use crate::stages::{Cx, Flow, RequestCtx, ResponseHead, Stages, limits, route, usage};

/// The pipeline's stages, in their fixed order.
const STAGES: Stages = Stages {
    access: crate::stages::Access,
    route: crate::stages::Route,
    guard: crate::stages::Guard,
    usage: crate::stages::Usage,
    limits: crate::stages::Limits,
    provider: crate::stages::Provider,
};
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
    svc: Arc<Services>,
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
    /// Tokens, cost (USD, when priced) and fail-open, once usage is completed.
    settled: Option<(crate::observe::Usage, Option<f64>, bool)>,
    /// Signs the attempt token of a chain-routed request; without one no token is issued
    /// and the upstream-level filter refuses every attempt (fail closed).
    token_key: Option<Arc<super::token::TokenKey>>,
}

impl Exchange {
    /// Starts an exchange on a pinned snapshot; `svc` holds the limits store and settlement
    /// queue; the finished request goes to `sink`.
    pub fn new(
        snap: Arc<Snapshot>,
        metrics: Arc<Metrics>,
        svc: Arc<Services>,
        sink: Arc<dyn RecordSink>,
    ) -> Self {
        metrics.stream_opened();
        Self {
            snap,
            metrics,
            sink,
            svc,
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
            settled: None,
            token_key: None,
            log_span: tracing::info_span!(
                "request",
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty
            ),
        }
    }

    /// Signs attempt tokens with `key` (see [`super::token`]).
    pub fn with_token_key(mut self, key: Arc<super::token::TokenKey>) -> Self {
        self.token_key = Some(key);
        self
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
    pub async fn on_message(
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
            R::RequestBody(b) if self.phase == Phase::AwaitBody => self.request_body(b).await,
            R::RequestBody(_) if self.phase == Phase::Start => {
                // Headers never came (request_header_mode SKIP): we cannot route safely.
                self.refuse(StageError::Misconfigured(
                    "request headers were not sent to tollgate; set request_header_mode: SEND",
                ))
            }
            R::ResponseHeaders(h) => self.response_headers(&h),
            R::ResponseBody(b) => self.response_body(&b),
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
        // A client-sent id is taken only when trusted (Envoy passes it through unless its
        // listener sanitises it): else a client could collide or forge ids in the audit log
        // and across the attempts of other requests.
        if self.snap.settings.trust_request_id
            && let Some(v) = headers
                .get("x-request-id")
                .filter(|v| !v.is_empty() && v.len() <= 200 && v.bytes().all(is_id_byte))
        {
            request_id = Some(v.to_owned());
        }
        let own_id = request_id.is_none();
        self.cx.request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if own_id {
            // Upstream, the attempts and the logs all see tollgate's id.
            self.cx
                .mutations
                .set("x-request-id", self.cx.request_id.as_bytes());
        }
        self.start_trace(&headers);
        self.cx.method = method;
        self.cx.path = path;
        self.cx.headers = headers;
        self.phase = Phase::AwaitBody;

        let mut cx = Cx {
            snap: &self.snap,
            svc: &self.svc,
            metrics: &self.metrics,
            now: SystemTime::now(),
            roll: 0,
            end_of_stream: h.end_of_stream,
            req: &mut self.cx,
        };
        match STAGES.request_headers(&mut cx).1 {
            Err(e) => self.refuse(e),
            Ok(Flow::Respond { status, body }) => self.respond(status, body),
            Ok(Flow::Reserve(_)) => self.refuse(StageError::Internal(
                "a stage asked for a reservation at request headers".into(),
            )),
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

    async fn request_body(&mut self, b: HttpBody) -> ProcessingResponse {
        let roll = uuid::Uuid::new_v4().as_u64_pair().0;
        self.cx.body = crate::llm::body::Body::new(b.body);
        let mut from = 0;
        loop {
            let mut cx = self.stage_cx(roll);
            let (at, verdict) = STAGES.request_body(&mut cx, from);
            match verdict {
                Ok(Flow::Next) => break,
                Ok(Flow::Respond { status, body }) => return self.respond(status, body),
                Ok(Flow::Reserve(demand)) => {
                    // The request's one await: the limits store, bounded by its command
                    // timeout; cancelled (this future dropped), the reserve is released.
                    let answer = limits::reserve(&self.svc, &self.metrics, &demand).await;
                    let mut cx = self.stage_cx(roll);
                    if let Err(e) = STAGES.limits.reserved(&mut cx, &demand, answer) {
                        return self.refuse(e);
                    }
                    from = at + 1;
                }
                // After admission a reservation may be held: it is released first.
                Err(e) if at > Stages::ADMITTED_AFTER => return self.refuse_admitted(e),
                Err(e) => return self.refuse(e),
            }
        }
        // The one place the edited body and its length are handed to Envoy.
        if self.cx.body.is_edited() {
            match self.cx.body.current() {
                Ok(current) => {
                    let current = current.to_vec();
                    self.cx
                        .mutations
                        .set("content-length", current.len().to_string());
                    self.cx.mutations.body = Some(current);
                }
                Err(e) => return self.refuse_admitted(StageError::Internal(e.to_string())),
            }
        }
        self.issue_attempt_token();
        if let Some(who) = &self.cx.identity {
            self.cx
                .mutations
                .metadata
                .push(("consumer", who.consumer.clone()));
            if let Some(team) = &who.team {
                self.cx.mutations.metadata.push(("team", team.clone()));
            }
        }
        self.phase = Phase::Forwarded;
        reply::proceed(Kind::RequestBody, self.cx.mutations.take())
    }

    /// For a chain-routed request: signs what the decision allowed (this request id, the
    /// chain, the steps access control approved, the client's path and query) for the
    /// upstream-level filter.
    fn issue_attempt_token(&mut self) {
        let (Some(key), Some(routed)) = (&self.token_key, self.cx.routed.as_ref()) else {
            return;
        };
        let Some(chain) = routed.chain.as_deref() else {
            return;
        };
        let table = &self.snap.routing;
        let Some(chain) = table.chain(chain) else {
            return;
        };
        let (path, query) = self
            .cx
            .path
            .split_at(self.cx.path.find('?').unwrap_or(self.cx.path.len()));
        let ttl = self.snap.settings.grpc_auth.attempt_token_ttl;
        let grant = super::token::Grant {
            rid: self.cx.request_id.clone(),
            chain: chain.name.clone(),
            steps: routed
                .destinations
                .iter()
                .map(|d| (table.backends[d.backend].name.clone(), d.model.clone()))
                .collect(),
            path: path.to_owned(),
            query: query.to_owned(),
            exp: super::token::unix_ms(SystemTime::now() + ttl),
        };
        self.cx
            .mutations
            .metadata
            .push((super::token::METADATA_KEY, super::token::issue(key, &grant)));
    }

    /// A successful local answer (e.g. the models list).
    fn respond(&mut self, status: u16, body: Vec<u8>) -> ProcessingResponse {
        self.phase = Phase::Answered;
        self.status = Some(status);
        reply::immediate_json(status, body, &self.cx.request_id, &[], "tollgate_local")
    }

    /// The stages' view of this request for one phase.
    fn stage_cx(&mut self, roll: u64) -> Cx<'_> {
        Cx {
            snap: &self.snap,
            svc: &self.svc,
            metrics: &self.metrics,
            now: SystemTime::now(),
            roll,
            end_of_stream: false,
            req: &mut self.cx,
        }
    }

    /// Records the status; asks Envoy for the response body (mode_override STREAMED) only
    /// when something needs it: usage metering, the guard, or time-to-first-token timing.
    fn response_headers(&mut self, h: &HttpHeaders) -> ProcessingResponse {
        self.status = status_of(h).or(self.status);
        let forwarded = self.phase == Phase::Forwarded;
        let mut head = ResponseHead {
            status: self.status,
            content_type: header_of(h, "content-type").unwrap_or_default().into(),
            encoding: header_of(h, "content-encoding"),
            answered_by: header_of(h, route::ANSWERED_BY_HEADER),
        };
        let mut stream_body = false;
        if forwarded {
            let mut cx = self.stage_cx(0);
            match STAGES.response_headers(&mut cx, &mut head) {
                Ok(wants) => stream_body = wants,
                Err(e) => {
                    // The usage known now is charged; the reply is the refusal alone.
                    self.complete(false);
                    let _ = self.cx.mutations.take();
                    return self.refuse(e);
                }
            }
            if self.cx.charge.as_deref().is_some_and(|c| !c.reading_body()) {
                // Nothing to read: the usage is known now.
                self.complete(false);
            }
        }
        let sse = head
            .content_type
            .trim_start()
            .starts_with("text/event-stream");
        self.timing_body =
            self.snap.settings.time_to_first_token && sse && !h.end_of_stream && forwarded;
        let mut m = self.cx.mutations.take();
        m.stream_response_body |= stream_body || self.timing_body;
        reply::proceed(Kind::ResponseHeaders, m)
    }

    /// Answers every response body chunk through the response pipeline (translate, decode
    /// once, usage observes, the guard rewrites, encode once).
    fn response_body(&mut self, b: &HttpBody) -> ProcessingResponse {
        if self.timing_body && self.first_body.is_none() && !b.body.is_empty() {
            self.first_body = Some(self.started.elapsed());
        }
        let metering = self
            .cx
            .charge
            .as_deref()
            .is_some_and(usage::Charge::reading_body);
        let mut cx = self.stage_cx(0);
        let replacement = STAGES.response_body(&mut cx, &b.body, b.end_of_stream);
        if metering && b.end_of_stream {
            self.complete(false);
        }
        let mut m = self.cx.mutations.take();
        if replacement.is_some() {
            m.body = replacement;
        }
        reply::proceed(Kind::ResponseBody, m)
    }

    /// Records the request's usage and cost, publishes them as metadata (unless the stream
    /// is gone) and queues the settlement. Runs at most once.
    fn complete(&mut self, aborted: bool) {
        let Some(charge) = self.cx.charge.as_deref_mut() else {
            return;
        };
        if charge.settled {
            return;
        }
        charge.settled = true;
        let usage = charge.usage_so_far();
        let cost = charge.cost(&usage);
        let (backend, model) = match &self.cx.routed {
            Some(r) => (r.backend.as_str(), r.model_label.as_str()),
            None => ("none", "none"),
        };
        let priced = charge.price.is_some();
        let unlimited = charge.reservation.as_ref().is_some_and(|r| r.unbacked);
        if charge.status.is_some_and(|s| (200..300).contains(&s)) {
            self.metrics.usage(
                backend,
                model,
                &usage,
                priced.then(|| crate::pricing::usd(cost)),
            );
        }
        self.settled = Some((
            crate::observe::Usage {
                input_tokens: usage.input,
                output_tokens: usage.output,
            },
            priced.then(|| crate::pricing::usd(cost)),
            unlimited,
        ));
        if let Some(reservation) = charge.reservation.take() {
            self.svc.queue(
                Settlement {
                    reservation,
                    actual: limits::actual(1, &usage, cost),
                },
                &self.metrics,
            );
        }
        // The audit log (observe::audit) carries these per request; this is the debug view.
        tracing::debug!(
            target: "tollgate::usage",
            request_id = %self.cx.request_id,
            consumer = self.cx.identity.as_ref().map(|w| w.consumer.as_str()).unwrap_or("anonymous"),
            team = self.cx.identity.as_ref().and_then(|w| w.team.as_deref()).unwrap_or(""),
            backend,
            model,
            status = charge.status.unwrap_or_default(),
            input_tokens = usage.input,
            cached_input_tokens = usage.cached_input,
            output_tokens = usage.output,
            reasoning_tokens = usage.reasoning,
            usage_reported = usage.reported,
            cost_usd = crate::pricing::usd(cost),
            aborted,
            fail_open = unlimited,
            "usage"
        );
        if !aborted {
            let m = &mut self.cx.mutations.metadata_numbers;
            m.extend([
                ("llm_input_token", usage.input as f64),
                ("llm_output_token", usage.output as f64),
                ("llm_total_token", usage.total() as f64),
                ("llm_cached_input_token", usage.cached_input as f64),
                ("llm_reasoning_token", usage.reasoning as f64),
            ]);
            if priced {
                m.push(("cost_usd", crate::pricing::usd(cost)));
            }
        }
    }

    fn refuse(&mut self, err: StageError) -> ProcessingResponse {
        if let StageError::Guard(g) = &err {
            let policy = self
                .cx
                .routed
                .as_ref()
                .and_then(|r| crate::stages::guard::policy_for(&self.snap, r))
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
        // Nothing went upstream: nothing to charge (admission is the last step, so no
        // reservation exists yet).
        self.cx.charge = None;
        let anthropic = self.cx.endpoint == Some(crate::llm::Endpoint::Messages);
        reply::refuse(&local, &self.cx.request_id, anthropic)
    }

    /// Refuses a request that was already admitted by the limits stage: its reservation is
    /// released (nothing went upstream) before the refusal.
    fn refuse_admitted(&mut self, err: StageError) -> ProcessingResponse {
        if let Some(charge) = self.cx.charge.as_deref_mut() {
            charge.status = Some(400);
        }
        self.complete(true);
        self.refuse(err)
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
            response_model: self
                .cx
                .charge
                .as_mut()
                .and_then(|c| c.response_model.take()),
            status: self.status,
            error_code: self.error_code,
            time_to_first_token: self.first_body,
            usage: self.settled.as_ref().map(|(u, _, _)| *u),
            cost_usd: self.settled.as_ref().and_then(|(_, c, _)| *c),
            consumer: self.cx.identity.as_ref().map(|w| w.consumer.clone()),
            team: self.cx.identity.as_ref().and_then(|w| w.team.clone()),
            limits_fail_open: self.settled.as_ref().is_some_and(|(_, _, f)| *f),
            payload: self.cx.payload.take(),
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

/// 24 random bytes for a trace id and a span id (a per-thread generator: no system call).
fn random_ids() -> [u8; 24] {
    let mut out = [0u8; 24];
    crate::fastrand::fill(&mut out);
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
        // A stream that ended before its response did (client gone, reset, timeout): charge
        // what was delivered and release the rest of the reservation.
        self.complete(true);
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

/// Request-id characters taken from a trusted client: printable ASCII without spaces, so
/// an id cannot split a log line or a header.
fn is_id_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b)
}
