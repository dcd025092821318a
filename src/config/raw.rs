//! The configuration file as written: serde input types, nothing resolved or checked yet.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored key.
//! Doc comments here become the JSON Schema (`tollgate schema`) and the reference in
//! docs/configuration.md, so they are written for operators.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::observe::spans::OtlpProtocol;
use crate::providers::BackendKind;

/// tollgate configuration (version 1).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version of this file. Must be 1.
    pub version: u32,
    /// Listen addresses and request limits. Static: changes need a restart.
    #[serde(default)]
    pub server: RawServer,
    /// Logging. Static: changes need a restart.
    #[serde(default)]
    pub log: RawLog,
    /// How the file is watched for changes.
    #[serde(default)]
    pub reload: RawReload,
    /// Routing switches that apply to every request.
    #[serde(default)]
    pub routing: RawRouting,
    /// Upstream LLM services. Each one needs a matching route in Envoy's config (the
    /// `x-tollgate-backend` header value, see `envoy_route`).
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// The model catalogue: public names (and aliases) clients may ask for.
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// Ordered routing rules, tried before the catalogue; the first match wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// OpenTelemetry traces and optional metrics. Static: changes need a restart.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// The audit log: one JSON line per request. Static: changes need a restart.
    #[serde(default)]
    pub audit: RawAudit,
    /// PII/secret masking, blocked content, tool lists and system prompts.
    #[serde(default)]
    pub guard: RawGuard,
    /// How clients authenticate (API keys or trusted identity headers).
    #[serde(default)]
    pub auth: RawClientAuth,
    /// Teams: shared model/backend restrictions and routing pins for their consumers.
    #[serde(default)]
    pub teams: Vec<RawTeam>,
    /// Consumers (applications or people) and their API key hashes.
    #[serde(default)]
    pub consumers: Vec<RawConsumer>,
    /// Prices per model, for cost metadata, metrics and cost budgets.
    #[serde(default)]
    pub pricing: RawPricing,
    /// Rate limits and budgets, and where their counters live.
    #[serde(default)]
    pub limits: RawLimits,
    /// Token counting and response metering.
    #[serde(default)]
    pub usage: RawUsage,
}

/// Traces and metrics options.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// OTLP trace export. Off unless `enabled: true`.
    #[serde(default)]
    pub traces: RawTraces,
    /// Optional metrics that cost extra work per request.
    #[serde(default)]
    pub metrics: RawTelemetryMetrics,
}

