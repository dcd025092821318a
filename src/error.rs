//! Refusals: every reason a request is answered by tollgate instead of a provider, and the
//! one place that turns them into the client-facing status and OpenAI error envelope.
//!
//! A refusal is never a gRPC error: that would hand the decision to Envoy's
//! `failure_mode_allow`, which in fail-open setups would let the refused request through.

use crate::auth::AuthError;
use crate::guard::GuardError;
use crate::limits::{Metric, Refusal};
use crate::llm::error_envelope::ErrorEnvelope;
use crate::llm::openai::ParseError;
use crate::providers::ProviderError;
use crate::routing::RouteError;
use crate::routing::command::CommandError;
use thiserror::Error;

/// Why the pipeline refuses a request.
#[derive(Debug, Error)]
pub enum StageError {
    /// The body could not be read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// No backend for the model.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A malformed `/model` command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Not an API path tollgate serves.
    #[error(
        "unknown request URL: {method} {path}; tollgate serves POST /v1/chat/completions, POST /v1/messages, POST /v1/embeddings and GET /v1/models"
    )]
    UnsupportedPath {
        /// Method.
        method: String,
        /// Path without its query.
        path: String,
    },
    /// Known path, wrong method.
    #[error("method {method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// Method used.
        method: String,
        /// Path.
        path: String,
        /// Allowed method.
        allow: &'static str,
    },
    /// Body over `server.max_request_body`.
    #[error("the request body is {size} bytes, over this gateway's limit of {limit} bytes")]
    BodyTooLarge {
        /// Limit.
        limit: u64,
        /// Size (declared or received).
        size: u64,
    },
    /// A POST without a body.
    #[error("this endpoint needs a JSON request body")]
    MissingBody,
    /// A compressed request body (`content-encoding` other than identity). tollgate never
    /// inflates bodies: no decompression bombs, and the guard sees what goes upstream.
    #[error(
        "request bodies with content-encoding {encoding:?} are not supported; send the JSON uncompressed"
    )]
    UnsupportedEncoding {
        /// The header's value (at most 40 characters of it).
        encoding: String,
    },
    /// A model (or `/model` backend) name tollgate will not carry: control characters
    /// (CR/LF would split headers and logs) or longer than any real model name. The name
    /// itself is not echoed.
    #[error("the {field} name {problem}")]
    InvalidName {
        /// `model` or `backend`.
        field: &'static str,
        /// What is wrong, in words.
        problem: &'static str,
    },
    /// Envoy is configured in a way that would bypass routing.
    #[error("gateway misconfigured: {0}")]
    Misconfigured(&'static str),
    /// The guard refused the request.
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    /// The caller is not authenticated or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A rate limit or budget does not fit this request.
    #[error("{0}")]
    Limited(Refusal),
    /// The limits store is down and the fail mode is closed.
    #[error("rate limits cannot be checked right now; try again shortly")]
    LimitsUnavailable(String),
    /// The routed backend cannot take this request (its kind lacks the API, or the
    /// request has something its dialect cannot express).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The upstream's answer cannot be read where tollgate must read it (a compressed body
    /// while usage is metered): refused rather than passed on unmetered.
    #[error("{0}")]
    UpstreamUnreadable(&'static str),
    /// A bug on our side.
    #[error("internal gateway error")]
    Internal(String),
}

/// Who is at fault, for log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Downstream,
    /// The gateway or its deployment.
    Internal,
}

/// A reply tollgate sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status; the error `type` follows from it
    /// ([`crate::llm::error_envelope::openai_type`]).
    pub status: u16,
    /// For a limit refusal, OpenAI's name of the exhausted limit, the `type` of a 429.
    pub limit: Option<&'static str>,
    /// OpenAI error `code` (stable, documented).
    pub code: &'static str,
    /// Human-readable message (never holds secrets or prompt text).
    pub message: String,
    /// Offending parameter.
    pub param: Option<&'static str>,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Blame.
    pub fault: Fault,
}

