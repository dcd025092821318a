//! Token usage from provider responses: streamed (SSE events) and whole JSON bodies.
//!
//! Shapes read (only the fields named here; everything else is ignored):
//! - OpenAI chat chunks: `usage {prompt_tokens, completion_tokens,
//!   prompt_tokens_details.cached_tokens, completion_tokens_details.reasoning_tokens}` on the
//!   final chunk (with `stream_options.include_usage`); text in `choices[].delta.content`,
//!   `reasoning_content`/`reasoning`, `refusal` and `tool_calls[].function.arguments`.
//! - Anthropic messages: `message_start.message.usage {input_tokens,
//!   cache_read_input_tokens, cache_creation_input_tokens, output_tokens}`,
//!   `message_delta.usage.output_tokens` (cumulative), text in `content_block_delta.delta
//!   {text | partial_json | thinking}`, and `error` events.
//! - Whole JSON bodies: the same `usage` objects (chat, embeddings, Anthropic).
//!
//! When the provider reports no final usage (stream cut, error mid-stream, no
//! include_usage), output tokens are the exact count of the text delivered to the client,
//! and input tokens fall back to what the caller counted for the prompt. Counting text needs
//! it kept: at most [`MAX_TEXT`] bytes per response, beyond which the remainder is counted as
//! one token per byte (the documented upper bound).

use super::sse::{self, Event};
use serde::Deserialize;
use serde_json::Value;

/// Largest delivered text kept for counting.
pub const MAX_TEXT: usize = 4 << 20;

/// Token usage of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached included.
    pub input: u64,
    /// Cached part of `input`.
    pub cached_input: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Reasoning part of `output`.
    pub reasoning: u64,
    /// The provider reported the figures (false: counted by tollgate).
    pub reported: bool,
}

impl Usage {
    /// Input + output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// What to do with an observed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Keep,
    /// It only carries usage the client did not ask for: drop it.
    UsageOnly,
}

/// Reads usage from a streamed response, event by event.
#[derive(Debug, Clone, Default)]
pub struct StreamMeter {
    input: Option<u64>,
    cached: u64,
    output_reported: Option<u64>,
    reasoning: u64,
    final_seen: bool,
    text: String,
    overflow_bytes: u64,
    errored: bool,
    model: Option<String>,
}

/// What a response translator saw since it last reported: the facts usage metering needs,
/// so a translated stream is metered without reading the events the translator built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Text delivered to the client (content and tool-call arguments), for counting when
    /// the provider reports no final usage; kept up to [`MAX_TEXT`] per report.
    pub text: String,
    /// Bytes of delivered text beyond [`MAX_TEXT`] (counted as one token per byte).
    pub overflow_bytes: u64,
    /// The latest usage the provider reported.
    pub usage: Option<Reported>,
    /// The model the response names.
    pub model: Option<String>,
}

/// Usage figures a provider reported, in OpenAI's terms (input includes cached, output
/// includes reasoning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Input tokens, when reported.
    pub input: Option<u64>,
    /// Cached part of the input.
    pub cached: u64,
    /// Output tokens, when reported.
    pub output: Option<u64>,
    /// Reasoning part of the output.
    pub reasoning: u64,
    /// The final figure (false: provisional, e.g. Anthropic's `message_start`).
    pub is_final: bool,
}

impl Report {
    /// Records delivered text.
    pub fn deliver(&mut self, s: &str) {
        if self.text.len().saturating_add(s.len()) <= MAX_TEXT {
            self.text.push_str(s);
        } else {
            self.overflow_bytes += s.len() as u64;
        }
    }

    /// Records the model the response names (the first one sticks).
    pub fn name_model(&mut self, model: &str) {
        if self.model.is_none() {
            self.model = plausible_model(model);
        }
    }
}

/// Longest response model name kept (it reaches audit lines and spans).
pub const MAX_MODEL_LEN: usize = 256;

