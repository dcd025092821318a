//! Anthropic Messages replay: `POST /v1/messages` speaking Anthropic's real wire format.
//!
//! Checks what the real API checks: `x-api-key` (when the upstream has a key), the
//! `anthropic-version` header, and the request shape, strictly (unknown top-level fields,
//! `max_tokens`, roles that alternate starting with `user`, known block types, `tool_result`
//! only in user turns and answering a `tool_use` of the previous assistant turn, temperature
//! in 0..=1, ...). Errors use Anthropic's shape `{"type":"error","error":{type,message}}`.
//!
//! Replies are chosen by model name and replayed from recorded payloads (the same files the
//! gateway's golden tests use, tests/fixtures/anthropic):
//! - `claude-tool*`: the tool-use message / stream;
//! - `claude-overloaded*`: 529 `overloaded_error`;
//! - `claude-error-<status>` (a 4xx/5xx): that status with the error type Anthropic's API
//!   gives it (`api_error` for a 500, `rate_limit_error` for a 429, ...);
//! - `claude-stream-error*`: a stream that fails mid-way with an `error` event;
//! - `claude-text*`: the recorded text message / stream;
//! - any other model: an echo of the last user text (`Echo: ...`), built in the same format,
//!   so tests see what reached the provider; `claude-thinking*` answers as with extended
//!   thinking on: a signed `thinking` block (which also repeats the user text) first.
//!
//! Streams are sent event by event, each event split in two writes, to exercise reassembly.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;

const VERSION: &str = "2023-06-01";

const TEXT_JSON: &str = include_str!("../../../tests/fixtures/anthropic/response_text.in.json");
const TOOL_JSON: &str = include_str!("../../../tests/fixtures/anthropic/response_tool_use.in.json");
const TEXT_SSE: &str = include_str!("../../../tests/fixtures/anthropic/stream_text.in.sse");
const TOOL_SSE: &str = include_str!("../../../tests/fixtures/anthropic/stream_tool_use.in.sse");
const ERROR_SSE: &str = include_str!("../../../tests/fixtures/anthropic/stream_error.in.sse");
const OVERLOADED: &str = include_str!("../../../tests/fixtures/anthropic/error_overloaded.in.json");

/// The error type Anthropic's API answers a status with.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An Anthropic-shaped error response.
pub fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message.into()}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// Handles one Messages request. `api_key`: the key `x-api-key` must carry, if any.
pub fn messages(api_key: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(key) = api_key {
        match headers.get("x-api-key") {
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "x-api-key header is required",
                );
            }
            Some(v) if v.as_bytes() != key.as_bytes() => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid x-api-key",
                );
            }
            Some(_) => {}
        }
    }
    match headers.get("anthropic-version").map(|v| v.as_bytes()) {
        None => return invalid("anthropic-version: header is required"),
        Some(v) if v != VERSION.as_bytes() => {
            return invalid("anthropic-version: unsupported version");
        }
        Some(_) => {}
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return invalid("the request body is not a JSON object"),
    };
    if let Err(message) = validate(&req) {
        return invalid(message);
    }
    let model = req["model"].as_str().unwrap_or_default();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if let Some(status) = model
        .strip_prefix("claude-")
        .and_then(crate::reply::simulated_error_status)
    {
        return error(
            status,
            error_type(status.as_u16()),
            format!("Simulated {status} from the Anthropic replay for model {model}."),
        );
    }
    if model.starts_with("claude-overloaded") {
        return (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            [(header::CONTENT_TYPE, "application/json")],
            OVERLOADED,
        )
            .into_response();
    }
    let (whole, events): (String, String) = if model.starts_with("claude-tool") {
        (TOOL_JSON.into(), TOOL_SSE.into())
    } else if model.starts_with("claude-stream-error") {
        (TEXT_JSON.into(), ERROR_SSE.into())
    } else if model.starts_with("claude-text") {
        (TEXT_JSON.into(), TEXT_SSE.into())
    } else {
        echo(&req, model)
    };
    if stream {
        let pieces: Vec<Result<Vec<u8>, Infallible>> = events
            .split_inclusive("\n\n")
            .flat_map(|ev| {
                let mid = ev.len() / 2;
                let mid = (mid..ev.len())
                    .find(|&i| ev.is_char_boundary(i))
                    .unwrap_or(ev.len());
                [
                    Ok(ev.as_bytes()[..mid].to_vec()),
                    Ok(ev.as_bytes()[mid..].to_vec()),
                ]
            })
            .collect();
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(futures::stream::iter(pieces)),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], whole).into_response()
}

/// The echo reply (whole message and stream) for `Echo: <last user text>`.
fn echo(req: &Value, model: &str) -> (String, String) {
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default();
    let text = format!("Echo: {last}");
    let input = (serde_json::to_string(&req["messages"]).map_or(0, |s| s.len()) / 4) as u64 + 1;
    let output = (text.chars().count() / 4) as u64 + 1;
    let id = "msg_01EchoDemo000000000000001";
    let thinking = model
        .starts_with("claude-thinking")
        .then(|| format!("The user wrote: {last}"));
    // Opaque, like the real one; the client must send it back unchanged.
    let signature = "EqQBCkYIBxgCKkBdemoSignatureOverTheExactThinkingText";
    let mut content = Vec::new();
    if let Some(t) = &thinking {
        content.push(json!({"type": "thinking", "thinking": t, "signature": signature}));
    }
    content.push(json!({"type": "text", "text": text}));
    let whole = json!({"id": id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": output}});
    let mut sse = String::new();
    let mut ev =
        |name: &str, data: Value| sse.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": 1}}}),
    );
    let mut index = 0;
    if let Some(t) = &thinking {
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        );
        let chars: Vec<char> = t.chars().collect();
        for piece in chars.chunks(4) {
            let piece: String = piece.iter().collect();
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}),
            );
        }
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": signature}}),
        );
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        index = 1;
    }
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    );
    ev("ping", json!({"type": "ping"}));
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(4) {
        let piece: String = piece.iter().collect();
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    );
    ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
    (whole.to_string(), sse)
}

