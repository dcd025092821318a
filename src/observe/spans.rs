//! OTLP span export: one span per request, built from the finished [`RequestRecord`].
//!
//! The span's ids were fixed when the request started (its `traceparent` already went
//! upstream), so the span is assembled here as `SpanData` with those ids and the recorded
//! start and end times, rather than through an SDK tracer (which picks its own span id).
//! [`span`] is pure; [`SpanQueue`] is a bounded channel in front of one export task that
//! batches spans and calls the opentelemetry-otlp exporter (gRPC via tonic, or HTTP with
//! protobuf bodies) with a timeout. A full queue drops the span and a failed export drops
//! the batch; both are counted in `tollgate_telemetry_spans_dropped_total{reason}`, and no
//! request ever waits on the collector.
//!
//! Span shape: kind CLIENT (tollgate calls the provider on the client's behalf, as GenAI
//! client spans are), name `{gen_ai.operation.name} {gen_ai.request.model}`, status ERROR
//! for refusals, aborts and upstream 4xx/5xx with `error.type` set.

use super::{RequestRecord, semconv as sc};
use crate::metrics::Metrics;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

// Owned here, not by `config`: the compiler builds these, the exporter reads them, and
// the dependency runs config -> observe only.

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// Collector URL (for HTTP, the full `/v1/traces` URL).
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Share of new traces recorded, in millionths (0..=1_000_000).
    pub sampling_ppm: u32,
    /// `service.name`.
    pub service_name: String,
    /// Bound of the export queue.
    pub queue_size: usize,
    /// Longest export call.
    pub export_timeout: Duration,
}

/// Largest batch per export call.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans.
const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The OTLP span for one request.
pub fn span(r: &RequestRecord) -> SpanData {
    let mut attrs = Vec::with_capacity(20);
    let mut add = |k: &'static str, v: opentelemetry::Value| attrs.push(KeyValue::new(k, v));
    let operation = r.operation.unwrap_or("unknown");
    add(sc::OPERATION_NAME, operation.into());
    if let Some(p) = r.provider {
        add(sc::PROVIDER_NAME, p.into());
    }
    let mut name = operation.to_owned();
    if let Some(rt) = &r.routed {
        if !rt.requested_model.is_empty() {
            add(sc::REQUEST_MODEL, rt.requested_model.clone().into());
            name.push(' ');
            name.push_str(&rt.requested_model);
        }
        add(sc::BACKEND, rt.backend.clone().into());
        add(sc::RULE, rt.rule.clone().into());
        add(sc::MODEL, rt.model_label.clone().into());
        add(sc::UPSTREAM_MODEL, rt.upstream_model.clone().into());
        add(sc::STREAM, rt.stream.into());
    }
    if let Some(m) = &r.response_model {
        add(sc::RESPONSE_MODEL, m.clone().into());
    }
    if let Some(u) = r.usage {
        add(
            sc::USAGE_INPUT_TOKENS,
            saturating_i64(u.input_tokens).into(),
        );
        add(
            sc::USAGE_OUTPUT_TOKENS,
            saturating_i64(u.output_tokens).into(),
        );
    }
    add(sc::REQUEST_ID, r.request_id.clone().into());
    if let Some(s) = r.status {
        add(sc::HTTP_STATUS, i64::from(s).into());
    }
    let error = r.error_type();
    if let Some(e) = &error {
        add(sc::ERROR_TYPE, e.clone().into());
    }
    if let Some(t) = r.time_to_first_token {
        add(sc::TIME_TO_FIRST_TOKEN, t.as_secs_f64().into());
    }
    if let Some(c) = r.cost_usd {
        add(sc::COST_USD, c.into());
    }
    if let Some(c) = &r.consumer {
        add(sc::CONSUMER, c.clone().into());
    }
    if let Some(t) = &r.team {
        add(sc::TEAM, t.clone().into());
    }
    if let Some(g) = &r.guard {
        let total: u32 = g.detections.iter().map(|(_, n)| n).sum();
        add(sc::GUARD_DETECTIONS, i64::from(total).into());
        add(sc::GUARD_MASKED, i64::from(g.masked).into());
        add(sc::GUARD_BLOCKED, g.blocked.into());
    }
    let flags = if r.trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(r.trace.trace_id.0),
            SpanId::from_bytes(r.trace.span_id.0),
            flags,
            false,
            TraceState::NONE,
        ),
        parent_span_id: r
            .trace
            .parent
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.0)),
        parent_span_is_remote: r.trace.parent.is_some(),
        span_kind: SpanKind::Client,
        name: name.into(),
        start_time: r.started_at,
        end_time: r.started_at + r.duration,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("tollgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The bounded queue in front of the export task.
#[derive(Clone)]
pub struct SpanQueue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanQueue {
    /// Queues the request's span; `false` when the queue is full (the span is dropped).
    pub fn submit(&self, record: &RequestRecord) -> bool {
        self.tx.try_send(span(record)).is_ok()
    }
}

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct ExporterError {
    endpoint: String,
    reason: String,
}

/// Builds the exporter and starts the export task on the current tokio runtime. The task
/// ends (after exporting what is queued) when every [`SpanQueue`] clone is dropped.
pub fn start(
    settings: &TraceSettings,
    metrics: Arc<Metrics>,
) -> Result<(SpanQueue, tokio::task::JoinHandle<()>), ExporterError> {
    let err = |e: &dyn std::fmt::Display| ExporterError {
        endpoint: settings.endpoint.clone(),
        reason: e.to_string(),
    };
    let mut exporter = match settings.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .build(),
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
    }
    .map_err(|e| err(&e))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel(settings.queue_size);
    let timeout = settings.export_timeout;
    let task = tokio::spawn(export_loop(rx, exporter, metrics, timeout));
    Ok((SpanQueue { tx }, task))
}

