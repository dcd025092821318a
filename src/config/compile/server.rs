//! Compiling the server-wide settings ([`StaticSettings`]): listeners, drain timeout, log
//! level and the gRPC auth between Envoy and tollgate; their traces and audit parts are
//! compiled in [`super::observe`].

use super::{CompileOptions, Cx};
use crate::config::raw::RawConfig;
use crate::config::{ListenAddr, StaticSettings};
use crate::suggest;
use std::time::Duration;

impl Cx {
    pub(super) fn settings(
        &mut self,
        raw: &RawConfig,
        opts: &CompileOptions<'_>,
    ) -> StaticSettings {
        let grpc = raw
            .server
            .grpc_listen
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_GRPC_LISTEN);
        let grpc_listen = ListenAddr::parse(grpc).unwrap_or_else(|e| {
            self.err("server.grpc_listen", e);
            ListenAddr::default()
        });
        let admin = raw
            .server
            .admin_listen
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_ADMIN_LISTEN);
        let admin_listen = admin.parse().unwrap_or_else(|_| {
            self.err(
                "server.admin_listen",
                format!("{admin:?} is not a host:port address such as 127.0.0.1:9090"),
            );
            crate::config::default_admin()
        });
        let drain_timeout = self.duration(
            "server.drain_timeout",
            raw.server.drain_timeout.as_deref(),
            Duration::from_secs(30),
        );
        let log_level = raw.log.level.clone().unwrap_or_else(|| "info".into());
        if let Err(e) = check_log_filter(&log_level) {
            self.err("log.level", e);
        }
        let grpc_auth = self.grpc_auth(&raw.server.grpc_auth, opts);
        StaticSettings {
            grpc_auth,
            debug_state: raw.server.debug_state.unwrap_or(false),
            trust_request_id: raw.server.trust_request_id.unwrap_or(false),
            grpc_listen,
            admin_listen,
            drain_timeout,
            log_level,
            log_json: raw.log.format == Some(crate::config::raw::LogFormat::Json),
            traces: self.traces(&raw.telemetry.traces),
            time_to_first_token: raw.telemetry.metrics.time_to_first_token.unwrap_or(false),
            audit: self.audit(&raw.audit),
        }
    }

    fn grpc_auth(
        &mut self,
        raw: &crate::config::raw::RawGrpcAuth,
        opts: &CompileOptions<'_>,
    ) -> crate::config::GrpcAuth {
        let secret = raw.secret.as_ref().map(|r| {
            if !opts.resolve_secrets {
                return crate::secret::Secret::new("<unresolved>");
            }
            let v = self
                .secret("server.grpc_auth.secret", r, opts)
                .unwrap_or_default();
            // Envoy sends it as a header-like metadata value; short secrets are guessable.
            if !v.is_empty() && v.len() < 16 {
                self.err(
                    "server.grpc_auth.secret",
                    "the secret is shorter than 16 bytes; use e.g. `openssl rand -hex 32`",
                );
            }
            if v.bytes().any(|c| !(0x21..0x7f).contains(&c)) {
                self.err(
                    "server.grpc_auth.secret",
                    "the secret must be printable ASCII without spaces (it travels as gRPC metadata)",
                );
            }
            crate::secret::Secret::new(v)
        });
        let tls = raw.tls.as_ref().map(|t| crate::config::GrpcTls {
            cert_file: std::path::PathBuf::from(&t.cert_file),
            key_file: std::path::PathBuf::from(&t.key_file),
            client_ca_file: t.client_ca_file.as_ref().map(std::path::PathBuf::from),
        });
        let attempt_token_ttl = self.duration(
            "server.grpc_auth.attempt_token_ttl",
            raw.attempt_token_ttl.as_deref(),
            Duration::from_secs(300),
        );
        if attempt_token_ttl.is_zero() {
            self.err("server.grpc_auth.attempt_token_ttl", "must be above zero");
        }
        crate::config::GrpcAuth {
            secret,
            tls,
            attempt_token_ttl,
        }
    }
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A tracing filter that names real levels: `info`, or `info,tollgate=debug`. Stricter than
/// `EnvFilter`, which reads a typo such as `inf` as a target name and logs nothing useful.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            Some(_) => "",
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{filter:?} is not a log level or filter: {directive:?} should be one of {} or target=level{}",
                LEVELS.join(", "),
                suggest::hint(level, LEVELS.iter().copied())
            ));
        }
    }
    Ok(())
}
