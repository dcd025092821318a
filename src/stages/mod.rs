//! Request-processing stages and the context they share.
//!
//! The request flows one way: the ext_proc exchange (server/exchange.rs) calls each stage
//! for each phase through the [`Stage`] contract, in the fixed order of [`Stages`], and
//! turns what they leave in [`RequestCtx`] into Envoy's reply. Stages never see protobuf
//! types and never call back up. Every stage is synchronous over one [`Cx`]; the request's
//! one I/O, the limits reserve, is the verdict [`Flow::Reserve`]: the exchange awaits the
//! store ([`limits::reserve`]) and hands the answer to [`Limits::reserved`].
//!
//! Order (fixed, in [`Stages`]):
//! - request headers: `access` (who is calling) → `route` (endpoint, size, `/v1/models`);
//! - request body: `route` → `access` (model/backend allowed?) → `guard` (policy picked by
//!   the routing decision: masking, blocked content, tools, system prompt) → `usage` (prompt
//!   count, output ceiling, include_usage) → `limits` (reserve or refuse) → `provider` (the
//!   backend's dialect: path, credential, translated body);
//! - response headers/body: `provider` (translate to the OpenAI shape), `usage` (read usage,
//!   strip the added usage event), then `guard` (mask the stream); bodies run through the
//!   response pipeline ([`response`]), which frames an SSE body once for all of them;
//! - end (or drop): `limits` settlement (reconcile or refund).

pub mod access;
pub mod guard;
pub mod limits;
mod order;
pub mod provider;
pub mod response;
pub mod route;
pub mod usage;

use crate::headers::Headers;
use crate::llm::Endpoint;

/// What one request has learned and wants changed, shared by all stages of one stream.
#[derive(Debug, Default)]
pub struct RequestCtx {
    /// `x-request-id` from Envoy, or generated.
    pub request_id: String,
    /// `:method`.
    pub method: String,
    /// `:path`, query included.
    pub path: String,
    /// The endpoint, once classified.
    pub endpoint: Option<Endpoint>,
    /// Request headers as the client sent them.
    pub headers: Headers,
    /// The routing decision, once made.
    pub routed: Option<crate::routing::Routed>,
    /// The request body: raw bytes, the view every stage reads (parsed once, by routing),
    /// and the stages' pending edits. The exchange sends [`crate::llm::body::Body::current`]
    /// upstream and sets `content-length` from it.
    pub body: crate::llm::body::Body,
    /// The caller, once identified (`None` when authentication is off).
    pub identity: Option<crate::auth::Identity>,
    /// Usage accounting for this request (set up after routing).
    pub charge: Option<Box<usage::Charge>>,
    /// Changes for Envoy to apply to the request.
    pub mutations: Mutations,
    /// Guard state (policy, pseudonym map, response processor), when a policy applies.
    pub guard: Option<crate::guard::GuardCtx>,
    /// The backend's response translator (`None`: the response passes as the upstream sent it).
    pub translator: Option<Box<dyn crate::providers::ResponseTranslator>>,
    /// The response pipeline's state (the one SSE decoder of the response).
    pub response: response::Pipeline,
    /// Guard-masked messages for the audit line (`audit.include_payload`), set by the guard
    /// stage.
    pub payload: Option<serde_json::Value>,
    /// For a fallback chain: each step's backend name and translator, built on the final
    /// body; the one of the backend that answered becomes `translator` at response headers.
    pub chain_translators: Vec<(
        String,
        Option<Box<dyn crate::providers::ResponseTranslator>>,
    )>,
}

