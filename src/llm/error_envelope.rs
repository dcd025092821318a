//! The one writer of client-facing error bodies, and the one status → `type` map per shape.
//!
//! Local refusals ([`crate::error::rescue`]), translated upstream errors (the Anthropic,
//! Bedrock and Gemini translators), mid-stream error events and the response guard's
//! violations all build an [`ErrorEnvelope`] and write it here, so one upstream status
//! reaches clients with one `type` whichever provider sent it.
//!
//! OpenAI shape (`{"error":{"message","type","param","code"}}`), [`openai_type`]:
//!
//! | status | `type` |
//! |---|---|
//! | 403 | `permission_error` |
//! | 429 | `rate_limit_error` (a local limit refusal: OpenAI's own `requests`, `tokens`, `insufficient_quota`) |
//! | other 4xx (400, 401, 404, 405, 408, 409, 413, 415, 422, ...) | `invalid_request_error` |
//! | 5xx, and any other status an error arrives with | `server_error` |
//!
//! These are the types OpenAI's API sends: 401 `invalid_api_key` and 404 `model_not_found`
//! come as `invalid_request_error`, 500s as `server_error`; the SDKs pick their exception
//! class from the status, so the type only has to be stable. Anthropic shape
//! (`{"type":"error","error":{"type","message"}}`, for `/v1/messages`), [`anthropic_type`]:
//! Anthropic's own names, by status as Anthropic's API assigns them.
//!
//! Only status, message, code and param go in: messages are written by the caller and
//! never hold secrets or prompt text (a provider's own message is kept as the provider
//! wrote it).

use serde_json::{Value, json};

/// The status a failure that arrives after the response head (a stream that cannot be read,
/// ends early, or a body too large to translate) stands for: the upstream answered badly.
pub const BAD_UPSTREAM: u16 = 502;

/// OpenAI's error `type` for an HTTP status: the one map (see the module doc).
pub fn openai_type(status: u16) -> &'static str {
    match status {
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        // 5xx, and a 2xx/3xx that carries an error: the upstream side failed.
        _ => "server_error",
    }
}

/// Anthropic's error `type` for an HTTP status, as Anthropic's API assigns them.
pub fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The HTTP status an Anthropic error `type` stands for (the inverse of [`anthropic_type`]),
/// for errors that arrive without one: a mid-stream `error` event, a 200 body of type `error`.
pub fn anthropic_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        // `api_error` and any type added later.
        _ => 500,
    }
}

/// One client-facing error, written in either front door's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorEnvelope<'a> {
    /// The HTTP status (sent, or, mid-stream, the one the failure stands for).
    pub status: u16,
    /// Human-readable message.
    pub message: &'a str,
    /// Stable machine-readable `code` (tollgate's, or the provider's own).
    pub code: Option<&'a str>,
    /// The offending request parameter.
    pub param: Option<&'a str>,
    /// For tollgate's own 429s: the name of the exhausted limit, which OpenAI sends as the
    /// `type` of its rate-limit and quota refusals (`requests`, `tokens`,
    /// `insufficient_quota`). Upstream errors never set it: they do not say which limit.
    pub limit: Option<&'static str>,
}

impl<'a> ErrorEnvelope<'a> {
    /// An error with a status and message; no code, param or limit.
    pub fn new(status: u16, message: &'a str) -> Self {
        ErrorEnvelope {
            status,
            message,
            code: None,
            param: None,
            limit: None,
        }
    }

    /// With a `code`.
    pub fn code(self, code: Option<&'a str>) -> Self {
        ErrorEnvelope { code, ..self }
    }

    /// With a `param`.
    pub fn param(self, param: Option<&'a str>) -> Self {
        ErrorEnvelope { param, ..self }
    }

    /// With the exhausted limit's name (used by the OpenAI shape for a 429 only).
    pub fn limit(self, limit: &'static str) -> Self {
        ErrorEnvelope {
            limit: Some(limit),
            ..self
        }
    }

    /// The OpenAI `type` written.
    pub fn openai_type(&self) -> &'a str {
        match self.limit {
            Some(limit) if self.status == 429 => limit,
            _ => openai_type(self.status),
        }
    }

    /// The OpenAI envelope.
    pub fn openai(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.openai_type(),
            "code": self.code,
            "param": self.param,
        }})
    }

    /// The OpenAI envelope as bytes.
    pub fn openai_bytes(&self) -> Vec<u8> {
        self.openai().to_string().into_bytes()
    }

    /// The Anthropic shape (no code or param: Anthropic's errors have neither).
    pub fn anthropic(&self) -> Value {
        json!({"type": "error", "error": {
            "type": anthropic_type(self.status),
            "message": self.message,
        }})
    }

    /// The Anthropic shape as bytes.
    pub fn anthropic_bytes(&self) -> Vec<u8> {
        self.anthropic().to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status class, and the statuses called out in the module doc.
    #[test]
    fn openai_map_for_every_status_class() {
        let cases: &[(u16, &str)] = &[
            (200, "server_error"),
            (302, "server_error"),
            (400, "invalid_request_error"),
            (401, "invalid_request_error"),
            (403, "permission_error"),
            (404, "invalid_request_error"),
            (405, "invalid_request_error"),
            (408, "invalid_request_error"),
            (413, "invalid_request_error"),
            (415, "invalid_request_error"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (499, "invalid_request_error"),
            (500, "server_error"),
            (502, "server_error"),
            (503, "server_error"),
            (504, "server_error"),
            (529, "server_error"),
            (599, "server_error"),
            (0, "server_error"),
        ];
        for &(status, kind) in cases {
            assert_eq!(openai_type(status), kind, "{status}");
            let v = ErrorEnvelope::new(status, "m").openai();
            assert_eq!(v["error"]["type"], kind, "{status}");
        }
    }

    #[test]
    fn anthropic_map_for_every_status_class() {
        let cases: &[(u16, &str)] = &[
            (200, "api_error"),
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (529, "overloaded_error"),
        ];
        for &(status, kind) in cases {
            assert_eq!(anthropic_type(status), kind, "{status}");
            let v = ErrorEnvelope::new(status, "m").anthropic();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{status}");
            assert_eq!(v["error"]["message"], "m");
        }
    }

    #[test]
    fn anthropic_status_inverts_anthropic_type() {
        for kind in [
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "not_found_error",
            "request_too_large",
            "rate_limit_error",
            "api_error",
            "overloaded_error",
        ] {
            assert_eq!(anthropic_type(anthropic_status(kind)), kind);
        }
        assert_eq!(anthropic_status("a_type_from_the_future"), 500);
    }

    #[test]
    fn the_limit_names_the_type_of_a_429_only() {
        let e = ErrorEnvelope::new(429, "slow down").limit("tokens");
        assert_eq!(e.openai()["error"]["type"], "tokens");
        assert_eq!(e.anthropic()["error"]["type"], "rate_limit_error");
        let e = ErrorEnvelope::new(503, "down").limit("tokens");
        assert_eq!(e.openai()["error"]["type"], "server_error");
    }

    #[test]
    fn openai_fields_are_all_present() {
        let v = ErrorEnvelope::new(400, "bad")
            .code(Some("invalid_value"))
            .param(Some("model"))
            .openai();
        assert_eq!(
            v,
            json!({"error": {"message": "bad", "type": "invalid_request_error",
                "code": "invalid_value", "param": "model"}})
        );
        let v = ErrorEnvelope::new(500, "x").openai();
        assert!(v["error"]["code"].is_null() && v["error"]["param"].is_null());
        assert!(v["error"].get("param").is_some());
    }
}
