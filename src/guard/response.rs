//! Response side of the guard: masks what the model says, restores pseudonyms, ends
//! streams that break the policy.
//!
//! Envoy streams the response body to us (`mode_override` STREAMED, asked per request in
//! the response-headers reply, with `content-length` removed). Every chunk is answered
//! with a replacement body, empty while text is held back; everything is flushed at
//! end of stream; chunks after the end (Envoy can repeat the last one) get an empty body.
//!
//! - **SSE** (`text/event-stream`): the response pipeline (`stages::response`)
//!   hands over decoded events ([`ResponseGuard::on_events`]; their JSON parsed once and
//!   shared with usage); [`ResponseGuard::on_body`] frames bytes itself for callers without
//!   a pipeline (tests, fuzzing, benches), through the same event handler;
//!   every string of a choice's `delta` (content, refusal, reasoning, tool-call and legacy
//!   function-call arguments, audio transcript, fields nobody listed; not ids, enums or tool
//!   names) is one text channel keyed by its path, with its own [`DecodingStreamMasker`], so a value
//!   split over many events is masked exactly as in the whole text. Every other string of a
//!   chunk is masked on its own, and `logprobs` are set to null while masking (their tokens
//!   spell the text one token at a time). Held-back text is emitted with the choice's
//!   `finish_reason` event, or before `[DONE]`, or in a synthetic chunk at end of stream.
//!   A violation (blocked content, `block` entity, denied tool call) ends the stream with an
//!   OpenAI-style error event (`data: {"error": {...}}`), never a silent truncation.
//! - **JSON and other bodies** are held whole (up to [`MAX_WHOLE_BODY`]) and masked at
//!   the end: every string value ([`super::walk`], `choices` or not), encoded spellings
//!   included ([`super::encoded`]), blocked content checked on all texts together; Envoy's own BUFFERED mode is avoided because it stalled on large responses.
//!   A violation replaces the body with the error envelope (the status is already sent).
//! - **Compressed** bodies (`content-encoding` other than identity) are not decoded: they
//!   are replaced by an error (the request side asks upstreams for `identity`).
//! - **Shadow mode** counts detections but forwards every byte unchanged.
//!
//! - **Anthropic Messages** ([`Shape::Anthropic`], the `/v1/messages` front door): each
//!   content block (`text_delta` text, `input_json_delta` partial JSON) is its own channel,
//!   flushed as one extra `content_block_delta` just before its `content_block_stop`; a
//!   `tool_use` block naming a denied tool ends the stream; a `thinking` block is held
//!   until its stop and then released unchanged, dropped (later indices shift down) or
//!   refused, by the policy's [`super::Thinking`] choice; whole messages mask every
//!   string. Violations use Anthropic's error shape (`event: error`). See [`anthropic`].
//!
//! Known limits: a value split between two channels (content and tool-call arguments, two
//! choices) is not joined; in streams, encoded spellings (`%40`, `&#64;`) are not decoded
//! (the stream masker sees plain text; JSON escapes are decoded by the event parser);
//! blocked phrases are checked per channel on released text with a 256-byte tail, so a
//! phrase longer than that spread across releases is missed.

mod anthropic;

use super::request::thinking_verdict;
use super::walk::{self, Signed, Visit};
use super::{GuardError, Policy, Shape};
use crate::llm::error_envelope::ErrorEnvelope;
use crate::llm::sse::{Decoder, Event};
use crate::pii::encoded;
use crate::pii::{DecodingStreamMasker, MaskState, Masker};
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
    masker: DecodingStreamMasker,
    tail: String,
}

