//! Raw YAML → [`Snapshot`]: every error at once, each with its YAML path.
//!
//! serde stops at the first error, so the document is first read as a YAML value and each
//! section (and each list element) is deserialized on its own; then cross-references,
//! names and values are checked. Nothing here is validated twice: the snapshot holds
//! indices that are known to be valid.

use super::raw::{
    ByteSize, RawAudit, RawAuth, RawBackend, RawConfig, RawGuard, RawModel, RawRoute, RawTraces,
    SecretRef,
};
use super::{ListenAddr, ReloadSettings, Snapshot, StaticSettings};
use crate::glob::Glob;
use crate::guard::{Guard, OnDenied, Policy, PolicyMatch, ToolPolicy};
use crate::observe::audit::{AuditOutput, AuditSettings};
use crate::observe::spans::{OtlpProtocol, TraceSettings};
use crate::providers::{self, ProviderConfig};
use crate::providers::{Backend, BackendKind, Credential};
use crate::routing::{Model, Route, Table};
use crate::secret::Secret;
use crate::suggest;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

mod routing;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path such as `routes[2].backend`; empty for the whole document.
    pub path: String,
    /// What is wrong, and how to fix it when we can tell.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// How secrets are looked up while compiling.
pub struct CompileOptions<'a> {
    /// Resolve `auth` secrets (off for `tollgate validate --skip-secrets`).
    pub resolve_secrets: bool,
    /// Environment lookup; injected so tests need not touch the process environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl CompileOptions<'_> {
    /// Secrets resolved from the real process environment and files.
    pub fn from_process() -> CompileOptions<'static> {
        CompileOptions {
            resolve_secrets: true,
            env: &|name| std::env::var(name).ok(),
        }
    }
}

const SECTIONS: &[&str] = &[
    "version",
    "server",
    "log",
    "reload",
    "routing",
    "backends",
    "models",
    "routes",
    "telemetry",
    "audit",
    "guard",
    "auth",
    "teams",
    "consumers",
    "pricing",
    "limits",
    "usage",
];

/// Compiles a config document.
pub fn compile(text: &str, opts: &CompileOptions<'_>) -> Result<Snapshot, Vec<ConfigError>> {
    compile_with_inputs(text, opts).0
}

/// Compiles a config document, and names every file it read or tried to read besides it
/// (`auth.key_file`, `file:` secrets, `pricing.file`) — also when it fails, so the reloader
/// can watch a file that is missing now and retry once it appears.
pub fn compile_with_inputs(
    text: &str,
    opts: &CompileOptions<'_>,
) -> (Result<Snapshot, Vec<ConfigError>>, Vec<std::path::PathBuf>) {
    let mut cx = Cx::default();
    let raw = cx.read(text);
    let snapshot = raw.and_then(|raw| cx.check(&raw, opts));
    let mut inputs = std::mem::take(&mut cx.inputs);
    inputs.sort();
    inputs.dedup();
    let result = match snapshot {
        Some(mut s) if cx.errors.is_empty() => {
            s.hash = super::content_hash(text.as_bytes());
            s.inputs = inputs.clone();
            Ok(s)
        }
        _ => Err(cx.errors),
    };
    (result, inputs)
}

#[derive(Default)]
struct Cx {
    errors: Vec<ConfigError>,
    /// Files read (or tried) besides the config itself.
    inputs: Vec<std::path::PathBuf>,
}

