//! A compiled upstream: its dialect, address rewrite and credential. Owned here, not by
//! routing, because every provider module shapes requests for one; routing only chooses
//! among them (by index into the snapshot's backend list), so the dependency runs
//! routing -> providers and never back.

use crate::secret::Secret;

/// API dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Any OpenAI-compatible server (OpenAI, vLLM, Ollama, OpenRouter, ...): passthrough.
    Openai,
    /// Azure OpenAI: deployment-addressed paths, `api-version`, `api-key` or Entra bearer.
    AzureOpenai,
    /// Anthropic Messages API: chat completions translated both ways; `/v1/messages` native.
    Anthropic,
    /// AWS Bedrock Converse / ConverseStream, SigV4-signed.
    Bedrock,
    /// Google Vertex AI generateContent, OAuth service-account token.
    Vertex,
    /// Google Gemini API generateContent, API key.
    Gemini,
}

impl BackendKind {
    /// The name as written in the config (`azure_openai`), for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::AzureOpenai => "azure_openai",
            BackendKind::Anthropic => "anthropic",
            BackendKind::Bedrock => "bedrock",
            BackendKind::Vertex => "vertex",
            BackendKind::Gemini => "gemini",
        }
    }
}

/// A compiled upstream.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// Dialect.
    pub kind: BackendKind,
    /// Path prefix at the upstream, without a trailing slash (may be empty).
    pub base_path: String,
    /// Value of `x-tollgate-backend` that Envoy's route matches.
    pub envoy_route: String,
    /// `:authority` rewrite.
    pub authority: Option<String>,
    /// Credential to add.
    pub credential: Option<Credential>,
    /// Per-kind settings (the variant matches `kind`).
    pub provider: super::ProviderConfig,
    /// Client headers that steer a provider account (see
    /// [`super::STEERING_HEADERS`]) this backend may receive; every other one is
    /// removed before the request leaves.
    pub forward_headers: Vec<String>,
}

/// A header carrying a backend credential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Lower-case header name.
    pub header: String,
    /// Full header value (e.g. `Bearer sk-...`).
    pub value: Secret,
}
