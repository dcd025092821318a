//! Provider translators: one OpenAI-compatible front door, each backend's own dialect.
//!
//! This module owns the seam between the exchange and the per-provider code. The exchange
//! (router-level ext_proc) and, for fallback chains, the upstream-level ext_proc call the
//! same two things:
//! - [`prepare`]: OpenAI-shaped request body (after routing and the guard) → the request the
//!   backend receives (`:path`, headers to set/remove, replacement body). Pure: time is an
//!   input, credentials come from the compiled backend (or a token source the caller read).
//! - [`ResponseTranslator`]: the backend's response (JSON, SSE, AWS eventstream) → an
//!   OpenAI-shaped response, chunk by chunk. Usage metering and the response guard run on
//!   its output, so every provider gets identical counting and masking.
//!
//! Translators are plain functions over bytes / `serde_json::Value`; one module per
//! client-schema → provider-schema pair. Invariant: a translator never panics on any input;
//! bad upstream bytes become an OpenAI-shaped error (JSON envelope, or an SSE error event
//! once the stream has started).
//!
//! Dispatch is one `match` arm per [`BackendKind`] in [`prepare`] and
//! [`response_translator`]; a new kind adds its variant to [`BackendKind`] and
//! [`ProviderConfig`], its module here, and one arm in each match. The dispatcher adds what
//! every kind shares: the `:authority` rewrite and a header credential (`auth`), so a kind
//! module only writes its own path, headers and body.

pub mod anthropic;
pub mod azure;
pub mod backend;
pub mod bedrock;
pub mod eventstream;
pub mod gemini;
pub mod google_auth;
pub mod openai;
pub mod openai_shape;
pub mod sigv4;

use crate::llm::Endpoint;
pub use backend::{Backend, BackendKind, Credential};
use std::time::SystemTime;
use thiserror::Error;

/// Per-kind settings of a backend, compiled from its config section. The variant always
/// matches [`Backend::kind`] (the config compiler builds both from the same `kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    /// OpenAI-compatible: nothing beyond the common backend fields.
    Openai,
    /// Azure OpenAI: deployments and API version.
    AzureOpenai(azure::Config),
    /// Anthropic Messages: API version and the `max_tokens` default.
    Anthropic(anthropic::Config),
    /// AWS Bedrock: region and SigV4 credentials.
    Bedrock(bedrock::Config),
    /// Google Vertex AI: project, location and the service account's token slot.
    Vertex(gemini::VertexConfig),
    /// Google Gemini API (the key is the backend's `auth`).
    Gemini,
}

impl ProviderConfig {
    /// The kind these settings belong to.
    pub fn kind(&self) -> BackendKind {
        match self {
            ProviderConfig::Openai => BackendKind::Openai,
            ProviderConfig::AzureOpenai(_) => BackendKind::AzureOpenai,
            ProviderConfig::Anthropic(_) => BackendKind::Anthropic,
            ProviderConfig::Bedrock(_) => BackendKind::Bedrock,
            ProviderConfig::Vertex(_) => BackendKind::Vertex,
            ProviderConfig::Gemini => BackendKind::Gemini,
        }
    }
}

/// Why a request cannot be sent to its backend. Mapped to the client's error envelope in
/// [`crate::error`] only.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// The backend's kind does not serve this API.
    #[error(
        "{endpoint} is not available for model {model:?}: its backend speaks {kind}, which {reason}"
    )]
    UnsupportedEndpoint {
        /// The API the client called (`POST /v1/embeddings`).
        endpoint: &'static str,
        /// The model the request was routed as.
        model: String,
        /// The backend's kind.
        kind: &'static str,
        /// Why, in words (`has no embeddings API`).
        reason: &'static str,
    },
    /// The request has something the provider's dialect cannot express.
    #[error("the request cannot be translated for {kind}: {problem}")]
    Untranslatable {
        /// The backend's kind.
        kind: &'static str,
        /// The offending parameter, when one is to blame.
        param: Option<&'static str>,
        /// What is wrong (never prompt text).
        problem: String,
    },
    /// The gateway has no usable credential for the backend yet (e.g. the OAuth token
    /// exchange has not succeeded); the request is refused at once instead of waiting.
    #[error("backend {backend:?} is not ready: {reason}")]
    CredentialsUnavailable {
        /// The backend's name.
        backend: String,
        /// Why (never a secret).
        reason: String,
    },
}

