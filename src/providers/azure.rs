//! `azure_openai` backends: Azure OpenAI's deployment-addressed API.
//!
//! `:path` is `{base_path}/openai/deployments/{deployment}/{chat/completions|embeddings}
//! ?api-version={api_version}`. The deployment is looked up by the upstream model name in the
//! backend's `deployments` map, else the upstream model name itself is the deployment. The
//! body passes unchanged: Azure reads the deployment from the path and accepts (ignores) the
//! `model` field, so the client's OpenAI body needs no rewriting. The client's own query
//! string is not forwarded (the `api-version` the operator configured decides the API).
//!
//! Credentials: `auth: {api_key: ...}` sends Azure's `api-key` header; `auth: {bearer: ...}`
//! an Entra ID token as `Authorization: Bearer` (both added by the dispatcher).

use super::{Outbound, Prepared, ProviderError, endpoint_label};
use crate::llm::Endpoint;
use crate::providers::Backend;
use std::collections::BTreeMap;

/// Default `api-version` (the current GA data-plane version).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Compiled `azure_openai` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `api-version` query value.
    pub api_version: String,
    /// Upstream model name → deployment name.
    pub deployments: BTreeMap<String, String>,
}

/// Whether a deployment name can be put in a path as it is.
pub fn valid_deployment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// The upstream request for an Azure OpenAI backend.
pub fn prepare(
    backend: &Backend,
    cfg: &Config,
    out: &Outbound<'_>,
) -> Result<Prepared, ProviderError> {
    let operation = match out.endpoint {
        Endpoint::ChatCompletions => "chat/completions",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Messages | Endpoint::Models => {
            return Err(ProviderError::UnsupportedEndpoint {
                endpoint: endpoint_label(out.endpoint),
                model: out.upstream_model.to_owned(),
                kind: "Azure OpenAI",
                reason: "has no Anthropic Messages API; call POST /v1/chat/completions for this model",
            });
        }
    };
    let deployment = match cfg.deployments.get(out.upstream_model) {
        Some(d) => d.clone(),
        None if out.upstream_model.is_empty() => {
            return Err(ProviderError::Untranslatable {
                kind: "Azure OpenAI",
                param: Some("model"),
                problem: "no model was named, so no deployment can be chosen".into(),
            });
        }
        None => percent_encode(out.upstream_model),
    };
    Ok(Prepared {
        path: format!(
            "{}/openai/deployments/{deployment}/{operation}?api-version={}",
            backend.base_path,
            percent_encode(&cfg.api_version)
        ),
        ..Prepared::default()
    })
}

/// Encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{backend, outbound};
    use crate::providers::{ProviderConfig, prepare as dispatch};

    fn azure() -> Backend {
        let mut b = backend(
            "az",
            ProviderConfig::AzureOpenai(Config {
                api_version: "2024-10-21".into(),
                deployments: [("gpt-4o".to_owned(), "prod-4o".to_owned())].into(),
            }),
        );
        b.base_path = String::new();
        b.credential = Some(crate::providers::Credential {
            header: "api-key".into(),
            value: crate::secret::Secret::new("k1"),
        });
        b
    }

    #[test]
    fn maps_the_model_to_its_deployment_and_keeps_the_body() {
        let mut out = outbound(Endpoint::ChatCompletions, br#"{"model":"gpt-4o"}"#);
        out.upstream_model = "gpt-4o";
        out.query = "?ignored=1";
        let p = dispatch(&azure(), &out).expect("prepared");
        assert_eq!(
            p.path,
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(p.body, None);
        assert!(p.set.contains(&("api-key".to_owned(), b"k1".to_vec())));
    }

    #[test]
    fn unmapped_models_are_their_own_deployment_encoded() {
        let mut out = outbound(Endpoint::Embeddings, b"{}");
        out.upstream_model = "my emb/1";
        let p = dispatch(&azure(), &out).expect("prepared");
        assert_eq!(
            p.path,
            "/openai/deployments/my%20emb%2F1/embeddings?api-version=2024-10-21"
        );
    }

    #[test]
    fn refuses_messages_and_a_missing_model() {
        let out = outbound(Endpoint::Messages, b"{}");
        assert!(matches!(
            dispatch(&azure(), &out),
            Err(ProviderError::UnsupportedEndpoint { .. })
        ));
        let mut out = outbound(Endpoint::ChatCompletions, b"{}");
        out.upstream_model = "";
        assert!(matches!(
            dispatch(&azure(), &out),
            Err(ProviderError::Untranslatable { .. })
        ));
    }
}
