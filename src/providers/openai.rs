//! `openai` backends (OpenAI, vLLM, Ollama, OpenRouter, ...): passthrough.
//!
//! The body goes as routing and the guard left it; only `:path` changes: the backend's base
//! path, the endpoint's suffix and the client's query string. The Anthropic-native front door
//! (`/v1/messages`) is refused: these servers do not speak it.

use super::{Outbound, Prepared, ProviderError, endpoint_label};
use crate::llm::Endpoint;
use crate::providers::Backend;

/// The upstream request for an OpenAI-compatible backend.
pub fn prepare(backend: &Backend, out: &Outbound<'_>) -> Result<Prepared, ProviderError> {
    if out.endpoint == Endpoint::Messages {
        return Err(ProviderError::UnsupportedEndpoint {
            endpoint: endpoint_label(out.endpoint),
            model: out.upstream_model.to_owned(),
            kind: "the OpenAI API",
            reason: "has no Anthropic Messages API; call POST /v1/chat/completions for this model",
        });
    }
    Ok(Prepared {
        path: format!(
            "{}{}{}",
            backend.base_path,
            out.endpoint.upstream_suffix(),
            out.query
        ),
        ..Prepared::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{backend, outbound};

    #[test]
    fn keeps_the_body_and_builds_the_path_with_the_query() {
        let b = backend("a", crate::providers::ProviderConfig::Openai);
        let mut out = outbound(Endpoint::ChatCompletions, b"{}");
        out.query = "?x=1";
        let p = prepare(&b, &out).expect("prepared");
        assert_eq!(p.path, "/v1/chat/completions?x=1");
        assert_eq!(p.body, None);
        let out = outbound(Endpoint::Embeddings, b"{}");
        assert_eq!(prepare(&b, &out).expect("prepared").path, "/v1/embeddings");
    }

    #[test]
    fn refuses_the_messages_api() {
        let b = backend("a", crate::providers::ProviderConfig::Openai);
        let err = prepare(&b, &outbound(Endpoint::Messages, b"{}")).expect_err("refused");
        assert!(matches!(err, ProviderError::UnsupportedEndpoint { .. }));
    }
}
