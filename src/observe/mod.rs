//! Per-request observability: the finished-request record and where it goes.
//!
//! The exchange (pure) fills one [`RequestRecord`] per request and, when it ends (completed,
//! refused or aborted), hands it to a [`RecordSink`]. The [`Observer`] sink turns it into
//! GenAI metrics, an audit line and an OTLP span, all without blocking: audit lines and
//! spans go into bounded queues drained by their own tasks; a full queue drops the item and
//! counts it. Nothing here sees prompt text: the record holds ids, names, numbers and
//! statuses only.
//!
//! Seams for later stages: `usage`, `cost_usd`, `consumer`, `team` and `guard` are `None`
//! until the stages that know them fill them; every consumer (metrics, audit, span) already
//! emits them when present and omits them when absent.

pub mod audit;
pub mod semconv;
pub mod spans;
pub mod trace_context;

use crate::metrics::{GenAiRequest, Metrics};
use crate::routing::Routed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub use trace_context::TraceContext;

/// Token counts reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input_tokens: u64,
    /// Completion (output) tokens.
    pub output_tokens: u64,
}

/// What the guard did to one request (counts only, never the matched text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuardSummary {
    /// Findings by detector name, e.g. `("email", 2)`.
    pub detections: Vec<(String, u32)>,
    /// Values replaced by placeholders.
    pub masked: u32,
    /// The request was refused by a guard rule.
    pub blocked: bool,
}

/// Everything known about one finished request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// `x-request-id`.
    pub request_id: String,
    /// Trace and span ids; `sampled` says whether a span is exported.
    pub trace: TraceContext,
    /// Wall-clock start (request headers arrived at tollgate).
    pub started_at: SystemTime,
    /// From request headers to the end of the exchange.
    pub duration: Duration,
    /// GenAI operation (`chat`, `embeddings`, ...), once the endpoint is known.
    pub operation: Option<&'static str>,
    /// Provider dialect of the chosen backend (`openai`).
    pub provider: Option<&'static str>,
    /// The routing decision (backend, catalogue model, upstream model, rule).
    pub routed: Option<Routed>,
    /// Model the provider says answered (when the response was read).
    pub response_model: Option<String>,
    /// Final HTTP status; `None` when the stream ended before response headers.
    pub status: Option<u16>,
    /// tollgate's error code when it refused the request (`model_not_found`, ...).
    pub error_code: Option<&'static str>,
    /// Request headers to first response body chunk (SSE, when measured).
    pub time_to_first_token: Option<Duration>,
    /// Tokens, when a usage stage read them.
    pub usage: Option<Usage>,
    /// Cost in USD, when priced.
    pub cost_usd: Option<f64>,
    /// Calling consumer (API key owner), when authenticated.
    pub consumer: Option<String>,
    /// The consumer's team.
    pub team: Option<String>,
    /// Guard actions, when a guard ran.
    pub guard: Option<GuardSummary>,
    /// Admitted without a limits check because the limits store was down (fail-open).
    pub limits_fail_open: bool,
    /// The request's messages as the guard masked them (`audit.include_payload`).
    pub payload: Option<serde_json::Value>,
}

impl RequestRecord {
    /// The `error.type` value: tollgate's error code, the HTTP status for upstream errors,
    /// `aborted` when the stream ended early, or `None` for a success.
    pub fn error_type(&self) -> Option<String> {
        if let Some(code) = self.error_code {
            return Some(code.to_owned());
        }
        match self.status {
            None => Some("aborted".to_owned()),
            Some(s) if s >= 400 => Some(s.to_string()),
            Some(_) => None,
        }
    }

    /// Time per output token after the first: the semantic conventions' decode speed.
    pub fn time_per_output_token(&self) -> Option<Duration> {
        let ttft = self.time_to_first_token?;
        let out = self.usage?.output_tokens;
        if out < 2 {
            return None;
        }
        Some(self.duration.saturating_sub(ttft) / u32::try_from(out - 1).ok()?)
    }
}

/// Receives each finished request. Called from the exchange's completion (possibly inside
/// `Drop`): implementations must not block or panic.
pub trait RecordSink: Send + Sync {
    /// One request ended.
    fn finished(&self, record: RequestRecord);
}

/// A sink that keeps nothing (tests, tools).
#[derive(Debug, Default)]
pub struct Discard;

impl RecordSink for Discard {
    fn finished(&self, _record: RequestRecord) {}
}

/// The production sink: GenAI metrics, the audit log and span export.
pub struct Observer {
    metrics: Arc<Metrics>,
    audit: Option<audit::AuditLog>,
    spans: Option<spans::SpanQueue>,
}

impl Observer {
    /// Builds the sink from already started writers (either may be off).
    pub fn new(
        metrics: Arc<Metrics>,
        audit: Option<audit::AuditLog>,
        spans: Option<spans::SpanQueue>,
    ) -> Self {
        Self {
            metrics,
            audit,
            spans,
        }
    }
}

impl RecordSink for Observer {
    fn finished(&self, record: RequestRecord) {
        let error = record.error_type();
        self.metrics
            .genai_request(&genai_request(&record, error.as_deref()));
        if let Some(a) = &self.audit
            && !a.submit(&record)
        {
            self.metrics.audit_dropped();
        }
        if let Some(s) = &self.spans
            && record.trace.sampled
            && !s.submit(&record)
        {
            self.metrics.spans_dropped("queue_full", 1);
        }
    }
}

/// The record in the GenAI series' terms (labels `none` / `unknown` where unset).
fn genai_request<'a>(r: &'a RequestRecord, error_type: Option<&'a str>) -> GenAiRequest<'a> {
    let (backend, model) = r.routed.as_ref().map_or(("none", "none"), |rt| {
        (rt.backend.as_str(), rt.model_label.as_str())
    });
    GenAiRequest {
        operation: r.operation.unwrap_or("unknown"),
        provider: r.provider.unwrap_or("none"),
        model,
        backend,
        error_type,
        duration: r.duration,
        tokens: r.usage.map(|u| (u.input_tokens, u.output_tokens)),
        time_to_first_token: r.time_to_first_token,
        time_per_output_token: r.time_per_output_token(),
    }
}

/// A realistic record for tests: a routed chat request continuing a W3C trace.
#[cfg(test)]
pub(crate) fn sample_record() -> RequestRecord {
    let parent =
        trace_context::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    RequestRecord {
        request_id: "req-1".into(),
        trace: TraceContext::start(parent, 1_000_000, [5; 24]),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        duration: Duration::from_millis(1234),
        operation: Some("chat"),
        provider: Some("openai"),
        routed: Some(Routed {
            backend: "alpha".into(),
            model_label: "gpt-4o-mini".into(),
            upstream_model: "demo-small-2025".into(),
            requested_model: "gpt-4o-mini".into(),
            rule: "catalogue".into(),
            stream: true,
            reason: String::new(),
            chain: None,
            destinations: Vec::new(),
            asked_model: "gpt-4o-mini".into(),
        }),
        response_model: None,
        status: Some(200),
        error_code: None,
        time_to_first_token: None,
        usage: None,
        cost_usd: None,
        consumer: None,
        team: None,
        guard: None,
        limits_fail_open: false,
        payload: None,
    }
}

#[cfg(test)]
mod tests;
