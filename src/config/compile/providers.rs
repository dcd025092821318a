//! Compiling the backends: each provider's settings, upstream credentials and the secrets
//! they read (environment or file, through `Cx::read_input`).

use super::{CompileOptions, Cx};
use crate::config::raw::{RawAuth, RawBackend, SecretRef};
use crate::providers::{self, ProviderConfig};
use crate::providers::{Backend, BackendKind, Credential};
use crate::secret::Secret;
use std::collections::{HashMap, HashSet};

impl Cx {
    pub(super) fn backends(
        &mut self,
        raw: &[RawBackend],
        opts: &CompileOptions<'_>,
    ) -> Vec<Backend> {
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

    /// Reads a secret from the environment or a file; errors name `secret_path`.
    pub(super) fn secret(
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
}

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
