//! Routing stage: classify the endpoint, read the body, pick the backend, and queue the
//! header and body rewrites that send the request there.
//!
//! Headers set for the upstream: `x-tollgate-backend` (Envoy's routes match it; then the
//! route cache is cleared so Envoy re-matches). Removed: the client's credentials and every
//! client-sent `x-tollgate-*` header, so a client can neither leak its key upstream nor steer
//! routing. `:path`, `:authority` and the backend's credential are the provider stage's
//! (`stages::provider`), which runs last on the final body.
//! Client `x-tollgate-*` headers (the `x-tollgate-profile` hint) are read for the decision
//! from the headers as received, before they are removed. Session headers
//! (`x-session-id`, `mcp-session-id`) are never touched: Envoy hashes on them.
//!
//! Decision inputs, in this order (one way): body parse → features (size, tools, images,
//! message text) → PII detection on that text, only when a rule has a `pii` condition (the
//! guard, which masks, runs after routing and is not consulted) → the routing table.
//!
//! Fallback chains: the request goes to the chain's Envoy route unprepared (client path,
//! no credential; the body's model already the decision's); the upstream-level filter
//! ([`crate::server::attempt`]) prepares every attempt for the backend Envoy picked and
//! names it in `x-tollgate-answered-by` on the response, which [`response_headers`] reads
//! and removes.

use super::{Flow, RequestCtx};
use crate::config::Snapshot;
use crate::error::StageError;
use crate::llm::{Endpoint, PathMatch, openai};
use crate::routing::Routed;
use crate::routing::health::Cooldown;
use crate::routing::{RouteInput, Signals, command, conditions, features};
use std::time::Instant;

/// Header Envoy's routes match.
pub const BACKEND_HEADER: &str = "x-tollgate-backend";
/// Backend that answered a chained request (upstream level → router level, response).
pub const ANSWERED_BY_HEADER: &str = "x-tollgate-answered-by";
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

/// Request body phase (the whole body, buffered by Envoy). `cooldown` says which backends
/// just failed; `roll` is a random number for weighted splits.
pub fn request_body(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    cooldown: &Cooldown,
    roll: u64,
) -> Result<Flow, StageError> {
    let size = cx.body.raw().len() as u64;
    if size > snap.max_request_body {
        return Err(StageError::BodyTooLarge {
            limit: snap.max_request_body,
            size,
        });
    }
    if cx.endpoint.is_none() {
        return Err(StageError::Internal("body before endpoint".into()));
    }
    // The one full parse of the body; every later stage reads this view.
    cx.body.read()?;
    let table = &snap.routing;
    let view = cx
        .body
        .view()
        .ok_or_else(|| StageError::Internal("body not read".into()))?;

    let mut strip = None;
    let mut cmd = None;
    if table.model_command
        && let Some(text) = &view.last_user_text
        && let Some(node) = view.last_user_node
        && let Some(parsed) = command::parse(&text.value)?
    {
        strip = Some((node, text.value[parsed.rest_offset..].to_owned()));
        cmd = Some(parsed.command);
    }
    let requested = view.model.as_ref().map(|m| m.value.clone());
    let requested = requested.as_deref();
    // Every name below may be echoed (metadata, spans, audit, the decision header, error
    // messages): refuse the ones that cannot travel safely before anything reads them.
    if let Some(m) = requested {
        check_name("model", m)?;
    }
    let asked = match &cmd {
        Some(command::ModelCommand::BackendModel { backend, model }) => {
            check_name("backend", backend)?;
            check_name("model", model)?;
            model.as_str()
        }
        Some(command::ModelCommand::Model(model)) => {
            check_name("model", model)?;
            model.as_str()
        }
        None => requested.unwrap_or_default(),
    };
    let stream = view.stream;
    let decision = with_input(
        snap,
        cx,
        view,
        cx.body.raw(),
        cmd.as_ref(),
        cooldown,
        roll,
        |t, i| t.decide(i),
    )
    .map_err(|e| restrict_error(snap, cx.identity.as_ref(), e))?;
    let chain = decision.chain.map(|c| &table.chains[c]);
    let backend = &table.backends[decision.backend];
    let destinations = table.destinations(&decision, requested);
    if let Some((node, rest)) = strip {
        cx.body.set_string(node, rest);
    }
    // A chain's steps may rename it again per attempt.
    if let Some(upstream) = decision.upstream_model.as_deref()
        && Some(upstream) != requested
    {
        cx.body.set_model(upstream);
    }

    let m = &mut cx.mutations;
    for name in cx
        .headers
        .names()
        .filter(|n| n.starts_with(OWNED_PREFIX) || CLIENT_CREDENTIALS.contains(n))
    {
        m.remove(name);
    }
    let chain_model = decision
        .upstream_model
        .as_deref()
        .or(requested)
        .unwrap_or_default()
        .to_owned();
    // A chain is prepared per attempt by the upstream-level filter, for the backend Envoy picks.
    let envoy_route = chain.map_or(&backend.envoy_route, |c| &c.envoy_route);
    m.set(BACKEND_HEADER, envoy_route.as_bytes());
    m.clear_route_cache = true;

    let first = destinations.first();
    let routed = Routed {
        backend: backend.name.clone(),
        model_label: first
            .and_then(|d| d.entry)
            .map_or_else(|| "unlisted".into(), |i| table.models[i].name.clone()),
        upstream_model: first.map_or(chain_model, |d| d.model.clone()),
        requested_model: requested.unwrap_or_default().to_owned(),
        rule: decision.rule.label().to_owned(),
        stream,
        reason: bounded(&decision.reason, MAX_REASON),
        chain: chain.map(|c| c.name.clone()),
        destinations,
        asked_model: asked.to_owned(),
    };
    m.metadata.extend([
        ("backend", routed.backend.clone()),
        ("model", routed.model_label.clone()),
        ("upstream_model", routed.upstream_model.clone()),
        ("route", routed.rule.clone()),
        ("route_reason", routed.reason.clone()),
        ("request_model", requested.unwrap_or_default().to_owned()),
    ]);
    // What the upstream-level attempts may do (the approved steps, path and query) travels
    // in the signed attempt token the exchange issues, not in plain metadata.
    if let Some(c) = &routed.chain {
        m.metadata.push(("chain", c.clone()));
    }
    cx.routed = Some(routed);
    Ok(Flow::Next)
}

