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

use std::time::SystemTime;

/// What a translator needs to build the upstream request.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The API the client called.
    pub endpoint: crate::llm::Endpoint,
    /// The client's request body, OpenAI-shaped, after routing edits and guard masking.
    pub body: &'a [u8],
    /// Model name the backend must receive.
    pub upstream_model: &'a str,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client's query string including `?`, or empty.
    pub query: &'a str,
    /// Now (request signing, token expiry).
    pub now: SystemTime,
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
}

// INTERIM (issue-6 branch): replaced at merge by the providers branch's dispatcher.
mod interim;
pub use interim::{ProviderError, prepare};
