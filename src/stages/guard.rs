//! Guard stage: picks the guard policy for the routed request and applies it to the
//! request body; prepares the response side.
//!
//! Runs after routing, as edits on the body routing read (see [`crate::guard::request`]). When a policy applies,
//! the upstream is asked for an uncompressed response (`accept-encoding: identity`) so the
//! response can be scanned; a compressed answer anyway is refused, never passed unscanned.

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::guard::{GuardCtx, Policy, request};
use crate::routing::Routed;
use std::sync::Arc;

/// The guard policy of a routed request: by its rule and the model it resolved to
/// (catalogue name, then upstream name), never the name the client typed. The one place the
/// selection is made (the request guard, and the refusal metric's label).
pub fn policy_for(snap: &Snapshot, routed: &Routed) -> Option<Arc<Policy>> {
    snap.guard.select(
        &routed.rule,
        &[routed.model_label.as_str(), routed.upstream_model.as_str()],
    )
}

/// Request body phase, after routing, on the body routing edited.
pub fn request_body(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    let Some(routed) = &cx.routed else {
        return Ok(());
    };
    let Some(policy) = policy_for(snap, routed) else {
        return Ok(());
    };
    let (outcome, _) =
        request::apply_body(&policy, &mut cx.body, crate::guard::Shape::of(cx.endpoint))?;
    let m = &mut cx.mutations;
    if policy.needs_response(&outcome.state) {
        m.set("accept-encoding", "identity");
    }
    m.metadata.push(("guard_policy", policy.name.clone()));
    if outcome.state.total() > 0 {
        m.metadata.push(("pii_request", outcome.state.summary()));
    }
    if policy.shadow {
        m.metadata.push((
            "guard_shadow",
            outcome
                .shadow_verdict
                .clone()
                .unwrap_or_else(|| "pass".into()),
        ));
    }
    cx.guard = Some(GuardCtx {
        policy,
        request: outcome.state,
        shadow_verdict: outcome.shadow_verdict,
        response: None,
    });
    Ok(())
}