/// Response processor for one request.
#[derive(Debug)]
pub struct ResponseGuard {
    policy: Arc<Policy>,
    masker: Option<Arc<Masker>>,
    mode: Mode,
    decoder: Decoder,
    /// Text channels by (choice or block index, path inside the delta).
    channels: BTreeMap<(u64, Path), Channel>,
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
    /// Anthropic: the thinking block held until its end (see [`anthropic`]).
    held: Option<anthropic::Held>,
    /// Anthropic: thinking blocks dropped so far (later block indices shift down).
    dropped: u64,
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
            held: None,
            dropped: 0,
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
            + self.held.as_ref().map_or(0, anthropic::Held::len)
    }

    /// Processes events a response pipeline decoded (SSE mode); returns the bytes to send
    /// in their place. Shadow mode forwards the events as they came.
    pub fn on_events(&mut self, events: Vec<Event>, end_of_stream: bool) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.done = end_of_stream;
        let mut out = Vec::new();
        if self.policy.shadow {
            let mut sink = Vec::new();
            for ev in &events {
                ev.encode(&mut out);
            }
            self.events(events, end_of_stream, &mut sink);
        } else {
            self.events(events, end_of_stream, &mut out);
        }
        out
    }

    /// Processes one body chunk; returns the bytes to send in its place. For SSE, the bytes
    /// are framed by the guard's own decoder (callers without a response pipeline: tests,
    /// fuzzing, benches) and handled exactly as [`ResponseGuard::on_events`] does.
    pub fn on_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        if matches!(self.mode, Mode::Sse) {
            let mut events = self.decoder.push(chunk);
            if end_of_stream {
                events.extend(self.decoder.finish());
            }
            return self.on_events(events, end_of_stream);
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
            Mode::Sse => {} // handled above
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
            Mode::Sse => {} // on_events
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

    fn events(&mut self, events: Vec<Event>, end_of_stream: bool, out: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
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
        let f = match ev.fields() {
            Ok(f) => f,
            Err(e) => {
                // Oversized: never forwarded unscanned.
                self.fail_sse(GuardError::Unreadable(e.to_string()), out);
                return;
            }
        };
        if f.is_done() {
            self.flush_all(out);
            if self.failed.is_none() {
                ev.encode(out);
            }
            return;
        }
        if f.data.is_none() {
            // Comments and keep-alives pass as they came.
            ev.encode(out);
            return;
        }
        // The pipeline's parse, when usage already read this event; else parsed now.
        let json = ev.take_json();
        let Ok(mut f) = ev.into_fields() else { return };
        let data = f.data.take().unwrap_or_default();
        let mut obj = match json {
            Some(Value::Object(o)) => o,
            _ => {
                // Not a JSON object: still never forwarded unscanned.
                f.data = Some(match &self.masker {
                    Some(m) => m.mask(&data, &mut self.state),
                    None => data,
                });
                f.encode(out);
                return;
            }
        };
        let result = match self.shape {
            Shape::OpenAi => self.chunk(&mut obj).map(|()| true),
            Shape::Anthropic => self.anthropic_event(&mut obj, out),
        };
        let emit = match result {
            Ok(emit) => emit,
            Err(e) => {
                self.fail_sse(e, out);
                return;
            }
        };
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
        if emit {
            f.data = Some(Value::Object(obj).to_string());
            f.encode(out);
        }
    }

    /// Masks one `chat.completion.chunk` in place: every string of each choice's `delta`
    /// (content, refusal, reasoning, tool-call and legacy function-call arguments, audio
    /// transcripts, fields nobody listed) is a text channel keyed by its path; every other
    /// string of the chunk is masked on its own; `logprobs` are removed while masking
    /// (their tokens spell the text one token at a time, which no detector can see).
    fn chunk(&mut self, obj: &mut Map<String, Value>) -> Result<(), GuardError> {
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            self.mask_rest(obj);
            return Ok(());
        };
        let mut deltas = Vec::new();
        for choice in choices.iter_mut() {
            let delta = choice.get_mut("delta").map(std::mem::take);
            deltas.push(delta);
        }
        self.mask_rest(obj);
        let Some(Value::Array(choices)) = obj.get_mut("choices") else {
            return Ok(());
        };
        for (choice, delta) in choices.iter_mut().zip(deltas) {
            let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(mut delta) = delta else { continue };
            if let Value::Object(d) = &mut delta {
                if let Some(Value::Array(calls)) = d.get("tool_calls") {
                    for call in calls {
                        self.check_tool_call(call)?;
                    }
                }
                if let Some(call) = d.get("function_call") {
                    self.check_tool_call(&json!({"function": call}))?;
                }
                let mut found = Vec::new();
                delta_strings(d, &mut Vec::new(), &mut Vec::new(), false, &mut found);
                for (at, key) in found {
                    if let Some(Value::String(s)) = lookup(d, &at) {
                        let text = std::mem::take(s);
                        let released = self.push(i, key, &text)?;
                        if let Some(Value::String(s)) = lookup(d, &at) {
                            *s = released;
                        }
                    }
                }
                if finishing {
                    for (path, rest) in self.flush_choice(i)? {
                        insert_at(d, &path, &rest);
                    }
                }
            }
            if let Some(slot) = choice.get_mut("delta") {
                *slot = delta;
            }
        }
        Ok(())
    }

    /// Masks every scanned string of `v` on its own (no channel), drops `logprobs`.
    fn mask_rest(&mut self, obj: &mut Map<String, Value>) {
        let Some(m) = self.masker.clone() else {
            return;
        };
        drop_logprobs(obj);
        let state = &mut self.state;
        for (k, v) in obj.iter_mut() {
            walk::walk_field(
                k,
                v,
                &mut walk::Strings(|s: &mut String| {
                    if let Some(x) = encoded::mask(&m, s, state) {
                        *s = x;
                    }
                }),
            );
        }
    }

    fn push(&mut self, choice: u64, path: Path, text: &str) -> Result<String, GuardError> {
        let ch = self.channels.entry((choice, path)).or_default();
        let released = match &self.masker {
            Some(m) => ch.masker.push(m, &mut self.state, text),
            None => text.to_owned(),
        };
        check_blocked(&self.policy, ch, &released)?;
        Ok(released)
    }

    /// Releases everything a choice's channels hold: `(path, text)` per non-empty channel.
    fn flush_choice(&mut self, choice: u64) -> Result<Vec<(Path, String)>, GuardError> {
        let mut flushed = Vec::new();
        let keys: Vec<(u64, Path)> = self
            .channels
            .keys()
            .filter(|(c, _)| *c == choice)
            .cloned()
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
            if !rest.is_empty() {
                flushed.push((key.1, rest));
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
            if rest.is_empty() {
                continue;
            }
            let mut delta = Map::new();
            for (path, text) in rest {
                insert_at(&mut delta, &path, &text);
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
        let body = self.error_body(&e);
        let ev = match self.shape {
            Shape::Anthropic => Event::named("error", body),
            Shape::OpenAi => Event::data(body),
        };
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

    /// Masks a non-streamed body in place (every scanned string, `choices` or not);
    /// returns whether anything changed. Tool calls are checked against the tool policy
    /// first; `logprobs` are removed while masking (see [`Self::chunk`]).
    fn whole_json(&mut self, obj: &mut Map<String, Value>) -> Result<bool, GuardError> {
        if let Some(Value::Array(choices)) = obj.get("choices") {
            for choice in choices {
                let msg = choice.get("message");
                for call in msg
                    .and_then(|m| m.get("tool_calls"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.check_tool_call(call)?;
                }
                if let Some(call) = msg.and_then(|m| m.get("function_call")) {
                    self.check_tool_call(&json!({"function": call}))?;
                }
            }
        }
        let mut changed = self.masker.is_some() && drop_logprobs(obj);
        changed |= self.walk_whole(obj)?;
        Ok(changed)
    }

    /// Masks every scanned string of a whole body and checks blocked content on all of
    /// them together; signed thinking blocks follow the policy's choice.
    fn walk_whole(&mut self, obj: &mut Map<String, Value>) -> Result<bool, GuardError> {
        let mut v = WholeVisit {
            policy: &self.policy,
            masker: self.masker.as_deref(),
            state: &mut self.state,
            texts: Vec::new(),
            changed: false,
        };
        for (k, val) in obj.iter_mut() {
            walk::walk_field(k, val, &mut v);
        }
        let (changed, texts) = (v.changed, v.texts);
        if self.policy.blocked_in_responses
            && let Some(b) = &self.policy.blocked
            && let Some(rule) = b.check_all(&texts)
        {
            return Err(GuardError::ContentBlocked {
                policy: self.policy.name.clone(),
                rule,
            });
        }
        Ok(changed)
    }
}

/// The whole-body visitor: masks, collects the (masked) texts for the blocked check.
struct WholeVisit<'a> {
    policy: &'a Policy,
    masker: Option<&'a Masker>,
    state: &'a mut MaskState,
    texts: Vec<String>,
    changed: bool,
}

impl Visit for WholeVisit<'_> {
    fn text(&mut self, s: &mut String) {
        if let Some(m) = self.masker
            && let Some(x) = encoded::mask(m, s, self.state)
        {
            *s = x;
            self.changed = true;
        }
        if self.policy.blocked.is_some() {
            self.texts.push(s.clone());
        }
    }
    fn signed(&mut self, block: &mut Map<String, Value>) -> Signed {
        let Some(m) = self.masker else {
            return Signed::Keep;
        };
        let text = block
            .get("thinking")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let verdict = thinking_verdict(self.policy, m, text, self.state);
        self.changed |= verdict == Signed::Drop;
        if verdict == Signed::Keep && self.policy.blocked.is_some() {
            self.texts.push(text.to_owned());
        }
        verdict
    }
}

/// One step of a path inside a delta: an object key, or an array item by its `index`
/// field (tool calls), falling back to its position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Item(u64),
}

