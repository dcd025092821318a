//! Prometheus metrics: one registry, handles with unit-suffixed names.
//!
//! Labels are bounded: `model` is a catalogue name or `unlisted`, `backend` a configured
//! backend or `none`, never a value a client can choose freely.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    guard_detections: IntCounterVec,
    guard_blocked: IntCounterVec,
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
        Self {
            registry,
            requests,
            message_seconds,
            streams_active,
            reloads,
            last_reload_success,
            last_success_timestamp,
            config_info,
            guard_detections,
            guard_blocked,
        }
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
