//! Response side of the guard: masks what the model says, restores pseudonyms, ends
//! streams that break the policy.
//!
//! Envoy streams the response body to us (`mode_override` STREAMED, asked per request in
//! the response-headers reply, with `content-length` removed). Every chunk is answered
//! with a replacement body, empty while text is held back; everything is flushed at
//! end of stream; chunks after the end (Envoy can repeat the last one) get an empty body.
//!
//! - **SSE** (`text/event-stream`): events are decoded incrementally ([`crate::llm::sse`]);
//!   each choice's `delta.content`, and each tool call's `function.arguments`, is one text
//!   channel with its own [`StreamMasker`], so a value split over many events is masked
//!   exactly as in the whole text. Held-back text is emitted with the choice's
//!   `finish_reason` event, or before `[DONE]`, or in a synthetic chunk at end of stream.
//!   A violation (blocked content, `block` entity, denied tool call) ends the stream with an
//!   OpenAI-style error event (`data: {"error": {...}}`), never a silent truncation.
//! - **JSON and other bodies** are held whole (up to [`MAX_WHOLE_BODY`]) and masked at
//!   the end; Envoy's own BUFFERED mode is avoided because it stalled on large responses.
//!   A violation replaces the body with the error envelope (the status is already sent).
//! - **Compressed** bodies (`content-encoding` other than identity) are not decoded: they
//!   are replaced by an error (the request side asks upstreams for `identity`).
//! - **Shadow mode** counts detections but forwards every byte unchanged.
//!
//! - **Anthropic Messages** ([`Shape::Anthropic`], the `/v1/messages` front door): each
//!   content block (`text_delta` text, `input_json_delta` partial JSON) is its own channel,
//!   flushed as one extra `content_block_delta` just before its `content_block_stop`; a
//!   `tool_use` block naming a denied tool ends the stream; whole messages mask `text`
//!   blocks and every string of `tool_use.input`. Violations use Anthropic's error shape
//!   (`event: error`). See [`anthropic`].
//!
//! Known limits: a value split between content and tool-call arguments, or between two
//! choices, is not joined; blocked phrases are checked on released text with a 256-byte
//! tail, so a phrase longer than that spread across releases is missed.

mod anthropic;

use super::{GuardError, Policy, Shape};
use crate::llm::sse::{Decoder, Event};
use crate::pii::{MaskState, Masker, StreamMasker};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest non-streamed body held for masking.
pub const MAX_WHOLE_BODY: usize = 16 << 20;
/// Released text kept per channel for blocked-phrase checks across releases.
const BLOCK_TAIL: usize = 256;

#[derive(Debug)]
enum Mode {
    Sse,
    Whole,
    /// Replace the body with this error.
    Refuse(GuardError),
}

#[derive(Debug, Default)]
struct Channel {
    masker: StreamMasker,
    tail: String,
}

/// Response processor for one request.
#[derive(Debug)]
pub struct ResponseGuard {
    policy: Arc<Policy>,
    masker: Option<Arc<Masker>>,
    mode: Mode,
    decoder: Decoder,
    channels: BTreeMap<(u64, Option<u64>), Channel>,
    template: Option<Map<String, Value>>,
    whole: Vec<u8>,
    overflow: bool,
    done: bool,
    failed: Option<GuardError>,
    /// Response detections (and the request's pseudonym map, for restore).
    pub state: MaskState,
    shape: Shape,
    /// Anthropic: the delta type of each open content block, by block index.
    blocks: BTreeMap<u64, &'static str>,
}

/// Content type class of a response.
pub fn is_sse(content_type: &str) -> bool {
    content_type
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
}