/// A channel's path inside its delta (empty for Anthropic blocks).
type Path = Vec<Seg>;

/// Where a string sits in one delta (positions, for this event only).
#[derive(Debug, Clone)]
enum At {
    Key(String),
    Pos(usize),
}

/// Every scanned string of a delta: its location now and its channel path.
fn delta_strings(
    m: &Map<String, Value>,
    at: &mut Vec<At>,
    path: &mut Path,
    tool: bool,
    out: &mut Vec<(Vec<At>, Path)>,
) {
    for (k, v) in m {
        at.push(At::Key(k.clone()));
        path.push(Seg::Key(k.clone()));
        let tool = tool || k == "tool_calls" || k == "function_call" || k == "function";
        match v {
            Value::String(_) if !(walk::NO_TEXT.contains(&k.as_str()) || (tool && k == "name")) => {
                out.push((at.clone(), path.clone()));
            }
            Value::Object(inner) => delta_strings(inner, at, path, tool, out),
            Value::Array(items) => {
                for (pos, item) in items.iter().enumerate() {
                    let n = item
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(pos as u64);
                    at.push(At::Pos(pos));
                    path.push(Seg::Item(n));
                    match item {
                        Value::Object(inner) => delta_strings(inner, at, path, tool, out),
                        Value::String(_) => out.push((at.clone(), path.clone())),
                        _ => {}
                    }
                    at.pop();
                    path.pop();
                }
            }
            _ => {}
        }
        at.pop();
        path.pop();
    }
}

