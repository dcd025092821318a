//! Token counting for admission and for responses whose provider reports no usage.
//!
//! Two ways to count a prompt:
//! - [`estimate`] (default): the request body's byte length. It is an **upper bound** for
//!   the OpenAI BPE encodings (cl100k_base, o200k_base): every token covers at least one
//!   byte of UTF-8 text, and the JSON framing of a chat message (`{"role":"user",
//!   "content":""}`, 28 bytes) is longer than the 3-4 tokens the chat format adds per
//!   message. O(1): no tokenizer on the request path. Typical English prompts use about a
//!   quarter of it; the reservation is reconciled with the real usage at the end.
//! - [`count_prompt`] (per-route/model option `exact`, and for responses without usage):
//!   tiktoken-rs over every message text with OpenAI's chat framing (3 tokens per message,
//!   1 per `name`, 3 to prime the reply). Exact for text-only chat prompts.
//!
//! Known limits: images, audio and tool definitions are not tokenized exactly — an image
//! part is counted as 85 tokens (OpenAI's low-detail figure) and tool definitions by the
//! tokens of their JSON. Images can cost more than their bytes, so the byte estimate is no
//! bound for image prompts; reconciliation with the provider's usage corrects the charge.
//! Non-OpenAI models are counted with o200k_base, an approximation.

use serde::Deserialize;
use serde_json::value::RawValue;

/// BPE encodings tollgate can count exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-5, o-series.
    O200k,
    /// GPT-4, GPT-3.5, text-embedding-3.
    Cl100k,
}

/// Tokens an image part is counted as (OpenAI's low-detail cost).
pub const IMAGE_TOKENS: u64 = 85;

impl Encoding {
    /// The encoding a model name uses (o200k for names it does not know).
    pub fn for_model(model: &str) -> Encoding {
        let m = model.rsplit('/').next().unwrap_or(model);
        let cl100k = ["gpt-4-", "gpt-3.5", "text-embedding-", "gpt-35"];
        if m == "gpt-4" || cl100k.iter().any(|p| m.starts_with(p)) && !m.starts_with("gpt-4-o") {
            Encoding::Cl100k
        } else {
            Encoding::O200k
        }
    }

    fn bpe(self) -> &'static tiktoken_rs::CoreBPE {
        match self {
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Exact token count of `text` (special-token text counted as ordinary text, as
    /// OpenAI does for user content).
    pub fn count(self, text: &str) -> u64 {
        self.bpe().encode_ordinary(text).len() as u64
    }
}

/// The cheap upper-bound estimate of a request's prompt tokens: its body length.
pub fn estimate(body: &[u8]) -> u64 {
    body.len() as u64
}

#[derive(Deserialize)]
struct Prompt<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

/// Exact prompt tokens of a chat-completions or embeddings body. `None` when the body is
/// not JSON of that shape (the caller falls back to [`estimate`]).
pub fn count_prompt(enc: Encoding, body: &[u8]) -> Option<u64> {
    let p: Prompt<'_> = serde_json::from_slice(body).ok()?;
    let mut total = 0u64;
    if let Some(messages) = &p.messages {
        for m in messages {
            total += 3;
            if let Some(role) = &m.role {
                total += enc.count(role);
            }
            if let Some(name) = &m.name {
                total += 1 + enc.count(name);
            }
            if let Some(c) = m.content {
                total += content_tokens(enc, c);
            }
            if let Some(calls) = m.tool_calls {
                total += enc.count(calls.get());
            }
        }
        total += 3;
    }
    if let Some(input) = p.input {
        total += input_tokens(enc, input);
    }
    for defs in [p.tools, p.functions].into_iter().flatten() {
        total += enc.count(defs.get());
    }
    Some(total)
}

fn content_tokens(enc: Encoding, content: &RawValue) -> u64 {
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(borrow, default, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        text: Option<String>,
    }
    match content.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(content.get())
            .map(|s| enc.count(&s))
            .unwrap_or_default(),
        Some(b'[') => serde_json::from_str::<Vec<Part<'_>>>(content.get())
            .map(|parts| {
                parts
                    .iter()
                    .map(|p| match (&p.text, p.kind.as_deref()) {
                        (Some(t), _) => enc.count(t),
                        (None, Some("image_url" | "input_image")) => IMAGE_TOKENS,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or_default(),
        _ => 0,
    }
}

fn input_tokens(enc: Encoding, input: &RawValue) -> u64 {
    // Embeddings input: a string, a list of strings, a list of token ids, or a list of those.
    match serde_json::from_str::<serde_json::Value>(input.get()) {
        Ok(serde_json::Value::String(s)) => enc.count(&s),
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => enc.count(s),
                serde_json::Value::Number(_) => 1,
                serde_json::Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
