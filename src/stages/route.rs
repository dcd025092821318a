//! Routing stage: classify the endpoint, read the body, pick the backend, and queue the
//! header and body rewrites that send the request there.
//!
//! Headers set for the upstream: `x-tollgate-backend` (Envoy's routes match it; then the
//! route cache is cleared so Envoy re-matches), `:path`, the backend's credential and
//! optionally `:authority`. Removed: the client's credentials and every client-sent
//! `x-tollgate-*` header, so a client can neither leak its key upstream nor steer routing.

use super::{Flow, RequestCtx, Routed};
use crate::config::Snapshot;
use crate::error::StageError;
use crate::llm::edit::BodyEdits;
use crate::llm::{Endpoint, PathMatch, openai};
use crate::routing::{Decision, RouteInput, Rule, command};

/// Header Envoy's routes match.
pub const BACKEND_HEADER: &str = "x-tollgate-backend";
/// Prefix of every gateway-owned header.
pub const OWNED_PREFIX: &str = "x-tollgate-";
/// Client credential headers that never go upstream.
const CLIENT_CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// Request headers phase.
pub fn request_headers(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    end_of_stream: bool,
) -> Result<Flow, StageError> {
    let endpoint = match Endpoint::classify(&cx.method, &cx.path) {
        PathMatch::Endpoint(e) => e,
        PathMatch::WrongMethod(allow) => {
            return Err(StageError::MethodNotAllowed {
                method: cx.method.clone(),
                path: path_only(&cx.path),
                allow,
            });
        }
        PathMatch::Unknown => {
            return Err(StageError::UnsupportedPath {
                method: cx.method.clone(),
                path: path_only(&cx.path),
            });
        }
    };
    cx.endpoint = Some(endpoint);
    if endpoint == Endpoint::Models {
        return Ok(Flow::Respond {
            status: 200,
            body: models_list(snap, cx.identity.as_ref()),
        });
    }
    // A value that is not UTF-8 is no encoding tollgate could read either.
    if let Some(encoding) = cx
        .headers
        .contains("content-encoding")
        .then(|| cx.headers.get("content-encoding").map_or("?", str::trim))
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        return Err(StageError::UnsupportedEncoding {
            encoding: encoding.chars().take(40).collect(),
        });
    }
    if let Some(size) = cx
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        && size > snap.max_request_body
    {
        return Err(StageError::BodyTooLarge {
            limit: snap.max_request_body,
            size,
        });
    }
    if end_of_stream {
        return Err(StageError::MissingBody);
    }
    // Strip client-sent gateway headers now, so no route is ever matched on them, even
    // before the body phase routes the request.
    let owned: Vec<String> = cx
        .headers
        .names()
        .filter(|n| n.starts_with(OWNED_PREFIX))
        .map(str::to_owned)
        .collect();
    if !owned.is_empty() {
        for name in &owned {
            cx.mutations.remove(name);
        }
        cx.mutations.clear_route_cache = true;
    }
    Ok(Flow::Next)
}

/// Request body phase (the whole body, buffered by Envoy).
pub fn request_body(snap: &Snapshot, cx: &mut RequestCtx, body: &[u8]) -> Result<Flow, StageError> {
    if body.len() as u64 > snap.max_request_body {
        return Err(StageError::BodyTooLarge {
            limit: snap.max_request_body,
            size: body.len() as u64,
        });
    }
    let endpoint = cx
        .endpoint
        .ok_or(StageError::Internal("body before endpoint".into()))?;
    let view = openai::parse(body)?;
    let table = &snap.routing;

    let mut edits = BodyEdits::default();
    let mut cmd = None;
    if table.model_command
        && let Some(text) = &view.last_user_text
        && let Some(parsed) = command::parse(&text.value)?
    {
        edits.replace_with_json_string(text.span.clone(), &text.value[parsed.rest_offset..]);
        cmd = Some(parsed.command);
    }
    let requested = view.model.as_ref().map(|m| m.value.as_str());
    let mut decision = table.decide(&RouteInput {
        model: requested,
        headers: &cx.headers,
        command: cmd.as_ref(),
    })?;
    if let Some(pin) = cx.identity.as_ref().and_then(|w| snap.access.pin(w))
        && let Some(b) = table.backends.iter().position(|b| b.name == pin.backend)
    {
        // The team is pinned: every request goes to its backend (and model), whatever it asked.
        decision = Decision {
            backend: b,
            public_model: None,
            upstream_model: pin.model.clone(),
            rule: Rule::Route("team_pin".into()),
        };
    }
    let backend = &table.backends[decision.backend];
    if let Some(upstream) = decision.upstream_model.as_deref()
        && Some(upstream) != requested
    {
        view.set_model(upstream, &mut edits);
    }

    let m = &mut cx.mutations;
    for name in cx
        .headers
        .names()
        .filter(|n| n.starts_with(OWNED_PREFIX) || CLIENT_CREDENTIALS.contains(n))
    {
        m.remove(name);
    }
    m.set(BACKEND_HEADER, backend.envoy_route.as_bytes());
    let query = cx.path.find('?').map(|i| &cx.path[i..]).unwrap_or_default();
    let path = format!("{}{}{query}", backend.base_path, endpoint.upstream_suffix());
    // Unchanged paths (the common `/v1` case) cost Envoy a header mutation for nothing.
    if path != cx.path {
        m.set(":path", path);
    }
    if let Some(authority) = &backend.authority {
        m.set(":authority", authority.as_bytes());
    }
    if let Some(cred) = &backend.credential {
        m.set(&cred.header, cred.value.expose().as_bytes());
    }
    if !edits.is_empty() {
        let new_body = edits
            .apply(body)
            .map_err(|e| StageError::Internal(e.to_string()))?;
        m.set("content-length", new_body.len().to_string());
        m.body = Some(new_body);
    }
    m.clear_route_cache = true;

    let routed = Routed {
        backend: backend.name.clone(),
        model_label: decision
            .public_model
            .clone()
            .unwrap_or_else(|| "unlisted".into()),
        upstream_model: decision
            .upstream_model
            .clone()
            .or_else(|| requested.map(str::to_owned))
            .unwrap_or_default(),
        requested_model: requested.unwrap_or_default().to_owned(),
        rule: decision.rule.label().to_owned(),
        stream: view.stream,
    };
    m.metadata.extend([
        ("backend", routed.backend.clone()),
        ("model", routed.model_label.clone()),
        ("upstream_model", routed.upstream_model.clone()),
        ("route", routed.rule.clone()),
        ("request_model", requested.unwrap_or_default().to_owned()),
    ]);
    cx.routed = Some(routed);
    cx.output_limit = view.output;
    Ok(Flow::Next)
}

fn path_only(path: &str) -> String {
    // The query can carry keys; never echo it. Long paths are cut for the message.
    let p = path.split(['?', '#']).next().unwrap_or_default();
    p.chars().take(200).collect()
}

fn models_list(snap: &Snapshot, who: Option<&crate::auth::Identity>) -> Vec<u8> {
    let data: Vec<serde_json::Value> = snap
        .routing
        .models
        .iter()
        .filter(|m| {
            snap.access
                .lists_model(who, &m.name, &snap.routing.backends[m.backend].name)
        })
        .map(|m| {
            serde_json::json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": snap.routing.backends[m.backend].name,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default()
}