/// OTLP trace export: one span per request, GenAI semantic-convention attributes.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    /// Export spans. Default `false`. When on, tollgate continues the client's W3C
    /// `traceparent` and sends its own span's `traceparent` upstream.
    pub enabled: Option<bool>,
    /// Collector URL. gRPC: `http://host:4317` (default). HTTP: `http://host:4318`;
    /// `/v1/traces` is appended unless the URL already has a path.
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http` (HTTP with protobuf bodies).
    pub protocol: Option<OtlpProtocol>,
    /// Share of new traces to record, 0.0-1.0. Default `1.0`. A request with a
    /// `traceparent` follows its caller's sampled flag instead.
    pub sampling_ratio: Option<f64>,
    /// `service.name` resource attribute. Default `tollgate`.
    pub service_name: Option<String>,
    /// Spans waiting for export; when full, new spans are dropped (and counted in
    /// `tollgate_telemetry_spans_dropped_total`) rather than slowing requests. Default `2048`.
    pub queue_size: Option<usize>,
    /// Longest wait for one export call, e.g. `5s`. Default `5s`.
    pub export_timeout: Option<String>,
}

/// Metrics with a cost.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetryMetrics {
    /// Measure time to first token (`gen_ai_server_time_to_first_token_seconds`) on
    /// streamed responses. Makes Envoy send every response body chunk of an SSE response to
    /// tollgate (`mode_override` STREAMED; nothing is buffered), which costs Envoy CPU per
    /// chunk. Default `false`.
    pub time_to_first_token: Option<bool>,
}

/// Audit log settings. Absent or without `output`: no audit log.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `stdout`, or an absolute file path (appended to, rotated by size).
    pub output: Option<String>,
    /// Rotate the file when it reaches this size, e.g. `100MiB`. Default `100MiB`.
    pub max_size: Option<ByteSize>,
    /// Rotated files kept (`audit.jsonl.1` ... `.N`). Default `5`.
    pub max_files: Option<u32>,
    /// Lines waiting for the writer; when full, lines are dropped (and counted in
    /// `tollgate_audit_lines_dropped_total`) rather than slowing requests. Default `4096`.
    pub queue_size: Option<usize>,
    /// Add the request's messages to each line, as the guard masked them. Only masked text is
    /// ever logged: the field is present only when the request's guard policy masks requests
    /// (not in shadow mode), and holds only the roles that policy scans. Default `false`.
    pub include_payload: Option<bool>,
}

/// Guard settings: custom detectors and ordered policies.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// Key for the `hash` action (a keyed HMAC-SHA256, so hashes join across requests but
    /// cannot be reversed by guessing). Required when any policy uses `hash`.
    pub hash_key: Option<SecretRef>,
    /// Extra detectors. Their names can be used in `entities` like built-in ones.
    #[serde(default)]
    pub detectors: Vec<RawDetector>,
    /// Policies, tried in order; the first whose `match` holds applies. Requests no policy
    /// matches are not guarded.
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

/// A custom detector.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    /// Entity name (`[a-z0-9_]`), used in `entities`, placeholders (upper-cased) and metrics.
    pub name: String,
    /// Regex (Rust `regex` syntax). Every repetition must be bounded (`{1,64}`, not `+`),
    /// so streams can be masked with a bounded hold-back.
    pub pattern: String,
    /// Optional check on each match: `luhn`, `mod97`, `kr_rrn`, `kr_brn`, `us_ssn`,
    /// `ipv4`, `ipv6` or `card`.
    pub validator: Option<String>,
}

/// One guard policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Name shown in metrics and metadata.
    pub name: String,
    /// When the policy applies; omitted or empty: every request.
    #[serde(default, rename = "match")]
    pub matches: RawPolicyMatch,
    /// Detect and report (metrics, metadata) without changing or refusing anything.
    #[serde(default)]
    pub shadow: bool,
    /// PII and secret masking.
    pub pii: Option<RawPii>,
    /// Blocked words, phrases and regexes.
    pub blocked: Option<RawBlocked>,
    /// Tool allow/deny lists.
    pub tools: Option<RawTools>,
    /// System messages added to every request.
    pub system_prompt: Option<RawSystemPrompt>,
}

/// Conditions of a policy (all must hold). A `teams` condition arrives with authentication.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyMatch {
    /// Routing rule names (a route's `name`, or `catalogue`, `command`); globs.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Catalogue model names (or the requested name for unlisted models); globs.
    #[serde(default)]
    pub models: Vec<String>,
}

/// PII masking settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPii {
    /// Mask requests. Default true.
    pub request: Option<bool>,
    /// Mask responses (streamed and not). Default true.
    pub response: Option<bool>,
    /// Message roles scanned in requests. Default: system, user, assistant, tool, function,
    /// developer.
    pub roles: Option<Vec<String>>,
    /// Action for every detector not listed in `entities`: `mask`, `partial`, `redact`,
    /// `hash`, `block`, `allow`, `pseudonymize`, or `off` (not run). Default `mask`.
    pub default_action: Option<String>,
    /// Per entity (built-in or custom detector name): an action as in `default_action`.
    #[serde(default)]
    pub entities: BTreeMap<String, String>,
    /// A signed Anthropic thinking block (request or response) whose text holds a detected
    /// value cannot be masked without breaking its signature: `drop` it (default), `block`
    /// the request/response, or `pass` it unchanged with the detections counted as `allow`.
    pub thinking: Option<String>,
}

/// Blocked content.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBlocked {
    /// Words and phrases, matched as whole words after NFKC normalisation, zero-width
    /// removal and case folding.
    #[serde(default)]
    pub words: Vec<String>,
    /// Regexes, matched on the same normalised (lower-case) text.
    #[serde(default)]
    pub regexes: Vec<String>,
    /// Also end responses that contain blocked content. Default true.
    pub responses: Option<bool>,
}

/// Tool lists (globs on function names).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTools {
    /// Only these tools may be offered or called (empty: all not denied).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These tools may never be offered or called.
    #[serde(default)]
    pub deny: Vec<String>,
    /// A denied tool in a request's `tools`: `remove` it (default) or `refuse` the request.
    /// A denied tool call in a response always ends the response with an error.
    pub on_denied: Option<String>,
}

/// System messages added to requests.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSystemPrompt {
    /// Inserted as the first message.
    pub prepend: Option<String>,
    /// Added as the last message.
    pub append: Option<String>,
}

/// Listen addresses and limits.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// ext_proc gRPC address: `host:port` or `unix:/path/to.sock`. Default `127.0.0.1:50051`.
    pub grpc_listen: Option<String>,
    /// Admin HTTP address (`/healthz`, `/ready`, `/metrics`). Default `127.0.0.1:9090`.
    pub admin_listen: Option<String>,
    /// Largest request body tollgate accepts, e.g. `4MiB` or a byte count. Default `4MiB`.
    /// Keep Envoy's buffer limit (`per_connection_buffer_limit_bytes`) above it.
    pub max_request_body: Option<ByteSize>,
    /// How long a shutdown waits for in-flight streams, e.g. `30s`. Default `30s`.
    pub drain_timeout: Option<String>,
    /// Who may call the ext_proc gRPC endpoint. A listener on a non-loopback address needs
    /// `secret` and/or `tls.client_ca_file`; loopback and Unix sockets may run without.
    #[serde(default)]
    pub grpc_auth: RawGrpcAuth,
    /// Serve `/debug/state` on the admin listener (open streams, tasks, reservations).
    /// Default `false`: the admin listener serves probes and `/metrics` only.
    pub debug_state: Option<bool>,
    /// Use a client-sent `x-request-id` as the request id. Default `false`: tollgate makes
    /// its own and overwrites the header, since Envoy passes a client's value through unless
    /// its listener sanitises it (`use_remote_address` on an edge listener).
    pub trust_request_id: Option<bool>,
}

/// Caller authentication of the ext_proc gRPC endpoint.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcAuth {
    /// Per-deployment shared secret every stream must carry as gRPC initial metadata
    /// `x-tollgate-secret` (Envoy: `grpc_service.initial_metadata`). Compared in constant
    /// time. Also keys the attempt tokens, so every replica must share it. Static: read at
    /// start (a rotated secret needs a restart).
    pub secret: Option<SecretRef>,
    /// Serve gRPC over TLS; with `client_ca_file`, callers must present a certificate it
    /// signed (mTLS).
    pub tls: Option<RawGrpcTls>,
    /// How long the attempt token the router-level stream issues for a fallback chain stays
    /// valid, e.g. `2m`. Cover every attempt's timeout. Default `5m`.
    pub attempt_token_ttl: Option<String>,
}

/// TLS for the ext_proc gRPC listener (PEM files, read at start).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcTls {
    /// Server certificate chain.
    pub cert_file: String,
    /// Server private key.
    pub key_file: String,
    /// CA whose certificates callers must present (mTLS). Without it any TLS client may
    /// connect, which does not count as caller authentication.
    pub client_ca_file: Option<String>,
}

/// A size in bytes: an integer, or a string such as `512KiB`, `4MiB`, `1MB`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ByteSize {
    /// Plain byte count.
    Bytes(u64),
    /// A number with a unit: B, KB, KiB, MB, MiB, GB, GiB.
    Text(String),
}

/// Logging settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a tracing filter such as
    /// `info,tollgate=debug`. `RUST_LOG` overrides it. Default `info`.
    pub level: Option<String>,
    /// `text` (default) or `json`.
    pub format: Option<LogFormat>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Hot-reload settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// Quiet time after a file event before reloading, e.g. `250ms`. Default `250ms`.
    pub debounce: Option<String>,
    /// Fallback poll interval for file systems without change events, e.g. `5s`.
    /// Default `5s`; `0s` disables polling.
    pub poll_interval: Option<String>,
}

/// Routing switches.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Honour a first-line `/model backend,model` command in the last user message.
    /// Default `true`.
    pub model_command: Option<bool>,
    /// Response header naming the routing decision (`<rule>; backend=<b>; model=<m>`),
    /// e.g. `x-tollgate-route`. Default: none (the decision is always in dynamic metadata).
    pub decision_header: Option<String>,
    /// How long a backend that answered 5xx/429 is avoided where an alternative exists
    /// (split variants, fallback-chain steps), e.g. `30s`. Default `30s`; `0s` disables.
    pub cooldown: Option<String>,
    /// PII entities that `match.pii` conditions look for (built-in detector names).
    /// Default: every built-in detector.
    pub pii_entities: Option<Vec<String>>,
    /// Fallback chains: a request routed to a chain is retried by Envoy on the next step's
    /// backend on connect failure, 5xx, 429 or timeout before the first response byte.
    /// Each chain needs an Envoy route and cluster (see envoy/envoy.yaml, `chain-*`).
    #[serde(default)]
    pub chains: Vec<RawChain>,
}

/// A fallback chain.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawChain {
    /// Unique name, `[a-z0-9._-]`, used as a route target (`chain: <name>`).
    pub name: String,
    /// Value tollgate puts in `x-tollgate-backend`; Envoy's route for the chain matches it.
    /// Default: `chain-<name>`.
    pub envoy_route: Option<String>,
    /// Backends in the order they are tried (at least two). The Envoy cluster of the chain
    /// lists the same backends as priorities 0, 1, ..., each endpoint carrying
    /// `filter_metadata: {io.tollgate: {backend: <name>}}`.
    pub steps: Vec<RawStep>,
}

/// One step of a fallback chain.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Backend name.
    pub backend: String,
    /// Model name this backend receives. Default: the model the route chose.
    pub upstream_model: Option<String>,
}

/// One upstream LLM service.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name, `[a-z0-9._-]`, used in routes, models and `/model` commands.
    pub name: String,
    /// API dialect the backend speaks: `openai` (any OpenAI-compatible server),
    /// `azure_openai`, `anthropic`, `bedrock`, `vertex` or `gemini`.
    pub kind: BackendKind,
    /// Path prefix of the API at the upstream. Default `/v1` for `openai` and `anthropic`
    /// (Anthropic's `/v1/messages`), empty for `azure_openai` (paths start `/openai/...`).
    pub base_path: Option<String>,
    /// Value tollgate puts in `x-tollgate-backend`; Envoy's route for this backend matches it.
    /// Default: the backend's name.
    pub envoy_route: Option<String>,
    /// Rewrite `:authority` (Host) to this value. Needs `mutation_rules.allow_all_routing`
    /// in Envoy's ext_proc filter, or do it in Envoy's route with `host_rewrite_literal`.
    pub authority: Option<String>,
    /// Credential tollgate adds for this backend; the client's own credential is always
    /// removed. Omit for upstreams that need none.
    pub auth: Option<RawAuth>,
    /// Settings for `kind: anthropic` (optional; defaults apply).
    pub anthropic: Option<RawAnthropic>,
    /// Settings for `kind: azure_openai` (optional; defaults apply).
    pub azure_openai: Option<RawAzureOpenai>,
    /// Settings for `kind: bedrock` (required for that kind).
    pub bedrock: Option<RawBedrock>,
    /// Settings for `kind: vertex` (required for that kind).
    pub vertex: Option<RawVertex>,
    /// Client headers that steer a provider account or feature set which this backend may
    /// receive, by name. Every other one of `cookie`, `openai-organization`,
    /// `openai-project`, `openai-beta`, `anthropic-beta` and `x-goog-user-project` is
    /// removed before the request leaves. Default: `[anthropic-beta]` for `kind:
    /// anthropic` (Claude Code needs it), none otherwise; setting the list replaces the
    /// default (`[]` forwards none). A fallback chain forwards a header only when every
    /// step allows it.
    pub forward_headers: Option<Vec<String>>,
}