impl ResponseGuard {
    /// A call to a tool the policy denies ends the response.
    fn check_tool_call(&self, call: &Value) -> Result<(), GuardError> {
        let name = call
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        match (&self.policy.tools, name) {
            (Some(tools), Some(name)) if !tools.allows(name) => Err(GuardError::ToolDenied {
                policy: self.policy.name.clone(),
                name: name.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// A processor for a response with these headers.
    pub fn new(
        policy: Arc<Policy>,
        request_state: &MaskState,
        content_type: &str,
        content_encoding: Option<&str>,
    ) -> ResponseGuard {
        let masker = policy.response_masker(request_state);
        let encoded = content_encoding
            .map(str::trim)
            .is_some_and(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"));
        let mode = if encoded {
            Mode::Refuse(GuardError::Unreadable(
                "the upstream response is compressed and cannot be inspected".into(),
            ))
        } else if is_sse(content_type) {
            Mode::Sse
        } else {
            Mode::Whole
        };
        ResponseGuard {
            policy,
            masker,
            mode,
            decoder: Decoder::default(),
            channels: BTreeMap::new(),
            template: None,
            whole: Vec::new(),
            overflow: false,
            done: false,
            failed: None,
            state: request_state.for_response(),
            shape: Shape::OpenAi,
            blocks: BTreeMap::new(),
        }
    }

    /// Reads bodies of this shape (default: OpenAI).
    pub fn with_shape(mut self, shape: Shape) -> ResponseGuard {
        self.shape = shape;
        self
    }

    /// Whether this response is an SSE stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.mode, Mode::Sse)
    }

    /// The violation that ended the response, if any.
    pub fn violation(&self) -> Option<&GuardError> {
        self.failed.as_ref()
    }

    /// Whether end of stream was seen.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Held-back bytes now (memory accounting).
    pub fn held(&self) -> usize {
        self.whole.len()
            + self.decoder.buffered()
            + self
                .channels
                .values()
                .map(|c| c.masker.held() + c.tail.len())
                .sum::<usize>()
    }

    /// Processes one body chunk; returns the bytes to send in its place.
    pub fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.done = end_of_stream;
        if self.policy.shadow {
            self.observe(chunk, end_of_stream);
            return chunk.to_vec();
        }
        let mut out = Vec::new();
        match &self.mode {
            Mode::Refuse(e) => {
                if end_of_stream {
                    let e = e.clone();
                    self.fail_whole(e, &mut out);
                }
            }
            Mode::Sse => self.sse(chunk, end_of_stream, &mut out),
            Mode::Whole => {
                if self.whole.len() + chunk.len() > MAX_WHOLE_BODY {
                    self.overflow = true;
                    self.whole = Vec::new();
                } else if !self.overflow {
                    self.whole.extend_from_slice(chunk);
                }
                if end_of_stream {
                    self.finish_whole(&mut out);
                }
            }
        }
        out
    }

    /// Shadow mode: decode and mask for counting only.
    fn observe(&mut self, chunk: &[u8], end_of_stream: bool) {
        let mut sink = Vec::new();
        match self.mode {
            Mode::Sse => self.sse(chunk, end_of_stream, &mut sink),
            Mode::Whole => {
                if self.whole.len() + chunk.len() <= MAX_WHOLE_BODY {
                    self.whole.extend_from_slice(chunk);
                }
                if end_of_stream {
                    self.finish_whole(&mut sink);
                }
            }
            Mode::Refuse(_) => {}
        }
    }

    fn sse(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        let mut events = match self.decoder.push(chunk) {
            Ok(ev) => ev,
            Err(e) => {
                self.fail_sse(GuardError::Unreadable(e.to_string()), out);
                return;
            }
        };
        if end_of_stream {
            events.extend(self.decoder.finish());
        }
        for ev in events {
            if self.failed.is_some() {
                return;
            }
            self.event(ev, out);
        }
        if end_of_stream && self.failed.is_none() {
            self.flush_all(out);
        }
    }

    fn event(&mut self, mut ev: Event, out: &mut Vec<u8>) {
        if ev.is_done() {
            self.flush_all(out);
            if self.failed.is_none() {
                ev.encode(out);
            }
            return;
        }
        let Some(data) = ev.data.take() else {
            ev.encode(out);
            return;
        };
        let mut obj = match serde_json::from_str::<Value>(&data) {
            Ok(Value::Object(o)) => o,
            _ => {
                // Not a JSON object: still never forwarded unscanned.
                ev.data = Some(match &self.masker {
                    Some(m) => m.mask(&data, &mut self.state),
                    None => data,
                });
                ev.encode(out);
                return;
            }
        };
        let result = match self.shape {
            Shape::OpenAi => self.chunk(&mut obj),
            Shape::Anthropic => self.anthropic_event(&mut obj, out),
        };
        if let Err(e) = result {
            self.fail_sse(e, out);
            return;
        }
        if let Some(e) = self.state.blocked.clone() {
            self.fail_sse(
                GuardError::PiiBlocked {
                    policy: self.policy.name.clone(),
                    entity: e.to_string(),
                },
                out,
            );
            return;
        }
        if obj.contains_key("choices") {
            let mut t = obj.clone();
            t.remove("choices");
            t.remove("usage");
            self.template = Some(t);
        }
        ev.data = Some(Value::Object(obj).to_string());
        ev.encode(out);
    }

    /// Masks one `chat.completion.chunk` in place.
    fn chunk(&mut self, obj: &mut Map<String, Value>) -> Result<(), GuardError> {
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            return Ok(());
        };
        for choice in choices.iter_mut() {
            let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(Value::Object(delta)) = choice.get_mut("delta") else {
                continue;
            };
            if let Some(Value::String(s)) = delta.get_mut("content") {
                let released = self.push(i, None, s)?;
                *s = released;
            }
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for call in calls.iter_mut() {
                    let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.check_tool_call(call)?;
                    if let Some(Value::String(s)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                    {
                        let released = self.push(i, Some(t), s)?;
                        *s = released;
                    }
                }
            }
            if finishing {
                let rest = self.flush_choice(i)?;
                if !rest.content.is_empty() {
                    let prev = delta
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    delta.insert("content".into(), Value::String(prev + &rest.content));
                }
                for (t, args) in rest.tools {
                    let calls = delta
                        .entry("tool_calls")
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(calls) = calls {
                        calls.push(json!({"index": t, "function": {"arguments": args}}));
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, choice: u64, tool: Option<u64>, text: &str) -> Result<String, GuardError> {
        let ch = self.channels.entry((choice, tool)).or_default();
        let released = match &self.masker {
            Some(m) => ch.masker.push(m, &mut self.state, text),
            None => text.to_owned(),
        };
        check_blocked(&self.policy, ch, &released)?;
        Ok(released)
    }

    fn flush_choice(&mut self, choice: u64) -> Result<Flushed, GuardError> {
        let mut flushed = Flushed::default();
        let keys: Vec<(u64, Option<u64>)> = self
            .channels
            .keys()
            .filter(|(c, _)| *c == choice)
            .copied()
            .collect();
        for key in keys {
            let Some(ch) = self.channels.get_mut(&key) else {
                continue;
            };
            let rest = match &self.masker {
                Some(m) => ch.masker.finish(m, &mut self.state),
                None => String::new(),
            };
            check_blocked(&self.policy, ch, &rest)?;
            if rest.is_empty() {
                continue;
            }
            match key.1 {
                None => flushed.content.push_str(&rest),
                Some(t) => flushed.tools.push((t, rest)),
            }
        }
        Ok(flushed)
    }

    /// Emits whatever any channel still holds, as one synthetic chunk per choice.
    fn flush_all(&mut self, out: &mut Vec<u8>) {
        if self.shape == Shape::Anthropic {
            self.anthropic_flush_all(out);
            return;
        }
        let choices: Vec<u64> = self.channels.keys().map(|k| k.0).collect();
        let mut seen = Vec::new();
        for i in choices {
            if seen.contains(&i) {
                continue;
            }
            seen.push(i);
            let rest = match self.flush_choice(i) {
                Ok(r) => r,
                Err(e) => {
                    self.fail_sse(e, out);
                    return;
                }
            };
            if rest.content.is_empty() && rest.tools.is_empty() {
                continue;
            }
            let mut delta = Map::new();
            if !rest.content.is_empty() {
                delta.insert("content".into(), Value::String(rest.content));
            }
            if !rest.tools.is_empty() {
                let calls: Vec<Value> = rest
                    .tools
                    .into_iter()
                    .map(|(t, a)| json!({"index": t, "function": {"arguments": a}}))
                    .collect();
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let mut obj = self.template.clone().unwrap_or_default();
            obj.entry("object")
                .or_insert_with(|| Value::String("chat.completion.chunk".into()));
            obj.insert(
                "choices".into(),
                json!([{"index": i, "delta": delta, "finish_reason": null}]),
            );
            Event::data(Value::Object(obj).to_string()).encode(out);
        }
    }

    fn fail_sse(&mut self, e: GuardError, out: &mut Vec<u8>) {
        let mut ev = Event::data(self.error_body(&e));
        if self.shape == Shape::Anthropic {
            ev.event = Some("error".into());
        }
        self.failed = Some(e);
        ev.encode(out);
    }

    fn error_body(&self, e: &GuardError) -> String {
        match self.shape {
            Shape::OpenAi => error_json(e),
            Shape::Anthropic => anthropic::error_json(e),
        }
    }

    fn fail_whole(&mut self, e: GuardError, out: &mut Vec<u8>) {
        out.clear();
        if matches!(self.mode, Mode::Sse) {
            self.fail_sse(e, out);
        } else {
            out.extend_from_slice(self.error_body(&e).as_bytes());
            self.failed = Some(e);
        }
    }

    fn finish_whole(&mut self, out: &mut Vec<u8>) {
        if self.overflow {
            self.fail_whole(
                GuardError::Unreadable(format!(
                    "the upstream response is larger than {MAX_WHOLE_BODY} bytes and cannot be inspected"
                )),
                out,
            );
            return;
        }
        let body = std::mem::take(&mut self.whole);
        let parsed = serde_json::from_slice::<Value>(&body);
        let result = match parsed {
            // Unchanged JSON (embeddings, clean answers) keeps the upstream's exact bytes.
            Ok(Value::Object(mut obj)) => match self.shape {
                Shape::OpenAi => self.whole_json(&mut obj),
                Shape::Anthropic => self.whole_anthropic(&mut obj),
            }
            .map(|changed| {
                if changed {
                    Value::Object(obj).to_string().into_bytes()
                } else {
                    body
                }
            }),
            _ => match String::from_utf8(body) {
                Ok(text) => {
                    let masked = match &self.masker {
                        Some(m) => m.mask(&text, &mut self.state),
                        None => text,
                    };
                    self.check_text(&masked).map(|()| masked.into_bytes())
                }
                Err(e) => Ok(e.into_bytes()),
            },
        };
        let result = result.and_then(|bytes| match self.state.blocked.clone() {
            Some(entity) => Err(GuardError::PiiBlocked {
                policy: self.policy.name.clone(),
                entity: entity.to_string(),
            }),
            None => Ok(bytes),
        });
        match result {
            Ok(bytes) => *out = bytes,
            Err(e) => self.fail_whole(e, out),
        }
    }

    fn check_text(&self, text: &str) -> Result<(), GuardError> {
        if self.policy.blocked_in_responses
            && let Some(b) = &self.policy.blocked
            && let Some(rule) = b.check(text)
        {
            return Err(GuardError::ContentBlocked {
                policy: self.policy.name.clone(),
                rule,
            });
        }
        Ok(())
    }

    /// Masks a non-streamed completion in place; returns whether anything changed.
    fn whole_json(&mut self, obj: &mut Map<String, Value>) -> Result<bool, GuardError> {
        let mut changed = false;
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            return Ok(changed);
        };
        for choice in choices.iter_mut() {
            let Some(Value::Object(msg)) = choice.get_mut("message") else {
                continue;
            };
            if let Some(Value::String(s)) = msg.get_mut("content") {
                if let Some(m) = &self.masker {
                    let masked = m.mask(s, &mut self.state);
                    changed |= masked != *s;
                    *s = masked;
                }
                self.check_text(s)?;
            }
            if let Some(Value::Array(calls)) = msg.get_mut("tool_calls") {
                for call in calls.iter_mut() {
                    self.check_tool_call(call)?;
                    if let Some(Value::String(s)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                        && let Some(m) = &self.masker
                    {
                        let masked = m.mask(s, &mut self.state);
                        changed |= masked != *s;
                        *s = masked;
                    }
                }
            }
        }
        Ok(changed)
    }
}

#[derive(Debug, Default)]
struct Flushed {
    content: String,
    tools: Vec<(u64, String)>,
}

fn check_blocked(policy: &Policy, ch: &mut Channel, released: &str) -> Result<(), GuardError> {
    let Some(b) = policy
        .blocked
        .as_ref()
        .filter(|_| policy.blocked_in_responses)
    else {
        return Ok(());
    };
    if released.is_empty() {
        return Ok(());
    }
    ch.tail.push_str(released);
    if let Some(rule) = b.check(&ch.tail) {
        return Err(GuardError::ContentBlocked {
            policy: policy.name.clone(),
            rule,
        });
    }
    if ch.tail.len() > BLOCK_TAIL {
        let mut cut = ch.tail.len() - BLOCK_TAIL;
        while !ch.tail.is_char_boundary(cut) {
            cut += 1;
        }
        ch.tail.drain(..cut);
    }
    Ok(())
}

/// The OpenAI error envelope for a response-side violation.
pub fn error_json(e: &GuardError) -> String {
    json!({"error": {
        "message": e.to_string().replace("the request", "the response"),
        "type": "invalid_request_error",
        "code": e.code(),
        "param": null,
    }})
    .to_string()
}

#[cfg(test)]
mod tests;
