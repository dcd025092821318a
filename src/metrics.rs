//! Prometheus metrics: one registry, handles with unit-suffixed names.
//!
//! Labels are bounded: `model` is a catalogue name or `unlisted`, `backend` a configured
//! backend or `none`, never a value a client can choose freely. The GenAI metrics use the
//! OpenTelemetry semantic-convention names mapped to Prometheus (see `observe::semconv`);
//! their `gen_ai_request_model` label is the catalogue name too, never the raw request.
//! Token, cost and guard series appear only once a stage reports those numbers.

use prometheus::{
    CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One finished request as the GenAI series see it: bounded label values and numbers.
/// `observe` builds it from its request record, so this registry knows no record type
/// and the dependency runs observe -> metrics only.
#[derive(Debug, Clone, Copy)]
pub struct GenAiRequest<'a> {
    /// `gen_ai.operation.name` (`unknown` when the endpoint has none).
    pub operation: &'a str,
    /// `gen_ai.provider.name` (`none` before routing).
    pub provider: &'a str,
    /// Catalogue model label (`none` before routing).
    pub model: &'a str,
    /// Backend name (`none` before routing).
    pub backend: &'a str,
    /// `error.type`, when the request failed.
    pub error_type: Option<&'a str>,
    /// Whole request duration.
    pub duration: Duration,
    /// Input and output tokens, when the provider reported them.
    pub tokens: Option<(u64, u64)>,
    /// Time to the first streamed token.
    pub time_to_first_token: Option<Duration>,
    /// Mean time per output token after the first.
    pub time_per_output_token: Option<Duration>,
}

/// All of tollgate's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    message_seconds: HistogramVec,
    streams_active: IntGauge,
    reloads: IntCounterVec,
    last_reload_success: IntGauge,
    last_success_timestamp: Gauge,
    config_info: IntGaugeVec,
    genai: GenAi,
    guard_detections: IntCounterVec,
    guard_blocked: IntCounterVec,
    usage: UsageMetrics,
    endpoint_refused: IntCounterVec,
}

/// GenAI semantic-convention metrics and the telemetry pipeline's own counters.
struct GenAi {
    request_seconds: HistogramVec,
    token_usage: HistogramVec,
    ttft_seconds: HistogramVec,
    tpot_seconds: HistogramVec,
    errors: IntCounterVec,
    audit_dropped: IntCounter,
    spans_dropped: IntCounterVec,
    spans_exported: IntCounter,
}

