//! Attribute and metric names: OpenTelemetry GenAI semantic conventions where they exist,
//! `tollgate.*` for the rest. One spelling, used by spans, metrics and the audit log.
//!
//! Prometheus cannot carry dots, so metric names map as `.` → `_` plus the unit suffix:
//! `gen_ai.server.request.duration` (s) → `gen_ai_server_request_duration_seconds`,
//! `gen_ai.client.token.usage` ({token}) → `gen_ai_client_token_usage` (a histogram of
//! tokens per request), `gen_ai.server.time_to_first_token` (s) →
//! `gen_ai_server_time_to_first_token_seconds`, `gen_ai.server.time_per_output_token` (s) →
//! `gen_ai_server_time_per_output_token_seconds`; label names map the same way
//! (`gen_ai.operation.name` → `gen_ai_operation_name`).

/// `gen_ai.operation.name`: `chat`, `embeddings`, ...
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`: `openai`, ...
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`: the model the client asked for.
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`: the model the provider says answered.
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.usage.input_tokens`.
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.token.type`: `input` or `output` (token usage metric label).
pub const TOKEN_TYPE: &str = "gen_ai.token.type";
/// `error.type`: low-cardinality error class.
pub const ERROR_TYPE: &str = "error.type";
/// `http.response.status_code`.
pub const HTTP_STATUS: &str = "http.response.status_code";

/// tollgate's backend name.
pub const BACKEND: &str = "tollgate.backend";
/// Routing rule that decided.
pub const RULE: &str = "tollgate.route";
/// Catalogue model name (or `unlisted`).
pub const MODEL: &str = "tollgate.model";
/// Model name sent upstream.
pub const UPSTREAM_MODEL: &str = "tollgate.upstream_model";
/// Request id.
pub const REQUEST_ID: &str = "tollgate.request_id";
/// Streamed response requested.
pub const STREAM: &str = "tollgate.stream";
/// Calling consumer.
pub const CONSUMER: &str = "tollgate.consumer";
/// The consumer's team.
pub const TEAM: &str = "tollgate.team";
/// Cost in USD.
pub const COST_USD: &str = "tollgate.cost.usd";
/// Guard findings (all detectors).
pub const GUARD_DETECTIONS: &str = "tollgate.guard.detections";
/// Values masked by the guard.
pub const GUARD_MASKED: &str = "tollgate.guard.masked";
/// Request blocked by the guard.
pub const GUARD_BLOCKED: &str = "tollgate.guard.blocked";
/// Time to first token, seconds (span attribute).
pub const TIME_TO_FIRST_TOKEN: &str = "tollgate.time_to_first_token";

/// Maps an endpoint to the GenAI operation name.
pub fn operation(endpoint: crate::llm::Endpoint) -> &'static str {
    match endpoint {
        crate::llm::Endpoint::ChatCompletions | crate::llm::Endpoint::Messages => "chat",
        crate::llm::Endpoint::Embeddings => "embeddings",
        crate::llm::Endpoint::Models => "list_models",
    }
}

/// Maps a backend dialect to `gen_ai.provider.name`.
pub fn provider(kind: crate::providers::BackendKind) -> &'static str {
    match kind {
        crate::providers::BackendKind::Openai => "openai",
        crate::providers::BackendKind::AzureOpenai => "azure.ai.openai",
        crate::providers::BackendKind::Anthropic => "anthropic",
        crate::providers::BackendKind::Bedrock => "aws.bedrock",
        crate::providers::BackendKind::Vertex => "gcp.vertex_ai",
        crate::providers::BackendKind::Gemini => "gcp.gemini",
    }
}