/// Builds the routing input for a request — the one place the decision's inputs are read,
/// shared by the stage and `tollgate route` — and runs `f` on it.
#[expect(clippy::too_many_arguments, reason = "the decision's inputs, named")]
pub fn with_input<R>(
    snap: &Snapshot,
    cx: &RequestCtx,
    view: &openai::RequestView,
    body: &[u8],
    cmd: Option<&command::ModelCommand>,
    cooldown: &Cooldown,
    roll: u64,
    f: impl FnOnce(&crate::routing::Table, &RouteInput<'_>) -> R,
) -> R {
    let table = &snap.routing;
    let requested = view.model.as_ref().map(|m| m.value.as_str());
    let feats = if table.needs_features {
        features::from_view(view, body)
    } else {
        features::Features::default()
    };
    let pii_found = table
        .needs_features
        .then(|| detected_entities(table.pii.as_deref(), &feats.text));
    let now = Instant::now();
    let cooling: Vec<usize> = (0..table.backends.len())
        .filter(|&i| cooldown.cooling(&table.backends[i].name, now, table.cooldown))
        .collect();
    let pin = cx
        .identity
        .as_ref()
        .and_then(|w| snap.access.pin(w))
        .and_then(|pin| {
            table
                .backends
                .iter()
                .position(|b| b.name == pin.backend)
                .map(|b| (b, pin.model.as_deref()))
        });
    let input = RouteInput {
        model: requested,
        headers: &cx.headers,
        command: cmd,
        signals: Signals {
            path: path_only_full(&cx.path),
            consumer: cx.identity.as_ref().map(|w| w.consumer.as_str()),
            team: cx.identity.as_ref().and_then(|w| w.team.as_deref()),
            prompt_tokens: conditions::estimate_tokens(feats.chars),
            last_user_text: view.last_user_text.as_ref().map(|t| t.value.as_str()),
            tools: feats.tools,
            images: feats.images,
            stream: view.stream,
            pii: pii_found.as_deref(),
            profile: cx.headers.get(conditions::PROFILE_HEADER),
        },
        pin,
        cooling: &cooling,
        roll,
    };
    f(table, &input)
}

/// Parses a body and explains its routing decision (`tollgate route`): the same inputs as
/// the stage, with `cx` carrying path, headers and identity.
pub fn explain(
    snap: &Snapshot,
    cx: &RequestCtx,
    body: &[u8],
    cooldown: &Cooldown,
    roll: u64,
) -> Result<crate::routing::Explanation, StageError> {
    let view = openai::parse(body)?;
    let mut cmd = None;
    if snap.routing.model_command
        && let Some(text) = &view.last_user_text
        && let Some(parsed) = command::parse(&text.value)?
    {
        cmd = Some(parsed.command);
    }
    Ok(with_input(
        snap,
        cx,
        &view,
        body,
        cmd.as_ref(),
        cooldown,
        roll,
        |t, i| t.explain(i),
    ))
}

/// Response headers (router level): learn which backend answered a chained request, note
/// a failing backend for the cooldown, and name the decision in the configured header.
pub fn response_headers(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    status: Option<u16>,
    answered_by: Option<&str>,
    cooldown: &Cooldown,
) {
    if answered_by.is_some() {
        // Gateway-internal: never reaches the client.
        cx.mutations.remove(ANSWERED_BY_HEADER);
    }
    let Some(routed) = cx.routed.as_mut() else {
        return;
    };
    if routed.chain.is_some() {
        // Attempts are judged (and cooled down) by the upstream-level filter.
        if let Some(b) = answered_by.filter(|b| snap.routing.backends.iter().any(|x| x.name == *b))
            && *b != routed.backend
        {
            routed.backend = b.to_owned();
            cx.mutations
                .metadata
                .push(("backend", routed.backend.clone()));
            // The step that answered is what the request was sent to: its model (and its
            // catalogue name) from the destinations access control checked.
            if let Some(dest) = routed.destinations.iter().find(|d| {
                snap.routing
                    .backends
                    .get(d.backend)
                    .is_some_and(|x| x.name == b)
            }) {
                routed.upstream_model = dest.model.clone();
                routed.model_label = dest.entry.map_or_else(
                    || "unlisted".into(),
                    |i| snap.routing.models[i].name.clone(),
                );
                cx.mutations
                    .metadata
                    .push(("upstream_model", routed.upstream_model.clone()));
                cx.mutations
                    .metadata
                    .push(("model", routed.model_label.clone()));
            }
        }
    } else if status.is_some_and(Cooldown::is_failure) {
        cooldown.fail(&routed.backend, Instant::now());
    }
    if let Some(h) = &snap.routing.decision_header {
        let value = format!(
            "{}; backend={}; model={}",
            routed.rule, routed.backend, routed.upstream_model
        );
        cx.mutations.set(h, value.into_bytes());
    }
}

/// Longest model or backend name tollgate carries. Real names (Bedrock ARNs, Vertex
/// resource paths) stay well under it; anything longer would only inflate every header,
/// metadata entry and log line that names the model.
pub const MAX_NAME: usize = 256;

/// Longest routing reason kept (it quotes names and travels in metadata and spans).
const MAX_REASON: usize = 1024;

/// A model or backend name is carried only if it is short and free of control characters
/// (CR/LF would split the decision header and log lines; NUL truncates C consumers).
fn check_name(field: &'static str, name: &str) -> Result<(), StageError> {
    let problem = if name.len() > MAX_NAME {
        "is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "contains control characters (such as CR, LF or NUL)"
    } else {
        return Ok(());
    };
    Err(StageError::InvalidName { field, problem })
}

/// `text` cut to at most `max` bytes at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// A routing error with its model and backend lists cut to what the caller may use: a
/// restricted caller learns only its own models from a 404.
fn restrict_error(
    snap: &Snapshot,
    who: Option<&crate::auth::Identity>,
    err: crate::routing::RouteError,
) -> StageError {
    let Some(who) = who else { return err.into() };
    let table = &snap.routing;
    let model_ok = |i: usize| {
        let m = &table.models[i];
        snap.access
            .lists_entry(Some(who), m, &table.backends[m.backend].name)
    };
    let backend_ok = |i: usize| snap.access.may_use_backend(who, &table.backends[i].name);
    table.restrict_error(err, &model_ok, &backend_ok).into()
}

/// Distinct PII entity names found in `text` (names only, never values).
fn detected_entities(masker: Option<&crate::pii::Masker>, text: &str) -> Vec<String> {
    let Some(m) = masker else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for hit in crate::pii::masker::resolve(&m.set.find_valid(text, 0)) {
        let entity = m.set.detectors()[hit.detector].entity.to_string();
        if !out.contains(&entity) {
            out.push(entity);
        }
    }
    out
}

/// The path without query or fragment.
fn path_only_full(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
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
                .lists_entry(who, m, &snap.routing.backends[m.backend].name)
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
