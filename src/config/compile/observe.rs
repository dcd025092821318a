//! Compiling the observability settings: OTLP traces and the audit log.

use super::Cx;
use crate::config::raw::{RawAudit, RawTraces};
use crate::observe::audit::{AuditOutput, AuditSettings};
use crate::observe::spans::{OtlpProtocol, TraceSettings};
use std::time::Duration;

impl Cx {
    pub(super) fn traces(&mut self, raw: &RawTraces) -> Option<TraceSettings> {
        let protocol = raw.protocol.unwrap_or(OtlpProtocol::Grpc);
        let default_endpoint = match protocol {
            OtlpProtocol::Grpc => "http://127.0.0.1:4317",
            OtlpProtocol::Http => "http://127.0.0.1:4318",
        };
        let endpoint = raw.endpoint.as_deref().unwrap_or(default_endpoint);
        let endpoint = match otlp_endpoint(endpoint, protocol) {
            Ok(e) => e,
            Err(msg) => {
                self.err("telemetry.traces.endpoint", msg);
                String::new()
            }
        };
        let ratio = raw.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            self.err(
                "telemetry.traces.sampling_ratio",
                format!("{ratio} is not between 0.0 and 1.0"),
            );
        }
        let service_name = raw
            .service_name
            .clone()
            .unwrap_or_else(|| "tollgate".into());
        if service_name.trim().is_empty() {
            self.err("telemetry.traces.service_name", "must not be empty");
        }
        let queue_size = raw.queue_size.unwrap_or(2048);
        if queue_size == 0 {
            self.err("telemetry.traces.queue_size", "must be at least 1");
        }
        let export_timeout = self.duration(
            "telemetry.traces.export_timeout",
            raw.export_timeout.as_deref(),
            Duration::from_secs(5),
        );
        if !raw.enabled.unwrap_or(false) {
            return None;
        }
        Some(TraceSettings {
            endpoint,
            protocol,
            sampling_ppm: (ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as u32,
            service_name,
            queue_size: queue_size.max(1),
            export_timeout,
        })
    }

    pub(super) fn audit(&mut self, raw: &RawAudit) -> Option<AuditSettings> {
        let max_size = match &raw.max_size {
            None => 100 << 20,
            Some(s) => self.byte_size("audit.max_size", s).unwrap_or(100 << 20),
        };
        let max_files = raw.max_files.unwrap_or(5);
        let queue_size = raw.queue_size.unwrap_or(4096);
        if queue_size == 0 {
            self.err("audit.queue_size", "must be at least 1");
        }
        let output = match raw.output.as_deref() {
            None => return None,
            Some("stdout") => AuditOutput::Stdout,
            Some(p) if p.starts_with('/') && !p.ends_with('/') => AuditOutput::File(p.into()),
            Some(p) => {
                self.err(
                    "audit.output",
                    format!("{p:?} must be `stdout` or an absolute file path"),
                );
                return None;
            }
        };
        Some(AuditSettings {
            output,
            max_size,
            max_files,
            queue_size: queue_size.max(1),
            include_payload: raw.include_payload.unwrap_or(false),
        })
    }
}

/// Checks an OTLP collector URL; for HTTP, returns the full `/v1/traces` URL.
fn otlp_endpoint(url: &str, protocol: OtlpProtocol) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL such as http://otel-collector:4317"
        ));
    };
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "{url:?} must be http:// or https:// followed by host:port"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("the endpoint must not carry credentials".into());
    }
    match protocol {
        OtlpProtocol::Grpc => Ok(url.trim_end_matches('/').to_owned()),
        OtlpProtocol::Http if path.is_empty() || path == "/" => {
            Ok(format!("{scheme}://{authority}/v1/traces"))
        }
        OtlpProtocol::Http => Ok(url.to_owned()),
    }
}