impl Cx {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Structural pass: YAML syntax, known sections, field names and types.
    fn read(&mut self, text: &str) -> Option<RawConfig> {
        let doc: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.err("", format!("invalid YAML: {e}"));
                return None;
            }
        };
        let Value::Mapping(map) = doc else {
            self.err(
                "",
                "the config must be a YAML mapping with `version: 1` at the top",
            );
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if SECTIONS.contains(&k) => {}
                Some(k) => self.err(
                    k,
                    format!(
                        "unknown section{}",
                        suggest::hint(k, SECTIONS.iter().copied())
                    ),
                ),
                None => self.err("", format!("section names must be strings, got {key:?}")),
            }
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or(Value::Null);
        let version: Option<u32> = match map.get("version") {
            None => {
                self.err("version", "missing: add `version: 1`");
                None
            }
            Some(v) => self.section("version", v.clone()),
        };
        let server = self.section_or_default("server", get("server"));
        let log = self.section_or_default("log", get("log"));
        let reload = self.section_or_default("reload", get("reload"));
        let routing = self.section_or_default("routing", get("routing"));
        let backends = self.list("backends", get("backends"));
        let models = self.list("models", get("models"));
        let routes = self.list("routes", get("routes"));
        let telemetry = self.section_or_default("telemetry", get("telemetry"));
        let audit = self.section_or_default("audit", get("audit"));
        let guard = self.section_or_default("guard", get("guard"));
        let auth = self.section_or_default("auth", get("auth"));
        let teams = self.list("teams", get("teams"));
        let consumers = self.list("consumers", get("consumers"));
        let pricing = self.section_or_default("pricing", get("pricing"));
        let limits = self.section_or_default("limits", get("limits"));
        let usage = self.section_or_default("usage", get("usage"));
        Some(RawConfig {
            version: version?,
            server: server?,
            log: log?,
            reload: reload?,
            routing: routing?,
            backends: backends?,
            models: models?,
            routes: routes?,
            telemetry: telemetry?,
            audit: audit?,
            guard: guard?,
            auth: auth?,
            teams: teams?,
            consumers: consumers?,
            pricing: pricing?,
            limits: limits?,
            usage: usage?,
        })
    }

    fn section<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<T> {
        // serde_yaml cannot read externally tagged enums (`auth: {bearer: ...}`) from a
        // `Value`; its JSON form can, and every config value has one.
        let json = match serde_json::to_value(&value) {
            Ok(j) => j,
            Err(e) => {
                self.err(path, format!("cannot be represented as plain data: {e}"));
                return None;
            }
        };
        match serde_path_to_error::deserialize::<_, T>(json) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "." => path.to_owned(),
                    p if p.starts_with('[') => format!("{path}{p}"),
                    p => format!("{path}.{p}"),
                };
                self.err(full, humanize(&e.into_inner().to_string()));
                None
            }
        }
    }

    fn section_or_default<T: DeserializeOwned + Default>(
        &mut self,
        path: &str,
        value: Value,
    ) -> Option<T> {
        if value.is_null() {
            return Some(T::default());
        }
        self.section(path, value)
    }

    /// Deserializes list elements one by one so every broken element is reported.
    fn list<T: DeserializeOwned>(&mut self, path: &str, value: Value) -> Option<Vec<T>> {
        match value {
            Value::Null => Some(Vec::new()),
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.into_iter().enumerate() {
                    match self.section(&format!("{path}[{i}]"), item) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.err(path, "expected a list");
                None
            }
        }
    }

    /// Semantic pass: names, references, values, secrets.
    fn check(&mut self, raw: &RawConfig, opts: &CompileOptions<'_>) -> Option<Snapshot> {
        if raw.version != 1 {
            self.err(
                "version",
                format!(
                    "unsupported version {}; this tollgate reads version 1",
                    raw.version
                ),
            );
        }
        let settings = self.settings(raw, opts);
        let max_request_body = match &raw.server.max_request_body {
            None => super::DEFAULT_MAX_REQUEST_BODY,
            Some(size) => self
                .byte_size("server.max_request_body", size)
                .unwrap_or_default(),
        };
        let reload = ReloadSettings {
            debounce: self.duration(
                "reload.debounce",
                raw.reload.debounce.as_deref(),
                Duration::from_millis(250),
            ),
            poll_interval: self.duration(
                "reload.poll_interval",
                raw.reload.poll_interval.as_deref(),
                Duration::from_secs(5),
            ),
        };
        let backends = self.backends(&raw.backends, opts);
        let backend_index: HashMap<&str, usize> = raw
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.as_str(), i))
            .collect();
        let models = self.models(&raw.models, &backend_index);
        let switches = self.routing_switches(&raw.routing);
        let chains = self.chains(&raw.routing.chains, &backend_index, &backends);
        let routes = self.routes(&raw.routes, &backend_index, &raw.models, &chains);
        let needs_features = routes.iter().any(|r: &Route| r.when.needs_features());
        let guard = self.guard(&raw.guard, opts);
        let access = self.access(raw, &backend_index, opts);
        let pricing = self.pricing(&raw.pricing);
        let limits = self.limits(&raw.limits, &access, opts);
        let usage = self.usage(raw);
        Some(Snapshot {
            settings,
            max_request_body,
            reload,
            routing: Table {
                backends,
                models,
                routes,
                model_command: raw.routing.model_command.unwrap_or(true),
                chains,
                decision_header: switches.decision_header,
                cooldown: switches.cooldown,
                pii: switches.pii,
                needs_features,
            },
            guard,
            hash: String::new(),
            inputs: Vec::new(),
            access,
            pricing,
            limits,
            usage,
        })
    }

    fn settings(&mut self, raw: &RawConfig, opts: &CompileOptions<'_>) -> StaticSettings {
        let grpc = raw
            .server
            .grpc_listen
            .as_deref()
            .unwrap_or(super::DEFAULT_GRPC_LISTEN);
        let grpc_listen = ListenAddr::parse(grpc).unwrap_or_else(|e| {
            self.err("server.grpc_listen", e);
            ListenAddr::default()
        });
        let admin = raw
            .server
            .admin_listen
            .as_deref()
            .unwrap_or(super::DEFAULT_ADMIN_LISTEN);
        let admin_listen = admin.parse().unwrap_or_else(|_| {
            self.err(
                "server.admin_listen",
                format!("{admin:?} is not a host:port address such as 127.0.0.1:9090"),
            );
            super::default_admin()
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
            log_json: raw.log.format == Some(super::raw::LogFormat::Json),
            traces: self.traces(&raw.telemetry.traces),
            time_to_first_token: raw.telemetry.metrics.time_to_first_token.unwrap_or(false),
            audit: self.audit(&raw.audit),
        }
    }

    fn grpc_auth(
        &mut self,
        raw: &super::raw::RawGrpcAuth,
        opts: &CompileOptions<'_>,
    ) -> super::GrpcAuth {
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
        let tls = raw.tls.as_ref().map(|t| super::GrpcTls {
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
        super::GrpcAuth {
            secret,
            tls,
            attempt_token_ttl,
        }
    }

    fn traces(&mut self, raw: &RawTraces) -> Option<TraceSettings> {
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

    fn audit(&mut self, raw: &RawAudit) -> Option<AuditSettings> {
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

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        humantime::parse_duration(text).unwrap_or_else(|e| {
            self.err(
                path,
                format!("{text:?} is not a duration such as \"250ms\" or \"30s\": {e}"),
            );
            default
        })
    }

    fn byte_size(&mut self, path: &str, size: &ByteSize) -> Option<u64> {
        let parsed = match size {
            ByteSize::Bytes(n) => Some(*n),
            ByteSize::Text(t) => parse_byte_size(t),
        };
        match parsed {
            Some(0) | None => {
                let shown = match size {
                    ByteSize::Bytes(n) => n.to_string(),
                    ByteSize::Text(t) => format!("{t:?}"),
                };
                self.err(
                    path,
                    format!("{shown} is not a positive size such as 4MiB, 512KiB or 1048576"),
                );
                None
            }
            some => some,
        }
    }

    fn name(&mut self, path: &str, name: &str, what: &str) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            self.err(
                path,
                format!(
                    "{what} name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-'"
                ),
            );
        }
    }

    fn backends(&mut self, raw: &[RawBackend], opts: &CompileOptions<'_>) -> Vec<Backend> {
        let mut seen = HashSet::new();
        let mut routes_seen = HashMap::new();
        raw.iter()
            .enumerate()
            .map(|(i, b)| {
                let at = |f: &str| format!("backends[{i}].{f}");
                self.name(&at("name"), &b.name, "backend");
                if !seen.insert(b.name.as_str()) {
                    self.err(at("name"), format!("duplicate backend name {:?}", b.name));
                }
                let base_path = match b.base_path.as_deref() {
                    None => default_base_path(b.kind).to_owned(),
                    Some(p) if p.is_empty() || p == "/" => String::new(),
                    Some(p) if p.starts_with('/') && !p.contains(['?', '#', ' ']) => p.trim_end_matches('/').to_owned(),
                    Some(p) => {
                        self.err(at("base_path"), format!("{p:?} must start with '/' and hold no query, fragment or spaces"));
                        String::new()
                    }
                };
                let envoy_route = b.envoy_route.clone().unwrap_or_else(|| b.name.clone());
                if envoy_route.is_empty() || !envoy_route.bytes().all(|c| c.is_ascii_graphic()) {
                    self.err(at("envoy_route"), format!("{envoy_route:?} must be non-empty visible ASCII (it is a header value)"));
                } else if let Some(other) = routes_seen.insert(envoy_route.clone(), i) {
                    self.err(at("envoy_route"), format!("{envoy_route:?} is already used by backends[{other}]; each backend needs its own Envoy route"));
                }
                if let Some(a) = &b.authority
                    && (a.is_empty() || !a.bytes().all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c))) {
                        self.err(at("authority"), format!("{a:?} is not a host or host:port"));
                    }
                let credential = b.auth.as_ref().and_then(|auth| self.credential(&at("auth"), auth, b.kind, opts));
                let provider = self.provider(i, b, opts);
                let forward_headers = match &b.forward_headers {
                    None => providers::default_forward_headers(b.kind),
                    Some(list) => list
                        .iter()
                        .enumerate()
                        .map(|(j, h)| {
                            if !providers::STEERING_HEADERS.contains(&h.as_str()) {
                                self.err(
                                    at(&format!("forward_headers[{j}]")),
                                    format!(
                                        "{h:?} is not a provider-steering header (lower-case): only {} are removed, so only they can be allowed",
                                        providers::STEERING_HEADERS.join(", ")
                                    ),
                                );
                            }
                            h.clone()
                        })
                        .collect(),
                };
                Backend {
                    forward_headers,
                    name: b.name.clone(),
                    kind: b.kind,
                    base_path,
                    envoy_route,
                    authority: b.authority.clone(),
                    credential,
                    provider,
                }
            })
            .collect()
    }

    /// The per-kind settings; a section for another kind is an error (one arm per kind).
    fn provider(&mut self, i: usize, b: &RawBackend, opts: &CompileOptions<'_>) -> ProviderConfig {
        let at = |f: &str| format!("backends[{i}].{f}");
        let sections = [
            ("anthropic", b.anthropic.is_some(), BackendKind::Anthropic),
            (
                "azure_openai",
                b.azure_openai.is_some(),
                BackendKind::AzureOpenai,
            ),
            ("bedrock", b.bedrock.is_some(), BackendKind::Bedrock),
            ("vertex", b.vertex.is_some(), BackendKind::Vertex),
        ];
        for (name, present, kind) in sections {
            if present && b.kind != kind {
                self.err(
                    at(name),
                    format!(
                        "the `{name}` section is only for `kind: {}`; this backend is `kind: {}`",
                        kind.as_str(),
                        b.kind.as_str()
                    ),
                );
            }
        }
        match b.kind {
            BackendKind::Openai => ProviderConfig::Openai,
            BackendKind::AzureOpenai => {
                let raw = b.azure_openai.clone().unwrap_or_default();
                let api_version = raw
                    .api_version
                    .unwrap_or_else(|| providers::azure::DEFAULT_API_VERSION.to_owned());
                if api_version.is_empty()
                    || !api_version
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
                {
                    self.err(
                        at("azure_openai.api_version"),
                        format!("{api_version:?} is not an api-version such as \"2024-10-21\""),
                    );
                }
                for (model, dep) in &raw.deployments {
                    if !providers::azure::valid_deployment(dep) {
                        self.err(
                            at(&format!("azure_openai.deployments.{model}")),
                            format!("{dep:?} is not a deployment name (1-64 characters of a-z, A-Z, 0-9, '.', '_' or '-')"),
                        );
                    }
                }
                ProviderConfig::AzureOpenai(providers::azure::Config {
                    api_version,
                    deployments: raw.deployments,
                })
            }
            BackendKind::Anthropic => {
                let raw = b.anthropic.clone().unwrap_or_default();
                let mut cfg = providers::anthropic::Config::default();
                if let Some(v) = raw.version {
                    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_graphic()) {
                        self.err(
                            at("anthropic.version"),
                            format!("{v:?} is not a version such as \"2023-06-01\""),
                        );
                    }
                    cfg.version = v;
                }
                if let Some(n) = raw.default_max_tokens {
                    if n == 0 {
                        self.err(at("anthropic.default_max_tokens"), "must be at least 1");
                    }
                    cfg.default_max_tokens = n;
                }
                ProviderConfig::Anthropic(cfg)
            }
            BackendKind::Bedrock => self.bedrock(i, b, opts),
            BackendKind::Vertex => self.vertex(i, b, opts),
            BackendKind::Gemini => {
                if b.auth.is_none() {
                    self.err(
                        at("auth"),
                        "kind gemini needs an API key: `auth: {api_key: {env: GEMINI_API_KEY}}`",
                    );
                }
                ProviderConfig::Gemini
            }
        }
    }

    /// `kind: bedrock`: region and credentials (secrets resolved like `auth`).
    fn bedrock(&mut self, i: usize, b: &RawBackend, opts: &CompileOptions<'_>) -> ProviderConfig {
        let at = |f: &str| format!("backends[{i}].{f}");
        if b.auth.is_some() {
            self.err(
                at("auth"),
                "kind bedrock signs requests with SigV4; put the AWS credentials in the `bedrock` section",
            );
        }
        let Some(raw) = &b.bedrock else {
            self.err(
                at("bedrock"),
                "kind bedrock needs a `bedrock` section with region, access_key_id and secret_access_key",
            );
            return ProviderConfig::Bedrock(providers::bedrock::Config {
                region: String::new(),
                credentials: providers::sigv4::Credentials {
                    access_key_id: String::new(),
                    secret_access_key: Secret::new(""),
                    session_token: None,
                },
            });
        };
        if raw.region.is_empty()
            || !raw
                .region
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            self.err(
                at("bedrock.region"),
                format!(
                    "{:?} is not an AWS region such as \"us-east-1\"",
                    raw.region
                ),
            );
        }
        let read = |cx: &mut Cx, field: &str, r: &SecretRef| -> String {
            if !opts.resolve_secrets {
                return "<unresolved>".to_owned();
            }
            let v = cx
                .secret(&at(&format!("bedrock.{field}")), r, opts)
                .unwrap_or_default();
            if v.bytes().any(|c| c.is_ascii_control()) {
                cx.err(
                    at(&format!("bedrock.{field}")),
                    "the secret holds control characters and cannot be sent as a header",
                );
            }
            v
        };
        let access_key_id = read(self, "access_key_id", &raw.access_key_id);
        let secret_access_key =
            Secret::new(read(self, "secret_access_key", &raw.secret_access_key));
        let session_token = raw
            .session_token
            .as_ref()
            .map(|r| Secret::new(read(self, "session_token", r)));
        ProviderConfig::Bedrock(providers::bedrock::Config {
            region: raw.region.clone(),
            credentials: providers::sigv4::Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            },
        })
    }

    /// `kind: vertex`: project, location and the service account's token slot (shared
    /// across reloads by client_email + scopes, see `providers::google_auth`).
    fn vertex(&mut self, i: usize, b: &RawBackend, opts: &CompileOptions<'_>) -> ProviderConfig {
        let at = |f: &str| format!("backends[{i}].{f}");
        if b.auth.is_some() {
            self.err(
                at("auth"),
                "kind vertex authenticates with the service account in the `vertex` section",
            );
        }
        let Some(raw) = &b.vertex else {
            self.err(
                at("vertex"),
                "kind vertex needs a `vertex` section with project, location and service_account",
            );
            return ProviderConfig::Vertex(providers::gemini::VertexConfig {
                project: String::new(),
                location: String::new(),
                token: None,
            });
        };
        let ident = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        };
        if !ident(&raw.project) {
            self.err(
                at("vertex.project"),
                format!("{:?} is not a GCP project id", raw.project),
            );
        }
        if !ident(&raw.location) {
            self.err(
                at("vertex.location"),
                format!(
                    "{:?} is not a location such as \"us-central1\"",
                    raw.location
                ),
            );
        }
        let scopes = raw
            .scopes
            .clone()
            .unwrap_or_else(|| vec![providers::google_auth::CLOUD_PLATFORM_SCOPE.to_owned()]);
        if scopes.is_empty() || scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            self.err(
                at("vertex.scopes"),
                "scopes must be non-empty URLs without spaces",
            );
        }
        let token = if opts.resolve_secrets {
            self.secret(&at("vertex.service_account"), &raw.service_account, opts)
                .and_then(|json| {
                    match providers::google_auth::ServiceAccount::from_json(json.as_bytes()) {
                        Ok(sa) => Some(providers::google_auth::slot_for(sa, &scopes.join(" "))),
                        Err(e) => {
                            self.err(at("vertex.service_account"), e.to_string());
                            None
                        }
                    }
                })
        } else {
            None
        };
        ProviderConfig::Vertex(providers::gemini::VertexConfig {
            project: raw.project.clone(),
            location: raw.location.clone(),
            token,
        })
    }

    fn credential(
        &mut self,
        path: &str,
        auth: &RawAuth,
        kind: BackendKind,
        opts: &CompileOptions<'_>,
    ) -> Option<Credential> {
        let (header, prefix, secret_ref, secret_path) = match auth {
            RawAuth::ApiKey(r) => {
                let (header, prefix) = match kind {
                    BackendKind::Openai => ("authorization", "Bearer "),
                    BackendKind::AzureOpenai => ("api-key", ""),
                    BackendKind::Anthropic => ("x-api-key", ""),
                    BackendKind::Gemini => ("x-goog-api-key", ""),
                    // Refused in `provider` (these kinds sign or fetch their own credential).
                    BackendKind::Bedrock | BackendKind::Vertex => ("authorization", ""),
                };
                (header.to_owned(), prefix, r, format!("{path}.api_key"))
            }
            RawAuth::Bearer(r) => (
                "authorization".to_owned(),
                "Bearer ",
                r,
                format!("{path}.bearer"),
            ),
            RawAuth::Header { name, value } => {
                let lower = name.to_ascii_lowercase();
                let valid = !lower.is_empty()
                    && lower
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                    && !lower.starts_with("x-tollgate-");
                if !valid {
                    self.err(
                        format!("{path}.header.name"),
                        format!("{name:?} is not a usable header name"),
                    );
                }
                (lower, "", value, format!("{path}.header.value"))
            }
        };
        if !opts.resolve_secrets {
            return Some(Credential {
                header,
                value: Secret::new(format!("{prefix}<unresolved>")),
            });
        }
        let secret = self.secret(&secret_path, secret_ref, opts)?;
        if secret.bytes().any(|c| c.is_ascii_control()) {
            self.err(
                secret_path,
                "the secret holds control characters and cannot be sent as a header",
            );
            return None;
        }
        Some(Credential {
            header,
            value: Secret::new(format!("{prefix}{secret}")),
        })
    }

    /// Reads a file the config names, remembering it for the reloader to watch.
    fn read_input(&mut self, file: &str) -> std::io::Result<String> {
        self.inputs.push(file.into());
        std::fs::read_to_string(file)
    }

    /// Reads a secret from the environment or a file; errors name `secret_path`.
    fn secret(
        &mut self,
        secret_path: &str,
        secret_ref: &SecretRef,
        opts: &CompileOptions<'_>,
    ) -> Option<String> {
        match secret_ref {
            SecretRef::Env(var) => match (opts.env)(var) {
                Some(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
                Some(_) => {
                    self.err(
                        format!("{secret_path}.env"),
                        format!("environment variable {var:?} is empty"),
                    );
                    None
                }
                None => {
                    self.err(
                        format!("{secret_path}.env"),
                        format!("environment variable {var:?} is not set"),
                    );
                    None
                }
            },
            SecretRef::File(file) => match self.read_input(file) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim_end_matches(['\n', '\r']).to_owned()),
                Ok(_) => {
                    self.err(
                        format!("{secret_path}.file"),
                        format!("secret file {file:?} is empty"),
                    );
                    None
                }
                Err(e) => {
                    self.err(
                        format!("{secret_path}.file"),
                        format!("cannot read secret file {file:?}: {e}"),
                    );
                    None
                }
            },
        }
    }

    fn models(&mut self, raw: &[RawModel], backends: &HashMap<&str, usize>) -> Vec<Model> {
        let mut names: HashMap<&str, String> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, m) in raw.iter().enumerate() {
            let at = |f: &str| format!("models[{i}].{f}");
            for (j, name) in std::iter::once(&m.name).chain(&m.aliases).enumerate() {
                let path = if j == 0 {
                    at("name")
                } else {
                    at(&format!("aliases[{}]", j - 1))
                };
                if name.is_empty()
                    || name.contains(['*', '?'])
                    || name.chars().any(char::is_control)
                {
                    self.err(&path, format!("{name:?} is not a usable model name (empty, a glob, or control characters)"));
                }
                if let Some(first) = names.insert(name, path.clone()) {
                    self.err(
                        path,
                        format!("model name {name:?} is already used at {first}"),
                    );
                }
            }
            let backend = self.backend_ref(&at("backend"), &m.backend, backends);
            out.push(Model {
                name: m.name.clone(),
                aliases: m.aliases.clone(),
                backend: backend.unwrap_or_default(),
                upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            });
        }
        out
    }

    fn backend_ref(
        &mut self,
        path: &str,
        name: &str,
        backends: &HashMap<&str, usize>,
    ) -> Option<usize> {
        let found = backends.get(name).copied();
        if found.is_none() {
            let mut known: Vec<&str> = backends.keys().copied().collect();
            known.sort_unstable();
            self.err(
                path,
                format!("unknown backend {name:?}{}", suggest::hint(name, known)),
            );
        }
        found
    }

    fn routes(
        &mut self,
        raw: &[RawRoute],
        backends: &HashMap<&str, usize>,
        models: &[RawModel],
        chains: &[crate::routing::Chain],
    ) -> Vec<Route> {
        let mut names = HashSet::new();
        let mut catch_all: Option<usize> = None;
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].{f}");
            let name = r.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
            if r.name.is_some() {
                self.name(&at("name"), &name, "route");
            }
            if !names.insert(name.clone()) {
                self.err(at("name"), format!("duplicate route name {name:?}"));
            }
            if let Some(first) = catch_all {
                self.err(format!("routes[{i}]"), format!("unreachable: routes[{first}] matches every request, so rules after it never apply; move it to the end"));
            }
            for (j, g) in r.matches.models.iter().enumerate() {
                if g.is_empty() {
                    self.err(at(&format!("match.models[{j}]")), "empty model pattern");
                }
            }
            let mut headers = Vec::new();
            for (h, v) in &r.matches.headers {
                if h.is_empty()
                    || h.bytes().any(|c| {
                        c.is_ascii_uppercase()
                            || !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b':')
                    })
                {
                    self.err(
                        at(&format!("match.headers.{h}")),
                        format!("header names must be lower-case tokens, got {h:?}"),
                    );
                }
                headers.push((h.clone(), Glob::new(v)));
            }
            let target = self.target(i, r, backends, models, chains);
            let when = self.conditions(&at("match"), &r.matches);
            let route = Route {
                name,
                models: r.matches.models.iter().map(|g| Glob::new(g)).collect(),
                headers,
                when,
                force: r.force,
                target,
            };
            if route.is_catch_all() && catch_all.is_none() {
                catch_all = Some(i);
            }
            out.push(route);
        }
        out
    }
}