const TOP_LEVEL: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
];

/// Anthropic's request rules, as strictly as the API applies them.
pub fn validate(req: &Value) -> Result<(), String> {
    let obj = req.as_object().ok_or("body: must be an object")?;
    if let Some(k) = obj.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required".into());
    }
    match obj.get("max_tokens").and_then(Value::as_u64) {
        Some(n) if n >= 1 => {}
        _ => return Err("max_tokens: Field required (an integer >= 1)".into()),
    }
    if let Some(t) = obj.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t))
    {
        return Err("temperature: Input should be less than or equal to 1".into());
    }
    match obj.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks))
            if blocks
                .iter()
                .all(|b| b["type"] == "text" && b["text"].is_string()) => {}
        Some(_) => return Err("system: must be a string or a list of text blocks".into()),
    }
    if let Some(s) = obj.get("stop_sequences")
        && !s.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err("stop_sequences: must be a list of strings".into());
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = obj.get("tools") {
        for (i, t) in tools
            .as_array()
            .ok_or("tools: must be a list")?
            .iter()
            .enumerate()
        {
            let name = t["name"]
                .as_str()
                .ok_or(format!("tools.{i}.name: Field required"))?;
            if !t["input_schema"].is_object() {
                return Err(format!("tools.{i}.input_schema: Field required"));
            }
            tool_names.push(name);
        }
    }
    if let Some(c) = obj.get("tool_choice") {
        match c["type"].as_str() {
            Some("auto" | "any" | "none") => {}
            Some("tool") if c["name"].as_str().is_some_and(|n| tool_names.contains(&n)) => {}
            _ => {
                return Err(
                    "tool_choice: must be auto, any, none or a tool that is in tools".into(),
                );
            }
        }
    }
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: at least one message is required")?;
    let mut previous_tool_uses: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(format!(
                "messages.{i}.role: roles must alternate between \"user\" and \"assistant\" starting with \"user\", found {role:?}"
            ));
        }
        let blocks = match &m["content"] {
            Value::String(s) if !s.is_empty() => continue,
            Value::Array(b) if !b.is_empty() => b,
            _ => {
                return Err(format!(
                    "messages.{i}.content: must be a non-empty string or list of blocks"
                ));
            }
        };
        let mut tool_uses = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match (b["type"].as_str(), role) {
                (Some("text"), _) if b["text"].is_string() => {}
                (Some("image"), "user") => match b["source"]["type"].as_str() {
                    Some("base64")
                        if b["source"]["media_type"].is_string()
                            && b["source"]["data"].is_string() => {}
                    Some("url") if b["source"]["url"].is_string() => {}
                    _ => return Err(format!("{at}.source: invalid image source")),
                },
                (Some("document"), "user") => match b["source"]["type"].as_str() {
                    Some("text" | "base64")
                        if b["source"]["media_type"].is_string()
                            && b["source"]["data"].is_string() => {}
                    Some("url") if b["source"]["url"].is_string() => {}
                    _ => return Err(format!("{at}.source: invalid document source")),
                },
                (Some("thinking"), "assistant")
                    if b["thinking"].is_string() && b["signature"].is_string() => {}
                (Some("redacted_thinking"), "assistant") if b["data"].is_string() => {}
                (Some("tool_use"), "assistant") => {
                    if !b["input"].is_object() || !b["id"].is_string() || !b["name"].is_string() {
                        return Err(format!("{at}: tool_use needs id, name and an input object"));
                    }
                    tool_uses.push(b["id"].as_str().unwrap_or_default());
                }
                (Some("tool_result"), "user") => {
                    let id = b["tool_use_id"].as_str().unwrap_or_default();
                    if !previous_tool_uses.contains(&id) {
                        return Err(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                }
                _ => return Err(format!("{at}: invalid content block for role {role}")),
            }
        }
        previous_tool_uses = tool_uses;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_like_the_api() {
        let ok =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(validate(&ok), Ok(()));
        let cases = [
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}),
            json!({"model": "m", "max_tokens": 5, "n": 2, "messages": [{"role": "user", "content": "a"}]}),
            json!({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "a"}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]}),
        ];
        for c in cases {
            assert!(validate(&c).is_err(), "{c}");
        }
    }

    #[test]
    fn claude_error_models_answer_anthropics_error_for_the_status() {
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", VERSION.parse().unwrap());
        for (status, kind) in [
            (500, "api_error"),
            (429, "rate_limit_error"),
            (404, "not_found_error"),
        ] {
            let body = json!({"model": format!("claude-error-{status}"), "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]});
            let r = messages(None, &headers, body.to_string().as_bytes());
            assert_eq!(r.status().as_u16(), status);
            let bytes = futures_body(r);
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{status}");
        }
    }

    fn futures_body(r: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec()
        })
    }

    #[test]
    fn replays_are_well_formed() {
        for p in [TEXT_JSON, TOOL_JSON, OVERLOADED] {
            assert!(serde_json::from_str::<Value>(p).is_ok());
        }
        for s in [TEXT_SSE, TOOL_SSE, ERROR_SSE] {
            assert!(s.ends_with("\n\n"));
        }
    }
}
