//! The OpenAI side of the cloud translators (Bedrock, Vertex/Gemini): reading an OpenAI
//! chat request into plain parts, and writing OpenAI completions, stream chunks and error
//! envelopes from plain parts.
//!
//! Invariants: nothing here panics on any input; every chunk written is one complete
//! `data: {...}\n\n` SSE event; ids and `created` come from the caller, so output is
//! deterministic (golden fixtures compare it byte for byte).
//! Known limits: only `data:` URLs can be turned into image bytes (the clouds here take
//! inline bytes, and tollgate does no outbound fetches on the request path).

use crate::llm::error_envelope::ErrorEnvelope;
use crate::llm::sse::Event;
use crate::llm::usage::{Report, Reported};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The client's chat request cannot be expressed in the provider's dialect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// Not JSON, or not the chat shape.
    #[error("the request body is not a valid chat completion request: {0}")]
    Shape(String),
    /// A field the provider cannot honour.
    #[error("{message}")]
    Unsupported {
        /// What and why.
        message: String,
        /// The OpenAI parameter at fault.
        param: &'static str,
    },
}

impl RequestError {
    /// The offending parameter, when known.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            RequestError::Shape(_) => None,
            RequestError::Unsupported { param, .. } => Some(param),
        }
    }
}

fn unsupported(message: impl Into<String>, param: &'static str) -> RequestError {
    RequestError::Unsupported {
        message: message.into(),
        param,
    }
}

/// One piece of message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image as bytes.
    Image {
        /// e.g. `image/png`.
        media_type: String,
        /// Decoded bytes.
        data: Vec<u8>,
    },
}

/// An assistant's tool call, as the client sent it back in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments, parsed (text that is not JSON is refused when reading the request).
    pub arguments: Value,
}

/// One message of the conversation, roles normalised.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `system` or `developer`.
    System(String),
    /// `user`.
    User(Vec<Part>),
    /// `assistant`: text then tool calls.
    Assistant {
        /// Text parts.
        text: String,
        /// Tool calls.
        tool_calls: Vec<ToolCall>,
    },
    /// `tool`: a tool's result.
    Tool {
        /// The call it answers.
        tool_call_id: String,
        /// Result text.
        content: String,
    },
}

/// A function tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// JSON Schema of the arguments (`{"type":"object"}` when absent).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Model decides.
    Auto,
    /// Must call some tool.
    Required,
    /// Must not call tools.
    None,
    /// Must call this one.
    Function(String),
}

/// The parts of an OpenAI chat request the cloud translators use.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Messages in order.
    pub messages: Vec<Message>,
    /// Tools.
    pub tools: Vec<Tool>,
    /// Tool choice, when given.
    pub tool_choice: Option<ToolChoice>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// `n`.
    pub n: Option<u64>,
}

impl ChatRequest {
    /// Reads an OpenAI chat completion body (parses it; the gateway reads the document
    /// built from the request view, [`ChatRequest::of`]).
    pub fn parse(body: &[u8]) -> Result<ChatRequest, RequestError> {
        crate::llm::json::count_full_parse();
        let v: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Shape(e.to_string()))?;
        Self::from_value(&v)
    }

    /// Reads the request of an outbound call (its document: no parse in the gateway).
    pub fn of(out: &super::Outbound<'_>) -> Result<ChatRequest, RequestError> {
        let v = out
            .document()
            .map_err(|e| RequestError::Shape(e.to_string()))?;
        Self::from_value(&v)
    }

    /// Reads an OpenAI chat completion document.
    pub fn from_value(v: &Value) -> Result<ChatRequest, RequestError> {
        let obj = v
            .as_object()
            .ok_or_else(|| RequestError::Shape("the body must be a JSON object".into()))?;
        let raw_messages = obj
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| RequestError::Shape("`messages` must be an array".into()))?;
        let mut messages = Vec::with_capacity(raw_messages.len());
        for (i, m) in raw_messages.iter().enumerate() {
            messages.push(parse_message(i, m)?);
        }
        let mut tools = Vec::new();
        if let Some(ts) = obj.get("tools").and_then(Value::as_array) {
            for t in ts {
                if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                    return Err(unsupported(
                        "only function tools can be sent to this backend",
                        "tools",
                    ));
                }
                let f = t.get("function").unwrap_or(&Value::Null);
                let name = f
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| unsupported("every tool needs function.name", "tools"))?;
                tools.push(Tool {
                    name: name.to_owned(),
                    description: f
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    parameters: f
                        .get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
            }
        }
        let tool_choice = match obj.get("tool_choice") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                "none" => ToolChoice::None,
                other => {
                    return Err(unsupported(
                        format!(
                            "unknown tool_choice {other:?}; use auto, required, none or a function"
                        ),
                        "tool_choice",
                    ));
                }
            }),
            Some(o) => {
                let name = o
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        unsupported("tool_choice object needs function.name", "tool_choice")
                    })?;
                Some(ToolChoice::Function(name.to_owned()))
            }
        };
        let stop = match obj.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            Some(_) => return Err(unsupported("`stop` must be a string or an array", "stop")),
        };
        Ok(ChatRequest {
            messages,
            tools,
            tool_choice,
            max_tokens: obj
                .get("max_completion_tokens")
                .and_then(Value::as_u64)
                .or_else(|| obj.get("max_tokens").and_then(Value::as_u64)),
            temperature: obj.get("temperature").and_then(Value::as_f64),
            top_p: obj.get("top_p").and_then(Value::as_f64),
            stop,
            n: obj.get("n").and_then(Value::as_u64),
        })
    }

    /// The function name of a tool call id from an earlier assistant message.
    pub fn tool_name_for(&self, call_id: &str) -> Option<&str> {
        self.messages.iter().find_map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|c| c.id == call_id)
                .map(|c| c.name.as_str()),
            _ => None,
        })
    }
}

