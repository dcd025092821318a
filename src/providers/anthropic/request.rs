//! OpenAI chat completion request → Anthropic Messages request.
//!
//! Mapping (only fields with a faithful equivalent; the rest is refused or dropped, see below):
//! - `system` / `developer` messages → top-level `system` (joined with a blank line, in order);
//! - `user` content: a string or parts — `text` → text block, `image_url` with a `data:` URL →
//!   `{"type":"image","source":{"type":"base64",...}}`, with an `http(s)` URL → a `url` source;
//! - `assistant`: text (and `refusal`) → text blocks, `tool_calls` → `tool_use` blocks
//!   (`arguments` parsed as JSON; an empty string is `{}`);
//! - `tool` messages → `tool_result` blocks in a `user` message;
//! - adjacent messages of the same role are merged (Anthropic needs alternating roles), so
//!   several tool results form one user message, followed by any user text;
//! - `max_completion_tokens` / `max_tokens` → `max_tokens`, else the backend's default;
//! - `temperature`, `top_p` as they are; `stop` (string or list) → `stop_sequences`;
//! - `tools` (function tools) → `{name, description, input_schema}`; `tool_choice` `auto` /
//!   `none` / `required` → `auto` / `none` / `any`, a named function → `{"type":"tool"}`;
//!   `parallel_tool_calls: false` → `disable_parallel_tool_use`;
//! - `user` → `metadata.user_id`; `stream` as it is.
//!
//! Refused with a 400 naming the parameter: `n` > 1, `logprobs`, `response_format` other than
//! `text`, audio/file parts, non-function tools, legacy `function` messages, tool-call
//! arguments that are not a JSON object. Dropped (no Anthropic equivalent, harmless):
//! `frequency_penalty`, `presence_penalty`, `seed`, `logit_bias`, `stream_options` (usage is
//! always reported), `service_tier`, `store`, `metadata`, `reasoning_effort`, `modalities`.

use super::{Config, KIND};
use crate::providers::ProviderError;
use serde_json::{Map, Value, json};

fn bad(param: &'static str, problem: impl Into<String>) -> ProviderError {
    ProviderError::Untranslatable {
        kind: KIND,
        param: Some(param),
        problem: problem.into(),
    }
}

/// The error for a body that is not JSON.
pub(super) fn not_json(e: String) -> ProviderError {
    bad("messages", format!("the body is not JSON: {e}"))
}

/// Translates a chat completion body into a Messages body for `model` (parses it; the
/// gateway hands [`translate_doc`] the document built from the request view).
pub fn translate(body: &[u8], cfg: &Config, model: &str) -> Result<Vec<u8>, ProviderError> {
    crate::llm::json::count_full_parse();
    let doc: Value = serde_json::from_slice(body).map_err(|e| not_json(e.to_string()))?;
    translate_doc(&doc, cfg, model)
}

/// Translates a chat completion document into a Messages body for `model`.
pub fn translate_doc(doc: &Value, cfg: &Config, model: &str) -> Result<Vec<u8>, ProviderError> {
    let Value::Object(req) = doc else {
        return Err(bad("messages", "the body is not a JSON object"));
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));

    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("n", "only one choice (n: 1) is supported"));
    }
    if req.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(bad("logprobs", "log probabilities are not available"));
    }
    if let Some(rf) = req.get("response_format").filter(|v| !v.is_null()) {
        let t = rf.get("type").and_then(Value::as_str).unwrap_or_default();
        if t != "text" {
            return Err(bad(
                "response_format",
                format!(
                    "response_format {t:?} is not supported; describe the format in the prompt or use a tool"
                ),
            ));
        }
    }

    let (system, messages) = messages(req.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .unwrap_or(cfg.default_max_tokens);
    out.insert("max_tokens".into(), json!(max_tokens));

    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(bad(
                    if key == "top_p" {
                        "top_p"
                    } else {
                        "temperature"
                    },
                    "must be a number",
                ));
            }
            out.insert(key.into(), v.clone());
        }
    }
    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            if !list.is_empty() {
                out.insert("stop_sequences".into(), Value::Array(list.clone()));
            }
        }
        Some(_) => return Err(bad("stop", "must be a string or a list of strings")),
    }
    if let Some(Value::Bool(s)) = req.get("stream") {
        out.insert("stream".into(), Value::Bool(*s));
    }
    if let Some(tools) = req.get("tools").filter(|v| !v.is_null()) {
        let list = tools
            .as_array()
            .ok_or_else(|| bad("tools", "must be a list"))?;
        if !list.is_empty() {
            out.insert(
                "tools".into(),
                Value::Array(list.iter().map(tool).collect::<Result<_, _>>()?),
            );
        }
    }
    let parallel_off = req.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(bad(
                    "tool_choice",
                    format!("{other:?} is not auto, none, required or a function"),
                ));
            }
        }),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "a named choice needs function.name"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(bad("tool_choice", "must be a string or an object")),
    };
    if parallel_off && out.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(Value::String(u)) = req.get("user") {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad("messages", e.to_string()))
}

