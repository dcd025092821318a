//! Request side of the guard: blocked content, tool lists, masking, system prompts.
//!
//! Runs after routing, on the body routing produced (routing's byte-range splices are
//! applied first, so both stages' changes compose without overlapping ranges). The guard
//! needs every message, part and tool-call argument, so it parses the body fully into a
//! `serde_json::Value` (with `preserve_order`, so keys keep their order) and re-serialises
//! **only when something changed**; untouched requests keep routing's exact bytes. The
//! caller sets `content-length` for a replaced body (Envoy answers 500 otherwise).
//!
//! Scanned: every string value of the body ([`super::walk`]) except ids, enums and tool
//! names; messages are skipped only when their role (case-insensitive) is a known role the
//! policy leaves out. Encoded spellings of values are detected ([`super::encoded`]).
//! Anthropic Messages bodies ([`Shape::Anthropic`]): the top-level `system` counts as role
//! `system`; signed `thinking` blocks follow the policy's [`Thinking`] choice; system
//! prompts go into `system`, never as a `system` message (Anthropic refuses those).
//! Blocked content is checked on all scanned texts at once, so a word split across parts
//! or messages is caught. Order: blocked content, tools, masking (a `block` action
//! refuses), system prompts (added after masking: operator text is not scanned).

use super::walk::{self, Signed, Visit};
use super::{GuardError, OnDenied, Policy, Shape, Thinking};
use crate::pii::encoded;
use crate::pii::{Action, MaskState, Masker};
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
        walk_request(obj, policy, shape, &mut Collect(policy, &mut texts));
        if let Some(rule) = blocked.check_all(&texts) {
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
        let mut v = MaskVisit {
            policy,
            masker,
            state: MaskState::default(),
            changed: false,
        };
        walk_request(obj, policy, shape, &mut v);
        let MaskVisit {
            state,
            changed: masked_any,
            ..
        } = v;
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

fn tool_name(t: &Value) -> Option<&str> {
    t.get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| t.get("name"))
        .and_then(Value::as_str)
}

/// Walks every scanned string of a request (see [`super::walk`]); an Anthropic top-level
/// `system` counts as role `system`.
fn walk_request(obj: &mut Map<String, Value>, policy: &Policy, shape: Shape, vis: &mut dyn Visit) {
    let skip_system = shape == Shape::Anthropic && !policy.scans_role("system");
    for (k, v) in obj.iter_mut() {
        if skip_system && k == "system" {
            continue;
        }
        walk::walk_field(k, v, vis);
    }
}

/// Collects the scanned texts (blocked-content check).
struct Collect<'a>(&'a Policy, &'a mut Vec<String>);

impl Visit for Collect<'_> {
    fn text(&mut self, s: &mut String) {
        self.1.push(s.clone());
    }
    fn scans_role(&self, role: &str) -> bool {
        self.0.scans_role(role)
    }
    fn signed(&mut self, block: &mut Map<String, Value>) -> Signed {
        if let Some(Value::String(s)) = block.get("thinking") {
            self.1.push(s.clone());
        }
        Signed::Keep
    }
}

/// Masks every scanned string, encoded forms included.
struct MaskVisit<'a> {
    policy: &'a Policy,
    masker: &'a Masker,
    state: MaskState,
    changed: bool,
}

impl Visit for MaskVisit<'_> {
    fn text(&mut self, s: &mut String) {
        if let Some(m) = encoded::mask(self.masker, s, &mut self.state) {
            *s = m;
            self.changed = true;
        }
    }
    fn scans_role(&self, role: &str) -> bool {
        self.policy.scans_role(role)
    }
    fn signed(&mut self, block: &mut Map<String, Value>) -> Signed {
        let text = block
            .get("thinking")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let verdict = thinking_verdict(self.policy, self.masker, text, &mut self.state);
        self.changed |= verdict == Signed::Drop;
        verdict
    }
}

/// The policy's choice for a signed thinking block with `text` (shared with the response
/// side): detections are counted in `state` as blocked, redacted (dropped) or allowed.
pub(crate) fn thinking_verdict(
    policy: &Policy,
    masker: &Masker,
    text: &str,
    state: &mut MaskState,
) -> Signed {
    let mut probe = MaskState::default();
    encoded::mask(masker, text, &mut probe);
    let found: Vec<_> = probe
        .counts
        .into_iter()
        .filter(|((_, a), _)| *a != Action::Allow)
        .collect();
    if found.is_empty() {
        return Signed::Keep;
    }
    let (action, verdict) = match policy.thinking {
        Thinking::Drop => (Action::Redact, Signed::Drop),
        Thinking::Block => (Action::Block, Signed::Keep),
        Thinking::Pass => (Action::Allow, Signed::Keep),
    };
    for ((entity, _), n) in found {
        if action == Action::Block {
            state.blocked.get_or_insert_with(|| entity.clone());
        }
        *state.counts.entry((entity, action)).or_insert(0) += n;
    }
    verdict
}

#[cfg(test)]
mod tests;