const DEFAULT_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

impl Cx {
    fn guard(&mut self, raw: &RawGuard, opts: &CompileOptions<'_>) -> Guard {
        use crate::pii::{self, Action, Detector, detect};
        use std::sync::Arc;
        // Custom detectors first: names must not shadow built-ins.
        let mut customs: Vec<Arc<Detector>> = Vec::new();
        let mut names: HashSet<String> = pii::BUILTIN.iter().map(|s| (*s).to_owned()).collect();
        for (i, d) in raw.detectors.iter().enumerate() {
            let at = |f: &str| format!("guard.detectors[{i}].{f}");
            let valid_name = !d.name.is_empty()
                && d.name.len() <= 40
                && d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                self.err(
                    at("name"),
                    format!("{:?} must be 1-40 characters of a-z, 0-9 or '_'", d.name),
                );
                continue;
            }
            if !names.insert(d.name.clone()) {
                self.err(
                    at("name"),
                    format!(
                        "detector name {:?} is already used (built-in or earlier detector)",
                        d.name
                    ),
                );
                continue;
            }
            let validator = match d.validator.as_deref() {
                None => None,
                Some(v) => match pii::validate::Validator::by_name(v) {
                    Some(v) => Some(v),
                    None => {
                        self.err(
                            at("validator"),
                            format!(
                                "unknown validator {v:?}{}; expected one of: {}",
                                suggest::hint(v, pii::validate::Validator::NAMES.iter().copied()),
                                pii::validate::Validator::NAMES.join(", ")
                            ),
                        );
                        continue;
                    }
                },
            };
            match Detector::custom(&d.name, &d.pattern, validator) {
                Ok(det) => customs.push(Arc::new(det)),
                Err(e) => self.err(at("pattern"), e.to_string()),
            }
        }
        let builtins: Vec<Arc<Detector>> = pii::BUILTIN
            .iter()
            .filter_map(|e| detect::builtin(e))
            .map(Arc::new)
            .collect();
        let all: Vec<Arc<Detector>> = builtins.into_iter().chain(customs).collect();
        let known: Vec<String> = all.iter().map(|d| d.entity.to_string()).collect();

