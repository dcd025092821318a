//! Pure chat-completion logic: reading the request, choosing the reply,
//! approximating tokens, and rendering JSON and SSE bodies.
//!
//! Nothing here does I/O, so every rule the e2e tests rely on is unit-tested
//! in this file.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// The fields of a chat request this upstream acts on. Everything else in
/// the body is accepted and ignored, as a lenient provider would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub stream: bool,
    pub include_usage: bool,
    /// Text of the last `user` message, exactly as received.
    pub last_user_text: Cow<'a, str>,
    /// Characters of message text over all messages, for prompt tokens.
    pub prompt_chars: usize,
}

/// Reads a chat request body. Only a missing or non-string `model` (or a
/// body that is not an object) is an error; a missing `messages` reads as
/// an empty conversation.
pub fn parse_chat(body: &Value) -> Result<ChatRequest<'_>, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::invalid_request("invalid_body", "The request body must be a JSON object.")
    })?;
    let model = required_model(obj)?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let stream = obj.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = stream
        && obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    let prompt_chars = messages
        .iter()
        .map(|m| content_chars(m.get("content")))
        .sum();
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default();
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        last_user_text,
        prompt_chars,
    })
}

/// `model` as a string, or the 400 OpenAI answers when it is absent.
pub fn required_model(obj: &serde_json::Map<String, Value>) -> Result<&str, ApiError> {
    obj.get("model").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid_request(
            "missing_model",
            "You must provide a model parameter (a string).",
        )
    })
}

/// Calls `f` with each text fragment of a message `content`: the string
/// itself, or the `text` of every `{"type":"text"}` part of an array.
fn for_each_text<'a>(content: Option<&'a Value>, mut f: impl FnMut(&'a str)) {
    match content {
        Some(Value::String(s)) => f(s),
        Some(Value::Array(parts)) => {
            for part in parts {
                if part.get("type").and_then(Value::as_str) == Some("text")
                    && let Some(text) = part.get("text").and_then(Value::as_str)
                {
                    f(text);
                }
            }
        }
        _ => {}
    }
}

/// The text of a message `content`; borrowed when it is a plain string.
pub fn content_text(content: Option<&Value>) -> Cow<'_, str> {
    if let Some(Value::String(s)) = content {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    for_each_text(content, |t| out.push_str(t));
    Cow::Owned(out)
}

fn content_chars(content: Option<&Value>) -> usize {
    let mut n = 0;
    for_each_text(content, |t| n += t.chars().count());
    n
}

/// `Some(status)` when the model is `error-<status>` with a 4xx/5xx status:
/// such models answer that error, so fallback paths can be tested.
pub fn simulated_error_status(model: &str) -> Option<axum::http::StatusCode> {
    let code: u16 = model.strip_prefix("error-")?.parse().ok()?;
    let status = axum::http::StatusCode::from_u16(code).ok()?;
    (status.is_client_error() || status.is_server_error()).then_some(status)
}

/// `gzip-*` models answer with a gzip body whatever the request's `accept-encoding` says: a
/// misbehaving upstream, for the gateway's "refuse what it cannot read" check.
pub fn always_gzip(model: &str) -> bool {
    model.starts_with("gzip-")
}

/// `data` as a gzip member of stored (uncompressed) deflate blocks: valid gzip without a
/// compression library (RFC 1952 framing, RFC 1951 block type 00).
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut blocks = data.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected), bit by bit: demo bodies are small.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The assistant's answer: an echo of the last user message for `echo*` and `field-*`
/// models, else a deterministic sentence naming upstream and model.
pub fn reply_text(upstream: &str, model: &str, last_user_text: &str) -> String {
    // `field-*` models echo too, in another field (see `fields`).
    if model.starts_with("echo") || model.starts_with("field-") {
        last_user_text.to_owned()
    } else {
        format!(
            "Hello from the {upstream} demo upstream, answering as {model}. \
             Your last message had {} characters.",
            last_user_text.chars().count()
        )
    }
}

/// The function a `tool-<name>` model calls instead of answering in text, so
/// the gateway's response-side tool policy can be exercised end to end.
pub fn tool_call_name(model: &str) -> Option<&str> {
    model.strip_prefix("tool-").filter(|name| !name.is_empty())
}

/// One function call the assistant makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The JSON-encoded arguments string, as OpenAI sends it.
    pub arguments: String,
}

