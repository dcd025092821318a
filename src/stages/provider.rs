//! Provider stage: hands the final request to the routed backend's translator
//! ([`crate::providers::prepare`]) and runs its response translator.
//!
//! Request body, last (after `limits`): the body every earlier stage produced — routing's
//! model rewrite, the guard's masking, usage's `stream_options.include_usage` — is the
//! OpenAI-shaped input of `prepare`, which sets `:path`, the credential, provider headers and
//! (for translated kinds) a new body with its `content-length`. Every kind goes through here,
//! the OpenAI passthrough included, so the route stage only decides and cleans headers.
//!
//! Fallback chains: nothing is prepared here (the upstream-level filter prepares each
//! attempt); every step's translator is built, and the one of the backend that answered
//! (learnt by the route stage at response headers) translates the response.
//!
//! Response: at headers the translator learns status and content type; when it changes the
//! body, `content-length` is dropped (Envoy re-frames), `content-type` is set to what the
//! client receives, and the body is requested STREAMED. Each body chunk is translated first
//! (by the response pipeline, [`super::response`]); usage and the guard then read the
//! translator's OpenAI-shaped output: a translated stream as the translator's events
//! (never re-framed or re-parsed), a whole body as bytes.

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::providers::{self, Outbound};
use std::time::SystemTime;

/// Request body phase, after every other stage admitted the request.
pub fn request_body(
    snap: &Snapshot,
    cx: &mut RequestCtx,
    now: SystemTime,
) -> Result<(), StageError> {
    let (Some(routed), Some(endpoint)) = (&cx.routed, cx.endpoint) else {
        return Ok(());
    };
    let backend = snap
        .routing
        .backends
        .iter()
        .find(|b| b.name == routed.backend)
        .ok_or_else(|| StageError::Internal("routed to a backend not in the snapshot".into()))?;
    let chain = routed.chain.as_deref().and_then(|c| snap.routing.chain(c));
    // A translator that builds another shape reads the document built from the view (the
    // body is not parsed again), built once for every step that needs it.
    let builds = match chain {
        Some(c) => c
            .steps
            .iter()
            .any(|s| providers::builds_document(&snap.routing.backends[s.backend], endpoint)),
        None => providers::builds_document(backend, endpoint),
    };
    let doc = if builds {
        Some(cx.body.to_value().ok_or(StageError::Parse(
            crate::llm::openai::ParseError::InvalidJson(
                "the body cannot be translated (nested too deeply, a lone surrogate or a number out of range)".into(),
            ),
        ))?)
    } else {
        None
    };
    let body = cx
        .body
        .current()
        .map_err(|e| StageError::Internal(e.to_string()))?;
    let query = cx.path.find('?').map(|i| &cx.path[i..]).unwrap_or_default();
    if let Some(chain) = chain {
        let steps: Vec<&crate::providers::Backend> = chain
            .steps
            .iter()
            .map(|s| &snap.routing.backends[s.backend])
            .collect();
        let strip = providers::steering_removals(&steps, cx.headers.names());
        // Prepared per attempt by the upstream-level filter (server::attempt); the response
        // is translated for whichever step answered, so build each step's translator now.
        let translators = chain
            .steps
            .iter()
            .map(|step| {
                let b = &snap.routing.backends[step.backend];
                let out = Outbound {
                    endpoint,
                    body,
                    doc: doc.as_ref(),
                    upstream_model: step
                        .upstream_model
                        .as_deref()
                        .unwrap_or(&routed.upstream_model),
                    stream: routed.stream,
                    query,
                    now,
                };
                (b.name.clone(), providers::response_translator(b, &out))
            })
            .collect();
        for name in strip {
            cx.mutations.remove(&name);
        }
        let mut translators: Vec<_> = translators;
        for (_, t) in &mut translators {
            metered(cx.charge.as_deref(), t.as_deref_mut());
        }
        cx.chain_translators = translators;
        return Ok(());
    }
    let out = Outbound {
        endpoint,
        body,
        doc: doc.as_ref(),
        upstream_model: &routed.upstream_model,
        stream: routed.stream,
        query,
        now,
    };
    let prepared = providers::prepare(backend, &out)?;
    let mut translator = providers::response_translator(backend, &out);
    metered(cx.charge.as_deref(), translator.as_deref_mut());
    let m = &mut cx.mutations;
    for name in providers::steering_removals(&[backend], cx.headers.names()) {
        m.remove(&name);
    }
    // Unchanged paths (the common OpenAI `/v1` case) cost Envoy a header mutation for nothing.
    if prepared.path != cx.path {
        m.set(":path", prepared.path);
    }
    for name in &prepared.remove {
        m.remove(name);
    }
    for (name, value) in prepared.set {
        m.set(&name, value);
    }
    if let Some(new_body) = prepared.body {
        cx.body.replace(new_body);
    }
    cx.translator = translator;
    Ok(())
}

/// Tells the translator that usage metering will read the response, so it reports usage,
/// model and delivered text ([`providers::ResponseTranslator::report`]) and leaves out the
/// usage chunk tollgate asked for on the client's behalf.
fn metered(
    charge: Option<&super::usage::Charge>,
    translator: Option<&mut (dyn providers::ResponseTranslator + 'static)>,
) {
    if let (Some(c), Some(t)) = (charge.filter(|c| c.wants_body()), translator) {
        t.meter(!c.strip_usage);
    }
}

/// Response headers: starts the translator. Returns the content type the client will see
/// (`None`: unchanged) and whether the body must be streamed to tollgate.
pub fn response_headers(
    cx: &mut RequestCtx,
    status: Option<u16>,
    content_type: &str,
) -> (Option<String>, bool) {
    if !cx.chain_translators.is_empty()
        && let Some(answered) = cx.routed.as_ref().map(|r| r.backend.clone())
    {
        // The route stage has just learnt which backend answered.
        cx.translator = std::mem::take(&mut cx.chain_translators)
            .into_iter()
            .find(|(name, _)| *name == answered)
            .and_then(|(_, t)| t);
    }
    let Some(t) = cx.translator.as_mut() else {
        return (None, false);
    };
    let head = t.head(status.unwrap_or(502), content_type);
    if let Some(ct) = &head.content_type {
        cx.mutations.set("content-type", ct.as_bytes());
    }
    if head.body_changes {
        cx.mutations.remove("content-length");
    }
    (head.content_type, true)
}

/// One response body chunk of a translated event stream: the client's events, built with
/// their JSON (`None`: no translator, or the response is not translated as events).
pub fn response_events(
    cx: &mut RequestCtx,
    chunk: &[u8],
    end_of_stream: bool,
) -> Option<Vec<crate::llm::sse::Event>> {
    cx.translator
        .as_mut()
        .and_then(|t| t.events(chunk, end_of_stream))
}

/// One response body chunk: the translated bytes, or `None` when there is no translator.
pub fn response_body(cx: &mut RequestCtx, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
    cx.translator.as_mut().map(|t| t.body(chunk, end_of_stream))
}