/// Longest error message sent: messages can quote client input (a model name, a path), and
/// a 1 MiB model name must not come back as a 1 MiB error body.
const MAX_MESSAGE: usize = 1024;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// Maps a refusal to its reply. Exhaustive on purpose: a new error must pick its status.
pub fn rescue(err: &StageError) -> LocalReply {
    let reply = |status, code, param| LocalReply {
        status,
        limit: None,
        code,
        message: bounded(err.to_string()),
        param,
        headers: Vec::new(),
        fault: Fault::Downstream,
    };
    match err {
        StageError::Parse(p @ (ParseError::InvalidJson(_) | ParseError::NotAnObject)) => {
            reply(400, "invalid_json", p.param())
        }
        StageError::Parse(p @ ParseError::InvalidField { .. }) => {
            reply(400, "invalid_value", p.param())
        }
        StageError::Route(RouteError::MissingModel { .. } | RouteError::UnknownModel { .. }) => {
            reply(404, "model_not_found", Some("model"))
        }
        StageError::Route(RouteError::UnknownBackend { .. }) => {
            reply(400, "unknown_backend", Some("messages"))
        }
        StageError::Command(_) => reply(400, "invalid_model_command", Some("messages")),
        StageError::InvalidName { .. } => reply(400, "invalid_model", Some("model")),
        StageError::UnsupportedPath { .. } => reply(404, "unsupported_path", None),
        StageError::UnsupportedEncoding { .. } => reply(415, "unsupported_content_encoding", None),
        StageError::MethodNotAllowed { allow, .. } => LocalReply {
            headers: vec![("allow", (*allow).to_owned())],
            ..reply(405, "method_not_allowed", None)
        },
        StageError::BodyTooLarge { .. } => reply(413, "request_too_large", None),
        StageError::MissingBody => reply(400, "missing_body", None),
        StageError::Guard(g @ GuardError::ContentBlocked { .. }) => {
            reply(400, g.code(), Some("messages"))
        }
        StageError::Guard(g @ GuardError::PiiBlocked { .. }) => {
            reply(400, g.code(), Some("messages"))
        }
        StageError::Guard(g @ GuardError::ToolDenied { .. }) => reply(400, g.code(), Some("tools")),
        StageError::Guard(g @ GuardError::Unreadable(_)) => reply(400, g.code(), None),
        StageError::Misconfigured(_) => LocalReply {
            fault: Fault::Internal,
            ..reply(500, "gateway_misconfigured", None)
        },
        StageError::Provider(ProviderError::UnsupportedEndpoint { .. }) => {
            reply(400, "unsupported_endpoint", Some("model"))
        }
        StageError::Provider(ProviderError::Untranslatable { param, .. }) => {
            reply(400, "unsupported_parameter", *param)
        }
        StageError::Provider(ProviderError::CredentialsUnavailable { .. }) => LocalReply {
            fault: Fault::Internal,
            ..reply(503, "backend_credentials_unavailable", None)
        },
        StageError::Internal(_) => LocalReply {
            fault: Fault::Internal,
            ..reply(500, "internal_error", None)
        },
        StageError::UpstreamUnreadable(_) => LocalReply {
            fault: Fault::Internal,
            ..reply(502, "upstream_response_unreadable", None)
        },
        StageError::Auth(a) => {
            let unauthenticated = |code| LocalReply {
                headers: vec![("www-authenticate", "Bearer realm=\"tollgate\"".to_owned())],
                ..reply(401, code, None)
            };
            match a {
                AuthError::MissingKey | AuthError::MissingIdentity(_) => {
                    unauthenticated("missing_api_key")
                }
                AuthError::UnknownKey | AuthError::UnknownTeam(_) => {
                    unauthenticated("invalid_api_key")
                }
                AuthError::ModelNotAllowed { .. } => reply(403, "model_not_allowed", Some("model")),
                AuthError::BackendNotAllowed { .. } => {
                    reply(403, "backend_not_allowed", Some("model"))
                }
            }
        }
        StageError::Limited(r) => {
            // OpenAI's shapes: `requests` / `tokens` rate limits, `insufficient_quota` budgets.
            let (limit, code) = match r.metric {
                Metric::Requests => ("requests", "rate_limit_exceeded"),
                Metric::Tokens => ("tokens", "rate_limit_exceeded"),
                Metric::Cost => ("insufficient_quota", "insufficient_quota"),
            };
            LocalReply {
                headers: crate::limits::refusal_headers(r),
                limit: Some(limit),
                ..reply(429, code, None)
            }
        }
        StageError::LimitsUnavailable(_) => LocalReply {
            headers: vec![("retry-after", "1".to_owned())],
            fault: Fault::Internal,
            ..reply(503, "limits_unavailable", None)
        },
    }
}