impl ToolCall {
    /// A call to `name` whose arguments carry the last user message, so a
    /// test controls (and can recognise) every argument byte that reaches it.
    pub fn new(meta: &ChatMeta, name: &str, last_user_text: &str) -> Self {
        let arguments = serde_json::json!({ "input": last_user_text }).to_string();
        Self {
            // Derived from the completion id: unique per response, and stable
            // for the unit tests.
            id: format!("call_{}", meta.id.rsplit('-').next().unwrap_or("0")),
            name: name.to_owned(),
            arguments,
        }
    }
}

/// Demo token approximation: one token per started group of four
/// characters. Never zero for non-empty text, zero for empty text.
pub fn approx_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn from_chars(prompt_chars: usize, completion_chars: usize) -> Self {
        let prompt_tokens = approx_tokens(prompt_chars);
        let completion_tokens = approx_tokens(completion_chars);
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Identity shared by every object of one completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMeta {
    pub id: String,
    pub created: u64,
    /// The model exactly as the client (or the gateway) sent it.
    pub model: String,
}

/// Serialises a value that cannot fail to serialise (plain structs with
/// string keys); the fallback only exists to avoid a panic path.
pub fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"{}"))
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    // `null` when the assistant calls a tool, as OpenAI renders it.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[FullToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct FullToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// A non-streaming `chat.completion` body.
pub fn render_completion(meta: &ChatMeta, reply: &str, usage: Usage) -> Bytes {
    let message = Message {
        role: "assistant",
        content: Some(reply),
        tool_calls: None,
    };
    render_message(meta, message, "stop", usage)
}

/// A non-streaming `chat.completion` body whose assistant message calls one tool.
pub fn render_tool_completion(meta: &ChatMeta, call: &ToolCall, usage: Usage) -> Bytes {
    let message = Message {
        role: "assistant",
        content: None,
        tool_calls: Some([FullToolCall {
            id: &call.id,
            kind: "function",
            function: FunctionCall {
                name: Some(&call.name),
                arguments: &call.arguments,
            },
        }]),
    };
    render_message(meta, message, "tool_calls", usage)
}

fn render_message(
    meta: &ChatMeta,
    message: Message<'_>,
    finish_reason: &'static str,
    usage: Usage,
) -> Bytes {
    json_bytes(&Completion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: [CompletionChoice {
            index: 0,
            message,
            logprobs: None,
            finish_reason,
        }],
        usage,
    })
}

/// Splits `text` into pieces of `chunk_chars` characters (the last may be
/// shorter), never inside a multi-byte character. `0` is treated as `1`.
pub fn split_chunks(text: &str, chunk_chars: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .nth(chunk_chars.max(1))
            .map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    // Absent without include_usage; `Some(None)` renders `"usage": null` on
    // every chunk but the last, as OpenAI does with include_usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

/// A streamed piece of a tool call: the first carries id, type and name
/// with empty arguments; later ones only an arguments fragment.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionCall<'a>,
}

/// Frames one SSE event: `data: <payload>\n\n`.
fn sse_event<T: Serialize>(payload: &T) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, payload).is_err() {
        buf.truncate(6);
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Role,
    Content,
    Finish,
    Usage,
    Done,
    Finished,
}

/// The SSE events of one streamed completion, rendered one at a time so a
/// delayed stream never builds its whole body up front.
///
/// Order: role chunk, one chunk per piece of `chunk_chars` characters, a
/// chunk with an empty delta and `finish_reason: "stop"`, with
/// `include_usage` a `choices: []` chunk carrying usage, then `[DONE]`.
/// For a tool call ([`SseChunks::tool_call`]) the role chunk also names the
/// call, the pieces are `function.arguments` fragments and the finish reason
/// is `"tool_calls"`, as OpenAI streams them.
pub struct SseChunks {
    meta: ChatMeta,
    /// The text streamed in pieces: the answer, or a tool call's arguments.
    reply: String,
    tool: Option<(String, String)>,
    pos: usize,
    chunk_chars: usize,
    usage: Usage,
    include_usage: bool,
    stage: Stage,
}

impl SseChunks {
    pub fn new(
        meta: ChatMeta,
        reply: String,
        chunk_chars: usize,
        usage: Usage,
        include_usage: bool,
    ) -> Self {
        Self {
            meta,
            reply,
            tool: None,
            pos: 0,
            chunk_chars,
            usage,
            include_usage,
            stage: Stage::Role,
        }
    }

