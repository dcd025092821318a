//! Usage stage: what a request may use (for admission) and what it did use (for
//! reconciliation, cost, metrics and metadata).
//!
//! Request side (after routing): the prompt estimate (or exact count), the output ceiling
//! (`max_completion_tokens` / `max_tokens` × `n`, or the configured default), the price, and
//! for streamed chat completions `stream_options.include_usage` added upstream when the
//! client did not ask — then the usage-only event is stripped from the client's stream.
//!
//! Response side: the body is requested from Envoy (STREAMED, per request through
//! `mode_override`) only when usage is needed: a token/cost limit applies, or metering is
//! on. SSE bodies are decoded once by the response pipeline ([`super::response`]); usage
//! observes a passthrough stream's events and drops the usage event it injected. A
//! translated stream is not read at all: its translator reports usage, model and delivered
//! text ([`crate::llm::usage::Report`]) and leaves out the usage chunk the client did not
//! ask for (the provider stage tells it, [`crate::providers::ResponseTranslator::meter`]).
//! (The pipeline then answers
//! each chunk with the events it completed; an incomplete tail is held until the next chunk
//! or end of stream). Without stripping, chunks pass unchanged (observed only).
//! JSON bodies are copied (up to [`MAX_JSON`]) and read at end of stream.
//!
//! Whenever the body is read, the upstream is asked for `accept-encoding: identity`; a 2xx
//! JSON or SSE answer that comes compressed anyway is refused (502) and charged as reserved
//! ([`must_read`], [`is_compressed`]): tollgate never inflates bodies, and never passes one
//! on unmetered. When a token or cost limit applies and the client named no ceiling, the
//! reserved default is sent upstream ([`send_default_ceiling`]), so the reservation bounds
//! what the upstream may generate.
//!
//! Known limits: a JSON body over [`MAX_JSON`], or cut off before its end, is charged its
//! prompt count plus the full reserved output; `"usage": null` fields that include_usage adds to every chunk are left in
//! place (clients ignore them).

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::StageError;
use crate::limits::Reservation;
use crate::llm::include_usage::{self, Asked};
use crate::llm::sse::Event;
use crate::llm::usage::{self, StreamMeter, Usage, Verdict};
use crate::pricing::{Price, Tokens};
use crate::tokens::{self, Encoding};

/// Largest JSON response copied for its usage.
pub const MAX_JSON: usize = 8 << 20;

/// How the response body is read.
#[derive(Debug, Default)]
enum BodyMeter {
    /// Not read.
    #[default]
    Off,
    /// Server-sent events, decoded by the response pipeline ([`super::response`]).
    Sse { meter: StreamMeter },
    /// A JSON document.
    Json { buf: Vec<u8>, overflow: bool },
}

