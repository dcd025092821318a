//! One upstream status, one client-facing error `type`, whichever provider kind sent it:
//! each translating kind gets its own error shape for the status and must answer with the
//! type of the shared map (which is also what OpenAI itself sends, and what the openai
//! kinds pass through untouched), keeping the provider's message.

#![allow(clippy::unwrap_used, clippy::panic)]

use super::{Outbound, ResponseTranslator, anthropic, bedrock, gemini};
use crate::llm::Endpoint;
use crate::llm::error_envelope::{ErrorEnvelope, anthropic_type, openai_type};
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};

const STATUSES: [u16; 7] = [400, 401, 403, 404, 429, 500, 503];

fn outbound(stream: bool) -> Outbound<'static> {
    Outbound {
        endpoint: Endpoint::ChatCompletions,
        body: b"{}",
        upstream_model: "m",
        stream,
        query: "",
        doc: None,
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

/// A kind's name, its translator (for a plain or streamed request), and how its upstream
/// writes an error body for a status.
type Kind = (
    &'static str,
    fn(bool) -> Box<dyn ResponseTranslator>,
    fn(u16) -> Value,
);

/// The kinds that translate.
fn kinds() -> Vec<Kind> {
    vec![
        (
            "anthropic",
            |s| anthropic::response_translator(&outbound(s)).unwrap(),
            |status| {
                json!({"type": "error", "error": {"type": anthropic_type(status),
                    "message": format!("anthropic says {status}")}})
            },
        ),
        (
            "bedrock",
            |s| bedrock::response_translator(&outbound(s)).unwrap(),
            |status| json!({"message": format!("bedrock says {status}")}),
        ),
        (
            "gemini",
            |s| gemini::response_translator(&outbound(s)).unwrap(),
            |status| {
                json!({"error": {"code": status, "status": "SOME_STATUS",
                    "message": format!("gemini says {status}")}})
            },
        ),
    ]
}

fn run(t: &mut dyn ResponseTranslator, status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    t.head(status, content_type);
    let mut out = t.body(&body[..body.len() / 2], false);
    out.extend(t.body(&body[body.len() / 2..], true));
    out
}

#[test]
fn the_same_upstream_status_gives_the_same_type_for_every_kind() {
    for status in STATUSES {
        // What an OpenAI upstream sends for the status, passed through as it is.
        let openai = ErrorEnvelope::new(status, "openai says").openai();
        let want = openai["error"]["type"].as_str().unwrap();
        assert_eq!(want, openai_type(status));
        for (kind, translator, body) in kinds() {
            for stream in [false, true] {
                // An error answer is JSON even when a stream was asked for.
                let mut t = translator(stream);
                let out = run(
                    t.as_mut(),
                    status,
                    "application/json",
                    body(status).to_string().as_bytes(),
                );
                let v: Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("{kind} {status}: {e}: {out:?}"));
                assert_eq!(v["error"]["type"], want, "{kind} {status} stream={stream}");
                assert_eq!(
                    v["error"]["message"],
                    format!("{kind} says {status}"),
                    "{kind} keeps the provider's message"
                );
                assert!(v["error"].get("param").is_some(), "{kind}: {v}");
            }
        }
    }
}

/// Mid-stream, the status is already sent: the error event's type comes from the status
/// the provider's error stands for (Anthropic's type, Google's `code`, Bedrock's exception).
#[test]
fn mid_stream_errors_use_the_same_map() {
    let sse = "text/event-stream";
    for (anthropic_kind, status) in [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("invalid_request_error", 400),
    ] {
        let mut t = anthropic::response_translator(&outbound(true)).unwrap();
        let body = format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": anthropic_kind, "message": "boom"}})
        );
        let out = String::from_utf8(run(t.as_mut(), 200, sse, body.as_bytes())).unwrap();
        let want = format!("\"type\":\"{}\"", openai_type(status));
        assert!(out.contains(&want), "{anthropic_kind}: {out}");

        let mut t = gemini::response_translator(&outbound(true)).unwrap();
        let body = format!(
            "data: {}\r\n\r\n",
            json!({"error": {"code": status, "status": "X", "message": "boom"}})
        );
        let out = String::from_utf8(run(t.as_mut(), 200, sse, body.as_bytes())).unwrap();
        assert!(out.contains(&want), "gemini {status}: {out}");
    }
    for (exception, status) in [
        ("throttlingException", 429),
        ("validationException", 400),
        ("accessDeniedException", 403),
        ("resourceNotFoundException", 404),
        ("internalServerException", 500),
        ("serviceUnavailableException", 503),
        ("modelStreamErrorException", 500),
    ] {
        assert_eq!(bedrock::exception_status(exception), status, "{exception}");
    }
}

/// A refusal tollgate makes itself carries the same type as an upstream error of its status.
#[test]
fn local_refusals_use_the_same_map() {
    use crate::error::{StageError, rescue};
    let cases: Vec<StageError> = vec![
        StageError::MissingBody,
        StageError::Auth(crate::auth::AuthError::MissingKey),
        StageError::Internal("x".into()),
        StageError::UpstreamUnreadable("x"),
        StageError::LimitsUnavailable("x".into()),
        StageError::UnsupportedPath {
            method: "GET".into(),
            path: "/x".into(),
        },
    ];
    for err in cases {
        let r = rescue(&err);
        let v: Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["error"]["type"], openai_type(r.status), "{err:?}");
        let v: Value = serde_json::from_slice(&r.anthropic_body()).unwrap();
        assert_eq!(v["error"]["type"], anthropic_type(r.status), "{err:?}");
    }
}