/// AWS Bedrock settings. Requests are SigV4-signed (service `bedrock`) for the backend's
/// `authority` when set, else for `bedrock-runtime.<region>.amazonaws.com`; Envoy must send
/// that Host upstream. `auth` is not used for this kind.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBedrock {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id, e.g. `{env: AWS_ACCESS_KEY_ID}`.
    pub access_key_id: SecretRef,
    /// Secret access key, e.g. `{env: AWS_SECRET_ACCESS_KEY}`.
    pub secret_access_key: SecretRef,
    /// Session token of temporary credentials, e.g. `{env: AWS_SESSION_TOKEN}`; sent as
    /// `x-amz-security-token`.
    pub session_token: Option<SecretRef>,
}

/// Google Vertex AI settings. A service-account JSON key is exchanged (signed JWT, RS256)
/// at the key's `token_uri` for an OAuth access token, refreshed in the background before
/// it expires; until the first token arrives requests get a 503. `auth` is not used.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVertex {
    /// GCP project id.
    pub project: String,
    /// Region, e.g. `us-central1`.
    pub location: String,
    /// The service-account JSON key, e.g. `{file: /var/run/secrets/vertex/key.json}`.
    pub service_account: SecretRef,
    /// OAuth scopes. Default `["https://www.googleapis.com/auth/cloud-platform"]`.
    pub scopes: Option<Vec<String>>,
}