        let uses_hash = raw.policies.iter().any(|p| {
            p.pii.as_ref().is_some_and(|pii| {
                pii.default_action.as_deref() == Some("hash")
                    || pii.entities.values().any(|a| a == "hash")
            })
        });
        let hash_key: Arc<[u8]> = match (&raw.hash_key, uses_hash) {
            (Some(r), _) if opts.resolve_secrets => match self.secret("guard.hash_key", r, opts) {
                Some(k) => Arc::from(k.into_bytes()),
                None => Arc::from(&b""[..]),
            },
            (None, true) => {
                self.err("guard.hash_key", "a policy uses the `hash` action: set hash_key (env or file) so hashes cannot be reversed by guessing");
                Arc::from(&b""[..])
            }
            _ => Arc::from(&b"unresolved"[..]),
        };

        let mut policy_names = HashSet::new();
        let mut policies = Vec::new();
        for (i, p) in raw.policies.iter().enumerate() {
            let at = |f: &str| format!("guard.policies[{i}].{f}");
            self.name(&at("name"), &p.name, "policy");
            if !policy_names.insert(p.name.clone()) {
                self.err(at("name"), format!("duplicate policy name {:?}", p.name));
            }
            let action = |cx: &mut Cx, path: String, text: &str| -> Option<Option<Action>> {
                if text == "off" {
                    return Some(None);
                }
                match Action::by_label(text) {
                    Some(a) => Some(Some(a)),
                    None => {
                        cx.err(
                            path,
                            format!(
                                "unknown action {text:?}{}; expected one of: {}, off",
                                suggest::hint(text, Action::LABELS.iter().copied()),
                                Action::LABELS.join(", ")
                            ),
                        );
                        None
                    }
                }
            };
            let mut request = None;
            let mut response = None;
            let mut restore_dets = Vec::new();
            let mut roles: Vec<String> = DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect();
            let mut thinking = crate::guard::Thinking::default();
            if let Some(pii_cfg) = &p.pii {
                if let Some(t) = pii_cfg.thinking.as_deref() {
                    match crate::guard::Thinking::by_label(t) {
                        Some(x) => thinking = x,
                        None => self.err(
                            at("pii.thinking"),
                            format!(
                                "{t:?} must be one of {}{}",
                                crate::guard::Thinking::LABELS.join(", "),
                                suggest::hint(t, crate::guard::Thinking::LABELS.iter().copied())
                            ),
                        ),
                    }
                }
                let default = action(
                    self,
                    at("pii.default_action"),
                    pii_cfg.default_action.as_deref().unwrap_or("mask"),
                )
                .flatten();
                for name in pii_cfg.entities.keys() {
                    if !known.contains(name) {
                        self.err(
                            at(&format!("pii.entities.{name}")),
                            format!(
                                "unknown entity {name:?}{}",
                                suggest::hint(name, known.iter().map(String::as_str))
                            ),
                        );
                    }
                }
                let mut req_dets = Vec::new();
                let mut resp_dets = Vec::new();
                for d in &all {
                    let a = match pii_cfg.entities.get(&*d.entity) {
                        Some(text) => {
                            action(self, at(&format!("pii.entities.{}", d.entity)), text).flatten()
                        }
                        None => default,
                    };
                    let Some(a) = a else { continue };
                    req_dets.push((d.clone(), a));
                    // Responses never issue new pseudonyms: the client would see them.
                    let ra = if a == Action::Pseudonymize {
                        Action::Mask
                    } else {
                        a
                    };
                    resp_dets.push((d.clone(), ra));
                }
                if let Some(r) = &pii_cfg.roles {
                    roles = r.clone();
                }
                if pii_cfg.request.unwrap_or(true) {
                    request = Some(Arc::new(pii::masker(req_dets, hash_key.clone(), false)));
                }
                if pii_cfg.response.unwrap_or(true) {
                    restore_dets = resp_dets.clone();
                    response = Some(Arc::new(pii::masker(resp_dets, hash_key.clone(), false)));
                }
            }
            let response_restore = Arc::new(pii::masker(restore_dets, hash_key.clone(), true));
            let blocked =
                p.blocked.as_ref().and_then(|b| {
                    match crate::guard::blocked::Blocked::new(&b.words, &b.regexes) {
                        Ok(x) => Some(x),
                        Err((j, e)) => {
                            let path = if j == usize::MAX {
                                at("blocked.words")
                            } else {
                                at(&format!("blocked.regexes[{j}]"))
                            };
                            self.err(path, format!("invalid: {e}"));
                            None
                        }
                    }
                });
            let tools = p.tools.as_ref().map(|t| {
                let on_denied = match t.on_denied.as_deref() {
                    None | Some("remove") => OnDenied::Remove,
                    Some("refuse") => OnDenied::Refuse,
                    Some(other) => {
                        self.err(
                            at("tools.on_denied"),
                            format!(
                                "{other:?} must be `remove` or `refuse`{}",
                                suggest::hint(other, ["remove", "refuse"])
                            ),
                        );
                        OnDenied::Remove
                    }
                };
                ToolPolicy {
                    allow: t.allow.iter().map(|g| Glob::new(g)).collect(),
                    deny: t.deny.iter().map(|g| Glob::new(g)).collect(),
                    on_denied,
                }
            });
            policies.push(Arc::new(Policy {
                name: p.name.clone(),
                matches: PolicyMatch {
                    routes: p.matches.routes.iter().map(|g| Glob::new(g)).collect(),
                    models: p.matches.models.iter().map(|g| Glob::new(g)).collect(),
                },
                shadow: p.shadow,
                request,
                response,
                response_restore,
                roles,
                thinking,
                blocked,
                blocked_in_responses: p.blocked.as_ref().and_then(|b| b.responses).unwrap_or(true),
                tools,
                prepend_system: p.system_prompt.as_ref().and_then(|s| s.prepend.clone()),
                append_system: p.system_prompt.as_ref().and_then(|s| s.append.clone()),
            }));
        }
        Guard { policies }
    }
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A tracing filter that names real levels: `info`, or `info,tollgate=debug`. Stricter than
/// `EnvFilter`, which reads a typo such as `inf` as a target name and logs nothing useful.
fn check_log_filter(filter: &str) -> Result<(), String> {
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

/// Parses `4MiB`, `512 KiB`, `1MB`, `100` (bytes).
pub fn parse_byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Rewrites serde's "unknown field `x`, expected one of `a`, `b`" into a suggestion.
fn humanize(message: &str) -> String {
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((word, tail)) = rest.split_once('`') else {
            continue;
        };
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = suggest::hint(word, expected.iter().copied());
        let list = if expected.is_empty() {
            String::new()
        } else {
            format!("; expected one of: {}", expected.join(", "))
        };
        return format!("unknown {what} {word:?}{hint}{list}");
    }
    message.to_owned()
}

mod access;

#[cfg(test)]
mod tests;

/// `base_path` when the config names none.
fn default_base_path(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Openai | BackendKind::Anthropic => "/v1",
        BackendKind::AzureOpenai
        | BackendKind::Bedrock
        | BackendKind::Vertex
        | BackendKind::Gemini => "",
    }
}
