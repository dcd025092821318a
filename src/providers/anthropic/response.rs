//! Anthropic Messages response → OpenAI chat completion, for the OpenAI front door.
//!
//! [`Translator`] picks its mode at [`ResponseTranslator::head`]:
//! - a 2xx `text/event-stream` body is translated event by event ([`super::stream`]);
//! - a 2xx JSON body is held whole (up to [`MAX_JSON_RESPONSE`](crate::providers::MAX_JSON_RESPONSE)) and becomes one `chat.completion`;
//! - any other status: the body (Anthropic's `{"type":"error","error":{type,message}}`, or
//!   whatever a proxy in between said) becomes the OpenAI error envelope with the provider's
//!   message; the status stays as the upstream sent it.
//!
//! Invariant: never panics; malformed upstream bytes become an OpenAI-shaped error (an
//! error event once a stream has started). After end of stream every further chunk (Envoy
//! can repeat the last one) gets an empty body.

use super::stream::StreamTranslator;
use super::{Tokens, finish_reason, openai_error};
use crate::llm::error_envelope::{BAD_UPSTREAM, ErrorEnvelope};
use crate::providers::{CappedBody, Head, MAX_JSON_RESPONSE, ResponseTranslator};
use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest non-streamed body held for translation.

#[derive(Debug)]
enum Mode {
    /// `head` not called yet: treated as a whole JSON body.
    Whole,
    Stream(Box<StreamTranslator>),
    Error {
        status: u16,
    },
}

/// Translates one Anthropic response.
#[derive(Debug)]
pub struct Translator {
    model: String,
    created: u64,
    include_usage: bool,
    /// Usage metering reads the response (see [`ResponseTranslator::meter`]).
    metered: bool,
    mode: Mode,
    body: CappedBody,
    done: bool,
}

impl Translator {
    /// A translator; `model` is reported when the response names none, `include_usage` adds
    /// the final usage chunk to streams.
    pub fn new(model: &str, now: SystemTime, include_usage: bool) -> Translator {
        Translator {
            model: model.to_owned(),
            created: now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            include_usage,
            metered: false,
            mode: Mode::Whole,
            body: CappedBody::default(),
            done: false,
        }
    }

    fn finish_whole(&mut self) -> Vec<u8> {
        let body = self.body.take();
        let v = match (&self.mode, body) {
            (Mode::Error { status }, body) => error_body(*status, body.as_deref()),
            (_, None) => ErrorEnvelope::new(BAD_UPSTREAM, &format!("the upstream response is larger than {MAX_JSON_RESPONSE} bytes and cannot be translated"))
                .code(Some("upstream_response_too_large")).openai(),
            (_, Some(body)) => match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(m)) if m.get("type").and_then(Value::as_str) == Some("error") => {
                    openai_error(None, m.get("error"), "the upstream reported an error")
                }
                Ok(Value::Object(m)) => completion(&m, &self.model, self.created),
                _ => ErrorEnvelope::new(BAD_UPSTREAM, "the upstream answered with a body that is not an Anthropic message")
                    .code(Some("upstream_unreadable")).openai(),
            },
        };
        v.to_string().into_bytes()
    }
}

impl ResponseTranslator for Translator {
    fn head(&mut self, status: u16, content_type: &str) -> Head {
        let sse = content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream");
        self.mode = if !(200..300).contains(&status) {
            Mode::Error { status }
        } else if sse {
            Mode::Stream(Box::new(StreamTranslator::new(
                &self.model,
                self.created,
                self.include_usage,
                self.metered,
            )))
        } else {
            Mode::Whole
        };
        Head {
            content_type: Some(
                if matches!(self.mode, Mode::Stream(_)) {
                    "text/event-stream"
                } else {
                    "application/json"
                }
                .into(),
            ),
            body_changes: true,
        }
    }

    fn body(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.done = end_of_stream;
        if let Mode::Stream(s) = &mut self.mode {
            return crate::llm::sse::encode(&s.push(chunk, end_of_stream));
        }
        self.body.push(chunk);
        if end_of_stream {
            self.finish_whole()
        } else {
            Vec::new()
        }
    }

    fn events(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<crate::llm::sse::Event>> {
        let Mode::Stream(s) = &mut self.mode else {
            return None;
        };
        if self.done {
            return Some(Vec::new());
        }
        self.done = end_of_stream;
        Some(s.push(chunk, end_of_stream))
    }

    fn meter(&mut self, usage_chunk: bool) {
        self.metered = true;
        self.include_usage &= usage_chunk;
    }

    fn report(&mut self) -> Option<crate::llm::usage::Report> {
        match &mut self.mode {
            Mode::Stream(s) => s.report(),
            _ => None,
        }
    }
}

/// The OpenAI error envelope for an upstream error response.
fn error_body(status: u16, body: Option<&[u8]>) -> Value {
    let body = body.unwrap_or_default();
    let parsed = serde_json::from_slice::<Value>(body).ok();
    if let Some(err) = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
    {
        return openai_error(Some(status), Some(err), "the upstream reported an error");
    }
    // Not Anthropic's shape (a proxy's page, plain text): keep a short, printable excerpt.
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let message = if text.trim().is_empty() {
        format!("the upstream answered with status {status}")
    } else {
        format!(
            "the upstream answered with status {status}: {}",
            text.trim()
        )
    };
    ErrorEnvelope::new(status, &message)
        .code(Some(&format!("upstream_{status}")))
        .openai()
}

/// A whole Messages response → `chat.completion`.
pub fn completion(m: &Map<String, Value>, model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    if let Some(Value::Array(blocks)) = m.get("content") {
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                Some("tool_use") => calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": b.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                    },
                })),
                // thinking, redacted_thinking, server tool blocks: not part of the OpenAI shape.
                _ => {}
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    message.insert("refusal".into(), Value::Null);
    let finish = m
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason);
    let mut tokens = Tokens::default();
    if let Some(u) = m.get("usage") {
        tokens.update(u);
    }
    json!({
        "id": m.get("id").and_then(Value::as_str).unwrap_or("msg_unknown"),
        "object": "chat.completion",
        "created": created,
        "model": m.get("model").and_then(Value::as_str).unwrap_or(model),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": tokens.openai(),
    })
}
