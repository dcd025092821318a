//! Request side of the guard: blocked content, tool lists, masking, system prompts.
//!
//! Runs after routing, on the body routing read and edited ([`crate::llm::body::Body`]): it
//! parses nothing. Detection runs on each scanned string's current text (routing's
//! `/model` strip included), decoded span by span; every change is an edit on the view's
//! nodes (a masked string, a removed tool, member or thinking block, an inserted system
//! prompt), rendered once as splices with the other stages' edits. Every byte the guard
//! does not change stays as the client sent it. In shadow mode and on a refusal the body's
//! edits are put back as they were.
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

use super::walk::{self, Item, Signed};
use super::{GuardError, OnDenied, Policy, Shape, Thinking};
use crate::llm::body::{At, Body};
use crate::llm::json::{Kind, Tree};
use crate::pii::encoded;
use crate::pii::{Action, MaskState, Masker};
use serde_json::{Map, Value};
use std::borrow::Cow;

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

/// Applies `policy` to a request body of the given shape (reads it; the gateway applies
/// the policy to the body it read already, [`apply_body`]).
pub fn apply_shaped(
    policy: &Policy,
    body: &[u8],
    shape: Shape,
) -> Result<RequestOutcome, GuardError> {
    let mut b = Body::new(body.to_vec());
    b.read()
        .map_err(|e| GuardError::Unreadable(e.to_string()))?;
    let (mut out, changed) = apply_body(policy, &mut b, shape)?;
    if changed {
        out.body = Some(
            b.current()
                .map_err(|e| GuardError::Unreadable(e.to_string()))?
                .to_vec(),
        );
    }
    Ok(out)
}

/// Applies `policy` to a read body as edits on it (masks, removed tools and thinking
/// blocks, system prompts). Returns the outcome (its `body` unset) and whether the body
/// changed. In shadow mode, and when the request is refused, the body is left as it was.
pub fn apply_body(
    policy: &Policy,
    body: &mut Body,
    shape: Shape,
) -> Result<(RequestOutcome, bool), GuardError> {
    let before = body.checkpoint();
    let result = edit(policy, body, shape);
    match result {
        Ok((out, changed)) if !policy.shadow => Ok((out, changed)),
        other => {
            body.restore(before);
            other.map(|(out, _)| (out, false))
        }
    }
}

fn edit(
    policy: &Policy,
    body: &mut Body,
    shape: Shape,
) -> Result<(RequestOutcome, bool), GuardError> {
    if body.view().is_none() {
        return Err(GuardError::Unreadable("the body was not read".into()));
    }
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
    let scans = |role: &str| policy.scans_role(role);
    let skip_system = shape == Shape::Anthropic && !policy.scans_role("system");
    let skip_top = |k: &str| skip_system && k == "system";

    if let Some(blocked) = &policy.blocked {
        let mut texts = Vec::new();
        for item in scanned(body, &scans, &skip_top)? {
            if let Some(text) = item_text(body, item)? {
                texts.push(text);
            }
        }
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
        let (t, raw) = tree_of(body)?;
        let list = t
            .get(Tree::ROOT, "tools", raw)
            .filter(|&i| t.node(i).kind == Kind::Array);
        let choice = t.get(Tree::ROOT, "tool_choice", raw);
        let mut remove = Vec::new();
        let mut choice_removed = false;
        if let Some(list) = list {
            let items: Vec<usize> = t.children(list).collect();
            let mut denied = None;
            for &item in &items {
                let name = tool_name(t, raw, item).unwrap_or_default();
                if !tools.allows(&name) {
                    denied.get_or_insert_with(|| name.clone());
                    remove.push(item);
                }
            }
            let kept = items.len() - remove.len();
            let mut removing = false;
            if let Some(name) = denied {
                let e = GuardError::ToolDenied {
                    policy: policy.name.clone(),
                    name,
                };
                if tools.on_denied == OnDenied::Refuse {
                    verdict(&mut out, e)?;
                } else {
                    out.tools_removed = remove.len();
                    removing = true;
                }
            }
            if kept == 0 && removing {
                remove = vec![list];
                if let Some(c) = choice {
                    let anthropic_forced = t
                        .get(c, "type", raw)
                        .and_then(|k| t.str(k, raw))
                        .is_some_and(|k| k == "any" || k == "tool");
                    if (shape == Shape::OpenAi && t.node(c).kind == Kind::Object)
                        || anthropic_forced
                        || t.str(c, raw).is_some_and(|c| c == "required")
                    {
                        remove.push(c);
                        choice_removed = true;
                    }
                }
            }
            // Removed in every mode: the masking walk below does not scan removed tools
            // (shadow mode and refusals restore the body afterwards).
            changed |= removing;
        }
        let chosen = choice.filter(|_| !choice_removed).and_then(|c| {
            t.get(c, "function", raw)
                .and_then(|f| t.get(f, "name", raw))
                .or(t.get(c, "name", raw))
                .and_then(|n| t.str(n, raw))
                .map(|n| (c, n.into_owned()))
        });
        for i in remove {
            body.remove(i);
        }
        if let Some((c, name)) = chosen
            && !tools.allows(&name)
        {
            let e = GuardError::ToolDenied {
                policy: policy.name.clone(),
                name,
            };
            if tools.on_denied == OnDenied::Refuse {
                verdict(&mut out, e)?;
            } else {
                body.remove(c);
                changed = true;
            }
        }
    }

    if let Some(masker) = &policy.request {
        let mut state = MaskState::default();
        for item in scanned(body, &scans, &skip_top)? {
            match item {
                Item::Text(i) => {
                    let text = body.string(i).ok_or_else(unreadable)?;
                    if let Some(m) = encoded::mask(masker, &text, &mut state) {
                        body.set_string(i, m);
                        changed = true;
                    }
                }
                Item::Signed(block) => {
                    let text = item_text(body, item)?.unwrap_or_default();
                    if thinking_verdict(policy, masker, &text, &mut state) == Signed::Drop {
                        body.remove(block);
                        changed = true;
                    }
                }
            }
        }
        if let Some(entity) = state.blocked.clone() {
            verdict(
                &mut out,
                GuardError::PiiBlocked {
                    policy: policy.name.clone(),
                    entity: entity.to_string(),
                },
            )?;
        }
        out.state = state;
    }

    let (prepend, append) = (
        policy.prepend_system.as_deref(),
        policy.append_system.as_deref(),
    );
    if shape == Shape::Anthropic && (prepend.is_some() || append.is_some()) {
        anthropic_system(body, prepend, append)?;
        changed = true;
    } else if prepend.is_some() || append.is_some() {
        let (t, raw) = tree_of(body)?;
        if let Some(list) = t
            .get(Tree::ROOT, "messages", raw)
            .filter(|&i| t.node(i).kind == Kind::Array)
        {
            if let Some(text) = prepend {
                body.insert(list, At::Start, system(text));
            }
            if let Some(text) = append {
                body.insert(list, At::End, system(text));
            }
            changed = true;
        }
    }

    if policy.shadow {
        // Shadow mode reports; the pseudonym map must not restore what was never replaced.
        out.state = out.state.counts_only();
    }
    Ok((out, changed))
}

