//! OpenAI-shaped error responses.
//!
//! Every error this upstream produces uses the envelope the OpenAI API uses,
//! `{"error":{"message":..,"type":..,"code":..,"param":null}}`, so the gateway
//! and the official SDK see exactly what a real provider would send.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

/// An error answered to the client as an OpenAI error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The envelope's `type` field (`invalid_request_error`, `server_error`, ...).
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
    // Always null: the demo never points at a specific parameter.
    param: Option<()>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
        }
    }

    /// 400 for a request the upstream cannot make sense of.
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some(code),
            message,
        )
    }

    /// 400 for a body that is not JSON; the message is serde_json's, which
    /// names the line and column.
    pub fn invalid_json(err: &serde_json::Error) -> Self {
        Self::invalid_request(
            "invalid_json",
            format!("We could not parse the JSON body of your request: {err}"),
        )
    }

    pub fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
        )
    }

    pub fn wrong_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        )
    }

    pub fn unknown_url(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            format!("Invalid URL ({method} {path})"),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            Some("method_not_allowed"),
            format!("Method {method} is not allowed for {path}"),
        )
    }

    /// The error a model named `error-<status>` asks for. The type and code
    /// mirror what OpenAI sends for that class of status, so fallback logic
    /// in the gateway can be exercised against realistic bodies.
    pub fn simulated(status: StatusCode, upstream: &str, model: &str) -> Self {
        let (kind, code) = match status.as_u16() {
            429 => ("requests", "rate_limit_exceeded"),
            401 => ("invalid_request_error", "invalid_api_key"),
            500..=599 => ("server_error", "simulated_error"),
            _ => ("invalid_request_error", "simulated_error"),
        };
        let reason = status.canonical_reason().unwrap_or("error");
        Self::new(
            status,
            kind,
            Some(code),
            format!(
                "Simulated {} {reason} from the {upstream} demo upstream for model {model}.",
                status.as_u16()
            ),
        )
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: ErrorBody {
                message: &self.message,
                kind: self.kind,
                code: self.code,
                param: None,
            },
        };
        crate::reply::json_bytes(&envelope)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // OpenAI sends a retry hint with rate limits; clients (and the
        // gateway's fallback) may honour it.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body_json(err: &ApiError) -> Value {
        serde_json::from_slice(&err.body()).unwrap()
    }

    #[test]
    fn envelope_has_openai_shape() {
        let err = ApiError::missing_api_key();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let v = body_json(&err);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["param"], Value::Null);
        assert!(v["error"]["message"].as_str().unwrap().contains("API key"));
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["error"].as_object().unwrap().len(), 4);
    }

    #[test]
    fn invalid_json_carries_serde_message() {
        let parse_err = serde_json::from_slice::<Value>(b"{nope").unwrap_err();
        let err = ApiError::invalid_json(&parse_err);
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let v = body_json(&err);
        assert_eq!(v["error"]["code"], "invalid_json");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&parse_err.to_string())
        );
    }

    #[test]
    fn simulated_errors_by_status_class() {
        let rl = ApiError::simulated(StatusCode::TOO_MANY_REQUESTS, "alpha", "error-429");
        assert_eq!(
            body_json(&rl)["error"],
            json!({
                "message": "Simulated 429 Too Many Requests from the alpha demo upstream for model error-429.",
                "type": "requests",
                "code": "rate_limit_exceeded",
                "param": null
            })
        );
        let unavailable =
            ApiError::simulated(StatusCode::SERVICE_UNAVAILABLE, "alpha", "error-503");
        assert_eq!(body_json(&unavailable)["error"]["type"], "server_error");
        assert_eq!(unavailable.status.as_u16(), 503);
    }

    #[test]
    fn rate_limit_response_has_retry_after() {
        let resp = ApiError::simulated(StatusCode::TOO_MANY_REQUESTS, "a", "m").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let other = ApiError::unknown_url("GET", "/v1/nope").into_response();
        assert!(other.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }
}
