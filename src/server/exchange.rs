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
//!
//! Stage order (fixed): request headers `access` → `route`; request body `route` →
//! `access` → `usage` → `limits` (the one await: the limits store, bounded by its command
//! timeout); response headers/body `usage`. Usage is completed once — at the response's end
//! of stream, at response headers when the body is not read, or in `Drop` when the stream
//! ends early — and its settlement is queued for the background worker (Drop cannot await).

use super::reply::{self, Kind};
use crate::config::Snapshot;
use crate::error::{Fault, StageError, rescue};
use crate::headers::Headers;
use crate::metrics::Metrics;
use crate::proto::*;
use crate::stages::limits::{Services, Settlement};
use crate::stages::{Flow, RequestCtx, access, limits, route, usage};
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
    svc: Arc<Services>,
    phase: Phase,
    cx: RequestCtx,
    /// Request body mode Envoy announced in `protocol_config` (first message only).
    body_mode: Option<i32>,
    status: Option<u16>,
    started: Instant,
}

impl Exchange {
    /// Starts an exchange on a pinned snapshot.
    pub fn new(snap: Arc<Snapshot>, metrics: Arc<Metrics>, svc: Arc<Services>) -> Self {
        metrics.stream_opened();
        Self {
            snap,
            metrics,
            svc,
            phase: Phase::Start,
            cx: RequestCtx::default(),
            body_mode: None,
            status: None,
            started: Instant::now(),
        }
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

        if let Err(e) = access::request_headers(&self.snap, &mut self.cx) {
            return self.refuse(e);
        }
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

    async fn request_body(&mut self, b: HttpBody) -> ProcessingResponse {
        match route::request_body(&self.snap, &mut self.cx, &b.body) {
            Err(e) => return self.refuse(e),
            Ok(Flow::Respond { status, body }) => {
                self.phase = Phase::Answered;
                self.status = Some(status);
                return reply::immediate_json(
                    status,
                    body,
                    &self.cx.request_id,
                    &[],
                    "tollgate_local",
                );
            }
            Ok(Flow::Next) => {}
        }
        if let Err(e) = access::after_route(&self.snap, &mut self.cx) {
            return self.refuse(e);
        }
        usage::request_body(&self.snap, &mut self.cx, b.body);
        if let Err(e) = limits::admit(&self.snap, &mut self.cx, &self.svc, &self.metrics).await {
            return self.refuse(e);
        }
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

    fn response_headers(&mut self, h: &HttpHeaders) -> ProcessingResponse {
        self.status = status_of(h).or(self.status);
        if self.phase == Phase::Forwarded && self.cx.charge.is_some() {
            let content_type = header_of(h, "content-type").unwrap_or_default();
            if usage::response_headers(&mut self.cx, self.status, &content_type) {
                self.cx.mutations.stream_response_body = true;
            } else {
                // Nothing to read: the usage is known now.
                self.complete(false);
            }
        }
        reply::proceed(Kind::ResponseHeaders, self.cx.mutations.take())
    }

    fn response_body(&mut self, b: &HttpBody) -> ProcessingResponse {
        let reading = self
            .cx
            .charge
            .as_deref()
            .is_some_and(usage::Charge::reading_body);
        if reading {
            if let Some(replacement) = usage::response_body(&mut self.cx, &b.body, b.end_of_stream)
            {
                self.cx.mutations.body = Some(replacement);
            }
            if b.end_of_stream {
                self.complete(false);
            }
        }
        reply::proceed(Kind::ResponseBody, self.cx.mutations.take())
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
        if let Some(reservation) = charge.reservation.take() {
            self.svc.queue(Settlement {
                reservation,
                actual: limits::actual(1, &usage, cost),
            });
        }
        tracing::info!(
            target: "tollgate::audit",
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
        // Nothing went upstream: nothing to charge (admission is the last step, so no
        // reservation exists yet).
        self.cx.charge = None;
        reply::refuse(&local, &self.cx.request_id)
    }
}

fn header_of(h: &HttpHeaders, name: &str) -> Option<String> {
    let hv = h
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|hv| hv.key == name)?;
    let raw = if hv.raw_value.is_empty() {
        hv.value.as_bytes()
    } else {
        &hv.raw_value
    };
    std::str::from_utf8(raw).ok().map(str::to_owned)
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
        // A stream that ended before its response did (client gone, reset, timeout): charge
        // what was delivered and release the rest of the reservation.
        self.complete(true);
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