fn parse_message(i: usize, m: &Value) -> Result<Message, RequestError> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| RequestError::Shape(format!("messages[{i}] has no role")))?;
    let content = m.get("content").unwrap_or(&Value::Null);
    Ok(match role {
        "system" | "developer" => Message::System(text_of(content)),
        "user" => Message::User(parts_of(content)?),
        "assistant" => {
            let mut tool_calls = Vec::new();
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    let name = c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let arguments = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|_| {
                            unsupported(
                                format!("messages[{i}].tool_calls: arguments are not valid JSON"),
                                "messages",
                            )
                        })?
                    };
                    tool_calls.push(ToolCall {
                        id: c
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        name: name.to_owned(),
                        arguments,
                    });
                }
            }
            Message::Assistant {
                text: text_of(content),
                tool_calls,
            }
        }
        "tool" | "function" => Message::Tool {
            tool_call_id: m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            content: text_of(content),
        },
        other => {
            return Err(RequestError::Shape(format!(
                "messages[{i}] has unknown role {other:?}"
            )));
        }
    })
}

/// Text of a string or an array of parts (non-text parts dropped).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn parts_of(content: &Value) -> Result<Vec<Part>, RequestError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(Part::Text(
                        p.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    )),
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .or_else(|| p.get("image_url"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let (media_type, data) = data_url(url)?;
                        out.push(Part::Image { media_type, data });
                    }
                    _ => {
                        return Err(unsupported(
                            "only text and image_url content parts can be sent to this backend",
                            "messages",
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Decodes `data:<media>;base64,<bytes>`.
pub fn data_url(url: &str) -> Result<(String, Vec<u8>), RequestError> {
    let bad = || {
        unsupported(
            "images must be sent as base64 data: URLs (data:image/png;base64,...) to this backend",
            "messages",
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(bad)?;
    let (meta, b64) = rest.split_once(',').ok_or_else(bad)?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(bad)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    Ok((media_type.to_ascii_lowercase(), data))
}

/// Token counts in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
    /// Input tokens served from a cache.
    pub cached: u64,
    /// Reasoning ("thinking") tokens.
    pub reasoning: u64,
}

impl Usage {
    /// OpenAI's `usage` object.
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutCall {
    /// Call id.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// Identity of one response: id, model, creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `chatcmpl-...`.
    pub id: String,
    /// Model name reported to the client.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
}

impl Identity {
    /// A new response id for `model` at `now`.
    pub fn fresh(model: &str, now: std::time::SystemTime) -> Identity {
        Identity {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_owned(),
            created: now
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// A complete (non-streamed) answer.
pub fn completion(
    who: &Identity,
    text: &str,
    calls: &[OutCall],
    finish_reason: &str,
    usage: Usage,
) -> Vec<u8> {
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !calls.is_empty() {
        message.insert(
            "tool_calls".into(),
            Value::Array(
                calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect(),
            ),
        );
    }
    json!({
        "id": who.id,
        "object": "chat.completion",
        "created": who.created,
        "model": who.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": usage.to_json(),
    })
    .to_string()
    .into_bytes()
}

/// Writes `chat.completion.chunk` events (built with their JSON, see [`Event::from_json`]).
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    who: Identity,
    role_sent: bool,
    /// Kept when usage metering reads the stream (see [`ChunkWriter::metered`]).
    report: Option<Report>,
}

impl ChunkWriter {
    /// A writer for one stream.
    pub fn new(who: Identity) -> Self {
        Self {
            who,
            role_sent: false,
            report: None,
        }
    }

    /// A writer that also keeps a [`Report`] of what it writes, for usage metering.
    pub fn metered(who: Identity, metered: bool) -> Self {
        let mut w = Self::new(who);
        w.report = metered.then(Report::default);
        w
    }

    /// What was written since the last call (`None`: not metered).
    pub fn report(&mut self) -> Option<Report> {
        self.report.as_mut().map(std::mem::take)
    }

    /// Records the provider's final usage for metering (whether or not the client gets
    /// the usage chunk).
    pub fn reported(&mut self, usage: Usage) {
        if let Some(r) = &mut self.report {
            r.usage = Some(Reported {
                input: Some(usage.prompt),
                cached: usage.cached,
                output: Some(usage.completion),
                reasoning: usage.reasoning,
                is_final: true,
            });
        }
    }

    fn deliver(&mut self, text: &str) {
        if let Some(r) = &mut self.report {
            r.deliver(text);
        }
    }

    fn event(&mut self, out: &mut Vec<Event>, choices: Value, usage: Option<Value>) {
        let mut chunk = json!({
            "id": self.who.id,
            "object": "chat.completion.chunk",
            "created": self.who.created,
            "model": self.who.model,
            "choices": choices,
        });
        if let (Some(u), Some(o)) = (usage, chunk.as_object_mut()) {
            o.insert("usage".into(), u);
        }
        out.push(Event::from_json(chunk));
        if let Some(r) = &mut self.report {
            r.name_model(&self.who.model);
        }
    }

    fn delta(&mut self, out: &mut Vec<Event>, mut delta: Map<String, Value>) {
        if !self.role_sent {
            self.role_sent = true;
            delta.insert("role".into(), json!("assistant"));
        }
        self.event(
            out,
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            None,
        );
    }

    /// The opening chunk (role, empty content), once.
    pub fn start(&mut self, out: &mut Vec<Event>) {
        if !self.role_sent {
            let mut d = Map::new();
            d.insert("content".into(), json!(""));
            self.delta(out, d);
        }
    }

    /// A text delta.
    pub fn text(&mut self, out: &mut Vec<Event>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.deliver(text);
        let mut d = Map::new();
        d.insert("content".into(), json!(text));
        self.delta(out, d);
    }

    /// A tool call begins (id and name, empty arguments).
    pub fn tool_start(&mut self, out: &mut Vec<Event>, index: usize, id: &str, name: &str) {
        let mut d = Map::new();
        d.insert(
            "tool_calls".into(),
            json!([{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]),
        );
        self.delta(out, d);
    }

    /// More argument text for a tool call.
    pub fn tool_args(&mut self, out: &mut Vec<Event>, index: usize, args: &str) {
        if args.is_empty() {
            return;
        }
        self.deliver(args);
        let mut d = Map::new();
        d.insert(
            "tool_calls".into(),
            json!([{"index": index, "function": {"arguments": args}}]),
        );
        self.delta(out, d);
    }

    /// The closing chunk with the finish reason.
    pub fn finish(&mut self, out: &mut Vec<Event>, reason: &str) {
        self.start(out);
        self.event(
            out,
            json!([{"index": 0, "delta": {}, "finish_reason": reason}]),
            None,
        );
    }

    /// The usage chunk (empty `choices`, as OpenAI sends with `include_usage`).
    pub fn usage(&mut self, out: &mut Vec<Event>, usage: Usage) {
        self.event(out, json!([]), Some(usage.to_json()));
    }

    /// An in-band error event (the OpenAI SDK raises `APIError` with this message);
    /// `status` is the one the failure stands for (the response head is already sent).
    pub fn error(&mut self, out: &mut Vec<Event>, status: u16, message: &str, code: Option<&str>) {
        out.push(Event::from_json(
            ErrorEnvelope::new(status, message).code(code).openai(),
        ));
    }

    /// `data: [DONE]`.
    pub fn done(&mut self, out: &mut Vec<Event>) {
        out.push(Event::data("[DONE]"));
    }
}

/// OpenAI's error envelope as bytes, its `type` from the status
/// ([`crate::llm::error_envelope`]).
pub fn error_body(status: u16, message: &str, code: Option<&str>) -> Vec<u8> {
    ErrorEnvelope::new(status, message)
        .code(code)
        .openai_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_parts_tools_and_choice() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw=="}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":{"type":"function","function":{"name":"f"}},
            "max_tokens":10,"stop":"x"}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.tool_name_for("c1"), Some("f"));
        assert_eq!(r.tool_choice, Some(ToolChoice::Function("f".into())));
        assert_eq!(r.stop, vec!["x".to_string()]);
        assert_eq!(r.max_tokens, Some(10));
        match &r.messages[1] {
            Message::User(p) => assert_eq!(
                p[1],
                Part::Image {
                    media_type: "image/png".into(),
                    data: vec![0x89, 0x50, 0x4e, 0x47]
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remote_image_urls_and_bad_json_are_clear_errors() {
        let e = ChatRequest::parse(br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#).unwrap_err();
        assert!(e.to_string().contains("data: URLs"), "{e}");
        assert_eq!(e.param(), Some("messages"));
        assert!(matches!(
            ChatRequest::parse(b"{nope").unwrap_err(),
            RequestError::Shape(_)
        ));
    }

    #[test]
    fn chunk_writer_sends_role_once_and_usage_without_choices() {
        let mut w = ChunkWriter::new(Identity {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 7,
        });
        let mut out = Vec::new();
        w.text(&mut out, "a");
        w.text(&mut out, "b");
        w.usage(
            &mut out,
            Usage {
                prompt: 3,
                completion: 2,
                cached: 1,
                reasoning: 0,
            },
        );
        let s = String::from_utf8(crate::llm::sse::encode(&out)).unwrap();
        assert_eq!(s.matches("\"role\":\"assistant\"").count(), 1);
        assert!(s.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":3"));
        assert!(s.contains("\"total_tokens\":5"));
    }
}