/// Anthropic Messages settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAnthropic {
    /// `anthropic-version` header sent upstream. Default `2023-06-01`.
    pub version: Option<String>,
    /// `max_tokens` for chat completions that set neither `max_completion_tokens` nor
    /// `max_tokens` (Anthropic requires one). Default `4096`.
    pub default_max_tokens: Option<u64>,
}

/// Azure OpenAI settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAzureOpenai {
    /// `api-version` query parameter. Default `2024-10-21`.
    pub api_version: Option<String>,
    /// Deployment name per upstream model name, e.g. `{gpt-4o: prod-gpt4o}`. A model not
    /// listed is used as the deployment name itself.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
}

/// How tollgate authenticates to a backend.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawAuth {
    /// The provider's own API-key header: `Authorization: Bearer` for `openai`, `api-key`
    /// for `azure_openai`, `x-api-key` for `anthropic`, `x-goog-api-key` for `gemini`.
    ApiKey(SecretRef),
    /// `Authorization: Bearer <secret>`.
    Bearer(SecretRef),
    /// A custom header carrying the secret as is, e.g. `api-key` or `x-api-key`.
    Header {
        /// Header name.
        name: String,
        /// Where the secret comes from.
        value: SecretRef,
    },
}

/// Where a secret comes from. Secrets never live in this file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// Name of an environment variable holding the secret.
    Env(String),
    /// Path of a file holding the secret (e.g. a mounted Kubernetes Secret); one trailing
    /// newline is ignored. Watched like the config, so a rotated secret is picked up without a
    /// restart; while it is missing the reload is refused and retried once it is back.
    File(String),
}