fn tool(t: &Value) -> Result<Value, ProviderError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad("tools", "only function tools can be sent to Anthropic"));
    }
    let f = t
        .get("function")
        .ok_or_else(|| bad("tools", "a function tool needs `function`"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("tools", "a function tool needs a name"))?;
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name.to_owned()));
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        out.insert("description".into(), Value::String(d.to_owned()));
    }
    let schema = f
        .get("parameters")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

/// System texts, and the alternating user/assistant messages as content-block lists.
fn messages(list: Option<&Value>) -> Result<(Vec<String>, Vec<Value>), ProviderError> {
    let list = list
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages", "`messages` must be a list"))?;
    let mut system = Vec::new();
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in list {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_only(m.get("content"))?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", user_content(m.get("content"))?),
            "assistant" => ("assistant", assistant_content(m)?),
            "tool" => ("user", vec![tool_result(m)?]),
            "function" => {
                return Err(bad(
                    "messages",
                    "legacy `function` messages are not supported; use tool messages",
                ));
            }
            other => return Err(bad("messages", format!("unknown role {other:?}"))),
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    if out.is_empty() {
        return Err(bad(
            "messages",
            "at least one user or assistant message with content is needed",
        ));
    }
    let messages = out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, messages))
}

/// Text of a string or a list of text parts (system and tool messages).
fn text_only(content: Option<&Value>) -> Result<String, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(t),
                    None => return Err(bad("messages", "only text parts are allowed here")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(bad(
            "messages",
            "content must be a string or a list of parts",
        )),
    }
}

fn text_block(s: &str) -> Value {
    json!({"type": "text", "text": s})
}

fn user_content(content: Option<&Value>) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts.iter().map(user_part).collect(),
        Some(_) => Err(bad(
            "messages",
            "content must be a string or a list of parts",
        )),
    }
}

fn user_part(p: &Value) -> Result<Value, ProviderError> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(text_block(
            p.get("text").and_then(Value::as_str).unwrap_or_default(),
        )),
        Some("image_url") => {
            let url = p
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages", "an image_url part needs image_url.url"))?;
            image(url)
        }
        Some(other) => Err(bad(
            "messages",
            format!("{other:?} content parts cannot be sent to Anthropic"),
        )),
        None => Err(bad("messages", "a content part needs a type")),
    }
}

/// `data:image/png;base64,...` → base64 source; `http(s)://` → url source.
fn image(url: &str) -> Result<Value, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("messages", "an image data URL needs a comma"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| bad("messages", "image data URLs must be base64-encoded"))?;
        return Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad(
        "messages",
        "an image URL must be a data: URL or an http(s) URL",
    ))
}

fn assistant_content(m: &Value) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                blocks.push(text_block(s));
            }
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                let text = p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("messages", "assistant parts must be text or refusal"))?;
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
        }
        Some(_) => {
            return Err(bad(
                "messages",
                "content must be a string or a list of parts",
            ));
        }
    }
    if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls
            .as_array()
            .ok_or_else(|| bad("messages", "tool_calls must be a list"))?;
        for c in calls {
            let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
            let f = c.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages", "a tool call needs function.name"))?;
            let args = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let input = if args.trim().is_empty() {
                json!({})
            } else {
                match serde_json::from_str::<Value>(args) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return Err(bad(
                            "messages",
                            format!("the arguments of tool call {id:?} are not a JSON object"),
                        ));
                    }
                }
            };
            blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    Ok(blocks)
}

fn tool_result(m: &Value) -> Result<Value, ProviderError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("messages", "a tool message needs tool_call_id"))?;
    let text = text_only(m.get("content"))?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": text}))
}
