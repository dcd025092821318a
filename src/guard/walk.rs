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

/// One scanned item of a request body read into a view, in document order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A string node to scan (and possibly rewrite).
    Text(usize),
    /// A signed `thinking` block (an object node).
    Signed(usize),
}

/// Deepest nesting the walk descends: the view's limit ([`crate::llm::json::MAX_DEPTH`]).
pub use crate::llm::json::MAX_DEPTH;

/// Every scanned string (and signed thinking block) of a body read into a view, by the same
/// rules as [`walk`], skipping nodes an edit removed. `scans_role` decides messages by
/// `role`; `skip_top` names top-level fields left out. Errors past [`MAX_DEPTH`].
pub fn items(
    body: &crate::llm::body::Body,
    scans_role: &dyn Fn(&str) -> bool,
    skip_top: &dyn Fn(&str) -> bool,
) -> Result<Vec<Item>, DepthError> {
    let mut out = Vec::new();
    let Some((t, raw)) = body.tree() else {
        return Ok(out);
    };
    let w = TreeWalk {
        body,
        t,
        raw,
        scans_role,
    };
    for child in t.children(crate::llm::json::Tree::ROOT) {
        if body.is_removed(child) {
            continue;
        }
        let key = t.key(child, raw).unwrap_or_default();
        if skip_top(&key) {
            continue;
        }
        let scope = Scope {
            free: FREE.contains(&&*key),
            tool: TOOL_KEYS.contains(&&*key),
        };
        w.walk(child, Some(&key), scope, 1, &mut out)?;
    }
    Ok(out)
}

/// A body nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthError;

struct TreeWalk<'a> {
    body: &'a crate::llm::body::Body,
    t: &'a crate::llm::json::Tree,
    raw: &'a [u8],
    scans_role: &'a dyn Fn(&str) -> bool,
}

impl TreeWalk<'_> {
    fn type_is(&self, i: usize, names: &[&str]) -> bool {
        self.t
            .get(i, "type", self.raw)
            .and_then(|k| self.t.str(k, self.raw))
            .is_some_and(|k| names.contains(&&*k))
    }

    /// Whether object `i` is an Anthropic thinking block carrying a signature.
    fn signed(&self, i: usize) -> bool {
        use crate::llm::json::Kind;
        self.t.node(i).kind == Kind::Object
            && self.type_is(i, &["thinking"])
            && self
                .t
                .get(i, "signature", self.raw)
                .is_some_and(|s| self.t.node(s).kind != Kind::Null)
    }

    fn walk(
        &self,
        i: usize,
        key: Option<&str>,
        scope: Scope,
        depth: usize,
        out: &mut Vec<Item>,
    ) -> Result<(), DepthError> {
        use crate::llm::json::Kind;
        match self.t.node(i).kind {
            Kind::String => {
                let skip = !scope.free
                    && key.is_some_and(|k| NO_TEXT.contains(&k) || (k == "name" && scope.tool));
                if !skip {
                    out.push(Item::Text(i));
                }
            }
            Kind::Array | Kind::Object if depth >= MAX_DEPTH => return Err(DepthError),
            Kind::Array => {
                let messages = key == Some("messages") && !scope.free;
                for item in self.t.children(i) {
                    if self.body.is_removed(item) {
                        continue;
                    }
                    if !scope.free && self.signed(item) {
                        out.push(Item::Signed(item));
                        continue;
                    }
                    if messages
                        && let Some(role) = self
                            .t
                            .get(item, "role", self.raw)
                            .and_then(|r| self.t.str(r, self.raw))
                        && !(self.scans_role)(&role)
                    {
                        continue;
                    }
                    self.walk(item, key, scope, depth + 1, out)?;
                }
            }
            Kind::Object => {
                // Encrypted thinking: opaque bytes the provider must get back unchanged.
                if !scope.free && self.type_is(i, &["redacted_thinking"]) {
                    return Ok(());
                }
                let tool_block = self.type_is(i, TOOL_BLOCKS);
                for child in self.t.children(i) {
                    if self.body.is_removed(child) {
                        continue;
                    }
                    let k = self.t.key(child, self.raw).unwrap_or_default();
                    let inner = Scope {
                        free: scope.free || FREE.contains(&&*k),
                        tool: scope.tool || TOOL_KEYS.contains(&&*k) || (tool_block && k == "name"),
                    };
                    self.walk(child, Some(&k), inner, depth + 1, out)?;
                }
            }
            _ => {}
        }
        Ok(())
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