/// A catalogue entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Public model name clients send in `model`.
    pub name: String,
    /// Other names for the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Backend serving it.
    pub backend: String,
    /// Model name sent upstream (the body's `model` is rewritten). Default: `name`.
    pub upstream_model: Option<String>,
}

/// A routing rule: when every condition in `match` holds, send the request to `model`
/// (a catalogue entry) or to `backend` (optionally renaming the model).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name shown in metrics, logs and metadata. Default `routes[i]`.
    pub name: Option<String>,
    /// Conditions; all must hold. Omitted or empty: matches every request (a default route,
    /// which must be last).
    #[serde(default, rename = "match")]
    pub matches: RawMatch,
    /// Send to this catalogue model.
    pub model: Option<String>,
    /// Send to this backend.
    pub backend: Option<String>,
    /// With `backend`: model name to send upstream. Default: the requested name unchanged.
    pub upstream_model: Option<String>,
    /// Send to this fallback chain (`routing.chains[].name`).
    pub chain: Option<String>,
    /// Split between targets by weight (canary, A/B). Each variant names one of `model`,
    /// `backend` (+ `upstream_model`) or `chain`.
    pub split: Option<Vec<RawVariant>>,
    /// With `split`: `consumer` sends a consumer always to the same variant (stable hash of
    /// the rule name and consumer); `none` draws per request. Default `none`.
    pub sticky: Option<Stickiness>,
    /// Evaluate this rule before `/model` commands and team pins, so nothing a client sends
    /// overrides it (data locality, e.g. `match: {pii: true}` → a local backend).
    /// Default `false`.
    #[serde(default)]
    pub force: bool,
}

/// One weighted target of a split.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    /// Relative weight, 1..=1000000.
    pub weight: u32,
    /// A catalogue model.
    pub model: Option<String>,
    /// A backend.
    pub backend: Option<String>,
    /// With `backend`: model name to send upstream.
    pub upstream_model: Option<String>,
    /// A fallback chain.
    pub chain: Option<String>,
}

/// Split stickiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stickiness {
    /// A new draw per request.
    None,
    /// The same variant for the same consumer.
    Consumer,
}

