//! `anthropic` backends: the Anthropic Messages API behind the OpenAI front door, and the
//! native `/v1/messages` front door passed through.
//!
//! - [`request`]: OpenAI chat completion body → Messages body (`POST {base_path}/messages`,
//!   `anthropic-version`, `content-type`, `accept-encoding: identity` so the response can be
//!   translated; the `x-api-key` credential comes from the backend's `auth`).
//! - [`response`]: a whole Messages response (or an error body) → `chat.completion` (or the
//!   OpenAI error envelope, the provider's message kept, the status unchanged).
//! - [`stream`]: Messages SSE → `chat.completion.chunk` events, event by event.
//!
//! `/v1/messages` requests go through unchanged (same routing, guard, usage and limits as the
//! OpenAI door); only `:path` and the version header are set. Anthropic has no embeddings
//! API: `/v1/embeddings` routed here is refused with a 400.

pub mod request;
pub mod response;
pub mod stream;

use super::{Outbound, Prepared, ProviderError, ResponseTranslator, endpoint_label};
use crate::llm::Endpoint;
use crate::llm::error_envelope::{self, ErrorEnvelope};
use crate::providers::Backend;
use serde_json::{Value, json};

/// Name of this dialect in messages.
pub const KIND: &str = "Anthropic";
/// Default `anthropic-version` header.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// Default `max_tokens` when the client set no output ceiling (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Compiled `anthropic` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `anthropic-version` header value.
    pub version: String,
    /// `max_tokens` when the request names none.
    pub default_max_tokens: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: DEFAULT_VERSION.into(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// The upstream request for an Anthropic backend.
pub fn prepare(
    backend: &Backend,
    cfg: &Config,
    out: &Outbound<'_>,
) -> Result<Prepared, ProviderError> {
    let mut p = Prepared {
        path: format!("{}/messages", backend.base_path),
        ..Prepared::default()
    };
    p.set("anthropic-version", cfg.version.as_bytes());
    match out.endpoint {
        Endpoint::ChatCompletions => {
            let doc = out
                .document()
                .map_err(|e| request::not_json(e.to_string()))?;
            p.body = Some(request::translate_doc(&doc, cfg, out.upstream_model)?);
            p.set("content-type", "application/json");
            p.set("accept-encoding", "identity");
        }
        Endpoint::Messages => p.path.push_str(out.query),
        Endpoint::Embeddings | Endpoint::Models => {
            return Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint_label(out.endpoint),
                model: out.upstream_model.to_owned(),
                kind: KIND,
                reason: "has no embeddings API; route embeddings to an openai or azure_openai backend",
            });
        }
    }
    Ok(p)
}

/// The translator for a chat completion answered by Anthropic; `/v1/messages` passes through.
pub fn response_translator(out: &Outbound<'_>) -> Option<Box<dyn ResponseTranslator>> {
    (out.endpoint == Endpoint::ChatCompletions).then(|| {
        Box::new(response::Translator::new(
            out.upstream_model,
            out.now,
            out.include_usage(),
        )) as Box<dyn ResponseTranslator>
    })
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

/// Running token counts from `message_start` / `message_delta` / a whole response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `input_tokens` (uncached part).
    pub input: u64,
    /// `cache_read_input_tokens`.
    pub cache_read: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation: u64,
    /// `output_tokens` (cumulative).
    pub output: u64,
}

impl Tokens {
    /// Takes every figure present in an Anthropic `usage` object.
    pub fn update(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(v) = get("input_tokens") {
            self.input = v;
        }
        if let Some(v) = get("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
    }

    /// The OpenAI `usage` object. Anthropic's `input_tokens` excludes cached tokens, so the
    /// prompt is the sum of all three input figures and `cached_tokens` the cache reads.
    pub fn openai(&self) -> Value {
        let prompt = self.input + self.cache_read + self.cache_creation;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// The OpenAI error object for an Anthropic error (`{"type":"error","error":{...}}`): the
/// provider's message, its error type as the `code`, and the OpenAI `type` of `status` (the
/// HTTP status, or, when the error arrives without one, the status Anthropic gives its type).
pub fn openai_error(status: Option<u16>, err: Option<&Value>, fallback: &str) -> Value {
    let kind = err
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(fallback);
    let status = status.unwrap_or_else(|| error_envelope::anthropic_status(kind));
    ErrorEnvelope::new(status, message)
        .code(Some(kind))
        .openai()
}

#[cfg(test)]
mod tests;