/// Builds the request the backend receives from the final OpenAI-shaped body (or, for a
/// native front door such as `/v1/messages`, the client's own body).
pub fn prepare(backend: &Backend, out: &Outbound<'_>) -> Result<Prepared, ProviderError> {
    let mut p = match &backend.provider {
        ProviderConfig::Openai => openai::prepare(backend, out)?,
        ProviderConfig::AzureOpenai(cfg) => azure::prepare(backend, cfg, out)?,
        ProviderConfig::Anthropic(cfg) => anthropic::prepare(backend, cfg, out)?,
        ProviderConfig::Bedrock(cfg) => bedrock::prepare_backend(backend, cfg, out)?,
        ProviderConfig::Vertex(cfg) => gemini::prepare_vertex(backend, cfg, out)?,
        ProviderConfig::Gemini => gemini::prepare_gemini(backend, out)?,
    };
    if let Some(authority) = &backend.authority {
        p.set(":authority", authority.as_bytes());
    }
    if let Some(cred) = &backend.credential {
        p.set(&cred.header, cred.value.expose().as_bytes());
    }
    Ok(p)
}

/// Client headers that choose a provider account, project or feature set (or carry a
/// browser session): a client must not pick the organisation billed or turn on beta
/// behaviour behind the operator's back. Removed before every provider unless the
/// backend's `forward_headers` names them.
pub const STEERING_HEADERS: &[&str] = &[
    "cookie",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "anthropic-beta",
    "x-goog-user-project",
];

/// The shipped `forward_headers` of a kind: Anthropic backends take `anthropic-beta`
/// (Claude Code sends the betas it relies on there).
pub fn default_forward_headers(kind: BackendKind) -> Vec<String> {
    match kind {
        BackendKind::Anthropic => vec!["anthropic-beta".to_owned()],
        _ => Vec::new(),
    }
}

/// The steering headers among the client's `names` that must not reach a request sent to
/// any of `backends` (for a fallback chain: every step, since attempts share one header
/// map, a header goes only if every step allows it). The one place this is decided.
pub fn steering_removals<'a>(
    backends: &[&Backend],
    names: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if STEERING_HEADERS.contains(&name)
            && !backends
                .iter()
                .all(|b| b.forward_headers.iter().any(|h| h == name))
            && !out.iter().any(|o| o == name)
        {
            out.push(name.to_owned());
        }
    }
    out
}

/// The translator for this request's response; `None` passes the upstream's bytes through.
pub fn response_translator(
    backend: &Backend,
    out: &Outbound<'_>,
) -> Option<Box<dyn ResponseTranslator>> {
    match &backend.provider {
        ProviderConfig::Openai | ProviderConfig::AzureOpenai(_) => None,
        ProviderConfig::Anthropic(_) => anthropic::response_translator(out),
        ProviderConfig::Bedrock(_) => bedrock::response_translator(out),
        ProviderConfig::Vertex(_) | ProviderConfig::Gemini => gemini::response_translator(out),
    }
}

/// `POST /v1/...` for messages.
pub(crate) fn endpoint_label(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions => "POST /v1/chat/completions",
        Endpoint::Embeddings => "POST /v1/embeddings",
        Endpoint::Messages => "POST /v1/messages",
        Endpoint::Models => "GET /v1/models",
    }
}

/// What a translator needs to build the upstream request.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The API the client called.
    pub endpoint: crate::llm::Endpoint,
    /// The client's request body, OpenAI-shaped, after routing edits and guard masking.
    pub body: &'a [u8],
    /// The same body as a document, built from the request view (no parse); `None` makes
    /// [`Outbound::document`] parse `body` (tests, benches, `tollgate` tools).
    pub doc: Option<&'a serde_json::Value>,
    /// Model name the backend must receive.
    pub upstream_model: &'a str,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client's query string including `?`, or empty.
    pub query: &'a str,
    /// Now (request signing, token expiry).
    pub now: SystemTime,
}