const GENAI_LABELS: &[&str] = &[
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Registration of fixed, distinct names cannot fail; a failure would be a programming
// error caught by every test that builds `Metrics`.
#[expect(clippy::expect_used, reason = "static metric definitions")]
impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_requests_total",
                "Requests seen, by backend, model and final HTTP status",
            ),
            &["backend", "model", "status"],
        )
        .expect("metric");
        let message_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_extproc_message_duration_seconds",
                "Time tollgate spent answering one ext_proc message, by phase",
            )
            .buckets(vec![
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.002_5, 0.005, 0.01, 0.025, 0.1,
            ]),
            &["phase"],
        )
        .expect("metric");
        let streams_active =
            IntGauge::new("tollgate_extproc_streams_active", "Open ext_proc streams")
                .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "tollgate_config_reloads_total",
                "Config reload attempts by result",
            ),
            &["result"],
        )
        .expect("metric");
        let last_reload_success = IntGauge::new(
            "tollgate_config_last_reload_success",
            "1 if the last reload attempt succeeded (or none failed since start), 0 if it was rejected",
        )
        .expect("metric");
        let last_success_timestamp = Gauge::new(
            "tollgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
        )
        .expect("metric");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "tollgate_config_info",
                "The config serving now (content hash)",
            ),
            &["hash"],
        )
        .expect("metric");
        let hist = |name: &str, help: &str, buckets: &[f64], extra: &[&str]| {
            let labels: Vec<&str> = GENAI_LABELS.iter().chain(extra).copied().collect();
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &labels,
            )
            .expect("metric")
        };
        // Bucket boundaries are the ones the GenAI semantic conventions advise.
        let genai = GenAi {
            request_seconds: hist(
                "gen_ai_server_request_duration_seconds",
                "gen_ai.server.request.duration: request duration as tollgate saw it (request headers to the end of the ext_proc stream)",
                &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92],
                &["error_type"],
            ),
            token_usage: hist(
                "gen_ai_client_token_usage",
                "gen_ai.client.token.usage: tokens per request by gen_ai_token_type (input, output)",
                &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0],
                &["gen_ai_token_type"],
            ),
            ttft_seconds: hist(
                "gen_ai_server_time_to_first_token_seconds",
                "gen_ai.server.time_to_first_token: request headers to the first response body chunk of a streamed response",
                &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
                &[],
            ),
            tpot_seconds: hist(
                "gen_ai_server_time_per_output_token_seconds",
                "gen_ai.server.time_per_output_token: time per output token after the first",
                &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5],
                &[],
            ),
            errors: IntCounterVec::new(
                Opts::new(
                    "tollgate_request_errors_total",
                    "Failed requests by error_type: tollgate's error code, the upstream HTTP status, or aborted",
                ),
                &["backend", "error_type"],
            )
            .expect("metric"),
            audit_dropped: IntCounter::new(
                "tollgate_audit_lines_dropped_total",
                "Audit lines dropped because the writer's queue was full or a write failed",
            )
            .expect("metric"),
            spans_dropped: IntCounterVec::new(
                Opts::new(
                    "tollgate_telemetry_spans_dropped_total",
                    "Spans not exported, by reason (queue_full, export_failed, export_timeout)",
                ),
                &["reason"],
            )
            .expect("metric"),
            spans_exported: IntCounter::new(
                "tollgate_telemetry_spans_exported_total",
                "Spans accepted by the OTLP collector",
            )
            .expect("metric"),
        };
        // Zero series from the start, so "no drops" is visible rather than absent.
        for reason in ["queue_full", "export_failed", "export_timeout"] {
            genai.spans_dropped.with_label_values(&[reason]);
        }
        for c in [
            Box::new(genai.request_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(genai.token_usage.clone()),
            Box::new(genai.ttft_seconds.clone()),
            Box::new(genai.tpot_seconds.clone()),
            Box::new(genai.errors.clone()),
            Box::new(genai.audit_dropped.clone()),
            Box::new(genai.spans_dropped.clone()),
            Box::new(genai.spans_exported.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        // The guard's own detection counters (labelled by policy and action) replace a
        // per-request placeholder here.
        let guard_detections = IntCounterVec::new(
            Opts::new(
                "tollgate_guard_detections_total",
                "PII/secret detections by policy, entity type, action, direction (request or response) and mode (enforce or shadow); never values",
            ),
            &["policy", "entity", "action", "direction", "mode"],
        )
        .expect("metric");
        let guard_blocked = IntCounterVec::new(
            Opts::new(
                "tollgate_guard_blocked_total",
                "Requests refused or responses ended by the guard, by policy, reason (content, pii, tool, unreadable), direction and mode (shadow: would have been blocked)",
            ),
            &["policy", "reason", "direction", "mode"],
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(message_seconds.clone()),
            Box::new(streams_active.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(last_success_timestamp.clone()),
            Box::new(config_info.clone()),
            Box::new(guard_detections.clone()),
            Box::new(guard_blocked.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        let usage = UsageMetrics::new(&registry);
        let endpoint_refused = IntCounterVec::new(
            Opts::new(
                "tollgate_endpoint_refused_total",
                "ext_proc streams or fallback attempts refused for their caller: missing_secret, wrong_secret, attempt_token",
            ),
            &["reason"],
        )
        .expect("metric");
        registry
            .register(Box::new(endpoint_refused.clone()))
            .expect("distinct metric names");
        Self {
            endpoint_refused,
            usage,
            registry,
            requests,
            message_seconds,
            streams_active,
            reloads,
            last_reload_success,
            last_success_timestamp,
            config_info,
            genai,
            guard_detections,
            guard_blocked,
        }
    }

    /// Records one finished request on the GenAI metrics.
    pub fn genai_request(&self, r: &GenAiRequest<'_>) {
        let g = &self.genai;
        let base = [r.operation, r.provider, r.model];
        g.request_seconds
            .with_label_values(&[base[0], base[1], base[2], r.error_type.unwrap_or("")])
            .observe(r.duration.as_secs_f64());
        if let Some(e) = r.error_type {
            g.errors.with_label_values(&[r.backend, e]).inc();
        }
        if let Some((input, output)) = r.tokens {
            for (kind, n) in [("input", input), ("output", output)] {
                g.token_usage
                    .with_label_values(&[base[0], base[1], base[2], kind])
                    .observe(n as f64);
            }
        }
        if let Some(t) = r.time_to_first_token {
            g.ttft_seconds
                .with_label_values(&base)
                .observe(t.as_secs_f64());
        }
        if let Some(t) = r.time_per_output_token {
            g.tpot_seconds
                .with_label_values(&base)
                .observe(t.as_secs_f64());
        }
    }

    /// An audit line was dropped.
    pub fn audit_dropped(&self) {
        self.genai.audit_dropped.inc();
    }

    /// `n` spans were dropped for `reason`.
    pub fn spans_dropped(&self, reason: &str, n: usize) {
        self.genai
            .spans_dropped
            .with_label_values(&[reason])
            .inc_by(n as u64);
    }

    /// `n` spans reached the collector.
    pub fn spans_exported(&self, n: usize) {
        self.genai.spans_exported.inc_by(n as u64);
    }

    /// Counts guard detections.
    pub fn guard_detected(
        &self,
        policy: &str,
        entity: &str,
        action: &str,
        direction: &str,
        shadow: bool,
        n: u64,
    ) {
        self.guard_detections
            .with_label_values(&[policy, entity, action, direction, mode(shadow)])
            .inc_by(n);
    }

    /// Counts a guard refusal (or, in shadow mode, one that was not applied).
    pub fn guard_blocked(&self, policy: &str, reason: &str, direction: &str, shadow: bool) {
        self.guard_blocked
            .with_label_values(&[policy, reason, direction, mode(shadow)])
            .inc();
    }

    /// Counts one finished request.
    pub fn request_done(&self, backend: &str, model: &str, status: &str) {
        self.requests
            .with_label_values(&[backend, model, status])
            .inc();
    }

    /// Records the time spent on one ext_proc message.
    pub fn message_handled(&self, phase: &str, took: Duration) {
        self.message_seconds
            .with_label_values(&[phase])
            .observe(took.as_secs_f64());
    }

    /// A stream or an attempt refused for its caller (`reason`: a fixed label).
    pub fn endpoint_refused(&self, reason: &'static str) {
        self.endpoint_refused.with_label_values(&[reason]).inc();
    }

    /// Tracks open streams.
    pub fn stream_opened(&self) {
        self.streams_active.inc();
    }

    /// Tracks open streams.
    pub fn stream_closed(&self) {
        self.streams_active.dec();
    }

    /// Open streams now.
    pub fn streams_active(&self) -> i64 {
        self.streams_active.get()
    }

    /// The initial config is serving.
    pub fn config_loaded(&self, hash: &str) {
        self.last_reload_success.set(1);
        self.last_success_timestamp.set(unix_now());
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }

    /// A reload attempt finished.
    pub fn config_reloaded(&self, ok: bool, hash: &str) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            self.config_loaded(hash);
        } else {
            self.last_reload_success.set(0);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric data, which the types rule out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn mode(shadow: bool) -> &'static str {
    if shadow { "shadow" } else { "enforce" }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Usage, cost and limits metrics (issue: access, usage and limits).
struct UsageMetrics {
    tokens: IntCounterVec,
    cost: CounterVec,
    unpriced: IntCounterVec,
    limit_refusals: IntCounterVec,
    limiter_seconds: HistogramVec,
    limiter_errors: IntCounterVec,
    fail_open: IntCounter,
    store_up: IntGauge,
}

#[expect(clippy::expect_used, reason = "static metric definitions")]
impl UsageMetrics {
    fn new(registry: &Registry) -> Self {
        let tokens = IntCounterVec::new(
            Opts::new(
                "tollgate_tokens_total",
                "Tokens used, by backend, model and kind (input, cached_input, output, reasoning)",
            ),
            &["backend", "model", "kind"],
        )
        .expect("metric");
        let cost = CounterVec::new(
            Opts::new(
                "tollgate_cost_usd_total",
                "Cost of the requests in USD (price table), by backend and model",
            ),
            &["backend", "model"],
        )
        .expect("metric");
        let unpriced = IntCounterVec::new(
            Opts::new(
                "tollgate_unpriced_requests_total",
                "Requests whose model has no price (cost counted as 0)",
            ),
            &["backend", "model"],
        )
        .expect("metric");
        let limit_refusals = IntCounterVec::new(
            Opts::new(
                "tollgate_limit_refusals_total",
                "Requests refused with 429, by limit rule and metric",
            ),
            &["rule", "metric"],
        )
        .expect("metric");
        let limiter_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_limiter_reserve_duration_seconds",
                "Time to reserve capacity in the limits store",
            )
            .buckets(vec![
                0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            &["store"],
        )
        .expect("metric");
        let limiter_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_limiter_errors_total",
                "Limits store failures (timeouts, connection errors, open circuit), by operation",
            ),
            &["op"],
        )
        .expect("metric");
        let fail_open = IntCounter::new(
            "tollgate_limits_fail_open_total",
            "Requests admitted without limits because the store was down (fail-open)",
        )
        .expect("metric");
        let store_up = IntGauge::new(
            "tollgate_limits_store_up",
            "1 when the limits store answers (always 1 for the in-memory store)",
        )
        .expect("metric");
        for c in [
            Box::new(tokens.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cost.clone()),
            Box::new(unpriced.clone()),
            Box::new(limit_refusals.clone()),
            Box::new(limiter_seconds.clone()),
            Box::new(limiter_errors.clone()),
            Box::new(fail_open.clone()),
            Box::new(store_up.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        Self {
            tokens,
            cost,
            unpriced,
            limit_refusals,
            limiter_seconds,
            limiter_errors,
            fail_open,
            store_up,
        }
    }
}

impl Metrics {
    /// Records one request's usage and cost (`cost_usd` is `None` when unpriced).
    pub fn usage(
        &self,
        backend: &str,
        model: &str,
        usage: &crate::llm::usage::Usage,
        cost_usd: Option<f64>,
    ) {
        let u = &self.usage;
        for (kind, n) in [
            ("input", usage.input),
            ("cached_input", usage.cached_input),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
        ] {
            u.tokens
                .with_label_values(&[backend, model, kind])
                .inc_by(n);
        }
        match cost_usd {
            Some(c) => u.cost.with_label_values(&[backend, model]).inc_by(c),
            None => u.unpriced.with_label_values(&[backend, model]).inc(),
        }
    }

    /// A 429 from a limit rule (rule names come from the config: bounded).
    pub fn limit_refused(&self, rule: &str, metric: &str) {
        self.usage
            .limit_refusals
            .with_label_values(&[rule, metric])
            .inc();
    }

    /// Time of one reservation call.
    pub fn limiter_call(&self, store: &str, took: Duration) {
        self.usage
            .limiter_seconds
            .with_label_values(&[store])
            .observe(took.as_secs_f64());
    }

    /// A store failure.
    pub fn limiter_error(&self, op: &str) {
        self.usage.limiter_errors.with_label_values(&[op]).inc();
    }

    /// A request admitted without limits.
    pub fn fail_open(&self) {
        self.usage.fail_open.inc();
    }

    /// Store health.
    pub fn store_up(&self, up: bool) {
        self.usage.store_up.set(i64::from(up));
    }
}
