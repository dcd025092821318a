//! Guard policies: PII/secret masking, blocked content, tool allow/deny lists, system
//! prompts and shadow mode, selected per request after routing.
//!
//! - [`Guard`] (in the config snapshot) holds compiled [`Policy`]s; the first whose `match`
//!   holds for the routed request (route name and model globs) applies. Teams are not
//!   known yet: a `teams` condition slots into [`PolicyMatch`] when authentication lands.
//! - [`request`] rewrites the request body (after routing, see its module doc);
//! - [`response`] masks streamed (SSE) and non-streamed responses and restores
//!   pseudonyms.
//! - [`blocked`] matches configured words/phrases/regexes on normalised text;
//! - Shadow mode computes every decision and reports it (metrics, metadata) but changes
//!   nothing.
//!
//! Invariant: no raw detected value is ever logged, counted in a label or put in an error.

pub mod blocked;
pub mod request;
pub mod response;
#[cfg(test)]
pub(crate) mod testing;
pub mod walk;

use crate::pii::{Action, MaskState, Masker};

/// The API shape of the bodies a guard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// OpenAI chat completions / embeddings (also every translated provider's output).
    #[default]
    OpenAi,
    /// Anthropic Messages (the `/v1/messages` front door): top-level `system`, content
    /// blocks (`text`, `tool_use.input`, `tool_result.content`), Messages SSE events.
    Anthropic,
}

impl Shape {
    /// The shape of an endpoint's bodies.
    pub fn of(endpoint: Option<crate::llm::Endpoint>) -> Shape {
        match endpoint {
            Some(crate::llm::Endpoint::Messages) => Shape::Anthropic,
            _ => Shape::OpenAi,
        }
    }
}
use crate::glob::Glob;
use std::sync::Arc;
use thiserror::Error;

/// All guard policies of a snapshot.
#[derive(Debug, Default)]
pub struct Guard {
    /// Policies in order; the first match applies.
    pub policies: Vec<Arc<Policy>>,
}

/// When a policy applies. Empty lists match everything.
#[derive(Debug, Default)]
pub struct PolicyMatch {
    /// Routing rule names (`route` metadata: a route's name, `catalogue` or `command`).
    pub routes: Vec<Glob>,
    /// Catalogue model names (or the requested model when unlisted).
    pub models: Vec<Glob>,
}

/// What to do with a request `tools` entry a policy denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDenied {
    /// Drop the tool from the request.
    Remove,
    /// Refuse the request (400 `tool_denied`).
    Refuse,
}

/// Tool allow/deny lists (globs).
#[derive(Debug)]
pub struct ToolPolicy {
    /// When non-empty, only these tools may be used.
    pub allow: Vec<Glob>,
    /// Never these.
    pub deny: Vec<Glob>,
    /// Request-side treatment.
    pub on_denied: OnDenied,
}

impl ToolPolicy {
    /// Whether a tool named `name` may be offered or called.
    pub fn allows(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|g| g.matches(name)))
            && !self.deny.iter().any(|g| g.matches(name))
    }
}

/// What a masking policy does with a signed Anthropic `thinking` block whose text holds a
/// detected value. Masking is not an option: the provider verifies the `signature` over
/// the exact text and refuses a changed block. Blocks without detections pass unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Thinking {
    /// Remove the block (request: from the assistant turn; response: from the answer,
    /// later blocks renumbered). Counted as `redact`. The default: nothing raw passes.
    #[default]
    Drop,
    /// Refuse the request / end the response (`pii_blocked`).
    Block,
    /// Forward it unchanged; each detection is counted as `allow` (metrics, `pii_*`
    /// metadata, audit log counts): an audit record, not protection.
    Pass,
}

impl Thinking {
    /// Config labels.
    pub const LABELS: &'static [&'static str] = &["drop", "block", "pass"];

    /// Parses a config label.
    pub fn by_label(s: &str) -> Option<Thinking> {
        Some(match s {
            "drop" => Thinking::Drop,
            "block" => Thinking::Block,
            "pass" => Thinking::Pass,
            _ => return None,
        })
    }
}

/// One compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// Name (metrics, metadata).
    pub name: String,
    /// When it applies.
    pub matches: PolicyMatch,
    /// Detect and report only.
    pub shadow: bool,
    /// Request masker (`None`: request masking off).
    pub request: Option<Arc<Masker>>,
    /// Response masker, without placeholder restore (`None`: response masking off).
    pub response: Option<Arc<Masker>>,
    /// Response masker with placeholder restore, used when the request issued pseudonyms.
    pub response_restore: Arc<Masker>,
    /// Message roles whose text is scanned (case-insensitive; roles outside
    /// [`KNOWN_ROLES`] are always scanned).
    pub roles: Vec<String>,
    /// Signed thinking blocks with detections.
    pub thinking: Thinking,
    /// Blocked words/phrases/regexes.
    pub blocked: Option<blocked::Blocked>,
    /// Also end response streams that contain blocked content.
    pub blocked_in_responses: bool,
    /// Tool lists.
    pub tools: Option<ToolPolicy>,
    /// System message inserted first.
    pub prepend_system: Option<String>,
    /// System message added last.
    pub append_system: Option<String>,
}