impl LocalReply {
    fn envelope(&self) -> ErrorEnvelope<'_> {
        let e = ErrorEnvelope::new(self.status, &self.message)
            .code(Some(self.code))
            .param(self.param);
        match self.limit {
            Some(limit) => e.limit(limit),
            None => e,
        }
    }

    /// The OpenAI error envelope.
    pub fn body(&self) -> Vec<u8> {
        self.envelope().openai_bytes()
    }

    /// The Anthropic error shape, for clients of the `/v1/messages` front door.
    pub fn anthropic_body(&self) -> Vec<u8> {
        self.envelope().anthropic_bytes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let err = StageError::UnsupportedPath {
            method: "POST".into(),
            path: format!("/{}", "é".repeat(5000)),
        };
        let r = super::rescue(&err);
        assert!(
            r.message.len() <= super::MAX_MESSAGE + "…".len(),
            "{}",
            r.message.len()
        );
        assert!(r.message.ends_with('…'));
    }

    use super::*;

    fn envelope(err: StageError) -> (u16, serde_json::Value) {
        let r = rescue(&err);
        (r.status, serde_json::from_slice(&r.body()).unwrap())
    }

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(StageError, u16, &str)> = vec![
            (
                ParseError::InvalidJson("eof".into()).into(),
                400,
                "invalid_json",
            ),
            (ParseError::NotAnObject.into(), 400, "invalid_json"),
            (
                ParseError::InvalidField {
                    field: "model",
                    problem: "x".into(),
                }
                .into(),
                400,
                "invalid_value",
            ),
            (
                RouteError::MissingModel { available: vec![] }.into(),
                404,
                "model_not_found",
            ),
            (
                RouteError::UnknownModel {
                    requested: "x".into(),
                    hint: String::new(),
                    available: vec![],
                }
                .into(),
                404,
                "model_not_found",
            ),
            (
                RouteError::UnknownBackend {
                    requested: "x".into(),
                    hint: String::new(),
                }
                .into(),
                400,
                "unknown_backend",
            ),
            (CommandError::Empty.into(), 400, "invalid_model_command"),
            (
                StageError::UnsupportedPath {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
                "unsupported_path",
            ),
            (
                StageError::MethodNotAllowed {
                    method: "GET".into(),
                    path: "/v1/chat/completions".into(),
                    allow: "POST",
                },
                405,
                "method_not_allowed",
            ),
            (
                StageError::BodyTooLarge { limit: 1, size: 2 },
                413,
                "request_too_large",
            ),
            (StageError::MissingBody, 400, "missing_body"),
            (
                StageError::UnsupportedEncoding {
                    encoding: "gzip".into(),
                },
                415,
                "unsupported_content_encoding",
            ),
            (
                GuardError::ContentBlocked {
                    policy: "p".into(),
                    rule: "words[0]".into(),
                }
                .into(),
                400,
                "content_blocked",
            ),
            (
                GuardError::PiiBlocked {
                    policy: "p".into(),
                    entity: "card".into(),
                }
                .into(),
                400,
                "pii_blocked",
            ),
            (
                GuardError::ToolDenied {
                    policy: "p".into(),
                    name: "shell".into(),
                }
                .into(),
                400,
                "tool_denied",
            ),
            (
                GuardError::Unreadable("x".into()).into(),
                400,
                "invalid_json",
            ),
            (StageError::Misconfigured("x"), 500, "gateway_misconfigured"),
            (StageError::Internal("bug".into()), 500, "internal_error"),
            (
                ProviderError::UnsupportedEndpoint {
                    endpoint: "POST /v1/embeddings",
                    model: "claude".into(),
                    kind: "Anthropic",
                    reason: "has no embeddings API",
                }
                .into(),
                400,
                "unsupported_endpoint",
            ),
            (
                ProviderError::Untranslatable {
                    kind: "Anthropic",
                    param: Some("n"),
                    problem: "x".into(),
                }
                .into(),
                400,
                "unsupported_parameter",
            ),
            (
                ProviderError::CredentialsUnavailable {
                    backend: "vertex".into(),
                    reason: "no Google access token yet".into(),
                }
                .into(),
                503,
                "backend_credentials_unavailable",
            ),
            (AuthError::MissingKey.into(), 401, "missing_api_key"),
            (AuthError::UnknownKey.into(), 401, "invalid_api_key"),
            (
                AuthError::ModelNotAllowed {
                    consumer: "c".into(),
                    model: "m".into(),
                    allowed: vec![],
                }
                .into(),
                403,
                "model_not_allowed",
            ),
            (
                AuthError::BackendNotAllowed {
                    consumer: "c".into(),
                    backend: "b".into(),
                }
                .into(),
                403,
                "backend_not_allowed",
            ),
            (
                StageError::Limited(Refusal {
                    rule: "r".into(),
                    metric: Metric::Requests,
                    window: crate::limits::Window::Minute,
                    limit: 1,
                    remaining: 0,
                    requested: 1,
                    reset_secs: 5,
                }),
                429,
                "rate_limit_exceeded",
            ),
            (
                StageError::LimitsUnavailable("x".into()),
                503,
                "limits_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            let (s, body) = envelope(err);
            assert_eq!(
                (s, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(body["error"]["type"].is_string());
            assert!(
                body["error"].get("param").is_some(),
                "param is always present (null or a name)"
            );
        }
    }

    #[test]
    fn model_not_found_names_the_param_and_lists_models() {
        let (_, body) = envelope(
            RouteError::UnknownModel {
                requested: "gpt-5".into(),
                hint: String::new(),
                available: vec!["a".into(), "b".into()],
            }
            .into(),
        );
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(
            body["error"]["message"],
            "the model \"gpt-5\" does not exist or you do not have access to it; available models: a, b"
        );
    }

    #[test]
    fn internal_details_are_not_shown_to_clients() {
        let (_, body) = envelope(StageError::Internal("secret stack detail".into()));
        assert_eq!(body["error"]["message"], "internal gateway error");
    }

    #[test]
    fn anthropic_shape_follows_the_status() {
        let r = rescue(&StageError::Route(RouteError::MissingModel {
            available: vec![],
        }));
        let v: serde_json::Value = serde_json::from_slice(&r.anthropic_body()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["message"], r.message);
        let r = rescue(&StageError::LimitsUnavailable("x".into()));
        let v: serde_json::Value = serde_json::from_slice(&r.anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
    }

    #[test]
    fn method_not_allowed_sets_allow() {
        let r = rescue(&StageError::MethodNotAllowed {
            method: "GET".into(),
            path: "/v1/embeddings".into(),
            allow: "POST",
        });
        assert_eq!(r.headers, vec![("allow", "POST".to_owned())]);
    }
}