    /// The events of a response that calls one tool instead of answering.
    pub fn tool_call(
        meta: ChatMeta,
        call: ToolCall,
        chunk_chars: usize,
        usage: Usage,
        include_usage: bool,
    ) -> Self {
        let mut chunks = Self::new(meta, call.arguments, chunk_chars, usage, include_usage);
        chunks.tool = Some((call.id, call.name));
        chunks
    }

    fn chunk(&self, choices: &[ChunkChoice<'_>], usage: Option<Usage>) -> Bytes {
        sse_event(&Chunk {
            id: &self.meta.id,
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: &self.meta.model,
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }

    fn choice_chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        self.chunk(
            &[ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        )
    }
}

impl Iterator for SseChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.stage {
                Stage::Role => {
                    self.stage = Stage::Content;
                    let delta = match &self.tool {
                        None => Delta {
                            role: Some("assistant"),
                            content: Some(""),
                            tool_calls: None,
                        },
                        Some((id, name)) => Delta {
                            role: Some("assistant"),
                            content: None,
                            tool_calls: Some([ToolCallDelta {
                                index: 0,
                                id: Some(id),
                                kind: Some("function"),
                                function: FunctionCall {
                                    name: Some(name),
                                    arguments: "",
                                },
                            }]),
                        },
                    };
                    return Some(self.choice_chunk(delta, None));
                }
                Stage::Content => {
                    let rest = &self.reply[self.pos..];
                    let Some(piece) = split_chunks(rest, self.chunk_chars).next() else {
                        self.stage = Stage::Finish;
                        continue;
                    };
                    let delta = if self.tool.is_some() {
                        Delta {
                            tool_calls: Some([ToolCallDelta {
                                index: 0,
                                id: None,
                                kind: None,
                                function: FunctionCall {
                                    name: None,
                                    arguments: piece,
                                },
                            }]),
                            ..Delta::default()
                        }
                    } else {
                        Delta {
                            content: Some(piece),
                            ..Delta::default()
                        }
                    };
                    let event = self.choice_chunk(delta, None);
                    self.pos += piece.len();
                    return Some(event);
                }
                Stage::Finish => {
                    self.stage = if self.include_usage {
                        Stage::Usage
                    } else {
                        Stage::Done
                    };
                    let reason = if self.tool.is_some() {
                        "tool_calls"
                    } else {
                        "stop"
                    };
                    return Some(self.choice_chunk(Delta::default(), Some(reason)));
                }
                Stage::Usage => {
                    self.stage = Stage::Done;
                    return Some(self.chunk(&[], Some(self.usage)));
                }
                Stage::Done => {
                    self.stage = Stage::Finished;
                    return Some(Bytes::from_static(SSE_DONE));
                }
                Stage::Finished => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_stored_frames_and_checksums() {
        assert_eq!(crc32(b"hello"), 0x3610_a686);
        let g = gzip_stored(b"hello");
        assert_eq!(&g[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        assert_eq!(&g[10..15], &[1, 5, 0, 0xfa, 0xff]);
        assert_eq!(&g[15..20], b"hello");
        assert_eq!(&g[20..], &[0x86, 0xa6, 0x10, 0x36, 5, 0, 0, 0]);
    }
    use serde_json::json;

    fn meta() -> ChatMeta {
        ChatMeta {
            id: "chatcmpl-demo-7".into(),
            created: 1_700_000_000,
            model: "echo-alias".into(),
        }
    }

    #[test]
    fn split_ascii_and_remainder() {
        let pieces: Vec<_> = split_chunks("abcdefgh", 3).collect();
        assert_eq!(pieces, ["abc", "def", "gh"]);
        assert_eq!(split_chunks("", 3).count(), 0);
        assert_eq!(split_chunks("abc", 0).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(split_chunks("abc", 100).collect::<Vec<_>>(), ["abc"]);
    }

    #[test]
    fn split_multibyte_on_char_boundaries() {
        let text = "안녕하세요 👋🏽 café";
        let pieces: Vec<_> = split_chunks(text, 2).collect();
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces[0], "안녕");
        assert_eq!(pieces[1], "하세");
        assert!(pieces.iter().all(|p| p.chars().count() <= 2));
        assert!(
            pieces
                .iter()
                .take(pieces.len() - 1)
                .all(|p| p.chars().count() == 2)
        );
        let emoji: Vec<_> = split_chunks("👋🏽👍", 1).collect();
        assert_eq!(emoji, ["👋", "🏽", "👍"]);
    }

    #[test]
    fn echo_text_from_string_content() {
        let body = json!({
            "model": "echo",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "  last 안녕 \n"},
            ]
        });
        let req = parse_chat(&body).unwrap();
        assert_eq!(req.last_user_text, "  last 안녕 \n");
        assert!(matches!(req.last_user_text, Cow::Borrowed(_)));
        assert_eq!(
            reply_text("alpha", req.model, &req.last_user_text),
            "  last 안녕 \n"
        );
        assert_eq!(req.prompt_chars, 8 + 5 + 2 + 11);
        assert!(!req.stream);
    }

    #[test]
    fn echo_text_from_multipart_content() {
        let body = json!({
            "model": "echo-2",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Hello, "},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                    {"type": "text", "text": "world"},
                    {"type": "text"},
                ]},
                {"role": "assistant", "content": null},
            ]
        });
        let req = parse_chat(&body).unwrap();
        assert_eq!(req.last_user_text, "Hello, world");
        assert_eq!(req.prompt_chars, 12);
        assert_eq!(
            reply_text("a", req.model, &req.last_user_text),
            "Hello, world"
        );
    }

