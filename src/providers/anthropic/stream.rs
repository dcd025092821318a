//! Anthropic Messages SSE → OpenAI `chat.completion.chunk` SSE, event by event.
//!
//! | Anthropic event | OpenAI chunk(s) |
//! | --- | --- |
//! | `message_start` | first chunk: `delta {role: assistant, content: ""}`; input usage kept |
//! | `content_block_start` text | content delta when the block starts with text |
//! | `content_block_start` tool_use | `tool_calls[{index, id, type, function {name, arguments: ""}}]` |
//! | `content_block_delta` text_delta | `delta.content` |
//! | `content_block_delta` input_json_delta | `tool_calls[{index, function {arguments}}]` |
//! | `message_delta` | `finish_reason` chunk (stop reason mapped); output usage kept |
//! | `message_stop` | usage chunk (`choices: []`) when asked, then `data: [DONE]` |
//! | `error` | `data: {"error": {...}}` (provider message kept); the stream ends there |
//! | `ping`, `content_block_stop`, thinking deltas, unknown events | nothing |
//!
//! Tool calls are numbered in the order their blocks start (OpenAI's `index`), whatever the
//! Anthropic block index. Every chunk carries the same `id` (the message id), `created` and
//! `model`. Output depends only on the sequence of events, never on how the bytes were
//! split (property-tested). A stream that ends without `message_stop`, or an event that is
//! not JSON, ends with an error event instead of `[DONE]`.

use super::{Tokens, finish_reason, openai_error};
use crate::llm::sse::{Decoder, Event};
use crate::llm::usage::{Report, Reported};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The streaming state of one response.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: Decoder,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Kept when usage metering reads the stream.
    report: Option<Report>,
    tokens: Tokens,
    /// Anthropic block index → OpenAI tool-call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
    /// `[DONE]` or an error event was written: nothing more.
    ended: bool,
}

impl StreamTranslator {
    /// A translator; `model` until `message_start` names the real one.
    pub fn new(model: &str, created: u64, include_usage: bool, metered: bool) -> StreamTranslator {
        StreamTranslator {
            decoder: Decoder::default(),
            id: "msg_unknown".into(),
            model: model.to_owned(),
            created,
            include_usage,
            report: metered.then(Report::default),
            tokens: Tokens::default(),
            tools: HashMap::new(),
            next_tool: 0,
            ended: false,
        }
    }

    /// Upstream bytes in, the client's events out (built with their JSON).
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        for ev in self.decoder.push(chunk) {
            self.event(&ev, &mut out);
            if self.ended {
                return out;
            }
        }
        if end_of_stream {
            if let Some(ev) = self.decoder.finish() {
                self.event(&ev, &mut out);
            }
            if !self.ended {
                self.error(
                    &json!({"type": "api_error", "message": "the upstream stream ended before message_stop"}),
                    &mut out,
                );
            }
        }
        out
    }

    /// What the stream delivered and reported since the last call (`None`: not metered).
    pub fn report(&mut self) -> Option<Report> {
        self.report.as_mut().map(std::mem::take)
    }

    fn deliver(&mut self, text: &str) {
        if let Some(r) = &mut self.report {
            r.deliver(text);
        }
    }

    /// Records the figures so far; `is_final` once `message_delta` brought the output.
    fn reported(&mut self, is_final: bool) {
        if let Some(r) = &mut self.report {
            let t = &self.tokens;
            r.usage = Some(Reported {
                input: Some(t.input + t.cache_read + t.cache_creation),
                cached: t.cache_read,
                output: Some(t.output),
                reasoning: 0,
                is_final,
            });
        }
    }

    fn chunk(&mut self, delta: Value, finish: Option<&str>, out: &mut Vec<Event>) {
        if let Some(r) = &mut self.report {
            r.name_model(&self.model);
        }
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        out.push(Event::from_json(v));
    }

    fn error(&mut self, err: &Value, out: &mut Vec<Event>) {
        let v = openai_error(None, Some(err), "the upstream reported an error");
        out.push(Event::from_json(v));
        self.ended = true;
    }

    fn event(&mut self, ev: &Event, out: &mut Vec<Event>) {
        let f = match ev.fields() {
            Ok(f) => f,
            Err(e) => {
                self.error(
                    &json!({"type": "api_error", "message": format!("unreadable upstream stream: {e}")}),
                    out,
                );
                return;
            }
        };
        let Some(data) = f.data.as_deref() else {
            return; // comments, keep-alives
        };
        let v: Value = match crate::llm::sse::json(data) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.error(
                    &json!({"type": "api_error", "message": "the upstream sent an event that is not JSON"}),
                    out,
                );
                return;
            }
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(f.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let msg = v.get("message");
                if let Some(id) = msg.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(m) = msg.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.model = m.to_owned();
                }
                if let Some(u) = msg.and_then(|m| m.get("usage")) {
                    self.tokens.update(u);
                    self.reported(false);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = v.get("content_block");
                match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => {
                        let text = block
                            .and_then(|b| b.get("text"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if !text.is_empty() {
                            self.deliver(text);
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("tool_use") => {
                        let t = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, t);
                        let b = block.unwrap_or(&Value::Null);
                        self.chunk(
                            json!({"tool_calls": [{
                                "index": t,
                                "id": b.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                            }]}),
                            None,
                            out,
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = v.get("delta");
                let field = |k: &str| delta.and_then(|d| d.get(k)).and_then(Value::as_str);
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(text) = field("text").filter(|t| !t.is_empty()) {
                            self.deliver(text);
                            self.chunk(json!({"content": text}), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        if let (Some(&t), Some(part)) =
                            (self.tools.get(&index), field("partial_json"))
                            && !part.is_empty()
                        {
                            self.deliver(part);
                            self.chunk(
                                json!({"tool_calls": [{"index": t, "function": {"arguments": part}}]}),
                                None,
                                out,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.tokens.update(u);
                    self.reported(true);
                }
                let reason = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                if let Some(r) = reason {
                    self.chunk(json!({}), Some(finish_reason(r)), out);
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let v = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": self.tokens.openai(),
                    });
                    out.push(Event::from_json(v));
                }
                out.push(Event::data("[DONE]"));
                self.ended = true;
            }
            "error" => {
                let err = v.get("error").cloned().unwrap_or(Value::Null);
                self.error(&err, out);
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }
}