/// Header and body changes requested by stages.
#[derive(Debug, Default, PartialEq)]
pub struct Mutations {
    /// Headers to set (overwriting).
    pub set: Vec<(String, Vec<u8>)>,
    /// Headers to remove.
    pub remove: Vec<String>,
    /// Re-run Envoy's route matching after this phase.
    pub clear_route_cache: bool,
    /// Replacement request body.
    pub body: Option<Vec<u8>>,
    /// Dynamic metadata (namespace `io.tollgate`).
    pub metadata: Vec<(&'static str, String)>,
    /// Numeric dynamic metadata (namespace `io.tollgate`), e.g. token counts.
    pub metadata_numbers: Vec<(&'static str, f64)>,
    /// Ask Envoy to stream this response's body to tollgate (response headers only).
    pub stream_response_body: bool,
}

impl Mutations {
    /// Sets a header, replacing an earlier set of the same name.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.set.retain(|(n, _)| n != name);
        self.remove.retain(|n| n != name);
        self.set.push((name.to_owned(), value.into()));
    }

    /// Removes a header (unless a stage sets it).
    pub fn remove(&mut self, name: &str) {
        if !self.set.iter().any(|(n, _)| n == name) && !self.remove.iter().any(|n| n == name) {
            self.remove.push(name.to_owned());
        }
    }

    /// Takes everything queued so far (one reply's worth).
    pub fn take(&mut self) -> Mutations {
        std::mem::take(self)
    }
}

/// A stage's verdict for a phase.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Continue to the next stage / upstream.
    Next,
    /// Answer the client now with this successful response (e.g. `GET /v1/models`).
    Respond {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Vec<u8>,
    },
    /// Reserve this demand in the limits store (the request's one await, as data): the
    /// exchange performs the call and hands the answer to [`Limits::reserved`], then
    /// resumes with the next stage.
    Reserve(Box<crate::limits::Demand>),
}

/// What a stage sees for one phase: the pinned snapshot, the long-lived handles, this
/// phase's inputs (the clock, the split roll) and the request's state. Everything a stage
/// needs is here, so stages are synchronous functions of it; the one I/O (the limits
/// store) is returned as [`Flow::Reserve`].
pub struct Cx<'a> {
    /// The config snapshot the exchange pinned.
    pub snap: &'a crate::config::Snapshot,
    /// Cooldown (routing) and the settlement queue (never blocks).
    pub svc: &'a limits::Services,
    /// Counters (in-memory, never blocks).
    pub metrics: &'a crate::metrics::Metrics,
    /// Wall clock for this phase (signatures, token expiry).
    pub now: std::time::SystemTime,
    /// A random number for weighted splits (request body only).
    pub roll: u64,
    /// Whether the message ended the request (request headers: no body follows).
    pub end_of_stream: bool,
    /// The request's state.
    pub req: &'a mut RequestCtx,
}

/// One phase-by-phase participant of the pipeline. Every method is synchronous and has a
/// no-op default; the exchange calls them through [`Stages`], in its fixed order.
pub trait Stage {
    /// Request headers.
    fn request_headers(&self, _cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        Ok(Flow::Next)
    }
    /// The whole request body (buffered by Envoy).
    fn request_body(&self, _cx: &mut Cx<'_>) -> Result<Flow, StageError> {
        Ok(Flow::Next)
    }
    /// Response headers of a forwarded request. Returns whether the stage needs the
    /// response body; a stage may change `head.content_type` for the stages after it.
    fn response_headers(
        &self,
        _cx: &mut Cx<'_>,
        _head: &mut ResponseHead<'_>,
    ) -> Result<bool, StageError> {
        Ok(false)
    }
}

/// The response's headers as the response-side stages read them.
#[derive(Debug)]
pub struct ResponseHead<'h> {
    /// `:status`.
    pub status: Option<u16>,
    /// The content type: the upstream's, until the provider stage names the translated one
    /// the client will get (the stages after it read that one).
    pub content_type: std::borrow::Cow<'h, str>,
    /// `content-encoding`.
    pub encoding: Option<&'h str>,
    /// Which backend of a chain answered (the upstream-level filter's header).
    pub answered_by: Option<&'h str>,
}

use crate::error::StageError;
pub use order::{Access, Guard, Limits, Provider, Route, Stages, Stop, Usage};