/// Everything about one request's usage, from admission to the end of its response.
#[derive(Debug)]
pub struct Charge {
    /// Encoding used when tollgate counts.
    pub encoding: Encoding,
    /// The prompt as sent upstream, before any translation (for exact counting when the
    /// provider reports no input usage): taken off the view, not re-parsed.
    prompt: Option<tokens::PromptParts>,
    /// Exact prompt count, when counted at admission.
    pub prompt_exact: Option<u64>,
    /// Prompt tokens reserved (exact count or the upper-bound estimate).
    pub prompt_reserved: u64,
    /// Output tokens reserved.
    pub max_output: u64,
    /// The ceiling to send upstream when a limit applies and the client named none
    /// (`max_completion_tokens` / `max_tokens` = the configured default), so the reservation
    /// bounds what the upstream may generate.
    pub default_ceiling: Option<(&'static str, u64)>,
    /// Strip the usage-only event (tollgate asked for it, the client did not).
    pub strip_usage: bool,
    /// Price, when known.
    pub price: Option<Price>,
    /// Capacity held by the limiter.
    pub reservation: Option<Reservation>,
    /// A token or cost limit applies (the body must be read).
    pub needs_usage: bool,
    /// Metering is on for every request.
    pub meter: bool,
    body: BodyMeter,
    /// Upstream status.
    pub status: Option<u16>,
    /// Final usage, once known.
    pub usage: Option<Usage>,
    /// Settled (reconciled or refunded) already.
    pub settled: bool,
    /// The model the response named, when its body was read (for audit lines and spans).
    pub response_model: Option<String>,
}

/// Request body, after routing and access: sets up [`Charge`] and asks for streamed usage.
/// Does nothing (no copy, no parse) when neither metering nor any limit rule needs usage.
pub fn request_body(snap: &Snapshot, cx: &mut RequestCtx) -> Result<(), StageError> {
    if !snap.usage.meter && snap.limits.rules.is_empty() {
        return Ok(());
    }
    let Some(routed) = &cx.routed else {
        return Ok(());
    };
    let encoding = Encoding::for_model(&routed.upstream_model);
    // The model the request is sent to (catalogue name, then upstream name), never the
    // name the client typed: a `/model` line or a rule may have sent it elsewhere.
    let names = [routed.model_label.as_str(), routed.upstream_model.as_str()];
    let exact = snap.usage.exact_for(&routed.rule, &names);
    let prompt = tokens::PromptParts::of(&cx.body);
    let prompt_exact = exact
        .then(|| prompt.as_ref().map(|p| p.count(encoding)))
        .flatten();
    let estimate = tokens::estimate(
        cx.body
            .current()
            .map_err(|e| StageError::Internal(e.to_string()))?,
    );
    let prompt_reserved = prompt_exact.unwrap_or(estimate);
    let limits = cx.body.view().map(|v| v.output).unwrap_or_default();
    let named = limits.max_completion_tokens.or(limits.max_tokens);
    let default_ceiling = match (cx.endpoint, named) {
        (_, Some(_)) | (Some(crate::llm::Endpoint::Embeddings), _) => None,
        // The Anthropic door's own field; chat completions' current one (`max_tokens` is
        // deprecated there and refused by reasoning models).
        (Some(crate::llm::Endpoint::Messages), None) => {
            Some(("max_tokens", snap.limits.default_max_tokens))
        }
        (_, None) => Some(("max_completion_tokens", snap.limits.default_max_tokens)),
    };
    let max_output = match cx.endpoint {
        Some(crate::llm::Endpoint::Embeddings) => 0,
        _ => named
            .unwrap_or(snap.limits.default_max_tokens)
            .saturating_mul(limits.n.unwrap_or(1).clamp(1, 128)),
    };
    let price = snap.pricing.lookup(&names).copied();
    let mut strip_usage = false;
    if routed.stream && cx.endpoint == Some(crate::llm::Endpoint::ChatCompletions) {
        strip_usage = include_usage::ensure_in(&mut cx.body) == Asked::Added;
    }
    cx.charge = Some(Box::new(Charge {
        encoding,
        prompt,
        prompt_exact,
        prompt_reserved,
        max_output,
        default_ceiling,
        strip_usage,
        price,
        reservation: None,
        needs_usage: false,
        meter: snap.usage.meter,
        body: BodyMeter::Off,
        status: None,
        usage: None,
        settled: false,
        response_model: None,
    }));
    Ok(())
}

impl Charge {
    /// Worst-case tokens and cost for admission (saturating: never wraps to a small number).
    pub fn worst_case(&self) -> (u64, u64) {
        let tokens = self.prompt_reserved.saturating_add(self.max_output);
        let cost = self
            .price
            .map(|p| {
                p.cost_micros(Tokens {
                    input: self.prompt_reserved,
                    cached_input: 0,
                    output: self.max_output,
                })
            })
            .unwrap_or(0);
        (tokens, cost)
    }

    /// Cost of a usage, in micro-dollars (0 when unpriced).
    pub fn cost(&self, u: &Usage) -> u64 {
        self.price
            .map(|p| {
                p.cost_micros(Tokens {
                    input: u.input,
                    cached_input: u.cached_input,
                    output: u.output,
                })
            })
            .unwrap_or(0)
    }

    fn prompt_tokens(&self) -> u64 {
        self.prompt_exact
            .or_else(|| self.prompt.as_ref().map(|p| p.count(self.encoding)))
            .unwrap_or(self.prompt_reserved)
    }

    /// Whether the response body is being read.
    pub fn reading_body(&self) -> bool {
        !matches!(self.body, BodyMeter::Off)
    }

    /// Usage so far: final when the response completed, else what was delivered (input
    /// counted as sent — the provider processed the prompt — and output as delivered).
    pub fn usage_so_far(&self) -> Usage {
        if let Some(u) = self.usage {
            return u;
        }
        if !self.status.is_some_and(|s| (200..300).contains(&s)) {
            // Refused upstream, or the request never got an answer: nothing was generated.
            return Usage::default();
        }
        match &self.body {
            BodyMeter::Sse { meter, .. } => {
                meter.finish(|t| self.encoding.count(t), || self.prompt_tokens())
            }
            // A whole answer cut off before its end (client gone, reset): the upstream
            // generated it regardless, and its usage is in the part never read. Charge the
            // reservation, not zero.
            BodyMeter::Json { .. } => self.reserved_usage(),
            BodyMeter::Off => Usage {
                input: self.prompt_tokens(),
                ..Usage::default()
            },
        }
    }

    /// The prompt plus the whole reserved output: the charge when the real usage cannot be
    /// read (a cut-off or oversized whole answer, a compressed body).
    pub fn reserved_usage(&self) -> Usage {
        Usage {
            input: self.prompt_tokens(),
            output: self.max_output,
            ..Usage::default()
        }
    }

    /// Whether the response body will be read for usage when it is a 2xx JSON or SSE body.
    pub fn wants_body(&self) -> bool {
        self.needs_usage || self.meter
    }

