//! Response pipeline: each response body chunk goes through the provider translator, then
//! is decoded ONCE into events that usage observes and the guard rewrites, then encoded once.
//!
//! Order per chunk (fixed):
//! 1. `provider`: the backend's translator, when there is one, turns provider bytes into
//!    the client's shape. A translated stream comes out as events built with their JSON
//!    (the translator framed and parsed each upstream event once: SSE or AWS eventstream);
//!    a translated whole body as bytes.
//! 2. Framing: when usage or the guard reads an untranslated SSE body, the one
//!    [`sse::Decoder`] of this response frames it into events that keep their raw bytes.
//!    When both read an event, its JSON is parsed here once and shared (the guard takes
//!    the tree; usage borrows it first), so every upstream event is framed once and its
//!    JSON parsed once, translated or not.
//! 3. `usage` observes every passthrough event (usage, model) and drops the usage-only
//!    event it asked for; a translated stream it meters from the translator's report
//!    instead, reading none of its events. At end of stream it settles.
//! 4. `guard` masks, restores, drops or refuses (holdback across events, as in issue 12).
//! 5. Encoding: untouched events are written as their original bytes.
//!
//! Whole bodies (JSON and others) are not framed: usage copies what it reads and the guard
//! holds what it masks, each under its own cap (see the known limits in the report of
//! issue 13: one capped buffer is the next step).
//!
//! Replies: when only usage observes (no stripping, no guard), the chunk passes unchanged
//! (no body mutation for Envoy); otherwise each chunk is answered with the events it
//! completed, and an incomplete event waits for the next chunk or the end of stream.

use super::{RequestCtx, provider, usage};
use crate::llm::sse;

/// The per-response state of the pipeline.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// The one SSE decoder of this response (used when a stage reads events).
    decoder: sse::Decoder,
    /// End of stream was processed (Envoy may repeat the last chunk).
    ended: bool,
}

impl Pipeline {
    /// Bytes held by the framing (an incomplete event), for memory accounting.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }
}

/// One response body chunk: the bytes to send in its place (`None`: unchanged).
pub fn response_body(cx: &mut RequestCtx, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
    // A translated stream arrives as events (framed once, by the translator, from the
    // provider's framing); any other translated body as bytes.
    let translated_events = provider::response_events(cx, chunk, end_of_stream);
    let translated = match translated_events {
        Some(_) => None,
        None => provider::response_body(cx, chunk, end_of_stream),
    };
    let guard_events = cx
        .guard
        .as_ref()
        .and_then(|g| g.response.as_ref())
        .is_some_and(crate::guard::response::ResponseGuard::is_stream);
    let usage_events = usage::reads_events(cx);
    if !(guard_events || usage_events) {
        if let Some(events) = translated_events {
            return Some(sse::encode(&events));
        }
        return whole(cx, chunk, translated, end_of_stream);
    }
    if cx.response.ended {
        // A repeated final chunk: already answered.
        return match translated_events {
            _ if guard_events => Some(Vec::new()),
            Some(events) => Some(sse::encode(&events)),
            None => translated,
        };
    }
    cx.response.ended = end_of_stream;
    let rewrites = usage::rewrites_events(cx) || translated_events.is_some();
    let mut events = match translated_events {
        Some(events) => events,
        None => {
            let input = translated.as_deref().unwrap_or(chunk);
            let mut events = cx.response.decoder.push(input);
            if end_of_stream {
                events.extend(cx.response.decoder.finish());
            }
            events
        }
    };
    if guard_events && usage_events {
        // Both read the tree: parse it once here; usage borrows it, the guard takes it.
        for ev in &events {
            ev.json();
        }
    }
    usage::response_events(cx, &mut events, end_of_stream);
    if let Some(rg) = cx.guard.as_mut().and_then(|g| g.response.as_mut()) {
        return Some(rg.on_events(events, end_of_stream));
    }
    if rewrites {
        return Some(sse::encode(&events));
    }
    translated
}

/// A body no stage reads as events: usage copies JSON, the guard holds it whole.
fn whole(
    cx: &mut RequestCtx,
    chunk: &[u8],
    translated: Option<Vec<u8>>,
    end_of_stream: bool,
) -> Option<Vec<u8>> {
    let input = translated.as_deref().unwrap_or(chunk);
    usage::response_body(cx, input, end_of_stream);
    match cx.guard.as_mut().and_then(|g| g.response.as_mut()) {
        Some(rg) => Some(rg.on_body(input, end_of_stream)),
        None => translated,
    }
}
