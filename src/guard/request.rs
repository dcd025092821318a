//! Request side of the guard: blocked content, tool lists, masking, system prompts.
//!
//! Runs after routing, on the body routing produced (routing's byte-range splices are
//! applied first, so both stages' changes compose without overlapping ranges). The guard
//! needs every message, part and tool-call argument, so it parses the body fully into a
//! `serde_json::Value` (with `preserve_order`, so keys keep their order) and re-serialises
//! **only when something changed**; untouched requests keep routing's exact bytes. The
//! caller sets `content-length` for a replaced body (Envoy answers 500 otherwise).
//!
//! Scanned: `messages[]` of the configured roles — string `content`, `text` parts of
//! multi-part `content`, `name`, `tool_calls[].function.arguments` — and embeddings
//! `input` (string or list of strings). Anthropic Messages bodies ([`Shape::Anthropic`])
//! add the top-level `system` (role `system`), `tool_result` contents and every string in
//! `tool_use.input`; their system prompts go into `system`, never as a `system` message
//! (Anthropic refuses those). Order: blocked content, tools, masking (a `block` action
//! refuses), system prompts (added after masking: operator text is not scanned).

use super::{GuardError, OnDenied, Policy, Shape};
use crate::pii::{MaskState, Masker};
use serde_json::{Map, Value};

/// What the guard decided for a request body.
#[derive(Debug, Default)]
pub struct RequestOutcome {
    /// Replacement body, when something changed (never in shadow mode).
    pub body: Option<Vec<u8>>,
    /// Detections and the pseudonym map.
    pub state: MaskState,
    /// In shadow mode: the refusal that was not applied (`content`, `pii`, `tool`).
    pub shadow_verdict: Option<String>,
    /// Tools removed from the request.
    pub tools_removed: usize,
}

/// Applies `policy` to an OpenAI-shaped request body.
pub fn apply(policy: &Policy, body: &[u8]) -> Result<RequestOutcome, GuardError> {
    apply_shaped(policy, body, Shape::OpenAi)
}

/// Applies `policy` to a request body of the given shape.
pub fn apply_shaped(
    policy: &Policy,
    body: &[u8],
    shape: Shape,
) -> Result<RequestOutcome, GuardError> {
    let mut doc: Value =
        serde_json::from_slice(body).map_err(|e| GuardError::Unreadable(e.to_string()))?;
    let Value::Object(obj) = &mut doc else {
        return Err(GuardError::Unreadable("not a JSON object".into()));
    };
    let mut out = RequestOutcome::default();
    let verdict = |out: &mut RequestOutcome, e: GuardError| -> Result<(), GuardError> {
        if policy.shadow {
            out.shadow_verdict
                .get_or_insert_with(|| e.reason().to_owned());
            Ok(())
        } else {
            Err(e)
        }
    };
    let mut changed = false;

    if let Some(blocked) = &policy.blocked {
        let mut texts = Vec::new();
        visit_texts(obj, &policy.roles, &mut |s: &mut String| {
            texts.push(s.clone())
        });
        if let Some(rule) = texts.iter().find_map(|t| blocked.check(t)) {
            verdict(
                &mut out,
                GuardError::ContentBlocked {
                    policy: policy.name.clone(),
                    rule,
                },
            )?;
        }
    }

    if let Some(tools) = &policy.tools {
        if let Some(Value::Array(list)) = obj.get_mut("tools") {
            let before = list.len();
            let mut denied = None;
            list.retain(|t| {
                let name = tool_name(t).unwrap_or_default();
                let ok = tools.allows(name);
                if !ok {
                    denied.get_or_insert_with(|| name.to_owned());
                }
                ok
            });
            if let Some(name) = denied {
                let e = GuardError::ToolDenied {
                    policy: policy.name.clone(),
                    name,
                };
                if tools.on_denied == OnDenied::Refuse {
                    verdict(&mut out, e)?;
                } else {
                    out.tools_removed = before - list.len();
                    changed = true;
                }
            }
            if list.is_empty() && changed {
                obj.remove("tools");
                let anthropic_forced = obj
                    .get("tool_choice")
                    .and_then(|c| c.get("type"))
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "any" || t == "tool");
                if (shape == Shape::OpenAi && obj.get("tool_choice").is_some_and(Value::is_object))
                    || anthropic_forced
                    || obj.get("tool_choice").and_then(Value::as_str) == Some("required")
                {
                    obj.remove("tool_choice");
                }
            }
        }
        let chosen = obj
            .get("tool_choice")
            .and_then(|c| {
                c.get("function")
                    .and_then(|f| f.get("name"))
                    .or(c.get("name"))
            })
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(name) = chosen
            && !tools.allows(&name)
        {
            let e = GuardError::ToolDenied {
                policy: policy.name.clone(),
                name,
            };
            if tools.on_denied == OnDenied::Refuse {
                verdict(&mut out, e)?;
            } else {
                obj.remove("tool_choice");
                changed = true;
            }
        }
    }

    if let Some(masker) = &policy.request {
        let mut state = MaskState::default();
        let mut masked_any = false;
        visit_texts(obj, &policy.roles, &mut |s: &mut String| {
            let m = mask_str(masker, s, &mut state);
            if let Some(m) = m {
                *s = m;
                masked_any = true;
            }
        });
        if let Some(entity) = state.blocked.clone() {
            verdict(
                &mut out,
                GuardError::PiiBlocked {
                    policy: policy.name.clone(),
                    entity: entity.to_string(),
                },
            )?;
        }
        changed |= masked_any;
        out.state = state;
    }

    if shape == Shape::Anthropic
        && (policy.prepend_system.is_some() || policy.append_system.is_some())
    {
        anthropic_system(
            obj,
            policy.prepend_system.as_deref(),
            policy.append_system.as_deref(),
        );
        changed = true;
    } else if (policy.prepend_system.is_some() || policy.append_system.is_some())
        && let Some(Value::Array(messages)) = obj.get_mut("messages")
    {
        if let Some(text) = &policy.prepend_system {
            messages.insert(0, system(text));
        }
        if let Some(text) = &policy.append_system {
            messages.push(system(text));
        }
        changed = true;
    }

    if changed && !policy.shadow {
        out.body =
            Some(serde_json::to_vec(&doc).map_err(|e| GuardError::Unreadable(e.to_string()))?);
    }
    if policy.shadow {
        // Shadow mode reports; the pseudonym map must not restore what was never replaced.
        out.state = out.state.counts_only();
    }
    Ok(out)
}