impl Guard {
    /// The policy for a routed request.
    /// `models` are the names the request is known by (catalogue name, upstream name).
    pub fn select(&self, route: &str, models: &[&str]) -> Option<Arc<Policy>> {
        self.policies
            .iter()
            .find(|p| {
                (p.matches.routes.is_empty() || p.matches.routes.iter().any(|g| g.matches(route)))
                    && (p.matches.models.is_empty()
                        || p.matches
                            .models
                            .iter()
                            .any(|g| models.iter().any(|m| g.matches(m))))
            })
            .cloned()
    }
}

/// Message roles a policy's `roles` list can leave out; a message with any other role (a
/// misspelling, a future role) is scanned, so an unknown role cannot smuggle text past.
pub const KNOWN_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

impl Policy {
    /// Whether messages with `role` are scanned.
    pub fn scans_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
            || !KNOWN_ROLES.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// Whether this policy needs to see the response body.
    pub fn needs_response(&self, state: &MaskState) -> bool {
        self.response.is_some()
            || state.has_pseudonyms()
            || (self.blocked.is_some() && self.blocked_in_responses)
            || self.tools.is_some()
    }

    /// The response masker for a request with this state.
    pub fn response_masker(&self, state: &MaskState) -> Option<Arc<Masker>> {
        if state.has_pseudonyms() && !self.shadow {
            Some(self.response_restore.clone())
        } else {
            self.response.clone()
        }
    }
}

/// Why the guard refuses a request or ends a response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuardError {
    /// Blocked word, phrase or regex.
    #[error("the request was blocked by content policy {policy:?} ({rule})")]
    ContentBlocked {
        /// Policy name.
        policy: String,
        /// Which rule, e.g. `words[2]` (never the matched text).
        rule: String,
    },
    /// A detector whose action is `block`.
    #[error("the request contains data that policy {policy:?} does not allow to be sent: {entity}")]
    PiiBlocked {
        /// Policy name.
        policy: String,
        /// Entity type.
        entity: String,
    },
    /// A tool the policy denies.
    #[error("tool {name:?} is not allowed by policy {policy:?}")]
    ToolDenied {
        /// Policy name.
        policy: String,
        /// Tool name (a config-visible identifier, not user data).
        name: String,
    },
    /// The body is not the JSON the guard must inspect.
    #[error("the request body could not be inspected: {0}")]
    Unreadable(String),
}

impl GuardError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            GuardError::ContentBlocked { .. } => "content",
            GuardError::PiiBlocked { .. } => "pii",
            GuardError::ToolDenied { .. } => "tool",
            GuardError::Unreadable(_) => "unreadable",
        }
    }

    /// OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::ContentBlocked { .. } => "content_blocked",
            GuardError::PiiBlocked { .. } => "pii_blocked",
            GuardError::ToolDenied { .. } => "tool_denied",
            GuardError::Unreadable(_) => "invalid_json",
        }
    }
}

/// Per-request guard state, kept in the request context.
#[derive(Debug)]
pub struct GuardCtx {
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// Request-side detections and the pseudonym map.
    pub request: MaskState,
    /// What shadow mode would have done (`block:content`, ...), for metadata.
    pub shadow_verdict: Option<String>,
    /// The response processor, once response headers arrived.
    pub response: Option<response::ResponseGuard>,
}

/// The request's messages for the audit log, as `policy` masked them: `[{"role", "content"}]`
/// for the roles the policy scans. `None` unless the policy masks requests and enforces (not
/// shadow mode), so unmasked prompt text can never reach the audit log through here. `body`
/// must be the body after the guard ran; it is read off its view, with its pending edits
/// (no parse). Multi-part content keeps only its text parts.
pub fn masked_payload(
    policy: &Policy,
    body: &crate::llm::body::Body,
    shape: Shape,
) -> Option<serde_json::Value> {
    use crate::llm::json::Kind;
    use serde_json::{Value, json};
    if policy.shadow || policy.request.is_none() {
        return None;
    }
    let view = body.view()?;
    let (t, raw) = (&view.tree, body.raw());
    // The guard's system prompts are inserted messages of the OpenAI shape.
    let added = |text: &Option<String>| {
        text.as_ref()
            .filter(|_| shape == Shape::OpenAi && policy.scans_role("system"))
            .map(|t| json!({"role": "system", "content": t}))
    };
    let mut out: Vec<Value> = added(&policy.prepend_system).into_iter().collect();
    let messages: Vec<Value> = t
        .children(view.messages?)
        .filter(|&m| !body.gone(m))
        .filter_map(|m| {
            let role = body.string(t.get(m, "role", raw)?)?;
            if !policy.scans_role(&role) {
                return None;
            }
            let c = t.get(m, "content", raw)?;
            let content = match t.node(c).kind {
                Kind::String => body.string(c)?.into_owned(),
                Kind::Array => t
                    .children(c)
                    .filter(|&p| !body.gone(p))
                    .filter(|&p| {
                        t.get(p, "type", raw)
                            .and_then(|k| body.string(k))
                            .is_some_and(|k| k == "text")
                    })
                    .filter_map(|p| body.string(t.get(p, "text", raw)?))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => return None,
            };
            Some(json!({"role": role, "content": content}))
        })
        .collect();
    out.extend(messages);
    out.extend(added(&policy.append_system));
    Some(Value::Array(out))
}

/// Counts of a mask state as `(entity, action, n)` for metrics.
pub fn counts(state: &MaskState) -> impl Iterator<Item = (&str, Action, u64)> {
    state.counts.iter().map(|((e, a), n)| (&**e, *a, *n))
}
