//! Prometheus metrics: one registry, handles with unit-suffixed names.
//!
//! Labels are bounded: `model` is a catalogue name or `unlisted`, `backend` a configured
//! backend or `none`, never a value a client can choose freely.

use prometheus::{
    CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    usage: UsageMetrics,
}

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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(message_seconds.clone()),
            Box::new(streams_active.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(last_success_timestamp.clone()),
            Box::new(config_info.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        let usage = UsageMetrics::new(&registry);
        Self {
            usage,
            registry,
            requests,
            message_seconds,
            streams_active,
            reloads,
            last_reload_success,
            last_success_timestamp,
            config_info,
        }
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