/// A prompt-size bound (estimated tokens: characters of message text / 4).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTokenBound {
    /// Matches prompts with more estimated tokens than this.
    pub above: Option<u64>,
    /// Matches prompts with fewer estimated tokens than this.
    pub below: Option<u64>,
}

/// Keywords or a regex on the last user message (either may match).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTextMatch {
    /// Case-insensitive substrings, e.g. `["step by step", "prove"]`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression (Rust `regex` syntax; `(?i)` for case-insensitive).
    pub regex: Option<String>,
}

/// Conditions of a route.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Requested model names; `*` and `?` globs. Any one may match.
    #[serde(default)]
    pub models: Vec<String>,
    /// Request headers (lower-case names) whose values must match these globs. Client
    /// `x-tollgate-*` headers are read here before tollgate strips them.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The client's `x-tollgate-profile` hint: any of `general`, `reasoning`, `longform`,
    /// `background`. A hint the client chooses: use it to pick models, never to grant access.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Request paths (globs, query excluded), e.g. `/v1/embeddings`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Consumer names (globs).
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Team names (globs).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Estimated prompt size.
    pub prompt_tokens: Option<RawTokenBound>,
    /// Keywords or regex on the last user message.
    pub last_user_message: Option<RawTextMatch>,
    /// The request declares tools (`true`) or does not (`false`).
    pub tools: Option<bool>,
    /// Some message carries an image (`true`) or none does (`false`).
    pub images: Option<bool>,
    /// `stream: true` (`true`) or not (`false`).
    pub stream: Option<bool>,
    /// PII was detected in the request's message text (`true`) or not (`false`), by the
    /// detectors in `routing.pii_entities`. Runs before the guard masks anything.
    pub pii: Option<bool>,
}

/// Client authentication.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// `api_key`: `Authorization: Bearer <key>` or `x-api-key: <key>`, matched against the
    /// consumers' key hashes. `identity_headers`: trust headers set by an earlier Envoy
    /// filter (e.g. jwt_authn `claim_to_headers`). `none`: no authentication. Default:
    /// `api_key` when `consumers` are configured, else `none`.
    pub mode: Option<ClientAuthMode>,
    /// A file (e.g. a mounted Secret) with more key hashes, one `<consumer> sha256:<hex>`
    /// per line; `#` starts a comment. Watched like the config: a key removed from it is
    /// revoked at the next file event or poll.
    pub key_file: Option<String>,
    /// Header names for `identity_headers` mode.
    pub identity_headers: Option<RawIdentityHeaders>,
    /// Treat requests without any credential as this consumer (e.g. for an internal
    /// playground). A wrong key is still refused. Default: none (401).
    pub anonymous_consumer: Option<String>,
}

/// How clients are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// API keys (hashes in the config or `key_file`).
    ApiKey,
    /// Trusted identity headers.
    IdentityHeaders,
    /// No authentication.
    None,
}

/// Identity header names (lower-case).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    /// Header naming the consumer; requests without it get 401.
    pub consumer: String,
    /// Header naming the team (a configured team), for consumers not listed in `consumers`.
    pub team: Option<String>,
}

/// A team.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    /// Unique name, `[a-z0-9._-]`.
    pub name: String,
    /// Models the team may use (globs over requested and catalogue names). Omitted: all.
    pub models: Option<Vec<String>>,
    /// Backends the team may use. Omitted: all.
    pub backends: Option<Vec<String>>,
    /// Send every request of the team to this backend (and model), whatever it asks for.
    pub pin: Option<RawPin>,
}

/// A routing pin.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    /// Backend every request goes to.
    pub backend: String,
    /// Model sent upstream. Default: the requested model, unchanged.
    pub model: Option<String>,
}

/// A consumer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// Unique name, `[a-z0-9._@-]`; shown in metadata, logs and limit keys.
    pub name: String,
    /// Team it belongs to.
    pub team: Option<String>,
    /// API key hashes, `sha256:<64 hex>` (print one with `tollgate hash-key`). Never the key.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Models this consumer may use (narrows the team's list). Omitted: all.
    pub models: Option<Vec<String>>,
    /// Backends this consumer may use (narrows the team's list). Omitted: all.
    pub backends: Option<Vec<String>>,
}