impl Outbound<'_> {
    /// The request as a document for a translator that builds another shape: the view's
    /// (given by the provider stage), else `body` parsed.
    pub fn document(&self) -> Result<std::borrow::Cow<'_, serde_json::Value>, serde_json::Error> {
        match self.doc {
            Some(d) => Ok(std::borrow::Cow::Borrowed(d)),
            None => {
                crate::llm::json::count_full_parse();
                serde_json::from_slice(self.body).map(std::borrow::Cow::Owned)
            }
        }
    }

    /// `stream_options.include_usage` of the final OpenAI body: the usage stage sets it when
    /// it needs usage and strips the usage chunk again when the client did not ask for it.
    pub fn include_usage(&self) -> bool {
        self.document()
            .ok()
            .and_then(|v| {
                v.pointer("/stream_options/include_usage")
                    .and_then(serde_json::Value::as_bool)
            })
            .unwrap_or(false)
    }
}

/// Whether `backend` builds a new document from the request (then the provider stage hands
/// it [`Outbound::doc`]); passthrough kinds send the bytes as they are.
pub fn builds_document(backend: &Backend, endpoint: Endpoint) -> bool {
    match &backend.provider {
        ProviderConfig::Openai | ProviderConfig::AzureOpenai(_) => false,
        ProviderConfig::Anthropic(_) => endpoint == Endpoint::ChatCompletions,
        ProviderConfig::Bedrock(_) | ProviderConfig::Vertex(_) | ProviderConfig::Gemini => true,
    }
}

/// The upstream request, as header and body mutations for Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Full `:path` (query included).
    pub path: String,
    /// Headers to set (credentials, signatures, content-type, version headers).
    pub set: Vec<(String, Vec<u8>)>,
    /// Headers to remove.
    pub remove: Vec<String>,
    /// Replacement body; `None` keeps the body as it is.
    pub body: Option<Vec<u8>>,
}

impl Prepared {
    /// Sets a header, replacing an earlier set of the same name (and a queued removal).
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.set.retain(|(n, _)| n != name);
        self.remove.retain(|n| n != name);
        self.set.push((name.to_owned(), value.into()));
    }

    /// Removes a header (unless it is set).
    pub fn remove(&mut self, name: &str) {
        if !self.set.iter().any(|(n, _)| n == name) && !self.remove.iter().any(|n| n == name) {
            self.remove.push(name.to_owned());
        }
    }
}

/// The response head after translation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// `content-type` the client sees, when it differs from the upstream's.
    pub content_type: Option<String>,
    /// The body length changes: Envoy must drop `content-length` and re-frame.
    pub body_changes: bool,
}

/// Turns one backend response into the OpenAI shape, incrementally.
pub trait ResponseTranslator: Send + std::fmt::Debug {
    /// Called once with the upstream status and content-type, before any body.
    fn head(&mut self, status: u16, content_type: &str) -> Head;
    /// Upstream body bytes in, client bytes out (may be empty while a frame is incomplete);
    /// at `end_of_stream` everything held is flushed.
    fn body(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8>;
    /// For a translated event stream: upstream bytes in, the client's events out, each
    /// built with its JSON (so the response pipeline neither re-frames nor re-parses
    /// them). `None`, without consuming the chunk, when the response is not translated as
    /// an event stream: then [`ResponseTranslator::body`] is called.
    fn events(
        &mut self,
        _chunk: &[u8],
        _end_of_stream: bool,
    ) -> Option<Vec<crate::llm::sse::Event>> {
        None
    }
    /// Usage metering reads this response (called before [`ResponseTranslator::head`]):
    /// a translated event stream then keeps a [`Report`](crate::llm::usage::Report) of the
    /// usage, model and delivered text it sees. `usage_chunk` false: the client did not ask
    /// for the usage chunk (tollgate did), so it is not written.
    fn meter(&mut self, usage_chunk: bool);
    /// For a metered, translated event stream: what it saw since the last call (usage
    /// reads this instead of the events). `None`: not metered, or not an event stream.
    fn report(&mut self) -> Option<crate::llm::usage::Report>;
}

/// Builders shared by the translator tests.
#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod report_tests;

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A backend of the given kind with `/v1` as base path and no credential.
    pub fn backend(name: &str, provider: ProviderConfig) -> Backend {
        Backend {
            name: name.into(),
            kind: provider.kind(),
            base_path: "/v1".into(),
            envoy_route: name.into(),
            authority: None,
            credential: None,
            forward_headers: default_forward_headers(provider.kind()),
            provider,
        }
    }