    #[test]
    fn canned_reply_counts_chars_not_bytes() {
        assert_eq!(
            reply_text("alpha", "demo-small-2025", "안녕"),
            "Hello from the alpha demo upstream, answering as demo-small-2025. \
             Your last message had 2 characters."
        );
    }

    #[test]
    fn lenient_parse_and_model_errors() {
        let body = json!({"model": "m"});
        let req = parse_chat(&body).unwrap();
        assert_eq!(req.last_user_text, "");
        assert_eq!(req.prompt_chars, 0);
        for bad in [json!({}), json!({"model": 3}), json!([1]), json!("x")] {
            let err = parse_chat(&bad).unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{bad}");
        }
        let body = json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true}
        });
        let req = parse_chat(&body).unwrap();
        assert!(req.stream && req.include_usage);
        // include_usage means nothing without stream.
        let body = json!({
            "model": "m", "stream_options": {"include_usage": true}
        });
        let req = parse_chat(&body).unwrap();
        assert!(!req.stream && !req.include_usage);
    }

    #[test]
    fn simulated_error_models() {
        assert_eq!(
            simulated_error_status("error-503").map(|s| s.as_u16()),
            Some(503)
        );
        assert_eq!(
            simulated_error_status("error-429").map(|s| s.as_u16()),
            Some(429)
        );
        assert_eq!(simulated_error_status("error-200"), None);
        assert_eq!(simulated_error_status("error-abc"), None);
        assert_eq!(simulated_error_status("error-99999"), None);
        assert_eq!(simulated_error_status("echo"), None);
    }

    #[test]
    fn token_approximation() {
        assert_eq!(approx_tokens(0), 0);
        assert_eq!(approx_tokens(1), 1);
        assert_eq!(approx_tokens(4), 1);
        assert_eq!(approx_tokens(5), 2);
        assert_eq!(
            Usage::from_chars(9, 1),
            Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
                total_tokens: 4
            }
        );
    }

    #[test]
    fn completion_json_shape() {
        let body = render_completion(&meta(), "hi", Usage::from_chars(4, 2));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-demo-7",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "echo-alias",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            })
        );
    }

    /// Parses framed events back into JSON payloads, checking the framing.
    fn events(chunks: SseChunks) -> Vec<String> {
        chunks
            .map(|b| {
                let s = std::str::from_utf8(&b).unwrap().to_owned();
                assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s:?}");
                assert_eq!(s.matches('\n').count(), 2, "one line per event: {s:?}");
                s["data: ".len()..s.len() - 2].to_owned()
            })
            .collect()
    }

    #[test]
    fn sse_without_usage() {
        let usage = Usage::from_chars(3, 5);
        let evs = events(SseChunks::new(meta(), "héllo".into(), 2, usage, false));
        assert_eq!(evs.len(), 1 + 3 + 1 + 1);
        assert_eq!(evs.last().unwrap(), "[DONE]");
        let json: Vec<Value> = evs[..evs.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        for v in &json {
            assert_eq!(v["object"], "chat.completion.chunk");
            assert_eq!(v["id"], "chatcmpl-demo-7");
            assert_eq!(v["model"], "echo-alias");
            assert!(v.get("usage").is_none());
        }
        assert_eq!(
            json[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text: String = json[1..4]
            .iter()
            .map(|v| v["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "héllo");
        assert_eq!(json[1]["choices"][0]["delta"], json!({"content": "hé"}));
        assert_eq!(json[1]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(json[4]["choices"][0]["delta"], json!({}));
        assert_eq!(json[4]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn sse_with_include_usage() {
        let usage = Usage::from_chars(3, 2);
        let evs = events(SseChunks::new(meta(), "ok".into(), 3, usage, true));
        // role, one content piece, finish, usage, [DONE]
        assert_eq!(evs.len(), 5);
        assert_eq!(evs[4], "[DONE]");
        let json: Vec<Value> = evs[..4]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        for v in &json[..3] {
            assert_eq!(v.get("usage"), Some(&Value::Null));
            assert_eq!(v["choices"].as_array().unwrap().len(), 1);
        }
        assert_eq!(json[3]["choices"], json!([]));
        assert_eq!(
            json[3]["usage"],
            json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
        );
    }

    #[test]
    fn sse_empty_reply_still_frames_role_finish_done() {
        let evs = events(SseChunks::new(
            meta(),
            String::new(),
            3,
            Usage::from_chars(0, 0),
            false,
        ));
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[2], "[DONE]");
    }

    #[test]
    fn tool_models_name_the_function() {
        assert_eq!(tool_call_name("tool-shell_exec"), Some("shell_exec"));
        assert_eq!(tool_call_name("tool-get_weather"), Some("get_weather"));
        assert_eq!(tool_call_name("tool-"), None);
        assert_eq!(tool_call_name("echo"), None);
        assert_eq!(tool_call_name("my-tool-x"), None);
    }

    #[test]
    fn tool_completion_json_shape() {
        let call = ToolCall::new(&meta(), "get_weather", "Seoul \"now\"");
        assert_eq!(call.id, "call_7");
        let body = render_tool_completion(&meta(), &call, Usage::from_chars(4, 2));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["choices"],
            json!([{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_7",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": "{\"input\":\"Seoul \\\"now\\\"\"}"
                        }
                    }]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }])
        );
        let args: Value = serde_json::from_str(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, json!({"input": "Seoul \"now\""}));
    }

    #[test]
    fn sse_tool_call_streams_head_then_argument_pieces() {
        let call = ToolCall::new(&meta(), "shell_exec", "rm -rf /");
        let arguments = call.arguments.clone();
        let evs = events(SseChunks::tool_call(
            meta(),
            call,
            4,
            Usage::from_chars(3, 5),
            true,
        ));
        assert_eq!(evs.last().unwrap(), "[DONE]");
        let json: Vec<Value> = evs[..evs.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(
            json[0]["choices"][0]["delta"],
            json!({"role": "assistant", "tool_calls": [{
                "index": 0, "id": "call_7", "type": "function",
                "function": {"name": "shell_exec", "arguments": ""}
            }]})
        );
        // role/head, ceil(len/4) argument pieces, finish, usage.
        let pieces = arguments.len().div_ceil(4);
        assert_eq!(json.len(), 1 + pieces + 2);
        let mut joined = String::new();
        for v in &json[1..=pieces] {
            let delta = &v["choices"][0]["delta"];
            let calls = delta["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1);
            // Later pieces carry only the index and an arguments fragment.
            assert_eq!(calls[0].as_object().unwrap().len(), 2, "{delta}");
            assert_eq!(calls[0]["index"], 0);
            assert_eq!(calls[0]["function"].as_object().unwrap().len(), 1);
            let piece = calls[0]["function"]["arguments"].as_str().unwrap();
            assert!(piece.chars().count() <= 4 && !piece.is_empty());
            assert!(delta.get("content").is_none() && delta.get("role").is_none());
            joined.push_str(piece);
        }
        assert_eq!(joined, arguments);
        let finish = &json[pieces + 1]["choices"][0];
        assert_eq!(finish["delta"], json!({}));
        assert_eq!(finish["finish_reason"], "tool_calls");
        assert_eq!(json[pieces + 2]["choices"], json!([]));
        assert!(json[pieces + 2]["usage"].is_object());
    }
}