/// Prices.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPricing {
    /// Use the shipped price table (pricing/default.yaml) after `models` and `file`.
    /// Default `true`.
    pub defaults: Option<bool>,
    /// A price file in the shipped table's format, consulted after `models`.
    pub file: Option<String>,
    /// Prices in USD per million tokens; first match wins (before `file` and defaults).
    #[serde(default)]
    pub models: Vec<crate::pricing::PriceEntry>,
}

/// Limits and budgets.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Where counters live: `memory` (default; one replica) or `redis` (shared).
    /// Static: a change needs a restart.
    pub store: Option<LimitStore>,
    /// Redis settings (with `store: redis`). Static.
    pub redis: Option<RawRedis>,
    /// Output tokens reserved for a request that sets no `max_tokens` /
    /// `max_completion_tokens`. Default 4096.
    pub default_max_tokens: Option<u64>,
    /// Limit rules; every matching rule applies.
    #[serde(default)]
    pub rules: Vec<RawLimitRule>,
}

/// Counter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitStore {
    /// In-process.
    Memory,
    /// Redis, shared by replicas.
    Redis,
}

/// Redis connection and failure handling.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db` (no password here; see `password`).
    pub url: String,
    /// Redis password (AUTH), from the environment or a file.
    pub password: Option<SecretRef>,
    /// Longest wait for one Redis command, e.g. `50ms`; no request waits longer.
    /// Default `100ms`.
    pub command_timeout: Option<String>,
    /// When Redis is unreachable: `open` admits requests unlimited (counted in
    /// `tollgate_limits_fail_open_total`), `closed` refuses them with 503. Default `open`.
    pub failure_mode: Option<FailureMode>,
    /// Consecutive failures that open the circuit breaker. Default 3.
    pub breaker_failures: Option<u32>,
    /// How long the open breaker skips Redis before one probe, e.g. `1s`. Default `1s`.
    pub breaker_cooldown: Option<String>,
    /// Prefix of every key. Default `tollgate`.
    pub key_prefix: Option<String>,
}

/// Behaviour while the limits store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Admit without limits.
    Open,
    /// Refuse with 503.
    Closed,
}

/// A limit rule. Counters are kept per combination of the `per` dimensions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimitRule {
    /// Unique name, `[a-z0-9._-]` (in keys, metrics and error messages).
    pub name: String,
    /// Keep separate counters per `consumer`, `team` and/or `model`. Empty: one shared
    /// counter for every matching request.
    #[serde(default)]
    pub per: Vec<LimitDimension>,
    /// Which requests the rule applies to. Omitted: all.
    #[serde(default, rename = "match")]
    pub matches: RawLimitMatch,
    /// Requests per UTC minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens (input + output) per UTC minute.
    pub tokens_per_minute: Option<u64>,
    /// USD per UTC day.
    pub cost_per_day: Option<f64>,
    /// USD per UTC calendar month.
    pub cost_per_month: Option<f64>,
}

/// A limit dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitDimension {
    /// Per consumer.
    Consumer,
    /// Per team.
    Team,
    /// Per model (catalogue name, else requested name).
    Model,
}

/// Which requests a limit rule applies to (globs; any one may match).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimitMatch {
    /// Consumer names.
    #[serde(default)]
    pub consumers: Vec<String>,
    /// Team names.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Models.
    #[serde(default)]
    pub models: Vec<String>,
}

/// Token counting and metering.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    /// Read response bodies to count usage (token/cost metrics, metadata, audit) even when
    /// no token or cost limit applies. Default `true`; with `false`, bodies are read only
    /// for requests under a token or cost limit.
    pub meter: Option<bool>,
    /// Prompt tokens at admission: `estimate` (default; the body length, a cheap upper
    /// bound) or `exact` (tiktoken).
    pub prompt_tokens: Option<PromptTokens>,
    /// Count prompts exactly for these routes (route names, `catalogue`, `model_command`)
    /// and models (globs), whatever `prompt_tokens` says.
    #[serde(default)]
    pub exact_for: RawExactFor,
}

/// How prompt tokens are counted at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptTokens {
    /// Body length (upper bound, O(1)).
    Estimate,
    /// tiktoken.
    Exact,
}

/// Where exact prompt counting applies.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawExactFor {
    /// Route names (as in `routes[].name`), or `catalogue` / `model_command`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Model globs.
    #[serde(default)]
    pub models: Vec<String>,
}