async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut failing = false;
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break; // every sender is gone and the queue is empty
        }
        // Give a partial batch a moment to fill, so a busy gateway makes few export calls.
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let n = batch.len();
        let outcome =
            tokio::time::timeout(timeout, exporter.export(std::mem::take(&mut batch))).await;
        match outcome {
            Ok(Ok(())) => {
                metrics.spans_exported(n);
                failing = false;
            }
            Ok(Err(e)) => {
                metrics.spans_dropped("export_failed", n);
                if !failing {
                    tracing::warn!(error = %e, spans = n, "span export failed; spans dropped");
                }
                failing = true;
            }
            Err(_) => {
                metrics.spans_dropped("export_timeout", n);
                if !failing {
                    tracing::warn!(spans = n, "span export timed out; spans dropped");
                }
                failing = true;
            }
        }
    }
    let _ = exporter.shutdown_with_timeout(timeout);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{GuardSummary, Usage, sample_record};

    fn attr(s: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn span_carries_genai_and_tollgate_attributes() {
        let r = sample_record();
        let s = span(&r);
        assert_eq!(s.name, "chat gpt-4o-mini");
        assert_eq!(s.span_kind, SpanKind::Client);
        assert_eq!(attr(&s, sc::OPERATION_NAME), Some("chat".into()));
        assert_eq!(attr(&s, sc::PROVIDER_NAME), Some("openai".into()));
        assert_eq!(attr(&s, sc::REQUEST_MODEL), Some("gpt-4o-mini".into()));
        assert_eq!(attr(&s, sc::UPSTREAM_MODEL), Some("demo-small-2025".into()));
        assert_eq!(attr(&s, sc::BACKEND), Some("alpha".into()));
        assert_eq!(attr(&s, sc::RULE), Some("catalogue".into()));
        assert_eq!(attr(&s, sc::HTTP_STATUS), Some(200i64.into()));
        assert_eq!(attr(&s, sc::ERROR_TYPE), None);
        assert_eq!(s.status, Status::Unset);
        // Unknown today, so absent rather than zero.
        for k in [
            sc::USAGE_INPUT_TOKENS,
            sc::COST_USD,
            sc::CONSUMER,
            sc::GUARD_DETECTIONS,
        ] {
            assert_eq!(attr(&s, k), None, "{k}");
        }
        assert_eq!(
            s.span_context.trace_id().to_string(),
            r.trace.trace_id.to_string()
        );
        assert_eq!(s.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(s.parent_span_is_remote);
        assert_eq!(
            s.end_time.duration_since(s.start_time).ok(),
            Some(r.duration)
        );
    }

    #[test]
    fn optional_fields_appear_when_known_and_errors_set_status() {
        let mut r = sample_record();
        r.usage = Some(Usage {
            input_tokens: 12,
            output_tokens: 34,
        });
        r.cost_usd = Some(0.0021);
        r.consumer = Some("svc-a".into());
        r.team = Some("search".into());
        r.guard = Some(GuardSummary {
            detections: vec![("email".into(), 2), ("card".into(), 1)],
            masked: 3,
            blocked: false,
        });
        r.status = Some(429);
        let s = span(&r);
        assert_eq!(attr(&s, sc::USAGE_INPUT_TOKENS), Some(12i64.into()));
        assert_eq!(attr(&s, sc::USAGE_OUTPUT_TOKENS), Some(34i64.into()));
        assert_eq!(attr(&s, sc::COST_USD), Some(0.0021.into()));
        assert_eq!(attr(&s, sc::TEAM), Some("search".into()));
        assert_eq!(attr(&s, sc::GUARD_DETECTIONS), Some(3i64.into()));
        assert_eq!(attr(&s, sc::ERROR_TYPE), Some("429".into()));
        assert_eq!(s.status, Status::error("429"));

        r.status = None;
        r.trace.parent = None;
        let s = span(&r);
        assert_eq!(attr(&s, sc::ERROR_TYPE), Some("aborted".into()));
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert!(!s.parent_span_is_remote);
    }
}
