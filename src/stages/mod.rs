//! Request-processing stages and the context they share.
//!
//! The request flows one way: the ext_proc exchange (server/exchange.rs) calls each stage
//! for each phase, in a fixed order, and turns what they leave in [`RequestCtx`] into
//! Envoy's reply. Stages never see protobuf types and never call back up.
//!
//! Order (fixed, in [`crate::server::exchange`]):
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
}