    /// Marks the usage unreadable (a compressed body): charged as reserved.
    pub fn unreadable(&mut self) {
        self.usage = Some(self.reserved_usage());
    }
}

/// Sends the default output ceiling upstream (see [`Charge::default_ceiling`]): inserted as a
/// top-level key of the body routing validated as a JSON object. Call once a limit applies.
pub fn send_default_ceiling(cx: &mut RequestCtx) {
    let Some((key, value)) = cx
        .charge
        .as_deref_mut()
        .and_then(|c| c.default_ceiling.take())
    else {
        return;
    };
    // Routing validated the body as a JSON object: the key goes first.
    cx.body.insert_top(
        key,
        value.to_string().as_bytes(),
        crate::llm::body::At::Start,
    );
}

/// Whether usage will read this response's body (a 2xx JSON or SSE body while a token or cost
/// limit or metering needs it): such a body must be readable.
pub fn must_read(charge: &Charge, status: Option<u16>, content_type: &str) -> bool {
    let ct = content_type.trim_start().to_ascii_lowercase();
    status.is_some_and(|s| (200..300).contains(&s))
        && charge.wants_body()
        && (ct.starts_with("text/event-stream") || ct.starts_with("application/json"))
}

/// Whether a `content-encoding` value names a compression (anything but identity).
pub fn is_compressed(encoding: &str) -> bool {
    encoding
        .split(',')
        .map(str::trim)
        .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
}

/// Response headers: decides whether to read the body. Returns true to ask Envoy for it.
pub fn response_headers(cx: &mut RequestCtx, status: Option<u16>, content_type: &str) -> bool {
    let Some(charge) = cx.charge.as_deref_mut() else {
        return false;
    };
    charge.status = status;
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    if !ok || !(charge.needs_usage || charge.meter) {
        return false;
    }
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("text/event-stream") {
        charge.body = BodyMeter::Sse {
            meter: StreamMeter::new(),
        };
        if charge.strip_usage {
            // Chunks will be rewritten: the upstream's length no longer holds.
            cx.mutations.remove("content-length");
        }
        true
    } else if ct.starts_with("application/json") {
        charge.body = BodyMeter::Json {
            buf: Vec::new(),
            overflow: false,
        };
        true
    } else {
        false
    }
}

/// Whether usage reads this response as SSE events (and has not finished reading).
pub fn reads_events(cx: &RequestCtx) -> bool {
    cx.charge
        .as_deref()
        .is_some_and(|c| c.usage.is_none() && matches!(c.body, BodyMeter::Sse { .. }))
}

/// Whether usage rewrites the event stream (it strips the usage event it asked for).
pub fn rewrites_events(cx: &RequestCtx) -> bool {
    reads_events(cx) && cx.charge.as_deref().is_some_and(|c| c.strip_usage)
}

/// The response pipeline's events: observes each (usage, model), drops the usage-only event
/// tollgate asked for (when the client did not), and settles the usage at end of stream.
pub fn response_events(cx: &mut RequestCtx, events: &mut Vec<Event>, end_of_stream: bool) {
    let Some(charge) = cx.charge.as_deref_mut() else {
        return;
    };
    if charge.usage.is_some() {
        return; // Envoy's duplicate final chunk: already finished.
    }
    let strip = charge.strip_usage;
    // A translated stream reports what it saw (the translator omits the usage chunk the
    // client did not ask for): its events are not read here. Passthrough events are.
    let report = cx.translator.as_mut().and_then(|t| t.report());
    if let BodyMeter::Sse { meter } = &mut charge.body {
        match report {
            Some(r) => meter.apply(r),
            None => events.retain(|ev| !(meter.observe(ev) == Verdict::UsageOnly && strip)),
        }
    }
    if end_of_stream {
        charge.settle_body();
    }
}

/// One whole (JSON) response body chunk: copied up to [`MAX_JSON`], read at end of stream.
/// Never changes the bytes.
pub fn response_body(cx: &mut RequestCtx, chunk: &[u8], end_of_stream: bool) {
    let Some(charge) = cx.charge.as_deref_mut() else {
        return;
    };
    if charge.usage.is_some() {
        // Envoy's duplicate final chunk: already finished.
        return;
    }
    match &mut charge.body {
        BodyMeter::Off | BodyMeter::Sse { .. } => return,
        BodyMeter::Json { buf, overflow } => {
            if !*overflow {
                if buf.len().saturating_add(chunk.len()) <= MAX_JSON {
                    buf.extend_from_slice(chunk);
                } else {
                    *overflow = true;
                    buf.clear();
                }
            }
        }
    }
    if end_of_stream {
        charge.settle_body();
    }
}

impl Charge {
    /// End of the response body: the usage and model it showed.
    fn settle_body(&mut self) {
        let charge = self;
        let (usage, model) = match &charge.body {
            BodyMeter::Json {
                buf,
                overflow: false,
            } => {
                let (usage, model) = usage::read_json(buf);
                let usage = usage.unwrap_or_else(|| Usage {
                    input: charge.prompt_tokens(),
                    ..Usage::default()
                });
                (usage, model)
            }
            BodyMeter::Json { overflow: true, .. } => (charge.reserved_usage(), None),
            BodyMeter::Sse { meter, .. } => (
                meter.finish(|t| charge.encoding.count(t), || charge.prompt_tokens()),
                meter.model().map(str::to_owned),
            ),
            BodyMeter::Off => (Usage::default(), None),
        };
        charge.usage = Some(usage);
        charge.response_model = model;
    }
}