/// The model a response names, when it is a plausible name: at most [`MAX_MODEL_LEN`] bytes,
/// no control characters (an upstream's string reaches audit lines and spans).
pub fn plausible_model(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= MAX_MODEL_LEN && !s.chars().any(char::is_control))
        .then(|| s.to_owned())
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Value>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    model: Option<String>,
}

fn num(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

impl StreamMeter {
    /// A meter with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    fn keep_text(&mut self, s: &str) {
        if self.text.len() + s.len() <= MAX_TEXT {
            self.text.push_str(s);
        } else {
            self.overflow_bytes += s.len() as u64;
        }
    }

    fn openai_usage(&mut self, u: &Value) {
        if let Some(p) = num(u, &["prompt_tokens"]) {
            self.input = Some(p);
        }
        self.cached = num(u, &["prompt_tokens_details", "cached_tokens"]).unwrap_or(self.cached);
        if let Some(c) = num(u, &["completion_tokens"]) {
            self.output_reported = Some(c);
            self.final_seen = true;
        }
        self.reasoning =
            num(u, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(self.reasoning);
    }

    fn anthropic_usage(&mut self, u: &Value, is_final: bool) {
        let read = num(u, &["cache_read_input_tokens"]);
        let created = num(u, &["cache_creation_input_tokens"]).unwrap_or(0);
        if let Some(i) = num(u, &["input_tokens"]) {
            self.input = Some(i.saturating_add(read.unwrap_or(0)).saturating_add(created));
            if let Some(r) = read {
                self.cached = r;
            }
        }
        if let Some(o) = num(u, &["output_tokens"]) {
            self.output_reported = Some(o);
            self.final_seen |= is_final;
        }
    }

    /// Takes a translator's report instead of reading events (see [`Report`]).
    pub fn apply(&mut self, r: Report) {
        self.keep_text(&r.text);
        self.overflow_bytes = self.overflow_bytes.saturating_add(r.overflow_bytes);
        if self.model.is_none() {
            self.model = r.model;
        }
        if let Some(u) = r.usage {
            if let Some(i) = u.input {
                self.input = Some(i);
            }
            self.cached = u.cached;
            if let Some(o) = u.output {
                self.output_reported = Some(o);
                self.final_seen |= u.is_final;
            }
            self.reasoning = u.reasoning;
        }
    }

    /// Observes one event. Reads the JSON tree another stage of the pipeline parsed, when
    /// there is one; else parses only the fields it reads (no tree).
    pub fn observe(&mut self, ev: &Event) -> Verdict {
        #[cfg(test)]
        OBSERVED.with(|c| c.set(c.get() + 1));
        let f = match ev.fields() {
            Ok(f) => f,
            Err(_) => {
                // Oversized: forwarded raw, counted as one token per byte.
                self.overflow_bytes += ev.raw().len() as u64;
                return Verdict::Keep;
            }
        };
        let data = f.data.as_deref().unwrap_or_default().trim();
        if data.is_empty() || data == "[DONE]" || !data.starts_with('{') {
            return Verdict::Keep;
        }
        let chunk = match ev.parsed_json() {
            Some(tree) => tree.and_then(|v| Chunk::deserialize(v).ok()),
            None => sse::json::<Chunk<'_>>(data).ok(),
        };
        match chunk {
            Some(chunk) => self.chunk(chunk, f.event.as_deref()),
            None => Verdict::Keep,
        }
    }

    fn chunk(&mut self, chunk: Chunk<'_>, event: Option<&str>) -> Verdict {
        let kind = chunk.kind.or(event);
        if self.model.is_none() {
            // OpenAI chunks name it at the top; Anthropic's message_start in its message.
            let named = chunk
                .model
                .as_deref()
                .or_else(|| chunk.message.as_ref().and_then(|m| m.model.as_deref()));
            self.model = named.and_then(plausible_model);
        }
        match kind {
            Some("message_start") => {
                if let Some(u) = chunk.message.as_ref().and_then(|m| m.usage.as_ref()) {
                    self.anthropic_usage(u, false);
                }
                return Verdict::Keep;
            }
            Some("message_delta") => {
                if let Some(u) = &chunk.usage {
                    self.anthropic_usage(u, true);
                }
                return Verdict::Keep;
            }
            Some("content_block_delta") => {
                if let Some(d) = &chunk.delta {
                    for f in ["text", "partial_json", "thinking"] {
                        if let Some(s) = d.get(f).and_then(Value::as_str) {
                            self.keep_text(s);
                        }
                    }
                }
                return Verdict::Keep;
            }
            Some("error") => {
                self.errored = true;
                return Verdict::Keep;
            }
            _ => {}
        }
        if chunk.error.is_some() {
            self.errored = true;
        }
        let choices = chunk.choices.unwrap_or_default();
        for c in &choices {
            let Some(d) = &c.delta else { continue };
            for f in ["content", "reasoning_content", "reasoning", "refusal"] {
                if let Some(s) = d.get(f).and_then(Value::as_str) {
                    self.keep_text(s);
                }
            }
            if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    if let Some(a) = call
                        .get("function")
                        .and_then(|f| f.get("arguments"))
                        .and_then(Value::as_str)
                    {
                        self.keep_text(a);
                    }
                }
            }
        }
        match chunk.usage.as_ref().filter(|u| !u.is_null()) {
            Some(u) => {
                self.openai_usage(u);
                if choices.is_empty() {
                    Verdict::UsageOnly
                } else {
                    Verdict::Keep
                }
            }
            None => Verdict::Keep,
        }
    }

    /// The model the response named (first event that names a plausible one).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether an error event was seen.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// Whether the provider's final usage was seen.
    pub fn reported(&self) -> bool {
        self.final_seen
    }

    /// The usage: reported figures when complete, else counted from the delivered text.
    /// `count` tokenizes delivered text (the caller picks the model's encoding, so shapes
    /// stay below token counting); `prompt` supplies input tokens when the provider
    /// reported none.
    pub fn finish(&self, count: impl FnOnce(&str) -> u64, prompt: impl FnOnce() -> u64) -> Usage {
        let input = self.input.unwrap_or_else(prompt);
        let output = match (self.final_seen, self.output_reported) {
            (true, Some(o)) => o,
            // Anthropic's message_start reports a provisional output count: never charge
            // less than it.
            (_, o) => (count(&self.text).saturating_add(self.overflow_bytes)).max(o.unwrap_or(0)),
        };
        Usage {
            input,
            cached_input: self.cached.min(input),
            output,
            reasoning: self.reasoning.min(output),
            reported: self.final_seen && self.input.is_some(),
        }
    }
}

