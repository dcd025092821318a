//! Access stage: identify the caller at request headers, and check after routing that the
//! chosen model and backend are allowed for it.
//!
//! Runs first at request headers (before routing answers anything, `GET /v1/models`
//! included), so an unauthenticated caller learns nothing about the catalogue. The client's
//! credential is removed before the request goes upstream by the route stage.

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;

/// Request headers: who is calling? Refuses missing or unknown credentials.
pub fn request_headers(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    let headers = &cx.headers;
    cx.identity = snap.access.identify(|name| headers.get(name))?;
    Ok(())
}

/// After routing: may the caller use the routed model on the routed backend?
pub fn after_route(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    let (Some(who), Some(routed)) = (&cx.identity, &cx.routed) else {
        return Ok(());
    };
    let mut names: Vec<&str> = vec![routed.requested_model.as_str()];
    if routed.model_label != "unlisted" {
        names.push(routed.model_label.as_str());
    }
    snap.access.authorize(who, &names, &routed.backend)?;
    Ok(())
}