fn unreadable() -> GuardError {
    GuardError::Unreadable("a string names a lone surrogate".into())
}

fn tree_of(body: &Body) -> Result<(&Tree, &[u8]), GuardError> {
    body.tree()
        .ok_or_else(|| GuardError::Unreadable("the body was not read".into()))
}

/// Every scanned item of the body as it is now (see [`walk::items`]).
fn scanned(
    body: &Body,
    scans: &dyn Fn(&str) -> bool,
    skip_top: &dyn Fn(&str) -> bool,
) -> Result<Vec<Item>, GuardError> {
    walk::items(body, scans, skip_top)
        .map_err(|_| GuardError::Unreadable("recursion limit exceeded".into()))
}

/// The text of a scanned item: a string's current value, a signed block's `thinking`.
fn item_text(body: &Body, item: Item) -> Result<Option<String>, GuardError> {
    match item {
        Item::Text(i) => body
            .string(i)
            .map(|s| Some(s.into_owned()))
            .ok_or_else(unreadable),
        Item::Signed(block) => {
            let (t, raw) = tree_of(body)?;
            Ok(t.get(block, "thinking", raw)
                .and_then(|i| body.string(i))
                .map(Cow::into_owned))
        }
    }
}

fn system(text: &str) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("role".into(), Value::String("system".into()));
    m.insert("content".into(), Value::String(text.to_owned()));
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// Adds operator text around an Anthropic top-level `system` (a string or text blocks).
fn anthropic_system(
    body: &mut Body,
    prepend: Option<&str>,
    append: Option<&str>,
) -> Result<(), GuardError> {
    let block = |t: &str| serde_json::to_vec(&serde_json::json!({"type": "text", "text": t}));
    let (t, raw) = tree_of(body)?;
    let sys = t.get(Tree::ROOT, "system", raw);
    match sys.map(|i| (i, t.node(i).kind)) {
        Some((i, Kind::Array)) => {
            if let Some(text) = prepend {
                body.insert(i, At::Start, block(text).unwrap_or_default());
            }
            if let Some(text) = append {
                body.insert(i, At::End, block(text).unwrap_or_default());
            }
        }
        existing => {
            let current = match existing {
                Some((i, Kind::String)) => body.string(i).filter(|s| !s.is_empty()),
                _ => None,
            };
            let parts: Vec<&str> = prepend
                .into_iter()
                .chain(current.as_deref())
                .chain(append)
                .collect();
            let joined = crate::llm::body::encode(&parts.join("\n\n"));
            match existing {
                Some((i, _)) => body.set_value(i, joined),
                None => body.insert_top("system", &joined, At::End),
            }
        }
    }
    Ok(())
}

fn tool_name(t: &Tree, raw: &[u8], item: usize) -> Option<String> {
    t.get(item, "function", raw)
        .and_then(|f| t.get(f, "name", raw))
        .or_else(|| t.get(item, "name", raw))
        .and_then(|n| t.str(n, raw))
        .map(Cow::into_owned)
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
