//! Access stage: identify the caller at request headers, and check after routing that
//! every model and backend the request may be sent to is allowed for it (see
//! docs/security-access.md).
//!
//! Runs first at request headers (before routing answers anything, `GET /v1/models`
//! included), so an unauthenticated caller learns nothing about the catalogue. The client's
//! credential is removed before the request goes upstream by the route stage.

use super::RequestCtx;
use crate::auth::AuthError;
use crate::config::Snapshot;
use crate::error::StageError;

/// Request headers: who is calling? Refuses missing or unknown credentials.
pub fn request_headers(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    let headers = &cx.headers;
    cx.identity = snap.access.identify(|name| headers.get(name))?;
    Ok(())
}

/// After routing: may the caller use every model on every backend the request may be
/// sent to? Each destination (the one backend, or every step of a fallback chain) is
/// judged by the names the model actually sent is known by: its catalogue name and
/// aliases when (backend, upstream model) is a catalogue entry, else the upstream name.
/// What the client typed never counts: a `/model` command, a rule, a split or a chain
/// may send the request somewhere else. A chain with one forbidden step is refused as a
/// whole (403) rather than trimmed, so the upstream-level attempts, which Envoy runs for
/// every step, can never reach a step the caller may not use.
pub fn after_route(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    let (Some(who), Some(routed)) = (&cx.identity, &cx.routed) else {
        return Ok(());
    };
    let table = &snap.routing;
    for dest in &routed.destinations {
        let names: Vec<&str> = match dest.entry {
            Some(i) => {
                let m = &table.models[i];
                std::iter::once(m.name.as_str())
                    .chain(m.aliases.iter().map(String::as_str))
                    .collect()
            }
            None => vec![dest.model.as_str()],
        };
        let backend = &table.backends[dest.backend].name;
        match snap.access.authorize(who, &names, backend) {
            Ok(()) => {}
            Err(AuthError::ModelNotAllowed { consumer, .. }) => {
                // Name what the client asked for, not where a rule sent it (that would
                // reveal catalogue entries the caller may not see), and list its own.
                let allowed = table.visible_models(&|i| {
                    let m = &table.models[i];
                    snap.access
                        .lists_entry(Some(who), m, &table.backends[m.backend].name)
                });
                return Err(AuthError::ModelNotAllowed {
                    consumer,
                    model: routed.asked_model.clone(),
                    allowed,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