    /// An outbound request for `model` at a fixed time.
    pub fn outbound(endpoint: Endpoint, body: &[u8]) -> Outbound<'_> {
        Outbound {
            endpoint,
            body,
            doc: None,
            upstream_model: "m",
            stream: false,
            query: "",
            now: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        }
    }
}

/// Largest non-streamed upstream body a translator holds; a bigger one becomes one error.
pub const MAX_JSON_RESPONSE: usize = 16 << 20;

/// A non-streamed upstream body, held whole up to [`MAX_JSON_RESPONSE`] (translators need
/// the whole document). Past the cap the bytes are dropped and only the overflow is kept.
#[derive(Debug, Default)]
pub struct CappedBody {
    buf: Vec<u8>,
    overflow: bool,
}

impl CappedBody {
    /// Appends a chunk (or records the overflow).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        if self.buf.len() + chunk.len() > MAX_JSON_RESPONSE {
            self.overflow = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// The whole body, or `None` when it exceeded the cap.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        (!self.overflow).then(|| std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod capped_tests {
    use super::*;

    #[test]
    fn holds_up_to_the_cap_and_reports_overflow() {
        let mut b = CappedBody::default();
        b.push(b"ab");
        b.push(b"c");
        assert_eq!(b.take().as_deref(), Some(&b"abc"[..]));
        let mut b = CappedBody::default();
        b.push(&vec![0; MAX_JSON_RESPONSE]);
        b.push(b"x");
        b.push(b"y");
        assert_eq!(b.take(), None);
    }
}

#[cfg(test)]
mod steering_tests {
    use super::testing::backend;
    use super::*;

    const CLIENT: &[&str] = &[
        "content-type",
        "cookie",
        "openai-organization",
        "openai-project",
        "openai-beta",
        "anthropic-beta",
        "x-goog-user-project",
        "x-session-id",
        "cookie",
    ];

    #[test]
    fn steering_headers_are_removed_unless_the_backend_forwards_them() {
        let openai = backend("a", ProviderConfig::Openai);
        let claude = backend("c", ProviderConfig::Anthropic(anthropic::Config::default()));
        let removed = steering_removals(&[&openai], CLIENT.iter().copied());
        assert_eq!(removed, STEERING_HEADERS, "each once, nothing else");
        // Anthropic's shipped default keeps anthropic-beta (Claude Code), nothing more.
        let removed = steering_removals(&[&claude], CLIENT.iter().copied());
        assert!(!removed.contains(&"anthropic-beta".to_owned()));
        assert_eq!(removed.len(), STEERING_HEADERS.len() - 1);
        // A chain forwards only what every step allows.
        let removed = steering_removals(&[&claude, &openai], CLIENT.iter().copied());
        assert!(removed.contains(&"anthropic-beta".to_owned()));
        // Configured by name: an OpenAI backend that takes the organisation header.
        let mut org = backend("o", ProviderConfig::Openai);
        org.forward_headers = vec!["openai-organization".into()];
        let removed = steering_removals(&[&org], CLIENT.iter().copied());
        assert!(!removed.contains(&"openai-organization".to_owned()));
        assert!(removed.contains(&"openai-project".to_owned()));
    }
}