fn mask_str(masker: &Masker, s: &str, state: &mut MaskState) -> Option<String> {
    let masked = masker.mask(s, state);
    (masked != s).then_some(masked)
}

fn system(text: &str) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), Value::String("system".into()));
    m.insert("content".into(), Value::String(text.to_owned()));
    Value::Object(m)
}

/// Adds operator text around an Anthropic top-level `system` (a string or text blocks).
fn anthropic_system(obj: &mut Map<String, Value>, prepend: Option<&str>, append: Option<&str>) {
    let block = |t: &str| serde_json::json!({"type": "text", "text": t});
    match obj.get_mut("system") {
        Some(Value::Array(blocks)) => {
            if let Some(t) = prepend {
                blocks.insert(0, block(t));
            }
            if let Some(t) = append {
                blocks.push(block(t));
            }
        }
        existing => {
            let current = match existing {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            let parts: Vec<&str> = prepend
                .into_iter()
                .chain(current.as_deref())
                .chain(append)
                .collect();
            obj.insert("system".into(), Value::String(parts.join("\n\n")));
        }
    }
}

/// Every string inside a JSON value (tool-use inputs), keys excluded.
fn visit_strings(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter_mut().for_each(|i| visit_strings(i, f)),
        Value::Object(m) => m.values_mut().for_each(|i| visit_strings(i, f)),
        _ => {}
    }
}

fn tool_name(t: &Value) -> Option<&str> {
    t.get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| t.get("name"))
        .and_then(Value::as_str)
}

/// Calls `f` on a content value that is a string or an array of `{"text": ...}` blocks
/// (Anthropic's `system` and `tool_result.content`).
fn visit_text_blocks(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(blocks) => {
            for b in blocks.iter_mut() {
                if let Some(Value::String(s)) = b.get_mut("text") {
                    f(s);
                }
            }
        }
        _ => {}
    }
}

/// Calls `f` on every scanned string of the request.
fn visit_texts(obj: &mut Map<String, Value>, roles: &[String], f: &mut dyn FnMut(&mut String)) {
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        for m in messages.iter_mut() {
            let Value::Object(m) = m else { continue };
            let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
            if !roles.iter().any(|r| r == role) {
                continue;
            }
            match m.get_mut("content") {
                Some(Value::String(s)) => f(s),
                Some(Value::Array(parts)) => {
                    for p in parts.iter_mut() {
                        if let Some(Value::String(s)) = p.get_mut("text") {
                            f(s);
                        }
                        // Anthropic blocks: tool_use input, tool_result content.
                        if let Some(input) = p.get_mut("input") {
                            visit_strings(input, f);
                        }
                        if let Some(content) = p.get_mut("content") {
                            visit_text_blocks(content, f);
                        }
                    }
                }
                _ => {}
            }
            if let Some(Value::String(s)) = m.get_mut("name") {
                f(s);
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for c in calls.iter_mut() {
                    if let Some(Value::String(s)) =
                        c.get_mut("function").and_then(|f| f.get_mut("arguments"))
                    {
                        f(s);
                    }
                }
            }
        }
    }
    // Anthropic's top-level system prompt (absent from OpenAI bodies).
    if roles.iter().any(|r| r == "system")
        && let Some(system) = obj.get_mut("system")
    {
        visit_text_blocks(system, f);
    }
    match obj.get_mut("input") {
        Some(Value::String(s)) => f(s),
        Some(Value::Array(items)) => {
            for i in items.iter_mut() {
                if let Value::String(s) = i {
                    f(s);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
