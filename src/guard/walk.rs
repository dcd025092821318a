//! The one walker over request and response JSON: every string value is free text to scan
//! unless its field is known to carry none.
//!
//! The rule is turned around on purpose: a field nobody listed (a new API field, a
//! `metadata` value, a `refusal`, a document source) is scanned, so it cannot pass raw by
//! omission. Skipped are only string values whose key is in [`NO_TEXT`] (ids, enums, model
//! names, signatures), and `name` where it names a tool (it is matched against tool lists
//! and must stay what the tool definition says). Under `input` (Anthropic `tool_use`
//! arguments) and `metadata` every string is scanned whatever its key, because those keys
//! are chosen by the client. Keys themselves are never rewritten.
//!
//! `redacted_thinking` blocks (encrypted, opaque) are not scanned either.
//!
//! Two decisions come from the caller ([`Visit`]): which message roles are scanned (by
//! `role`, compared case-insensitively), and what to do with a signed Anthropic `thinking`
//! block, whose text cannot be changed without breaking its `signature`.

use serde_json::{Map, Value};

/// Keys whose string values are identifiers or enums, never free text.
pub const NO_TEXT: &[&str] = &[
    "id",
    "model",
    "role",
    "type",
    "object",
    "tool_call_id",
    "tool_use_id",
    "signature",
    "finish_reason",
    "stop_reason",
    "system_fingerprint",
    "service_tier",
    "reasoning_effort",
    "encoding_format",
    "media_type",
    "detail",
    "format",
    "voice",
    "modalities",
    "file_id",
    "tool_choice",
];

/// Keys under which `name` names a tool (OpenAI `tools`, `tool_calls`, `function_call`,
/// `tool_choice`, legacy `functions`).
const TOOL_KEYS: &[&str] = &[
    "tools",
    "tool_calls",
    "tool_choice",
    "function_call",
    "functions",
    "function",
];

/// Anthropic block types whose `name` is a tool name.
const TOOL_BLOCKS: &[&str] = &["tool_use", "server_tool_use", "mcp_tool_use"];

/// Keys below which every string is client data.
const FREE: &[&str] = &["input", "metadata"];

/// What to do with a signed thinking block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// Keep it as it is.
    Keep,
    /// Remove it from its array.
    Drop,
}

/// The caller's side of a walk.
pub trait Visit {
    /// A string value to scan (and possibly rewrite).
    fn text(&mut self, s: &mut String);
    /// Whether a message with this `role` is scanned (default: all).
    fn scans_role(&self, _role: &str) -> bool {
        true
    }
    /// A signed `thinking` block (default: keep, unscanned).
    fn signed(&mut self, _block: &mut Map<String, Value>) -> Signed {
        Signed::Keep
    }
}

/// Whether `v` is an Anthropic thinking block carrying a signature.
pub fn is_signed_thinking(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("thinking")
        && v.get("signature").is_some_and(|s| !s.is_null())
}

/// Visits every scanned string of `v`.
pub fn walk(v: &mut Value, vis: &mut dyn Visit) {
    walk_in(v, None, Scope::default(), vis);
}

/// Visits every scanned string of `v`, the value of field `key` of a top-level object.
pub fn walk_field(key: &str, v: &mut Value, vis: &mut dyn Visit) {
    let scope = Scope {
        free: FREE.contains(&key),
        tool: TOOL_KEYS.contains(&key),
    };
    walk_in(v, Some(key), scope, vis);
}

#[derive(Debug, Clone, Copy, Default)]
struct Scope {
    free: bool,
    tool: bool,
}

fn walk_in(v: &mut Value, key: Option<&str>, scope: Scope, vis: &mut dyn Visit) {
    match v {
        Value::String(s) => {
            let skip = !scope.free
                && key.is_some_and(|k| NO_TEXT.contains(&k) || (k == "name" && scope.tool));
            if !skip {
                vis.text(s);
            }
        }
        Value::Array(items) => {
            let messages = key == Some("messages") && !scope.free;
            items.retain_mut(|item| {
                if !scope.free
                    && is_signed_thinking(item)
                    && let Value::Object(block) = item
                {
                    return vis.signed(block) == Signed::Keep;
                }
                if messages
                    && let Some(role) = item.get("role").and_then(Value::as_str)
                    && !vis.scans_role(role)
                {
                    return true;
                }
                walk_in(item, key, scope, vis);
                true
            });
        }
        Value::Object(m) => {
            // Encrypted thinking: opaque bytes the provider must get back unchanged.
            if !scope.free && m.get("type").and_then(Value::as_str) == Some("redacted_thinking") {
                return;
            }
            let tool_block = m
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| TOOL_BLOCKS.contains(&t));
            for (k, child) in m.iter_mut() {
                let inner = Scope {
                    free: scope.free || FREE.contains(&k.as_str()),
                    tool: scope.tool
                        || TOOL_KEYS.contains(&k.as_str())
                        || (tool_block && k == "name"),
                };
                walk_in(child, Some(k), inner, vis);
            }
        }
        _ => {}
    }
}

/// A [`Visit`] from a closure over every string (all roles, signed blocks kept).
pub struct Strings<F: FnMut(&mut String)>(pub F);

impl<F: FnMut(&mut String)> Visit for Strings<F> {
    fn text(&mut self, s: &mut String) {
        (self.0)(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(mut v: Value) -> Vec<String> {
        let mut out = Vec::new();
        walk(&mut v, &mut Strings(|s: &mut String| out.push(s.clone())));
        out
    }

    #[test]
    fn every_free_text_field_is_visited_and_ids_are_not() {
        let got = seen(json!({
            "model": "gpt", "user": "u1", "metadata": {"id": "m1", "k": "m2"},
            "prediction": {"type": "content", "content": "p"},
            "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}],
            "tool_choice": "auto",
            "messages": [
                {"role": "USER", "content": [{"type": "image_url", "image_url": {"url": "iu", "detail": "low"}}]},
                {"role": "assistant", "refusal": "r", "function_call": {"name": "f", "arguments": "fa"},
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "a"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"type": "it", "id": "ii"}},
                    {"type": "thinking", "thinking": "secret", "signature": "sig"},
                    {"type": "thinking", "thinking": "unsigned"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}]}
            ]
        }));
        assert_eq!(
            got,
            [
                "u1", "m1", "m2", "p", "d", "iu", "r", "fa", "a", "it", "ii", "unsigned", "doc"
            ]
        );
    }

    #[test]
    fn roles_and_signed_blocks_are_the_callers_choice() {
        struct V(Vec<String>);
        impl Visit for V {
            fn text(&mut self, s: &mut String) {
                self.0.push(s.clone());
            }
            fn scans_role(&self, role: &str) -> bool {
                !role.eq_ignore_ascii_case("system")
            }
            fn signed(&mut self, _: &mut Map<String, Value>) -> Signed {
                Signed::Drop
            }
        }
        let mut doc = json!({"messages": [
            {"role": "System", "content": "s"},
            {"role": "user", "content": [{"type": "thinking", "thinking": "x", "signature": "y"}, {"type": "text", "text": "t"}]}
        ]});
        let mut v = V(Vec::new());
        walk(&mut doc, &mut v);
        assert_eq!(v.0, ["t"]);
        assert_eq!(
            doc["messages"][1]["content"].as_array().map(Vec::len),
            Some(1)
        );
    }
}
