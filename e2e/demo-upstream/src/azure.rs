//! Azure OpenAI replay: `POST /openai/deployments/{deployment}/{chat/completions|embeddings}
//! ?api-version=...`, the path shape Azure serves. Requires `api-version` and, when the
//! upstream has a key, Azure's `api-key` header (not `Authorization`); then answers like
//! the OpenAI-compatible handlers with the deployment name as the model, so a client sees
//! which deployment the gateway addressed.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Checks the Azure-specific parts of a request; `Some` is the refusal to send.
pub fn check(api_key: Option<&str>, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    let has_version = query.unwrap_or_default().split('&').any(|kv| {
        kv.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    });
    if !has_version {
        return Some(error(
            StatusCode::NOT_FOUND,
            "404",
            "Resource not found (api-version is required)",
        ));
    }
    // Azure takes `api-key: KEY` or an Entra token as `Authorization: Bearer ...`.
    let bearer = format!("Bearer {}", api_key.unwrap_or_default());
    if let Some(key) = api_key
        && headers.get("api-key").map(|v| v.as_bytes()) != Some(key.as_bytes())
        && headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(bearer.as_bytes())
    {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        ));
    }
    None
}
