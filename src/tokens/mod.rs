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

use crate::llm::body::Body;
use crate::llm::json::{Kind, Tree};
use std::borrow::Cow;

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

/// What an exact prompt count tokenizes, taken off the request view with the stages' edits
/// (masked text, removed tools): the texts, plus the tokens that need no tokenizer (chat
/// framing, images, token ids). Taking it copies text but parses nothing; counting it runs
/// the tokenizer, only when a count is needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptParts {
    texts: Vec<String>,
    fixed: u64,
}

impl PromptParts {
    /// The parts of a read body (`None` when it is not a chat or embeddings shape).
    pub fn of(body: &Body) -> Option<PromptParts> {
        let view = body.view()?;
        let (t, raw) = (&view.tree, body.raw());
        let mut p = PromptParts::default();
        let opt_text = |i: Option<usize>| -> Option<Option<String>> {
            match i {
                None => Some(None),
                Some(i) if t.node(i).kind == Kind::Null => Some(None),
                Some(i) => body.string(i).map(|s| Some(s.into_owned())),
            }
        };
        if let Some(list) = view.messages {
            for m in t.children(list).filter(|&m| !body.gone(m)) {
                p.fixed += 3;
                if let Some(role) = opt_text(t.get(m, "role", raw))? {
                    p.texts.push(role);
                }
                if let Some(name) = opt_text(t.get(m, "name", raw))? {
                    p.fixed += 1;
                    p.texts.push(name);
                }
                if let Some(c) = t.get(m, "content", raw) {
                    p.content(body, c);
                }
                if let Some(calls) = t.get(m, "tool_calls", raw)
                    && t.node(calls).kind != Kind::Null
                    && let Some(json) = body.current_of(calls)
                {
                    p.texts.push(String::from_utf8_lossy(&json).into_owned());
                }
            }
            p.fixed += 3;
        }
        if let Some(input) = t.get(Tree::ROOT, "input", raw) {
            // Embeddings input: a string, a list of strings, of token ids, or of id lists.
            match t.node(input).kind {
                Kind::String => p.texts.extend(body.string(input).map(Cow::into_owned)),
                Kind::Array => {
                    for item in t.children(input) {
                        match t.node(item).kind {
                            Kind::String => p.texts.extend(body.string(item).map(Cow::into_owned)),
                            Kind::Number => p.fixed += 1,
                            Kind::Array => p.fixed += t.children(item).count() as u64,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        for key in ["tools", "functions"] {
            if let Some(defs) = t.get(Tree::ROOT, key, raw)
                && t.node(defs).kind != Kind::Null
                && let Some(json) = body.current_of(defs)
            {
                p.texts.push(String::from_utf8_lossy(&json).into_owned());
            }
        }
        Some(p)
    }

    /// Content: a string, or parts (text counted, image parts without text as
    /// [`IMAGE_TOKENS`]); a part list of the wrong shape counts nothing.
    fn content(&mut self, body: &Body, c: usize) {
        let Some((t, raw)) = body.tree() else { return };
        match t.node(c).kind {
            Kind::String => self.texts.extend(body.string(c).map(Cow::into_owned)),
            Kind::Array => {
                let mut texts = Vec::new();
                let mut images = 0;
                for part in t.children(c).filter(|&p| !body.gone(p)) {
                    if t.node(part).kind != Kind::Object {
                        return;
                    }
                    let kind = match t.get(part, "type", raw) {
                        None => None,
                        Some(k) if t.node(k).kind == Kind::Null => None,
                        Some(k) => match body.string(k) {
                            Some(k) => Some(k),
                            None => return,
                        },
                    };
                    match t.get(part, "text", raw) {
                        Some(x) if t.node(x).kind != Kind::Null => match body.string(x) {
                            Some(text) => texts.push(text.into_owned()),
                            None => return,
                        },
                        _ => {
                            if matches!(kind.as_deref(), Some("image_url" | "input_image")) {
                                images += 1;
                            }
                        }
                    }
                }
                self.texts.extend(texts);
                self.fixed += images * IMAGE_TOKENS;
            }
            _ => {}
        }
    }

    /// The exact count with `enc`.
    pub fn count(&self, enc: Encoding) -> u64 {
        self.fixed + self.texts.iter().map(|t| enc.count(t)).sum::<u64>()
    }
}

/// Exact prompt tokens of a chat-completions or embeddings body. `None` when the body is
/// not JSON of that shape (the caller falls back to [`estimate`]). Reads the body; the
/// gateway counts a body it read already with [`PromptParts`].
pub fn count_prompt(enc: Encoding, body: &[u8]) -> Option<u64> {
    let mut b = Body::new(body.to_vec());
    b.read().ok()?;
    PromptParts::of(&b).map(|p| p.count(enc))
}

#[cfg(test)]
mod tests;
