//! Logging setup: tracing-subscriber, text or JSON lines, level from config (`RUST_LOG`
//! overrides). Every line logged while handling a request carries the `request` span's
//! `request_id` and `trace_id` (text: `request{request_id=… trace_id=…}:` prefix; JSON: the
//! `span` object). Payloads and secrets are never logged.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