fn lookup<'a>(m: &'a mut Map<String, Value>, at: &[At]) -> Option<&'a mut Value> {
    let (At::Key(first), rest) = at.split_first()? else {
        return None;
    };
    let mut v = m.get_mut(first)?;
    for step in rest {
        v = match step {
            At::Key(k) => v.get_mut(k.as_str())?,
            At::Pos(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

/// Appends `text` to the string at `path` in `delta`, creating what is missing (a tool
/// call item gets its `index`).
fn insert_at(delta: &mut Map<String, Value>, path: &[Seg], text: &str) {
    let mut slot: &mut Map<String, Value> = delta;
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut i = 0;
    while i < init.len() {
        let Seg::Key(k) = &init[i] else { return };
        if let Some(Seg::Item(n)) = init.get(i + 1) {
            let list = slot
                .entry(k.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            let Value::Array(items) = list else { return };
            let pos = match items
                .iter()
                .position(|x| x.get("index").and_then(Value::as_u64) == Some(*n))
            {
                Some(p) => p,
                None => {
                    items.push(json!({"index": n}));
                    items.len() - 1
                }
            };
            let Some(Value::Object(item)) = items.get_mut(pos) else {
                return;
            };
            slot = item;
            i += 2;
        } else {
            let next = slot
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            let Value::Object(next) = next else { return };
            slot = next;
            i += 1;
        }
    }
    if let Seg::Key(k) = last {
        match slot.get_mut(k.as_str()) {
            Some(Value::String(s)) => s.push_str(text),
            _ => {
                slot.insert(k.clone(), Value::String(text.to_owned()));
            }
        }
    }
}

/// Sets every choice's non-null `logprobs` to null; returns whether any was removed.
fn drop_logprobs(obj: &mut Map<String, Value>) -> bool {
    let mut dropped = false;
    if let Some(Value::Array(choices)) = obj.get_mut("choices") {
        for c in choices.iter_mut() {
            if let Some(lp) = c.get_mut("logprobs")
                && !lp.is_null()
            {
                *lp = Value::Null;
                dropped = true;
            }
        }
    }
    dropped
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

/// The status a response-side violation stands for in its error body (the real status is
/// already sent): the request side refuses the same policy breach with a 400.
const VIOLATION: u16 = 400;

/// The OpenAI error envelope for a response-side violation.
pub fn error_json(e: &GuardError) -> String {
    let message = e.to_string().replace("the request", "the response");
    ErrorEnvelope::new(VIOLATION, &message)
        .code(Some(e.code()))
        .openai()
        .to_string()
}

#[cfg(test)]
mod tests;