#[cfg(test)]
thread_local! {
    static OBSERVED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Events [`StreamMeter::observe`] read on this thread since the last call (tests prove
/// by this count that a translated stream is metered from its translator's report).
#[cfg(test)]
pub fn observed() -> u64 {
    OBSERVED.with(|c| c.replace(0))
}

/// Usage from a whole JSON response body, if it reports one.
pub fn from_json(body: &[u8]) -> Option<Usage> {
    read_json(body).0
}

/// Usage and the response's model from a whole JSON response body, in one parse.
pub fn read_json(body: &[u8]) -> (Option<Usage>, Option<String>) {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        usage: Option<Value>,
        #[serde(default)]
        model: Option<String>,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return (None, None);
    };
    let model = b.model.as_deref().and_then(plausible_model);
    (b.usage.and_then(|u| usage_of(&u)), model)
}

fn usage_of(u: &Value) -> Option<Usage> {
    let mut m = StreamMeter::new();
    if u.get("prompt_tokens").is_some() {
        m.openai_usage(u);
        // Embeddings report no completion tokens.
        m.output_reported.get_or_insert(0);
    } else if u.get("input_tokens").is_some() {
        m.anthropic_usage(u, true);
    } else {
        return None;
    }
    let input = m.input?;
    let output = m.output_reported.unwrap_or(0);
    Some(Usage {
        input,
        cached_input: m.cached.min(input),
        output,
        reasoning: m.reasoning.min(output),
        reported: true,
    })
}

#[cfg(test)]
mod tests;
